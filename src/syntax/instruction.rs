//! Typed instructions: the second layer of the syntax stage (grammar/dockerfile.md, section 8).
//!
//! Consumes [`RawInstruction`]s and produces [`Instruction`]s whose flags are checked. Words
//! stay unexpanded: `$VAR` is resolved later by [`crate::graph`], which knows the build args.
//! A value that holds no `$` is validated here, so mistakes fail at parse time; one that holds
//! a variable is validated after expansion.

use std::time::Duration;

use serde::Serialize;

use super::ast::{Heredoc, Position, RawInstruction, Span};

/// One instruction with its checked flags and arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// What the instruction does.
    pub command: Command,
    /// The physical lines it spans.
    pub span: Span,
    /// Where its keyword starts.
    pub position: Position,
    /// The logical source line, for messages and BuildKit-style progress (`[2/5] COPY . /app`).
    pub source: String,
}

/// The instructions of a Dockerfile, by keyword.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", rename_all = "UPPERCASE")]
pub enum Command {
    /// `FROM [--platform=P] image [AS name]`
    From(From),
    /// `RUN [--mount=…]… [--network=…] [--security=…] command`
    Run(Run),
    /// `CMD command`
    Cmd(CommandLine),
    /// `ENTRYPOINT command`
    Entrypoint(CommandLine),
    /// `SHELL ["exe", "arg"…]`
    Shell(Vec<String>),
    /// `LABEL k=v…`
    Label(Vec<KeyValue>),
    /// `MAINTAINER name`
    Maintainer(String),
    /// `EXPOSE port[/proto]…`
    Expose(Vec<String>),
    /// `ENV k=v…` or `ENV k v`
    Env(Vec<KeyValue>),
    /// `ARG name[=default]…`
    Arg(Vec<ArgDeclaration>),
    /// `ADD [flags] src… dest`
    Add(Copy),
    /// `COPY [flags] src… dest`
    Copy(Copy),
    /// `VOLUME path…`
    Volume(Vec<String>),
    /// `USER user[:group]`
    User(String),
    /// `WORKDIR path`
    Workdir(String),
    /// `ONBUILD instruction`
    Onbuild(Box<Instruction>),
    /// `STOPSIGNAL signal`
    Stopsignal(String),
    /// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD command`
    Healthcheck(Healthcheck),
}

/// `FROM`: the base of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    /// Image reference, `scratch`, or an earlier stage's name (unexpanded).
    pub image: String,
    /// `--platform` value (unexpanded).
    pub platform: Option<String>,
    /// The stage name after `AS`, lower-cased as BuildKit does.
    pub alias: Option<String>,
}

/// A command in exec (JSON) or shell form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "value", rename_all = "lowercase")]
pub enum CommandLine {
    /// `["exe", "arg"]`: run as is.
    Exec(Vec<String>),
    /// `exe arg`: run through the stage's SHELL.
    Shell(String),
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    /// What to run.
    pub command: CommandLine,
    /// `--mount` options, in order.
    pub mounts: Vec<Mount>,
    /// `--network`.
    pub network: Option<Network>,
    /// `--security`.
    pub security: Option<Security>,
    /// Heredoc bodies from the command line.
    pub heredocs: Vec<Heredoc>,
}

/// `RUN --network` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The builder's default network.
    Default,
    /// Only loopback.
    None,
    /// The host's network.
    Host,
}

/// `RUN --security` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// The default sandbox.
    Sandbox,
    /// All capabilities (needs an entitlement).
    Insecure,
}

/// `RUN --mount` types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum MountType {
    /// A directory from the context, a stage or an image.
    Bind,
    /// A persistent cache directory.
    Cache,
    /// A memory file system.
    Tmpfs,
    /// A secret file.
    Secret,
    /// An SSH agent socket.
    Ssh,
}

/// `sharing=` of a cache mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Sharing {
    /// Concurrent builds share the directory.
    Shared,
    /// Each concurrent build gets its own directory.
    Private,
    /// Concurrent builds wait for each other.
    Locked,
}

/// One `RUN --mount=…` (fields unexpanded; defaults applied later, per type).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Mount {
    /// `type=` (default `bind`).
    pub kind: MountType,
    /// `target=` / `dst=` / `destination=`.
    pub target: Option<String>,
    /// `source=` / `src=`.
    pub source: Option<String>,
    /// `from=`: a stage, image or build context.
    pub from: Option<String>,
    /// `rw`/`readwrite` (true) or `ro`/`readonly` (false); `None` when not given.
    pub read_write: Option<bool>,
    /// `id=` (cache, secret, ssh).
    pub id: Option<String>,
    /// `sharing=` (cache).
    pub sharing: Option<Sharing>,
    /// `mode=` (octal).
    pub mode: Option<String>,
    /// `uid=`.
    pub uid: Option<String>,
    /// `gid=`.
    pub gid: Option<String>,
    /// `size=` (tmpfs).
    pub size: Option<String>,
    /// `required` (secret, ssh).
    pub required: Option<bool>,
    /// `env=` (secret: expose as an environment variable).
    pub env: Option<String>,
}

/// A `key=value` pair of ENV or LABEL, unexpanded (quotes still in place).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The name, unexpanded.
    pub key: String,
    /// The value, unexpanded.
    pub value: String,
}

/// One name of an `ARG` instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDeclaration {
    /// The argument's name.
    pub name: String,
    /// The default after `=`, unexpanded; `None` when there is no `=`.
    pub default: Option<String>,
}

/// `COPY` and `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    /// Sources, unexpanded (heredoc markers included as written).
    pub sources: Vec<String>,
    /// Destination, unexpanded.
    pub destination: String,
    /// `--from`: a stage name or index, an image, or a named context. Never expanded.
    pub from: Option<String>,
    /// `--chown=user[:group]`.
    pub chown: Option<String>,
    /// `--chmod=` octal mode or symbolic.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// `--checksum` (ADD).
    pub checksum: Option<String>,
    /// `--keep-git-dir` (ADD).
    pub keep_git_dir: bool,
    /// `--unpack` (ADD); `None` when not given.
    pub unpack: Option<bool>,
    /// Heredoc bodies used as sources.
    pub heredocs: Vec<Heredoc>,
    /// True when written in JSON form.
    pub json: bool,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "test", rename_all = "UPPERCASE")]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// `HEALTHCHECK [flags] CMD …`.
    Cmd {
        /// The test command.
        command: CommandLine,
        /// `--interval`.
        interval: Option<Duration>,
        /// `--timeout`.
        timeout: Option<Duration>,
        /// `--start-period`.
        start_period: Option<Duration>,
        /// `--start-interval`.
        start_interval: Option<Duration>,
        /// `--retries`.
        retries: Option<u32>,
    },
}
