//! The `kiln` binary: parses the command line, calls the library, and does all the talking.
//!
//! Exit codes: 0 success; 1 the input was rejected (a Dockerfile error, an unreadable file);
//! 2 usage errors (clap's own code for them).

mod cli;
mod commands;
mod containers;
mod save;

use std::collections::BTreeMap;
use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use cli::{BuildArgs, Cli, Command, ParseArgs, ParseFormat};
use kiln::diagnostic::Diagnostic;
use kiln::graph::{self, BuildOptions, GraphError, Platform};
use kiln::progress::Progress;
use kiln::solve::{self, BuildError, BuildOutcome, BuildRequest, NamedContext, SecretSource};
use kiln::store::{Reference, Store};
use kiln::syntax::{self, ParseError, Warning};

/// Why a command failed: an error that points into the Dockerfile, one about the options
/// with a hint, or any other.
pub(crate) enum Failure {
    Located(Box<LocatedFailure>),
    Hinted {
        message: String,
        hint: Option<String>,
    },
    Other(anyhow::Error),
}

/// An error with a place in the Dockerfile, kept with the source it points into.
struct LocatedFailure {
    file: String,
    source: Vec<u8>,
    position: syntax::Position,
    message: String,
    causes: Vec<String>,
    hint: Option<String>,
}

impl From<kiln::store::StoreError> for Failure {
    fn from(error: kiln::store::StoreError) -> Failure {
        Failure::Other(error.into())
    }
}

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure::Other(error)
    }
}

fn main() -> ExitCode {
    if std::env::args_os()
        .nth(1)
        .is_some_and(|a| a == kiln::sandbox::INIT_ARG)
    {
        kiln::sandbox::init_main()
    }
    let cli = Cli::parse();
    // While the process has one thread: rootless with subordinate id ranges, kiln works as
    // root of a user namespace of its own (see `IdMapping::Nested`).
    if let Err(error) = kiln::sandbox::enter_user_namespace() {
        report(&Failure::from(anyhow::Error::new(error)));
        return ExitCode::from(match cli.command {
            Command::Run(_) => 125,
            _ => 1,
        });
    }
    let outcome = match cli.command {
        // `run` exits with the container's status, not 0 or 1.
        Command::Run(args) => return containers::run(&args),
        Command::Ps(args) => containers::ps(&args),
        Command::Rm(args) => containers::rm(&args),
        Command::Commit(args) => containers::commit(&args),
        Command::Bundle(args) => containers::bundle(&args),
        Command::Build(args) => build_command(&args),
        Command::Parse(args) => parse_command(&args),
        Command::Images(args) => commands::images(&args),
        Command::Inspect(args) => commands::inspect(&args),
        Command::History(args) => commands::history(&args),
        Command::Tag(args) => commands::tag(&args),
        Command::Rmi(args) => commands::rmi(&args),
        Command::Cache(command) => commands::cache(&command),
        Command::Logs(args) => commands::logs(&args),
        Command::Save(args) => save::save_command(&args),
        Command::Load(args) => load_command(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            report(&failure);
            ExitCode::from(1)
        }
    }
}

pub(crate) fn report(failure: &Failure) {
    let mut stderr = std::io::stderr().lock();
    let text = match failure {
        Failure::Located(located) => Diagnostic {
            file: &located.file,
            source: &located.source,
            position: located.position,
            message: located.message.clone(),
            causes: located.causes.clone(),
            hint: located.hint.clone(),
        }
        .render(),
        Failure::Hinted { message, hint } => {
            let mut text = format!("error: {message}\n");
            if let Some(hint) = hint {
                text.push_str(&format!("hint: {hint}\n"));
            }
            text
        }
        Failure::Other(error) => {
            let mut text = format!("error: {error}\n");
            for cause in error.chain().skip(1) {
                text.push_str(&format!("Caused by: {cause}\n"));
            }
            text
        }
    };
    let _ = stderr.write_all(text.as_bytes());
}

