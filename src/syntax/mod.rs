//! Stage 1 of the pipeline: Dockerfile text to a syntax tree. Pure: no file system, no
//! processes, no variable expansion (that needs build state and happens in [`crate::graph`]).
//!
//! Two layers, as grammar/dockerfile.md describes them:
//! - [`lines`] and [`args`] give the lossless [`Dockerfile`] of [`RawInstruction`]s, which
//!   [`Dockerfile::dump`] prints in BuildKit's parser-test format;
//! - [`instruction`] types every instruction and checks its flags.

pub mod args;
pub mod ast;
pub mod error;
pub mod lines;

pub use ast::{Directive, Dockerfile, Heredoc, Position, RawInstruction, Span, Warning};
pub use error::{ParseError, ParseErrorKind, Result};

/// Parses Dockerfile bytes into the lossless syntax tree.
///
/// # Errors
/// Text that is not UTF-8, a file without instructions, a bad or repeated parser directive,
/// an unterminated heredoc, a JSON array of non-strings, and ENV/LABEL without values.
pub fn parse_raw(source: &[u8]) -> Result<Dockerfile> {
    let text = std::str::from_utf8(source).map_err(|error| {
        let valid = &source[..error.valid_up_to()];
        let line = valid.iter().filter(|byte| **byte == b'\n').count() + 1;
        let line_start = valid.iter().rposition(|byte| *byte == b'\n').map_or(0, |at| at + 1);
        ParseError::new(
            ParseErrorKind::NotUtf8 {
                byte: source[error.valid_up_to()],
            },
            Position {
                line,
                column: valid.len() - line_start + 1,
            },
        )
    })?;
    lines::dockerfile(text)
}
