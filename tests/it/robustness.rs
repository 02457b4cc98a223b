//! Hostile and oversized input: the syntax stage answers every one with a result or an error,
//! never a panic, a stack overflow or a runaway. Each test runs on libtest's default 2 MiB
//! thread stack, so unbounded recursion fails here; none times anything (the benchmark in
//! benches/parse.rs does), but the sizes are chosen so that quadratic work would make the
//! suite visibly slow.

use kiln::syntax::{self, ParseErrorKind};
use kiln::words::Lexer;

/// Builds `FROM scratch` followed by `body`.
fn with_from(body: &str) -> Vec<u8> {
    format!("FROM scratch\n{body}").into_bytes()
}

#[test]
fn non_utf8_input_is_an_error_at_the_first_bad_byte() {
    let table: [(&[u8], usize, usize, u8); 4] = [
        (b"\xff", 1, 1, 0xff),
        (b"FROM scratch\nRUN echo \xc3\x28\n", 2, 10, 0xc3),
        (b"FROM a\n\n\nLABEL x=\x80", 4, 9, 0x80),
        // A BOM is fine; a truncated one is not UTF-8.
        (b"\xef\xbbFROM a\n", 1, 1, 0xef),
    ];
    for (input, line, column, byte) in table {
        let error = syntax::parse(input).unwrap_err();
        assert_eq!(error.kind, ParseErrorKind::NotUtf8 { byte }, "{input:?}");
        assert_eq!(
            (error.position.line, error.position.column),
            (line, column),
            "{input:?}"
        );
    }
}

#[test]
fn a_line_of_megabytes_parses() {
    let word = "a".repeat(4 << 20);
    let table = [
        format!("RUN echo {word}\n"),
        format!("ENV KEY={word}\n"),
        format!("ENV KEY {word}\n"),
        format!("LABEL \"k\"=\"{word}\"\n"),
        format!("COPY {word} /dst\n"),
        format!("RUN [\"{word}\"]\n"),
        format!("ARG A={word}\n"),
        format!("WORKDIR /{word}\n"),
    ];
    for body in table {
        let parsed = syntax::parse(&with_from(&body)).unwrap();
        assert_eq!(parsed.instructions.len(), 2);
        let original = &parsed.dockerfile.instructions[1].original;
        assert!(original.len() > 4 << 20, "{}", &body[..20]);
    }
}

#[test]
fn a_line_of_many_words_parses() {
    let sources = "src ".repeat(200_000);
    let parsed = syntax::parse(&with_from(&format!("COPY {sources}/dst\n"))).unwrap();
    assert_eq!(parsed.dockerfile.instructions[1].args.len(), 200_001);

    let pairs = "k=v ".repeat(200_000);
    let parsed = syntax::parse(&with_from(&format!("ENV {pairs}\n"))).unwrap();
    assert_eq!(parsed.dockerfile.instructions[1].args.len(), 600_000);

    let args = "A=1 ".repeat(200_000);
    let parsed = syntax::parse(&with_from(&format!("ARG {args}\n"))).unwrap();
    assert_eq!(parsed.dockerfile.instructions[1].args.len(), 200_000);
}

#[test]
fn exec_form_words_that_do_not_appear_in_the_source_parse() {
    // JSON escapes make every argument differ from its source text, so locating them cannot
    // use a plain search.
    let sources = "\"\\\"\\u0062\", ".repeat(50_000);
    let body = format!("COPY [{sources}\"/dst\"]\n");
    let parsed = syntax::parse(&with_from(&body)).unwrap();
    assert_eq!(parsed.dockerfile.instructions[1].args.len(), 50_001);
    assert_eq!(parsed.dockerfile.instructions[1].args[0], "\"b");
}

#[test]
fn ten_thousand_continuation_lines_make_one_instruction() {
    let mut body = String::from("RUN true");
    for index in 0..10_000 {
        body.push_str(&format!(" \\\n  && echo {index}"));
    }
    body.push('\n');
    let parsed = syntax::parse(&with_from(&body)).unwrap();
    let run = &parsed.dockerfile.instructions[1];
    assert_eq!((run.span.start_line, run.span.end_line), (2, 10_002));
    assert!(run.args[0].ends_with("&& echo 9999"));

    // One word per line, so every argument has to be located on its own line.
    let mut body = String::from("COPY");
    for index in 0..10_000 {
        body.push_str(&format!(" \\\n src{index}"));
    }
    body.push_str(" \\\n /dst\n");
    let parsed = syntax::parse(&with_from(&body)).unwrap();
    assert_eq!(parsed.dockerfile.instructions[1].args.len(), 10_001);

    // Only escape characters, comments and empty lines.
    let body = "RUN echo \\\n".to_string() + &"\\\n# c\n\n".repeat(10_000) + "done\n";
    let parsed = syntax::parse(&with_from(&body)).unwrap();
    assert_eq!(parsed.dockerfile.instructions[1].args, ["echo done"]);
    assert_eq!(parsed.dockerfile.warnings.len(), 1);
}

