//! Typed instructions: the second layer of the syntax stage (grammar/dockerfile.md, section 8).
//!
//! Consumes [`RawInstruction`]s and produces [`Instruction`]s whose flags and arguments are
//! checked the way BuildKit's `instructions` package checks them, and stricter where BuildKit
//! only fails at build time. Words stay unexpanded: `$VAR` is resolved later by
//! [`crate::graph`], which knows the build args. A value that reads the same after expansion
//! ([`values::is_literal`]) is validated here, so mistakes fail at parse time; one that holds a
//! variable, a quote or an escape is kept as written, and graph validates it after expansion
//! with the same functions ([`values`], [`Mount::resolve`]). Nothing here touches the file
//! system, and ONBUILD nests exactly one level, so recursion is bounded.

mod flags;
pub mod mount;
pub mod values;

use std::time::Duration;

use serde::Serialize;

use self::flags::{
    parse_flags, split_flag, FlagSpec, Flags, GivenFlag, ADD_FLAGS, COPY_FLAGS, FROM_FLAGS,
    HEALTHCHECK_FLAGS, RUN_FLAGS,
};
pub use self::mount::{
    parse_mount, Mount, MountError, MountKey, MountOption, MountType, ResolvedMount, Sharing,
};
use self::values::{
    is_literal, parse_duration, validate_arg_name, validate_checksum, validate_chmod,
    validate_port, validate_signal, validate_stage_name, DURATION_EXPECTED,
};
use super::ast::{Heredoc, Position, RawInstruction, Span};
use super::error::{did_you_mean, ParseError, ParseErrorKind, Result};
use super::lines::parse_heredoc;

/// Every instruction keyword, upper case.
pub const KEYWORDS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// One instruction with its checked flags and arguments.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Instruction {
    /// What the instruction does.
    pub command: Command,
    /// The physical lines it spans, heredoc bodies included.
    pub span: Span,
    /// Where its keyword starts.
    pub position: Position,
    /// Where its arguments start (after the flags); the keyword's end when it has none.
    pub args_position: Position,
    /// Its `--flags` in source order, for errors about a flag's value.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<FlagSite>,
    /// The logical source line, for messages and BuildKit-style progress (`[2/5] COPY . /app`).
    pub source: String,
}

impl Instruction {
    /// The keyword, upper case (`COPY`).
    pub fn keyword(&self) -> &'static str {
        self.command.keyword()
    }

    /// Where the first `--name` flag is, if it was given.
    pub fn flag_position(&self, name: &str) -> Option<Position> {
        self.flags
            .iter()
            .find(|flag| flag.name == name)
            .map(|flag| flag.position)
    }
}

/// Where one `--flag` was written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FlagSite {
    /// The flag's name without dashes (`from`).
    pub name: String,
    /// Where its `--` is.
    pub position: Position,
}

/// The instructions of a Dockerfile, by keyword.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "instruction", content = "arguments", rename_all = "UPPERCASE")]
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
    /// `ONBUILD instruction`: never ONBUILD, FROM or MAINTAINER.
    Onbuild(Box<Instruction>),
    /// `STOPSIGNAL signal`
    Stopsignal(String),
    /// `HEALTHCHECK NONE` or `HEALTHCHECK [flags] CMD command`
    Healthcheck(Healthcheck),
}

impl Command {
    /// The keyword, upper case.
    pub fn keyword(&self) -> &'static str {
        match self {
            Command::From(_) => "FROM",
            Command::Run(_) => "RUN",
            Command::Cmd(_) => "CMD",
            Command::Entrypoint(_) => "ENTRYPOINT",
            Command::Shell(_) => "SHELL",
            Command::Label(_) => "LABEL",
            Command::Maintainer(_) => "MAINTAINER",
            Command::Expose(_) => "EXPOSE",
            Command::Env(_) => "ENV",
            Command::Arg(_) => "ARG",
            Command::Add(_) => "ADD",
            Command::Copy(_) => "COPY",
            Command::Volume(_) => "VOLUME",
            Command::User(_) => "USER",
            Command::Workdir(_) => "WORKDIR",
            Command::Onbuild(_) => "ONBUILD",
            Command::Stopsignal(_) => "STOPSIGNAL",
            Command::Healthcheck(_) => "HEALTHCHECK",
        }
    }
}

/// `FROM`: the base of a stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct From {
    /// Image reference, `scratch`, or an earlier stage's name (unexpanded); at
    /// [`Instruction::args_position`].
    pub image: String,
    /// `--platform` value (unexpanded).
    pub platform: Option<String>,
    /// The stage name after `AS`, lower-cased as BuildKit does; never expanded.
    pub alias: Option<String>,
    /// Where the stage name is.
    pub alias_position: Option<Position>,
}

/// A command in exec (JSON) or shell form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "form", content = "value", rename_all = "lowercase")]
pub enum CommandLine {
    /// `["exe", "arg"]`: run as is.
    Exec(Vec<String>),
    /// `exe arg`: run through the stage's SHELL, never expanded by the builder.
    Shell(String),
}

/// `RUN`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Run {
    /// What to run; heredoc markers stay in shell-form text.
    pub command: CommandLine,
    /// `--mount` options, in order.
    pub mounts: Vec<Mount>,
    /// `--network`; `None` when not given (the default network).
    pub network: Option<Network>,
    /// `--security`; `None` when not given (the sandbox).
    pub security: Option<Security>,
    /// Heredoc bodies from the command line, in marker order.
    pub heredocs: Vec<Heredoc>,
}

/// `RUN --network` values; never expanded.
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

/// `RUN --security` values; never expanded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// The default sandbox.
    Sandbox,
    /// All capabilities (needs an entitlement).
    Insecure,
}

/// A `key=value` pair of ENV or LABEL, unexpanded (quotes still in place).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyValue {
    /// The name, unexpanded; never empty.
    pub key: String,
    /// The value, unexpanded; for the legacy `ENV name value` form, the rest of the line.
    pub value: String,
    /// Where the name is.
    pub position: Position,
}

/// One name of an `ARG` instruction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArgDeclaration {
    /// The argument's name, checked by [`values::validate_arg_name`]; never expanded.
    pub name: String,
    /// The default after `=`, unexpanded; `None` when there is no `=`.
    pub default: Option<String>,
    /// Where the name is.
    pub position: Position,
}

/// One source of COPY or ADD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CopySource {
    /// A path, glob or URL, unexpanded.
    Path {
        /// The word as written.
        path: String,
    },
    /// An inline file from a heredoc (`COPY <<EOF /dst`), named after its delimiter.
    Heredoc(Heredoc),
}

/// `COPY` and `ADD`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Copy {
    /// Sources in order, at least one.
    pub sources: Vec<CopySource>,
    /// Destination, unexpanded.
    pub destination: String,
    /// `--from` (COPY): a stage name or index, an image, or a named context. Never expanded,
    /// so a `$` other than a final one is rejected at parse time.
    pub from: Option<String>,
    /// `--chown=user[:group]`, unexpanded.
    pub chown: Option<String>,
    /// `--chmod=`, unexpanded; checked with [`values::validate_chmod`] when literal.
    pub chmod: Option<String>,
    /// `--link`.
    pub link: bool,
    /// `--parents` (COPY).
    pub parents: bool,
    /// `--exclude` patterns, in order.
    pub exclude: Vec<String>,
    /// `--checksum` (ADD), unexpanded; checked with [`values::validate_checksum`] when literal.
    pub checksum: Option<String>,
    /// `--keep-git-dir` (ADD).
    pub keep_git_dir: bool,
    /// `--unpack` (ADD); `None` when not given.
    pub unpack: Option<bool>,
    /// True when written in JSON form.
    pub json: bool,
}

