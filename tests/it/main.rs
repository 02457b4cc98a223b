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
mod parse;
mod robustness;
mod sandbox;
mod store;
mod util;
mod words;
