//! Fuzzes the shell-word lexer: every entry point, both escape characters and every option,
//! on arbitrary text with a small environment. Each call must return `Ok` or `Err` and never
//! panic or hang.

#![no_main]

use libfuzzer_sys::fuzz_target;

use kiln::words::Lexer;

fuzz_target!(|data: &[u8]| {
    // The first byte picks the options, so the fuzzer can steer them; the rest is the word.
    let Some((&options, word)) = data.split_first() else {
        return;
    };
    let Ok(word) = std::str::from_utf8(word) else {
        return;
    };
    let env: Vec<(String, String)> = [
        ("A", "a"),
        ("EMPTY", ""),
        ("SPACED", " x  y "),
        ("PATH", "/usr/bin:/bin"),
        ("DOLLAR", "$A"),
    ]
    .iter()
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .collect();
    for escape in ['\\', '`'] {
        let lexer = Lexer {
            raw_quotes: options & 1 != 0,
            raw_escapes: options & 2 != 0,
            skip_unset_env: options & 4 != 0,
            skip_process_quotes: options & 8 != 0,
            ..Lexer::new(escape)
        };
        let _ = lexer.process_word(word, &env);
        let _ = lexer.process_words(word, &env);
        let _ = lexer.process_word_with_matches(word, &env);
    }
});
