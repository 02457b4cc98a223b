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
    /// Build an image from a Dockerfile and a context directory
    Build(BuildArgs),
    /// Parse a Dockerfile and print its syntax tree or its stage graph
    Parse(ParseArgs),
    /// List images
    Images(StoreArgs),
    /// Show an image's manifest and config as JSON
    Inspect(ImageArgs),
    /// Show an image's layers and the instructions that made them
    History(ImageArgs),
    /// Give an image another name
    Tag(TagArgs),
    /// Remove image names (and what only they used)
    Rmi(RmiArgs),
    /// Look at and trim the build cache
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Print the whole output a RUN step wrote, by its cache key (as `kiln history` or the
    /// metadata file shows it; a unique prefix is enough)
    Logs(LogsArgs),
    /// Write images to a tar that both `docker load` and OCI tools read (an OCI layout with
    /// docker's manifest.json), or to an OCI layout directory
    Save(SaveArgs),
    /// Load images from an OCI layout, an OCI tarball or a `docker save` tarball
    Load(LoadArgs),
    /// Run a command in a new container of an image, as `docker run` does
    Run(RunArgs),
    /// List containers
    Ps(PsArgs),
    /// Remove containers
    Rm(RmArgs),
    /// Make an image of a container's changes
    Commit(CommitArgs),
    /// Write an OCI runtime bundle (config.json and rootfs/) of an image, for runc
    Bundle(BundleArgs),
}

/// `kiln load`.
#[derive(Debug, clap::Args)]
pub struct LoadArgs {
    /// Read this tarball (plain, gzip, zstd, bzip2 or xz) or OCI layout directory instead of
    /// standard input
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    pub input: Option<PathBuf>,

    /// Print only the loaded images' ids
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// The store
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `kiln save`.
#[derive(Debug, clap::Args)]
pub struct SaveArgs {
    /// The images: NAME[:TAG], NAME@DIGEST, a digest or an ID prefix
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,

    /// Where to write: a file, `-` for standard output, or a directory for --format oci-dir
    /// (default: standard output when it is not a terminal)
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// The archive's form
    #[arg(long, value_enum, default_value_t = SaveFormat::Oci)]
    pub format: SaveFormat,

    /// Layer compression
    #[command(flatten)]
    pub compression: CompressionArgs,

    /// The store
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `kiln save --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SaveFormat {
    /// One tar: OCI layout with OCI media types, plus docker's manifest.json
    Oci,
    /// One tar: the same with docker's media types
    Docker,
    /// An OCI layout directory
    OciDir,
}

/// Layer compression flags of `kiln save` and `kiln build`.
#[derive(Debug, Clone, clap::Args)]
pub struct CompressionArgs {
    /// Layer compression (default: gzip)
    #[arg(long, value_enum, value_name = "ALGORITHM")]
    pub compression: Option<CompressionArg>,

    /// Compression level (gzip 0-9, default 6; zstd 1-22, default 3)
    #[arg(long = "compression-level", value_name = "N")]
    pub compression_level: Option<i32>,
}

/// `--compression` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CompressionArg {
    /// gzip, as docker pushes layers
    Gzip,
    /// Zstandard (OCI media types only)
    Zstd,
    /// Plain tar layers
    #[value(alias = "uncompressed")]
    None,
}

/// `kiln logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// The step's cache key, `sha256:…` or a prefix of its hex digits
    #[arg(value_name = "KEY")]
    pub key: String,

    /// The store
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Where the store is; every command that touches it takes this.
#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// The store directory (default: $KILN_ROOT, else $XDG_DATA_HOME/kiln, else
    /// ~/.local/share/kiln)
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

/// `kiln build`.
#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Name the image (NAME[:TAG]; repeatable)
    #[arg(short = 't', long = "tag", value_name = "NAME[:TAG]")]
    pub tags: Vec<String>,

