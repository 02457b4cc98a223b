//! The sandbox RUN steps execute in: kiln's own container runtime, no runc or daemon.
//!
//! Consumes a [`RunSpec`] (plain data: argv, env, cwd, ids, overlay dirs, mounts, network);
//! produces the command's output, streamed to a callback, and its [`ExitStatus`]; the
//! command's changes are left in `spec.rootfs.upper` for the layer differ. Must never fork
//! the (multi-threaded) build process, never leave a mount or process behind, and never
//! print.
//!
//! How: [`run`] spawns the kiln executable again as `kiln __kiln-sandbox-init` ([`INIT_ARG`])
//! with a control socket on fd 3; that single-threaded init ([`init_main`]) does the
//! privileged sequence (see `init.rs`). The build process only writes the user-namespace id
//! maps when asked and reads the output pipes.
//!
//! Paths the sandbox may create inside the rootfs (so in `upper`), only when missing from the
//! merged tree, and removes again after the command when still empty: the directories
//! `/proc`, `/dev`, `/sys`, `/etc`, the empty files `/etc/hosts`, `/etc/resolv.conf`,
//! `/etc/hostname`, and each RUN mount's target (an empty directory, or an empty file for a
//! bind of a file) with its missing parent directories. Their parents keep their times, but
//! a parent that existed only in a lower layer stays copied up in `upper` (same metadata as
//! below). The working directory, when missing, is created and stays (a real change).
//! Mount points are resolved inside the rootfs (symlinks followed, `..` stopping at `/`), so
//! they may land at the resolved path rather than the literal one.
//!
//! Where the kernel refuses the overlay mount (EPERM, ENODEV, EINVAL, EOPNOTSUPP: no
//! overlayfs, or rootless before Linux 5.11), or `KILN_SANDBOX_ROOTFS=copy` ([`ROOTFS_ENV`])
//! is set, the snapshots are copied into the target instead and, after the command, the
//! changes are written into `upper` as overlayfs would have left them (whole new or changed
//! entries with their parent directories, 0/0 character-device whiteouts, no opaque
//! markers), and the target is emptied again: the caller cannot tell but by the time taken.

mod attach;
mod caps;
mod copy;
mod fdpass;
mod idmap;
mod init;
mod mounts;
mod spec;

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

pub use idmap::{enter_user_namespace, IdMapping};
pub use init::init_main;
pub use spec::{
    default_capabilities, Attach, EtcFiles, ExitStatus, IdSpec, MountSpec, NetworkMode, RootfsSpec,
    RunSpec, Step, Stream, DEFAULT_CAPABILITIES,
};

use spec::{Message, Request};

/// Set to `copy`, the sandbox copies the snapshots instead of mounting an overlay, as it does
/// by itself where the kernel refuses overlay mounts (slow; for tests and broken overlays).
pub const ROOTFS_ENV: &str = "KILN_SANDBOX_ROOTFS";

/// The hidden first argument that turns the kiln executable into the sandbox init.
pub const INIT_ARG: &str = "__kiln-sandbox-init";

