/// `kiln build` end to end, and the store commands.
mod build;
mod cache;
mod cli;
/// COPY/ADD archives and downloads.
mod copy;
mod differential;
mod dockerignore;
/// kiln save and build -o: archives, compression, SOURCE_DATE_EPOCH, peers reading them.
mod export;
mod layer;
mod layer_diff;
/// `kiln load`: OCI and docker archives, verification, building on loaded images.
mod load;
/// OCI image-spec schemas and test tables; what kiln writes, by the same book.
mod oci_schema;
mod parse;
mod robustness;
/// `kiln run`, ps, rm, commit and bundle; against `docker run` and runc.
mod run;
mod sandbox;
mod store;
mod util;
mod words;
