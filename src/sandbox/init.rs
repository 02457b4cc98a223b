//! The re-executed side of the sandbox (`kiln __kiln-sandbox-init`): one thread that creates
//! the namespaces, forks the namespace's pid 1, mounts its root filesystem, drops privileges
//! and execs the command.
//!
//! Consumes a [`Request`] on the control socket (fd 3); produces [`Message`]s there and the
//! command's output on the inherited stdout/stderr. Must never print, never run in the
//! multi-threaded build process (it forks), and never leave a mount outside its own mount
//! namespaces: every mount below dies with them.
//!
//! Processes, by role:
//! - the *build process* (kiln, many threads) spawned us and writes our id maps;
//! - the *init* (this process, outside the new pid namespace) waits for pid 1 and reports;
//! - *pid 1* (forked by the init, first process of the new pid namespace) sets up the root
//!   filesystem and becomes the command, as with `docker run` without `--init`.

use std::ffi::CString;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use super::caps;
use super::copy;
use super::mounts::{self, PointKind, Stub};
use super::spec::{ExitStatus, Failure, Message, MountSpec, NetworkMode, Request, Step};

/// The control socket's descriptor in the init, set up by the build process before exec.
pub(crate) const CONTROL_FD: i32 = 3;

/// Docker's `PATH` when the image sets none (moby `oci.DefaultPathEnv`).
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Host devices bind-mounted into the sandbox's `/dev` (bind, not mknod: mknod is refused in a
/// user namespace, and a bind keeps the host's node).
const DEVICES: [&str; 6] = ["null", "zero", "full", "random", "urandom", "tty"];

/// A failed step: what, on which path or name, and the errno.
type StepResult<T> = Result<T, Failure>;

fn fail(step: Step, subject: impl AsRef<Path>, error: io::Error) -> Failure {
    Failure {
        step,
        subject: subject.as_ref().to_string_lossy().into_owned(),
        errno: error.raw_os_error().unwrap_or(libc::EIO),
    }
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn send(control: &UnixStream, message: &Message) {
    if let Ok(mut line) = serde_json::to_vec(message) {
        line.push(b'\n');
        // One write under PIPE_BUF-like sizes; if the build process is gone we die by
        // PR_SET_PDEATHSIG anyway, so a failed report has nowhere to go.
        let _ = (&*control).write_all(&line);
    }
}

fn receive(reader: &mut BufReader<&UnixStream>) -> Option<Message> {
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    serde_json::from_str(&line).ok()
}

/// prctl(2) PR_SET_PDEATHSIG: SIGKILL when the parent *thread* exits. The build thread that
/// spawned the init blocks in `run` until the init is gone, so this is kiln's death.
fn die_with_parent() {
    // SAFETY: prctl with integer arguments only.
    unsafe {
        libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )
    };
}

