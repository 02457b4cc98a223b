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
