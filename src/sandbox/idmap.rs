//! Which ids the sandbox's user namespace maps, and writing those maps from the build process.
//!
//! Consumes the caller's ids, `/proc/self/{uid_map,gid_map}`, `/etc/passwd`, `/etc/subuid`,
//! `/etc/subgid` and `PATH`; produces an [`IdMapping`] and the writes to
//! `/proc/PID/{uid_map,setgroups,gid_map}` (or runs the setuid `newuidmap`/`newgidmap`
//! helpers). Must never run inside the sandbox: user_namespaces(7) only lets a process outside
//! the namespace map ids other than its own.
//!
//! Rootless with subordinate ranges, the whole kiln process enters a user namespace of that
//! layout as its first act ([`enter_user_namespace`], as `podman unshare` does) and is
//! [`IdMapping::Nested`] from then on. Only there can it read what a sandboxed user left
//! private (apt's `partial` directory, mode 0700, owned by `_apt`), remove it, and give
//! snapshot files their owners: an unprivileged process outside holds no capability over
//! files owned by its subordinate ids (capabilities(7): a capability in a user namespace
//! applies to inodes whose ids are mapped in it).

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::Command;

use super::SandboxError;
use crate::layer::{IdExtent, IdMap};

/// How many ids a ranged mapping covers: container ids 0..65536, as rootless Docker/BuildKit.
pub const RANGE: u32 = 65536;

/// The user namespace layout the sandbox uses on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdMapping {
    /// kiln runs as root: no user namespace, ids are the host's.
    Host,
    /// Rootless without helpers: only container id 0, mapped to the caller's uid and gid;
    /// setgroups(2) is denied (user_namespaces(7), "/proc/PID/setgroups").
    Single {
        /// The caller's uid, container uid 0.
        uid: u32,
        /// The caller's gid, container gid 0.
        gid: u32,
    },
    /// Rootless with `newuidmap`/`newgidmap` and subordinate ranges: container 0 is the
    /// caller, container 1..65536 the first 65535 subordinate ids.
    Ranges {
        /// The caller's uid.
        uid: u32,
        /// The caller's gid.
        gid: u32,
        /// The first subordinate uid.
        sub_uid: u32,
        /// The first subordinate gid.
        sub_gid: u32,
        /// `newuidmap`.
        newuidmap: PathBuf,
        /// `newgidmap`.
        newgidmap: PathBuf,
    },
    /// kiln is root of a user namespace that is not the host's: the one it entered itself
    /// ([`enter_user_namespace`]) or one it was started in. The sandbox needs no user
    /// namespace of its own; the ids are those this one maps, and files show them as they are.
    Nested {
        /// The uid extents of `/proc/self/uid_map` (host = the parent namespace's id).
        uids: Vec<IdExtent>,
        /// The gid extents of `/proc/self/gid_map`.
        gids: Vec<IdExtent>,
    },
}