/// Runs the init and exits with the command's code (128 + signal when killed), or 127 when
/// the setup failed (the reason went to the build process).
pub fn init_main() -> ! {
    die_with_parent();
    close_inherited_descriptors();
    // SAFETY: fd 3 was dup2'd for us by the build process; we own it from here on.
    let control = unsafe { UnixStream::from_raw_fd(CONTROL_FD) };
    // SAFETY: fcntl on our own descriptor. The command must not inherit the socket.
    unsafe { libc::fcntl(CONTROL_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    let code = match init(&control) {
        Ok(status) => {
            send(&control, &Message::Exited(status));
            status
                .code
                .unwrap_or_else(|| 128 + status.signal.unwrap_or(0))
        }
        Err(failure) => {
            send(&control, &Message::Failed(failure));
            127
        }
    };
    std::process::exit(code)
}

/// Closes every descriptor above the control socket: whatever kiln's own parent left open
/// (a make jobserver pipe, a terminal) must not reach the command.
fn close_inherited_descriptors() {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    let fds: Vec<i32> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > CONTROL_FD)
        .collect();
    for fd in fds {
        // SAFETY: closing descriptors nothing in this process uses; the directory's own one
        // is already closed and answers EBADF.
        unsafe { libc::close(fd) };
    }
}

fn init(control: &UnixStream) -> StepResult<ExitStatus> {
    let mut reader = BufReader::new(control);
    let request: Request = receive_request(&mut reader)?;
    let spec = &request.spec;

    // 1. user_namespaces(7): unprivileged, the init first becomes root of a new user
    //    namespace (unshare(2) CLONE_NEWUSER). It owns every namespace created after, which is
    //    what lets it mount. Its ids map to nothing until the build process, outside, writes
    //    uid_map/gid_map (only a process in the parent namespace may map ranges, via the
    //    setuid newuidmap), so we ask and wait.
    if request.user_namespace {
        // SAFETY: unshare with flags only.
        check(unsafe { libc::unshare(libc::CLONE_NEWUSER) })
            .map_err(|e| fail(Step::UnshareUser, "", e))?;
        send(control, &Message::Unshared);
        if receive(&mut reader) != Some(Message::MapsWritten) {
            return Err(fail(
                Step::UnshareUser,
                "uid_map",
                io::Error::from_raw_os_error(libc::EPROTO),
            ));
        }
        // The credential change may clear the death signal (prctl(2)); set it again.
        die_with_parent();
    }

    // 2. unshare(2) the mount, pid, uts and ipc namespaces (and network for --network=none).
    //    CLONE_NEWPID only applies to children: the fork below is pid 1.
    let mut flags =
        libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    if spec.network == NetworkMode::None {
        flags |= libc::CLONE_NEWNET;
    }
    // SAFETY: unshare with flags only; this process has one thread.
    check(unsafe { libc::unshare(flags) }).map_err(|e| fail(Step::UnshareNamespaces, "", e))?;

    // 3. mount_namespaces(7): the copied mounts may still be shared with the host's peer
    //    groups; making them slaves (MS_SLAVE|MS_REC on /) stops anything we mount from
    //    propagating back, while host unmounts still reach us.
    make_slave()?;

    // 4. The overlay: snapshots below, the fresh upper on top, mounted on the target. Where
    //    the kernel refuses (no overlayfs, or none in a user namespace before Linux 5.11), the
    //    snapshots are copied into the target instead and the changes written into upper
    //    afterwards (copy.rs).
    let root = spec.rootfs.target.clone();
    let manifest = match request.force_copy {
        false => match mount_overlay(&request) {
            Ok(()) => None,
            Err(failure) if OVERLAY_UNAVAILABLE.contains(&failure.errno) => {
                send(control, &Message::Copied);
                Some(copy_rootfs(&request)?)
            }
            Err(failure) => return Err(failure),
        },
        true => {
            send(control, &Message::Copied);
            Some(copy_rootfs(&request)?)
        }
    };

    // 5. Mount points the image lacks are created now, in the init's namespace, so that the
    //    init can remove them again after the command (they would otherwise land in upper).
    let mut stubs = Vec::new();
    let plan = plan_mount_points(&request, &root, &mut stubs);
    let outcome = plan.and_then(|plan| run_pid1(control, &request, &root, &plan));
    mounts::remove_stubs(&mut stubs);
    let status = outcome?;
    if let Some(manifest) = manifest {
        copy::changes_into_upper(&manifest, &root, &spec.rootfs.upper)
            .map_err(|e| fail(Step::CopyRootfs, &spec.rootfs.upper, e))?;
        // The target is handed back empty, as after an overlay.
        copy::clear(&root).map_err(|e| fail(Step::CopyRootfs, &root, e))?;
    }
    Ok(status)
}

/// mount(2) errors that mean "no overlay here" rather than a bad option or path.
const OVERLAY_UNAVAILABLE: [i32; 4] = [libc::EPERM, libc::ENODEV, libc::EINVAL, libc::EOPNOTSUPP];

/// Merges the snapshots into the target directory and bind-mounts it onto itself, since
/// pivot_root(2) wants a mount point.
fn copy_rootfs(request: &Request) -> StepResult<copy::Manifest> {
    let rootfs = &request.spec.rootfs;
    let manifest = copy::merge(&rootfs.lower, &rootfs.target)
        .map_err(|e| fail(Step::CopyRootfs, &rootfs.target, e))?;
    mounts::mount(
        Some(&rootfs.target),
        &rootfs.target,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(|e| fail(Step::CopyRootfs, &rootfs.target, e))?;
    Ok(manifest)
}

/// MS_SLAVE|MS_REC on `/` of the current mount namespace.
fn make_slave() -> StepResult<()> {
    mounts::mount(
        None,
        Path::new("/"),
        None,
        libc::MS_SLAVE | libc::MS_REC,
        None,
    )
    .map_err(|e| fail(Step::MakeSlave, "/", e))
}

fn receive_request(reader: &mut BufReader<&UnixStream>) -> StepResult<Request> {
    let mut line = String::new();
    reader
        .read_line(&mut line)
        .map_err(|e| fail(Step::ReadRequest, "", e))?;
    serde_json::from_str(&line).map_err(|_| {
        fail(
            Step::ReadRequest,
            "",
            io::Error::from_raw_os_error(libc::EPROTO),
        )
    })
}

/// Mounts the overlay, `volatile` when the spec asks; kernels before 5.10 do not know that
/// option and say EINVAL, so the mount is then tried again without it.
fn mount_overlay(request: &Request) -> StepResult<()> {
    let volatile = request.spec.rootfs.volatile;
    match mount_overlay_with(request, volatile) {
        Err(failure) if volatile && failure.errno == libc::EINVAL => {
            mount_overlay_with(request, false)
        }
        result => result,
    }
}

fn mount_overlay_with(request: &Request, volatile: bool) -> StepResult<()> {
    let rootfs = &request.spec.rootfs;
    let empty = request.scratch.join("lower");
    let flags = mounts::OverlayFlags {
        userxattr: request.unprivileged,
        volatile,
    };
    let data = mounts::overlay_data(&rootfs.lower, &empty, &rootfs.upper, &rootfs.work, flags)
        .ok_or_else(|| {
            fail(
                Step::MountOverlay,
                &rootfs.target,
                io::Error::from_raw_os_error(libc::E2BIG),
            )
        })?;
    if let Some(dir) = &data.chdir {
        std::env::set_current_dir(dir).map_err(|e| fail(Step::MountOverlay, dir, e))?;
    }
    let result = mounts::mount(
        Some(Path::new("overlay")),
        &rootfs.target,
        Some("overlay"),
        0,
        Some(&data.data),
    );
    std::env::set_current_dir("/").map_err(|e| fail(Step::MountOverlay, "/", e))?;
    result.map_err(|e| fail(Step::MountOverlay, &rootfs.target, e))
}

/// Host paths (under the mounted rootfs) of every mount pid 1 makes.
struct MountPlan {
    proc: PathBuf,
    dev: PathBuf,
    sys: PathBuf,
    /// `(scratch file, target)` for hosts, resolv.conf, hostname.
    etc: Vec<(PathBuf, PathBuf)>,
    /// The RUN mounts with their resolved targets.
    run: Vec<(MountSpec, PathBuf)>,
}

fn plan_mount_points(
    request: &Request,
    root: &Path,
    stubs: &mut Vec<Stub>,
) -> StepResult<MountPlan> {
    let mut point = |inside: &str, kind| {
        mounts::mount_point(root, inside, kind, stubs)
            .map_err(|e| fail(Step::MountPoint, inside, e))
    };
    let proc = point("/proc", PointKind::Dir)?;
    let dev = point("/dev", PointKind::Dir)?;
    let sys = point("/sys", PointKind::Dir)?;
    let mut etc = Vec::new();
    for (file, inside) in [
        ("hosts", "/etc/hosts"),
        ("resolv.conf", "/etc/resolv.conf"),
        ("hostname", "/etc/hostname"),
    ] {
        // An empty hostname text means no /etc/hostname at all (a BuildKit RUN has none).
        if file == "hostname" && request.spec.etc.hostname.is_empty() {
            continue;
        }
        etc.push((request.scratch.join(file), point(inside, PointKind::File)?));
    }
    let mut run = Vec::new();
    for mount in &request.spec.mounts {
        run.push((mount.clone(), point(mount.target(), point_kind(mount))?));
    }
    Ok(MountPlan {
        proc,
        dev,
        sys,
        etc,
        run,
    })
}

/// A bind of anything but a directory needs a file to mount on; the rest a directory.
fn point_kind(mount: &MountSpec) -> PointKind {
    match mount {
        MountSpec::Bind { source, .. } if !source.is_dir() => PointKind::File,
        _ => PointKind::Dir,
    }
}

fn make_point(path: &Path, kind: PointKind) -> io::Result<()> {
    match (kind, path.parent()) {
        (PointKind::Dir, _) => std::fs::create_dir_all(path),
        (PointKind::File, Some(parent)) => {
            std::fs::create_dir_all(parent)?;
            std::fs::File::create(path).map(drop)
        }
        (PointKind::File, None) => Err(io::Error::from_raw_os_error(libc::EINVAL)),
    }
}

/// fork(2)s pid 1 and waits for it, reaping until it is gone. For `kiln run` the signals the
/// caller passes on are blocked first (so none is lost before pid 1 waits for them too) and
/// forwarded to pid 1 while waiting.
fn run_pid1(
    control: &UnixStream,
    request: &Request,
    root: &Path,
    plan: &MountPlan,
) -> StepResult<ExitStatus> {
    let forwarding = request.attach.map(|_| block_forwarded());
    // SAFETY: this process has one thread, so the child may do anything after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(fail(Step::Fork, "", io::Error::last_os_error()));
    }
    if pid == 0 {
        let code = match pid1(control, request, root, plan) {
            Ok(code) => code,
            Err(failure) => {
                send(control, &Message::Failed(failure));
                127
            }
        };
        // SAFETY: leave without running the init's destructors or flushing its buffers twice.
        unsafe { libc::_exit(code) };
    }
    let status = match forwarding {
        Some(set) => wait_forwarding(pid, &set, false),
        None => wait_for(pid),
    }
    .map_err(|e| fail(Step::Wait, "", e))?;
    Ok(decode_status(status))
}

/// waitpid(2) for `pid`, through EINTR.
fn wait_for(pid: libc::pid_t) -> io::Result<libc::c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid on our own child with a valid status pointer.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            return Ok(status);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::EINTR) {
            return Err(error);
        }
    }
}

