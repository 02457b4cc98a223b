//! The one error type of the graph stage: what went wrong, where in the Dockerfile, and what
//! would fix it.

use crate::syntax::{ParseErrorKind, Position};

/// What was wrong with the stages, their references or an expanded word. Messages say what
/// was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GraphErrorKind {
    /// `--target` names no stage.
    #[error("target stage '{name}' could not be found: expected the name of a stage")]
    UnknownTarget {
        /// The name given.
        name: String,
    },
    /// Two stages with the same name (names compare case-insensitively).
    #[error("duplicate stage name '{name}': expected each stage name once, it is first used on line {first_line}")]
    DuplicateStage {
        /// The name, lower case.
        name: String,
        /// The line of the first stage with that name.
        first_line: usize,
    },
    /// FROM, COPY --from or RUN --mount from= names a stage that comes later in the file.
    #[error(
        "{user} uses {stage} in {via}, which is defined after it: expected a stage defined earlier"
    )]
    StageDefinedLater {
        /// The stage that refers, described (`stage 'app'`, `stage 2`).
        user: String,
        /// The stage referred to, described.
        stage: String,
        /// How it is referred to (`FROM`, `COPY --from`, `RUN --mount`).
        via: &'static str,
    },
    /// Stages that depend on each other in a loop, a stage copying from itself included.
    #[error("circular dependency between stages: {path}")]
    Cycle {
        /// The loop, as `stage 'a' -> stage 'b' -> stage 'a'`.
        path: String,
    },
    /// `COPY --from=<number>` with no stage of that index.
    #[error("invalid stage index {index}: expected the index of one of the {count} stages (0 to {last})")]
    InvalidStageIndex {
        /// The index as written.
        index: String,
        /// How many stages there are.
        count: usize,
        /// The highest valid index.
        last: usize,
    },
    /// `RUN --mount=from=<number>`: BuildKit looks mount sources up by name only.
    #[error("invalid --mount from '{from}': expected a stage name, an image or a context, not a stage index")]
    MountFromIndex {
        /// The value as written.
        from: String,
    },
    /// A word could not be expanded (`${x:?msg}` with `x` unset, an unterminated quote, …).
    #[error("{message}")]
    Expansion {
        /// The lexer's message, `failed to process "<word>": <reason>`.
        message: String,
    },
    /// The image of a FROM expands to nothing.
    #[error("base name '{expression}' is empty after expansion: expected an image reference")]
    EmptyBase {
        /// The word as written.
        expression: String,
    },
    /// `FROM --platform` expands to nothing.
    #[error(
        "--platform value '{expression}' is empty after expansion: expected os/arch[/variant]"
    )]
    EmptyPlatform {
        /// The word as written.
        expression: String,
    },
    /// `FROM --platform` expands to something that is no platform.
    #[error("invalid --platform value '{value}': {reason}")]
    InvalidPlatform {
        /// The expanded value.
        value: String,
        /// What is wrong and what was expected.
        reason: String,
    },
    /// An ENV or LABEL name that expands to nothing.
    #[error("{keyword} name '{expression}' is empty after expansion: expected a name")]
    EmptyName {
        /// `ENV` or `LABEL`.
        keyword: &'static str,
        /// The name as written.
        expression: String,
    },
    /// A VOLUME path that expands to nothing.
    #[error("VOLUME path '{expression}' is empty after expansion: expected a path")]
    EmptyVolume {
        /// The path as written.
        expression: String,
    },
    /// A `--build-arg` whose name no ARG could declare.
    #[error("invalid --build-arg name '{name}': expected a name that starts with a letter or '_' and holds only letters, digits, '_', '-' and '.'")]
    InvalidBuildArg {
        /// The name given.
        name: String,
    },
    /// A value that is checked once expanded (`--chmod`, EXPOSE ports, STOPSIGNAL, `--mount`
    /// options, …) and is not valid.
    #[error("{0}")]
    Value(Box<ParseErrorKind>),
}

/// A graph failure with its place in the Dockerfile, when it has one, and a suggestion.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}")]
pub struct GraphError {
    /// What went wrong.
    pub kind: GraphErrorKind,
    /// The offending word in the Dockerfile; `None` for problems with the options alone
    /// (`--target`, `--build-arg`).
    pub position: Option<Position>,
    /// A fix worth trying, e.g. "did you mean 'builder'?".
    pub hint: Option<String>,
}

impl GraphError {
    /// An error at `position` without a hint.
    pub fn new(kind: GraphErrorKind, position: Option<Position>) -> GraphError {
        GraphError {
            kind,
            position,
            hint: None,
        }
    }

    /// An error at a place in the Dockerfile without a hint.
    pub fn at(kind: GraphErrorKind, position: Position) -> GraphError {
        GraphError::new(kind, Some(position))
    }

    /// The same error with a hint.
    pub fn with_hint(mut self, hint: impl Into<String>) -> GraphError {
        self.hint = Some(hint.into());
        self
    }

    /// The same error with a hint when there is one.
    pub fn with_hint_opt(self, hint: Option<String>) -> GraphError {
        match hint {
            Some(hint) => self.with_hint(hint),
            None => self,
        }
    }
}

/// The result type of the graph stage.
pub type Result<T> = std::result::Result<T, GraphError>;