/// Why a sandboxed command could not run (its own non-zero exit is not an error).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// The spec has no program.
    #[error("expected a command to run, found an empty argv")]
    EmptyArgv,
    /// A capability name is not one the kernel headers know.
    #[error("unknown capability `{name}`, expected a name such as CAP_CHOWN")]
    UnknownCapability {
        /// The name as given.
        name: String,
    },
    /// A user or group id does not exist in the rootless user namespace.
    #[error("id {id} is not mapped in the rootless user namespace (mapped: {mapped})")]
    UnmappedId {
        /// The uid or gid asked for.
        id: u32,
        /// The ids that are mapped, e.g. `0 only`.
        mapped: String,
    },
    /// The scratch directory (etc files, empty lower) could not be written.
    #[error("cannot prepare sandbox files in {path}: {source}")]
    Scratch {
        /// The path that failed.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The init process could not be started.
    #[error("cannot start the sandbox init {program}: {source}")]
    Spawn {
        /// The executable.
        program: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading the command's output or talking to the init failed.
    #[error("sandbox control channel failed: {source}")]
    Control {
        /// The cause.
        source: std::io::Error,
    },
    /// The init sent something that is not a control message.
    #[error("expected a sandbox control message, found {line:?}")]
    Protocol {
        /// The line received.
        line: String,
    },
    /// The spec could not be encoded (a path that is not UTF-8).
    #[error("cannot encode the sandbox spec: {0}")]
    Encode(#[source] serde_json::Error),
    /// Writing a user namespace map failed.
    #[error("cannot write the id map {path}: {source}")]
    IdMap {
        /// The map file or helper.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// newuidmap or newgidmap refused.
    #[error("{tool} failed (exit code {code:?}): {stderr}")]
    IdMapHelper {
        /// The helper.
        tool: PathBuf,
        /// Its exit code.
        code: Option<i32>,
        /// What it said.
        stderr: String,
    },
    /// A step of the privileged sequence failed.
    #[error("sandbox setup failed {step} ({subject}): {source}")]
    Setup {
        /// The step.
        step: Step,
        /// The path or name it worked on.
        subject: String,
        /// The errno.
        source: std::io::Error,
    },
    /// `argv[0]` is not an executable file in the spec's `PATH`.
    #[error("executable file `{program}` not found in $PATH")]
    NotFound {
        /// `argv[0]`.
        program: String,
    },
    /// The init ended without reporting (killed from outside).
    #[error("the sandbox init ended without a report (exit code {code:?}, signal {signal:?})")]
    InitDied {
        /// Its exit code.
        code: Option<i32>,
        /// The signal that killed it.
        signal: Option<i32>,
    },
}

/// What [`probe`] found works on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostSupport {
    /// The user namespace layout in use (`Host` when kiln runs as root).
    pub id_mapping: IdMapping,
    /// True when the root filesystem is an overlay mount; false when the kernel refused it
    /// (or `KILN_SANDBOX_ROOTFS=copy` asked) and snapshots are copied per command.
    pub overlay: bool,
}

/// Runs `spec` in a new sandbox through the kiln executable (`/proc/self/exe`), streaming the
/// command's output to `output` in chunks as they arrive (not split into lines). Returns how
/// the command ended; a non-zero exit is `Ok`.
pub fn run(
    spec: &RunSpec,
    output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<ExitStatus, SandboxError> {
    run_with(Path::new("/proc/self/exe"), spec, output)
}

/// [`run`] with another executable as the init: one whose `main` calls [`init_main`] when its
/// first argument is [`INIT_ARG`] (tests pass the kiln binary).
pub fn run_with(
    init: &Path,
    spec: &RunSpec,
    output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<ExitStatus, SandboxError> {
    execute(init, spec, false, output).map(|outcome| outcome.status)
}

/// Runs `spec` for `kiln run` (see [`Attach`]): the command gets the caller's standard
/// output and error as they are (so they stay separate), its standard input when
/// `attach.stdin`, or a pseudo-terminal the caller relays when `attach.tty`; SIGHUP, SIGINT,
/// SIGQUIT, SIGUSR1 and SIGUSR2 sent to the caller are passed on, SIGTERM as
/// `attach.stop_signal`, and the terminal's size follows the caller's. Pid 1 in the sandbox
/// is a reaper, not the command. Returns how the command ended; a signal that killed it comes
/// back as code 128 + signal.
///
/// It returns as soon as the command's status is known: the sandbox's namespaces, and the
/// overlay mounted in them, finish going away a few milliseconds later (a thread reaps the
/// init); nothing of them is ever visible outside the sandbox, and the overlay's directories
/// may already be removed.
///
/// The calling thread blocks those signals while it runs (and restores its mask after): call
/// it from the main thread of a process that has no other threads, or block them in every
/// thread first, so that none is delivered elsewhere.
pub fn run_attached(spec: &RunSpec, attach: &Attach) -> Result<ExitStatus, SandboxError> {
    run_attached_with(Path::new("/proc/self/exe"), spec, attach)
}

/// [`run_attached`] with another executable as the init (see [`run_with`]).
pub fn run_attached_with(
    init: &Path,
    spec: &RunSpec,
    attach: &Attach,
) -> Result<ExitStatus, SandboxError> {
    let (mapping, _scratch, request) = prepare(spec, false, Some(*attach))?;
    // Blocked before the spawn, so a signal that arrives while the sandbox starts waits for
    // the relay instead of killing the caller.
    let signals = attach::Signals::block().map_err(|source| SandboxError::Control { source })?;
    let stdin = match attach.stdin && !attach.tty {
        true => Stdio::inherit(),
        false => Stdio::null(),
    };
    let stdio = [stdin, Stdio::inherit(), Stdio::inherit()];
    let (guard, ours) = spawn_init(init, &request, stdio, true)?;
    let pid = guard.0.id();
    let report = attach::relay(&ours, &signals, attach, pid, &mut |message| match message {
        Message::Unshared => maps_written(&mapping, pid, &ours),
        _ => Ok(()),
    })?;
    drop(signals);
    match report.exited {
        Some(status) if report.failure.is_none() => {
            guard.reap_in_background();
            Ok(status)
        }
        _ => conclude(guard, report).map(|outcome| outcome.status),
    }
}

/// Copies the snapshot directories `lower` (lowest first, in overlay format) into the empty
/// directory `target` with each one's whiteouts and opaque directories applied: the root
/// filesystem a sandbox over them would see, as plain files (for an OCI runtime bundle).
///
/// # Errors
/// I/O errors; `target` may then hold part of the tree.
pub fn flatten(lower: &[PathBuf], target: &Path) -> std::io::Result<()> {
    copy::merge(lower, target).map(drop)
}

/// Sets up a complete sandbox over an empty root filesystem without running anything: `Ok`
/// when namespaces, id maps, overlay and every mount work here.
pub fn probe() -> Result<HostSupport, SandboxError> {
    probe_with(Path::new("/proc/self/exe"))
}

/// [`probe`] with another executable as the init (see [`run_with`]).
pub fn probe_with(init: &Path) -> Result<HostSupport, SandboxError> {
    let dir = tempfile::tempdir().map_err(|source| SandboxError::Scratch {
        path: std::env::temp_dir(),
        source,
    })?;
    let mut paths = Vec::new();
    for name in ["upper", "work", "target"] {
        let path = dir.path().join(name);
        std::fs::create_dir(&path).map_err(|source| SandboxError::Scratch {
            path: path.clone(),
            source,
        })?;
        paths.push(path);
    }
    let [upper, work, target] =
        <[PathBuf; 3]>::try_from(paths).map_err(|_| SandboxError::EmptyArgv)?;
    let spec = RunSpec {
        argv: vec!["/probe".into()],
        env: Vec::new(),
        cwd: "/".into(),
        user: IdSpec {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
        },
        hostname: "probe".into(),
        rootfs: RootfsSpec {
            lower: Vec::new(),
            upper,
            work,
            target,
            // A volatile mount leaves mode-000 directories in the work dir, which the temp
            // dir's removal could not enter without root; the probe keeps nothing anyway.
            volatile: false,
        },
        mounts: Vec::new(),
        network: NetworkMode::None,
        etc: EtcFiles {
            hosts: String::new(),
            resolv_conf: String::new(),
            hostname: String::new(),
        },
        capabilities: default_capabilities(),
    };
    let outcome = execute(init, &spec, true, &mut |_, _| {})?;
    Ok(HostSupport {
        id_mapping: IdMapping::detect(),
        overlay: !outcome.copied,
    })
}

/// Kills and reaps the init if `execute` leaves early; the pid namespace and every mount go
/// with it.
struct InitGuard(Child);

impl InitGuard {
    /// Lets the init finish exiting on its own, reaped by a thread, so the caller need not
    /// wait for its namespaces (and the overlay in them) to be torn down.
    fn reap_in_background(self) {
        let pid = self.0.id() as libc::pid_t;
        // The attached init's standard streams are inherited or null, so the `Child` owns no
        // pipe that forgetting it would leak; its Drop (kill and wait) must not run.
        std::mem::forget(self);
        std::thread::spawn(move || {
            // SAFETY: waitpid on our own child; the status is not wanted.
            unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) }
        });
    }
}

impl Drop for InitGuard {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
        }
        let _ = self.0.wait();
    }
}

