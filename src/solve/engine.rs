//! The build driver: parse, lower, resolve bases, run stages in parallel, export.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::cache::contenthash::ContentHasher;
use crate::cache::contenthash::StatCacheStorage;
use crate::cache::key::BaseIdentity;
use crate::context::walk::{self as context_walk, Context, Listings, WalkError, Walked};
use crate::digest::Digest;
use crate::graph::{self, Base, BuildGraph, BuildOptions, GraphError, Stage};
use crate::image::{Descriptor, ImageConfig, Manifest};
use crate::solve::events::{Event, Reporter, VertexId};
use crate::solve::export;
use crate::solve::step::{Claim, ContextMemory, Slot, StageRun, StageState, StepError};
use crate::store::{Reference, Store, StoreError};
use crate::syntax::{self, Command, ParseError, Position};

/// Everything `kiln build` was asked to do.
#[derive(Debug, Clone)]
pub struct BuildRequest {
    /// How messages name the Dockerfile (`Dockerfile`, `<stdin>`).
    pub dockerfile_name: String,
    /// The Dockerfile's bytes.
    pub dockerfile: Vec<u8>,
    /// Where the Dockerfile lives, for `<Dockerfile>.dockerignore`; `None` when read from stdin.
    pub dockerfile_path: Option<PathBuf>,
    /// The context directory.
    pub context: PathBuf,
    /// Build args, target and platforms.
    pub options: BuildOptions,
    /// `-t` names.
    pub tags: Vec<Reference>,
    /// `--no-cache`: run every step.
    pub no_cache: bool,
    /// `--no-cache-filter`: run every step of these stages (names or indexes).
    pub no_cache_filter: Vec<String>,
    /// `--build-context NAME=SRC`.
    pub build_contexts: BTreeMap<String, NamedContext>,
    /// `--explain`: keep each missed step's full key difference in its report.
    pub explain: bool,
    /// `--secret id=ID,src=FILE|env=VAR`: where each secret's value comes from.
    pub secrets: BTreeMap<String, SecretSource>,
    /// `--ssh ID[=SOCKET]`: agent sockets RUN `--mount=type=ssh` forwards, by id.
    pub ssh: BTreeMap<String, PathBuf>,
}

/// Where a `--secret` is read from; its value never reaches a layer, a key, progress output
/// or the metadata file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file's content.
    File(PathBuf),
    /// An environment variable of kiln's.
    Env(String),
}

/// A `--build-context` source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NamedContext {
    /// A local directory, usable as a COPY source (`--from=NAME`).
    Directory(PathBuf),
    /// An image in the store, by reference or digest (`docker-image://` or a store name).
    Image(String),
    /// An image in an OCI layout directory (`oci-layout://DIR[:TAG|@DIGEST]`), loaded into
    /// the store first.
    OciLayout {
        /// The layout directory.
        dir: PathBuf,
        /// The tag or digest; `None` when the layout holds one image.
        selector: Option<String>,
    },
    /// The image of a `docker save` tarball (`docker-archive:FILE`), loaded first.
    DockerArchive(PathBuf),
}

/// What a finished build made.
#[derive(Debug, Clone, Serialize)]
pub struct BuildOutcome {
    /// The image manifest.
    pub manifest: Descriptor,
    /// The config blob's digest.
    pub config: Digest,
    /// The names it was tagged with.
    pub tags: Vec<String>,
    /// Every step that was a vertex, in start order.
    pub steps: Vec<StepReport>,
}

/// One step's outcome, for `--metadata-file`.
#[derive(Debug, Clone, Serialize)]
pub struct StepReport {
    /// Its vertex number.
    pub vertex: VertexId,
    /// Its progress name.
    pub name: String,
    /// True when it came from the cache.
    pub cached: bool,
    /// Why it missed (empty for a hit).
    pub reasons: Vec<String>,
    /// How long it took, in seconds.
    pub duration: f64,
    /// The cache key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<Digest>,
    /// The layer it made, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<Digest>,
    /// `--explain`: the key's preimage marked against the step's last key.
    #[serde(skip)]
    pub explain: Option<String>,
    /// RUN: the blob holding the command's whole output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub log: Option<Digest>,
}