impl IdMapping {
    /// Works out the mapping for the current process.
    pub fn detect() -> IdMapping {
        let uid = rustix::process::geteuid().as_raw();
        let gid = rustix::process::getegid().as_raw();
        if uid == 0 {
            return nested().unwrap_or(IdMapping::Host);
        }
        let helpers = (find_in_path("newuidmap"), find_in_path("newgidmap"));
        let name = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|text| user_name(&text, uid));
        let keys = [name.unwrap_or_default(), uid.to_string()];
        let sub_uid = std::fs::read_to_string("/etc/subuid")
            .ok()
            .and_then(|text| subordinate_start(&text, &keys));
        let sub_gid = std::fs::read_to_string("/etc/subgid")
            .ok()
            .and_then(|text| subordinate_start(&text, &keys));
        match (helpers, sub_uid, sub_gid) {
            ((Some(newuidmap), Some(newgidmap)), Some(sub_uid), Some(sub_gid)) => {
                IdMapping::Ranges {
                    uid,
                    gid,
                    sub_uid,
                    sub_gid,
                    newuidmap,
                    newgidmap,
                }
            }
            _ => IdMapping::Single { uid, gid },
        }
    }

    /// True when the sandbox needs a user namespace of its own, mapped from outside.
    pub fn needs_user_namespace(&self) -> bool {
        matches!(self, IdMapping::Single { .. } | IdMapping::Ranges { .. })
    }

    /// True for root of the host's own user namespace, which alone may mknod devices, set
    /// `trusted.*` xattrs and mount overlays without `userxattr`.
    pub fn privileged(&self) -> bool {
        matches!(self, IdMapping::Host)
    }

    /// True when container id `id` exists as a uid and as a gid.
    pub fn maps(&self, id: u32) -> bool {
        let within = |extents: &[IdExtent]| {
            extents
                .iter()
                .any(|e| id.checked_sub(e.container).is_some_and(|n| n < e.count))
        };
        match self {
            IdMapping::Host => true,
            IdMapping::Single { .. } => id == 0,
            IdMapping::Ranges { .. } => id < RANGE,
            IdMapping::Nested { uids, gids } => within(uids) && within(gids),
        }
    }

    /// The mapped container ids as people read them: `0 only`, `0 to 65535`.
    pub fn describe(&self) -> String {
        match self {
            IdMapping::Host => "all".to_string(),
            IdMapping::Single { .. } => "0 only".to_string(),
            IdMapping::Ranges { .. } => format!("0 to {}", RANGE - 1),
            IdMapping::Nested { uids, .. } => uids
                .iter()
                .map(|e| match e.count {
                    1 => e.container.to_string(),
                    n => format!("{} to {}", e.container, e.container.saturating_add(n - 1)),
                })
                .collect::<Vec<_>>()
                .join(", "),
        }
    }

    /// Writes the maps of the user namespace process `pid` has just created.
    /// The id extents the namespace maps, `None` when there is no user namespace: what a
    /// layer differ needs to turn the host owners of files the sandbox wrote back into the
    /// container's ids.
    pub fn id_map(&self) -> Option<IdMap> {
        match self {
            IdMapping::Host | IdMapping::Nested { .. } => None,
            IdMapping::Single { uid, gid } => Some(IdMap {
                uids: vec![own_extent(*uid)],
                gids: vec![own_extent(*gid)],
            }),
            IdMapping::Ranges {
                uid,
                gid,
                sub_uid,
                sub_gid,
                ..
            } => Some(IdMap {
                uids: ranged_extents(*uid, *sub_uid).to_vec(),
                gids: ranged_extents(*gid, *sub_gid).to_vec(),
            }),
        }
    }

    pub(crate) fn write(&self, pid: u32) -> Result<(), SandboxError> {
        match self {
            IdMapping::Host | IdMapping::Nested { .. } => Ok(()),
            IdMapping::Single { uid, gid } => {
                let proc = PathBuf::from(format!("/proc/{pid}"));
                // gid_map may only be written by an unprivileged process after setgroups is
                // denied (user_namespaces(7), since Linux 3.19).
                write_file(&proc.join("uid_map"), &format!("0 {uid} 1\n"))?;
                write_file(&proc.join("setgroups"), "deny")?;
                write_file(&proc.join("gid_map"), &format!("0 {gid} 1\n"))
            }
            IdMapping::Ranges {
                uid,
                gid,
                sub_uid,
                sub_gid,
                newuidmap,
                newgidmap,
            } => {
                run_helper(newuidmap, pid, *uid, *sub_uid)?;
                run_helper(newgidmap, pid, *gid, *sub_gid)
            }
        }
    }
}

/// [`IdMapping::Nested`] when this process's user namespace is not the host's (whose maps are
/// the identity over every id), `None` otherwise or when the maps cannot be read.
fn nested() -> Option<IdMapping> {
    let read = |name| std::fs::read_to_string(Path::new("/proc/self").join(name)).ok();
    let uids = parse_extents(&read("uid_map")?)?;
    let gids = parse_extents(&read("gid_map")?)?;
    let identity = IdExtent {
        container: 0,
        host: 0,
        count: u32::MAX,
    };
    (uids != [identity] || gids != [identity]).then_some(IdMapping::Nested { uids, gids })
}

