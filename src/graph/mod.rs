//! Stage 2 of the pipeline: typed instructions plus build options to a [`BuildGraph`].
//!
//! Consumes a [`Parsed`] Dockerfile and [`BuildOptions`] (build args, target, platforms);
//! produces the stages the target needs, in dependency order, each with its base, platform,
//! dependencies and steps. A step is the typed instruction with its words expanded exactly
//! where BuildKit expands them (see [`lower`]), plus the build args it depends on, which
//! cache keys need. ARG and ENV scoping is described in [`scope`].
//!
//! Pure: no file system, no processes, no handles; the graph is plain data, and rendering it
//! ([`BuildGraph::render_tree`], [`BuildGraph::render_dot`]) returns strings.
//!
//! # Why dependencies form a DAG
//! A FROM can only name an earlier stage (a later name is an error, see
//! [`GraphErrorKind::StageDefinedLater`]), but `COPY --from` and `RUN --mount=from=` look names
//! up among all stages, so the references as written can loop (`a` copies from `b`, `b` from
//! `a`; or a stage copies from itself). [`lower`] rejects such loops first, for every stage,
//! as BuildKit does ([`GraphErrorKind::Cycle`]), and then rejects any reference from a needed
//! stage to a later one. Every remaining edge points from a stage to an earlier one, so
//! ascending stage index is a topological order.

mod error;
mod lower;
mod options;
mod render;
pub mod scope;

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

pub use self::error::{GraphError, GraphErrorKind, Result};
pub use self::lower::lower;
pub use self::options::{BuildOptions, Platform};
use crate::syntax::instruction::ResolvedMount;
#[cfg(doc)]
use crate::syntax::Parsed;
use crate::syntax::{Instruction, Position};

/// Build args by name with the value each had; `None` for an ARG declared without a value.
pub type ArgValues = BTreeMap<String, Option<String>>;

/// The stages a build needs, in the order they can be built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildGraph {
    /// The stages the target needs and nothing else, dependencies before the stages that use
    /// them (ascending index), the target last.
    pub stages: Vec<Stage>,
    /// The index of the target stage in the Dockerfile.
    pub target: usize,
    /// The global scope FROM lines expanded against: platform args, then global ARGs with a
    /// value, in order.
    pub global_args: Vec<(String, String)>,
    /// Proxy variables given as build args, for RUN's environment only.
    pub proxy_env: BTreeMap<String, String>,
    /// Things worth telling the user that do not stop the build.
    pub warnings: Vec<GraphWarning>,
}

impl BuildGraph {
    /// The stage with Dockerfile index `index`, if the target needs it.
    pub fn stage(&self, index: usize) -> Option<&Stage> {
        self.stages
            .binary_search_by_key(&index, |stage| stage.index)
            .ok()
            .and_then(|at| self.stages.get(at))
    }

    /// The indexes of the needed stages, in build order.
    pub fn order(&self) -> Vec<usize> {
        self.stages.iter().map(|stage| stage.index).collect()
    }
}

/// One build stage: a FROM and the instructions up to the next FROM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Stage {
    /// Its position among all stages of the Dockerfile, from 0 (`COPY --from=<index>`).
    pub index: usize,
    /// The name after `AS`, lower case.
    pub name: Option<String>,
    /// What it starts from.
    pub base: Base,
    /// The platform it builds for: `FROM --platform`, else the base stage's, else the target
    /// platform.
    pub platform: Platform,
    /// The FROM instruction, image and `--platform` expanded against the global scope.
    pub from: Instruction,
    /// The global args the FROM line referred to, with their values (`None`: unset).
    pub from_args: ArgValues,
    /// Other stages it needs, in the order its instructions refer to them.
    pub dependencies: Vec<Dependency>,
    /// Its instructions, expanded; ONBUILD triggers of a base stage first.
    pub steps: Vec<Step>,
}

impl Stage {
    /// `stage 'name'`, or `stage 3` when unnamed, for messages.
    pub fn describe(&self) -> String {
        describe(self.index, self.name.as_deref())
    }
}