#[test]
fn deeply_nested_onbuild_is_an_error_not_a_stack_overflow() {
    for depth in [2, 100, 10_000, 200_000] {
        let body = format!("{}RUN echo hi\n", "ONBUILD ".repeat(depth));
        let error = syntax::parse(&with_from(&body)).unwrap_err();
        assert_eq!(
            error.kind,
            ParseErrorKind::OnbuildTrigger {
                keyword: "ONBUILD".into()
            },
            "depth {depth}"
        );
        // The raw layer alone must not overflow either.
        let _ = syntax::parse_raw(&with_from(&body));
    }
}

#[test]
fn long_heredocs_and_many_markers_parse() {
    let body = format!("RUN <<EOF\n{}EOF\n", "echo line\n".repeat(200_000));
    let parsed = syntax::parse(&with_from(&body)).unwrap();
    assert_eq!(
        parsed.dockerfile.instructions[1].heredocs[0].content.len(),
        "echo line\n".len() * 200_000
    );

    let count = 5_000;
    let mut body = String::from("COPY");
    for index in 0..count {
        body.push_str(&format!(" <<F{index}"));
    }
    body.push_str(" /dst/\n");
    for index in 0..count {
        body.push_str(&format!("body {index}\nF{index}\n"));
    }
    let parsed = syntax::parse(&with_from(&body)).unwrap();
    assert_eq!(parsed.dockerfile.instructions[1].heredocs.len(), count);

    let unterminated = format!("RUN <<EOF\n{}", "x\n".repeat(100_000));
    let error = syntax::parse(&with_from(&unterminated)).unwrap_err();
    assert_eq!(
        error.kind,
        ParseErrorKind::UnterminatedHeredoc("EOF".into())
    );
}

#[test]
fn deeply_nested_json_falls_back_or_fails_without_overflow() {
    let depth = 100_000;
    let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    // Too deep for the JSON reader: not JSON, so the shell form.
    let parsed = syntax::parse(&with_from(&format!("CMD {nested}\n"))).unwrap();
    assert_eq!(parsed.dockerfile.instructions[1].args, [nested]);
    // Shallow enough to be read: an array that holds an array is an error.
    let error = syntax::parse(&with_from("CMD [[[\"a\"]]]\n")).unwrap_err();
    assert!(matches!(error.kind, ParseErrorKind::NotStringArray(_)));
}

#[test]
fn many_instructions_parse() {
    let body = "RUN echo hi\nENV A=1\n# comment\n\n".repeat(50_000);
    let parsed = syntax::parse(&with_from(&body)).unwrap();
    assert_eq!(parsed.instructions.len(), 100_001);
}

#[test]
fn control_characters_and_unbalanced_quotes_are_handled() {
    let table: [&[u8]; 6] = [
        b"FROM a\nRUN \x00\x01\x02\x7f\n",
        b"FROM a\nENV a=\"unterminated\n",
        b"FROM a\nARG a='b\n",
        b"FROM a\nRUN --mount=\"type=cache \n",
        b"FROM a\nCOPY --from=\"x\\\n",
        b"FROM a\r\rRUN x\r\n\r\n",
    ];
    for input in table {
        // Either answer is fine; getting one is the point, and both must render.
        match syntax::parse(input) {
            Ok(parsed) => assert!(!parsed.dockerfile.dump().is_empty()),
            Err(error) => assert!(!error.to_string().is_empty()),
        }
    }
}

#[test]
fn deeply_nested_expansions_are_an_error_not_a_stack_overflow() {
    let depth = 100_000;
    let word = format!("{}x{}", "${A:-".repeat(depth), "}".repeat(depth));
    let env: Vec<(String, String)> = Vec::new();
    for escape in ['\\', '`'] {
        let lexer = Lexer::new(escape);
        assert!(lexer.process_word(&word, &env).is_err());
        assert!(lexer.process_words(&word, &env).is_err());
        assert!(lexer.process_word_with_matches(&word, &env).is_err());
    }
    let long = "$A ".repeat(500_000);
    let env = vec![("A".to_string(), "value".to_string())];
    let words = Lexer::new('\\').process_words(&long, &env).unwrap();
    assert_eq!(words.len(), 500_000);
}