fn decode_status(status: libc::c_int) -> ExitStatus {
    if libc::WIFSIGNALED(status) {
        ExitStatus {
            code: None,
            signal: Some(libc::WTERMSIG(status)),
        }
    } else {
        ExitStatus {
            code: Some(libc::WEXITSTATUS(status)),
            signal: None,
        }
    }
}

/// The signals `kiln run` passes on to the command, as `docker run`'s signal proxy does
/// (SIGWINCH is not among them: the caller sets the terminal size and the kernel signals the
/// terminal's foreground group itself; SIGKILL and SIGSTOP cannot be caught).
pub(crate) const FORWARDED: [libc::c_int; 6] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGQUIT,
    libc::SIGTERM,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// The signal set of [`FORWARDED`] plus `extra`.
pub(crate) fn forwarded_and(extra: libc::c_int) -> libc::sigset_t {
    // SAFETY: sigset operations on a zeroed set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in FORWARDED.iter().chain([&extra]) {
            libc::sigaddset(&mut set, *signal);
        }
        set
    }
}

/// Blocks [`FORWARDED`] and SIGCHLD in this (single-threaded) process and returns the set, for
/// sigwaitinfo(2). A blocked signal is queued even for a pid namespace's init, which drops
/// signals it has no handler for only when they are not blocked (pid_namespaces(7); kernel
/// `sig_ignored`). Each gets a no-op handler as well, so that holds on any kernel.
fn block_forwarded() -> libc::sigset_t {
    extern "C" fn ignore(_: libc::c_int) {}
    let set = forwarded_and(libc::SIGCHLD);
    // SAFETY: sigaction with a valid handler; sigprocmask with a set we own.
    unsafe {
        for signal in FORWARDED.iter().chain([&libc::SIGCHLD]) {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigaction(*signal, &action, std::ptr::null_mut());
        }
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Waits for `pid` with the signals of `set` blocked: each forwarded signal is sent on to
/// `pid`; on SIGCHLD every child that ended is reaped (any child when `reap_all`, the duty of
/// a pid namespace's init) until `pid` is among them. Returns its wait status.
fn wait_forwarding(
    pid: libc::pid_t,
    set: &libc::sigset_t,
    reap_all: bool,
) -> io::Result<libc::c_int> {
    let which = if reap_all { -1 } else { pid };
    loop {
        // Reap first: the child may have ended before its SIGCHLD was blocked for us.
        loop {
            let mut status = 0;
            // SAFETY: waitpid with a valid status pointer.
            let rc = unsafe { libc::waitpid(which, &mut status, libc::WNOHANG) };
            if rc == pid {
                return Ok(status);
            }
            if rc <= 0 {
                break;
            }
        }
        // SAFETY: sigwaitinfo on a valid set; no siginfo wanted.
        let signal = unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) };
        if signal < 0 {
            let error = io::Error::last_os_error();
            if error.raw_os_error() != Some(libc::EINTR) {
                return Err(error);
            }
        } else if signal != libc::SIGCHLD {
            // SAFETY: kill with a pid we forked and a signal number the kernel gave us.
            unsafe { libc::kill(pid, signal) };
        }
    }
}

