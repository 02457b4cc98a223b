//! BuildKit shell-lexer conformance: `envVarTest`, `wordsTest` and
//! `process-word-with-matches.jsonl` from `buildkit-shell/` (formats in its README).

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use kiln::words::Lexer;

use crate::util::{conformance_dir, finish};

fn suite_file(name: &str) -> (PathBuf, String) {
    let path = conformance_dir().join("buildkit-shell").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("conformance file {} is required: {e}", path.display()));
    (path, text)
}

#[test]
fn buildkit_env_var_test() {
    let (path, text) = suite_file("envVarTest");
    let env: Vec<(String, String)> = [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let lexer = Lexer::new('\\');
    let (mut total, mut failures) = (0, Vec::new());
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.starts_with('#') {
            continue;
        }
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(
            fields.len(),
            3,
            "{}:{number}: expected 3 fields",
            path.display()
        );
        let (platform, input, expected) = (fields[0], fields[1], fields[2]);
        match platform {
            "A" | "U" => {}
            "W" => continue,
            other => panic!("{}:{number}: bad platform {other:?}", path.display()),
        }
        total += 1;
        let got = lexer.process_word(input, &env);
        let ok = match (&got, expected) {
            (Err(_), "error") => true,
            (Ok(result), expected) => expected != "error" && result == expected,
            (Err(_), _) => false,
        };
        if !ok {
            failures.push(format!(
                "line {number}: {input:?} expected {expected:?}, got {got:?}"
            ));
        }
    }
    assert_eq!(total, 228, "envVarTest A+U case count");
    finish("buildkit-shell/envVarTest", total, &failures);
}

#[test]
fn buildkit_words_test() {
    let (path, text) = suite_file("wordsTest");
    let lexer = Lexer::new('\\');
    let mut env: Vec<(String, String)> = Vec::new();
    let (mut total, mut failures) = (0, Vec::new());
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            // `ENV` is three characters; the space after it is trimmed with
            // any others, trailing spaces belong to the value.
            let rest = rest.trim_start_matches(' ');
            let (name, value) = rest.split_once('=').unwrap_or((rest, ""));
            env.push((name.to_owned(), value.to_owned()));
            continue;
        }
        let fields: Vec<&str> = line.split('|').collect();
        assert_eq!(
            fields.len(),
            2,
            "{}:{number}: expected one '|'",
            path.display()
        );
        let input = fields[0].trim();
        let expected: Vec<&str> = fields[1].trim_start_matches(' ').split(',').collect();
        total += 1;
        let got = lexer
            .process_words(input, &env)
            .unwrap_or_else(|_| vec!["error".to_owned()]);
        if got != expected {
            failures.push(format!(
                "line {number}: {input:?} expected {expected:?}, got {got:?}"
            ));
        }
    }
    assert_eq!(total, 24, "wordsTest case count");
    finish("buildkit-shell/wordsTest", total, &failures);
}

fn string_set(value: Option<&serde_json::Value>) -> Option<BTreeSet<String>> {
    let items = value?.as_array()?;
    Some(
        items
            .iter()
            .map(|v| v.as_str().expect("set members are strings").to_owned())
            .collect(),
    )
}

#[test]
fn buildkit_process_word_with_matches() {
    let (path, text) = suite_file("process-word-with-matches.jsonl");
    let lexer = Lexer::new('\\');
    let (mut total, mut failures) = (0, Vec::new());
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        if line.trim().is_empty() {
            continue;
        }
        let row: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("{}:{number}: bad JSON: {e}", path.display()));
        let input = row["input"].as_str().expect("input is a string");
        let env: HashMap<String, String> = row["env"]
            .as_object()
            .expect("env is an object")
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().expect("env values are strings").to_owned(),
                )
            })
            .collect();
        total += 1;
        let got = lexer.process_word_with_matches(input, &env);
        let problem = if row["error"].as_bool() == Some(true) {
            match &got {
                Ok(out) => Some(format!("expected an error, got {:?}", out.result)),
                Err(e) => match row["error_contains"].as_str() {
                    Some(needle) if !e.message.contains(needle) => {
                        Some(format!("error {:?} lacks {needle:?}", e.message))
                    }
                    _ => None,
                },
            }
        } else {
            let expected = row["expected"].as_str().expect("expected is a string");
            match &got {
                Err(e) => Some(format!("expected {expected:?}, got error {:?}", e.message)),
                Ok(out) if out.result != expected => {
                    Some(format!("expected {expected:?}, got {:?}", out.result))
                }
                Ok(out) => {
                    let mut problem = None;
                    for (key, actual) in [("matched", &out.matched), ("unmatched", &out.unmatched)]
                    {
                        if let Some(want) = string_set(row.get(key)) {
                            if &want != actual {
                                problem = Some(format!("{key}: expected {want:?}, got {actual:?}"));
                            }
                        }
                    }
                    problem
                }
            }
        };
        match problem {
            None => {}
            Some(problem) => failures.push(format!("line {number}: {input:?}: {problem}")),
        }
    }
    assert_eq!(total, 56, "process-word-with-matches.jsonl row count");
    finish(
        "buildkit-shell/process-word-with-matches.jsonl",
        total,
        &failures,
    );
}
