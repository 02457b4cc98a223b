//! The plain data of one sandboxed command: what to run, as whom, on which root filesystem,
//! with which mounts and network, and the messages the build process and the re-executed
//! init exchange about it.
//!
//! Consumes nothing but values; produces serde-encodable data. Must never touch the system:
//! everything here can be built and checked without privileges.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// One command to run in a fresh sandbox (BuildKit's executor `Meta` plus the rootfs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// The program and its arguments; `argv[0]` without a `/` is looked up in the `PATH` of
    /// `env` (Docker's default `PATH` when `env` has none), as runc does.
    pub argv: Vec<String>,
    /// The whole environment, `KEY=value` each; nothing is inherited from kiln.
    pub env: Vec<String>,
    /// The working directory inside the root filesystem, created (root-owned, 0755) if missing.
    pub cwd: String,
    /// The numeric user, group and supplementary groups inside the sandbox.
    pub user: IdSpec,
    /// The UTS hostname the command sees.
    pub hostname: String,
    /// The overlay root filesystem.
    pub rootfs: RootfsSpec,
    /// RUN --mount targets, applied in order after the rootfs and before `pivot_root`.
    pub mounts: Vec<MountSpec>,
    /// Whether the command gets its own network namespace.
    pub network: NetworkMode,
    /// Contents of the bind-mounted `/etc/hosts`, `/etc/resolv.conf` and `/etc/hostname`.
    pub etc: EtcFiles,
    /// Capability names (`CAP_CHOWN` or `CHOWN`) left in the bounding, permitted and effective
    /// sets; [`DEFAULT_CAPABILITIES`] unless the build asked for `--security=insecure`.
    pub capabilities: Vec<String>,
}

/// Docker's default capability set for containers (moby `oci/caps/defaults.go`).
pub const DEFAULT_CAPABILITIES: [&str; 14] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// [`DEFAULT_CAPABILITIES`] as owned names, the usual `RunSpec::capabilities`.
pub fn default_capabilities() -> Vec<String> {
    DEFAULT_CAPABILITIES
        .iter()
        .map(|name| name.to_string())
        .collect()
}

/// Numeric identity of the command (already resolved from the image's passwd/group files).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdSpec {
    /// The user id.
    pub uid: u32,
    /// The primary group id.
    pub gid: u32,
    /// Supplementary groups, set with setgroups(2).
    pub additional_gids: Vec<u32>,
}

/// The overlay that becomes `/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootfsSpec {
    /// Read-only snapshot directories, lowest (the base image's first layer) first. May be
    /// empty (`FROM scratch`).
    pub lower: Vec<PathBuf>,
    /// The overlay upper directory: every change the command makes ends up here.
    pub upper: PathBuf,
    /// The overlay work directory, empty, on the same filesystem as `upper`.
    pub work: PathBuf,
    /// An empty directory the overlay is mounted on (only inside the sandbox's mount
    /// namespace; nothing stays mounted on the host).
    pub target: PathBuf,
    /// True when `upper` is scratch, read once after the command and then thrown away (a
    /// RUN step, `kiln run --rm`): the overlay is mounted `volatile`, so neither the
    /// command's fsyncs nor the unmount flush anything to disk. Without it the unmount syncs
    /// the whole host filesystem the upper lives on: every RUN waited for all dirty data on
    /// the disk, its own and other processes' (0.2 s for 100 MB a step had just written). A
    /// kept container's upper (its state for `commit` and the next start) is not volatile.
    pub volatile: bool,
}

/// One RUN --mount (cache, secret and ssh mounts arrive here as binds of prepared paths).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MountSpec {
    /// A bind mount of a host file or directory.
    Bind {
        /// The host path.
        source: PathBuf,
        /// The absolute path inside the sandbox (symlinks resolved inside the rootfs).
        target: String,
        /// Mounted read-only when true.
        readonly: bool,
    },
    /// A fresh tmpfs, mode 1777.
    Tmpfs {
        /// The absolute path inside the sandbox.
        target: String,
        /// The size limit in bytes; the kernel default (half of RAM) when `None`.
        size: Option<u64>,
    },
}

impl MountSpec {
    /// The path inside the sandbox this mount covers.
    pub fn target(&self) -> &str {
        match self {
            MountSpec::Bind { target, .. } | MountSpec::Tmpfs { target, .. } => target,
        }
    }
}

/// RUN --network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkMode {
    /// A new network namespace with only `lo`, brought up.
    None,
    /// The host's network namespace.
    Host,
    /// BuildKit's default; the host's network for now (no bridge or slirp of our own).
    Default,
}

/// The three files bind-mounted read-only under `/etc`, so they never land in a layer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcFiles {
    /// `/etc/hosts`.
    pub hosts: String,
    /// `/etc/resolv.conf`.
    pub resolv_conf: String,
    /// `/etc/hostname`; empty for none (a BuildKit RUN has none, `docker run` has one).
    pub hostname: String,
}

