//! Unpacked layer snapshots under `kiln/snapshots/<diff_id hex>/`.
//!
//! Consumes directories filled in `kiln/tmp` (by the layer unpacker or writer); produces
//! snapshot paths named by the layer's diff_id. A snapshot appears by one rename, so it is
//! either whole or absent; two processes committing the same diff_id both succeed and one
//! copy is kept. This module must never modify a committed snapshot.

use std::io;
use std::path::{Path, PathBuf};

use super::{atomic, io_error, Result, Store};
use crate::digest::Digest;

impl Store {
    /// Creates an empty directory in `kiln/tmp`, named after this process so that it is
    /// removed by a later [`Store::open`] if this process dies. Dropping the `TempDir` removes it.
    ///
    /// # Errors
    /// I/O errors.
    pub fn temp_dir(&self) -> Result<tempfile::TempDir> {
        let tmp = self.tmp_dir();
        tempfile::Builder::new()
            .prefix(&atomic::temp_prefix())
            .suffix(".dir")
            .tempdir_in(&tmp)
            .map_err(io_error("create a temp directory in", &tmp))
    }

    /// Returns where the snapshot of the layer with `diff_id` is or would be.
    pub fn snapshot_path(&self, diff_id: &Digest) -> PathBuf {
        self.snapshots_dir().join(diff_id.hex())
    }

    /// Returns true if and only if the snapshot of `diff_id` has been committed.
    pub fn has_snapshot(&self, diff_id: &Digest) -> bool {
        self.snapshot_path(diff_id).is_dir()
    }

    /// Makes `dir` (from [`Store::temp_dir`], filled with the layer's files) the snapshot of
    /// `diff_id`; returns its path. If the snapshot already exists, `dir` is discarded.
    ///
    /// A snapshot is a cache of a verified, fsynced blob, so it is not synced itself (a
    /// `syncfs` cost hundreds of milliseconds a step, which is the build's whole budget): a
    /// process that dies leaves no partial snapshot, because the rename comes last and temp
    /// dirs of dead processes are removed; only a kernel crash or power loss right after a
    /// build can leave one incomplete, as with BuildKit's overlay snapshots, and
    /// `kiln cache prune` removes it.
    ///
    /// # Errors
    /// I/O errors; `dir` is removed after one.
    pub fn commit_snapshot(&self, dir: tempfile::TempDir, diff_id: &Digest) -> Result<PathBuf> {
        // keep() hands the path over, so read-only directories inside are removed with
        // remove_tree rather than left behind by TempDir's drop.
        self.commit_snapshot_dir(&dir.keep(), diff_id)
    }

    /// [`Store::commit_snapshot`] for a directory inside one of [`Store::temp_dir`]'s (a RUN's
    /// upper directory, see `layer::adopt_upper`), which is moved or else removed.
    ///
    /// # Errors
    /// I/O errors; `dir` is removed after one.
    pub fn commit_snapshot_dir(&self, dir: &Path, diff_id: &Digest) -> Result<PathBuf> {
        let dest = self.snapshot_path(diff_id);
        let result = self.rename_snapshot(dir, &dest);
        if result.is_err() || dir.exists() {
            // An error, or another process committed the same diff_id first.
            let _ = atomic::remove_tree(dir);
        }
        result.map(|()| dest)
    }

    fn rename_snapshot(&self, temp: &Path, dest: &Path) -> Result<()> {
        if dest.is_dir() {
            return Ok(());
        }
        match std::fs::rename(temp, dest) {
            Ok(()) => Ok(()),
            Err(e) if dest.is_dir() && is_exists(&e) => Ok(()),
            Err(e) => Err(io_error("rename a temp directory to", dest)(e)),
        }
    }
}

fn is_exists(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(code) if code == rustix::io::Errno::EXIST.raw_os_error()
            || code == rustix::io::Errno::NOTEMPTY.raw_os_error()
    )
}

/// Returns the bytes of the regular files and symlinks under `root`, counting each hardlinked
/// inode once. Entries that vanish or cannot be read count as zero.
pub(super) fn tree_size(root: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut seen = std::collections::HashSet::new();
    let mut total = 0u64;
    for entry in walkdir::WalkDir::new(root).into_iter().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        if meta.is_dir() {
            continue;
        }
        if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
            continue;
        }
        total = total.saturating_add(meta.len());
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;

    #[test]
    fn commit_then_commit_again_keeps_the_first() {
        use std::os::unix::fs::PermissionsExt;
        let (_dir, store) = temp_store();
        let diff_id = Digest::of(b"layer");
        assert!(!store.has_snapshot(&diff_id));

        let first = store.temp_dir().expect("temp dir");
        std::fs::write(first.path().join("file"), b"first").expect("writes");
        let path = store.commit_snapshot(first, &diff_id).expect("commits");
        assert_eq!(path, store.snapshot_path(&diff_id));
        assert!(store.has_snapshot(&diff_id));

        let second = store.temp_dir().expect("temp dir");
        std::fs::create_dir(second.path().join("ro")).expect("mkdir");
        std::fs::write(second.path().join("ro/file"), b"second").expect("writes");
        std::fs::set_permissions(
            second.path().join("ro"),
            std::fs::Permissions::from_mode(0o555),
        )
        .expect("chmod");
        store
            .commit_snapshot(second, &diff_id)
            .expect("commits again");
        assert_eq!(std::fs::read(path.join("file")).expect("reads"), b"first");
        assert_eq!(
            std::fs::read_dir(store.tmp_dir()).expect("lists").count(),
            0
        );
        assert_eq!(tree_size(&path), 5);
    }
}
