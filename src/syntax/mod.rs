//! Stage 1 of the pipeline: Dockerfile text to a syntax tree. Pure: no file system, no
//! processes, no variable expansion (that needs build state and happens in [`crate::graph`]).
//!
//! Two layers, as grammar/dockerfile.md describes them:
//! - [`lines`] and [`args`] give the lossless [`Dockerfile`] of [`RawInstruction`]s, which
//!   [`Dockerfile::dump`] prints in BuildKit's parser-test format;
//! - [`instruction`] types every instruction and checks its flags; [`parse`] does both.

pub mod args;
pub mod ast;
pub mod error;
pub mod instruction;
pub mod lines;

pub use ast::{Directive, Dockerfile, Heredoc, Position, RawInstruction, Span, Warning};
pub use error::{ParseError, ParseErrorKind, Result};
pub use instruction::{parse_instruction, Command, Instruction};

/// A Dockerfile read both ways: the lossless tree and the typed instructions, one per raw
/// instruction and in the same order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    /// The lossless tree, with directives, the escape character and warnings.
    pub dockerfile: Dockerfile,
    /// The typed instructions.
    pub instructions: Vec<Instruction>,
}

/// Parses Dockerfile bytes and types every instruction: the syntax stage's entry point.
///
/// # Errors
/// Everything [`parse_raw`] and [`parse_instruction`] reject, an instruction other than ARG
/// before the first FROM, and a file with no FROM at all.
pub fn parse(source: &[u8]) -> Result<Parsed> {
    let dockerfile = parse_raw(source)?;
    let instructions = dockerfile
        .instructions
        .iter()
        .map(|raw| parse_instruction(raw, dockerfile.escape))
        .collect::<Result<Vec<_>>>()?;
    stage_order(&instructions)?;
    Ok(Parsed {
        dockerfile,
        instructions,
    })
}

/// Checks the order of the typed instructions: only ARGs may come before the first FROM, and
/// there must be a FROM.
///
/// ```ebnf
/// stage_order = { arg } from { instruction } ;   (* over typed instructions, not text *)
/// ```
///
/// # Errors
/// An instruction other than ARG before the first FROM, and a file with no FROM.
fn stage_order(instructions: &[Instruction]) -> Result<()> {
    let first_stage = instructions
        .iter()
        .position(|instruction| matches!(instruction.command, Command::From(_)));
    let before = &instructions[..first_stage.unwrap_or(instructions.len())];
    if let Some(misplaced) = before
        .iter()
        .find(|instruction| !matches!(instruction.command, Command::Arg(_)))
    {
        let mut error = ParseError::new(
            ParseErrorKind::BeforeFrom {
                keyword: misplaced.keyword().to_string(),
            },
            misplaced.position,
        );
        error.end_line = misplaced.span.end_line;
        return Err(error.with_hint("start the file, or this stage, with FROM <image>"));
    }
    match (first_stage, instructions.first()) {
        (None, Some(first)) => Err(ParseError::new(ParseErrorKind::NoStages, first.position)
            .with_hint("add a FROM line, such as FROM scratch, after the global ARGs")),
        _ => Ok(()),
    }
}

/// Parses Dockerfile bytes into the lossless syntax tree.
///
/// # Errors
/// Text that is not UTF-8, a file without instructions, a bad or repeated parser directive,
/// an unterminated heredoc, a JSON array of non-strings, and ENV/LABEL without values.
pub fn parse_raw(source: &[u8]) -> Result<Dockerfile> {
    let text = std::str::from_utf8(source).map_err(|error| {
        let valid = &source[..error.valid_up_to()];
        let line = valid.iter().filter(|byte| **byte == b'\n').count() + 1;
        let line_start = valid
            .iter()
            .rposition(|byte| *byte == b'\n')
            .map_or(0, |at| at + 1);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_types_every_instruction_in_order() {
        let parsed = parse(b"ARG BASE=scratch\nFROM $BASE AS app\nENV A=1\nCOPY . /app\n").unwrap();
        let keywords: Vec<&str> = parsed
            .instructions
            .iter()
            .map(Instruction::keyword)
            .collect();
        assert_eq!(keywords, ["ARG", "FROM", "ENV", "COPY"]);
        assert_eq!(parsed.dockerfile.instructions.len(), 4);
        assert_eq!(
            parsed.instructions[3].position,
            Position { line: 4, column: 1 }
        );
    }

    #[test]
    fn parse_checks_what_comes_before_the_first_from() {
        let table: [(&str, &str, Option<&str>, Position); 4] = [
            (
                "RUN true\nFROM scratch\n",
                "RUN before the first FROM: expected only ARG instructions before FROM",
                Some("start the file, or this stage, with FROM <image>"),
                Position { line: 1, column: 1 },
            ),
            (
                "ARG A\n\n  ENV B=1\nFROM scratch\n",
                "ENV before the first FROM: expected only ARG instructions before FROM",
                Some("start the file, or this stage, with FROM <image>"),
                Position { line: 3, column: 3 },
            ),
            (
                "ARG A\nARG B\n",
                "the Dockerfile has no FROM instruction: expected at least one build stage",
                Some("add a FROM line, such as FROM scratch, after the global ARGs"),
                Position { line: 1, column: 1 },
            ),
            (
                "FROM scratch\nCOPPY a b\n",
                "unknown instruction 'COPPY'",
                Some("did you mean 'COPY'?"),
                Position { line: 2, column: 1 },
            ),
        ];
        for (text, message, hint, position) in table {
            let error = parse(text.as_bytes()).unwrap_err();
            assert_eq!(error.to_string(), message, "{text:?}");
            assert_eq!(error.hint.as_deref(), hint, "{text:?}");
            assert_eq!(error.position, position, "{text:?}");
        }
    }

    #[test]
    fn parse_keeps_raw_errors() {
        let error = parse(b"FROM scratch\nENV PATH\n").unwrap_err();
        assert_eq!(error.position.line, 2);
        assert!(parse(b"").is_err());
    }
}