/// The lines of a `uid_map`/`gid_map` file: `inside outside count` each.
fn parse_extents(text: &str) -> Option<Vec<IdExtent>> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let mut fields = line.split_whitespace().map(str::parse::<u32>);
            let extent = IdExtent {
                container: fields.next()?.ok()?,
                host: fields.next()?.ok()?,
                count: fields.next()?.ok()?,
            };
            fields.next().is_none().then_some(extent)
        })
        .collect()
}

/// Rootless with subordinate ranges, moves this process into a new user namespace of that
/// layout, where it is root ([`IdMapping::Nested`]); does nothing otherwise. Must run while
/// the process has one thread (unshare(2) refuses CLONE_NEWUSER to a threaded process).
///
/// The maps of a namespace can only be written from its parent namespace, by the setuid
/// helpers there, so a forked child stays outside: it waits until this process has
/// unshared, runs newuidmap and newgidmap on it, and reports how that went.
///
/// # Errors
/// [`SandboxError::IdMap`], [`SandboxError::IdMapHelper`] when the namespace cannot be made or
/// mapped; the process is then unchanged or in an unmapped namespace, and must not go on.
pub fn enter_user_namespace() -> Result<(), SandboxError> {
    let mapping = IdMapping::detect();
    if !matches!(mapping, IdMapping::Ranges { .. }) {
        return Ok(());
    }
    let failed = |source: io::Error| SandboxError::IdMap {
        path: PathBuf::from("/proc/self/uid_map"),
        source,
    };
    let (unshared_read, unshared_write) = pipe().map_err(failed)?;
    let (report_read, report_write) = pipe().map_err(failed)?;
    // SAFETY: the process has one thread, so the child may run anything before it exits.
    let child = unsafe { libc::fork() };
    if child < 0 {
        return Err(failed(io::Error::last_os_error()));
    }
    if child == 0 {
        drop((unshared_write, report_read));
        let mut go = [0u8; 1];
        let asked = File::from(unshared_read)
            .read(&mut go)
            .is_ok_and(|n| n == 1);
        // SAFETY: getppid has no preconditions.
        let parent = unsafe { libc::getppid() } as u32;
        let report = match asked {
            true => mapping.write(parent).err().map(|e| e.to_string()),
            false => None,
        };
        let _ = File::from(report_write).write_all(report.unwrap_or_default().as_bytes());
        // SAFETY: leaves at once, running no destructor or atexit handler of the parent's.
        unsafe { libc::_exit(0) };
    }
    drop((unshared_read, report_write));
    // SAFETY: unshare with flags only; this process has one thread.
    let unshared = match unsafe { libc::unshare(libc::CLONE_NEWUSER) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    };
    let mut signal = File::from(unshared_write);
    if unshared.is_ok() {
        signal.write_all(b"y").map_err(failed)?;
    }
    drop(signal);
    let mut report = String::new();
    let read = File::from(report_read).read_to_string(&mut report);
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    unsafe { libc::waitpid(child, &mut status, 0) };
    unshared.map_err(failed)?;
    read.map_err(failed)?;
    match report.is_empty() {
        true => Ok(()),
        false => Err(failed(io::Error::other(report))),
    }
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).map_err(io::Error::from)
}

fn write_file(path: &Path, text: &str) -> Result<(), SandboxError> {
    std::fs::write(path, text).map_err(|source| SandboxError::IdMap {
        path: path.to_path_buf(),
        source,
    })
}

/// Container id 0 as the caller's own id.
fn own_extent(own: u32) -> IdExtent {
    IdExtent {
        container: 0,
        host: own,
        count: 1,
    }
}

/// Container 0 as the caller, 1..[`RANGE`] as the subordinate ids from `sub`.
fn ranged_extents(own: u32, sub: u32) -> [IdExtent; 2] {
    [
        own_extent(own),
        IdExtent {
            container: 1,
            host: sub,
            count: RANGE - 1,
        },
    ]
}

