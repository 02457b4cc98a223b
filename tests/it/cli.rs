//! `kiln parse` end to end: the real binary on real fixtures, its outputs, errors and exit
//! codes.

use std::path::Path;

use crate::util::{check_golden, conformance_dir, finish, fixtures_dir, kiln, peer_available};

/// The folders of `fixtures/<area>`, sorted.
fn fixture_cases(area: &str) -> Vec<std::path::PathBuf> {
    let dir = fixtures_dir(area);
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.expect("readable folder entry").path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    cases
}

/// A path relative to the crate root, as the binary (run there) and error messages see it.
fn relative(path: &Path) -> String {
    path.strip_prefix(env!("CARGO_MANIFEST_DIR"))
        .expect("fixture inside the crate")
        .display()
        .to_string()
}

/// Extra command-line words for a case, one per line of its `args` file.
fn case_args(case: &Path) -> Vec<String> {
    std::fs::read_to_string(case.join("args"))
        .map(|text| text.lines().map(str::to_string).collect())
        .unwrap_or_default()
}

#[test]
fn buildkit_format_reproduces_the_conformance_dump_from_a_file_and_from_stdin() {
    let case = conformance_dir().join("buildkit-parser/testfiles/ADD-COPY-with-JSON");
    let expected = std::fs::read_to_string(case.join("result")).unwrap();
    let path = case.join("Dockerfile");
    let from_file = kiln(
        &[
            "parse",
            "--format",
            "buildkit",
            "-f",
            path.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(
        (from_file.code, from_file.stdout.as_str()),
        (Some(0), expected.as_str())
    );
    let bytes = std::fs::read(&path).unwrap();
    let from_stdin = kiln(&["parse", "--format=buildkit", "-f", "-"], &bytes);
    assert_eq!(
        (from_stdin.code, from_stdin.stdout.as_str()),
        (Some(0), expected.as_str())
    );
}

/// Every `fixtures/parse/<case>/Dockerfile` prints as its golden `expected-<format>` files
/// (`BLESS=1` rewrites them).
#[test]
fn parse_outputs_match_golden_files() {
    let cases = fixture_cases("parse");
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in &cases {
        for format in ["json", "buildkit", "dag", "dot"] {
            let golden = case.join(format!("expected-{format}"));
            if !golden.exists() && std::env::var_os("BLESS").is_none() {
                continue;
            }
            checked += 1;
            let dockerfile = relative(&case.join("Dockerfile"));
            let mut args = vec![
                "parse".to_string(),
                "-f".into(),
                dockerfile,
                "--format".into(),
            ];
            args.push(format.into());
            args.extend(case_args(case));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let run = kiln(&args, b"");
            if run.code != Some(0) {
                failures.push(format!(
                    "{}: exit {:?}\n{}",
                    golden.display(),
                    run.code,
                    run.stderr
                ));
            } else if let Err(problem) = check_golden(&golden, &run.stdout) {
                failures.push(problem);
            }
        }
    }
    finish("fixtures/parse", checked, &failures);
}

/// Every `fixtures/parse-errors/<case>` fails with exit code 1, prints nothing on stdout, and
/// prints exactly its golden `expected` on stderr.
#[test]
fn parse_errors_match_golden_files() {
    let cases = fixture_cases("parse-errors");
    let mut failures = Vec::new();
    for case in &cases {
        let dockerfile = relative(&case.join("Dockerfile"));
        let mut args = vec!["parse".to_string(), "-f".into(), dockerfile];
        args.extend(case_args(case));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let run = kiln(&args, b"");
        if run.code != Some(1) || !run.stdout.is_empty() {
            failures.push(format!(
                "{}: expected exit 1 and no stdout, got {:?}\n{}{}",
                case.display(),
                run.code,
                run.stdout,
                run.stderr
            ));
        } else if let Err(problem) = check_golden(&case.join("expected"), &run.stderr) {
            failures.push(problem);
        }
    }
    finish("fixtures/parse-errors", cases.len(), &failures);
}

#[test]
fn dot_output_is_accepted_by_graphviz() {
    if !peer_available("dot", "dot_output_is_accepted_by_graphviz") {
        return;
    }
    let run = kiln(
        &[
            "parse",
            "-f",
            "fixtures/example/Dockerfile",
            "--format",
            "dot",
        ],
        b"",
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let mut dot = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("dot starts");
    use std::io::Write;
    dot.stdin
        .take()
        .unwrap()
        .write_all(run.stdout.as_bytes())
        .unwrap();
    let output = dot.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "dot rejected:\n{}\n{}",
        run.stdout,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("<svg"));
}

#[test]
fn usage_errors_exit_2_and_unreadable_files_exit_1() {
    let usage = kiln(&["parse", "--format", "yaml"], b"");
    assert_eq!(usage.code, Some(2), "{}", usage.stderr);
    let unknown = kiln(&["frobnicate"], b"");
    assert_eq!(unknown.code, Some(2), "{}", unknown.stderr);
    let missing = kiln(&["parse", "-f", "fixtures/no-such-Dockerfile"], b"");
    assert_eq!(missing.code, Some(1));
    assert!(
        missing.stderr.starts_with(
            "error: cannot read the Dockerfile 'fixtures/no-such-Dockerfile'\nCaused by: "
        ),
        "{}",
        missing.stderr
    );
}

#[test]
fn bad_input_from_stdin_fails_cleanly_without_panicking() {
    // BuildKit's raw parser accepts the last two (they fail when typed), so the buildkit
    // format is only asked about the first two.
    let inputs: [(&[u8], &[&str]); 4] = [
        (b"FROM a\nRUN \xff\xfe\n", &["buildkit", "json", "dag"]),
        (b"", &["buildkit", "json", "dag"]),
        (b"\\\n\\\n", &["json", "dag"]),
        (b"FROM a\nONBUILD ONBUILD RUN x\n", &["json", "dag"]),
    ];
    for (input, formats) in inputs {
        for format in formats {
            let run = kiln(&["parse", "-f", "-", "--format", format], input);
            assert_eq!(run.code, Some(1), "{input:?} {format}: {}", run.stderr);
            assert!(
                run.stderr.starts_with("<stdin>:"),
                "{input:?}: {}",
                run.stderr
            );
            assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
        }
    }
}
