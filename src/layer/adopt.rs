//! Turns the overlayfs upper directory of a RUN into the snapshot of the layer read from it.
//!
//! Consumes the upper directory (after the overlay is gone) and the entries [`super::diff_upper`]
//! read from it, as the caller finished them (runtime directories added, mtimes clamped).
//! Produces, in place, the directory [`super::unpack`] would make from the layer those
//! entries become, so that it can be committed as the layer's snapshot by one rename.
//!
//! Why: writing the snapshot from the entries made a second copy of every file the command
//! wrote, and then removed the first: for a step writing 3,000 files, 0.2-0.4 s on top of the
//! command, and on ext4 without a journal the removal also slowed every file the next step
//! created (see `store::mark_top_of_unrelated_trees`). BuildKit's overlay snapshotter commits
//! the upper directory the same way.
//!
//! What it changes, and nothing else (file contents, modes and owners are already the layer's):
//! - paths the layer leaves out (mount points the ignore rule dropped, sockets) are removed;
//! - directories the layer has and the upper lacks (the runtime's `/dev`, `/proc`, `/sys`) are
//!   created;
//! - every entry gets the layer's mtime (whole seconds, SOURCE_DATE_EPOCH-clamped), directories
//!   after their children;
//! - overlayfs's own xattrs (`origin`, `impure`, `uuid`, …) are removed and opaque directories
//!   carry the snapshot's opaque xattr, as [`super::snapshot`] writes them.
//!
//! The root keeps its mode: like every snapshot root made in `kiln/tmp`, it was created with
//! the process's umask.
//!
//! Must never follow a symlink, touch anything outside `upper`, or change what the layer blob
//! reads (file contents), so it may run before the blob is written. Where it cannot make the
//! directory exact (an xattr-form whiteout, an entry missing from the upper that is not a
//! directory) it answers `false`, and the caller lets the snapshot be unpacked from the blob.

use super::diff::{is_overlay_xattr, list_xattr_names, walk_error};
use super::snapshot::{opaque_xattr, set_mtime};
use super::{fs_err, EntryKind, LayerEntry, Result};
use super::{OPAQUE_XATTR_ROOT, OPAQUE_XATTR_USER};
use rustix::fs::{Mode, XattrFlags};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

/// Makes `upper` the snapshot of the layer `entries` describe (see the module doc). Returns
/// false when it cannot.
///
/// # Errors
/// [`super::LayerError::Fs`] when a change fails; `upper` is scratch then.
pub fn adopt_upper(upper: &Path, entries: &[LayerEntry]) -> Result<bool> {
    let is_marker = |entry: &&LayerEntry| matches!(entry.kind, EntryKind::Opaque);
    let opaque: HashSet<&str> = entries
        .iter()
        .filter(is_marker)
        .map(|entry| entry.path.as_str())
        .collect();
    let wanted: HashMap<&str, &LayerEntry> = entries
        .iter()
        .filter(|entry| !is_marker(entry))
        .map(|entry| (entry.path.as_str(), entry))
        .collect();
    if !create_missing_dirs(upper, &wanted)? {
        return Ok(false);
    }
    let opaque_name = opaque_xattr(crate::sandbox::IdMapping::detect().privileged());
    // Children before their directory: removing a child or setting its time would change
    // the directory's mtime after it was set.
    for dirent in walkdir::WalkDir::new(upper)
        .min_depth(1)
        .follow_links(false)
        .contents_first(true)
    {
        let dirent = dirent.map_err(walk_error(upper))?;
        let host = dirent.path();
        let Some(rel) = host.strip_prefix(upper).ok().and_then(Path::to_str) else {
            return Ok(false);
        };
        let Some(entry) = wanted.get(rel) else {
            let removed = if dirent.file_type().is_dir() {
                std::fs::remove_dir(host)
            } else {
                std::fs::remove_file(host)
            };
            removed.map_err(fs_err("remove", host))?;
            continue;
        };
        let meta = dirent
            .metadata()
            .map_err(|e| fs_err("inspect", host)(std::io::Error::from(e)))?;
        if matches!(entry.kind, EntryKind::Whiteout) {
            // The snapshot's whiteout is a 0/0 character device; overlayfs's xattr form would
            // need its parent marked, which a snapshot never is.
            if !(meta.file_type().is_char_device() && meta.rdev() == 0) {
                return Ok(false);
            }
            continue;
        }
        if !settle_xattrs(host, opaque.contains(rel).then_some(opaque_name))? {
            return Ok(false);
        }
        if !matches!(entry.kind, EntryKind::Hardlink { .. }) {
            set_mtime(host, entry.mtime)?;
        }
    }
    settle_xattrs(upper, None)?;
    Ok(true)
}

/// Creates the directories the layer has and `upper` lacks, parents first; false when a
/// missing entry is not a directory.
fn create_missing_dirs(upper: &Path, wanted: &HashMap<&str, &LayerEntry>) -> Result<bool> {
    let mut missing: Vec<&LayerEntry> = Vec::new();
    for entry in wanted.values() {
        let host = upper.join(&entry.path);
        match std::fs::symlink_metadata(&host) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !matches!(entry.kind, EntryKind::Dir) {
                    return Ok(false);
                }
                missing.push(entry);
            }
            Err(e) => return Err(fs_err("inspect", &host)(e)),
        }
    }
    missing.sort_by_key(|entry| entry.path.matches('/').count());
    for entry in missing {
        let host = upper.join(&entry.path);
        std::fs::create_dir(&host).map_err(fs_err("create", &host))?;
        rustix::fs::chmod(&host, Mode::from_raw_mode(entry.mode & 0o7777))
            .map_err(|e| fs_err("set the mode of", &host)(e.into()))?;
        // As the snapshot writer: the owner where this process may give it.
        let _ = std::os::unix::fs::lchown(&host, Some(entry.uid), Some(entry.gid));
    }
    Ok(true)
}

/// Removes overlayfs's xattrs from `host` and, for an opaque directory, sets `opaque` (the
/// snapshot's marker) to `y`; false when `host` holds overlayfs state a snapshot cannot
/// (xattr-form whiteouts below it, marked by an opaque value `x`).
fn settle_xattrs(host: &Path, opaque: Option<&str>) -> Result<bool> {
    for name in list_xattr_names(host)? {
        if !is_overlay_xattr(&name) {
            continue;
        }
        if name == OPAQUE_XATTR_ROOT || name == OPAQUE_XATTR_USER {
            let mut value = [0u8; 1];
            if matches!(rustix::fs::lgetxattr(host, name.as_str(), &mut value), Ok(1) if value[0] == b'x')
            {
                return Ok(false);
            }
        }
        match rustix::fs::lremovexattr(host, name.as_str()) {
            Ok(()) | Err(rustix::io::Errno::NODATA) => {}
            Err(e) => return Err(fs_err("remove an xattr of", host)(e.into())),
        }
    }
    if let Some(name) = opaque {
        rustix::fs::lsetxattr(host, name, b"y", XattrFlags::empty())
            .map_err(|e| fs_err("mark opaque", host)(e.into()))?;
    }
    Ok(true)
}
