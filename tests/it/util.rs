//! Helpers shared by the integration tests.

/// Writes a conformance count line straight to the process's stderr, past libtest's capture, so every run shows it.
pub fn report(suite: &str, passed: usize, total: usize) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "conformance {suite}: {passed}/{total}");
}

/// Path of ../shared/conformance relative to the crate root.
pub fn conformance_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/conformance")
}