/// pid 1 of the new pid namespace: the mounts, the pivot, the identity, then execve(2); for
/// `kiln run` it forks the command and stays as its reaper instead. Returns only on failure,
/// or with the exit code to leave with (a probe's 0, the reaper's report of the command).
fn pid1(control: &UnixStream, request: &Request, root: &Path, plan: &MountPlan) -> StepResult<i32> {
    let spec = &request.spec;
    die_with_parent();
    // SAFETY: umask with a constant; Docker's default for the command.
    unsafe { libc::umask(0o022) };
    // A session and process group of its own (setsid(2)): process groups span pid
    // namespaces, so `kill 0` in the command would otherwise signal kiln, and a terminal's
    // Ctrl-C reaches the command only through the init's death (PR_SET_PDEATHSIG).
    // SAFETY: setsid takes no arguments; a forked child is never a group leader.
    check(unsafe { libc::setsid() }).map_err(|e| fail(Step::Fork, "setsid", e))?;

    // 6. A mount namespace of its own (unshare(2) CLONE_NEWNS) so that pivot_root below does
    //    not move the init's root too (pivot_root(2) moves every process of the namespace
    //    whose root is the old root); slaves again for the same reason as step 3.
    // SAFETY: unshare with flags only.
    check(unsafe { libc::unshare(libc::CLONE_NEWNS) })
        .map_err(|e| fail(Step::UnshareNamespaces, "", e))?;
    make_slave()?;

    // 7. The kernel filesystems (with the host-wide knobs masked or read-only) and the files
    //    that must never reach a layer.
    mount_kernel_filesystems(request, plan)?;
    mask_kernel_paths(plan)?;
    for (source, target) in &plan.etc {
        bind(source, target, true, false)?;
    }
    for (mount, target) in &plan.run {
        // A mount point under an earlier RUN mount was hidden by it: make it there (inside
        // that mount, not in the rootfs), as runc does at mount time.
        if std::fs::symlink_metadata(target).is_err() {
            make_point(target, point_kind(mount)).map_err(|e| fail(Step::MountPoint, target, e))?;
        }
        match mount {
            MountSpec::Bind {
                source, readonly, ..
            } => bind(source, target, *readonly, true)?,
            MountSpec::Tmpfs { size, .. } => {
                let data = match size {
                    Some(size) => format!("mode=1777,size={size}"),
                    None => "mode=1777".to_string(),
                };
                mounts::mount(
                    Some(Path::new("tmpfs")),
                    target,
                    Some("tmpfs"),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    Some(&data),
                )
                .map_err(|e| fail(Step::Mount, target, e))?;
            }
        }
    }

    // `kiln run --read-only`: the working directory is made first (docker makes it when it
    // creates the container), then a bind remount of the root mount alone: /proc, /dev,
    // /sys, the /etc files and the volumes are mounts of their own and keep their flags.
    if request.attach.is_some_and(|attach| attach.read_only) {
        let cwd = mounts::resolve_in_root(root, &request.spec.cwd)
            .map_err(|e| fail(Step::Cwd, &request.spec.cwd, e))?;
        std::fs::create_dir_all(&cwd).map_err(|e| fail(Step::Cwd, &cwd, e))?;
        mounts::remount_readonly(root).map_err(|e| fail(Step::ReadOnly, root, e))?;
    }

    // 8. pivot_root(2) with new_root = put_old = "." (the documented trick): the old root ends
    //    up stacked on the new one, and umount2(MNT_DETACH) takes it, with every host mount
    //    under it, out of this namespace. The old root is a slave (step 6), so the detach does
    //    not propagate to the host.
    std::env::set_current_dir(root).map_err(|e| fail(Step::PivotRoot, root, e))?;
    // SAFETY: pivot_root with two NUL-terminated strings.
    check(
        unsafe { libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) } as libc::c_int,
    )
    .map_err(|e| fail(Step::PivotRoot, root, e))?;
    // SAFETY: umount2 with a NUL-terminated string.
    check(unsafe { libc::umount2(c".".as_ptr(), libc::MNT_DETACH) })
        .map_err(|e| fail(Step::PivotRoot, "/", e))?;
    std::env::set_current_dir("/").map_err(|e| fail(Step::PivotRoot, "/", e))?;

    // 9. The uts namespace's hostname, and lo for a network namespace of our own.
    // SAFETY: sethostname with a pointer and length of a live buffer.
    check(unsafe { libc::sethostname(spec.hostname.as_ptr().cast(), spec.hostname.len()) })
        .map_err(|e| fail(Step::Hostname, &spec.hostname, e))?;
    if spec.network == NetworkMode::None {
        loopback_up().map_err(|e| fail(Step::Loopback, "lo", e))?;
    }

    // 10. The working directory, created as root 0755 when missing (as runc does).
    std::fs::create_dir_all(&spec.cwd).map_err(|e| fail(Step::Cwd, &spec.cwd, e))?;
    std::env::set_current_dir(&spec.cwd).map_err(|e| fail(Step::Cwd, &spec.cwd, e))?;

    // 11. capabilities(7): bounding, ambient, permitted and effective sets cut to the spec's
    //     list while still uid 0 (CAP_SETPCAP is needed for the bounding set).
    let keep = caps::parse_set(&spec.capabilities).map_err(|name| {
        fail(
            Step::Capabilities,
            name,
            io::Error::from_raw_os_error(libc::EINVAL),
        )
    })?;
    caps::restrict(keep).map_err(|e| fail(Step::Capabilities, "", e))?;

    if let Some(attach) = request.attach {
        return reaper(control, request, attach);
    }
    if request.probe_only {
        become_user(request)?;
        return Ok(0);
    }
    command(request, None)?;
    Ok(127)
}

