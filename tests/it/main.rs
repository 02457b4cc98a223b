/// `kiln build` end to end, and the store commands.
mod build;
mod cache;
mod cli;
/// COPY/ADD archives and downloads.
mod copy;
mod differential;
mod dockerignore;
mod layer;
mod layer_diff;
/// `kiln load`: OCI and docker archives, verification, building on loaded images.
mod load;
mod parse;
mod robustness;
mod sandbox;
mod store;
mod util;
mod words;
