//! One stage's steps: FROM, config instructions, WORKDIR, COPY and ADD, each filesystem step
//! behind the cache.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::cache::contenthash::{self, StatCacheStorage};
use crate::cache::explain;
use crate::cache::index::{
    CacheRecord, LayerRef, MemoRecord, StepLocator, StepRecord, CACHE_KIND, LOG_KIND, MEMO_KIND,
    STAT_KIND, STEP_KIND, WALK_KIND,
};
use crate::cache::key::{self, BaseIdentity, CacheKey, Preimage, SourceIdentity};
use crate::digest::{Digest, DigestWriter};
use crate::graph::{Base, Source, Stage, Step};
use crate::image::{Descriptor, ImageConfig, Manifest, LAYER_MEDIA_TYPE};
use crate::layer::{self, EntryKind, LayerEntry, LayerError, RootfsView, Timestamp};
use crate::solve::add;
use crate::solve::config::{self, ConfigError, StageConfigState};
use crate::solve::copy::{self, CopyOptions, HostDir, Scratch, SourceTree};
use crate::solve::engine::{BuildError, Driver, NamedContext, ResolvedBase, StepReport};
use crate::solve::events::{Event, VertexId};
use crate::store::{Store, StoreError};
use crate::syntax::instruction::values;
use crate::syntax::instruction::{Copy, CopySource};
use crate::syntax::Command;

use rayon::prelude::*;

