mod util;
mod words;
