mod cli;
mod dockerignore;
mod parse;
mod robustness;
mod util;
mod words;
