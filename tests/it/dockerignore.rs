//! `.dockerignore` conformance: every case under `dockerignore/` (formats in its README)
//! except the end-to-end builds, run against `kiln::context::ignore`, with the pass counts
//! printed.

use std::path::{Path, PathBuf};

use kiln::context::ignore::{read_ignore_file, ContextEntry, ContextFilter, PatternMatcher};

use crate::util::{conformance_dir, finish};

fn ignore_dir() -> PathBuf {
    conformance_dir().join("dockerignore")
}

fn read_text(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("conformance file {} is required: {e}", path.display()))
}

/// The data rows of a `.tsv` file (header and `#` lines dropped), split into columns.
fn tsv_rows(name: &str) -> Vec<(usize, Vec<String>)> {
    read_text(&ignore_dir().join(name))
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.starts_with('#') && !line.is_empty())
        .map(|(index, line)| (index + 1, line.split('\t').map(str::to_owned).collect()))
        .collect()
}

/// Each JSON object of a `.jsonl` file, with its 1-based line number.
fn jsonl(name: &str) -> Vec<(usize, serde_json::Value)> {
    read_text(&ignore_dir().join(name))
        .lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(index, line)| {
            let row = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{name}:{}: bad JSON: {e}", index + 1));
            (index + 1, row)
        })
        .collect()
}

fn strings(value: &serde_json::Value) -> Vec<String> {
    value
        .as_array()
        .expect("a JSON list")
        .iter()
        .map(|item| item.as_str().expect("list of strings").to_owned())
        .collect()
}

/// Every row with platform `all` or `unix` (kiln targets Unix, where `\` escapes).
#[test]
fn patternmatcher_matches() {
    let mut total = 0;
    let mut failures = Vec::new();
    for (line, columns) in tsv_rows("patternmatcher-matches.tsv") {
        let [_api, patterns, path, expected, platform, _source] = columns.as_slice() else {
            panic!("patternmatcher-matches.tsv:{line}: expected 6 columns");
        };
        if platform != "all" && platform != "unix" {
            continue;
        }
        total += 1;
        let patterns = strings(&serde_json::from_str(patterns).expect("JSON pattern list"));
        let actual = PatternMatcher::new(&patterns).and_then(|matcher| matcher.matches(path));
        let actual = match actual {
            Ok(hit) => hit.to_string(),
            Err(_) => "error".to_owned(),
        };
        if actual != *expected {
            failures.push(format!(
                "line {line}: {patterns:?} on {path:?}: expected {expected}, got {actual}"
            ));
        }
    }
    finish("dockerignore patternmatcher-matches", total, &failures);
}

/// The listed patterns all compile; their classification is upstream's optimisation, so
/// each is checked against paths that tell the shapes apart.
#[test]
fn patternmatcher_compile() {
    let mut total = 0;
    let mut failures = Vec::new();
    for (line, columns) in tsv_rows("patternmatcher-compile.tsv") {
        let pattern = &columns[0];
        total += 1;
        let matcher = match PatternMatcher::new(&[pattern.as_str()]) {
            Ok(matcher) => matcher,
            Err(error) => {
                failures.push(format!("line {line}: {pattern:?} rejected: {error}"));
                continue;
            }
        };
        let kind = columns.get(1).map(String::as_str).unwrap_or("");
        let text = matcher.patterns()[0].text().to_owned();
        // An exact pattern matches itself; a prefix one its prefix plus anything; a suffix one
        // anything ending in its suffix; a regexp one is checked by the matches table.
        let probe = match kind {
            "exactMatch" => Some(text.clone()),
            "prefixMatch" => Some(format!("{}x/y", &text[..text.len() - 2])),
            "suffixMatch" => Some(format!("x/y{}", &text[2..])),
            _ => None,
        };
        if let Some(probe) = probe {
            if matcher.patterns()[0].matches(&probe) != Ok(true) {
                failures.push(format!(
                    "line {line}: {pattern:?} ({kind}) does not match {probe:?}"
                ));
            }
        }
    }
    finish("dockerignore patternmatcher-compile", total, &failures);
}

#[test]
fn patternmatcher_new() {
    let mut total = 0;
    let mut failures = Vec::new();
    for (line, case) in jsonl("patternmatcher-new.jsonl") {
        total += 1;
        let patterns = strings(&case["patterns"]);
        let ok = case["ok"].as_bool().expect("ok is a boolean");
        match PatternMatcher::new(&patterns) {
            Ok(matcher) => {
                if !ok {
                    failures.push(format!(
                        "line {line}: {patterns:?} accepted, expected an error"
                    ));
                    continue;
                }
                if let Some(count) = case["pattern_count"].as_u64() {
                    if matcher.patterns().len() as u64 != count {
                        failures.push(format!(
                            "line {line}: {patterns:?}: expected {count} patterns, got {}",
                            matcher.patterns().len()
                        ));
                    }
                }
                if let Some(exclusions) = case["has_exclusions"].as_bool() {
                    if matcher.has_exclusions() != exclusions {
                        failures.push(format!(
                            "line {line}: {patterns:?}: expected has_exclusions {exclusions}"
                        ));
                    }
                }
            }
            Err(error) if ok => {
                failures.push(format!("line {line}: {patterns:?} rejected: {error}"));
            }
            Err(_) => {}
        }
    }
    finish("dockerignore patternmatcher-new", total, &failures);
}

