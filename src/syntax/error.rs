//! The one error type of the syntax stage: what went wrong, where, and what would fix it.

use super::ast::Position;

/// What was wrong with the Dockerfile. Messages say what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseErrorKind {
    /// The file held no instruction at all.
    #[error("file with no instructions: expected at least a FROM instruction")]
    NoInstructions,
    /// The bytes are not UTF-8.
    #[error("the Dockerfile is not valid UTF-8 (invalid byte 0x{byte:02x})")]
    NotUtf8 {
        /// The first offending byte.
        byte: u8,
    },
    /// A directive appeared twice in the header.
    #[error("only one {0} parser directive can be used")]
    RepeatedDirective(String),
    /// `# escape=` named something other than a backslash or backtick.
    #[error("invalid escape token '{0}': expected '\\' or '`'")]
    InvalidEscape(String),
    /// The file ended before a heredoc's delimiter line.
    #[error("unterminated heredoc: expected a line '{0}' before the end of the file")]
    UnterminatedHeredoc(String),
    /// A heredoc delimiter word could not be read.
    #[error("invalid heredoc delimiter: {0}")]
    HeredocDelimiter(String),
    /// A JSON-form array held something other than strings.
    #[error("JSON array must hold only strings: {0}")]
    NotStringArray(String),
    /// ENV or LABEL legacy form with only a key.
    #[error("{keyword} must have two arguments: expected '{keyword} name value' or '{keyword} name=value'")]
    MissingValue {
        /// The instruction, upper case.
        keyword: String,
    },
    /// ENV or LABEL new form with a word that is not `name=value`.
    #[error("can't find = in '{word}': expected name=value")]
    MissingEquals {
        /// The offending word.
        word: String,
    },
    /// Continuation lines that joined into nothing (`\` alone on its lines).
    #[error(
        "line continuation without an instruction: expected an instruction keyword such as RUN"
    )]
    EmptyInstruction,
    /// A keyword that is not a Dockerfile instruction.
    #[error("unknown instruction '{found}'")]
    UnknownInstruction {
        /// The word as written.
        found: String,
    },
    /// A `--flag` the instruction does not take.
    #[error("unknown flag '--{flag}' for {keyword}")]
    UnknownFlag {
        /// The instruction, upper case.
        keyword: String,
        /// The flag name without dashes.
        flag: String,
    },
    /// A flag given twice where only one is allowed.
    #[error("duplicate flag '--{flag}' for {keyword}: expected it at most once")]
    DuplicateFlag {
        /// The instruction, upper case.
        keyword: String,
        /// The flag name without dashes.
        flag: String,
    },
    /// A flag or argument whose value does not fit.
    #[error("invalid {what} '{found}': expected {expected}")]
    InvalidValue {
        /// What was being read (`--network value`, `duration`, …).
        what: String,
        /// What was found.
        found: String,
        /// What would have been accepted.
        expected: String,
    },
    /// The instruction has too few or too many arguments.
    #[error("{keyword} {problem}")]
    Arguments {
        /// The instruction, upper case.
        keyword: String,
        /// What is wrong, e.g. "requires at least two arguments".
        problem: String,
    },
    /// An instruction that may not appear where it is.
    #[error("{0}")]
    Misplaced(String),
    /// A `--flag` that takes a value was written without `=value`.
    #[error("flag '--{flag}' for {keyword} needs a value: expected '--{flag}=<value>'")]
    MissingFlagValue {
        /// The instruction, upper case.
        keyword: String,
        /// The flag name without dashes.
        flag: String,
    },
    /// `ONBUILD ONBUILD`, `ONBUILD FROM` or `ONBUILD MAINTAINER`.
    #[error("{keyword} isn't allowed as an ONBUILD trigger: expected an instruction such as RUN or COPY")]
    OnbuildTrigger {
        /// The nested instruction, upper case.
        keyword: String,
    },
    /// An instruction that only has an exec form (SHELL) written in shell form.
    #[error("{keyword} requires the arguments in JSON form: expected {keyword} [\"executable\", \"parameters\"]")]
    NotJsonForm {
        /// The instruction, upper case.
        keyword: String,
    },
    /// A `RUN --mount` option key that does not exist.
    #[error("unknown --mount option '{key}'")]
    UnknownMountKey {
        /// The key as written, lower-cased.
        key: String,
    },
    /// A `RUN --mount` option the mount's type does not take (`size` on a bind mount, …).
    #[error("--mount option '{key}' is not allowed for a {mount_type} mount")]
    MountOptionNotAllowed {
        /// The option key.
        key: String,
        /// The mount type in force when the option was read.
        mount_type: String,
    },
    /// A secret mount with neither `id`, `source` nor `target`.
    #[error("a secret mount needs a name: expected 'id=', 'source=' or 'target='")]
    SecretMountWithoutName,
    /// Two `RUN --mount` options that exclude each other.
    #[error("--mount options '{first}' and '{second}' can't both be set")]
    MountConflict {
        /// The option read first.
        first: String,
        /// The option that conflicts with it.
        second: String,
    },
    /// An instruction other than ARG before the first FROM.
    #[error("{keyword} before the first FROM: expected only ARG instructions before FROM")]
    BeforeFrom {
        /// The instruction, upper case.
        keyword: String,
    },
    /// A Dockerfile with instructions but no FROM.
    #[error("the Dockerfile has no FROM instruction: expected at least one build stage")]
    NoStages,
}