    /// The Dockerfile (default: CONTEXT/Dockerfile); `-` reads standard input
    #[arg(short = 'f', long = "file", value_name = "PATH")]
    pub file: Option<PathBuf>,

    /// Set a build argument (KEY=VALUE; a bare KEY takes the value from the environment)
    #[arg(long = "build-arg", value_name = "KEY=VALUE")]
    pub build_args: Vec<String>,

    /// The stage to build (default: the last)
    #[arg(long, value_name = "STAGE")]
    pub target: Option<String>,

    /// Do not use the cache for any step
    #[arg(long)]
    pub no_cache: bool,

    /// Do not use the cache for the steps of these stages (repeatable)
    #[arg(long = "no-cache-filter", value_name = "STAGE")]
    pub no_cache_filter: Vec<String>,

    /// An extra context: NAME=DIR, or NAME=docker-image://IMAGE for an image in the store
    #[arg(long = "build-context", value_name = "NAME=SRC")]
    pub build_contexts: Vec<String>,

    /// How to show progress
    #[arg(long, value_enum, default_value_t = kiln::progress::Mode::Auto)]
    pub progress: kiln::progress::Mode,

    /// Write the image digest, config digest and each step's cache outcome to this JSON file
    #[arg(long = "metadata-file", value_name = "FILE")]
    pub metadata_file: Option<PathBuf>,

    /// For each step that missed the cache, print the full difference of its cache key from
    /// the key it had last time
    #[arg(long)]
    pub explain: bool,

    /// The platform to build for, os/arch[/variant] (default: this machine's)
    #[arg(long, value_name = "PLATFORM")]
    pub platform: Option<String>,

    /// A secret for RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR (repeatable)
    #[arg(long = "secret", value_name = "id=ID,src=FILE")]
    pub secrets: Vec<String>,

    /// An SSH agent for RUN --mount=type=ssh: default (from $SSH_AUTH_SOCK) or ID=SOCKET
    /// (repeatable)
    #[arg(long = "ssh", value_name = "ID[=SOCKET]")]
    pub ssh: Vec<String>,

    /// Print only the image digest
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Also write the image out: type=oci|docker,dest=FILE (an image tar), type=local,dest=DIR
    /// (its root filesystem), type=tar,dest=FILE (the same as one tar); dest=- is standard
    /// output; `-o DIR` and `-o -` are short for local and tar
    #[arg(short = 'o', long = "output", value_name = "type=…,dest=…")]
    pub output: Option<String>,

    /// Layer compression of -o type=oci|docker
    #[command(flatten)]
    pub compression: CompressionArgs,

    /// The store
    #[command(flatten)]
    pub store: StoreArgs,

    /// The build context directory
    #[arg(value_name = "CONTEXT")]
    pub context: PathBuf,
}

/// Commands that name one image.
#[derive(Debug, clap::Args)]
pub struct ImageArgs {
    /// The image: NAME[:TAG], NAME@DIGEST, a digest or an ID prefix
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// Show full digests and keys
    #[arg(long)]
    pub no_trunc: bool,

    /// The store
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `kiln tag`.
#[derive(Debug, clap::Args)]
pub struct TagArgs {
    /// The image to name
    #[arg(value_name = "SOURCE")]
    pub source: String,

    /// The new name, NAME[:TAG]
    #[arg(value_name = "TARGET")]
    pub target: String,

    /// The store
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `kiln rmi`.
#[derive(Debug, clap::Args)]
pub struct RmiArgs {
    /// Names to remove
    #[arg(value_name = "IMAGE", required = true)]
    pub images: Vec<String>,

    /// The store
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `kiln cache …`.
#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List cache entries
    Ls(StoreArgs),
    /// Show how much disk the store uses
    Du(StoreArgs),
    /// Remove cache entries (all, or by age and size)
    Prune(PruneArgs),
}

/// `kiln cache prune`.
#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Keep the most recently used entries that fit in this size (e.g. 2GB, 500MB)
    #[arg(long = "keep-storage", value_name = "SIZE")]
    pub keep_storage: Option<String>,