fn execute(
    init: &Path,
    spec: &RunSpec,
    probe_only: bool,
    output: &mut dyn FnMut(Stream, &[u8]),
) -> Result<Outcome, SandboxError> {
    let (mapping, _scratch, request) = prepare(spec, probe_only, None)?;
    let stdio = [Stdio::null(), Stdio::piped(), Stdio::piped()];
    let (mut guard, ours) = spawn_init(init, &request, stdio, false)?;
    let pid = guard.0.id();
    let stdout = guard.0.stdout.take();
    let stderr = guard.0.stderr.take();
    let report = pump(
        &ours,
        stdout,
        stderr,
        output,
        &mut |message| match message {
            Message::Unshared => maps_written(&mapping, pid, &ours),
            _ => Ok(()),
        },
    )?;
    conclude(guard, report)
}

/// Checks `spec`, picks the id mapping and writes the scratch files (kept until the returned
/// directory is dropped, after the init is done with them), and builds the request.
fn prepare(
    spec: &RunSpec,
    probe_only: bool,
    attach: Option<Attach>,
) -> Result<(IdMapping, tempfile::TempDir, Request), SandboxError> {
    let mapping = check_spec(spec)?;
    let scratch = prepare_scratch(spec)?;
    let request = Request {
        spec: spec.clone(),
        scratch: scratch.path().to_path_buf(),
        user_namespace: mapping.needs_user_namespace(),
        unprivileged: !mapping.privileged(),
        single_id: matches!(mapping, IdMapping::Single { .. }),
        probe_only,
        force_copy: force_copy(),
        attach,
        console_size: attach
            .filter(|attach| attach.tty)
            .and_then(|_| attach::caller_size())
            .map(|size| (size.ws_row, size.ws_col)),
    };
    Ok((mapping, scratch, request))
}

