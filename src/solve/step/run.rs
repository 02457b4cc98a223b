//! RUN: the command in kiln's sandbox on the stage's snapshots, its layer taken from the
//! overlay's upper directory.
//!
//! What BuildKit does and kiln follows:
//! - shell form runs through SHELL (default `/bin/sh -c`); exec form runs as is; a shell-form
//!   command holding heredocs is handed to the shell with the bodies in place, and a command
//!   that is a heredoc alone runs the body as the shell's script;
//! - the environment is the image's `Env` plus every build arg in scope that has a value and
//!   that `Env` does not set, plus the proxy args (which stay out of the cache key);
//! - the key covers the command, shell, environment, in-scope args, user, working directory,
//!   mounts (their options, never a cache mount's content or a secret's value) and network;
//! - a missing working directory is created; `/etc/hosts`, `/etc/resolv.conf` and
//!   `/etc/hostname` are mounted over and never reach the layer, nor do mount points the
//!   sandbox made for RUN mounts.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::cache_mount::{self, CacheMountLease};
use super::{StageRun, StageState, StepError};
use crate::cache::key::{self, CacheKey};
use crate::graph::{Source, Step, StepMount};
use crate::image::ImageConfig;
use crate::layer::{self, DiffOptions, LayerEntry};
use crate::sandbox::{self, MountSpec, NetworkMode, RunSpec, Stream};
use crate::solve::config;
use crate::solve::engine::BuildError;
use crate::solve::events::{Event, VertexId};
use crate::store;
use crate::syntax::instruction::{CommandLine, MountType, Network, Run, Security};

/// How many lines of a failed command's output its error repeats.
const TAIL_LINES: usize = 10;

/// The hostname of every RUN, as in BuildKit.
const HOSTNAME: &str = "buildkitsandbox";

/// Directories the runtime mounts on; a layer made by RUN has them even when empty.
const RUNTIME_DIRS: [&str; 3] = ["dev", "proc", "sys"];

/// Files the sandbox mounts over; they never belong to a layer.
const MOUNTED_FILES: [&str; 3] = ["etc/hosts", "etc/resolv.conf", "etc/hostname"];

impl StageRun<'_, '_> {
    /// RUN: keyed, then on a miss executed in the sandbox and committed from its upper dir.
    pub(super) fn run_command(
        &self,
        state: &mut StageState,
        step_index: usize,
        step: &Step,
        run: &Run,
        args_over_env: &BTreeSet<String>,
        name: String,
    ) -> Result<(), BuildError> {
        let vertex = self.driver.start(name.clone());
        let started = Instant::now();
        let plan = match self.plan_run(state, step, run, args_over_env) {
            Ok(plan) => plan,
            Err(error) => return Err(self.fail(vertex, started, step, error)),
        };
        let key = plan.key.clone();
        let layers = state.layers.clone();
        // Holds the upper directory the layer's entries point into until it is written.
        let scratch = match self.driver.store.temp_dir() {
            Ok(scratch) => scratch,
            Err(error) => return Err(self.fail(vertex, started, step, error.into())),
        };
        let upper = scratch.path().join("upper");
        let outcome = self.cached_or_run(
            state,
            vertex,
            step_index,
            &key,
            &step.text,
            Some(&upper),
            || self.execute(&plan, &layers, scratch.path(), &upper, vertex, started),
        );
        let finished = self.finish(
            state, vertex, started, name, key.digest, step, outcome, "RUN",
        );
        // Not left to TempDir's drop: the overlay's work dir is mode 000 and, after a
        // volatile mount, not empty, which only root could remove without making it writable.
        // What fails here is removed by a later `Store::open` (a dead process's temp dir).
        let _ = store::remove_tree(scratch.path());
        finished
    }