    /// Only remove entries unused for longer than this: until=DURATION (e.g. until=24h)
    #[arg(long, value_name = "FILTER")]
    pub filter: Vec<String>,

    /// The store
    #[command(flatten)]
    pub store: StoreArgs,
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

/// `kiln run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,

    /// Name the container
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// Set an environment variable (KEY=VALUE; a bare KEY takes the value from kiln's
    /// environment)
    #[arg(short = 'e', long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,

    /// Read environment variables from a file (one KEY=VALUE a line, # comments)
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,

    /// Bind a host directory or file: HOST:CONTAINER[:ro]
    #[arg(short = 'v', long = "volume", value_name = "HOST:CONTAINER[:ro]")]
    pub volumes: Vec<String>,

    /// Mount: type=bind,source=HOST,target=PATH[,readonly] or type=tmpfs,target=PATH
    #[arg(long = "mount", value_name = "type=bind|tmpfs,...")]
    pub mounts: Vec<String>,

    /// The working directory inside the container
    #[arg(short = 'w', long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,

    /// The user: NAME or UID, with an optional :GROUP
    #[arg(short = 'u', long = "user", value_name = "USER[:GROUP]")]
    pub user: Option<String>,

    /// Override the image's ENTRYPOINT ('' clears it)
    #[arg(long, value_name = "CMD")]
    pub entrypoint: Option<String>,

    /// Keep standard input open
    #[arg(short = 'i', long)]
    pub interactive: bool,

    /// Allocate a pseudo-terminal
    #[arg(short = 't', long)]
    pub tty: bool,

    /// The network: default (the host's, under the container's own hostname: kiln has no
    /// bridge), host (also the host's hostname and /etc/hosts, as docker) or none
    #[arg(long, value_name = "default|host|none", default_value = "default")]
    pub network: String,

    /// The container's hostname (default: the first 12 digits of its id)
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// Mount the root filesystem read-only
    #[arg(long)]
    pub read_only: bool,

    /// The store
    #[command(flatten)]
    pub store: StoreArgs,

    /// The image: NAME[:TAG], a digest or an ID prefix
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// The command and its arguments (default: the image's CMD)
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

/// `kiln ps`.
#[derive(Debug, clap::Args)]
pub struct PsArgs {
    /// Show all containers (default: running ones)
    #[arg(short = 'a', long)]
    pub all: bool,

    /// Print only container ids
    #[arg(short = 'q', long)]
    pub quiet: bool,

    /// Do not truncate ids and commands
    #[arg(long)]
    pub no_trunc: bool,

    /// The store
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `kiln rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// Kill a running container first
    #[arg(short = 'f', long)]
    pub force: bool,

    /// Containers, by name or id prefix
    #[arg(value_name = "CONTAINER", required = true)]
    pub containers: Vec<String>,

    /// The store
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `kiln commit`.
#[derive(Debug, clap::Args)]
pub struct CommitArgs {
    /// The history entry's comment
    #[arg(short = 'm', long, value_name = "TEXT")]
    pub message: Option<String>,

    /// The author
    #[arg(short = 'a', long, value_name = "NAME")]
    pub author: Option<String>,

    /// The container, by name or id prefix
    #[arg(value_name = "CONTAINER")]
    pub container: String,

    /// The new image's name, NAME[:TAG]
    #[arg(value_name = "IMAGE")]
    pub image: Option<String>,

    /// The store
    #[command(flatten)]
    pub store: StoreArgs,
}

/// `kiln bundle`.
#[derive(Debug, clap::Args)]
pub struct BundleArgs {
    /// The image
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// The bundle directory (created; must be empty)
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,

    /// The command and its arguments (default: the image's ENTRYPOINT and CMD)
    #[arg(
        value_name = "COMMAND",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,

    /// The store
    #[command(flatten)]
    pub store: StoreArgs,
}