/// `HEALTHCHECK`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "test", rename_all = "UPPERCASE")]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`: disable the base image's check.
    None,
    /// `HEALTHCHECK [flags] CMD …`. Durations are `None` when not given or 0, which both mean
    /// the runtime's default.
    Cmd {
        /// The test command (shell form is stored as `CMD-SHELL` in the image).
        command: CommandLine,
        /// `--interval`, serialized as Go duration text (`1m30s`).
        #[serde(serialize_with = "values::serialize_duration")]
        interval: Option<Duration>,
        /// `--timeout`, serialized as Go duration text (`1m30s`).
        #[serde(serialize_with = "values::serialize_duration")]
        timeout: Option<Duration>,
        /// `--start-period`, serialized as Go duration text (`1m30s`).
        #[serde(serialize_with = "values::serialize_duration")]
        start_period: Option<Duration>,
        /// `--start-interval`, serialized as Go duration text (`1m30s`).
        #[serde(serialize_with = "values::serialize_duration")]
        start_interval: Option<Duration>,
        /// `--retries`.
        retries: Option<u32>,
    },
}

/// What every instruction parser needs: the raw instruction, its keyword and the escape
/// character in force (not in grammar/, nor are its methods: they build and locate errors).
struct Context<'a> {
    raw: &'a RawInstruction,
    keyword: &'static str,
    escape: char,
}

impl<'a> Context<'a> {
    fn new(raw: &'a RawInstruction, keyword: &'static str, escape: char) -> Context<'a> {
        Context {
            raw,
            keyword,
            escape,
        }
    }

    fn error(&self, kind: ParseErrorKind, position: Position) -> ParseError {
        let mut error = ParseError::new(kind, position);
        error.end_line = self.raw.span.end_line.max(position.line);
        error
    }

    fn args_position(&self) -> Position {
        self.raw.locate(self.raw.args_offset)
    }

    /// "KEYWORD <problem>" at the arguments.
    fn arguments(&self, problem: &str) -> ParseError {
        self.arguments_at(problem, self.args_position())
    }

    fn arguments_at(&self, problem: &str, position: Position) -> ParseError {
        self.error(
            ParseErrorKind::Arguments {
                keyword: self.keyword.to_string(),
                problem: problem.to_string(),
            },
            position,
        )
    }

    fn at_least_one(&self) -> ParseError {
        self.arguments("requires at least one argument")
    }

    fn flags(&self, specs: &[FlagSpec]) -> Result<Flags> {
        parse_flags(self.raw, self.keyword, specs)
    }

    /// A problem with the value of `flag`, pointing at the flag.
    fn flag_error(&self, flag: &GivenFlag, kind: ParseErrorKind) -> ParseError {
        self.error(kind, flag.position)
    }

    /// The position of each argument, found by searching the logical line in order; an
    /// argument that does not appear as written (JSON form) gets the arguments' position.
    fn arg_positions(&self) -> Vec<Position> {
        let words: Vec<&str> = self.raw.args.iter().map(String::as_str).collect();
        self.word_positions(&words)
    }

    /// The positions of `words`, which appear in this order in the arguments.
    fn word_positions(&self, words: &[&str]) -> Vec<Position> {
        let original = &self.raw.original;
        let mut cursor = self.raw.args_offset;
        words
            .iter()
            .map(|arg| {
                let found = original
                    .get(cursor..)
                    .filter(|_| !arg.is_empty())
                    .and_then(|rest| rest.find(arg));
                match found {
                    Some(at) => {
                        let offset = cursor + at;
                        cursor = offset + arg.len();
                        self.raw.locate(offset)
                    }
                    None => self.args_position(),
                }
            })
            .collect()
    }

    /// The arguments as a command line: exec form for JSON, else the text; `None` when there
    /// are none at all.
    fn command_line(&self, args: &[String]) -> Option<CommandLine> {
        if self.raw.json {
            Some(CommandLine::Exec(args.to_vec()))
        } else {
            args.first().map(|text| CommandLine::Shell(text.clone()))
        }
    }

    /// True when `value` needs no expansion and can be checked now.
    fn literal(&self, value: &str) -> bool {
        is_literal(value, self.escape)
    }
}

/// Types one raw instruction: dispatches on the keyword, case-insensitively, and checks flags
/// and arguments.
///
/// ```ebnf
/// instruction = from | run | cmd | entrypoint | shell | label | maintainer | expose | env
///             | arg | add | copy | volume | user | workdir | onbuild | stopsignal | healthcheck ;
/// ```
///
/// # Errors
/// An unknown keyword (with a "did you mean" hint), unknown or malformed flags, a wrong
/// number of arguments, and literal values that cannot be valid; each error points at the
/// offending keyword, flag or word.
pub fn parse_instruction(raw: &RawInstruction, escape: char) -> Result<Instruction> {
    let keyword_lower = raw.keyword_lower();
    let Some(keyword) = KEYWORDS
        .iter()
        .find(|keyword| keyword.eq_ignore_ascii_case(&keyword_lower))
    else {
        let kind = if raw.keyword.is_empty() {
            ParseErrorKind::EmptyInstruction
        } else {
            ParseErrorKind::UnknownInstruction {
                found: raw.keyword.clone(),
            }
        };
        let mut error = ParseError::new(kind, keyword_position(raw));
        error.end_line = raw.span.end_line.max(error.position.line);
        return Err(error.with_hint_if(did_you_mean(&raw.keyword, &KEYWORDS)));
    };
    let command = match *keyword {
        "FROM" => Command::From(parse_from(raw, escape)?),
        "RUN" => Command::Run(parse_run(raw, escape)?),
        "CMD" => Command::Cmd(parse_cmd(raw, escape)?),
        "ENTRYPOINT" => Command::Entrypoint(parse_entrypoint(raw, escape)?),
        "SHELL" => Command::Shell(parse_shell(raw, escape)?),
        "LABEL" => Command::Label(parse_label(raw, escape)?),
        "MAINTAINER" => Command::Maintainer(parse_maintainer(raw, escape)?),
        "EXPOSE" => Command::Expose(parse_expose(raw, escape)?),
        "ENV" => Command::Env(parse_env(raw, escape)?),
        "ARG" => Command::Arg(parse_arg(raw, escape)?),
        "ADD" => Command::Add(parse_add(raw, escape)?),
        "COPY" => Command::Copy(parse_copy(raw, escape)?),
        "VOLUME" => Command::Volume(parse_volume(raw, escape)?),
        "USER" => Command::User(parse_user(raw, escape)?),
        "WORKDIR" => Command::Workdir(parse_workdir(raw, escape)?),
        "ONBUILD" => Command::Onbuild(parse_onbuild(raw, escape)?),
        "STOPSIGNAL" => Command::Stopsignal(parse_stopsignal(raw, escape)?),
        _ => Command::Healthcheck(parse_healthcheck(raw, escape)?),
    };
    Ok(Instruction {
        command,
        span: raw.span,
        position: keyword_position(raw),
        args_position: raw.locate(raw.args_offset),
        flags: raw
            .flags
            .iter()
            .zip(&raw.flag_offsets)
            .map(|(word, offset)| FlagSite {
                name: split_flag(word).0.to_string(),
                position: raw.locate(*offset),
            })
            .collect(),
        source: raw.original.trim().to_string(),
    })
}

/// Where the keyword of `raw` starts (not in grammar/: locates errors).
fn keyword_position(raw: &RawInstruction) -> Position {
    raw.locate(raw.original.len() - raw.original.trim_start().len())
}