/// A parse failure with its place in the file and, where one exists, a suggestion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct ParseError {
    /// What went wrong.
    pub kind: ParseErrorKind,
    /// Where: 1-based line and byte column.
    pub position: Position,
    /// The last line of the instruction involved (equal to `position.line` for one-liners).
    pub end_line: usize,
    /// A fix worth trying, e.g. "did you mean 'COPY'?".
    pub hint: Option<String>,
}

impl ParseError {
    /// An error at `position` with no hint.
    pub fn new(kind: ParseErrorKind, position: Position) -> ParseError {
        ParseError {
            kind,
            position,
            end_line: position.line,
            hint: None,
        }
    }

    /// The same error with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> ParseError {
        self.hint = Some(hint.into());
        self
    }

    /// The same error with `hint` if there is one.
    pub fn with_hint_if(mut self, hint: Option<String>) -> ParseError {
        if hint.is_some() {
            self.hint = hint;
        }
        self
    }
}

/// The result type of the syntax stage.
pub type Result<T> = std::result::Result<T, ParseError>;

/// Returns the candidate closest to `found` (case-insensitive edit distance), if it is close
/// enough to be a likely misspelling.
pub fn nearest<'a>(found: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let found = found.to_lowercase();
    let limit = (found.chars().count() / 3).max(1);
    let length = found.chars().count();
    candidates
        .iter()
        // The distance is at least the difference in length; skipping hopeless candidates
        // keeps a megabyte-long unknown word from costing a megabyte-sized table.
        .filter(|candidate| candidate.chars().count().abs_diff(length) <= limit)
        .map(|candidate| (edit_distance(&found, &candidate.to_lowercase()), *candidate))
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, candidate)| candidate)
}

/// Returns the hint "did you mean 'X'?" for the candidate nearest to `found`, if one is close.
pub fn did_you_mean(found: &str, candidates: &[&str]) -> Option<String> {
    nearest(found, candidates).map(|close| format!("did you mean '{close}'?"))
}

/// Levenshtein distance with adjacent transpositions counted as one edit.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut rows = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in rows.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in rows[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let substitution = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (rows[i - 1][j] + 1)
                .min(rows[i][j - 1] + 1)
                .min(rows[i - 1][j - 1] + substitution);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(rows[i - 2][j - 2] + 1);
            }
            rows[i][j] = best;
        }
    }
    rows[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_suggests_close_words_only() {
        let keywords = ["COPY", "CMD", "RUN", "ENTRYPOINT", "WORKDIR"];
        let table = [
            ("COPPY", Some("COPY")),
            ("cpoy", Some("COPY")),
            ("ENTRYPIONT", Some("ENTRYPOINT")),
            ("WROKDIR", Some("WORKDIR")),
            ("FROBNICATE", None),
        ];
        for (found, expected) in table {
            assert_eq!(
                nearest(found, &keywords),
                expected,
                "suggestion for {found}"
            );
        }
    }
}