/// The Dockerfile as read: its display name and bytes.
struct Source {
    name: String,
    bytes: Vec<u8>,
}

impl Source {
    fn read(path: &Path) -> anyhow::Result<Source> {
        if path.as_os_str() == "-" {
            let mut bytes = Vec::new();
            std::io::stdin()
                .read_to_end(&mut bytes)
                .context("cannot read the Dockerfile from standard input")?;
            return Ok(Source {
                name: "<stdin>".into(),
                bytes,
            });
        }
        let bytes = std::fs::read(path)
            .with_context(|| format!("cannot read the Dockerfile '{}'", path.display()))?;
        Ok(Source {
            name: path.display().to_string(),
            bytes,
        })
    }

    fn parse_failure(&self, error: ParseError) -> Failure {
        Failure::Located(Box::new(LocatedFailure {
            file: self.name.clone(),
            source: self.bytes.clone(),
            position: error.position,
            message: error.kind.to_string(),
            causes: Vec::new(),
            hint: error.hint,
        }))
    }

    fn build_failure(&self, error: BuildError) -> Failure {
        match error {
            BuildError::Parse(error) => self.parse_failure(error),
            BuildError::Graph(error) => self.graph_failure(error),
            BuildError::Step {
                position,
                step,
                source,
            } => {
                let mut causes = Vec::new();
                let mut next = std::error::Error::source(&source);
                while let Some(cause) = next {
                    causes.push(cause.to_string());
                    next = cause.source();
                }
                Failure::Located(Box::new(LocatedFailure {
                    file: self.name.clone(),
                    source: self.bytes.clone(),
                    position,
                    message: format!("{step}: {source}"),
                    causes,
                    hint: None,
                }))
            }
            other => Failure::Other(anyhow::Error::new(other)),
        }
    }

    fn graph_failure(&self, error: GraphError) -> Failure {
        let Some(position) = error.position else {
            return Failure::Hinted {
                message: error.kind.to_string(),
                hint: error.hint,
            };
        };
        Failure::Located(Box::new(LocatedFailure {
            file: self.name.clone(),
            source: self.bytes.clone(),
            position,
            message: error.kind.to_string(),
            causes: Vec::new(),
            hint: error.hint,
        }))
    }

    fn warn(&self, warnings: &[Warning]) {
        let mut stderr = std::io::stderr().lock();
        for warning in warnings {
            let _ = writeln!(
                stderr,
                "{}:{}:{}: warning: {}",
                self.name, warning.position.line, warning.position.column, warning.message
            );
        }
    }
}