/// ```ebnf
/// from = "FROM" [ "--platform=" platform ] image [ BLANK+ "AS" BLANK+ stage_name ] ;
/// ```
///
/// # Errors
/// Other than one or three words, a middle word other than `AS`, an invalid stage name, and
/// flags other than `--platform`.
pub fn parse_from(raw: &RawInstruction, escape: char) -> Result<From> {
    let cx = Context::new(raw, "FROM", escape);
    const USAGE: &str =
        "requires either one or three arguments: expected 'FROM image' or 'FROM image AS name'";
    let positions = cx.arg_positions();
    let (image, alias, alias_position) = match raw.args.as_slice() {
        [image] => (image.clone(), None, None),
        [image, as_word, name] if as_word.eq_ignore_ascii_case("as") => {
            let position = positions
                .get(2)
                .copied()
                .unwrap_or_else(|| cx.args_position());
            let alias = validate_stage_name(name).map_err(|kind| cx.error(kind, position))?;
            (image.clone(), Some(alias), Some(position))
        }
        [_, second, _] => {
            let position = positions
                .get(1)
                .copied()
                .unwrap_or_else(|| cx.args_position());
            return Err(cx
                .arguments_at(USAGE, position)
                .with_hint(format!("write 'AS' where '{second}' is to name the stage")));
        }
        _ => return Err(cx.arguments(USAGE)),
    };
    let flags = cx.flags(FROM_FLAGS)?;
    Ok(From {
        image,
        platform: flags.text("platform"),
        alias,
        alias_position,
    })
}

/// Reads RUN, with its heredocs attached in marker order:
///
/// ```ebnf
/// run = "RUN" { "--mount=" mount | "--network=" network | "--security=" security }
///             ( json_array | text ) ;
/// network  = "default" | "none" | "host" ;
/// security = "sandbox" | "insecure" ;
/// ```
///
/// # Errors
/// A missing command, unknown flags, a `--mount` that cannot be valid (unknown option,
/// invalid literal value, options its type does not take), and `--network` or `--security`
/// values other than the known ones.
pub fn parse_run(raw: &RawInstruction, escape: char) -> Result<Run> {
    let cx = Context::new(raw, "RUN", escape);
    let flags = cx.flags(RUN_FLAGS)?;
    let mut mounts = Vec::new();
    for (flag, value) in flags.all("mount") {
        let mount = mount_flag(&cx, flag, value)?;
        mounts.push(mount);
    }
    let network = match flags.all("network").last() {
        None => None,
        Some((flag, value)) => Some(choose(
            &cx,
            flag,
            value,
            &[
                ("default", Network::Default),
                ("none", Network::None),
                ("host", Network::Host),
            ],
            "default, none or host",
        )?),
    };
    let security = match flags.all("security").last() {
        None => None,
        Some((flag, value)) => Some(choose(
            &cx,
            flag,
            value,
            &[
                ("sandbox", Security::Sandbox),
                ("insecure", Security::Insecure),
            ],
            "sandbox or insecure",
        )?),
    };
    let command = match cx.command_line(&raw.args) {
        Some(CommandLine::Exec(args)) if args.is_empty() => None,
        command => command,
    };
    let Some(command) = command else {
        return Err(cx.arguments("requires at least one argument: expected a command"));
    };
    Ok(Run {
        command,
        mounts,
        network,
        security,
        heredocs: raw.heredocs.clone(),
    })
}

/// Reads one `--mount` value with [`parse_mount`], which implements `mount`, and places its
/// errors at the field at fault (not in grammar/).
fn mount_flag(cx: &Context<'_>, flag: &GivenFlag, value: &str) -> Result<Mount> {
    let escape = cx.escape;
    parse_mount(value, flag.position, &|value| !is_literal(value, escape)).map_err(
        |MountError { kind, hint, offset }| {
            let error = cx.error(kind, flag.value_position(cx.raw, offset));
            error.with_hint_if(hint)
        },
    )
}

/// Picks the value of a never-expanded enumerated flag: the sub-rules `network` and `security`
/// of `run` (not in grammar/ itself: one function for both).
fn choose<T: std::marker::Copy>(
    cx: &Context<'_>,
    flag: &GivenFlag,
    value: &str,
    choices: &[(&str, T)],
    expected: &str,
) -> Result<T> {
    if let Some((_, chosen)) = choices.iter().find(|(name, _)| *name == value) {
        return Ok(*chosen);
    }
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    let error = cx.flag_error(
        flag,
        ParseErrorKind::InvalidValue {
            what: format!("--{} value", flag.name),
            found: value.to_string(),
            expected: expected.to_string(),
        },
    );
    Err(error.with_hint_if(did_you_mean(value, &names)))
}

/// Reads CMD; `CMD []` clears the command.
///
/// ```ebnf
/// cmd = "CMD" ( json_array | text ) ;
/// ```
///
/// # Errors
/// No arguments at all, and any flag.
pub fn parse_cmd(raw: &RawInstruction, escape: char) -> Result<CommandLine> {
    command_instruction(&Context::new(raw, "CMD", escape))
}

/// Reads ENTRYPOINT; `ENTRYPOINT []` clears it.
///
/// ```ebnf
/// entrypoint = "ENTRYPOINT" ( json_array | text ) ;
/// ```
///
/// # Errors
/// No arguments at all, and any flag.
pub fn parse_entrypoint(raw: &RawInstruction, escape: char) -> Result<CommandLine> {
    command_instruction(&Context::new(raw, "ENTRYPOINT", escape))
}

/// What [`parse_cmd`] and [`parse_entrypoint`] share (not in grammar/).
fn command_instruction(cx: &Context<'_>) -> Result<CommandLine> {
    cx.flags(&[])?;
    cx.command_line(&cx.raw.args).ok_or_else(|| {
        cx.arguments("requires at least one argument: expected a command, or [] to clear it")
    })
}

/// ```ebnf
/// shell = "SHELL" json_array ;
/// ```
///
/// # Errors
/// Shell form, an empty array, and any flag.
pub fn parse_shell(raw: &RawInstruction, escape: char) -> Result<Vec<String>> {
    let cx = Context::new(raw, "SHELL", escape);
    cx.flags(&[])?;
    match cx.command_line(&raw.args) {
        Some(CommandLine::Exec(args)) if !args.is_empty() => Ok(args),
        Some(CommandLine::Shell(_)) => Err(cx.error(
            ParseErrorKind::NotJsonForm {
                keyword: "SHELL".into(),
            },
            cx.args_position(),
        )),
        _ => Err(cx.at_least_one()),
    }
}

/// ```ebnf
/// label = "LABEL" name_value ;
/// ```
///
/// # Errors
/// No pairs, a blank name, and any flag.
pub fn parse_label(raw: &RawInstruction, escape: char) -> Result<Vec<KeyValue>> {
    key_values(&Context::new(raw, "LABEL", escape))
}

/// ```ebnf
/// env = "ENV" name_value ;
/// ```
///
/// # Errors
/// No pairs, a blank name, and any flag.
pub fn parse_env(raw: &RawInstruction, escape: char) -> Result<Vec<KeyValue>> {
    key_values(&Context::new(raw, "ENV", escape))
}

/// The key/value/separator triples the raw layer gives ENV and LABEL, as pairs (not in
/// grammar/: what [`parse_env`] and [`parse_label`] share).
fn key_values(cx: &Context<'_>) -> Result<Vec<KeyValue>> {
    cx.flags(&[])?;
    if cx.raw.args.is_empty() {
        return Err(cx.at_least_one());
    }
    // `name=value` words stand in the source as written; the legacy form starts with its name.
    let words: Vec<String> = cx
        .raw
        .args
        .chunks(3)
        .map(|triple| match triple {
            [key, value, separator] if separator == "=" => format!("{key}={value}"),
            triple => triple.first().cloned().unwrap_or_default(),
        })
        .collect();
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let positions = cx.word_positions(&words);
    let mut pairs = Vec::with_capacity(cx.raw.args.len() / 3);
    for (index, triple) in cx.raw.args.chunks(3).enumerate() {
        let position = positions
            .get(index)
            .copied()
            .unwrap_or_else(|| cx.args_position());
        let key = triple.first().cloned().unwrap_or_default();
        if key.is_empty() {
            return Err(cx.error(
                ParseErrorKind::InvalidValue {
                    what: format!("{} name", cx.keyword),
                    found: key,
                    expected: "a name before '='".into(),
                },
                position,
            ));
        }
        pairs.push(KeyValue {
            key,
            value: triple.get(1).cloned().unwrap_or_default(),
            position,
        });
    }
    Ok(pairs)
}