#[test]
fn ignorefile_readall() {
    let dir = ignore_dir().join("ignorefile-readall");
    let text = read_text(&dir.join("dockerignore"));
    let expected: Vec<String> = read_text(&dir.join("expected-patterns.txt"))
        .lines()
        .map(str::to_owned)
        .collect();
    let actual = read_ignore_file(&text);
    let mut failures = Vec::new();
    if actual != expected {
        failures.push(format!("expected {expected:?}, got {actual:?}"));
    }
    // Reading no file at all gives an empty list.
    if !read_ignore_file("").is_empty() {
        failures.push("an empty file gave patterns".to_owned());
    }
    finish("dockerignore ignorefile-readall", 2, &failures);
}

#[test]
fn context_walk() {
    let mut total = 0;
    let mut failures = Vec::new();
    for (line, case) in jsonl("context-walk.jsonl") {
        total += 1;
        let entries: Vec<ContextEntry> = case["tree"]
            .as_array()
            .expect("tree is a list")
            .iter()
            .map(|item| ContextEntry {
                path: item["path"].as_str().expect("path").to_owned(),
                is_dir: item["type"] == "dir",
            })
            .collect();
        let filter =
            match ContextFilter::new(&strings(&case["include"]), &strings(&case["exclude"])) {
                Ok(filter) => filter,
                Err(error) => {
                    failures.push(format!("line {line}: patterns rejected: {error}"));
                    continue;
                }
            };
        if let Some(expected) = case.get("expect_walk") {
            let expected = strings(expected);
            let actual: Result<Vec<String>, _> = filter.select(&entries).map(|selected| {
                selected
                    .iter()
                    .map(|e| format!("{} {}", if e.is_dir { "dir" } else { "file" }, e.path))
                    .collect()
            });
            if actual.as_ref() != Ok(&expected) {
                failures.push(format!(
                    "line {line}: walk expected {expected:?}, got {actual:?}"
                ));
            }
        }
        if let Some(opens) = case.get("expect_open").and_then(|v| v.as_object()) {
            for (path, expected) in opens {
                let actual = filter.allows(path);
                if actual != Ok(expected.as_bool().expect("boolean")) {
                    failures.push(format!(
                        "line {line}: open {path:?}: expected {expected}, got {actual:?}"
                    ));
                }
            }
        }
    }
    finish("dockerignore context-walk", total, &failures);
}

/// BuildKit's end-to-end `.dockerignore` builds, run through `kiln build`, the image read
/// back from the store. Two scenarios start `FROM busybox` and end with a RUN that asserts
/// the file set; until kiln has its sandbox they run `FROM scratch` without that RUN, and
/// the same facts are checked through `expect_in_image` and `expect_not_in_image`.
#[test]
fn buildkit_build_scenarios() {
    use sha2::{Digest as _, Sha256};
    let mut total = 0;
    let mut failures = Vec::new();
    for (line, case) in jsonl("buildkit-build-scenarios.jsonl") {
        total += 1;
        let context = tempfile::tempdir().expect("temp context");
        let store = tempfile::tempdir().expect("temp store");
        for (name, content) in case["context"].as_object().expect("context map") {
            let mut text = content.as_str().expect("file content").to_string();
            if name.starts_with("Dockerfile") && !name.ends_with(".dockerignore") {
                text = text
                    .replace("FROM busybox", "FROM scratch")
                    .lines()
                    .filter(|line| !line.starts_with("RUN "))
                    .collect::<Vec<_>>()
                    .join("\n");
            }
            std::fs::write(context.path().join(name), text).expect("context file");
        }
        let dockerfile = context
            .path()
            .join(case["build"]["dockerfile"].as_str().expect("dockerfile"));
        let run = crate::util::kiln(
            &[
                "build",
                "--root",
                store.path().to_str().expect("utf-8"),
                "-t",
                "scenario",
                "-f",
                dockerfile.to_str().expect("utf-8"),
                context.path().to_str().expect("utf-8"),
            ],
            b"",
        );
        let expect_success = case["expect_success"] == true;
        if (run.code == Some(0)) != expect_success {
            failures.push(format!(
                "line {line}: expected success {expect_success}, got {:?}:\n{}",
                run.code, run.stderr
            ));
            continue;
        }
        if !expect_success {
            continue;
        }
        let image = match crate::differential::image::from_oci_layout(
            store.path(),
            "docker.io/library/scenario:latest",
        ) {
            Ok(image) => image,
            Err(error) => {
                failures.push(format!("line {line}: {error}"));
                continue;
            }
        };
        for (path, content) in case["expect_in_image"].as_object().into_iter().flatten() {
            let sha256: String = Sha256::digest(content.as_str().unwrap_or_default().as_bytes())
                .iter()
                .map(|byte| format!("{byte:02x}"))
                .collect();
            match image.tree.nodes.get(path.as_str()).map(|node| &node.kind) {
                Some(crate::differential::tree::Kind::File { sha256: found, .. })
                    if *found == sha256 => {}
                other => failures.push(format!(
                    "line {line}: {path}: expected {content}, found {other:?}"
                )),
            }
        }
        for path in strings(&case["expect_not_in_image"]) {
            if image.tree.nodes.contains_key(path.as_str()) {
                failures.push(format!("line {line}: {path} must not be in the image"));
            }
        }
    }
    finish("dockerignore buildkit-build-scenarios", total, &failures);
}