fn parse_command(args: &ParseArgs) -> Result<(), Failure> {
    let source = Source::read(&args.file)?;
    let output = match args.format {
        ParseFormat::Buildkit => {
            let dockerfile =
                syntax::parse_raw(&source.bytes).map_err(|e| source.parse_failure(e))?;
            source.warn(&dockerfile.warnings);
            dockerfile.dump()
        }
        format => {
            let parsed = syntax::parse(&source.bytes).map_err(|e| source.parse_failure(e))?;
            source.warn(&parsed.dockerfile.warnings);
            match format {
                ParseFormat::Json => {
                    let document = JsonDocument {
                        directives: &parsed.dockerfile.directives,
                        escape: parsed.dockerfile.escape,
                        instructions: &parsed.instructions,
                    };
                    let mut text = serde_json::to_string_pretty(&document)
                        .context("cannot encode the syntax tree as JSON")?;
                    text.push('\n');
                    text
                }
                _ => {
                    let options = build_options(&args.build_args, &args.target, &args.platform)?;
                    let graph =
                        graph::lower(&parsed, &options).map_err(|e| source.graph_failure(e))?;
                    let mut stderr = std::io::stderr().lock();
                    for warning in &graph.warnings {
                        let _ = writeln!(stderr, "warning: {warning}");
                    }
                    if format == ParseFormat::Dot {
                        graph.render_dot()
                    } else {
                        graph.render_tree()
                    }
                }
            }
        }
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(output.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")?;
    Ok(())
}

/// What `kiln parse --format json` prints.
#[derive(serde::Serialize)]
struct JsonDocument<'a> {
    directives: &'a [syntax::Directive],
    escape: char,
    instructions: &'a [syntax::Instruction],
}

/// Reads `--build-arg` values as docker does: `KEY=VALUE`, or a bare `KEY` that takes its
/// value from the environment and is left out when the environment has none.
fn build_args(given: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut args = BTreeMap::new();
    for item in given {
        match item.split_once('=') {
            Some(("", _)) => anyhow::bail!("invalid --build-arg '{item}': expected KEY=VALUE"),
            Some((key, value)) => {
                args.insert(key.to_string(), value.to_string());
            }
            None => {
                if let Ok(value) = std::env::var(item) {
                    args.insert(item.clone(), value);
                }
            }
        }
    }
    Ok(args)
}

/// Build args, target and platform as the graph wants them.
fn build_options(
    given_args: &[String],
    target: &Option<String>,
    platform: &Option<String>,
) -> anyhow::Result<BuildOptions> {
    let mut options = BuildOptions {
        build_args: build_args(given_args)?,
        target: target.clone(),
        ..BuildOptions::default()
    };
    if let Some(platform) = platform {
        options.target_platform = Platform::parse(platform, &options.build_platform)
            .map_err(|problem| anyhow::anyhow!("invalid --platform '{platform}': {problem}"))?;
    }
    Ok(options)
}

/// Takes `SOURCE_DATE_EPOCH` from the environment as a build arg unless `--build-arg` gave
/// it, as buildx does.
fn with_source_date_epoch(mut options: BuildOptions) -> BuildOptions {
    if let Ok(epoch) = std::env::var("SOURCE_DATE_EPOCH") {
        options
            .build_args
            .entry("SOURCE_DATE_EPOCH".to_string())
            .or_insert(epoch);
    }
    options
}

/// Opens the store `--root` names, or the default one.
pub(crate) fn open_store(root: &Option<PathBuf>) -> anyhow::Result<Store> {
    let root = match root {
        Some(root) => root.clone(),
        None => Store::default_root().context("cannot choose a store directory")?,
    };
    Store::open(&root).with_context(|| format!("cannot open the store at {}", root.display()))
}

fn build_command(args: &BuildArgs) -> Result<(), Failure> {
    if !args.context.is_dir() {
        return Err(Failure::Hinted {
            message: format!(
                "the build context '{}' is not a directory",
                args.context.display()
            ),
            hint: Some("give the directory holding the files COPY and ADD read".into()),
        });
    }
    let dockerfile = args
        .file
        .clone()
        .unwrap_or_else(|| args.context.join("Dockerfile"));
    let source = Source::read(&dockerfile)?;
    let mut tags = Vec::new();
    for tag in &args.tags {
        tags.push(Reference::parse(tag).map_err(|error| Failure::Hinted {
            message: format!("invalid tag '{tag}': {error}"),
            hint: Some("use NAME[:TAG], e.g. app or registry.example/team/app:1.0".into()),
        })?);
    }
    let request = BuildRequest {
        dockerfile_name: source.name.clone(),
        dockerfile: source.bytes.clone(),
        dockerfile_path: (dockerfile.as_os_str() != "-").then(|| dockerfile.clone()),
        context: args.context.clone(),
        options: with_source_date_epoch(build_options(
            &args.build_args,
            &args.target,
            &args.platform,
        )?),
        tags,
        no_cache: args.no_cache,
        no_cache_filter: args.no_cache_filter.clone(),
        build_contexts: named_contexts(&args.build_contexts)?,
        explain: args.explain,
        secrets: secrets(&args.secrets)?,
        ssh: ssh_agents(&args.ssh)?,
    };
    let output = args
        .output
        .as_deref()
        .map(kiln::export::OutputSpec::parse)
        .transpose()
        .context("cannot use -o")?;
    let store = open_store(&args.store.root)?;
    let stderr = std::io::stderr();
    let progress = Progress::new(
        args.progress,
        Box::new(stderr),
        std::io::stderr().is_terminal(),
    );
    let progress = match args.quiet {
        true => None,
        false => Some(progress),
    };
    let silent = |_event: solve::events::Event| {};
    let outcome = match &progress {
        Some(progress) => solve::build(&store, &request, progress),
        None => solve::build(&store, &request, &silent),
    }
    .map_err(|error| source.build_failure(error))?;
    if args.explain {
        let mut stderr = std::io::stderr().lock();
        for step in outcome.steps.iter().filter(|step| step.explain.is_some()) {
            let _ = writeln!(stderr, "#{} {}", step.vertex, step.name);
            let _ = write!(stderr, "{}", step.explain.as_deref().unwrap_or_default());
        }
    }
    if let Some(path) = &args.metadata_file {
        write_metadata(path, &outcome)?;
    }
    if let Some(spec) = &output {
        let digest = outcome.manifest.digest;
        save::build_output(&store, &digest, &request.tags, spec, &args.compression)?;
        if spec.to_stdout() {
            return Ok(());
        }
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{}", outcome.manifest.digest)
        .and_then(|()| stdout.flush())
        .context("cannot write to standard output")?;
    Ok(())
}

/// `kiln load`: reads the archive (or layout directory), then says what it loaded as
/// `docker load` does: `Loaded image: NAME` per name, `Loaded image ID: ID` for an image
/// without one.
fn load_command(args: &cli::LoadArgs) -> Result<(), Failure> {
    let store = open_store(&args.store.root)?;
    let loaded = match &args.input {
        Some(path) if path.is_dir() => kiln::load::load_dir(&store, path),
        Some(path) => {
            let file = std::fs::File::open(path)
                .with_context(|| format!("cannot open '{}'", path.display()))?;
            kiln::load::load_archive(&store, file, &path.display().to_string())
        }
        None => {
            if std::io::stdin().is_terminal() {
                return Err(Failure::Hinted {
                    message: "standard input is a terminal: expected an image archive".into(),
                    hint: Some("give the archive with -i FILE or pipe it in".into()),
                });
            }
            kiln::load::load_archive(&store, std::io::stdin().lock(), "standard input")
        }
    }
    .context("cannot load the images")?;
    let mut stdout = std::io::stdout().lock();
    for image in &loaded {
        if args.quiet {
            writeln!(stdout, "{}", image.manifest.digest)
        } else if image.names.is_empty() {
            writeln!(stdout, "Loaded image ID: {}", image.manifest.digest)
        } else {
            image
                .names
                .iter()
                .try_for_each(|name| writeln!(stdout, "Loaded image: {}", name.familiar()))
        }
        .context("cannot write to standard output")?;
    }
    Ok(())
}

/// `--build-context NAME=SRC`: a directory, or `docker-image://IMAGE` for an image in the
/// store.
fn named_contexts(given: &[String]) -> anyhow::Result<BTreeMap<String, NamedContext>> {
    let mut contexts = BTreeMap::new();
    for item in given {
        let Some((name, source)) = item.split_once('=').filter(|(name, _)| !name.is_empty()) else {
            anyhow::bail!("invalid --build-context '{item}': expected NAME=SOURCE");
        };
        let context = if let Some(image) = source.strip_prefix("docker-image://") {
            NamedContext::Image(image.to_string())
        } else if let Some(layout) = source.strip_prefix("oci-layout://") {
            let (dir, selector) = split_layout_selector(layout);
            NamedContext::OciLayout {
                dir: PathBuf::from(dir),
                selector: selector.map(str::to_string),
            }
        } else if let Some(file) = source.strip_prefix("docker-archive:") {
            NamedContext::DockerArchive(PathBuf::from(file.trim_start_matches("//")))
        } else if let Some(scheme) = ["https://", "http://", "git@"]
            .iter()
            .find(|scheme| source.starts_with(*scheme))
        {
            anyhow::bail!(
                "--build-context '{name}': {scheme} sources are not supported yet; give a directory, docker-image://, oci-layout:// or docker-archive:"
            );
        } else {
            let path = PathBuf::from(source);
            if !path.is_dir() {
                anyhow::bail!("--build-context '{name}': '{source}' is not a directory");
            }
            NamedContext::Directory(path)
        };
        contexts.insert(name.to_ascii_lowercase(), context);
    }
    Ok(contexts)
}

/// `--secret id=ID,src=FILE` or `id=ID,env=VAR` (docker's `type=file|env` and `source=`
/// spellings too).
fn secrets(given: &[String]) -> anyhow::Result<BTreeMap<String, SecretSource>> {
    let mut secrets = BTreeMap::new();
    for item in given {
        let mut id = None;
        let mut source = None;
        for field in item.split(',') {
            match field.split_once('=') {
                Some(("id", value)) => id = Some(value.to_string()),
                Some(("src" | "source", value)) => {
                    source = Some(SecretSource::File(PathBuf::from(value)))
                }
                Some(("env", value)) => source = Some(SecretSource::Env(value.to_string())),
                Some(("type", "file" | "env")) => {}
                _ => anyhow::bail!(
                    "invalid --secret '{item}': expected id=ID,src=FILE or id=ID,env=VAR"
                ),
            }
        }
        match (id, source) {
            (Some(id), Some(source)) if !id.is_empty() => {
                secrets.insert(id, source);
            }
            _ => {
                anyhow::bail!("invalid --secret '{item}': expected id=ID,src=FILE or id=ID,env=VAR")
            }
        }
    }
    Ok(secrets)
}

/// `--ssh ID` (the socket in `$SSH_AUTH_SOCK`) or `--ssh ID=SOCKET`, as docker takes them.
fn ssh_agents(given: &[String]) -> anyhow::Result<BTreeMap<String, PathBuf>> {
    let mut agents = BTreeMap::new();
    for item in given {
        let (id, socket) = match item.split_once('=') {
            Some((id, socket)) => (id, PathBuf::from(socket)),
            None => match std::env::var_os("SSH_AUTH_SOCK") {
                Some(socket) => (item.as_str(), PathBuf::from(socket)),
                None => anyhow::bail!(
                    "--ssh '{item}': SSH_AUTH_SOCK is not set; give the socket as {item}=SOCKET"
                ),
            },
        };
        if id.is_empty() {
            anyhow::bail!("invalid --ssh '{item}': expected ID or ID=SOCKET");
        }
        agents.insert(id.to_string(), socket);
    }
    Ok(agents)
}

/// `DIR[:TAG|@DIGEST]` of `oci-layout://`: a tag is the text after the last `:` when it
/// holds no `/`.
fn split_layout_selector(layout: &str) -> (&str, Option<&str>) {
    if let Some((dir, digest)) = layout.rsplit_once('@') {
        return (dir, Some(digest));
    }
    match layout.rsplit_once(':') {
        Some((dir, tag)) if !tag.contains('/') && !dir.is_empty() => (dir, Some(tag)),
        _ => (layout, None),
    }
}

/// The metadata file: BuildKit's keys, plus each step's cache outcome.
fn write_metadata(path: &Path, outcome: &BuildOutcome) -> anyhow::Result<()> {
    let document = serde_json::json!({
        "containerimage.digest": outcome.manifest.digest,
        "containerimage.config.digest": outcome.config,
        "containerimage.descriptor": outcome.manifest,
        "image.name": outcome.tags.join(","),
        "kiln.steps": outcome.steps,
    });
    let mut text = serde_json::to_string_pretty(&document).context("cannot encode metadata")?;
    text.push('\n');
    std::fs::write(path, text)
        .with_context(|| format!("cannot write the metadata file '{}'", path.display()))
}