/// ```ebnf
/// maintainer = "MAINTAINER" text ;
/// ```
///
/// # Errors
/// No text, and any flag.
pub fn parse_maintainer(raw: &RawInstruction, escape: char) -> Result<String> {
    exactly_one(&Context::new(raw, "MAINTAINER", escape))
}

/// ```ebnf
/// user = "USER" text ;          (* user[:group] *)
/// ```
///
/// # Errors
/// No text, and any flag.
pub fn parse_user(raw: &RawInstruction, escape: char) -> Result<String> {
    exactly_one(&Context::new(raw, "USER", escape))
}

/// ```ebnf
/// workdir = "WORKDIR" text ;       (* a path; relative paths are joined to the previous WORKDIR *)
/// ```
///
/// # Errors
/// No text, and any flag.
pub fn parse_workdir(raw: &RawInstruction, escape: char) -> Result<String> {
    exactly_one(&Context::new(raw, "WORKDIR", escape))
}

/// ```ebnf
/// stopsignal = "STOPSIGNAL" signal ;  (* the whole text *)
/// ```
///
/// # Errors
/// No text, a literal that is no signal, and any flag.
pub fn parse_stopsignal(raw: &RawInstruction, escape: char) -> Result<String> {
    let cx = Context::new(raw, "STOPSIGNAL", escape);
    let signal = exactly_one(&cx)?;
    if cx.literal(&signal) {
        validate_signal(&signal).map_err(|(kind, hint)| {
            let error = cx.error(kind, cx.args_position());
            error.with_hint_if(hint)
        })?;
    }
    Ok(signal)
}

/// The single whole-text argument of MAINTAINER, USER, WORKDIR and STOPSIGNAL (not in
/// grammar/).
fn exactly_one(cx: &Context<'_>) -> Result<String> {
    cx.flags(&[])?;
    match cx.raw.args.as_slice() {
        [only] => Ok(only.clone()),
        _ => Err(cx.arguments("requires exactly one argument")),
    }
}

/// ```ebnf
/// expose = "EXPOSE" port { BLANK+ port } ;
/// ```
///
/// # Errors
/// No ports, a literal that is no port spec, and any flag.
pub fn parse_expose(raw: &RawInstruction, escape: char) -> Result<Vec<String>> {
    let cx = Context::new(raw, "EXPOSE", escape);
    cx.flags(&[])?;
    if raw.args.is_empty() {
        return Err(cx.at_least_one());
    }
    let positions = cx.arg_positions();
    for (port, position) in raw.args.iter().zip(positions) {
        if cx.literal(port) {
            validate_port(port).map_err(|kind| cx.error(kind, position))?;
        }
    }
    Ok(raw.args.clone())
}

/// Reads VOLUME; paths are trimmed.
///
/// ```ebnf
/// volume = "VOLUME" ( json_array | blank_separated_words ) ;
/// ```
///
/// # Errors
/// No paths, an empty path, and any flag.
pub fn parse_volume(raw: &RawInstruction, escape: char) -> Result<Vec<String>> {
    let cx = Context::new(raw, "VOLUME", escape);
    cx.flags(&[])?;
    if raw.args.is_empty() {
        return Err(cx.at_least_one());
    }
    let mut paths = Vec::with_capacity(raw.args.len());
    for path in &raw.args {
        let path = path.trim();
        if path.is_empty() {
            return Err(cx.error(
                ParseErrorKind::InvalidValue {
                    what: "VOLUME path".into(),
                    found: String::new(),
                    expected: "a non-empty path".into(),
                },
                cx.args_position(),
            ));
        }
        paths.push(path.to_string());
    }
    Ok(paths)
}

/// ```ebnf
/// arg             = "ARG" arg_declaration { SPACE+ arg_declaration } ;
/// arg_declaration = arg_name [ "=" default ] ;    (* one quoted_word *)
/// ```
///
/// # Errors
/// No names, an invalid name, and any flag.
pub fn parse_arg(raw: &RawInstruction, escape: char) -> Result<Vec<ArgDeclaration>> {
    let cx = Context::new(raw, "ARG", escape);
    cx.flags(&[])?;
    if raw.args.is_empty() {
        return Err(cx.at_least_one());
    }
    let positions = cx.arg_positions();
    let mut declarations = Vec::with_capacity(raw.args.len());
    for (word, position) in raw.args.iter().zip(positions) {
        let (name, default) = match word.split_once('=') {
            Some((name, default)) => (name, Some(default.to_string())),
            None => (word.as_str(), None),
        };
        validate_arg_name(name).map_err(|kind| cx.error(kind, position))?;
        declarations.push(ArgDeclaration {
            name: name.to_string(),
            default,
            position,
        });
    }
    Ok(declarations)
}

/// Reads COPY: sources then a destination.
///
/// ```ebnf
/// copy = "COPY" { copy_flag } ( json_array | blank_separated_words ) ;
/// copy_flag = "--from=" source | "--chown=" owner | "--chmod=" chmod | "--link" [ "=" bool ]
///           | "--parents" [ "=" bool ] | "--exclude=" pattern ;
/// ```
///
/// # Errors
/// Fewer than two arguments, a heredoc as the destination, flags COPY does not take, a
/// `--from` with a variable, and a literal `--chmod` that is no mode.
pub fn parse_copy(raw: &RawInstruction, escape: char) -> Result<Copy> {
    copy_or_add(&Context::new(raw, "COPY", escape), COPY_FLAGS)
}

/// Reads ADD: sources then a destination.
///
/// ```ebnf
/// add  = "ADD"  { add_flag }  ( json_array | blank_separated_words ) ;
/// add_flag  = "--chown=" owner | "--chmod=" chmod | "--link" [ "=" bool ] | "--exclude=" pattern
///           | "--checksum=" checksum | "--keep-git-dir" [ "=" bool ] | "--unpack" [ "=" bool ] ;
/// ```
///
/// # Errors
/// As [`parse_copy`], with ADD's flags, and a literal `--checksum` that is no digest.
pub fn parse_add(raw: &RawInstruction, escape: char) -> Result<Copy> {
    copy_or_add(&Context::new(raw, "ADD", escape), ADD_FLAGS)
}

/// What [`parse_copy`] and [`parse_add`] share; `specs` tells their flags apart (not in
/// grammar/).
fn copy_or_add(cx: &Context<'_>, specs: &[FlagSpec]) -> Result<Copy> {
    let raw = cx.raw;
    let Some((destination, sources)) = raw
        .args
        .split_last()
        .filter(|(_, sources)| !sources.is_empty())
    else {
        return Err(cx.arguments(
            "requires at least two arguments: expected one or more sources and a destination",
        ));
    };
    let flags = cx.flags(specs)?;
    let from = flags.text("from");
    if let (Some(from), Some(flag)) = (&from, flags.get("from")) {
        if from.find('$').is_some_and(|at| at + 1 != from.len()) {
            return Err(cx
                .flag_error(
                    flag,
                    ParseErrorKind::InvalidValue {
                        what: "--from value".into(),
                        found: from.clone(),
                        expected:
                            "a stage name or index, an image or a context name, without variables"
                                .into(),
                    },
                )
                .with_hint(
                    "define a stage with FROM using a global ARG and copy from that stage",
                ));
        }
    }
    let chmod = flags.text("chmod");
    if let (Some(chmod), Some(flag)) = (&chmod, flags.get("chmod")) {
        if cx.literal(chmod) {
            validate_chmod(chmod).map_err(|kind| cx.flag_error(flag, kind))?;
        }
    }
    let checksum = flags.text("checksum");
    if let (Some(checksum), Some(flag)) = (&checksum, flags.get("checksum")) {
        if cx.literal(checksum) {
            validate_checksum(checksum).map_err(|kind| cx.flag_error(flag, kind))?;
        }
    }
    let marker = |word: &str| {
        if raw.json {
            None
        } else {
            parse_heredoc(word).ok().flatten()
        }
    };
    if marker(destination).is_some() {
        let position = cx
            .arg_positions()
            .last()
            .copied()
            .unwrap_or_else(|| cx.args_position());
        return Err(cx.arguments_at(
            "cannot accept a heredoc as the destination: expected a path",
            position,
        ));
    }
    let sources = sources
        .iter()
        .map(|word| match marker(word) {
            Some(doc) => {
                let body = raw.heredocs.iter().rev().find(|body| body.name == doc.name);
                CopySource::Heredoc(Heredoc {
                    content: body.map(|body| body.content.clone()).unwrap_or_default(),
                    ..doc
                })
            }
            None => CopySource::Path { path: word.clone() },
        })
        .collect();
    Ok(Copy {
        sources,
        destination: destination.clone(),
        from,
        chown: flags.text("chown"),
        chmod,
        link: flags.bool("link").unwrap_or(false),
        parents: flags.bool("parents").unwrap_or(false),
        exclude: flags
            .all("exclude")
            .map(|(_, pattern)| pattern.to_string())
            .collect(),
        checksum,
        keep_git_dir: flags.bool("keep-git-dir").unwrap_or(false),
        unpack: flags.bool("unpack"),
        json: raw.json,
    })
}