/// Why a build failed.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The Dockerfile does not parse.
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// The stages or variables do not fit together.
    #[error("{0}")]
    Graph(#[from] GraphError),
    /// A step failed; `position` is its instruction.
    #[error("{step}: {source}")]
    Step {
        /// Where the instruction is.
        position: Position,
        /// The step as progress shows it.
        step: String,
        /// What went wrong.
        #[source]
        source: Box<StepError>,
    },
    /// The build context could not be read.
    #[error("cannot read the build context")]
    Context(#[source] WalkError),
    /// The store failed.
    #[error("cannot use the store")]
    Store(#[source] StoreError),
    /// A stage this one needs failed first.
    #[error("a stage this build needs failed")]
    DependencyFailed,
}

/// Builds the Dockerfile in `request` into `store`, reporting progress to `reporter`.
///
/// # Errors
/// [`BuildError`]: the first error of any stage; located when a step failed.
pub fn build(
    store: &Store,
    request: &BuildRequest,
    reporter: &dyn Reporter,
) -> Result<BuildOutcome, BuildError> {
    let _lock = store.lock_shared().map_err(BuildError::Store)?;
    let driver = Driver::new(store, request, reporter);
    let file_name = request
        .dockerfile_path
        .as_deref()
        .and_then(|path| path.file_name())
        .map_or_else(
            || request.dockerfile_name.clone(),
            |name| name.to_string_lossy().into_owned(),
        );
    let vertex = driver.start(format!("[internal] load build definition from {file_name}"));
    let started = Instant::now();
    let parsed = syntax::parse(&request.dockerfile)?;
    driver.status_done(
        vertex,
        "transferring dockerfile",
        request.dockerfile.len() as u64,
    );
    driver.done(vertex, started);

    let first = graph::lower(&parsed, &request.options)?;
    let bases = driver.resolve_bases(&first)?;
    let mut options = request.options.clone();
    for (reference, base) in &bases {
        options.base_env.insert(reference.clone(), base.env_pairs());
        if let Some(triggers) = base
            .config
            .config
            .on_build
            .as_ref()
            .filter(|t| !t.is_empty())
        {
            let parsed = parse_triggers(triggers).map_err(|source| BuildError::Step {
                position: base.position,
                step: format!("FROM {reference}"),
                source: Box::new(source),
            })?;
            options.base_onbuild.insert(reference.clone(), parsed);
        }
    }
    let graph = match options.base_env.is_empty() {
        true => first,
        false => graph::lower(&parsed, &options)?,
    };
    *driver.proxy_env.lock().unwrap_or_else(|e| e.into_inner()) = graph.proxy_env.clone();
    for warning in &graph.warnings {
        reporter.report(Event::Warning {
            message: warning.to_string(),
        });
    }
    // BuildKit sends the context before any step runs; walking it first also keeps its
    // vertices out of the middle of a step's output.
    let reads_context = graph
        .stages
        .iter()
        .flat_map(|stage| &stage.steps)
        .any(|step| {
            step.source == Some(graph::Source::Context)
                || step
                    .mounts
                    .iter()
                    .any(|mount| mount.source == Some(graph::Source::Context))
        });
    if reads_context {
        driver.context()?;
    }
    let stage_count = label_count(&parsed, &graph);
    let states = driver.run_stages(&graph, &bases, stage_count)?;
    let target = states
        .get(&graph.target)
        .ok_or(BuildError::DependencyFailed)?;
    let outcome = export::export(&driver, target)?;
    Ok(outcome)
}

/// The ONBUILD triggers of a base image, parsed as the instructions they are.
fn parse_triggers(triggers: &[String]) -> Result<Vec<crate::syntax::Instruction>, StepError> {
    let text = format!("FROM scratch\n{}\n", triggers.join("\n"));
    let parsed = syntax::parse(text.as_bytes()).map_err(|source| StepError::BadTrigger {
        triggers: triggers.to_vec(),
        source: Box::new(source),
    })?;
    Ok(parsed.instructions.into_iter().skip(1).collect())
}

/// A base image resolved in the store.
#[derive(Debug, Clone)]
pub(crate) struct ResolvedBase {
    /// The manifest digest.
    pub manifest_digest: Digest,
    /// The manifest.
    pub manifest: Manifest,
    /// The config.
    pub config: ImageConfig,
    /// The normalized name, for progress.
    pub name: String,
    /// Where the build first uses it.
    pub position: Position,
}

impl ResolvedBase {
    fn env_pairs(&self) -> Vec<(String, String)> {
        self.config
            .config
            .env
            .iter()
            .flatten()
            .map(|entry| match entry.split_once('=') {
                Some((name, value)) => (name.to_string(), value.to_string()),
                None => (entry.clone(), String::new()),
            })
            .collect()
    }

    /// The cache identity of this base as a FROM.
    pub fn identity(&self) -> BaseIdentity {
        BaseIdentity::Image {
            manifest: self.manifest_digest,
        }
    }

    /// The cache identity of this image as a `COPY --from` source.
    pub fn copy_identity(&self) -> crate::cache::key::SourceIdentity {
        crate::cache::key::SourceIdentity::Image {
            manifest: self.manifest_digest,
        }
    }
}

/// Shared state of one build.
pub(crate) struct Driver<'a> {
    pub store: &'a Store,
    pub request: &'a BuildRequest,
    reporter: &'a dyn Reporter,
    vertices: AtomicUsize,
    context: OnceLock<Result<Arc<Context>, String>>,
    /// The walked context's stat fingerprint, for memoized context COPY/ADD keys.
    fingerprint: OnceLock<Digest>,
    context_error: Mutex<Option<WalkError>>,
    hasher: OnceLock<ContentHasher>,
    reports: Mutex<Vec<StepReport>>,
    /// The output log blob of each RUN vertex.
    logs: Mutex<BTreeMap<VertexId, Digest>>,
    /// Proxy variables given as build args, for RUN's environment only.
    proxy_env: Mutex<BTreeMap<String, String>>,
    /// Filesystem steps by definition, so stages running the same step share one run.
    claims: Mutex<BTreeMap<Digest, Arc<Slot>>>,
    /// The context directory as an absolute path with symlinks resolved (once per build): it
    /// names the context's stat cache, memos and step locators across builds.
    pub context_path: PathBuf,
    /// The Dockerfile likewise, or `-` when it came from stdin.
    pub dockerfile_path: String,
    /// When the build started, RFC 3339 (history and config `created`).
    pub now: String,
    /// When the build started, seconds since the epoch (cache records).
    pub now_secs: u64,
    /// When the build started, for file times of directories it creates.
    pub now_time: SystemTime,
    /// SOURCE_DATE_EPOCH (the build arg, which `kiln build` also takes from the environment):
    /// the time that stands for "now", and the newest mtime a layer of this build holds.
    pub epoch: Option<i64>,
}

/// The `SOURCE_DATE_EPOCH` build arg as seconds, when it is a non-negative integer.
fn source_date_epoch(request: &BuildRequest) -> Option<i64> {
    let value = request.options.build_args.get("SOURCE_DATE_EPOCH")?;
    value.trim().parse::<i64>().ok().filter(|secs| *secs >= 0)
}

/// `secs` after the Unix epoch.
fn epoch_time(secs: i64) -> SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

impl<'a> Driver<'a> {
    fn new(store: &'a Store, request: &'a BuildRequest, reporter: &'a dyn Reporter) -> Self {
        let epoch = source_date_epoch(request);
        // SOURCE_DATE_EPOCH stands for the build time everywhere (history, created
        // directories), as in BuildKit.
        let now_time = match epoch {
            Some(secs) => epoch_time(secs),
            None => SystemTime::now(),
        };
        let absolute =
            |path: &std::path::Path| path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        Driver {
            context_path: absolute(&request.context),
            dockerfile_path: request.dockerfile_path.as_deref().map_or_else(
                || "-".to_string(),
                |path| absolute(path).display().to_string(),
            ),
            store,
            request,
            reporter,
            vertices: AtomicUsize::new(0),
            context: OnceLock::new(),
            fingerprint: OnceLock::new(),
            context_error: Mutex::new(None),
            hasher: OnceLock::new(),
            reports: Mutex::new(Vec::new()),
            claims: Mutex::new(BTreeMap::new()),
            logs: Mutex::new(BTreeMap::new()),
            proxy_env: Mutex::new(BTreeMap::new()),
            now_secs: now_time
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_secs()),
            now: humantime::format_rfc3339_seconds(now_time).to_string(),
            now_time,
            epoch,
        }
    }

    /// Starts a vertex and returns its number.
    pub fn start(&self, name: String) -> VertexId {
        let vertex = self.vertices.fetch_add(1, Ordering::SeqCst) + 1;
        self.reporter.report(Event::Started { vertex, name });
        vertex
    }

    /// Reports an event.
    pub fn report(&self, event: Event) {
        self.reporter.report(event);
    }

    /// Ends a vertex successfully.
    pub fn done(&self, vertex: VertexId, started: Instant) {
        self.reporter.report(Event::Done {
            vertex,
            duration: started.elapsed(),
        });
    }

    /// Reports a finished byte counter on a vertex.
    pub fn status_done(&self, vertex: VertexId, name: &str, bytes: u64) {
        self.reporter.report(Event::Status {
            vertex,
            name: name.to_string(),
            current: bytes,
            total: Some(bytes),
            completed: true,
        });
    }

    /// Keeps the log blob of a RUN vertex for its report.
    pub fn keep_log(&self, vertex: VertexId, log: Digest) {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(vertex, log);
    }

    /// The log blob of a vertex, once.
    pub fn take_log(&self, vertex: VertexId) -> Option<Digest> {
        self.logs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&vertex)
    }

    /// The proxy variables RUN gets in its environment.
    pub fn proxy_env(&self) -> BTreeMap<String, String> {
        self.proxy_env
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The value of secret `id`, if `--secret` gave one.
    ///
    /// # Errors
    /// [`StepError::Io`] when its file cannot be read.
    pub fn secret(&self, id: &str) -> Result<Option<Vec<u8>>, StepError> {
        match self.request.secrets.get(id) {
            None => Ok(None),
            Some(SecretSource::Env(name)) => {
                Ok(std::env::var_os(name).map(|value| value.into_encoded_bytes()))
            }
            Some(SecretSource::File(path)) => {
                std::fs::read(path)
                    .map(Some)
                    .map_err(|source| StepError::Io {
                        path: path.clone(),
                        source,
                    })
            }
        }
    }

    /// True the first time `id` is asked about in this build.
    pub fn first_use(&self, id: Digest) -> bool {
        matches!(self.claim(id), Claim::First(_))
    }

    /// Claims the step with `definition`: the first caller runs it, later ones wait for it.
    pub fn claim(&self, definition: Digest) -> Claim {
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        match claims.get(&definition) {
            Some(slot) => Claim::Taken(slot.clone()),
            None => {
                let slot = Arc::new(Slot::default());
                claims.insert(definition, slot.clone());
                Claim::First(slot)
            }
        }
    }

    /// Records a step's outcome for the metadata file.
    pub fn record(&self, report: StepReport) {
        self.reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(report);
    }

    /// The step reports so far, in vertex order.
    pub fn reports(&self) -> Vec<StepReport> {
        let mut reports = self
            .reports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        reports.sort_by_key(|report| report.vertex);
        reports
    }

    /// The walked build context, walked once on first use (with its own vertices).
    pub fn context(&self) -> Result<Arc<Context>, BuildError> {
        let walked = self.context.get_or_init(|| {
            let vertex = self.start("[internal] load .dockerignore".to_string());
            let started = Instant::now();
            let patterns = match context_walk::read_dockerignore(
                &self.request.context,
                self.request.dockerfile_path.as_deref(),
            ) {
                Ok(patterns) => patterns,
                Err(error) => return Err(self.keep_context_error(vertex, started, error)),
            };
            self.done(vertex, started);
            let vertex = self.start("[internal] load build context".to_string());
            let started = Instant::now();
            let memory = ContextMemory::walk_listings(self.store, &self.context_path);
            let previous = memory.load().map(|bytes| Listings::decode(&bytes));
            match context_walk::walk_reusing(
                &self.request.context,
                &patterns,
                previous.unwrap_or_default(),
            ) {
                Ok(Walked {
                    context,
                    listings,
                    directories_read,
                }) => {
                    // Only a slower next walk is at stake, so a failure to save is ignored.
                    if directories_read > 0 {
                        let _ = memory.save(&listings.encode());
                    }
                    let bytes = context.entries().iter().map(|entry| entry.size).sum();
                    self.status_done(vertex, "transferring context", bytes);
                    self.done(vertex, started);
                    Ok(Arc::new(context))
                }
                Err(error) => Err(self.keep_context_error(vertex, started, error)),
            }
        });
        match walked {
            Ok(context) => Ok(context.clone()),
            Err(_) => Err(self
                .context_error
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .map_or(BuildError::DependencyFailed, BuildError::Context)),
        }
    }

    /// The stat fingerprint of the walked context.
    pub fn fingerprint(&self) -> Result<Digest, BuildError> {
        if let Some(fingerprint) = self.fingerprint.get() {
            return Ok(*fingerprint);
        }
        let context = self.context()?;
        Ok(*self
            .fingerprint
            .get_or_init(|| crate::cache::contenthash::stat_fingerprint(&context)))
    }

    fn keep_context_error(&self, vertex: VertexId, started: Instant, error: WalkError) -> String {
        let text = error.to_string();
        self.report(Event::Failed {
            vertex,
            duration: started.elapsed(),
            error: text.clone(),
        });
        *self.context_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(error);
        text
    }

    /// The content hasher, with the stat cache this context had last time.
    pub fn hasher(&self) -> &ContentHasher {
        self.hasher.get_or_init(|| {
            ContentHasher::load(&ContextMemory::stat_cache(self.store, &self.context_path))
        })
    }

    /// Saves the stat cache for the next build, if hashing happened. Losing it only costs
    /// re-reading files next time, so a failure is a warning.
    fn save_hasher(&self) {
        let (Some(hasher), Some(Ok(context))) = (self.hasher.get(), self.context.get()) else {
            return;
        };
        let storage = ContextMemory::stat_cache(self.store, &self.context_path);
        if let Err(error) = hasher.save(context, &storage) {
            self.report(Event::Warning {
                message: format!("{error}; files will be hashed again next time"),
            });
        }
    }

    /// Resolves every image a needed stage starts from or copies from.
    fn resolve_bases(
        &self,
        graph: &BuildGraph,
    ) -> Result<BTreeMap<String, ResolvedBase>, BuildError> {
        // Each image once, located at its first use.
        let mut names: BTreeMap<String, Position> = BTreeMap::new();
        for stage in &graph.stages {
            if let Base::Image(reference) = &stage.base {
                names
                    .entry(reference.clone())
                    .or_insert(stage.from.position);
            }
            for step in &stage.steps {
                if let Some(graph::Source::Image(reference)) = &step.source {
                    if !matches!(
                        self.request.build_contexts.get(reference),
                        Some(NamedContext::Directory(_))
                    ) {
                        names
                            .entry(reference.clone())
                            .or_insert(step.instruction.position);
                    }
                }
            }
        }
        let mut bases = BTreeMap::new();
        for (reference, position) in names {
            if bases.contains_key(&reference) {
                continue;
            }
            let lookup = match self.load_named_image(&reference) {
                Ok(lookup) => lookup,
                Err(source) => {
                    return Err(BuildError::Step {
                        position,
                        step: format!("FROM {reference}"),
                        source: Box::new(source),
                    })
                }
            };
            let shown = match lookup.starts_with("sha256:") {
                true => reference.clone(),
                false => {
                    Reference::parse(&lookup).map_or_else(|_| lookup.clone(), |r| r.to_string())
                }
            };
            let vertex = self.start(format!("[internal] load metadata for {shown}"));
            let started = Instant::now();
            match crate::solve::step::resolve_image(self.store, &lookup, &shown, position) {
                Ok(base) => {
                    self.done(vertex, started);
                    bases.insert(reference, base);
                }
                Err(source) => {
                    self.report(Event::Failed {
                        vertex,
                        duration: started.elapsed(),
                        error: source.to_string(),
                    });
                    return Err(BuildError::Step {
                        position,
                        step: format!("FROM {reference}"),
                        source: Box::new(source),
                    });
                }
            }
        }
        Ok(bases)
    }

    /// What to look up in the store for image `reference`: a named context's image (loaded
    /// into the store first when it comes from a layout or an archive), else `reference`.
    fn load_named_image(&self, reference: &str) -> Result<String, StepError> {
        let loaded = match self.request.build_contexts.get(reference) {
            Some(NamedContext::Image(target)) => return Ok(target.clone()),
            Some(NamedContext::OciLayout { dir, selector }) => {
                let vertex = self.start(format!(
                    "[internal] load {reference} from {}",
                    dir.display()
                ));
                let started = Instant::now();
                let loaded = crate::load::import_oci_layout(self.store, dir, selector.as_deref());
                self.done(vertex, started);
                loaded?
            }
            Some(NamedContext::DockerArchive(file)) => {
                let vertex = self.start(format!(
                    "[internal] load {reference} from {}",
                    file.display()
                ));
                let started = Instant::now();
                let loaded = crate::load::import_archive(self.store, file, None);
                self.done(vertex, started);
                loaded?
            }
            Some(NamedContext::Directory(_)) | None => return Ok(reference.to_string()),
        };
        Ok(loaded.to_string())
    }

    /// Runs every stage of `graph` on its own thread, each as soon as its dependencies are
    /// done, and returns the final state of each.
    fn run_stages(
        &self,
        graph: &BuildGraph,
        bases: &BTreeMap<String, ResolvedBase>,
        all_stage_count: usize,
    ) -> Result<BTreeMap<usize, Arc<StageState>>, BuildError> {
        let board = Board::default();
        let errors: Mutex<Vec<BuildError>> = Mutex::new(Vec::new());
        std::thread::scope(|scope| {
            for stage in &graph.stages {
                let board = &board;
                let errors = &errors;
                scope.spawn(move || {
                    let run = StageRun {
                        driver: self,
                        stage,
                        bases,
                        label: stage_label(stage, all_stage_count),
                        wait: &|index| board.wait(index),
                    };
                    match run.run() {
                        Ok(state) => board.finish(stage.index, Some(Arc::new(state))),
                        Err(error) => {
                            board.finish(stage.index, None);
                            errors.lock().unwrap_or_else(|e| e.into_inner()).push(error);
                        }
                    }
                });
            }
        });
        self.save_hasher();
        let mut errors = errors.into_inner().unwrap_or_else(|e| e.into_inner());
        // The root cause, not a stage that only waited on it.
        errors.sort_by_key(|error| matches!(error, BuildError::DependencyFailed));
        if let Some(error) = errors.into_iter().next() {
            return Err(error);
        }
        Ok(board.into_states())
    }
}