/// True when `KILN_SANDBOX_ROOTFS=copy` asks for copied snapshots.
fn force_copy() -> bool {
    std::env::var_os(ROOTFS_ENV).is_some_and(|v| v == "copy")
}

/// Spawns the init with its standard streams `stdio` and the control socket on fd 3, and
/// sends it `request`. With `own_group` the init gets a process group of its own, so that a
/// terminal's Ctrl-C reaches only the caller, which passes it on once.
fn spawn_init(
    init: &Path,
    request: &Request,
    stdio: [Stdio; 3],
    own_group: bool,
) -> Result<(InitGuard, UnixStream), SandboxError> {
    let mut line = serde_json::to_vec(request).map_err(SandboxError::Encode)?;
    line.push(b'\n');
    let (ours, theirs) = UnixStream::pair().map_err(|source| SandboxError::Control { source })?;
    let theirs_fd = theirs.as_raw_fd();
    let mut command = Command::new(init);
    let [stdin, stdout, stderr] = stdio;
    command
        .arg(INIT_ARG)
        .env_clear()
        .stdin(stdin)
        .stdout(stdout)
        .stderr(stderr);
    if own_group {
        command.process_group(0);
    }
    // SAFETY: between fork and exec only async-signal-safe dup2/fcntl run. dup2 onto fd 3
    // clears close-on-exec; when the socket already is fd 3, clear it by hand.
    unsafe {
        command.pre_exec(move || {
            if theirs_fd == init::CONTROL_FD {
                libc::fcntl(theirs_fd, libc::F_SETFD, 0);
            } else if libc::dup2(theirs_fd, init::CONTROL_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let child = command.spawn().map_err(|source| SandboxError::Spawn {
        program: init.to_path_buf(),
        source,
    })?;
    drop(theirs);
    let guard = InitGuard(child);
    (&ours)
        .write_all(&line)
        .map_err(|source| SandboxError::Control { source })?;
    Ok((guard, ours))
}

/// Writes the id maps of the init `pid` and tells it so.
fn maps_written(mapping: &IdMapping, pid: u32, control: &UnixStream) -> Result<(), SandboxError> {
    mapping.write(pid)?;
    let mut reply = serde_json::to_vec(&Message::MapsWritten).map_err(SandboxError::Encode)?;
    reply.push(b'\n');
    (&*control)
        .write_all(&reply)
        .map_err(|source| SandboxError::Control { source })
}

/// Waits for the init and turns its report into the outcome.
fn conclude(mut guard: InitGuard, report: Report) -> Result<Outcome, SandboxError> {
    let status = guard
        .0
        .wait()
        .map_err(|source| SandboxError::Control { source })?;
    match report {
        Report {
            failure: Some(failure),
            ..
        } => Err(failure_error(failure)),
        Report {
            exited: Some(status),
            copied,
            ..
        } => Ok(Outcome { status, copied }),
        _ => {
            use std::os::unix::process::ExitStatusExt;
            Err(SandboxError::InitDied {
                code: status.code(),
                signal: status.signal(),
            })
        }
    }
}

/// Validates what can be checked before spawning and picks the id mapping.
fn check_spec(spec: &RunSpec) -> Result<IdMapping, SandboxError> {
    if spec.argv.is_empty() {
        return Err(SandboxError::EmptyArgv);
    }
    caps::parse_set(&spec.capabilities).map_err(|name| SandboxError::UnknownCapability { name })?;
    let mapping = IdMapping::detect();
    let user = &spec.user;
    let ids = [user.uid, user.gid]
        .into_iter()
        .chain(user.additional_gids.iter().copied());
    for id in ids {
        if !mapping.maps(id) {
            let mapped = mapping.describe();
            return Err(SandboxError::UnmappedId { id, mapped });
        }
    }
    Ok(mapping)
}

/// A temp dir beside the rootfs target with the `/etc` files and an empty lower directory.
fn prepare_scratch(spec: &RunSpec) -> Result<tempfile::TempDir, SandboxError> {
    let parent = spec
        .rootfs
        .target
        .parent()
        .map_or_else(std::env::temp_dir, Path::to_path_buf);
    let scratch = tempfile::Builder::new()
        .prefix("sandbox-")
        .tempdir_in(&parent)
        .or_else(|_| tempfile::Builder::new().prefix("kiln-sandbox-").tempdir())
        .map_err(|source| SandboxError::Scratch {
            path: parent,
            source,
        })?;
    let files = [
        ("hosts", &spec.etc.hosts),
        ("resolv.conf", &spec.etc.resolv_conf),
        ("hostname", &spec.etc.hostname),
    ];
    for (name, text) in files {
        let path = scratch.path().join(name);
        std::fs::write(&path, text).map_err(|source| SandboxError::Scratch { path, source })?;
    }
    let lower = scratch.path().join("lower");
    std::fs::create_dir(&lower).map_err(|source| SandboxError::Scratch {
        path: lower,
        source,
    })?;
    Ok(scratch)
}

/// The init's final words.
#[derive(Default)]
pub(crate) struct Report {
    pub(crate) failure: Option<spec::Failure>,
    pub(crate) exited: Option<ExitStatus>,
    copied: bool,
}

impl Report {
    /// Keeps what `message` says about the end (the first failure wins).
    fn note(&mut self, message: Message) {
        match message {
            Message::Failed(failure) => {
                self.failure.get_or_insert(failure);
            }
            Message::Exited(status) => self.exited = Some(status),
            Message::Copied => self.copied = true,
            Message::Unshared | Message::MapsWritten | Message::Console => {}
        }
    }
}

/// One control line as a message.
fn parse_message(line: &[u8]) -> Result<Message, SandboxError> {
    serde_json::from_slice(line).map_err(|_| SandboxError::Protocol {
        line: String::from_utf8_lossy(line).trim_end().to_string(),
    })
}

/// How a sandbox run went, as far as the build process needs to know.
struct Outcome {
    status: ExitStatus,
    /// The rootfs was copied, not overlay-mounted.
    copied: bool,
}

/// Reads stdout, stderr and the control socket until all three close, handing output chunks
/// to `output` and control messages to `on_message` (failures and the exit are collected).
fn pump(
    control: &UnixStream,
    mut stdout: Option<std::process::ChildStdout>,
    mut stderr: Option<std::process::ChildStderr>,
    output: &mut dyn FnMut(Stream, &[u8]),
    on_message: &mut dyn FnMut(&Message) -> Result<(), SandboxError>,
) -> Result<Report, SandboxError> {
    let control_error = |source| SandboxError::Control { source };
    let mut fds: [RawFd; 3] = [
        stdout.as_ref().map_or(-1, |s| s.as_raw_fd()),
        stderr.as_ref().map_or(-1, |s| s.as_raw_fd()),
        control.as_raw_fd(),
    ];
    let mut report = Report::default();
    let mut pending = Vec::new();
    let mut buffer = vec![0u8; 64 * 1024];
    while fds.iter().any(|fd| *fd >= 0) {
        let mut polls: Vec<libc::pollfd> = fds
            .iter()
            .map(|fd| libc::pollfd {
                fd: *fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfd of the given length; negative fds are ignored.
        let rc = unsafe { libc::poll(polls.as_mut_ptr(), polls.len() as libc::nfds_t, -1) };
        if rc < 0 {
            let error = std::io::Error::last_os_error();
            if error.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(control_error(error));
        }
        for (slot, poll) in polls.iter().enumerate() {
            if poll.fd < 0 || poll.revents == 0 {
                continue;
            }
            let read = match slot {
                0 => stdout.as_mut().map(|s| s.read(&mut buffer)),
                1 => stderr.as_mut().map(|s| s.read(&mut buffer)),
                _ => Some((&*control).read(&mut buffer)),
            };
            let count = match read {
                Some(Ok(count)) => count,
                Some(Err(error)) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Some(Err(error)) => return Err(control_error(error)),
                None => 0,
            };
            if count == 0 {
                fds[slot] = -1;
                continue;
            }
            let chunk = &buffer[..count];
            match slot {
                0 => output(Stream::Stdout, chunk),
                1 => output(Stream::Stderr, chunk),
                _ => {
                    pending.extend_from_slice(chunk);
                    while let Some(end) = pending.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = pending.drain(..=end).collect();
                        let message = parse_message(&line)?;
                        on_message(&message)?;
                        report.note(message);
                    }
                }
            }
        }
    }
    Ok(report)
}

fn failure_error(failure: spec::Failure) -> SandboxError {
    let source = std::io::Error::from_raw_os_error(failure.errno);
    match failure.step {
        Step::Lookup => SandboxError::NotFound {
            program: failure.subject,
        },
        step => SandboxError::Setup {
            step,
            subject: failure.subject,
            source,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(step: Step, errno: i32) -> spec::Failure {
        spec::Failure {
            step,
            subject: "x".into(),
            errno,
        }
    }

    #[test]
    fn failures_map_to_typed_errors() {
        let table = [
            (
                failure(Step::MountOverlay, libc::ENOENT),
                "sandbox setup failed mounting the overlay (x)",
            ),
            (
                failure(Step::Lookup, libc::ENOENT),
                "executable file `x` not found in $PATH",
            ),
            (
                failure(Step::PivotRoot, libc::EINVAL),
                "sandbox setup failed pivoting the root (x)",
            ),
        ];
        for (failure, want) in table {
            let got = failure_error(failure).to_string();
            assert!(got.starts_with(want), "{got}");
        }
    }
}