/// Steps 12 and 13: the command's identity, then no new privileges.
fn become_user(request: &Request) -> StepResult<()> {
    let spec = &request.spec;
    // 12. The identity: groups first (setgroups needs CAP_SETGID, which setuid would drop).
    //     With a single-id map setgroups is denied (user_namespaces(7)); the caller's groups
    //     then stay, unmapped, as in any rootless container.
    set_identity(request).map_err(|e| fail(Step::Credentials, spec.user.uid.to_string(), e))?;

    // 13. prctl(2) PR_SET_NO_NEW_PRIVS: no setuid bit or file capability grants anything from
    //     here on. The credential change cleared the death signal; set it again.
    // SAFETY: prctl with integer arguments only.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
        .map_err(|e| fail(Step::Capabilities, "no_new_privs", e))?;
    die_with_parent();
    Ok(())
}

/// Becomes the command: identity, terminal, signals, execve(2). Returns only on failure.
fn command(request: &Request, console: Option<&OwnedFd>) -> StepResult<()> {
    let spec = &request.spec;
    if let Some(slave) = console {
        take_terminal(slave, spec.user.uid).map_err(|e| fail(Step::Console, "/dev/pts", e))?;
    }
    become_user(request)?;

    // 14. execve(2) with exactly the spec's environment. Nothing of the host stays reachable:
    //     the only descriptors are 0-2 (the init closed every other inherited one and the
    //     control socket is close-on-exec; CVE-2024-21626 was a leaked host directory
    //     descriptor), the cwd is inside the new root, and the kiln executable that did the
    //     setup is replaced, not left as a process the command could open through
    //     /proc/PID/exe (CVE-2019-5736): the init stays outside the command's pid namespace,
    //     and `kiln run`'s reaper is not dumpable (see `reaper`).
    //     Ignored signals stay ignored across execve (signal(7)): the Rust runtime ignores
    //     SIGPIPE and kiln's own parent may have ignored others, so every disposition goes
    //     back to SIG_DFL and the mask is emptied, as in a Docker container (`yes | head`
    //     must end `yes` by SIGPIPE).
    reset_signals();
    exec(&spec.argv, &spec.env)
}

