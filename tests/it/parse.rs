//! BuildKit parser conformance: every suite under `buildkit-parser/` (formats in its README),
//! run against the lossless syntax layer, with the pass counts printed.

use std::path::{Path, PathBuf};

use kiln::syntax::{self, args, lines};

use crate::util::{conformance_dir, finish};

fn parser_dir() -> PathBuf {
    conformance_dir().join("buildkit-parser")
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("conformance file {} is required: {e}", path.display()))
}

fn read_text(path: &Path) -> String {
    String::from_utf8(read(path)).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The case folders of a suite, sorted so that reports are stable.
fn case_dirs(suite: &str) -> Vec<PathBuf> {
    let dir = parser_dir().join(suite);
    let mut cases: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("conformance folder {} is required: {e}", dir.display()))
        .map(|entry| entry.expect("readable folder entry").path())
        .filter(|path| path.is_dir())
        .collect();
    cases.sort();
    cases
}

/// Each JSON object of a `.jsonl` file, with its 1-based line number.
fn jsonl(path: &Path) -> Vec<(usize, serde_json::Value)> {
    read_text(path)
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let row = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}:{}: bad JSON: {e}", path.display(), index + 1));
            (index + 1, row)
        })
        .collect()
}

fn strings(value: &serde_json::Value) -> Option<Vec<String>> {
    value.as_array().map(|items| {
        items
            .iter()
            .map(|item| item.as_str().expect("list of strings").to_owned())
            .collect()
    })
}

fn case_name(path: &Path) -> String {
    path.file_name().unwrap().to_string_lossy().into_owned()
}

#[test]
fn buildkit_testfiles_dump_byte_for_byte() {
    let cases = case_dirs("testfiles");
    let mut failures = Vec::new();
    for case in &cases {
        let expected = read_text(&case.join("result"));
        match syntax::parse_raw(&read(&case.join("Dockerfile"))) {
            Ok(parsed) if parsed.dump() == expected => {}
            Ok(parsed) => failures.push(format!(
                "{}:\n--- expected\n{expected}--- got\n{}",
                case_name(case),
                parsed.dump()
            )),
            Err(error) => failures.push(format!("{}: parse failed: {error}", case_name(case))),
        }
    }
    assert_eq!(cases.len(), 33, "testfiles case count");
    finish("buildkit-parser/testfiles", cases.len(), &failures);
}

#[test]
fn buildkit_negative_testfiles_fail() {
    let cases = case_dirs("testfiles-negative");
    let mut failures = Vec::new();
    for case in &cases {
        if let Ok(parsed) = syntax::parse_raw(&read(&case.join("Dockerfile"))) {
            failures.push(format!("{}: parsed as\n{}", case_name(case), parsed.dump()));
        }
    }
    assert_eq!(cases.len(), 4, "testfiles-negative case count");
    finish("buildkit-parser/testfiles-negative", cases.len(), &failures);
}

#[test]
fn buildkit_line_numbers() {
    let dir = parser_dir();
    let parsed = syntax::parse_raw(&read(&dir.join("testfile-line/Dockerfile"))).expect("parses");
    let table = read_text(&dir.join("extra/line-numbers.tsv"));
    let rows: Vec<&str> = table
        .lines()
        .filter(|line| !line.starts_with('#'))
        .collect();
    let mut failures = Vec::new();
    for row in &rows {
        let fields: Vec<&str> = row.split('\t').collect();
        let [node, start, end] = fields[..] else {
            panic!("line-numbers.tsv: bad row {row:?}");
        };
        let expected = (start.parse().unwrap(), end.parse().unwrap());
        let span = match node.strip_prefix("child") {
            None => parsed.span,
            Some(index) => match parsed.instructions.get(index.parse::<usize>().unwrap()) {
                Some(instruction) => instruction.span,
                None => {
                    failures.push(format!("{node}: missing"));
                    continue;
                }
            },
        };
        if (span.start_line, span.end_line) != expected {
            failures.push(format!("{node}: expected {expected:?}, got {span:?}"));
        }
    }
    finish(
        "buildkit-parser/extra/line-numbers.tsv",
        rows.len(),
        &failures,
    );
}