fn run_helper(tool: &Path, pid: u32, own: u32, sub: u32) -> Result<(), SandboxError> {
    let ranges = ranged_extents(own, sub)
        .into_iter()
        .flat_map(|extent| [extent.container, extent.host, extent.count].map(|id| id.to_string()));
    let output = Command::new(tool)
        .arg(pid.to_string())
        .args(ranges)
        .output()
        .map_err(|source| SandboxError::IdMap {
            path: tool.to_path_buf(),
            source,
        })?;
    if output.status.success() {
        return Ok(());
    }
    Err(SandboxError::IdMapHelper {
        tool: tool.to_path_buf(),
        code: output.status.code(),
        stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
    })
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(tool))
        .find(|path| path.is_file())
}

/// The name of `uid` in passwd(5) text.
fn user_name(passwd: &str, uid: u32) -> Option<String> {
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id = fields.nth(1)?.parse::<u32>().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

/// The start of the first subuid(5)/subgid(5) range of any of `keys` (name or numeric id)
/// that holds at least `RANGE - 1` ids.
fn subordinate_start(text: &str, keys: &[String]) -> Option<u32> {
    text.lines().find_map(|line| {
        let mut fields = line.trim().split(':');
        let owner = fields.next()?;
        let start = fields.next()?.parse::<u32>().ok()?;
        let count = fields.next()?.parse::<u32>().ok()?;
        let usable = !owner.is_empty() && keys.iter().any(|key| key == owner);
        (usable && count >= RANGE - 1 && start.checked_add(RANGE - 1).is_some()).then_some(start)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subordinate_ranges_by_name_or_id() {
        let keys = ["alice".to_string(), "1000".to_string()];
        let table = [
            ("alice:100000:65536\n", Some(100000)),
            ("bob:100000:65536\n1000:200000:70000\n", Some(200000)),
            ("alice:100000:1000\n", None),
            ("alice:x:65536\n", None),
            ("alice:4294967295:65536\n", None),
            ("", None),
        ];
        for (text, want) in table {
            assert_eq!(subordinate_start(text, &keys), want, "{text:?}");
        }
    }

    #[test]
    fn nested_maps_are_read_from_proc_and_checked_per_extent() {
        let text = "         0       1002          1\n         1     165536      65535\n";
        let extents = parse_extents(text).unwrap();
        assert_eq!(extents, ranged_extents(1002, 165536));
        assert_eq!(parse_extents("0 0\n"), None);
        assert_eq!(parse_extents("0 0 1 9\n"), None);
        let nested = IdMapping::Nested {
            uids: extents.clone(),
            gids: vec![own_extent(1002)],
        };
        // An id must exist as a uid and as a gid.
        let table = [(0, true), (1000, false), (70000, false)];
        for (id, want) in table {
            assert_eq!(nested.maps(id), want, "{id}");
        }
        let wide = IdMapping::Nested {
            uids: extents.clone(),
            gids: extents,
        };
        assert!(wide.maps(65535) && !wide.maps(65536));
        assert_eq!(wide.describe(), "0, 1 to 65535");
        assert!(!wide.needs_user_namespace() && !wide.privileged());
        assert_eq!(wide.id_map(), None);
    }

    #[test]
    fn user_names_from_passwd() {
        let passwd =
            "root:x:0:0:root:/root:/bin/sh\nbad line\nalice:x:1000:1000::/home/a:/bin/sh\n";
        let table = [(0, Some("root")), (1000, Some("alice")), (5, None)];
        for (uid, want) in table {
            assert_eq!(user_name(passwd, uid).as_deref(), want);
        }
    }

    #[test]
    fn which_ids_exist() {
        let single = IdMapping::Single {
            uid: 1000,
            gid: 1000,
        };
        let ranges = IdMapping::Ranges {
            uid: 1000,
            gid: 1000,
            sub_uid: 100000,
            sub_gid: 100000,
            newuidmap: PathBuf::new(),
            newgidmap: PathBuf::new(),
        };
        let table = [
            (&IdMapping::Host, 70000, true),
            (&single, 0, true),
            (&single, 1, false),
            (&ranges, 65535, true),
            (&ranges, 65536, false),
        ];
        for (mapping, id, want) in table {
            assert_eq!(mapping.maps(id), want, "{mapping:?} {id}");
        }
    }
}