/// `kiln run`'s pid 1, as `docker run --init` (tini) does it: allocates the terminal when
/// asked, forks the command, passes the caller's signals on to it, reaps every process the
/// namespace orphans, and ends when the command ends, with its status (128 + signal when
/// killed); the kernel then kills whatever is left in the pid namespace.
fn reaper(control: &UnixStream, request: &Request, attach: super::spec::Attach) -> StepResult<i32> {
    let console = match attach.tty {
        true => Some(
            open_console(control, request.console_size)
                .map_err(|e| fail(Step::Console, "/dev/pts/ptmx", e))?,
        ),
        false => None,
    };
    // SAFETY: this process has one thread, so the child may do anything after fork.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(fail(Step::Fork, "", io::Error::last_os_error()));
    }
    if pid == 0 {
        if let Err(failure) = command(request, console.as_ref()) {
            send(control, &Message::Failed(failure));
        }
        // SAFETY: leave without running destructors of the reaper's state.
        unsafe { libc::_exit(127) };
    }
    drop(console);
    // prctl(2) PR_SET_DUMPABLE 0: processes of the container cannot open this one's
    // /proc/1/exe (the kiln binary), fd or mem without CAP_SYS_PTRACE, which the default set
    // lacks (ptrace(2), "ptrace access mode checking"; runc's defence for CVE-2019-5736).
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    // The mask and handlers came from the init (`block_forwarded` before its fork).
    let set = forwarded_and(libc::SIGCHLD);
    let status = wait_forwarding(pid, &set, true).map_err(|e| fail(Step::Wait, "", e))?;
    let status = decode_status(status);
    Ok(status
        .code
        .unwrap_or_else(|| 128 + status.signal.unwrap_or(0)))
}

/// Opens a new pseudo-terminal in the sandbox's devpts (pty(7)) at the caller's `size`, sends
/// the master to the caller over the control socket and returns the slave, which becomes
/// `/dev/pts/0` of this devpts instance as in a Docker container.
fn open_console(control: &UnixStream, size: Option<(u16, u16)>) -> io::Result<OwnedFd> {
    let open = |path: &std::ffi::CStr| -> io::Result<OwnedFd> {
        // SAFETY: open with a NUL-terminated path; the descriptor is owned at once.
        let fd = unsafe {
            libc::open(
                path.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: a fresh descriptor nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    let master = open(c"/dev/pts/ptmx")?;
    let mut unlock: libc::c_int = 0;
    let mut number: libc::c_uint = 0;
    // SAFETY: TIOCSPTLCK reads an int, TIOCGPTN writes an unsigned int (ioctl_tty(2)).
    unsafe {
        check(libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCSPTLCK,
            &mut unlock,
        ))?;
        check(libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut number))?;
    }
    let name = CString::new(format!("/dev/pts/{number}"))
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let slave = open(&name)?;
    if let Some((rows, cols)) = size {
        let size = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        super::attach::set_size(master.as_raw_fd(), &size);
    }
    super::fdpass::send_with_fd(control, &Message::Console, master.as_raw_fd())?;
    Ok(slave)
}

/// Makes `slave` the standard streams and controlling terminal of a new session (setsid(2),
/// TIOCSCTTY), owned by the command's user as runc leaves it.
fn take_terminal(slave: &OwnedFd, uid: u32) -> io::Result<()> {
    // SAFETY: plain syscalls on a descriptor we own.
    unsafe {
        check(libc::setsid())?;
        check(libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0))?;
        // Best effort: an id the user namespace lacks leaves the terminal root's, which
        // only matters to tools that check its owner.
        libc::fchown(slave.as_raw_fd(), uid, u32::MAX);
        for fd in 0..3 {
            check(libc::dup2(slave.as_raw_fd(), fd))?;
        }
    }
    Ok(())
}

