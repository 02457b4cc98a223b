//! The directories behind `RUN --mount=type=cache`: kept in the store under
//! `kiln/cache-mounts`, one per cache id, outside every layer and key.
//!
//! `sharing=` as BuildKit gives it: `shared` (the default) lets every step that names the id
//! use one directory at the same time; `locked` makes each wait until no other step uses it;
//! `private` gives a step the directory when nobody else holds it and a directory of its own
//! (kept too, for the next private user) when somebody does. The rules hold across threads
//! and across kiln processes on one store because each use is an `flock(2)` on a lock file
//! beside the directory, taken through its own open file (flock locks of two opens conflict
//! even within one process) and dropped by the kernel when a process dies.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

use crate::digest::Digest;
use crate::syntax::instruction::{ResolvedMount, Sharing};

/// How many directories one id may grow under `sharing=private` before steps wait for one;
/// more concurrent private users than this on one store is not a real build.
const PRIVATE_INSTANCES: usize = 64;

/// A cache directory in use: the lock is held until this is dropped.
pub(super) struct CacheMountLease {
    /// The directory to bind on the mount's target.
    pub dir: PathBuf,
    _lock: File,
}

/// Takes the cache directory for `mount` (its `id`, else its target) under `cache_root`,
/// waiting as its sharing mode says, and makes it on first use with its uid, gid and mode.
pub(super) fn lease(cache_root: &Path, mount: &ResolvedMount) -> io::Result<CacheMountLease> {
    let id = mount
        .id
        .as_deref()
        .or(mount.target.as_deref())
        .unwrap_or_default();
    let name = Digest::of(id.as_bytes()).hex().to_string();
    std::fs::create_dir_all(cache_root)?;
    let (instance, lock) = match mount.sharing.unwrap_or(Sharing::Shared) {
        Sharing::Shared => (
            0,
            lock_instance(cache_root, &name, 0, FlockOperation::LockShared)?,
        ),
        Sharing::Locked => (
            0,
            lock_instance(cache_root, &name, 0, FlockOperation::LockExclusive)?,
        ),
        Sharing::Private => first_free_instance(cache_root, &name)?,
    };
    let dir = cache_root.join(instance_name(&name, instance));
    if !dir.is_dir() {
        make_cache_dir(&dir, mount)?;
    }
    Ok(CacheMountLease { dir, _lock: lock })
}

/// The first instance no one holds, locked exclusively; the last one, waited for, when all
/// are taken.
fn first_free_instance(cache_root: &Path, name: &str) -> io::Result<(usize, File)> {
    for instance in 0..PRIVATE_INSTANCES - 1 {
        let file = open_lock(cache_root, name, instance)?;
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok((instance, file)),
            Err(rustix::io::Errno::WOULDBLOCK) => continue,
            Err(error) => return Err(error.into()),
        }
    }
    let last = PRIVATE_INSTANCES - 1;
    Ok((
        last,
        lock_instance(cache_root, name, last, FlockOperation::LockExclusive)?,
    ))
}

fn lock_instance(
    cache_root: &Path,
    name: &str,
    instance: usize,
    operation: FlockOperation,
) -> io::Result<File> {
    let file = open_lock(cache_root, name, instance)?;
    flock(&file, operation)?;
    Ok(file)
}

fn open_lock(cache_root: &Path, name: &str, instance: usize) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(cache_root.join(format!("{}.lock", instance_name(name, instance))))
}

/// Instance 0 is the id's own directory (where `shared` and `locked` users meet); private
/// users who found it taken get `NAME.1`, `NAME.2`, ….
fn instance_name(name: &str, instance: usize) -> String {
    match instance {
        0 => name.to_string(),
        n => format!("{name}.{n}"),
    }
}

/// Makes the directory whole before it gets its name, so a step that dies half-way leaves
/// no directory with the wrong owner or mode for the next one.
fn make_cache_dir(dir: &Path, mount: &ResolvedMount) -> io::Result<()> {
    let parent = dir.parent().unwrap_or(dir);
    let staging = tempfile::Builder::new()
        .prefix(".new-")
        .tempdir_in(parent)?;
    std::fs::set_permissions(
        staging.path(),
        std::fs::Permissions::from_mode(mount.mode.unwrap_or(0o755)),
    )?;
    // Without privileges the owner stays the caller; the sandbox maps it to root.
    let _ = std::os::unix::fs::chown(
        staging.path(),
        Some(mount.uid.unwrap_or(0)),
        Some(mount.gid.unwrap_or(0)),
    );
    match std::fs::rename(staging.path(), dir) {
        Ok(()) => {
            // The directory now lives under its final name; nothing is left to clean up.
            std::mem::forget(staging);
            Ok(())
        }
        // Another shared user made it first: theirs is as good as ours.
        Err(_) if dir.is_dir() => Ok(()),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::syntax::instruction::parse_mount;
    use crate::syntax::Position;

    /// The mount `RUN --mount=type=cache,target=/cache,<extra>` gives.
    fn cache_mount(extra: &str) -> ResolvedMount {
        let spec = format!("type=cache,target=/cache,{extra}");
        parse_mount(&spec, Position { line: 1, column: 1 }, &|_| false)
            .unwrap()
            .resolve()
            .unwrap()
    }

    #[test]
    fn shared_users_meet_in_one_directory_and_private_ones_split() {
        let root = tempfile::tempdir().unwrap();
        let shared_a = lease(root.path(), &cache_mount("sharing=shared")).unwrap();
        let shared_b = lease(root.path(), &cache_mount("sharing=shared")).unwrap();
        assert_eq!(shared_a.dir, shared_b.dir);
        let private = lease(root.path(), &cache_mount("sharing=private")).unwrap();
        assert_ne!(private.dir, shared_a.dir);
        let shared_dir = shared_a.dir.clone();
        drop((shared_a, shared_b));
        let private_again = lease(root.path(), &cache_mount("sharing=private")).unwrap();
        assert_eq!(
            private_again.dir, shared_dir,
            "the id's own directory is free again"
        );
        drop((private, private_again));
        let alone = lease(root.path(), &cache_mount("sharing=private")).unwrap();
        assert_eq!(
            alone.dir, shared_dir,
            "nobody holds the id's own directory now"
        );
    }

    #[test]
    fn locked_users_wait_for_each_other() {
        let root = tempfile::tempdir().unwrap();
        let first = lease(root.path(), &cache_mount("sharing=locked")).unwrap();
        let path = root.path().to_path_buf();
        let (sender, receiver) = std::sync::mpsc::channel();
        let waiter = std::thread::spawn(move || {
            let second = lease(&path, &cache_mount("sharing=locked")).unwrap();
            sender.send(()).unwrap();
            second.dir
        });
        assert!(
            receiver
                .recv_timeout(std::time::Duration::from_millis(300))
                .is_err(),
            "the second locked user got in while the first held the directory"
        );
        let dir = first.dir.clone();
        drop(first);
        assert_eq!(waiter.join().unwrap(), dir);
    }

    #[test]
    fn a_new_directory_gets_the_mounts_mode() {
        let root = tempfile::tempdir().unwrap();
        let mount = cache_mount("mode=0700");
        let lease = lease(root.path(), &mount).unwrap();
        let mode = std::fs::metadata(&lease.dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o700);
    }
}
