mod parse;
mod util;
mod words;