/// rt_sigaction(2) straight to the kernel, since libc refuses its reserved real-time signals:
/// an all-zero kernel `struct sigaction` is SIG_DFL with no flags and an empty mask on every
/// architecture. SIGKILL and SIGSTOP refuse, which is fine.
fn reset_signals() {
    let default = [0u64; 4];
    for signal in 1..=64 {
        // SAFETY: a zeroed sigaction of at least the kernel's size; no old action wanted.
        unsafe {
            libc::syscall(
                libc::SYS_rt_sigaction,
                signal,
                default.as_ptr(),
                std::ptr::null_mut::<u8>(),
                8usize,
            )
        };
    }
    // SAFETY: sigprocmask with an emptied set.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

fn mount_kernel_filesystems(request: &Request, plan: &MountPlan) -> StepResult<()> {
    let m =
        |source: &str, target: &Path, fstype: &str, flags: libc::c_ulong, data: Option<&str>| {
            mounts::mount(Some(Path::new(source)), target, Some(fstype), flags, data)
                .map_err(|e| fail(Step::Mount, target, e))
        };
    let hardened = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    // A proc of the new pid namespace: it shows pid 1 = the command.
    m("proc", &plan.proc, "proc", hardened, None)?;
    m(
        "tmpfs",
        &plan.dev,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_STRICTATIME,
        Some("mode=755,size=65536k"),
    )?;
    for device in DEVICES {
        let target = plan.dev.join(device);
        std::fs::File::create(&target).map_err(|e| fail(Step::MountPoint, &target, e))?;
        bind(&Path::new("/dev").join(device), &target, false, false)?;
    }
    let pts = plan.dev.join("pts");
    std::fs::create_dir(&pts).map_err(|e| fail(Step::MountPoint, &pts, e))?;
    let pts_data = if request.single_id {
        "newinstance,ptmxmode=0666,mode=0620"
    } else {
        "newinstance,ptmxmode=0666,mode=0620,gid=5"
    };
    m(
        "devpts",
        &pts,
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(pts_data),
    )?;
    let shm = plan.dev.join("shm");
    std::fs::create_dir(&shm).map_err(|e| fail(Step::MountPoint, &shm, e))?;
    m(
        "shm",
        &shm,
        "tmpfs",
        hardened,
        Some("mode=1777,size=65536k"),
    )?;
    let links = [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ];
    for (name, to) in links {
        let link = plan.dev.join(name);
        std::os::unix::fs::symlink(to, &link).map_err(|e| fail(Step::MountPoint, &link, e))?;
    }
    // sysfs may only be mounted by the owner of the network namespace; with the host's
    // network and a user namespace, bind the host's instead. Read-only either way.
    if m(
        "sysfs",
        &plan.sys,
        "sysfs",
        hardened | libc::MS_RDONLY,
        None,
    )
    .is_err()
    {
        bind(Path::new("/sys"), &plan.sys, true, true)?;
    }
    Ok(())
}

/// containerd's default masked paths (BuildKit's executor uses them): host information and
/// knobs a container has no business reading, hidden under /dev/null or an empty read-only
/// tmpfs.
const MASKED: [(&str, &str); 11] = [
    ("proc", "acpi"),
    ("proc", "asound"),
    ("proc", "kcore"),
    ("proc", "keys"),
    ("proc", "latency_stats"),
    ("proc", "timer_list"),
    ("proc", "timer_stats"),
    ("proc", "sched_debug"),
    ("proc", "scsi"),
    ("sys", "firmware"),
    ("sys", "devices/virtual/powercap"),
];

/// containerd's default read-only paths: root in a rootful sandbox passes the permission
/// checks of sysctls and /proc/sysrq-trigger without any capability (proc(5)), so these must
/// not be writable.
const READ_ONLY: [&str; 5] = ["bus", "fs", "irq", "sys", "sysrq-trigger"];

fn mask_kernel_paths(plan: &MountPlan) -> StepResult<()> {
    for (base, inside) in MASKED {
        let path = if base == "proc" {
            plan.proc.join(inside)
        } else {
            plan.sys.join(inside)
        };
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => {
                let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                mounts::mount(
                    Some(Path::new("tmpfs")),
                    &path,
                    Some("tmpfs"),
                    flags,
                    Some("size=0"),
                )
                .map_err(|e| fail(Step::Mount, &path, e))?;
            }
            Ok(_) => bind(Path::new("/dev/null"), &path, false, false)?,
            Err(_) => {}
        }
    }
    for inside in READ_ONLY {
        let path = plan.proc.join(inside);
        if std::fs::symlink_metadata(&path).is_ok() {
            bind(&path, &path, true, true)?;
        }
    }
    Ok(())
}

