//! The `kiln` binary: parses the command line, calls the library, and does all the talking.
//!
//! Exit codes: 0 success; 1 the input was rejected (a Dockerfile error, an unreadable file);
//! 2 usage errors (clap's own code for them).

mod cli;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;

use cli::{Cli, Command, ParseArgs, ParseFormat};
use kiln::diagnostic::Diagnostic;
use kiln::graph::{self, BuildOptions, GraphError, Platform};
use kiln::syntax::{self, ParseError, Warning};

/// Why a command failed: an error that points into the Dockerfile, one about the options
/// with a hint, or any other.
enum Failure {
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

impl From<anyhow::Error> for Failure {
    fn from(error: anyhow::Error) -> Failure {
        Failure::Other(error)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Parse(args) => parse_command(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            report(&failure);
            ExitCode::from(1)
        }
    }
}

fn report(failure: &Failure) {
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
    fn read(path: &std::path::Path) -> anyhow::Result<Source> {
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
                    let mut options = BuildOptions {
                        build_args: build_args(&args.build_args)?,
                        target: args.target.clone(),
                        ..BuildOptions::default()
                    };
                    if let Some(platform) = &args.platform {
                        options.target_platform =
                            Platform::parse(platform, &options.build_platform).map_err(
                                |problem| {
                                    anyhow::anyhow!("invalid --platform '{platform}': {problem}")
                                },
                            )?;
                    }
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
