//! Advisory locks on the store with `flock(2)`.
//!
//! Consumes a store; produces [`StoreLock`] guards. Builds hold `kiln/lock` shared for their
//! whole run, gc and prune hold it exclusive, so nothing a build has written but not yet
//! tagged or recorded is collected under it. `index.json` read-modify-write happens under
//! `kiln/index.lock` exclusive, so concurrent `tag` calls never lose one another's tags.
//! flock locks belong to the open file, so the kernel drops them when a process dies: a crash
//! never leaves the store locked. This module must never hold a lock past its guard.

use std::fs::{File, OpenOptions};
use std::path::Path;

use rustix::fs::FlockOperation;

use super::{io_error, Result, Store};

/// How a lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once (builds).
    Shared,
    /// One holder, no shared holders (gc, prune, index updates).
    Exclusive,
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
    mode: LockMode,
}

impl StoreLock {
    /// Returns how this lock is held.
    pub fn mode(&self) -> LockMode {
        self.mode
    }
}

/// Opens (creating) `path` and locks it; with `wait` false, returns `None` instead of waiting.
fn acquire(path: &Path, mode: LockMode, wait: bool) -> Result<Option<StoreLock>> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(io_error("open lock file", path))?;
    let operation = match (mode, wait) {
        (LockMode::Shared, true) => FlockOperation::LockShared,
        (LockMode::Shared, false) => FlockOperation::NonBlockingLockShared,
        (LockMode::Exclusive, true) => FlockOperation::LockExclusive,
        (LockMode::Exclusive, false) => FlockOperation::NonBlockingLockExclusive,
    };
    loop {
        match rustix::fs::flock(&file, operation) {
            Ok(()) => return Ok(Some(StoreLock { _file: file, mode })),
            Err(rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::WOULDBLOCK) if !wait => return Ok(None),
            Err(e) => return Err(io_error("lock", path)(e.into())),
        }
    }
}

impl Store {
    /// Takes the store lock shared, waiting while gc or prune runs. Builds hold it throughout.
    ///
    /// # Errors
    /// I/O errors opening or locking `kiln/lock`.
    pub fn lock_shared(&self) -> Result<StoreLock> {
        self.lock(LockMode::Shared)
    }

    /// Takes the store lock exclusive, waiting for every build to finish.
    ///
    /// A process must not ask for it while it holds the shared lock: it would wait for itself.
    ///
    /// # Errors
    /// I/O errors opening or locking `kiln/lock`.
    pub fn lock_exclusive(&self) -> Result<StoreLock> {
        self.lock(LockMode::Exclusive)
    }

    /// Takes the store lock in `mode`, waiting as long as needed.
    ///
    /// # Errors
    /// I/O errors opening or locking `kiln/lock`.
    pub fn lock(&self, mode: LockMode) -> Result<StoreLock> {
        let path = self.lock_path();
        acquire(&path, mode, true)?.ok_or_else(|| {
            io_error("lock", &path)(std::io::Error::from(std::io::ErrorKind::WouldBlock))
        })
    }

    /// Takes the store lock in `mode` if that is possible without waiting; returns `None` if
    /// another process holds it in a conflicting mode (so the caller can say it is waiting).
    ///
    /// # Errors
    /// I/O errors opening or locking `kiln/lock`.
    pub fn try_lock(&self, mode: LockMode) -> Result<Option<StoreLock>> {
        acquire(&self.lock_path(), mode, false)
    }

    /// Takes `kiln/index.lock` exclusive for one read-modify-write of `index.json`.
    pub(super) fn lock_index(&self) -> Result<StoreLock> {
        let path = self.kiln_dir().join("index.lock");
        acquire(&path, LockMode::Exclusive, true)?.ok_or_else(|| {
            io_error("lock", &path)(std::io::Error::from(std::io::ErrorKind::WouldBlock))
        })
    }

    fn lock_path(&self) -> std::path::PathBuf {
        self.kiln_dir().join("lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;

    #[test]
    fn modes_conflict_as_flock_says() {
        let (_dir, store) = temp_store();
        let shared = store.lock_shared().expect("shared");
        assert_eq!(shared.mode(), LockMode::Shared);
        assert!(store.try_lock(LockMode::Shared).expect("tries").is_some());
        assert!(store
            .try_lock(LockMode::Exclusive)
            .expect("tries")
            .is_none());
        drop(shared);
        let exclusive = store
            .try_lock(LockMode::Exclusive)
            .expect("tries")
            .expect("free");
        assert!(store.try_lock(LockMode::Shared).expect("tries").is_none());
        drop(exclusive);
        assert!(store.try_lock(LockMode::Shared).expect("tries").is_some());
    }
}
