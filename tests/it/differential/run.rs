//! What the RUN cases ask of a build beyond the tree and config comparison: a secret that must
//! leave no trace, a RUN that must fail the same way in both tools, and the switch that skips
//! the kiln side while kiln cannot run commands.
//!
//! Consumes built images on disk, kiln stores and progress logs; produces difference lines.
//! Never writes anything.

use std::io::Read;
use std::path::Path;

use super::fixture::Failure;

/// What `kiln build` prints while it cannot execute RUN (the step error, and clap's refusal
/// of `--secret`). A case or scenario whose kiln build fails with one of them is skipped on
/// the kiln side, with a printed reason, so the RUN cases are checked against docker alone
/// until the sandbox lands. Delete this constant and [`kiln_pending`] (and their call sites)
/// when RUN works: every RUN case must then compare.
pub const RUN_PENDING: &[&str] = &["RUN is not supported yet", "unexpected argument '--secret'"];

/// True when kiln's build error is only its missing RUN support; says so on stderr.
pub fn kiln_pending(case: &str, error: &str) -> bool {
    let Some(reason) = RUN_PENDING.iter().find(|r| error.contains(**r)) else {
        return false;
    };
    eprintln!("skipping the kiln side of {case}: kiln build reports {reason:?}");
    true
}

/// Lines naming each of `texts` found in a file under `dir` (gzip and zstd blobs are read
/// decompressed too) or in `progress`; `who` names the tool.
pub fn leaks(texts: &[String], dir: &Path, progress: &str, who: &str) -> Vec<String> {
    let mut out = Vec::new();
    if texts.is_empty() {
        return out;
    }
    for text in texts {
        if progress.contains(text.as_str()) {
            out.push(format!(
                "{who}: the secret {text:?} shows in the progress output"
            ));
        }
    }
    for entry in walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
    {
        if !entry.file_type().is_file() {
            continue;
        }
        let Ok(bytes) = std::fs::read(entry.path()) else {
            out.push(format!("{who}: cannot read {}", entry.path().display()));
            continue;
        };
        let views = [Some(bytes.clone()), decompressed(&bytes)];
        for text in texts {
            if views.iter().flatten().any(|b| holds(b, text.as_bytes())) {
                out.push(format!(
                    "{who}: the secret {text:?} is stored in {}",
                    entry.path().display()
                ));
            }
        }
    }
    out
}

/// The content of a gzip or zstd stream, by its magic number; `None` for anything else.
fn decompressed(bytes: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut out)
            .ok()?;
    } else if bytes.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        out = zstd::decode_all(bytes).ok()?;
    } else {
        return None;
    }
    Some(out)
}

fn holds(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Lines naming how a build's outcome misses the expected failure: it must fail, show
/// `exit code: CODE`, and, when `located`, name `Dockerfile:LINE` (dockerd 20.10's BuildKit
/// does not print the location; current BuildKit and kiln do).
pub fn failure_mismatch(
    who: &str,
    outcome: &Result<String, String>,
    want: Failure,
    located: bool,
) -> Vec<String> {
    let error = match outcome {
        Ok(_) => return vec![format!("{who}: the build succeeded but must fail")],
        Err(error) => error,
    };
    let mut out = Vec::new();
    let code = format!("exit code: {}", want.code);
    if !shows_whole(error, &code) {
        out.push(format!("{who}: the error lacks {code:?}:\n{error}"));
    }
    let place = format!("Dockerfile:{}", want.line);
    if located && !shows_whole(error, &place) {
        out.push(format!(
            "{who}: the error lacks the location {place:?}:\n{error}"
        ));
    }
    out
}

/// True if `text` holds `word` not followed by another digit (`exit code: 3`, not `: 30`).
fn shows_whole(text: &str, word: &str) -> bool {
    text.match_indices(word).any(|(at, _)| {
        !text[at + word.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_digit())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_found_in_plain_and_compressed_files_and_progress() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("plain"), b"xx s3cret yy").expect("write");
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        std::io::Write::write_all(&mut gz, b"zz s3cret").expect("gzip");
        std::fs::write(dir.path().join("blob"), gz.finish().expect("gzip end")).expect("write");
        std::fs::write(dir.path().join("clean"), b"nothing here").expect("write");
        let texts = ["s3cret".to_owned()];
        let found = leaks(&texts, dir.path(), "#5 s3cret\n", "kiln");
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains("progress"));
        assert!(leaks(&texts, dir.path(), "", "kiln")
            .iter()
            .all(|l| !l.ends_with("clean")));
        assert!(leaks(&["absent".to_owned()], dir.path(), "", "kiln").is_empty());
    }

    #[test]
    fn failures_must_show_code_and_location() {
        let want = Failure { code: 3, line: 4 };
        let docker = Err("executor failed running [/bin/sh -c exit 3]: exit code: 3".to_owned());
        assert!(failure_mismatch("docker", &docker, want, false).is_empty());
        assert_eq!(failure_mismatch("kiln", &docker, want, true).len(), 1);
        let kiln = Err("error: Dockerfile:4: RUN exit 3: exit code: 3".to_owned());
        assert!(failure_mismatch("kiln", &kiln, want, true).is_empty());
        assert_eq!(
            failure_mismatch("kiln", &Ok(String::new()), want, true).len(),
            1
        );
        let other = Err("Dockerfile:4: exit code: 30".to_owned());
        assert_eq!(failure_mismatch("kiln", &other, want, true).len(), 1);
    }
}
