mod cli;
mod differential;
mod dockerignore;
mod parse;
mod robustness;
mod store;
mod util;
mod words;