mod cache_mount;
mod run;

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// The command of a RUN failed.
    #[error("process {:?} did not complete successfully: {}{}", command.join(" "), status.describe(), tail_text(tail))]
    RunFailed {
        /// What ran.
        command: Vec<String>,
        /// How it ended.
        status: crate::sandbox::ExitStatus,
        /// Its last lines of output.
        tail: Vec<String>,
    },
    /// The sandbox could not run the command.
    #[error("cannot run the command in the sandbox")]
    Sandbox(#[from] crate::sandbox::SandboxError),
    /// A RUN mount kiln cannot make yet.
    #[error("{what} are not supported yet")]
    MountUnsupported {
        /// What kind of mount.
        what: String,
    },
    /// A required ssh agent was not given with `--ssh`.
    #[error("ssh agent {id:?} not found: expected `kiln build --ssh {id}` (with SSH_AUTH_SOCK set) or `--ssh {id}=SOCKET`")]
    MissingSsh {
        /// Its id.
        id: String,
    },
    /// A required secret was not given with `--secret`.
    #[error(
        "secret {id:?} not found: expected `kiln build --secret id={id},src=FILE` (or env=VAR)"
    )]
    MissingSecret {
        /// Its id.
        id: String,
    },
    /// A file of the build could not be read or written.
    #[error("cannot use {}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A FROM or `--from` image is not in the store.
    #[error("image {reference:?} not found in the store")]
    ImageNotFound {
        /// The reference as written.
        reference: String,
        /// What the store said.
        #[source]
        source: StoreError,
    },
    /// An image's manifest or config cannot be read.
    #[error("image {reference:?} has an unreadable {what}")]
    BadImage {
        /// The reference.
        reference: String,
        /// `manifest` or `config`.
        what: &'static str,
        /// The JSON error.
        #[source]
        source: serde_json::Error,
    },
    /// The image is for another platform.
    #[error("the store has a layer of media type {media_type:?}, which kiln cannot read yet")]
    UnsupportedLayer {
        /// The media type.
        media_type: String,
    },
    /// A base image's ONBUILD triggers do not parse.
    #[error("the base image's ONBUILD triggers {triggers:?} do not parse")]
    BadTrigger {
        /// The triggers as the image records them.
        triggers: Vec<String>,
        /// The parse error.
        #[source]
        source: Box<crate::syntax::ParseError>,
    },
    /// A named context's image could not be loaded.
    #[error("cannot load the named context's image")]
    Load(#[from] crate::load::LoadError),
    /// A config instruction is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// COPY or ADD failed.
    #[error(transparent)]
    Copy(#[from] crate::solve::copy::CopyError),
    /// Writing or reading a layer failed.
    #[error("cannot write the layer")]
    Layer(#[from] LayerError),
    /// The store failed.
    #[error("the store failed")]
    Store(#[from] StoreError),
    /// Reading the context failed.
    #[error("cannot read the build context")]
    Context(#[from] crate::context::walk::WalkError),
    /// Hashing context files failed.
    #[error("cannot hash the build context")]
    Hash(#[from] crate::cache::CacheError),
    /// The build context or a stage a COPY reads from failed earlier.
    #[error("a source this step reads from failed earlier")]
    ContextUnavailable,
}

/// `\nlast lines:\n  …` for an error message, or nothing.
fn tail_text(tail: &[String]) -> String {
    match tail.is_empty() {
        true => String::new(),
        false => format!("\nlast lines of output:\n  {}", tail.join("\n  ")),
    }
}

/// A layer of a stage: the blob as stored and its uncompressed digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerBlob {
    /// The blob.
    pub blob: Descriptor,
    /// Its uncompressed digest.
    pub diff_id: Digest,
}

/// A stage's image as far as it has been built.
#[derive(Debug, Clone)]
pub struct StageState {
    /// The image config so far (history included, `rootfs` filled at export).
    pub config: ImageConfig,
    /// The layers, bottom first.
    pub layers: Vec<LayerBlob>,
    /// The key of the last filesystem step (or of the FROM).
    pub chain: Digest,
    /// True when the last filesystem step, or one before it, ran in this build.
    pub reran: bool,
}

/// What a filesystem step is, before anything runs: its parent's key and the instruction as
/// expanded (without its place in the Dockerfile), with where it reads from.
fn definition(parent: &Digest, step: &Step) -> Digest {
    let command = serde_json::to_string(&step.instruction.command).unwrap_or_default();
    let source = serde_json::to_string(&step.source).unwrap_or_default();
    let args = serde_json::to_string(&step.args).unwrap_or_default();
    Digest::of(format!("{parent}\0{command}\0{source}\0{args}").as_bytes())
}

/// A filesystem step's result, shared with stages that run the same step.
#[derive(Debug, Clone)]
pub(crate) struct SharedStep {
    layer: Option<LayerBlob>,
    history: Option<crate::image::History>,
    chain: Digest,
    reran: bool,
}

/// Whether this stage runs a step or another stage already does.
pub(crate) enum Claim {
    /// Run it and publish the result.
    First(Arc<Slot>),
    /// Wait for the stage that runs it.
    Taken(Arc<Slot>),
}

/// Where the stage that runs a step leaves its result for the others.
#[derive(Default)]
pub(crate) struct Slot {
    result: std::sync::Mutex<Option<Option<SharedStep>>>,
    ready: std::sync::Condvar,
}

impl Slot {
    /// Publishes the result (`None`: the step failed).
    fn publish(&self, shared: Option<SharedStep>) {
        *self.result.lock().unwrap_or_else(|e| e.into_inner()) = Some(shared);
        self.ready.notify_all();
    }

    /// The result once it is published; `None` if the step failed.
    fn wait(&self) -> Option<SharedStep> {
        let mut result = self.result.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(shared) = result.as_ref() {
                return shared.clone();
            }
            result = self.ready.wait(result).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// A COPY/ADD ready for the cache lookup.
struct PreparedCopy {
    key: CacheKey,
    options: CopyOptions,
    sources: Vec<copy::Prepared>,
    tree: SourceHolder,
    /// Holds heredoc files, downloads and extracted archives until the layer is written.
    _scratch: tempfile::TempDir,
}

/// The tree a COPY/ADD reads, owned.
enum SourceHolder {
    Context(Arc<crate::context::Context>),
    View(RootfsView),
    Dir(HostDir),
    Empty,
}

impl SourceHolder {
    fn as_tree(&self) -> &(dyn SourceTree + Sync) {
        match self {
            SourceHolder::Context(context) => context.as_ref(),
            SourceHolder::View(view) => view,
            SourceHolder::Dir(dir) => dir,
            SourceHolder::Empty => &Scratch,
        }
    }
}

/// The SHA-256 of a host file's bytes.
fn file_digest(path: &Path) -> Result<Digest, StepError> {
    let mut file = std::fs::File::open(path).map_err(|source| copy::CopyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let mut writer = DigestWriter::new(std::io::sink());
    std::io::copy(&mut file, &mut writer).map_err(|source| copy::CopyError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(writer.finish().1)
}

/// The entry digest of a non-context source entry, in the same format as context entries
/// (see `cache::contenthash`): type, mode, size, link target, content.
fn stat_digest(stat: Option<&copy::SourceStat>, content: Option<&Digest>) -> Digest {
    let Some(stat) = stat else {
        return contenthash::directory_digest(&mut []);
    };
    // The type bytes of the entry digest (see `cache::contenthash`).
    let (kind, size, target) = match &stat.kind {
        copy::SourceKind::Dir => (b'd', 0, ""),
        copy::SourceKind::File => (b'f', stat.size, ""),
        copy::SourceKind::Symlink { target } => (b'l', 0, target.as_str()),
        copy::SourceKind::CharDevice { .. } => (b'c', 0, ""),
        copy::SourceKind::BlockDevice { .. } => (b'b', 0, ""),
        copy::SourceKind::Fifo => (b'p', 0, ""),
        copy::SourceKind::Skip => (b's', 0, ""),
    };
    contenthash::digest_parts(kind, stat.mode, size, target.as_bytes(), content)
}

/// What a filesystem step produced.
pub(crate) struct StepResult {
    /// Its layer.
    layer: LayerBlob,
    /// Why it missed; empty for a cache hit.
    reasons: Vec<String>,
    /// When the layer was first made, seconds since the epoch.
    created: u64,
    /// `--explain`: the key's preimage against last time's.
    explanation: Option<String>,
}

/// `secs` since the epoch as RFC 3339.
pub(crate) fn rfc3339(secs: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs))
        .to_string()
}

/// The work of one stage.
pub(crate) struct StageRun<'d, 'a> {
    pub driver: &'d Driver<'a>,
    pub stage: &'d Stage,
    pub bases: &'d BTreeMap<String, ResolvedBase>,
    pub label: Option<String>,
    pub wait: &'d (dyn Fn(usize) -> Option<Arc<StageState>> + Sync),
}

impl StageRun<'_, '_> {
    /// Builds the stage.
    pub fn run(&self) -> Result<StageState, BuildError> {
        let total = self.vertex_count();
        let mut index = 0;
        let mut state = self.start_state(&mut index, total)?;
        let mut config_state = StageConfigState::default();
        for (step_index, step) in self.stage.steps.iter().enumerate() {
            let located = |source: StepError| BuildError::Step {
                position: step.instruction.position,
                step: step.text.clone(),
                source: Box::new(source),
            };
            match &step.instruction.command {
                Command::Run(command) => {
                    index += 1;
                    let name = self.name(index, total, &step.text);
                    let args_over_env = &config_state.args_over_env;
                    self.once(&mut state, step, |state| {
                        self.run_command(state, step_index, step, command, args_over_env, name)
                    })?;
                }
                Command::Workdir(path) => {
                    index += 1;
                    let path =
                        config::resolve_workdir(state.config.config.working_dir.as_deref(), path);
                    state.config.config.working_dir = Some(path.clone());
                    let name = self.name(index, total, &step.text);
                    self.once(&mut state, step, |state| {
                        self.workdir(state, step_index, step, &path, name)
                    })?;
                }
                Command::Copy(copy) | Command::Add(copy) => {
                    index += 1;
                    let name = self.name(index, total, &step.text);
                    self.once(&mut state, step, |state| {
                        self.copy(state, step_index, step, copy, name)
                    })?;
                }
                _ => {
                    // Config entries get their time at export (see export.rs).
                    if let Some(entry) = config::apply(&mut state.config, &mut config_state, step)
                        .map_err(|e| located(e.into()))?
                    {
                        state.config.history.push(entry);
                    }
                }
            }
        }
        Ok(state)
    }

    /// Runs a filesystem step unless another stage of this build runs the very same step on
    /// the very same parent (BuildKit merges such vertices and shows them once); then waits
    /// for that one and takes its layer, key and history without a vertex of its own.
    fn once(
        &self,
        state: &mut StageState,
        step: &Step,
        run: impl FnOnce(&mut StageState) -> Result<(), BuildError>,
    ) -> Result<(), BuildError> {
        let definition = definition(&state.chain, step);
        match self.driver.claim(definition) {
            Claim::First(slot) => {
                let result = run(state);
                let shared = result.is_ok().then(|| SharedStep {
                    layer: state.layers.last().cloned(),
                    history: state.config.history.last().cloned(),
                    chain: state.chain,
                    reran: state.reran,
                });
                slot.publish(shared);
                result
            }
            Claim::Taken(slot) => {
                let shared = slot.wait().ok_or(BuildError::DependencyFailed)?;
                state.layers.extend(shared.layer);
                state.config.history.extend(shared.history);
                state.chain = shared.chain;
                state.reran = shared.reran;
                Ok(())
            }
        }
    }

    /// BuildKit's `n` in `[k/n]`: a FROM of an image, and every RUN, COPY, ADD and WORKDIR.
    fn vertex_count(&self) -> usize {
        let from = usize::from(matches!(self.stage.base, Base::Image(_)));
        from + self
            .stage
            .steps
            .iter()
            .filter(|step| {
                matches!(
                    step.instruction.command,
                    Command::Run(_) | Command::Copy(_) | Command::Add(_) | Command::Workdir(_)
                )
            })
            .count()
    }

    /// `[label k/n] text`, the index padded to the width of `n` as BuildKit does.
    fn name(&self, index: usize, total: usize, text: &str) -> String {
        let width = total.to_string().len();
        match &self.label {
            Some(label) => format!("[{label} {index:>width$}/{total}] {text}"),
            None => format!("[{index:>width$}/{total}] {text}"),
        }
    }

    fn start_state(&self, index: &mut usize, total: usize) -> Result<StageState, BuildError> {
        let platform = self.stage.platform.to_string();
        match &self.stage.base {
            Base::Scratch => Ok(StageState {
                config: config::scratch_config(&self.stage.platform),
                layers: Vec::new(),
                chain: key::from_key_at(&BaseIdentity::Scratch, &platform, self.driver.epoch)
                    .digest,
                reran: false,
            }),
            Base::Image(reference) => {
                let base = self
                    .bases
                    .get(reference)
                    .ok_or(BuildError::DependencyFailed)?;
                *index += 1;
                // One vertex per base image and platform, however many stages start from it
                // (BuildKit merges them); the image is in the store already, so it is cached.
                let identity =
                    key::from_key_at(&base.identity(), &platform, self.driver.epoch).digest;
                if self.driver.first_use(identity) {
                    let name = self.name(*index, total, &format!("FROM {}", base.name));
                    let vertex = self.driver.start(name);
                    self.driver.report(Event::Cached { vertex });
                }
                let layers = base_layers(&base.manifest, &base.config);
                let mut config = base.config.clone();
                // Triggers run once, in the stage built on the image; they are not inherited.
                config.config.on_build = None;
                Ok(StageState {
                    config,
                    layers,
                    chain: key::from_key_at(&base.identity(), &platform, self.driver.epoch).digest,
                    reran: false,
                })
            }
            Base::Stage(index) => {
                let state = (self.wait)(*index).ok_or(BuildError::DependencyFailed)?;
                let mut state = state.as_ref().clone();
                state.config.config.on_build = None;
                Ok(state)
            }
        }
    }

    /// WORKDIR: creates the directory (and missing parents) owned by the current USER.
    fn workdir(
        &self,
        state: &mut StageState,
        step_index: usize,
        step: &Step,
        path: &str,
        name: String,
    ) -> Result<(), BuildError> {
        let user = state.config.config.user.clone();
        let vertex = self.driver.start(name.clone());
        let started = Instant::now();
        let key = key::workdir_key(&state.chain, path, user.as_deref());
        let layers = state.layers.clone();
        let outcome = self.cached_or_run(state, vertex, step_index, &key, &step.text, None, || {
            let view = self.view(&layers)?;
            workdir_entries(&view, path, user.as_deref(), self.driver.now_time)
        });
        self.finish(
            state, vertex, started, name, key.digest, step, outcome, "WORKDIR",
        )
    }

    /// COPY and ADD: select the sources, key them by content, and on a miss plan the layer
    /// against the image so far (or an empty tree for `--link`).
    fn copy(
        &self,
        state: &mut StageState,
        step_index: usize,
        step: &Step,
        copy: &Copy,
        name: String,
    ) -> Result<(), BuildError> {
        let vertex = self.driver.start(name.clone());
        let started = Instant::now();
        let memo = self.memo_id(state, step, copy);
        if let Some(memo) = &memo {
            match self.memo_hit(memo, vertex, step_index, &step.text) {
                Ok(Some((key, result))) => {
                    let keyword = step.instruction.keyword();
                    return self.finish(
                        state,
                        vertex,
                        started,
                        name,
                        key,
                        step,
                        Ok(result),
                        keyword,
                    );
                }
                Ok(None) => {}
                Err(error) => return Err(self.fail(vertex, started, step, error)),
            }
        }
        let prepared = match self.prepare_copy(state, step, copy, vertex) {
            Ok(prepared) => prepared,
            Err(error) => return Err(self.fail(vertex, started, step, error)),
        };
        let key = prepared.key.clone();
        if let Some(memo) = &memo {
            if let Err(error) = self.remember_memo(memo, &key.digest) {
                return Err(self.fail(vertex, started, step, error));
            }
        }
        let layers = state.layers.clone();
        let outcome = self.cached_or_run(state, vertex, step_index, &key, &step.text, None, || {
            let tree = prepared.tree.as_tree();
            match prepared.options.is_linked() {
                true => Ok(copy::plan_copy(
                    &prepared.sources,
                    &prepared.options,
                    tree,
                    &Scratch,
                )?),
                false => {
                    let dest = self.view(&layers)?;
                    Ok(copy::plan_copy(
                        &prepared.sources,
                        &prepared.options,
                        tree,
                        &dest,
                    )?)
                }
            }
        });
        self.finish(
            state,
            vertex,
            started,
            name,
            key.digest,
            step,
            outcome,
            step.instruction.keyword(),
        )
    }

    /// Everything a COPY/ADD needs before the cache lookup: options, sources (heredocs
    /// written, URLs downloaded), the tree it reads and the key.
    fn prepare_copy(
        &self,
        state: &StageState,
        step: &Step,
        copy: &Copy,
        vertex: VertexId,
    ) -> Result<PreparedCopy, StepError> {
        let store = self.driver.store;
        let is_add = matches!(step.instruction.command, Command::Add(_));
        let scratch = store.temp_dir()?;
        let now = timestamp(self.driver.now_time);
        let owner = match &copy.chown {
            Some(spec) => {
                let view = self.view(&state.layers)?;
                let ids = layer::chown_ids(&view, spec)?;
                Some(copy::Owner {
                    uid: ids.uid,
                    gid: ids.gid,
                })
            }
            None => None,
        };
        let chmod = match &copy.chmod {
            Some(text) => Some(
                values::validate_chmod(text)
                    .map_err(|_| copy::CopyError::BadChmod { mode: text.clone() })?,
            ),
            None => None,
        };
        let options = CopyOptions {
            destination: copy.destination.clone(),
            workdir: state.config.config.working_dir.clone().unwrap_or_default(),
            owner,
            chmod,
            link: copy.link,
            parents: copy.parents,
            exclude: copy.exclude.clone(),
            add: is_add,
            unpack: copy.unpack,
            now,
            scratch: scratch.path().to_path_buf(),
        };
        let sources = add::prepare_sources(
            &copy.sources,
            is_add,
            copy.checksum.as_deref(),
            now,
            scratch.path(),
        )?;
        let (tree, identity) = self.source_tree(step)?;
        let selected = copy::select_sources(&sources, &options, tree.as_tree())?;
        let mut files = self.digests(&tree, &selected, vertex)?;
        for source in &sources {
            if let copy::Prepared::File { file, .. } = source {
                files.push((format!("<{}>", file.name), file_digest(&file.file)?));
            }
        }
        let source_words: Vec<String> = copy
            .sources
            .iter()
            .map(|source| match source {
                CopySource::Path { path } => path.clone(),
                CopySource::Heredoc(heredoc) => format!("<<{}", heredoc.name),
            })
            .collect();
        let key = key::copy_key(&key::CopyKeyInputs {
            parent: &state.chain,
            keyword: step.instruction.keyword(),
            source: identity,
            sources: &source_words,
            files: &files,
            dest: &copy.destination,
            chown: copy.chown.as_deref(),
            chmod: copy.chmod.as_deref(),
            link: copy.link,
            parents: copy.parents,
            exclude: &copy.exclude,
            checksum: copy.checksum.as_deref(),
            keep_git_dir: copy.keep_git_dir,
            unpack: copy.unpack,
            args: &step.args,
            text: &step.text,
        });
        Ok(PreparedCopy {
            key,
            options,
            sources,
            tree,
            _scratch: scratch,
        })
    }

    /// The tree a COPY/ADD reads from, and how its key names it.
    fn source_tree(&self, step: &Step) -> Result<(SourceHolder, SourceIdentity), StepError> {
        match &step.source {
            None | Some(Source::Context) => {
                let context = self.driver.context().map_err(|error| match error {
                    BuildError::Context(error) => StepError::Context(error),
                    _ => StepError::ContextUnavailable,
                })?;
                Ok((SourceHolder::Context(context), SourceIdentity::Context))
            }
            Some(Source::Scratch) => Ok((SourceHolder::Empty, SourceIdentity::Scratch)),
            Some(Source::Stage(index)) => {
                let stage = self
                    .stage_state(*index)
                    .ok_or(StepError::ContextUnavailable)?;
                let view = self.view(&stage.layers)?;
                Ok((SourceHolder::View(view), SourceIdentity::Stage))
            }
            Some(Source::Image(reference)) => {
                if let Some(NamedContext::Directory(dir)) =
                    self.driver.request.build_contexts.get(reference)
                {
                    return Ok((
                        SourceHolder::Dir(HostDir::new(dir.clone(), false)),
                        SourceIdentity::NamedContext {
                            name: reference.clone(),
                        },
                    ));
                }
                let base = self
                    .bases
                    .get(reference)
                    .ok_or(StepError::ContextUnavailable)?;
                let view = self.view(&base_layers(&base.manifest, &base.config))?;
                Ok((SourceHolder::View(view), base.copy_identity()))
            }
        }
    }

    /// The content digest of every selected entry: context files through the stat cache,
    /// anything else read now.
    fn digests(
        &self,
        tree: &SourceHolder,
        selected: &[copy::SelectedSource],
        vertex: VertexId,
    ) -> Result<Vec<(String, Digest)>, StepError> {
        if let SourceHolder::Context(context) = tree {
            let files: Vec<&str> = selected
                .iter()
                .filter(|entry| entry.kind == copy::SourceKind::File)
                .map(|entry| entry.key_path.as_str())
                .collect();
            let total: u64 = files
                .iter()
                .filter_map(|path| context.get(path))
                .map(|entry| entry.size)
                .sum();
            let hasher = self.driver.hasher();
            let hashed: BTreeMap<String, Digest> = self
                .with_byte_counter(
                    vertex,
                    "hashing",
                    total,
                    || hasher.bytes_read(),
                    || hasher.hash(context, &files),
                )?
                .into_iter()
                .collect();
            return selected
                .iter()
                .map(|entry| {
                    let digest = match hashed.get(&entry.key_path) {
                        Some(digest) => *digest,
                        None => match context.get(&entry.key_path) {
                            Some(found) => contenthash::entry_digest(found, None),
                            None => contenthash::directory_digest(&mut []),
                        },
                    };
                    Ok((entry.key_path.clone(), digest))
                })
                .collect();
        }
        let tree = tree.as_tree();
        selected
            .par_iter()
            .map(|entry| {
                let stat = tree.stat(&entry.key_path)?;
                let content = match &entry.source {
                    Some(path) if entry.kind == copy::SourceKind::File => Some(file_digest(path)?),
                    _ => None,
                };
                Ok((
                    entry.key_path.clone(),
                    stat_digest(stat.as_ref(), content.as_ref()),
                ))
            })
            .collect()
    }

    /// Runs `work` while a second thread reports `read()`'s growth as a byte counter of
    /// `vertex` (the tty view's bar) every 100 ms; nothing is reported for work that ends
    /// sooner.
    fn with_byte_counter<T>(
        &self,
        vertex: VertexId,
        name: &str,
        total: u64,
        read: impl Fn() -> u64 + Sync,
        work: impl FnOnce() -> T,
    ) -> T {
        let start = read();
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|scope| {
            let reporter = scope.spawn(|| {
                let tick = std::time::Duration::from_millis(100);
                loop {
                    std::thread::park_timeout(tick);
                    if done.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    self.driver.report(Event::Status {
                        vertex,
                        name: name.to_string(),
                        current: read().saturating_sub(start),
                        total: Some(total),
                        completed: false,
                    });
                }
            });
            let result = work();
            done.store(true, std::sync::atomic::Ordering::Relaxed);
            reporter.thread().unpark();
            result
        })
    }

    /// True when a RUN later in this stage will mount this step's layer.
    fn read_later(&self, step_index: usize) -> bool {
        self.stage
            .steps
            .iter()
            .skip(step_index + 1)
            .any(|step| matches!(step.instruction.command, Command::Run(_)))
    }

    /// Looks `key` up unless the cache is off for this stage; on a miss, reports why, runs
    /// `execute` and commits its entries as a layer. `upper` is the overlay upper directory
    /// a RUN's entries are read from, which becomes the layer's snapshot when one is needed.
    #[allow(clippy::too_many_arguments)]
    fn cached_or_run(
        &self,
        state: &StageState,
        vertex: VertexId,
        step_index: usize,
        key: &CacheKey,
        text: &str,
        upper: Option<&Path>,
        execute: impl FnOnce() -> Result<Vec<LayerEntry>, StepError>,
    ) -> Result<StepResult, StepError> {
        let store = self.driver.store;
        let locator = self.locator(step_index);
        let disabled = self.cache_disabled();
        if disabled.is_none() {
            if let Some((layer, created)) = self.lookup(&key.digest)? {
                self.driver.report(Event::Cached { vertex });
                self.remember(&locator, &key.digest, text, created)?;
                return Ok(StepResult {
                    layer,
                    reasons: Vec::new(),
                    created,
                    explanation: None,
                });
            }
        }
        let previous = self.previous_preimage(&locator);
        let reasons = match disabled {
            Some(reason) => vec![reason],
            None if state.reran => vec![explain::MissReason::ParentRan.to_string()],
            None => explain::reasons(previous.as_ref(), &key.preimage)
                .iter()
                .map(ToString::to_string)
                .collect(),
        };
        let explanation = self
            .driver
            .request
            .explain
            .then(|| explain::render_diff(previous.as_ref(), &key.preimage));
        self.driver.report(Event::Miss {
            vertex,
            reasons: reasons.clone(),
        });
        let entries = execute()?;
        let snapshot = match (self.read_later(step_index), upper) {
            (false, _) => SnapshotPlan::OnFirstUse,
            (true, Some(upper)) => SnapshotPlan::AdoptUpper(upper),
            (true, None) => SnapshotPlan::WriteNow,
        };
        let layer = commit_layer_at(store, entries, snapshot, self.driver.epoch, &|written| {
            self.driver.report(Event::Status {
                vertex,
                name: "writing layer".to_string(),
                current: written,
                total: None,
                completed: false,
            })
        })?;
        let created = self.driver.now_secs;
        let preimage_json = serde_json::to_vec(&key.preimage).unwrap_or_default();
        let (preimage, _) = store.put_blob(&preimage_json)?;
        let record = CacheRecord {
            key: key.digest,
            preimage,
            layer: Some(LayerRef {
                diff_id: layer.diff_id,
                size: layer.blob.size,
            }),
            text: text.to_string(),
            created,
        };
        store.put_record(CACHE_KIND, &key.digest, &[layer.diff_id, preimage], &record)?;
        self.remember(&locator, &key.digest, text, created)?;
        Ok(StepResult {
            layer,
            reasons,
            created,
            explanation,
        })
    }

    /// Notes that the step at `locator` had `key` in this build.
    fn remember(
        &self,
        locator: &Digest,
        key: &Digest,
        text: &str,
        created: u64,
    ) -> Result<(), StepError> {
        let store = self.driver.store;
        let record = StepRecord {
            key: *key,
            text: text.to_string(),
            created,
        };
        // A no-change rebuild finds the same record; not rewriting it keeps it free of fsyncs.
        if store.get_record::<StepRecord>(STEP_KIND, locator)?.as_ref() == Some(&record) {
            return Ok(());
        }
        Ok(store.put_record(STEP_KIND, locator, &[], &record)?)
    }

    /// A cached layer for `key` and when it was made, if its record and blob are both still
    /// there.
    fn lookup(&self, key: &Digest) -> Result<Option<(LayerBlob, u64)>, StepError> {
        let store = self.driver.store;
        let Some(record) = store.get_record::<CacheRecord>(CACHE_KIND, key)? else {
            return Ok(None);
        };
        let Some(layer) = record.layer else {
            return Ok(None);
        };
        if !store.has_blob(&layer.diff_id) {
            return Ok(None);
        }
        store.touch_record(CACHE_KIND, key)?;
        let blob = LayerBlob {
            blob: Descriptor::new(LAYER_MEDIA_TYPE, layer.diff_id, layer.size),
            diff_id: layer.diff_id,
        };
        Ok(Some((blob, record.created)))
    }

    /// Where a context COPY/ADD's memo lives: the context, then the step's definition. `None`
    /// for other sources and for URL sources, whose content the context does not hold.
    fn memo_id(&self, state: &StageState, step: &Step, copy: &Copy) -> Option<Digest> {
        if step.source != Some(Source::Context) || self.cache_disabled().is_some() {
            return None;
        }
        let reads_urls = copy.sources.iter().any(|source| {
            matches!(source, CopySource::Path { path } if add::is_url(path) || add::is_git(path))
        });
        if reads_urls {
            return None;
        }
        let definition = definition(&state.chain, step);
        let context = self.driver.context_path.display();
        Some(Digest::of(
            format!("memo\0{context}\0{definition}").as_bytes(),
        ))
    }

    /// A cache hit for a context COPY/ADD found through its memo: the key it had last time
    /// the context looked exactly like this, if that key's layer is still there.
    fn memo_hit(
        &self,
        memo: &Digest,
        vertex: VertexId,
        step_index: usize,
        text: &str,
    ) -> Result<Option<(Digest, StepResult)>, StepError> {
        let store = self.driver.store;
        let Some(record) = store.get_record::<MemoRecord>(MEMO_KIND, memo)? else {
            return Ok(None);
        };
        let fingerprint = self
            .driver
            .fingerprint()
            .map_err(|_| StepError::ContextUnavailable)?;
        if record.fingerprint != fingerprint {
            return Ok(None);
        }
        let Some((layer, created)) = self.lookup(&record.key)? else {
            return Ok(None);
        };
        self.driver.report(Event::Cached { vertex });
        self.remember(&self.locator(step_index), &record.key, text, created)?;
        Ok(Some((
            record.key,
            StepResult {
                layer,
                reasons: Vec::new(),
                created,
                explanation: None,
            },
        )))
    }

    /// Notes the key a context COPY/ADD has with the context as it is now.
    fn remember_memo(&self, memo: &Digest, key: &Digest) -> Result<(), StepError> {
        let fingerprint = self
            .driver
            .fingerprint()
            .map_err(|_| StepError::ContextUnavailable)?;
        let record = MemoRecord {
            fingerprint,
            key: *key,
        };
        let store = self.driver.store;
        if store.get_record::<MemoRecord>(MEMO_KIND, memo)?.as_ref() == Some(&record) {
            return Ok(());
        }
        Ok(store.put_record(MEMO_KIND, memo, &[], &record)?)
    }

    /// The preimage of the key this step had last time, if it is known.
    fn previous_preimage(&self, locator: &Digest) -> Option<Preimage> {
        let store = self.driver.store;
        let step = store
            .get_record::<StepRecord>(STEP_KIND, locator)
            .ok()
            .flatten()?;
        store
            .get_record::<CacheRecord>(CACHE_KIND, &step.key)
            .ok()
            .flatten()
            .and_then(|record| store.read_blob(&record.preimage).ok())
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
    }

    /// `Some(reason)` when `--no-cache` or `--no-cache-filter` turns the cache off here.
    fn cache_disabled(&self) -> Option<String> {
        let request = self.driver.request;
        if request.no_cache {
            return Some(explain::MissReason::NoCache.to_string());
        }
        let filtered = request.no_cache_filter.iter().find(|filter| {
            self.stage.name.as_deref() == Some(filter.to_ascii_lowercase().as_str())
                || filter.parse::<usize>().ok() == Some(self.stage.index)
        })?;
        Some(
            explain::MissReason::NoCacheFilter {
                stage: filtered.clone(),
            }
            .to_string(),
        )
    }

    /// Which step this is across builds: the context, the Dockerfile, the stage, the step.
    fn locator(&self, step_index: usize) -> Digest {
        StepLocator {
            context: self.driver.context_path.display().to_string(),
            dockerfile: self.driver.dockerfile_path.clone(),
            stage: self.stage.index,
            step: step_index,
        }
        .id()
    }

    #[allow(clippy::too_many_arguments)]
    fn finish(
        &self,
        state: &mut StageState,
        vertex: VertexId,
        started: Instant,
        name: String,
        key: Digest,
        step: &Step,
        outcome: Result<StepResult, StepError>,
        keyword: &str,
    ) -> Result<(), BuildError> {
        let StepResult {
            layer,
            reasons,
            created,
            explanation,
        } = match outcome {
            Ok(outcome) => outcome,
            Err(error) => return Err(self.fail(vertex, started, step, error)),
        };
        let cached = reasons.is_empty();
        if !cached {
            self.driver.done(vertex, started);
        }
        let log = self.driver.take_log(vertex);
        if let Some(log) = &log {
            // `kiln logs KEY` finds a RUN's whole output through its cache key.
            if let Err(error) = self.driver.store.put_record(LOG_KIND, &key, &[*log], log) {
                return Err(self.fail(vertex, started, step, error.into()));
            }
        }
        self.driver.record(StepReport {
            vertex,
            name,
            cached,
            reasons,
            duration: started.elapsed().as_secs_f64(),
            key: Some(key),
            layer: Some(layer.diff_id),
            log,
            explain: explanation,
        });
        let created_by = match keyword {
            "COPY" | "ADD" => format!("{} # buildkit", step.text),
            _ => step.text.clone(),
        };
        let mut history = config::layer_history(created_by);
        history.created = Some(rfc3339(created));
        state.config.history.push(history);
        state.layers.push(layer);
        state.chain = key;
        state.reran = state.reran || !cached;
        Ok(())
    }

    fn fail(
        &self,
        vertex: VertexId,
        started: Instant,
        step: &Step,
        error: StepError,
    ) -> BuildError {
        self.driver.report(Event::Failed {
            vertex,
            duration: started.elapsed(),
            error: error.to_string(),
        });
        BuildError::Step {
            position: step.instruction.position,
            step: step.text.clone(),
            source: Box::new(error),
        }
    }

    /// The merged file system of `layers`, unpacking any layer not yet unpacked.
    pub fn view(&self, layers: &[LayerBlob]) -> Result<RootfsView, StepError> {
        let snapshots = layers
            .iter()
            .map(|layer| snapshot(self.driver.store, layer))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RootfsView::new(snapshots))
    }

    /// The final state of stage `index` (waiting for it).
    pub fn stage_state(&self, index: usize) -> Option<Arc<StageState>> {
        (self.wait)(index)
    }
}

/// The entries WORKDIR's `mkdir -p` adds: each missing directory, owned by `user`, and every
/// existing directory above them with its own metadata (a layer holds the parents of what it
/// changes); the one the first new directory is made in gets the build time as its mtime.
fn workdir_entries(
    view: &RootfsView,
    path: &str,
    user: Option<&str>,
    now: std::time::SystemTime,
) -> Result<Vec<LayerEntry>, StepError> {
    let (uid, gid) = match user {
        Some(user) => {
            let chown = layer::chown_ids(view, user)?;
            (chown.uid, chown.gid)
        }
        None => (0, 0),
    };
    let mtime = timestamp(now);
    let parts: Vec<&str> = path.split('/').filter(|part| !part.is_empty()).collect();
    // The existing part of the path, symlinks resolved, without the leading `/`.
    let mut existing = String::new();
    let mut missing = parts.len();
    for (index, part) in parts.iter().enumerate() {
        let current = join(&existing, part);
        match view.lookup(&current, layer::Follow::All)? {
            Some(found) if found.metadata.kind == layer::FileKind::Dir => {
                existing = found.path.trim_start_matches('/').to_string();
            }
            Some(_) => {
                return Err(StepError::Copy(copy::CopyError::NotADirectory {
                    path: format!("/{current}"),
                }))
            }
            None => {
                missing = index;
                break;
            }
        }
    }
    let mut entries = Vec::new();
    if missing == parts.len() {
        return Ok(entries);
    }
    let mut ancestor = String::new();
    for part in existing.split('/').filter(|part| !part.is_empty()) {
        ancestor = join(&ancestor, part);
        let found = view
            .lookup(&ancestor, layer::Follow::NotLast)?
            .ok_or_else(|| copy::CopyError::NotADirectory {
                path: format!("/{ancestor}"),
            })?;
        entries.push(LayerEntry {
            path: ancestor.clone(),
            kind: EntryKind::Dir,
            mode: found.metadata.mode & 0o7777,
            uid: found.metadata.uid,
            gid: found.metadata.gid,
            mtime: match ancestor == existing {
                true => mtime,
                false => found.metadata.mtime,
            },
            xattrs: Vec::new(),
        });
    }
    let mut created = existing;
    for part in &parts[missing..] {
        created = join(&created, part);
        entries.push(LayerEntry {
            path: created.clone(),
            kind: EntryKind::Dir,
            mode: 0o755,
            uid,
            gid,
            mtime,
            xattrs: Vec::new(),
        });
    }
    Ok(entries)
}

/// `parent/name`, or `name` at the root.
fn join(parent: &str, name: &str) -> String {
    match parent.is_empty() {
        true => name.to_string(),
        false => format!("{parent}/{name}"),
    }
}

/// A layer time for `time`.
pub(crate) fn timestamp(time: std::time::SystemTime) -> Timestamp {
    let since = time
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp {
        secs: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
        nanos: since.subsec_nanos(),
    }
}

/// When and how the snapshot of a new layer is made.
pub(crate) enum SnapshotPlan<'a> {
    /// Unpacked from the blob when something first reads it (see [`snapshot`]), so a final
    /// `COPY . /app` never is.
    OnFirstUse,
    /// Laid out while the blob is written, for a layer a later RUN of the stage runs on.
    WriteNow,
    /// The RUN's overlay upper directory the entries were read from, made the snapshot in
    /// place (`layer::adopt_upper`); unpacked on first use where that cannot be done.
    AdoptUpper(&'a Path),
}

/// Writes `entries` as a layer blob; its snapshot is made on first use.
pub(crate) fn commit_layer(
    store: &Store,
    entries: Vec<LayerEntry>,
    progress: &dyn Fn(u64),
) -> Result<LayerBlob, StepError> {
    commit_layer_at(store, entries, SnapshotPlan::OnFirstUse, None, progress)
}

/// [`commit_layer`] in a build with SOURCE_DATE_EPOCH `epoch` (mtimes newer than it become
/// it) and the snapshot made as `snapshot` says.
pub(crate) fn commit_layer_at(
    store: &Store,
    mut entries: Vec<LayerEntry>,
    snapshot: SnapshotPlan,
    epoch: Option<i64>,
    progress: &dyn Fn(u64),
) -> Result<LayerBlob, StepError> {
    layer::clamp_mtimes(&mut entries, epoch);
    let mut writer = Counting {
        inner: store.blob_writer_hashed_by_caller()?,
        written: 0,
        reported: 0,
        progress,
    };
    // Adopting only touches what the blob does not read (times, xattrs, dropped paths), so
    // it may come first.
    let (adopted, snapshot_dir) = match snapshot {
        SnapshotPlan::AdoptUpper(upper) => {
            (layer::adopt_upper(upper, &entries)?.then_some(upper), None)
        }
        SnapshotPlan::WriteNow => (None, Some(store.temp_dir()?)),
        SnapshotPlan::OnFirstUse => (None, None),
    };
    let summary = layer::write_layer(
        entries,
        &mut writer,
        snapshot_dir.as_ref().map(|dir| dir.path()),
    )?;
    writer.inner.commit_as(&summary.diff_id)?;
    if let Some(dir) = snapshot_dir {
        store.commit_snapshot(dir, &summary.diff_id)?;
    }
    if let Some(upper) = adopted {
        store.commit_snapshot_dir(upper, &summary.diff_id)?;
    }
    let (digest, size) = (summary.diff_id, summary.size);
    Ok(LayerBlob {
        blob: Descriptor::new(LAYER_MEDIA_TYPE, digest, size),
        diff_id: summary.diff_id,
    })
}

/// Counts bytes on their way to a blob and reports them every [`REPORT_EVERY`] bytes.
struct Counting<'p, W> {
    inner: W,
    written: u64,
    reported: u64,
    progress: &'p dyn Fn(u64),
}

/// How many bytes pass between two progress reports of a layer being written.
const REPORT_EVERY: u64 = 8 << 20;

impl<W: std::io::Write> std::io::Write for Counting<'_, W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let written = self.inner.write(buf)?;
        self.written += written as u64;
        if self.written - self.reported >= REPORT_EVERY {
            self.reported = self.written;
            (self.progress)(self.written);
        }
        Ok(written)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The snapshot of `layer`, unpacked from its blob if it is not there yet.
pub(crate) fn snapshot(store: &Store, layer: &LayerBlob) -> Result<PathBuf, StepError> {
    if store.has_snapshot(&layer.diff_id) {
        return Ok(store.snapshot_path(&layer.diff_id));
    }
    let blob = store.open_blob(&layer.blob.digest)?;
    let reader: Box<dyn Read> = match layer.blob.media_type.as_str() {
        LAYER_MEDIA_TYPE | "application/vnd.docker.image.rootfs.diff.tar" => Box::new(blob),
        "application/vnd.oci.image.layer.v1.tar+gzip"
        | "application/vnd.docker.image.rootfs.diff.tar.gzip" => {
            Box::new(flate2::read::MultiGzDecoder::new(blob))
        }
        "application/vnd.oci.image.layer.v1.tar+zstd" => {
            let path = store.blob_path(&layer.blob.digest);
            Box::new(
                zstd::stream::read::Decoder::new(blob)
                    .map_err(|source| copy::CopyError::Io { path, source })?,
            )
        }
        other => {
            return Err(StepError::UnsupportedLayer {
                media_type: other.to_string(),
            })
        }
    };
    let dir = store.temp_dir()?;
    layer::unpack(reader, dir.path())?;
    Ok(store.commit_snapshot(dir, &layer.diff_id)?)
}

/// The layers of a base image's manifest, each paired with its uncompressed digest from the
/// config (layers may be stored compressed).
fn base_layers(manifest: &Manifest, config: &ImageConfig) -> Vec<LayerBlob> {
    manifest
        .layers
        .iter()
        .zip(&config.rootfs.diff_ids)
        .map(|(blob, diff_id)| LayerBlob {
            blob: blob.clone(),
            diff_id: *diff_id,
        })
        .collect()
}

/// Finds `reference` in the store and reads its manifest and config.
pub(crate) fn resolve_image(
    store: &Store,
    reference: &str,
    shown: &str,
    position: crate::syntax::Position,
) -> Result<ResolvedBase, StepError> {
    let resolved = store
        .resolve(reference)
        .map_err(|source| StepError::ImageNotFound {
            reference: reference.to_string(),
            source,
        })?;
    let manifest_bytes = store.read_blob(&resolved.digest)?;
    let manifest: Manifest =
        serde_json::from_slice(&manifest_bytes).map_err(|source| StepError::BadImage {
            reference: reference.to_string(),
            what: "manifest",
            source,
        })?;
    let config_bytes = store.read_blob(&manifest.config.digest)?;
    let config: ImageConfig =
        serde_json::from_slice(&config_bytes).map_err(|source| StepError::BadImage {
            reference: reference.to_string(),
            what: "config",
            source,
        })?;
    Ok(ResolvedBase {
        manifest_digest: resolved.digest,
        manifest,
        config,
        name: resolved
            .name
            .map_or_else(|| shown.to_string(), |name| name.to_string()),
        position,
    })
}

/// What kiln remembers about one context directory between builds (its stat cache, its
/// walk's directory listings), kept in the store as a blob (compact binary) named by a
/// record, so gc drops the versions no record names.
pub(crate) struct ContextMemory<'s> {
    store: &'s Store,
    kind: &'static str,
    id: Digest,
}

impl<'s> ContextMemory<'s> {
    /// The stat cache of `context` (absolute, symlinks resolved) in `store`.
    pub fn stat_cache(store: &'s Store, context: &Path) -> Self {
        ContextMemory {
            store,
            kind: STAT_KIND,
            id: stat_cache_id(context),
        }
    }

    /// The directory listings of the last walk of `context` (absolute, symlinks resolved).
    pub fn walk_listings(store: &'s Store, context: &Path) -> Self {
        ContextMemory {
            store,
            kind: WALK_KIND,
            id: stat_cache_id(context),
        }
    }
}

impl StatCacheStorage for ContextMemory<'_> {
    fn load(&self) -> Option<Vec<u8>> {
        let blob = self
            .store
            .get_record::<Digest>(self.kind, &self.id)
            .ok()
            .flatten()?;
        self.store.read_blob(&blob).ok()
    }

    fn save(&self, bytes: &[u8]) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let (blob, _) = self.store.put_blob(bytes)?;
        self.store.put_record(self.kind, &self.id, &[blob], &blob)?;
        Ok(())
    }
}

/// The record naming the stat cache of `context` (an absolute path).
fn stat_cache_id(context: &Path) -> Digest {
    Digest::of(context.as_os_str().as_encoded_bytes())
}