    /// The command, environment, user, mounts and key of a RUN, before anything runs.
    fn plan_run(
        &self,
        state: &StageState,
        step: &Step,
        run: &Run,
        args_over_env: &BTreeSet<String>,
    ) -> Result<RunPlan, StepError> {
        let config = &state.config;
        let shell = config::shell_of(config);
        let argv = command_argv(&run.command, &run.heredocs, &shell);
        let env = run_env(config, step, args_over_env);
        let user = config.config.user.clone().unwrap_or_default();
        let workdir = config
            .config
            .working_dir
            .clone()
            .filter(|dir| !dir.is_empty())
            .unwrap_or_else(|| "/".to_string());
        let network = match run.network {
            Some(Network::None) => NetworkMode::None,
            Some(Network::Host) | Some(Network::Default) | None => NetworkMode::Host,
        };
        let network_text = match run.network {
            Some(Network::None) => "none",
            Some(Network::Host) => "host",
            Some(Network::Default) | None => "default",
        };
        let security = match run.security {
            Some(Security::Insecure) => "insecure",
            Some(Security::Sandbox) | None => "sandbox",
        };
        let mounts: Vec<String> = step.mounts.iter().map(mount_text).collect();
        let (command, shell_used) = match &run.command {
            CommandLine::Exec(words) => (words.clone(), None),
            CommandLine::Shell(_) => (vec![argv.last().cloned().unwrap_or_default()], Some(shell)),
        };
        let key = key::run_key(&key::RunKeyInputs {
            parent: &state.chain,
            command: &command,
            shell: shell_used.as_deref(),
            env: &env,
            args: &step.args,
            user: &user,
            workdir: &workdir,
            mounts: &mounts,
            network: network_text,
            security,
            text: &step.text,
        });
        let mut full_env = env;
        for (name, value) in &self.driver.proxy_env() {
            if !full_env
                .iter()
                .any(|entry| entry.split('=').next() == Some(name))
            {
                full_env.push(format!("{name}={value}"));
            }
        }
        Ok(RunPlan {
            key,
            argv,
            env: full_env,
            user,
            workdir,
            network,
            mounts: step.mounts.clone(),
        })
    }