#[test]
fn buildkit_empty_continuation_warnings() {
    let dir = parser_dir().join("extra/empty-continuation-warning");
    let expected: serde_json::Value =
        serde_json::from_str(&read_text(&dir.join("expected.json"))).expect("expected.json");
    let parsed = syntax::parse_raw(&read(&dir.join("Dockerfile"))).expect("parse must succeed");
    let wanted = expected["warnings"].as_array().expect("warnings list");
    let mut failures = Vec::new();
    if parsed.warnings.len() as u64 != expected["warning_count"].as_u64().unwrap() {
        failures.push(format!("warnings: {:?}", parsed.warnings));
    }
    for (warning, want) in parsed.warnings.iter().zip(wanted) {
        for needle in strings(&want["short_contains"]).unwrap_or_default() {
            if !warning.message.contains(&needle) {
                failures.push(format!("{:?} lacks {needle:?}", warning.message));
            }
        }
        if let Some(needle) = want["detail0_contains"].as_str() {
            if !warning.detail.contains(needle) {
                failures.push(format!("{:?} lacks {needle:?}", warning.detail));
            }
        }
    }
    finish(
        "buildkit-parser/extra/empty-continuation-warning",
        wanted.len(),
        &failures,
    );
}

#[test]
fn buildkit_heredocs_extracted() {
    let dir = parser_dir().join("extra/heredoc");
    let parsed = syntax::parse_raw(&read(&dir.join("Dockerfile"))).expect("parses");
    let rows = jsonl(&dir.join("expected.jsonl"));
    let mut failures = Vec::new();
    for (line, row) in &rows {
        let child = row["child"].as_u64().unwrap() as usize;
        let Some(instruction) = parsed.instructions.get(child) else {
            failures.push(format!("line {line}: no child {child}"));
            continue;
        };
        let got: Vec<serde_json::Value> = instruction
            .heredocs
            .iter()
            .map(|doc| serde_json::to_value(doc).unwrap())
            .collect();
        let want = row["heredocs"].as_array().cloned().unwrap_or_default();
        if got != want {
            failures.push(format!(
                "line {line} ({}): expected {want:?}, got {got:?}",
                row["instruction"]
            ));
        }
    }
    finish(
        "buildkit-parser/extra/heredoc/expected.jsonl",
        rows.len(),
        &failures,
    );

    let json_form = parser_dir().join("extra/heredoc-json-form/Dockerfile");
    let parsed = syntax::parse_raw(&read(&json_form)).expect("parses");
    let with_heredocs: Vec<usize> = (1..=3)
        .filter(|index| !parsed.instructions[*index].heredocs.is_empty())
        .collect();
    assert!(
        with_heredocs.is_empty(),
        "JSON-form instructions took heredocs: {with_heredocs:?}"
    );
}

#[test]
fn buildkit_heredoc_words() {
    let path = parser_dir().join("extra/heredoc/heredoc-words.tsv");
    let table = read_text(&path);
    let rows: Vec<&str> = table
        .lines()
        .filter(|line| !line.starts_with('#'))
        .collect();
    let mut failures = Vec::new();
    for row in &rows {
        let (word, expected) = row.split_once('\t').expect("word<TAB>expected");
        let got = match lines::parse_heredoc(word) {
            Ok(Some(doc)) => format!("name={}", doc.name),
            Ok(None) => "none".to_owned(),
            Err(_) => "error".to_owned(),
        };
        if got != expected {
            failures.push(format!("{word:?}: expected {expected}, got {got}"));
        }
    }
    finish(
        "buildkit-parser/extra/heredoc/heredoc-words.tsv",
        rows.len(),
        &failures,
    );
}

