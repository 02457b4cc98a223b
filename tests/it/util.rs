//! Helpers shared by the integration tests.

use std::io::Write;

/// Prints a conformance count line straight to the process's stderr, past libtest's capture,
/// so every run shows it, then fails the test if any case failed.
pub fn finish(suite: &str, total: usize, failures: &[String]) {
    let passed = total.saturating_sub(failures.len());
    let _ = writeln!(std::io::stderr(), "conformance {suite}: {passed}/{total}");
    assert!(
        failures.is_empty(),
        "{suite}: {} of {total} failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Path of ../shared/conformance relative to the crate root.
pub fn conformance_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance")
}

/// What a run of the real `kiln` binary gave.
#[derive(Debug)]
pub struct Run {
    /// The exit code (`None` if killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs the `kiln` binary built for this test run with `args`, feeding `stdin`, in the crate
/// root.
pub fn kiln(args: &[&str], stdin: &[u8]) -> Run {
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the kiln binary starts");
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_vec();
    let writer = std::thread::spawn(move || input.write_all(&stdin));
    let output = child.wait_with_output().expect("kiln runs to the end");
    // A child that exits before reading all of its input closes the pipe; that is not a failure.
    let _ = writer.join();
    Run {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Path of a folder under fixtures/.
pub fn fixtures_dir(area: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(area)
}

/// Compares `actual` with the golden file at `path`; with `BLESS=1` in the environment it
/// writes `actual` there instead.
pub fn check_golden(path: &std::path::Path, actual: &str) -> Result<(), String> {
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(path, actual).map_err(|e| format!("{}: {e}", path.display()))?;
        return Ok(());
    }
    let expected = std::fs::read_to_string(path)
        .map_err(|e| format!("{}: {e} (run with BLESS=1 to create it)", path.display()))?;
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "{}:\n--- expected\n{expected}--- actual\n{actual}",
            path.display()
        ))
    }
}

/// Returns true if and only if `tool` is on PATH. When it is not, prints why the caller skips,
/// or panics when `KILN_REQUIRE_PEERS` is set (CI sets it, so a missing peer fails there).
pub fn peer_available(tool: &str, test: &str) -> bool {
    let found = std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()));
    if !found {
        assert!(
            std::env::var_os("KILN_REQUIRE_PEERS").is_none(),
            "{test}: `{tool}` is required (KILN_REQUIRE_PEERS is set) but not on PATH"
        );
        let _ = writeln!(
            std::io::stderr(),
            "skipping {test}: `{tool}` is not on PATH"
        );
    }
    found
}

/// Returns true if and only if `unavailable` is `None`. Otherwise prints why `test` skips, or
/// panics when `KILN_REQUIRE_PEERS` is set, for peers that are on PATH but not usable (a
/// daemon that does not answer).
pub fn peer_ready(test: &str, unavailable: Option<String>) -> bool {
    let Some(reason) = unavailable else {
        return true;
    };
    assert!(
        std::env::var_os("KILN_REQUIRE_PEERS").is_none(),
        "{test}: a peer is required (KILN_REQUIRE_PEERS is set) but {reason}"
    );
    let _ = writeln!(std::io::stderr(), "skipping {test}: {reason}");
    false
}