    /// Runs the planned command on `layers` and returns the entries of the layer it made.
    fn execute(
        &self,
        plan: &RunPlan,
        layers: &[super::LayerBlob],
        scratch: &Path,
        upper: &Path,
        vertex: VertexId,
        started: Instant,
    ) -> Result<Vec<LayerEntry>, StepError> {
        let store = self.driver.store;
        let lower = layers
            .iter()
            .map(|layer| super::snapshot(store, layer))
            .collect::<Result<Vec<PathBuf>, _>>()?;
        let view = layer::RootfsView::new(lower.clone());
        let lower_for_diff = lower.clone();
        // The user as the process runs: an empty USER is root, looked up like any other
        // for its home.
        let exec_user = layer::lookup_user(&view, &plan.user)?;
        let user = sandbox::IdSpec {
            uid: exec_user.uid,
            gid: exec_user.gid,
            additional_gids: exec_user.additional_gids,
        };
        let mut env = plan.env.clone();
        if !env.iter().any(|entry| entry.starts_with("HOME=")) {
            env.push(format!("HOME={}", exec_user.home));
        }
        let work = scratch.join("work");
        let target = scratch.join("rootfs");
        for dir in [upper, &work, &target] {
            std::fs::create_dir_all(dir).map_err(|source| StepError::Io {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        let RunMounts {
            specs: mounts,
            points: ignore,
            ssh_socket,
            leases: _held_until_the_command_ends,
        } = self.run_mounts(&plan.mounts, scratch)?;
        // The first ssh mount is the agent the command's tools find (BuildKit's rule).
        if let Some(socket) = ssh_socket {
            if !env.iter().any(|entry| entry.starts_with("SSH_AUTH_SOCK=")) {
                env.push(format!("SSH_AUTH_SOCK={socket}"));
            }
        }
        let spec = RunSpec {
            argv: plan.argv.clone(),
            env,
            cwd: plan.workdir.clone(),
            user,
            hostname: HOSTNAME.to_string(),
            rootfs: sandbox::RootfsSpec {
                lower,
                upper: upper.to_path_buf(),
                work,
                target,
                volatile: true,
            },
            mounts,
            network: plan.network,
            etc: sandbox::EtcFiles {
                // BuildKit's RUN sees its hostname in /etc/hosts but has no /etc/hostname.
                hostname: String::new(),
                ..sandbox::EtcFiles::default_for(HOSTNAME)
            },
            capabilities: sandbox::default_capabilities(),
        };
        let mut lines = Lines::new(|line: String| {
            self.driver.report(Event::Log {
                vertex,
                elapsed: started.elapsed(),
                line,
            })
        });
        let status = sandbox::run(&spec, &mut |stream, bytes| lines.push(stream, bytes))?;
        let output = lines.finish();
        let log = output.join("\n");
        let (log_digest, _) = store.put_blob(log.as_bytes())?;
        self.driver.keep_log(vertex, log_digest);
        if !status.success() {
            let start = output.len().saturating_sub(TAIL_LINES);
            return Err(StepError::RunFailed {
                command: plan.argv.clone(),
                status,
                tail: output[start..].to_vec(),
            });
        }
        let mut drop = ignore;
        drop.extend(MOUNTED_FILES.iter().map(|path| path.to_string()));
        let mut entries = layer::diff_upper(
            upper,
            &DiffOptions {
                ignore: drop,
                lower: lower_for_diff,
                // Rootless, the command's files belong to host ids standing for its own.
                id_map: sandbox::IdMapping::detect().id_map(),
            },
        )?;
        // The runtime makes the mount points of /dev, /proc and /sys in an image that lacks
        // them, and BuildKit's layer keeps them as empty directories.
        for dir in RUNTIME_DIRS {
            let missing = view.lookup(dir, layer::Follow::NotLast)?.is_none();
            if missing && !entries.iter().any(|entry| entry.path == dir) {
                entries.push(LayerEntry {
                    path: dir.to_string(),
                    kind: layer::EntryKind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    mtime: super::timestamp(self.driver.now_time),
                    xattrs: Vec::new(),
                });
            }
        }
        Ok(entries)
    }

    /// The sandbox mounts of a RUN's `--mount`s, and the mount points the layer must drop.
    fn run_mounts(&self, mounts: &[StepMount], scratch: &Path) -> Result<RunMounts, StepError> {
        let mut specs = Vec::new();
        let mut points = Vec::new();
        let mut ssh_socket: Option<String> = None;
        let mut leases = Vec::new();
        for (index, step_mount) in mounts.iter().enumerate() {
            let mount = &step_mount.mount;
            let target = mount.target.clone().unwrap_or_default();
            let spec = match mount.kind {
                MountType::Tmpfs => MountSpec::Tmpfs {
                    target,
                    size: mount.size,
                },
                MountType::Cache => {
                    let cache_root = self.driver.store.root().join("kiln/cache-mounts");
                    let lease =
                        cache_mount::lease(&cache_root, mount).map_err(|source| StepError::Io {
                            path: cache_root,
                            source,
                        })?;
                    let spec = MountSpec::Bind {
                        source: lease.dir.clone(),
                        target,
                        readonly: mount.read_only,
                    };
                    leases.push(lease);
                    spec
                }
                MountType::Bind => {
                    let source = match &step_mount.source {
                        None | Some(Source::Context) => {
                            let context = self
                                .driver
                                .context()
                                .map_err(|_| StepError::ContextUnavailable)?;
                            let relative = mount.source.clone().unwrap_or_default();
                            context.root().join(relative.trim_start_matches('/'))
                        }
                        Some(Source::Stage(index)) => {
                            let stage = self
                                .stage_state(*index)
                                .ok_or(StepError::ContextUnavailable)?;
                            let view = self.view(&stage.layers)?;
                            let dir = scratch.join(format!("bind-{index}-{}", specs.len()));
                            let source = mount.source.clone().unwrap_or_default();
                            materialize(&view, &source, &dir, !mount.read_only)?;
                            dir
                        }
                        Some(other) => {
                            return Err(StepError::MountUnsupported {
                                what: format!("bind mounts from {other:?}"),
                            })
                        }
                    };
                    MountSpec::Bind {
                        source,
                        target,
                        readonly: mount.read_only,
                    }
                }
                MountType::Secret => {
                    let id = mount
                        .id
                        .clone()
                        .or_else(|| {
                            mount
                                .target
                                .as_deref()
                                .and_then(|t| t.rsplit('/').next().map(str::to_string))
                        })
                        .unwrap_or_default();
                    let target = mount
                        .target
                        .clone()
                        .unwrap_or_else(|| format!("/run/secrets/{id}"));
                    match self.driver.secret(&id)? {
                        Some(value) => {
                            let file = scratch.join(format!("secret-{index}"));
                            write_private(&file, &value, mount.mode.unwrap_or(0o400))?;
                            // Without privileges the owner stays the caller (root inside).
                            let _ = std::os::unix::fs::chown(
                                &file,
                                Some(mount.uid.unwrap_or(0)),
                                Some(mount.gid.unwrap_or(0)),
                            );
                            MountSpec::Bind {
                                source: file,
                                target,
                                readonly: true,
                            }
                        }
                        None if mount.required => return Err(StepError::MissingSecret { id }),
                        None => continue,
                    }
                }
                MountType::Ssh => {
                    let id = mount.id.clone().unwrap_or_else(|| "default".to_string());
                    let target = mount
                        .target
                        .clone()
                        .unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{index}"));
                    match self.driver.request.ssh.get(&id) {
                        Some(socket) => {
                            ssh_socket.get_or_insert_with(|| target.clone());
                            MountSpec::Bind {
                                source: socket.clone(),
                                target,
                                readonly: false,
                            }
                        }
                        None if mount.required => return Err(StepError::MissingSsh { id }),
                        None => continue,
                    }
                }
            };
            points.push(spec.target().trim_start_matches('/').to_string());
            specs.push(spec);
        }
        Ok(RunMounts {
            specs,
            points,
            ssh_socket,
            leases,
        })
    }
}

/// The sandbox mounts of a RUN, the mount points its layer must drop, where an ssh agent
/// socket is mounted, and the cache directories it holds until the command ends.
struct RunMounts {
    specs: Vec<MountSpec>,
    points: Vec<String>,
    ssh_socket: Option<String>,
    leases: Vec<CacheMountLease>,
}

/// A RUN ready to execute.
struct RunPlan {
    key: CacheKey,
    argv: Vec<String>,
    env: Vec<String>,
    user: String,
    workdir: String,
    network: NetworkMode,
    mounts: Vec<StepMount>,
}

/// The argv of a RUN: exec form as is; shell form through `shell`, heredoc bodies in place
/// (a command that is a heredoc alone runs the body as the script).
pub(crate) fn command_argv(
    command: &CommandLine,
    heredocs: &[crate::syntax::Heredoc],
    shell: &[String],
) -> Vec<String> {
    let text = match command {
        CommandLine::Exec(words) => return words.clone(),
        CommandLine::Shell(text) => text,
    };
    let script = match heredocs {
        [only] if is_lone_marker(text, only) => only.body(),
        [] => text.clone(),
        docs => {
            let mut script = text.clone();
            for doc in docs {
                script.push('\n');
                script.push_str(&doc.body());
                if !script.ends_with('\n') {
                    script.push('\n');
                }
                script.push_str(&doc.name);
            }
            script
        }
    };
    let mut argv = shell.to_vec();
    argv.push(script);
    argv
}

/// True when the command text is nothing but the heredoc's marker (`<<EOF`, `<<-"EOF"`).
fn is_lone_marker(text: &str, doc: &crate::syntax::Heredoc) -> bool {
    let marker = text
        .trim()
        .trim_start_matches("<<")
        .trim_start_matches('-')
        .trim_matches(|c| c == '"' || c == '\'');
    text.trim().starts_with("<<") && marker == doc.name
}

/// The environment of a RUN: the image's `Env`, then each in-scope build arg with a value:
/// added when `Env` lacks it, replacing the `Env` value when the ARG was declared after the
/// ENV of that name (`args_over_env`), as BuildKit does.
pub(crate) fn run_env(
    config: &ImageConfig,
    step: &Step,
    args_over_env: &BTreeSet<String>,
) -> Vec<String> {
    let mut env: Vec<String> = config.config.env.clone().unwrap_or_default();
    for (name, value) in &step.args {
        let Some(value) = value else { continue };
        let present = env
            .iter()
            .any(|entry| entry.split('=').next() == Some(name.as_str()));
        if !present || args_over_env.contains(name) {
            config::set_env(&mut env, name, value);
        }
    }
    env
}

/// A mount as its cache key sees it: every option, in a fixed order.
fn mount_text(mount: &StepMount) -> String {
    let m = &mount.mount;
    format!(
        "type={:?},from={:?},source={:?},target={:?},ro={},id={:?},sharing={:?},mode={:?},uid={:?},gid={:?},size={:?},required={},env={:?},src={:?}",
        m.kind, m.from, m.source, m.target, m.read_only, m.id, m.sharing, m.mode, m.uid, m.gid, m.size, m.required, m.env, mount.source
    )
}

/// Writes a secret where only the sandbox reads it.
fn write_private(path: &Path, value: &[u8], mode: u32) -> Result<(), StepError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| StepError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(io)?;
    std::io::Write::write_all(&mut file, value).map_err(io)
}

/// Splits a command's output into lines for progress, keeping all of them for the log.
struct Lines<F: FnMut(String)> {
    emit: F,
    partial: [Vec<u8>; 2],
    all: Vec<String>,
}

impl<F: FnMut(String)> Lines<F> {
    fn new(emit: F) -> Self {
        Lines {
            emit,
            partial: [Vec::new(), Vec::new()],
            all: Vec::new(),
        }
    }

    fn push(&mut self, stream: Stream, bytes: &[u8]) {
        let slot = match stream {
            Stream::Stdout => 0,
            Stream::Stderr => 1,
        };
        self.partial[slot].extend_from_slice(bytes);
        while let Some(end) = self.partial[slot].iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.partial[slot].drain(..=end).collect();
            let text = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
            self.all.push(text.clone());
            (self.emit)(text);
        }
    }

    fn finish(mut self) -> Vec<String> {
        for slot in 0..2 {
            if !self.partial[slot].is_empty() {
                let text = String::from_utf8_lossy(&self.partial[slot]).into_owned();
                self.all.push(text.clone());
                (self.emit)(text);
            }
        }
        self.all
    }
}

/// Lays the subtree `source` of `view` out at `dir` for a bind mount: hard links to the
/// snapshot files for a read-only mount (the snapshot cannot be written through a read-only
/// bind), copies for a writable one (whose writes are thrown away with `dir`).
fn materialize(
    view: &layer::RootfsView,
    source: &str,
    dir: &Path,
    writable: bool,
) -> Result<(), StepError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| StepError::Io { path, source }
    };
    let top = view
        .lookup(source, layer::Follow::All)?
        .map(|found| found.path)
        .unwrap_or_else(|| "/".to_string());
    for found in view.walk(&top)? {
        let relative = found
            .path
            .strip_prefix(top.trim_end_matches('/'))
            .unwrap_or(&found.path)
            .trim_start_matches('/');
        let dest = match relative.is_empty() {
            true => dir.to_path_buf(),
            false => dir.join(relative),
        };
        match found.metadata.kind {
            layer::FileKind::Dir => std::fs::create_dir_all(&dest).map_err(io(&dest))?,
            layer::FileKind::Symlink => {
                let target = found.metadata.link_target.clone().unwrap_or_default();
                std::os::unix::fs::symlink(target, &dest).map_err(io(&dest))?
            }
            layer::FileKind::File if writable => std::fs::copy(&found.host_path, &dest)
                .map(|_| ())
                .map_err(io(&dest))?,
            layer::FileKind::File => {
                std::fs::hard_link(&found.host_path, &dest).map_err(io(&dest))?
            }
            // Devices, fifos and sockets are not worth a bind mount's trouble.
            _ => {}
        }
    }
    Ok(())
}
