//! Atomic file replacement and the temp area `kiln/tmp`.
//!
//! Consumes destination paths and bytes; produces files that appear under their final name
//! whole or not at all (temp file in `kiln/tmp`, fsync, rename, fsync of the parent). Temp
//! entries are named `<pid>-…` so that [`remove_stale`] can tell a dead process's leftovers
//! from a live one's. This module must never remove an entry whose process may still be alive;
//! processes sharing a store must therefore share a pid namespace.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use super::{io_error, Result};

/// Returns the prefix of this process's temp entries: `<pid>-`.
pub(super) fn temp_prefix() -> String {
    format!("{}-", std::process::id())
}

/// Creates an empty temp file in `tmp` named after this process.
pub(super) fn temp_file(tmp: &Path, suffix: &str) -> Result<tempfile::NamedTempFile> {
    tempfile::Builder::new()
        .prefix(&temp_prefix())
        .suffix(suffix)
        .tempfile_in(tmp)
        .map_err(io_error("create a temp file in", tmp))
}

/// Writes `bytes` to a synced temp file in `tmp`.
fn synced_temp(tmp: &Path, dest: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile> {
    let mut file = temp_file(tmp, ".part")?;
    file.write_all(bytes)
        .map_err(io_error("write a temp file for", dest))?;
    file.as_file()
        .sync_all()
        .map_err(io_error("sync a temp file for", dest))?;
    Ok(file)
}

/// Replaces `dest` with `bytes` atomically: readers see the old content or the new, never a mix.
pub(super) fn write_atomic(tmp: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let file = synced_temp(tmp, dest, bytes)?;
    file.persist(dest)
        .map_err(|e| io_error("rename a temp file to", dest)(e.error))?;
    sync_parent(dest)
}

/// Replaces `dest` with `bytes` by rename, without fsync: a crash never shows a partial file,
/// but after a power loss the old content may come back. Only for advisory data (a record's
/// `last_used`), where a flush per cache hit would cost more than losing the update.
pub(super) fn replace_unsynced(tmp: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = temp_file(tmp, ".part")?;
    file.write_all(bytes)
        .map_err(io_error("write a temp file for", dest))?;
    file.persist(dest)
        .map_err(|e| io_error("rename a temp file to", dest)(e.error))?;
    Ok(())
}

/// Creates `dest` with `bytes` unless it already exists; returns true if and only if this
/// call created it. Two processes racing to create the same file both succeed, one of them
/// writing it.
pub(super) fn create_if_absent(tmp: &Path, dest: &Path, bytes: &[u8]) -> Result<bool> {
    if dest.exists() {
        return Ok(false);
    }
    let file = synced_temp(tmp, dest, bytes)?;
    match file.persist_noclobber(dest) {
        Ok(_) => {
            sync_parent(dest)?;
            Ok(true)
        }
        Err(e) if e.error.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(io_error("create", dest)(e.error)),
    }
}

/// Flushes the directory entry of `path` to disk, so a rename survives a power loss.
pub(super) fn sync_parent(path: &Path) -> Result<()> {
    let parent = path.parent().unwrap_or(Path::new("."));
    sync_dir(parent)
}

/// Flushes directory `dir` to disk.
pub(super) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error("sync directory", dir))
}

/// Returns the pid a temp entry name starts with, if it has the `<pid>-` form.
fn owner_pid(name: &str) -> Option<i32> {
    let (digits, _) = name.split_once('-')?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Returns true unless the process `pid` certainly does not exist.
fn pid_alive(pid: i32) -> bool {
    let Some(pid) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    // EPERM means the process exists but belongs to someone else: alive.
    !matches!(
        rustix::process::test_kill_process(pid),
        Err(rustix::io::Errno::SRCH)
    )
}

/// Removes every entry of `tmp` whose owning process is gone; returns how many it removed.
/// Entries not named `<pid>-…` are left alone: kiln did not make them.
pub(super) fn remove_stale(tmp: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(tmp) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error("list", tmp)(e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(io_error("list", tmp))?;
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(owner_pid) else {
            continue;
        };
        if pid_alive(pid) {
            continue;
        }
        let path = entry.path();
        remove_tree(&path).map_err(io_error("remove stale temp entry", &path))?;
        removed += 1;
    }
    Ok(removed)
}

/// Removes a file or a directory tree, making read-only directories writable first (layer
/// snapshots may hold directories with mode 0555, and overlayfs leaves a container's
/// `work/work` at mode 000, not empty after a volatile mount). A missing path is not an error.
///
/// # Errors
/// I/O errors other than the path missing.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(path);
    }
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            make_dirs_writable(path)?;
            std::fs::remove_dir_all(path)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Gives `dir` and every directory below it mode 0700, each before it is listed: overlayfs's
/// `work/work` (mode 000) holds `incompat/volatile` (mode 000) after a volatile mount.
fn make_dirs_writable(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        // The entry's own type: a symlink to a directory is not followed.
        if entry.file_type()?.is_dir() {
            make_dirs_writable(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pids() {
        let table: &[(&str, Option<i32>)] = &[
            ("123-abc.part", Some(123)),
            ("1-", Some(1)),
            ("-1-x", None),
            ("abc-1", None),
            ("123", None),
            ("99999999999-x", None),
        ];
        for (name, expected) in table {
            assert_eq!(owner_pid(name), *expected, "{name}");
        }
    }

    #[test]
    fn stale_entries_of_dead_processes_go_and_live_ones_stay() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let mut child = std::process::Command::new("true")
            .spawn()
            .expect("spawns true");
        let dead = child.id();
        child.wait().expect("waits");
        let stale_file = dir.path().join(format!("{dead}-blob.part"));
        std::fs::write(&stale_file, b"half").expect("writes");
        let stale_dir = dir.path().join(format!("{dead}-snap"));
        std::fs::create_dir_all(stale_dir.join("ro/inner")).expect("mkdir");
        std::fs::set_permissions(stale_dir.join("ro"), std::fs::Permissions::from_mode(0o555))
            .expect("chmod");
        // What a volatile overlay leaves in its work dir: mode-000 directories, not empty.
        let volatile = stale_dir.join("work/work/incompat/volatile");
        std::fs::create_dir_all(&volatile).expect("mkdir");
        std::fs::write(volatile.join("dirty"), b"").expect("writes");
        for dir in [
            "work/work/incompat/volatile",
            "work/work/incompat",
            "work/work",
        ] {
            std::fs::set_permissions(stale_dir.join(dir), std::fs::Permissions::from_mode(0o000))
                .expect("chmod");
        }
        let live = dir.path().join(format!("{}x", temp_prefix()));
        std::fs::write(&live, b"mine").expect("writes");
        let foreign = dir.path().join("notes.txt");
        std::fs::write(&foreign, b"?").expect("writes");

        assert_eq!(remove_stale(dir.path()).expect("cleans"), 2);
        assert!(!stale_file.exists());
        assert!(!stale_dir.exists());
        assert!(live.exists());
        assert!(foreign.exists());
    }

    #[test]
    fn create_if_absent_keeps_the_first() {
        let dir = tempfile::tempdir().expect("temp dir");
        let dest = dir.path().join("f");
        assert!(create_if_absent(dir.path(), &dest, b"one").expect("creates"));
        assert!(!create_if_absent(dir.path(), &dest, b"two").expect("keeps"));
        assert_eq!(std::fs::read(&dest).expect("reads"), b"one");
        write_atomic(dir.path(), &dest, b"three").expect("replaces");
        assert_eq!(std::fs::read(&dest).expect("reads"), b"three");
    }
}
