mod cli;
mod parse;
mod robustness;
mod util;
mod words;