/// Nameservers BuildKit falls back to when the host has none the sandbox can reach (moby
/// libnetwork's defaults).
const FALLBACK_NAMESERVERS: &str = "nameserver 8.8.8.8\nnameserver 8.8.4.4\nnameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844\n";

impl EtcFiles {
    /// The host's own files, as docker gives a `--network host` container: `/etc/hosts` and
    /// `/etc/resolv.conf` as they are (loopback nameservers answer in the host's network).
    pub fn of_host(hostname: &str) -> EtcFiles {
        let read = |path| std::fs::read_to_string(path).unwrap_or_default();
        EtcFiles {
            hosts: read("/etc/hosts"),
            resolv_conf: read("/etc/resolv.conf"),
            hostname: format!("{hostname}\n"),
        }
    }

    /// The host's hostname (its uts namespace's, `/proc/sys/kernel/hostname`).
    pub fn host_name() -> String {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim_end().to_string())
            .unwrap_or_default()
    }

    /// BuildKit's files for a sandbox named `hostname`: localhost entries plus the hostname,
    /// the host's `/etc/resolv.conf` without loopback nameservers (unreachable from a network
    /// namespace; the fallback servers when none remain), and the hostname.
    pub fn default_for(hostname: &str) -> EtcFiles {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        EtcFiles {
            hosts: format!(
                "127.0.0.1\tlocalhost {hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
            ),
            resolv_conf: resolv_conf_without_loopback(&host),
            hostname: format!("{hostname}\n"),
        }
    }
}

/// resolv.conf(5) text without `nameserver` lines that point at loopback addresses.
fn resolv_conf_without_loopback(text: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in text.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let address = words.next().unwrap_or_default();
            if address.starts_with("127.") || address == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        out.push_str(FALLBACK_NAMESERVERS);
    }
    out
}

/// How the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitStatus {
    /// The exit code, when the command exited.
    pub code: Option<i32>,
    /// The signal number, when a signal killed it.
    pub signal: Option<i32>,
}

impl ExitStatus {
    /// True when the command exited with code 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }

    /// Docker's wording: `exit code: N`, with 128 + the signal number for a killed command.
    pub fn describe(&self) -> String {
        let code = self.code.unwrap_or_else(|| 128 + self.signal.unwrap_or(0));
        format!("exit code: {code}")
    }
}

/// Which output stream a chunk came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The command's standard output.
    Stdout,
    /// The command's standard error.
    Stderr,
}

/// How `kiln run` attaches to a sandboxed command, beyond what a RUN step needs: a reaper as
/// pid 1, the caller's own standard streams (or a pseudo-terminal), signals passed on, and
/// optionally a read-only root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attach {
    /// Allocate a pseudo-terminal in the sandbox's own devpts and make it the command's
    /// controlling terminal and standard streams (`docker run -t`).
    pub tty: bool,
    /// Keep standard input open for the command (`docker run -i`); without it the command
    /// reads end of file at once.
    pub stdin: bool,
    /// Mount the root filesystem read-only (`docker run --read-only`); the kernel
    /// filesystems, `/etc` files and mounts keep their own modes.
    pub read_only: bool,
    /// The signal a SIGTERM to the caller becomes (the image's STOPSIGNAL; 15 by default).
    pub stop_signal: i32,
}

/// What the build process sends the init first: the spec plus the host paths it prepared.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Request {
    pub spec: RunSpec,
    /// Holds `hosts`, `resolv.conf`, `hostname` and an empty `lower` directory.
    pub scratch: PathBuf,
    /// True when the init makes a user namespace, whose maps the build process writes.
    pub user_namespace: bool,
    /// True when kiln is not root of the host's user namespace: the overlay keeps its
    /// metadata in `user.overlay.*` xattrs (`userxattr`), the only ones it may set.
    pub unprivileged: bool,
    /// Only id 0 is mapped: setgroups(2) is denied and devpts cannot use gid 5 (tty).
    pub single_id: bool,
    /// Set up everything, then exit 0 instead of exec'ing (for [`super::probe`]).
    pub probe_only: bool,
    /// Copy the snapshots instead of trying an overlay mount first.
    pub force_copy: bool,
    /// Set for `kiln run`: pid 1 is a reaper that forks the command and passes signals on.
    #[serde(default)]
    pub attach: Option<Attach>,
    /// With a terminal: the caller's window size (rows, columns), given to the pseudo-terminal
    /// before the command starts, so its first look at the size sees the real one (as
    /// docker's `ConsoleSize` at create).
    #[serde(default)]
    pub console_size: Option<(u16, u16)>,
}