/// How many states BuildKit's frontend juggles, which decides whether unnamed stages get
/// `stage-N` labels: the Dockerfile's stages plus one per image a `COPY --from` or a RUN
/// mount reads, and one for the scratch source of cache mounts (checked on dockerd 20.10:
/// a single stage with a cache mount is shown as `[stage-0 1/2]`).
fn label_count(parsed: &syntax::Parsed, graph: &BuildGraph) -> usize {
    let stages = parsed
        .instructions
        .iter()
        .filter(|instruction| matches!(instruction.command, Command::From(_)))
        .count();
    let mut images = std::collections::BTreeSet::new();
    for step in graph.stages.iter().flat_map(|stage| &stage.steps) {
        if let Some(graph::Source::Image(image)) = &step.source {
            images.insert(image.clone());
        }
        for mount in &step.mounts {
            match &mount.source {
                Some(graph::Source::Image(image)) => {
                    images.insert(image.clone());
                }
                Some(graph::Source::Scratch) => {
                    images.insert("scratch".to_string());
                }
                _ => {}
            }
        }
    }
    stages + images.len()
}

/// How progress labels a stage: its name; `stage-N` when unnamed in a multi-stage
/// Dockerfile; nothing in a single-stage one (BuildKit's `[stage-1 2/3]`, `[2/3]`).
fn stage_label(stage: &Stage, stage_count: usize) -> Option<String> {
    match (&stage.name, stage_count > 1) {
        (Some(name), _) => Some(name.clone()),
        (None, true) => Some(format!("stage-{}", stage.index)),
        (None, false) => None,
    }
}

/// Stage results as they finish; threads wait here for the stages they need.
#[derive(Default)]
struct Board {
    states: Mutex<BTreeMap<usize, Option<Arc<StageState>>>>,
    changed: Condvar,
    failed: AtomicBool,
}

impl Board {
    fn finish(&self, index: usize, state: Option<Arc<StageState>>) {
        if state.is_none() {
            self.failed.store(true, Ordering::SeqCst);
        }
        self.states
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(index, state);
        self.changed.notify_all();
    }

    /// The final state of stage `index` once it is done; `None` if it (or anything) failed.
    fn wait(&self, index: usize) -> Option<Arc<StageState>> {
        let mut states = self.states.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(state) = states.get(&index) {
                return state.clone();
            }
            if self.failed.load(Ordering::SeqCst) {
                return None;
            }
            states = self
                .changed
                .wait_timeout(states, Duration::from_millis(200))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn into_states(self) -> BTreeMap<usize, Arc<StageState>> {
        self.states
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .into_iter()
            .filter_map(|(index, state)| state.map(|state| (index, state)))
            .collect()
    }
}