/// Reads ONBUILD. The trigger is typed now, so its mistakes fail here rather than in a child
/// build.
///
/// ```ebnf
/// onbuild = "ONBUILD" instruction_line ;   (* not ONBUILD, FROM or MAINTAINER *)
/// ```
///
/// # Errors
/// A missing trigger, a forbidden one, any flag, and whatever the trigger's own parser
/// rejects.
pub fn parse_onbuild(raw: &RawInstruction, escape: char) -> Result<Box<Instruction>> {
    let cx = Context::new(raw, "ONBUILD", escape);
    cx.flags(&[])?;
    let Some(nested) = raw.nested.as_deref() else {
        return Err(cx.at_least_one());
    };
    let trigger = nested.keyword.to_uppercase();
    if matches!(trigger.as_str(), "ONBUILD" | "FROM" | "MAINTAINER") {
        return Err(cx.error(
            ParseErrorKind::OnbuildTrigger { keyword: trigger },
            keyword_position(nested),
        ));
    }
    // The raw layer hangs heredoc bodies on the outer instruction; the trigger needs them.
    let mut trigger = nested.clone();
    if trigger.heredocs.is_empty() {
        trigger.heredocs = raw.heredocs.clone();
    }
    trigger.span = raw.span;
    // Not ONBUILD, so this recursion is one level deep.
    parse_instruction(&trigger, escape).map(Box::new)
}

/// ```ebnf
/// healthcheck = "HEALTHCHECK" ( "NONE"
///                             | { healthcheck_flag } "CMD" ( json_array | text ) ) ;
/// healthcheck_flag = ( "--interval=" | "--timeout=" | "--start-period=" | "--start-interval=" ) duration
///                  | "--retries=" DIGIT+ ;
/// ```
///
/// # Errors
/// No arguments, a type other than CMD or NONE, arguments or flags after NONE, a missing
/// command after CMD, durations that are not Go durations of at least 1ms (or 0), and a
/// negative or non-numeric `--retries`.
pub fn parse_healthcheck(raw: &RawInstruction, escape: char) -> Result<Healthcheck> {
    let cx = Context::new(raw, "HEALTHCHECK", escape);
    let Some(kind) = raw.args.first() else {
        return Err(cx.at_least_one());
    };
    match kind.to_uppercase().as_str() {
        "NONE" => {
            if let Some(position) = raw.flag_offsets.first() {
                return Err(cx.arguments_at(
                    "NONE takes no flags: expected HEALTHCHECK NONE alone",
                    raw.locate(*position),
                ));
            }
            if raw.args.len() > 1 {
                let position = cx
                    .arg_positions()
                    .get(1)
                    .copied()
                    .unwrap_or_else(|| cx.args_position());
                return Err(cx.arguments_at(
                    "NONE takes no arguments: expected HEALTHCHECK NONE alone",
                    position,
                ));
            }
            Ok(Healthcheck::None)
        }
        "CMD" => {
            let flags = cx.flags(HEALTHCHECK_FLAGS)?;
            let command = match cx.command_line(&raw.args[1..]) {
                Some(CommandLine::Exec(args)) if args.is_empty() => None,
                command => command,
            };
            let Some(command) = command else {
                return Err(
                    cx.arguments("CMD requires a command: expected HEALTHCHECK CMD <command>")
                );
            };
            let retries = match flags.text("retries").zip(flags.get("retries")) {
                None => None,
                Some((text, flag)) => {
                    match text.parse::<i32>().ok().and_then(|n| u32::try_from(n).ok()) {
                        Some(retries) => Some(retries),
                        None => {
                            return Err(cx.flag_error(
                                flag,
                                ParseErrorKind::InvalidValue {
                                    what: "--retries value".into(),
                                    found: text,
                                    expected: "a whole number of at least 0".into(),
                                },
                            ))
                        }
                    }
                }
            };
            Ok(Healthcheck::Cmd {
                command,
                interval: duration_flag(&cx, &flags, "interval")?,
                timeout: duration_flag(&cx, &flags, "timeout")?,
                start_period: duration_flag(&cx, &flags, "start-period")?,
                start_interval: duration_flag(&cx, &flags, "start-interval")?,
                retries,
            })
        }
        _ => {
            let error = cx.error(
                ParseErrorKind::InvalidValue {
                    what: "HEALTHCHECK type".into(),
                    found: kind.clone(),
                    expected: "CMD or NONE".into(),
                },
                cx.args_position(),
            );
            Err(error.with_hint_if(did_you_mean(kind, &["CMD", "NONE"])))
        }
    }
}