fn bind(source: &Path, target: &Path, readonly: bool, recursive: bool) -> StepResult<()> {
    let flags = if recursive {
        libc::MS_BIND | libc::MS_REC
    } else {
        libc::MS_BIND
    };
    mounts::mount(Some(source), target, None, flags, None)
        .map_err(|e| fail(Step::Mount, target, e))?;
    if readonly {
        mounts::remount_readonly(target).map_err(|e| fail(Step::Mount, target, e))?;
    }
    Ok(())
}

/// SIOCGIFFLAGS/SIOCSIFFLAGS (netdevice(7)) on any socket of the namespace: `lo` + IFF_UP.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket with constants; the descriptor is closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is ours; OwnedFd closes it.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: ioctl on our socket with a valid ifreq; the union's flags member is the one
    // these requests read and write.
    unsafe {
        check(libc::ioctl(
            fd.as_raw_fd(),
            libc::SIOCGIFFLAGS,
            &mut request,
        ))?;
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        check(libc::ioctl(fd.as_raw_fd(), libc::SIOCSIFFLAGS, &request))
    }
}

fn set_identity(request: &Request) -> io::Result<()> {
    let user = &request.spec.user;
    if !request.single_id || !user.additional_gids.is_empty() {
        // SAFETY: a pointer and length of a live slice of gids.
        check(unsafe {
            libc::setgroups(user.additional_gids.len(), user.additional_gids.as_ptr())
        })?;
    }
    // SAFETY: setresgid/setresuid with plain ids.
    check(unsafe { libc::setresgid(user.gid, user.gid, user.gid) })?;
    check(unsafe { libc::setresuid(user.uid, user.uid, user.uid) })
}

/// `argv[0]` as runc finds it: as given when it holds a `/`, else the first executable
/// regular file of that name in the spec's `PATH`.
fn lookup(program: &str, env: &[String]) -> Option<PathBuf> {
    if program.contains('/') {
        return Some(PathBuf::from(program));
    }
    let path = env
        .iter()
        .rev()
        .find_map(|var| var.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .map(|dir| Path::new(if dir.is_empty() { "." } else { dir }).join(program))
        .find(|candidate| {
            std::fs::metadata(candidate)
                .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
        })
}

fn exec(argv: &[String], env: &[String]) -> StepResult<()> {
    let program = argv.first().map(String::as_str).unwrap_or_default();
    let path = lookup(program, env).ok_or_else(|| {
        fail(
            Step::Lookup,
            program,
            io::Error::from_raw_os_error(libc::ENOENT),
        )
    })?;
    let invalid = |_| {
        fail(
            Step::Exec,
            program,
            io::Error::from_raw_os_error(libc::EINVAL),
        )
    };
    let c_path = CString::new(path.as_os_str().as_bytes()).map_err(invalid)?;
    let c_argv: Vec<CString> = argv
        .iter()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(invalid)?;
    let c_env: Vec<CString> = env
        .iter()
        .map(|e| CString::new(e.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(invalid)?;
    let mut argv_ptrs: Vec<*const libc::c_char> = c_argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let mut env_ptrs: Vec<*const libc::c_char> = c_env.iter().map(|e| e.as_ptr()).collect();
    env_ptrs.push(std::ptr::null());
    // SAFETY: NUL-terminated strings in null-terminated arrays, alive for the call.
    unsafe { libc::execve(c_path.as_ptr(), argv_ptrs.as_ptr(), env_ptrs.as_ptr()) };
    Err(fail(Step::Exec, program, io::Error::last_os_error()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_are_found_in_the_spec_path() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("tool"), "").unwrap();
        std::fs::set_permissions(bin.join("tool"), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(bin.join("data"), "").unwrap();
        let path = format!("PATH=/nonexistent:{}", bin.display());
        let env = vec!["A=1".to_string(), path];
        let table = [
            ("tool", Some(bin.join("tool"))),
            ("data", None),
            ("missing", None),
            ("/abs/x", Some(PathBuf::from("/abs/x"))),
            ("./rel", Some(PathBuf::from("./rel"))),
        ];
        for (program, want) in table {
            assert_eq!(lookup(program, &env), want, "{program}");
        }
    }
}