/// `stage 'name'` or `stage <index>`.
pub(crate) fn describe(index: usize, name: Option<&str>) -> String {
    match name {
        Some(name) => format!("stage '{name}'"),
        None => format!("stage {index}"),
    }
}

/// What a stage starts from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Base {
    /// `FROM scratch`: an empty file system.
    Scratch,
    /// An image reference, expanded, as written.
    Image(String),
    /// An earlier stage, by index.
    Stage(usize),
}

/// Where COPY, ADD or a RUN mount reads from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "value", rename_all = "lowercase")]
pub enum Source {
    /// The build context.
    Context,
    /// An empty file system (`--from=scratch`, and a cache mount's default).
    Scratch,
    /// A stage, by index.
    Stage(usize),
    /// An image reference (or named context), as written.
    Image(String),
}

/// How one stage needs another.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DependencyKind {
    /// It is the stage's base (`FROM <stage>`).
    From,
    /// `COPY --from=<stage>`.
    CopyFrom,
    /// `RUN --mount=from=<stage>`.
    MountFrom,
}

impl DependencyKind {
    /// How the dependency is written: `FROM`, `COPY --from`, `RUN --mount`.
    pub fn label(self) -> &'static str {
        match self {
            DependencyKind::From => "FROM",
            DependencyKind::CopyFrom => "COPY --from",
            DependencyKind::MountFrom => "RUN --mount",
        }
    }
}

/// One edge of the graph: this stage needs stage `stage`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependency {
    /// The index of the stage needed.
    pub stage: usize,
    /// How it is needed.
    pub kind: DependencyKind,
    /// The step that needs it (index into [`Stage::steps`]); `None` for the base.
    pub step: Option<usize>,
    /// Where the reference is written.
    pub position: Position,
}

/// One instruction of a stage, ready to build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    /// The typed instruction with its words expanded where BuildKit expands them: ADD/COPY
    /// sources, destination, `--chown`, `--chmod`, ADD `--checksum` and heredoc bodies that
    /// allow it; ENV and LABEL keys and values; ARG defaults (when they were used); EXPOSE
    /// ports (split into words); STOPSIGNAL, USER, VOLUME, WORKDIR; RUN `--mount` values
    /// except `from`. Untouched: `COPY --from`, RUN/CMD/ENTRYPOINT/SHELL/HEALTHCHECK commands,
    /// RUN heredocs, MAINTAINER and ONBUILD (its trigger is expanded in the stage that runs
    /// it).
    pub instruction: Instruction,
    /// The instruction as progress output shows it: keyword upper-cased, variables replaced
    /// the way BuildKit's progress names are (RUN keeps quotes and unset variables).
    pub text: String,
    /// The build args the step depends on, with their values (`None`: declared, unset). RUN
    /// depends on every ARG in scope; other steps on the ARGs their expansion referred to;
    /// ARG on the names it declares.
    pub args: ArgValues,
    /// COPY and ADD: where the sources are read from.
    pub source: Option<Source>,
    /// RUN: the mounts, expanded and interpreted, each with where it reads from.
    pub mounts: Vec<StepMount>,
    /// True when the step is an ONBUILD trigger of the base stage, run before the stage's own
    /// instructions.
    pub onbuild: bool,
}

/// A RUN mount ready to set up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepMount {
    /// The options, expanded and checked.
    pub mount: ResolvedMount,
    /// Where a bind or cache mount reads from; `None` for tmpfs, secret and ssh mounts.
    pub source: Option<Source>,
}

/// Something worth telling the user that does not stop the build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum GraphWarning {
    /// `--build-arg`s that no ARG declared (BuildKit's "were not consumed").
    UnusedBuildArgs {
        /// The names, sorted.
        names: Vec<String>,
    },
}

/// One line, lower case, like BuildKit's `[Warning] One or more build-args [a b] were not
/// consumed`.
impl fmt::Display for GraphWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GraphWarning::UnusedBuildArgs { names } => write!(
                f,
                "one or more build-args [{}] were not consumed",
                names.join(" ")
            ),
        }
    }
}

#[cfg(test)]
mod tests;