#[test]
fn buildkit_heredocs_from_line() {
    let rows = jsonl(&parser_dir().join("extra/heredoc/heredocs-from-line.jsonl"));
    let mut failures = Vec::new();
    for (line, row) in &rows {
        let input = row["line"].as_str().unwrap();
        let want = strings(&row["heredoc_names"]).unwrap_or_default();
        match lines::heredocs_from_line(input) {
            Ok(docs) => {
                let got: Vec<String> = docs.into_iter().map(|doc| doc.name).collect();
                if got != want {
                    failures.push(format!(
                        "line {line}: {input:?}: expected {want:?}, got {got:?}"
                    ));
                }
            }
            Err(error) => failures.push(format!("line {line}: {input:?}: {error}")),
        }
    }
    finish(
        "buildkit-parser/extra/heredoc/heredocs-from-line.jsonl",
        rows.len(),
        &failures,
    );
}

#[test]
fn buildkit_parse_words() {
    let rows = jsonl(&parser_dir().join("extra/parse-words.jsonl"));
    let mut failures = Vec::new();
    for (line, row) in &rows {
        let input = row["input"].as_str().unwrap();
        let want = strings(&row["expect"]).unwrap();
        let got = args::parse_words(input);
        if got != want {
            failures.push(format!(
                "line {line}: {input:?}: expected {want:?}, got {got:?}"
            ));
        }
    }
    finish(
        "buildkit-parser/extra/parse-words.jsonl",
        rows.len(),
        &failures,
    );
}

#[test]
fn buildkit_json_arrays() {
    let rows = jsonl(&parser_dir().join("extra/json-arrays.jsonl"));
    let mut failures = Vec::new();
    for (line, row) in &rows {
        let input = row["input"].as_str().unwrap();
        let got = args::parse_json_array(input);
        let ok = match (row["valid"].as_bool().unwrap(), &got) {
            (true, Ok(Some(items))) => Some(items.clone()) == strings(&row["expect"]),
            (false, Err(_)) => true,
            _ => false,
        };
        if !ok {
            failures.push(format!("line {line}: {input:?}: got {got:?}"));
        }
    }
    finish(
        "buildkit-parser/extra/json-arrays.jsonl",
        rows.len(),
        &failures,
    );
}

#[test]
fn buildkit_directives() {
    let rows = jsonl(&parser_dir().join("extra/directives.jsonl"));
    let mut failures = Vec::new();
    for (line, row) in &rows {
        let input = row["input"].as_str().unwrap();
        let expect = &row["expect"];
        let problem = match row["func"].as_str().unwrap() {
            "DirectiveParser.ParseAll" => {
                let got: Vec<serde_json::Value> = lines::header_directives(input)
                    .map(|directives| {
                        directives
                            .iter()
                            .map(|d| serde_json::json!({"name": d.name, "value": d.value}))
                            .collect()
                    })
                    .unwrap_or_default();
                (got != *expect.as_array().unwrap()).then(|| format!("got {got:?}"))
            }
            func => {
                let found = match func {
                    "DetectSyntax" => lines::detect_syntax(input),
                    "ParseDirective" => lines::find_directive(row["key"].as_str().unwrap(), input),
                    other => panic!("line {line}: unknown func {other}"),
                };
                check_found_directive(expect, found.as_ref())
            }
        };
        if let Some(problem) = problem {
            failures.push(format!("line {line}: {input:?}: {problem}"));
        }
    }
    finish(
        "buildkit-parser/extra/directives.jsonl",
        rows.len(),
        &failures,
    );
}

/// Compares a found directive with the keys the row checks (absent keys were not checked).
fn check_found_directive(
    expect: &serde_json::Value,
    found: Option<&lines::FoundDirective>,
) -> Option<String> {
    let ok = expect["ok"].as_bool().unwrap();
    if ok != found.is_some() {
        return Some(format!("expected ok={ok}, got {found:?}"));
    }
    let found = found?;
    let checks = [
        ("ref", serde_json::json!(found.reference())),
        ("cmdline", serde_json::json!(found.value)),
        ("line", serde_json::json!(found.line)),
    ];
    checks
        .iter()
        .find(|(key, got)| expect.get(*key).is_some_and(|want| want != got))
        .map(|(key, got)| format!("{key}: expected {}, got {got}", expect[*key]))
}