/// A HEALTHCHECK duration flag: a Go duration of at least 1ms, or 0 for the default (the
/// `duration` alternatives of `healthcheck_flag`; not in grammar/ itself).
fn duration_flag(cx: &Context<'_>, flags: &Flags, name: &str) -> Result<Option<Duration>> {
    let (Some(text), Some(flag)) = (flags.text(name), flags.get(name)) else {
        return Ok(None);
    };
    let invalid = |expected: &str| {
        cx.flag_error(
            flag,
            ParseErrorKind::InvalidValue {
                what: format!("--{name} duration"),
                found: text.clone(),
                expected: expected.to_string(),
            },
        )
    };
    match parse_duration(&text) {
        None if text.bytes().all(|b| b.is_ascii_digit()) => {
            Err(invalid(DURATION_EXPECTED)
                .with_hint(format!("add a unit, as in '--{name}={text}s'")))
        }
        None => Err(invalid(DURATION_EXPECTED)),
        Some(duration) if duration.is_zero() => Ok(None),
        Some(duration) if duration < Duration::from_millis(1) => {
            Err(invalid("at least 1ms, or 0 for the default"))
        }
        Some(duration) => Ok(Some(duration)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::parse_raw;

    /// Types the last instruction of `text`.
    fn typed(text: &str) -> Result<Instruction> {
        let dockerfile = parse_raw(text.as_bytes()).expect("raw parse");
        let raw = dockerfile.instructions.last().expect("an instruction");
        parse_instruction(raw, dockerfile.escape)
    }

    /// Types `line` after a FROM line, so errors on it are on line 2.
    fn command(line: &str) -> Command {
        typed(&format!("FROM scratch\n{line}\n"))
            .unwrap_or_else(|error| panic!("{line}: {error}"))
            .command
    }

    fn strings(words: &[&str]) -> Vec<String> {
        words.iter().map(|word| word.to_string()).collect()
    }

    fn at(line: usize, column: usize) -> Position {
        Position { line, column }
    }

    #[test]
    fn every_instruction_is_typed() {
        let table: Vec<(&str, Command)> = vec![
            (
                "CMD [\"a\", \"b\"]",
                Command::Cmd(CommandLine::Exec(strings(&["a", "b"]))),
            ),
            (
                "CMD echo hi",
                Command::Cmd(CommandLine::Shell("echo hi".into())),
            ),
            ("CMD []", Command::Cmd(CommandLine::Exec(vec![]))),
            (
                "entrypoint [\"/e\"]",
                Command::Entrypoint(CommandLine::Exec(strings(&["/e"]))),
            ),
            (
                "ENTRYPOINT /e.sh $X",
                Command::Entrypoint(CommandLine::Shell("/e.sh $X".into())),
            ),
            (
                "SHELL [\"/bin/bash\", \"-c\"]",
                Command::Shell(strings(&["/bin/bash", "-c"])),
            ),
            (
                "MAINTAINER Jane <j@example.com>",
                Command::Maintainer("Jane <j@example.com>".into()),
            ),
            (
                "EXPOSE 80 443/tcp $PORT 53/udp",
                Command::Expose(strings(&["80", "443/tcp", "$PORT", "53/udp"])),
            ),
            (
                "VOLUME [\"/data\", \" /x \"]",
                Command::Volume(strings(&["/data", "/x"])),
            ),
            ("VOLUME /a /b", Command::Volume(strings(&["/a", "/b"]))),
            ("USER app:app", Command::User("app:app".into())),
            ("WORKDIR /srv/$APP", Command::Workdir("/srv/$APP".into())),
            ("STOPSIGNAL SIGKILL", Command::Stopsignal("SIGKILL".into())),
            ("STOPSIGNAL $SIG", Command::Stopsignal("$SIG".into())),
            ("HEALTHCHECK NONE", Command::Healthcheck(Healthcheck::None)),
            ("healthcheck none", Command::Healthcheck(Healthcheck::None)),
        ];
        for (line, expected) in table {
            assert_eq!(command(line), expected, "{line}");
        }
    }

    #[test]
    fn from_reads_image_platform_and_alias() {
        let first = typed("FROM --platform=$BUILDPLATFORM golang:1.22 As Build\n").unwrap();
        assert_eq!(first.position, at(1, 1));
        assert_eq!(first.args_position, at(1, 32));
        assert_eq!(first.flag_position("platform"), Some(at(1, 6)));
        assert_eq!(
            first.command,
            Command::From(From {
                image: "golang:1.22".into(),
                platform: Some("$BUILDPLATFORM".into()),
                alias: Some("build".into()),
                alias_position: Some(at(1, 47)),
            })
        );
        assert_eq!(
            typed("FROM scratch").unwrap().command,
            Command::From(From {
                image: "scratch".into(),
                platform: None,
                alias: None,
                alias_position: None,
            })
        );
    }

    #[test]
    fn run_reads_mounts_network_security_and_heredocs() {
        let text = "FROM scratch\nRUN --mount=type=cache,target=/c --mount=type=secret,id=$ID \\\n  --network=none --security=insecure <<EOF\necho hi\nEOF\n";
        let run = typed(text).unwrap();
        assert_eq!(
            run.span,
            Span {
                start_line: 2,
                end_line: 5
            }
        );
        let Command::Run(run) = run.command else {
            panic!("not RUN")
        };
        assert_eq!(run.command, CommandLine::Shell("<<EOF".into()));
        assert_eq!(run.network, Some(Network::None));
        assert_eq!(run.security, Some(Security::Insecure));
        assert_eq!(run.heredocs.len(), 1);
        assert_eq!(run.heredocs[0].content, "echo hi\n");
        assert_eq!(run.mounts.len(), 2);
        assert_eq!(run.mounts[0].resolve().unwrap().kind, MountType::Cache);
        assert_eq!(run.mounts[1].position, at(2, 34));
        assert_eq!(run.mounts[1].value_of(MountKey::Id), Some("$ID"));

        let Command::Run(exec) = command("RUN [\"echo\", \"hi\"]") else {
            panic!("not RUN")
        };
        assert_eq!(
            (exec.command, exec.network, exec.mounts),
            (CommandLine::Exec(strings(&["echo", "hi"])), None, vec![])
        );
        let Command::Run(default) = command("RUN --network=default --security=sandbox true") else {
            panic!("not RUN")
        };
        assert_eq!(
            (default.network, default.security),
            (Some(Network::Default), Some(Security::Sandbox))
        );
    }

    #[test]
    fn env_label_and_arg_keep_words_unexpanded() {
        let env = command("ENV A=1 B=\"two words\" C=$A");
        assert_eq!(
            env,
            Command::Env(vec![
                KeyValue {
                    key: "A".into(),
                    value: "1".into(),
                    position: at(2, 5)
                },
                KeyValue {
                    key: "B".into(),
                    value: "\"two words\"".into(),
                    position: at(2, 9)
                },
                KeyValue {
                    key: "C".into(),
                    value: "$A".into(),
                    position: at(2, 23)
                },
            ])
        );
        assert_eq!(
            command("ENV LEGACY the rest"),
            Command::Env(vec![KeyValue {
                key: "LEGACY".into(),
                value: "the rest".into(),
                position: at(2, 5)
            }])
        );
        assert_eq!(
            command("LABEL a.b=c"),
            Command::Label(vec![KeyValue {
                key: "a.b".into(),
                value: "c".into(),
                position: at(2, 7)
            }])
        );
        assert_eq!(
            command("ARG ONE TWO=2 THREE=\"three 3\" EMPTY="),
            Command::Arg(vec![
                ArgDeclaration {
                    name: "ONE".into(),
                    default: None,
                    position: at(2, 5)
                },
                ArgDeclaration {
                    name: "TWO".into(),
                    default: Some("2".into()),
                    position: at(2, 9)
                },
                ArgDeclaration {
                    name: "THREE".into(),
                    default: Some("\"three 3\"".into()),
                    position: at(2, 15)
                },
                ArgDeclaration {
                    name: "EMPTY".into(),
                    default: Some(String::new()),
                    position: at(2, 31)
                },
            ])
        );
    }

    #[test]
    fn copy_and_add_read_flags_sources_and_heredocs() {
        let Command::Copy(copy) = command(
            "COPY --from=build --chown=1:1 --chmod=644 --link --parents --exclude=*.tmp --exclude=.git a b /dst/",
        ) else {
            panic!("not COPY")
        };
        assert_eq!(
            copy,
            Copy {
                sources: vec![
                    CopySource::Path { path: "a".into() },
                    CopySource::Path { path: "b".into() }
                ],
                destination: "/dst/".into(),
                from: Some("build".into()),
                chown: Some("1:1".into()),
                chmod: Some("644".into()),
                link: true,
                parents: true,
                exclude: strings(&["*.tmp", ".git"]),
                checksum: None,
                keep_git_dir: false,
                unpack: None,
                json: false,
            }
        );
        let checksum = format!("sha256:{}", "0".repeat(64));
        let Command::Add(add) = command(&format!(
            "ADD --checksum={checksum} --keep-git-dir --unpack=false --link=false --chmod=$MODE https://x/y.tgz /z"
        )) else {
            panic!("not ADD")
        };
        assert_eq!(
            (
                add.checksum.as_deref(),
                add.keep_git_dir,
                add.unpack,
                add.link,
                add.chmod.as_deref()
            ),
            (
                Some(checksum.as_str()),
                true,
                Some(false),
                false,
                Some("$MODE")
            )
        );
        let Command::Copy(json) = command("COPY [\"with space\", \"<<EOF\", \"/d/\"]") else {
            panic!("not COPY")
        };
        assert!(json.json);
        assert_eq!(
            json.sources[1],
            CopySource::Path {
                path: "<<EOF".into()
            }
        );

        let heredoc =
            typed("FROM scratch\nCOPY <<-CONF a <<\"RAW\" /etc/\n\tk=v\n\tCONF\n$x\nRAW\n")
                .unwrap();
        let Command::Copy(copy) = heredoc.command else {
            panic!("not COPY")
        };
        assert_eq!(copy.sources.len(), 3);
        let CopySource::Heredoc(conf) = &copy.sources[0] else {
            panic!("not a heredoc")
        };
        assert_eq!(
            (
                conf.name.as_str(),
                conf.content.as_str(),
                conf.body().as_str(),
                conf.chomp,
                conf.expand
            ),
            ("CONF", "\tk=v\n", "k=v\n", true, true)
        );
        assert_eq!(copy.sources[1], CopySource::Path { path: "a".into() });
        let CopySource::Heredoc(raw) = &copy.sources[2] else {
            panic!("not a heredoc")
        };
        assert_eq!(
            (raw.name.as_str(), raw.content.as_str(), raw.expand),
            ("RAW", "$x\n", false)
        );
    }

    #[test]
    fn healthcheck_reads_go_durations() {
        assert_eq!(
            command("HEALTHCHECK --interval=1m30s --timeout=5s --start-period=0 --start-interval=500ms --retries=3 CMD curl -f http://x/ || exit 1"),
            Command::Healthcheck(Healthcheck::Cmd {
                command: CommandLine::Shell("curl -f http://x/ || exit 1".into()),
                interval: Some(Duration::from_secs(90)),
                timeout: Some(Duration::from_secs(5)),
                start_period: None,
                start_interval: Some(Duration::from_millis(500)),
                retries: Some(3),
            })
        );
        assert_eq!(
            command("HEALTHCHECK cmd [\"/bin/true\"]"),
            Command::Healthcheck(Healthcheck::Cmd {
                command: CommandLine::Exec(strings(&["/bin/true"])),
                interval: None,
                timeout: None,
                start_period: None,
                start_interval: None,
                retries: None,
            })
        );
    }

    #[test]
    fn onbuild_types_its_trigger() {
        let onbuild = typed("FROM scratch\nONBUILD COPY <<EOF /x\nhi\nEOF\n").unwrap();
        assert_eq!(onbuild.keyword(), "ONBUILD");
        let Command::Onbuild(trigger) = onbuild.command else {
            panic!("not ONBUILD")
        };
        assert_eq!(trigger.keyword(), "COPY");
        assert_eq!(trigger.position, at(2, 9));
        assert_eq!(trigger.source, "COPY <<EOF /x");
        let Command::Copy(copy) = trigger.command else {
            panic!("not COPY")
        };
        let CopySource::Heredoc(doc) = &copy.sources[0] else {
            panic!("not a heredoc")
        };
        assert_eq!(doc.content, "hi\n");
        let Command::Onbuild(run) = command("ONBUILD RUN --mount=type=cache,target=/c make") else {
            panic!("not ONBUILD")
        };
        assert_eq!(run.keyword(), "RUN");
    }

    #[test]
    fn instruction_errors_point_at_the_problem() {
        let sha = "0".repeat(64);
        let checksum_ok = format!("ADD --checksum=sha256:{sha} a b");
        assert!(typed(&format!("FROM scratch\n{checksum_ok}\n")).is_ok());
        // (line after `FROM scratch`, message, hint, column)
        let table: Vec<(&str, &str, Option<&str>, usize)> = vec![
            ("COPPY . /app", "unknown instruction 'COPPY'", Some("did you mean 'COPY'?"), 1),
            ("  EXPSE 80", "unknown instruction 'EXPSE'", Some("did you mean 'EXPOSE'?"), 3),
            ("FROBNICATE x", "unknown instruction 'FROBNICATE'", None, 1),
            ("COPY --chwon=1000 . /app", "unknown flag '--chwon' for COPY", Some("did you mean '--chown'?"), 6),
            ("COPY --checksum=sha256:abc a /b", "unknown flag '--checksum' for COPY", Some("'--checksum' is only valid for ADD"), 6),
            ("COPY --keep-git-dir a /b", "unknown flag '--keep-git-dir' for COPY", Some("'--keep-git-dir' is only valid for ADD"), 6),
            ("ADD --parents a /b", "unknown flag '--parents' for ADD", Some("'--parents' is only valid for COPY"), 5),
            ("COPY onlyone", "COPY requires at least two arguments: expected one or more sources and a destination", None, 6),
            ("ADD", "ADD requires at least two arguments: expected one or more sources and a destination", None, 4),
            ("COPY a <<EOF\nbody\nEOF", "COPY cannot accept a heredoc as the destination: expected a path", None, 8),
            ("COPY --chmod=64a a b", "invalid --chmod value '64a': expected an octal mode between 0 and 07777 such as 644, or a symbolic mode such as u+x,go-w", None, 6),
            ("COPY --chmod=10000 a b", "invalid --chmod value '10000': expected an octal mode between 0 and 07777 such as 644, or a symbolic mode such as u+x,go-w", None, 6),
            ("COPY --from=$STAGE a b", "invalid --from value '$STAGE': expected a stage name or index, an image or a context name, without variables", Some("define a stage with FROM using a global ARG and copy from that stage"), 6),
            ("ADD --checksum=sha256:abc a b", "invalid --checksum value 'sha256:abc': expected a digest such as sha256:<64 hex digits>, or a git commit hash", None, 5),
            ("ADD --unpack=maybe a b", "invalid --unpack value 'maybe': expected true or false", None, 5),
            ("RUN --mount=type=cahce,target=/c true", "invalid --mount type 'cahce': expected bind, cache, tmpfs, secret or ssh", Some("did you mean 'cache'?"), 13),
            ("RUN --mount=type=cache,target=/c,sharing=lockd true", "invalid --mount sharing 'lockd': expected shared, private or locked", Some("did you mean 'locked'?"), 34),
            ("RUN --mount=type=bind,target=/t,size=1m true", "--mount option 'size' is not allowed for a bind mount", None, 33),
            ("RUN --mount=\"type=bind,target=/t,size=1m\" true", "--mount option 'size' is not allowed for a bind mount", None, 5),
            ("RUN --mount=type=secret true", "a secret mount needs a name: expected 'id=', 'source=' or 'target='", None, 13),
            ("RUN --network=bridge true", "invalid --network value 'bridge': expected default, none or host", None, 5),
            ("RUN --network=hots true", "invalid --network value 'hots': expected default, none or host", Some("did you mean 'host'?"), 5),
            ("RUN --network= true", "invalid --network value '': expected default, none or host", None, 5),
            ("RUN --security=privileged true", "invalid --security value 'privileged': expected sandbox or insecure", None, 5),
            ("RUN --network=none --network=host true", "duplicate flag '--network' for RUN: expected it at most once", None, 20),
            ("RUN --device=gpu true", "unknown flag '--device' for RUN", Some("RUN takes --mount, --network, --security"), 5),
            ("RUN", "RUN requires at least one argument: expected a command", None, 4),
            ("RUN []", "RUN requires at least one argument: expected a command", None, 5),
            ("CMD", "CMD requires at least one argument: expected a command, or [] to clear it", None, 4),
            ("ENTRYPOINT --x a", "unknown flag '--x' for ENTRYPOINT", Some("ENTRYPOINT takes no flags"), 12),
            ("SHELL /bin/sh -c", "SHELL requires the arguments in JSON form: expected SHELL [\"executable\", \"parameters\"]", None, 7),
            ("SHELL []", "SHELL requires at least one argument", None, 7),
            ("ENV =x", "invalid ENV name '': expected a name before '='", None, 5),
            ("LABEL a=1 =x", "invalid LABEL name '': expected a name before '='", None, 11),
            ("ARG", "ARG requires at least one argument", None, 4),
            ("ARG OK 1BAD=x", "invalid ARG name '1BAD': expected a name that starts with a letter or '_' and holds only letters, digits, '_', '-' and '.'", None, 8),
            ("ARG \"THREE=three 3\"", "invalid ARG name '\"THREE': expected a name that starts with a letter or '_' and holds only letters, digits, '_', '-' and '.'", None, 5),
            ("ARG =x", "invalid ARG name '': expected a name that starts with a letter or '_' and holds only letters, digits, '_', '-' and '.'", None, 5),
            ("EXPOSE", "EXPOSE requires at least one argument", None, 7),
            ("EXPOSE 80 http", "invalid EXPOSE port 'http': expected a port or range with an optional protocol, such as 80, 8000-8010 or 53/udp", None, 11),
            ("VOLUME [\"\"]", "invalid VOLUME path '': expected a non-empty path", None, 8),
            ("VOLUME []", "VOLUME requires at least one argument", None, 8),
            ("USER", "USER requires exactly one argument", None, 5),
            ("WORKDIR", "WORKDIR requires exactly one argument", None, 8),
            ("MAINTAINER", "MAINTAINER requires exactly one argument", None, 11),
            ("STOPSIGNAL SIGTREM", "invalid signal 'SIGTREM': expected a signal name such as SIGTERM, or a positive signal number", Some("did you mean 'SIGTERM'?"), 12),
            ("STOPSIGNAL", "STOPSIGNAL requires exactly one argument", None, 11),
            ("ONBUILD", "ONBUILD requires at least one argument", None, 8),
            ("ONBUILD ONBUILD RUN true", "ONBUILD isn't allowed as an ONBUILD trigger: expected an instruction such as RUN or COPY", None, 9),
            ("ONBUILD FROM alpine", "FROM isn't allowed as an ONBUILD trigger: expected an instruction such as RUN or COPY", None, 9),
            ("onbuild maintainer me", "MAINTAINER isn't allowed as an ONBUILD trigger: expected an instruction such as RUN or COPY", None, 9),
            ("ONBUILD COPPY a b", "unknown instruction 'COPPY'", Some("did you mean 'COPY'?"), 9),
            ("ONBUILD RUN --network=bridge x", "invalid --network value 'bridge': expected default, none or host", None, 13),
            ("HEALTHCHECK", "HEALTHCHECK requires at least one argument", None, 12),
            ("HEALTHCHECK NONE extra", "HEALTHCHECK NONE takes no arguments: expected HEALTHCHECK NONE alone", None, 18),
            ("HEALTHCHECK --interval=5s NONE", "HEALTHCHECK NONE takes no flags: expected HEALTHCHECK NONE alone", None, 13),
            ("HEALTHCHECK CMD", "HEALTHCHECK CMD requires a command: expected HEALTHCHECK CMD <command>", None, 13),
            ("HEALTHCHECK CMD []", "HEALTHCHECK CMD requires a command: expected HEALTHCHECK CMD <command>", None, 13),
            ("HEALTHCHECK CMDD true", "invalid HEALTHCHECK type 'CMDD': expected CMD or NONE", Some("did you mean 'CMD'?"), 13),
            ("HEALTHCHECK --interval=5 CMD true", "invalid --interval duration '5': expected a duration such as 30s, 1m30s or 1h (units ns, us, ms, s, m, h)", Some("add a unit, as in '--interval=5s'"), 13),
            ("HEALTHCHECK --timeout=soon CMD true", "invalid --timeout duration 'soon': expected a duration such as 30s, 1m30s or 1h (units ns, us, ms, s, m, h)", None, 13),
            ("HEALTHCHECK --start-period=10us CMD true", "invalid --start-period duration '10us': expected at least 1ms, or 0 for the default", None, 13),
            ("HEALTHCHECK --start-interval=-1s CMD true", "invalid --start-interval duration '-1s': expected a duration such as 30s, 1m30s or 1h (units ns, us, ms, s, m, h)", None, 13),
            ("HEALTHCHECK --retries=-1 CMD true", "invalid --retries value '-1': expected a whole number of at least 0", None, 13),
            ("HEALTHCHECK --retries=three CMD true", "invalid --retries value 'three': expected a whole number of at least 0", None, 13),
            ("HEALTHCHECK --retries=99999999999 CMD true", "invalid --retries value '99999999999': expected a whole number of at least 0", None, 13),
            ("HEALTHCHECK --intervall=5s CMD true", "unknown flag '--intervall' for HEALTHCHECK", Some("did you mean '--interval'?"), 13),
        ];
        for (line, message, hint, column) in table {
            let error = typed(&format!("FROM scratch\n{line}\n")).expect_err(line);
            assert_eq!(error.to_string(), message, "{line}");
            assert_eq!(error.hint.as_deref(), hint, "{line}");
            assert_eq!(error.position, at(2, column), "{line}");
        }
    }

    #[test]
    fn from_errors_point_at_the_problem() {
        let table: Vec<(&str, &str, Option<&str>, usize)> = vec![
            ("FROM", "FROM requires either one or three arguments: expected 'FROM image' or 'FROM image AS name'", None, 5),
            ("FROM a b", "FROM requires either one or three arguments: expected 'FROM image' or 'FROM image AS name'", None, 6),
            ("FROM a IS b", "FROM requires either one or three arguments: expected 'FROM image' or 'FROM image AS name'", Some("write 'AS' where 'IS' is to name the stage"), 8),
            ("FROM a AS b c", "FROM requires either one or three arguments: expected 'FROM image' or 'FROM image AS name'", None, 6),
            ("FROM scratch AS 1st", "invalid build stage name '1st': expected a name that starts with a letter and holds only letters, digits, '-', '_' and '.'", None, 17),
            ("FROM scratch AS $NAME", "invalid build stage name '$NAME': expected a name that starts with a letter and holds only letters, digits, '-', '_' and '.'", None, 17),
            ("FROM --platform x", "flag '--platform' for FROM needs a value: expected '--platform=<value>'", None, 6),
        ];
        for (line, message, hint, column) in table {
            let error = typed(&format!("{line}\n")).expect_err(line);
            assert_eq!(error.to_string(), message, "{line}");
            assert_eq!(error.hint.as_deref(), hint, "{line}");
            assert_eq!(error.position, at(1, column), "{line}");
        }
    }

    #[test]
    fn errors_on_continuation_lines_point_at_the_physical_line() {
        let error = typed("FROM scratch\nRUN --mount=type=cache,target=/c \\\n    --mount=type=tmpfs,target=/t,uid=0 \\\n    true\n")
            .unwrap_err();
        assert_eq!(error.position, at(3, 34));
        assert_eq!(error.end_line, 4);
        assert_eq!(
            error.to_string(),
            "--mount option 'uid' is not allowed for a tmpfs mount"
        );
    }

    #[test]
    fn escape_directive_changes_what_counts_as_literal() {
        // A backtick is an ordinary character unless it is the escape, so it is checked now.
        let error = typed("FROM scratch\nCOPY --chmod=6`44 a b\n").unwrap_err();
        assert_eq!(error.position, at(2, 6));
        assert!(typed("# escape=`\nFROM scratch\nCOPY --chmod=6`44 a b\n").is_ok());
    }

    #[test]
    fn instructions_serialize_to_json() {
        // Adjacent tagging, because some commands (ARG, ENV, LABEL, …) hold a sequence, which an
        // internally tagged enum cannot serialize.
        let instruction = typed("FROM scratch\nCOPY --from=a x /y\n").unwrap();
        let json = serde_json::to_value(&instruction).unwrap();
        assert_eq!(json["command"]["instruction"], "COPY");
        assert_eq!(json["command"]["arguments"]["from"], "a");
        assert_eq!(
            json["command"]["arguments"]["sources"][0],
            serde_json::json!({"kind": "path", "path": "x"})
        );
        assert_eq!(json["flags"][0]["name"], "from");
        assert_eq!(
            json["span"],
            serde_json::json!({"start_line": 2, "end_line": 2})
        );
        let check = serde_json::to_value(
            typed("FROM scratch\nHEALTHCHECK --interval=90s CMD true\n").unwrap(),
        )
        .unwrap();
        assert_eq!(check["command"]["arguments"]["interval"], "1m30s");
        assert_eq!(
            check["command"]["arguments"]["timeout"],
            serde_json::Value::Null
        );
        let run = serde_json::to_value(
            typed("FROM scratch\nRUN --mount=type=cache,target=/c make\n").unwrap(),
        )
        .unwrap();
        assert_eq!(
            run["command"]["arguments"]["command"],
            serde_json::json!({"form": "shell", "value": "make"})
        );
        assert_eq!(
            run["command"]["arguments"]["mounts"][0]["options"][0],
            serde_json::json!({"key": "type", "value": "cache"})
        );
    }
}
