//! The command line: clap definitions only. `main.rs` turns them into library calls.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// kiln: build container images from Dockerfiles, without a daemon.
#[derive(Debug, Parser)]
#[command(name = "kiln", version, about, max_term_width = 100)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Parse a Dockerfile and print its syntax tree or its stage graph
    Parse(ParseArgs),
}

/// `kiln parse`.
#[derive(Debug, clap::Args)]
pub struct ParseArgs {
    /// The Dockerfile to read; `-` reads standard input
    #[arg(
        short = 'f',
        long = "file",
        value_name = "PATH",
        default_value = "Dockerfile"
    )]
    pub file: PathBuf,

    /// Set a build argument (KEY=VALUE; a bare KEY takes the value from the environment)
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,

    /// The stage to build; the graph keeps only the stages it needs (default: the last)
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,

    /// The platform to build for, os/arch[/variant] (default: this machine's)
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,

    /// What to print
    #[arg(long, value_enum, default_value_t = ParseFormat::Dag)]
    pub format: ParseFormat,
}

/// Output formats of `kiln parse`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ParseFormat {
    /// The typed instructions with their line ranges, as JSON
    Json,
    /// The S-expression dump of BuildKit's parser tests
    Buildkit,
    /// The stages the target needs, their dependencies and steps, as an indented tree
    Dag,
    /// The same graph in Graphviz's dot language
    Dot,
}