/// Messages on the control socket, one JSON document per line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Message {
    /// init → build process: the user namespace exists, write the maps of this pid.
    Unshared,
    /// build process → init: the maps are written, go on.
    MapsWritten,
    /// init or its child → build process: a setup step failed.
    Failed(Failure),
    /// init → build process: the overlay mount was refused; the snapshots are copied instead.
    Copied,
    /// init → build process: the command ended.
    Exited(ExitStatus),
    /// pid 1 → caller: the pseudo-terminal's master descriptor rides along as SCM_RIGHTS
    /// (unix(7)) on this line.
    Console,
}

/// A failed setup step as the init reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Failure {
    pub step: Step,
    /// The path or name the step worked on, empty when none.
    pub subject: String,
    pub errno: i32,
}

/// The steps of the privileged sequence, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Reading the request from the control socket.
    ReadRequest,
    /// unshare(2) of the user namespace.
    UnshareUser,
    /// unshare(2) of the mount, pid, uts, ipc (and net) namespaces.
    UnshareNamespaces,
    /// fork(2) of the namespace's pid 1.
    Fork,
    /// Making the inherited mounts slaves.
    MakeSlave,
    /// The overlay mount of the rootfs.
    MountOverlay,
    /// Copying the snapshots (no overlay), or the changes into upper afterwards.
    CopyRootfs,
    /// Creating a missing mount point inside the rootfs.
    MountPoint,
    /// Any other mount(2).
    Mount,
    /// pivot_root(2) and detaching the old root.
    PivotRoot,
    /// sethostname(2).
    Hostname,
    /// Bringing `lo` up.
    Loopback,
    /// Creating or entering the working directory.
    Cwd,
    /// setgroups/setgid/setuid.
    Credentials,
    /// Capability bounding set, capset(2), no_new_privs.
    Capabilities,
    /// Allocating the pseudo-terminal (`kiln run -t`) and handing it over.
    Console,
    /// Remounting the root filesystem read-only (`kiln run --read-only`).
    ReadOnly,
    /// Looking up `argv[0]`.
    Lookup,
    /// execve(2).
    Exec,
    /// waitpid(2) on the command.
    Wait,
}

impl std::fmt::Display for Step {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Step::ReadRequest => "reading the request",
            Step::UnshareUser => "creating the user namespace",
            Step::UnshareNamespaces => "creating the namespaces",
            Step::Fork => "forking the sandbox init",
            Step::MakeSlave => "making mounts slaves",
            Step::MountOverlay => "mounting the overlay",
            Step::CopyRootfs => "copying the root filesystem (no overlay)",
            Step::MountPoint => "creating a mount point",
            Step::Mount => "mounting",
            Step::PivotRoot => "pivoting the root",
            Step::Hostname => "setting the hostname",
            Step::Loopback => "bringing lo up",
            Step::Cwd => "entering the working directory",
            Step::Credentials => "switching user",
            Step::Capabilities => "dropping capabilities",
            Step::Console => "allocating the terminal",
            Step::ReadOnly => "making the root filesystem read-only",
            Step::Lookup => "looking up the executable",
            Step::Exec => "executing the command",
            Step::Wait => "waiting for the command",
        };
        f.write_str(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_through_json_lines() {
        let cases = [
            Message::Unshared,
            Message::MapsWritten,
            Message::Copied,
            Message::Console,
            Message::Exited(ExitStatus {
                code: None,
                signal: Some(9),
            }),
            Message::Failed(Failure {
                step: Step::Mount,
                subject: "/a\nb".into(),
                errno: 1,
            }),
        ];
        for message in cases {
            let line = serde_json::to_string(&message).unwrap();
            assert!(!line.contains('\n'), "{line}");
            assert_eq!(serde_json::from_str::<Message>(&line).unwrap(), message);
        }
    }

    #[test]
    fn exit_statuses_read_as_docker_says_them() {
        let table = [
            (Some(0), None, true, "exit code: 0"),
            (Some(3), None, false, "exit code: 3"),
            (None, Some(9), false, "exit code: 137"),
        ];
        for (code, signal, success, text) in table {
            let status = ExitStatus { code, signal };
            assert_eq!(
                (status.success(), status.describe().as_str()),
                (success, text)
            );
        }
    }

    #[test]
    fn loopback_nameservers_are_dropped() {
        let table = [
            (
                "nameserver 10.0.0.2\nsearch x\n",
                "nameserver 10.0.0.2\nsearch x\n".to_string(),
            ),
            (
                "nameserver 127.0.0.53\noptions edns0\n",
                format!("options edns0\n{FALLBACK_NAMESERVERS}"),
            ),
            (
                "nameserver ::1\nnameserver 1.1.1.1",
                "nameserver 1.1.1.1\n".to_string(),
            ),
            ("", FALLBACK_NAMESERVERS.to_string()),
        ];
        for (text, want) in table {
            assert_eq!(resolv_conf_without_loopback(text), want, "{text:?}");
        }
    }
}
