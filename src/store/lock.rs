//! Advisory locks on the store with `flock(2)`.
//!
//! Consumes a store; produces [`StoreLock`] guards. Builds hold `kiln/lock` shared for their
//! whole run, gc and prune hold it exclusive, so nothing a build has written but not yet
//! tagged or recorded is collected under it. `index.json` read-modify-write happens under
//! `kiln/index.lock` exclusive, so concurrent `tag` calls never lose one another's tags.
//! flock locks belong to the open file, so the kernel drops them when a process dies: a crash
//! never leaves the store locked. This module must never hold a lock past its guard.
//!
//! flock locks taken through two opens in one process conflict with each other, so asking
//! for the exclusive lock while this process holds the store lock (or for the shared one
//! while it holds it exclusive) would wait forever; a process-wide table of held locks turns
//! that into [`StoreError::LockConflict`], and lets [`Store::gc`] and [`Store::prune`] run
//! under an exclusive lock their caller already holds.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use rustix::fs::FlockOperation;

use super::{io_error, Result, Store, StoreError};

/// Store locks this process holds: lock file path → (shared count, exclusive count).
static HELD: Mutex<Option<HashMap<PathBuf, (usize, usize)>>> = Mutex::new(None);

fn with_held<T>(f: impl FnOnce(&mut HashMap<PathBuf, (usize, usize)>) -> T) -> T {
    // A panic while holding this mutex cannot leave the counts half-updated, so a poisoned
    // table is still right.
    let mut guard = HELD.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    f(guard.get_or_insert_with(HashMap::new))
}

/// Returns the mode in which this process holds the lock at `key`, exclusive first.
fn held_mode(key: &Path) -> Option<LockMode> {
    with_held(|held| match held.get(key) {
        Some((_, exclusive)) if *exclusive > 0 => Some(LockMode::Exclusive),
        Some((shared, _)) if *shared > 0 => Some(LockMode::Shared),
        _ => None,
    })
}

/// How a lock is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Many holders at once (builds).
    Shared,
    /// One holder, no shared holders (gc, prune, index updates).
    Exclusive,
}

impl std::fmt::Display for LockMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LockMode::Shared => "shared",
            LockMode::Exclusive => "exclusive",
        })
    }
}

/// A held lock; dropping it releases the lock.
#[derive(Debug)]
pub struct StoreLock {
    _file: File,
    mode: LockMode,
    key: PathBuf,
}

impl Drop for StoreLock {
    fn drop(&mut self) {
        with_held(|held| {
            if let Some((shared, exclusive)) = held.get_mut(&self.key) {
                match self.mode {
                    LockMode::Shared => *shared = shared.saturating_sub(1),
                    LockMode::Exclusive => *exclusive = exclusive.saturating_sub(1),
                }
            }
        });
    }
}

impl StoreLock {
    /// Returns how this lock is held.
    pub fn mode(&self) -> LockMode {
        self.mode
    }
}

/// Opens (creating) `path` and locks it; with `wait` false, returns `None` instead of waiting.
///
/// # Errors
/// [`StoreError::LockConflict`] if this process holds the lock in a mode that would make
/// this call wait for itself.
fn acquire(path: &Path, mode: LockMode, wait: bool) -> Result<Option<StoreLock>> {
    let key = path.to_path_buf();
    match (held_mode(&key), mode) {
        (None, _) | (Some(LockMode::Shared), LockMode::Shared) => {}
        (Some(held), wanted) => {
            return Err(StoreError::LockConflict {
                path: key,
                held,
                wanted,
            });
        }
    }
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
            Ok(()) => {
                with_held(|held| {
                    let (shared, exclusive) = held.entry(key.clone()).or_default();
                    match mode {
                        LockMode::Shared => *shared += 1,
                        LockMode::Exclusive => *exclusive += 1,
                    }
                });
                return Ok(Some(StoreLock {
                    _file: file,
                    mode,
                    key,
                }));
            }
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
    /// # Errors
    /// [`StoreError::LockConflict`] if this process already holds the store lock, I/O errors
    /// opening or locking `kiln/lock`.
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

    /// Takes the store lock exclusive for gc or prune, unless this process already holds it
    /// exclusive (then returns `None` and the caller's lock covers the work).
    pub(super) fn lock_for_maintenance(&self) -> Result<Option<StoreLock>> {
        if held_mode(&self.lock_path()) == Some(LockMode::Exclusive) {
            return Ok(None);
        }
        self.lock_exclusive().map(Some)
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
    fn this_process_never_waits_for_itself() {
        let (_dir, store) = temp_store();
        let shared = store.lock_shared().expect("shared");
        let again = store.lock_shared().expect("a second shared lock is fine");
        match store.lock_exclusive() {
            Err(StoreError::LockConflict { held, wanted, .. }) => {
                assert_eq!((held, wanted), (LockMode::Shared, LockMode::Exclusive));
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        assert!(matches!(store.gc(), Err(StoreError::LockConflict { .. })));
        drop((shared, again));
        let exclusive = store.lock_exclusive().expect("exclusive");
        assert!(matches!(
            store.lock_shared(),
            Err(StoreError::LockConflict { .. })
        ));
        // gc and prune run under the caller's exclusive lock instead of waiting for it.
        store.gc().expect("gc under the caller's lock");
        store
            .prune("cache", &crate::store::PruneOptions::default())
            .expect("prune too");
        drop(exclusive);
        store.gc().expect("gc takes the lock itself");
    }
}
