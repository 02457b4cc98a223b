//! The layer of a RUN step, read from the overlayfs upper directory it wrote into.
//!
//! Consumes the upper directory of the step's overlay mount (after the mount is gone) and, for
//! the ignore rule only, the snapshots that were its lower directories. Produces the
//! [`LayerEntry`] list that [`super::write_layer`] turns into the step's layer. Must never scan
//! the whole rootfs (the upper directory is walked once; the lower snapshots are only looked up
//! at ignored paths and their parents), write anything, or follow a symlink.
//!
//! # From upper directory to entries
//!
//! Overlayfs (Documentation/filesystems/overlayfs.rst) records a change in the upper directory
//! as follows, and each becomes an entry at the same path:
//!
//! - a whiteout is a character device 0/0, or (newer kernels) a zero-size regular file carrying
//!   the xattr `trusted.overlay.whiteout` (`user.overlay.whiteout` with `userxattr`) →
//!   [`EntryKind::Whiteout`], mode 0, owner 0:0, the whiteout's mtime. Overlayfs shares one
//!   whiteout inode between many names, so whiteouts never count as hard links;
//! - a directory whose lower counterpart is hidden carries `trusted.overlay.opaque=y`
//!   (`user.overlay.opaque=y`) → [`EntryKind::Dir`] plus [`EntryKind::Opaque`] with the
//!   directory's mode, owner and mtime. The value `x` only says the directory holds xattr
//!   whiteouts; such a directory is merged, not opaque;
//! - regular files (content read from the upper file when the layer is written), symlinks,
//!   fifos and device nodes → the entry of that kind with permission bits (set-id and sticky
//!   kept), owner, mtime with nanoseconds, and every xattr except overlayfs's own
//!   (`trusted.overlay.*`, `user.overlay.*`); xattr names that are not UTF-8 are left out;
//! - sockets are left out: a tar cannot hold them (BuildKit leaves them out too);
//! - non-directories sharing (dev, ino) are one file: the name that comes first in the layer's
//!   order is the file, the others are [`EntryKind::Hardlink`]s to it.
//!
//! The overlay must be mounted with `redirect_dir` and `metacopy` off (their defaults), so a
//! changed file is always whole in the upper directory and a renamed directory is copied.
//!
//! # The ignore rule
//!
//! The sandbox creates mount points ([`DiffOptions::ignore`]: `etc/hosts`, `dev`, RUN mount
//! targets, …) in the overlay when the lower layers lack them; they must not reach the layer.
//! An ignored path is dropped when, in the upper directory, it is an empty regular file or an
//! empty, non-opaque directory, and the lower snapshots have nothing at that path. Then each
//! directory that lost a child this way is dropped too when it is left empty, is not opaque,
//! and either is not in the lower snapshots or is a directory there with the same mode and
//! owner (so it was only copied up to hold the mount point; its mtime is all that is lost).
//! Everything else at an ignored path is kept: it is a change the step made.

use super::view::{FileKind, Follow, RootfsView};
use super::write::compare_entries;
use super::{
    check_path, fs_err, EntryKind, LayerEntry, LayerError, Result, Timestamp, OPAQUE_XATTR_ROOT,
    OPAQUE_XATTR_USER,
};
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// How [`diff_upper`] reads an upper directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DiffOptions {
    /// Rootfs paths (relative, e.g. `etc/hosts`; leading and trailing `/` are ignored) the
    /// sandbox mounted over; see the module doc for when they are dropped.
    pub ignore: Vec<String>,
    /// The snapshot directories the upper directory was mounted over, lowest first; only
    /// looked up at ignored paths and their parents.
    pub lower: Vec<PathBuf>,
    /// For rootless builds: the ids the sandbox's user namespace mapped. A host owner inside
    /// one of its extents becomes the container id it stands for; any other becomes 65534
    /// (`nobody`, the kernel's overflow id). `None` reports ids as stored.
    pub id_map: Option<IdMap>,
}

/// The user namespace's id maps, uid and gid apart (uid_map and gid_map in user_namespaces(7)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    /// The uid extents.
    pub uids: Vec<IdExtent>,
    /// The gid extents.
    pub gids: Vec<IdExtent>,
}

/// `count` ids from `container` inside the namespace are `host`… outside it: one line of
/// a `/proc/PID/uid_map`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdExtent {
    /// The first id inside.
    pub container: u32,
    /// The host id it maps to.
    pub host: u32,
    /// How many consecutive ids.
    pub count: u32,
}

impl IdExtent {
    /// The container id host id `id` stands for, if this extent maps it.
    fn container_id(&self, id: u32) -> Option<u32> {
        let offset = id.checked_sub(self.host).filter(|n| *n < self.count)?;
        self.container.checked_add(offset)
    }
}

/// The id a file gets when its host owner is outside the mapped range (the kernel's overflow
/// id).
const OVERFLOW_ID: u32 = 65534;

const WHITEOUT_XATTR_ROOT: &str = "trusted.overlay.whiteout";
const WHITEOUT_XATTR_USER: &str = "user.overlay.whiteout";

/// One upper-directory entry with what the later passes need.
struct Item {
    entry: LayerEntry,
    opaque: bool,
    /// `(dev, ino)` of a non-directory, non-whiteout with more than one name.
    link_key: Option<(u64, u64)>,
    /// True if and only if this is a regular file of size 0.
    empty_file: bool,
    /// Permission bits, uid and gid as stored (before `id_map`), to compare with the lower
    /// snapshots, which store them the same way.
    stored: (u32, u32, u32),
}

/// Reads the overlayfs upper directory `upper` as the entries of the layer it represents; see
/// the module doc for the mapping and the ignore rule. The result is in the layer's order.
///
/// # Errors
/// [`LayerError::Fs`] when the upper directory (or a lower snapshot) cannot be read,
/// [`LayerError::NonUtf8Name`] for a file name or symlink target that is not UTF-8,
/// [`LayerError::InvalidPath`] for a name a layer cannot hold (one starting with `.wh.`).
pub fn diff_upper(upper: &Path, options: &DiffOptions) -> Result<Vec<LayerEntry>> {
    let mut items = scan(upper, options)?;
    drop_ignored(&mut items, options)?;
    link_shared_inodes(&mut items);
    let mut entries = Vec::with_capacity(items.len());
    for item in items {
        if item.opaque {
            entries.push(LayerEntry {
                kind: EntryKind::Opaque,
                xattrs: Vec::new(),
                ..item.entry.clone()
            });
        }
        entries.push(item.entry);
    }
    entries.sort_by(compare_entries);
    Ok(entries)
}

/// Maps a stored (host) id to the container's id through `extents`, when there is a map.
fn container_id(id: u32, extents: Option<&[IdExtent]>) -> u32 {
    match extents {
        None => id,
        Some(extents) => extents
            .iter()
            .find_map(|extent| extent.container_id(id))
            .unwrap_or(OVERFLOW_ID),
    }
}

pub(super) fn is_overlay_xattr(name: &str) -> bool {
    name.starts_with("trusted.overlay.") || name.starts_with("user.overlay.")
}

/// Walks `upper` once and classifies every entry.
fn scan(upper: &Path, options: &DiffOptions) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for dirent in walkdir::WalkDir::new(upper)
        .min_depth(1)
        .follow_links(false)
    {
        let dirent = dirent.map_err(walk_error(upper))?;
        let host = dirent.path();
        let rel = host
            .strip_prefix(upper)
            .ok()
            .and_then(Path::to_str)
            .ok_or_else(|| LayerError::NonUtf8Name {
                path: host.to_path_buf(),
            })?
            .to_string();
        check_path(&rel).map_err(|problem| LayerError::InvalidPath {
            path: rel.clone(),
            problem,
        })?;
        let meta = dirent
            .metadata()
            .map_err(|e| fs_err("inspect", host)(std::io::Error::from(e)))?;
        if let Some(item) = classify(host, rel, &meta, options.id_map.as_ref())? {
            items.push(item);
        }
    }
    Ok(items)
}

/// The error for a walk below `root` that failed at some path.
pub(super) fn walk_error(root: &Path) -> impl Fn(walkdir::Error) -> LayerError + '_ {
    move |e| {
        let path = e.path().unwrap_or(root).to_path_buf();
        fs_err("read", &path)(std::io::Error::from(e))
    }
}

/// The item for one upper-directory entry; `None` for what a layer leaves out (sockets).
fn classify(
    host: &Path,
    rel: String,
    meta: &std::fs::Metadata,
    id_map: Option<&IdMap>,
) -> Result<Option<Item>> {
    let ft = meta.file_type();
    if ft.is_socket() {
        return Ok(None);
    }
    let all_xattrs = read_xattrs(host)?;
    let has = |name: &str| all_xattrs.iter().any(|(n, _)| n == name);
    let value_is = |name: &str, want: &[u8]| all_xattrs.iter().any(|(n, v)| n == name && v == want);
    let rdev = meta.rdev();
    let mtime = Timestamp {
        secs: meta.mtime(),
        nanos: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
    };
    let whiteout = (ft.is_char_device() && rdev == 0)
        || (ft.is_file()
            && meta.len() == 0
            && (has(WHITEOUT_XATTR_ROOT) || has(WHITEOUT_XATTR_USER)));
    let stored = (meta.mode() & 0o7777, meta.uid(), meta.gid());
    if whiteout {
        return Ok(Some(Item {
            entry: LayerEntry {
                path: rel,
                kind: EntryKind::Whiteout,
                mode: 0,
                uid: 0,
                gid: 0,
                mtime,
                xattrs: Vec::new(),
            },
            opaque: false,
            link_key: None,
            empty_file: false,
            stored,
        }));
    }
    let device = || (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let kind = if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_file() {
        EntryKind::File {
            source: host.to_path_buf(),
        }
    } else if ft.is_symlink() {
        let target = std::fs::read_link(host).map_err(fs_err("read the link", host))?;
        let target =
            target
                .into_os_string()
                .into_string()
                .map_err(|_| LayerError::NonUtf8Name {
                    path: host.to_path_buf(),
                })?;
        EntryKind::Symlink { target }
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_char_device() {
        let (major, minor) = device();
        EntryKind::CharDevice { major, minor }
    } else {
        let (major, minor) = device();
        EntryKind::BlockDevice { major, minor }
    };
    let opaque = matches!(kind, EntryKind::Dir)
        && (value_is(OPAQUE_XATTR_ROOT, b"y") || value_is(OPAQUE_XATTR_USER, b"y"));
    let link_key = (!ft.is_dir() && meta.nlink() > 1).then(|| (meta.dev(), meta.ino()));
    let empty_file = ft.is_file() && meta.len() == 0;
    let xattrs = all_xattrs
        .into_iter()
        .filter(|(name, _)| !is_overlay_xattr(name))
        .collect();
    Ok(Some(Item {
        entry: LayerEntry {
            path: rel,
            kind,
            mode: stored.0,
            uid: container_id(stored.1, id_map.map(|map| map.uids.as_slice())),
            gid: container_id(stored.2, id_map.map(|map| map.gids.as_slice())),
            mtime,
            xattrs,
        },
        opaque,
        link_key,
        empty_file,
        stored,
    }))
}

/// True if and only if `e` says the file system has no xattrs (or none of this namespace).
fn no_xattrs(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::NODATA
}

/// Calls `read` with a buffer of the size it asks for (an empty buffer asks), again when the
/// value grew in between; `None` when there is nothing to read.
fn read_sized<T: Copy + Default>(
    host: &Path,
    read: impl Fn(&mut [T]) -> rustix::io::Result<usize>,
) -> Result<Option<Vec<T>>> {
    let fail = |e: rustix::io::Errno| fs_err("read the xattrs of", host)(e.into());
    // A value that keeps changing size between the two calls is given up on after a few rounds.
    for _ in 0..8 {
        let size = match read(&mut []) {
            Ok(size) => size,
            Err(e) if no_xattrs(e) => return Ok(None),
            Err(e) => return Err(fail(e)),
        };
        let mut buffer = vec![T::default(); size];
        match read(&mut buffer) {
            Ok(n) => {
                buffer.truncate(n);
                return Ok(Some(buffer));
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) if no_xattrs(e) => return Ok(None),
            Err(e) => return Err(fail(e)),
        }
    }
    Err(fail(rustix::io::Errno::RANGE))
}

/// The names of the xattrs of `host` (not following a symlink) that are UTF-8.
pub(super) fn list_xattr_names(host: &Path) -> Result<Vec<String>> {
    let Some(list) = read_sized(host, |buffer: &mut [u8]| {
        rustix::fs::llistxattr(host, buffer)
    })?
    else {
        return Ok(Vec::new());
    };
    // llistxattr(2) fills the buffer with NUL-terminated names.
    Ok(list
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .filter_map(|name| std::str::from_utf8(name).ok())
        .map(str::to_string)
        .collect())
}

/// All xattrs of `host` (not following a symlink), sorted by name.
fn read_xattrs(host: &Path) -> Result<Vec<(String, Vec<u8>)>> {
    let mut out = Vec::new();
    for name in list_xattr_names(host)? {
        let value = read_sized(host, |buffer: &mut [u8]| {
            rustix::fs::lgetxattr(host, name.as_str(), buffer)
        })?;
        // None: removed between the listing and the read.
        if let Some(value) = value {
            out.push((name, value));
        }
    }
    out.sort();
    Ok(out)
}

fn parent_of(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

/// Applies the ignore rule of the module doc.
fn drop_ignored(items: &mut Vec<Item>, options: &DiffOptions) -> Result<()> {
    let ignore: HashSet<&str> = options
        .ignore
        .iter()
        .map(|p| p.trim_matches('/'))
        .filter(|p| !p.is_empty())
        .collect();
    if ignore.is_empty() {
        return Ok(());
    }
    let lower = RootfsView::new(options.lower.clone());
    let mut children: HashMap<String, usize> = HashMap::new();
    for item in items.iter() {
        if let Some(parent) = parent_of(&item.entry.path) {
            *children.entry(parent.to_string()).or_default() += 1;
        }
    }
    // Deepest first, so a directory is judged after all its children.
    let mut order: Vec<usize> = (0..items.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(items[i].entry.path.matches('/').count()));
    let mut dropped = vec![false; items.len()];
    let mut lost_child: HashSet<String> = HashSet::new();
    for i in order {
        let item = &items[i];
        let path = item.entry.path.as_str();
        let empty = match item.entry.kind {
            EntryKind::Dir => !item.opaque && children.get(path).copied().unwrap_or(0) == 0,
            _ => item.empty_file,
        };
        if !empty {
            continue;
        }
        let drop = if ignore.contains(path) {
            lower.lookup(path, Follow::NotLast)?.is_none()
        } else if lost_child.contains(path) {
            match lower.lookup(path, Follow::NotLast)? {
                None => true,
                Some(found) => {
                    let m = &found.metadata;
                    m.kind == FileKind::Dir && (m.mode, m.uid, m.gid) == item.stored
                }
            }
        } else {
            false
        };
        if drop {
            dropped[i] = true;
            if let Some(parent) = parent_of(path) {
                if let Some(count) = children.get_mut(parent) {
                    *count = count.saturating_sub(1);
                }
                lost_child.insert(parent.to_string());
            }
        }
    }
    let mut index = 0;
    items.retain(|_| {
        index += 1;
        !dropped[index - 1]
    });
    Ok(())
}

/// Turns every name of a shared inode but the first (in layer order) into a hard link to it.
fn link_shared_inodes(items: &mut [Item]) {
    let mut linked: Vec<usize> = (0..items.len())
        .filter(|&i| items[i].link_key.is_some())
        .collect();
    if linked.is_empty() {
        return;
    }
    linked.sort_by(|&a, &b| compare_entries(&items[a].entry, &items[b].entry));
    let mut first: HashMap<(u64, u64), String> = HashMap::new();
    for i in linked {
        let Some(key) = items[i].link_key else {
            continue;
        };
        match first.get(&key) {
            Some(target) => {
                items[i].entry.kind = EntryKind::Hardlink {
                    target: target.clone(),
                };
            }
            None => {
                first.insert(key, items[i].entry.path.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_id_table() {
        let extent = |container, host, count| IdExtent {
            container,
            host,
            count,
        };
        // Rootless with subordinate ranges: the caller is root, its range the rest.
        let ranges = [extent(0, 1000, 1), extent(1, 100_000, 65535)];
        let single = [extent(0, 1000, 1)];
        let top = [extent(0, u32::MAX, 1)];
        let cases: &[(u32, Option<&[IdExtent]>, u32)] = &[
            (0, None, 0),
            (100_000, None, 100_000),
            (1000, Some(&ranges), 0),
            (100_000, Some(&ranges), 1),
            (100_999, Some(&ranges), 1000),
            (165_534, Some(&ranges), 65535),
            (165_535, Some(&ranges), OVERFLOW_ID),
            (99_999, Some(&ranges), OVERFLOW_ID),
            (0, Some(&ranges), OVERFLOW_ID),
            (1000, Some(&single), 0),
            (0, Some(&single), OVERFLOW_ID),
            (u32::MAX, Some(&top), 0),
        ];
        for (id, extents, want) in cases {
            assert_eq!(container_id(*id, *extents), *want, "{id} {extents:?}");
        }
    }

    #[test]
    fn overlay_xattrs_are_recognized() {
        let cases = [
            ("trusted.overlay.opaque", true),
            ("user.overlay.origin", true),
            ("trusted.overlayfoo", false),
            ("user.kiln", false),
            ("security.capability", false),
        ];
        for (name, want) in cases {
            assert_eq!(is_overlay_xattr(name), want, "{name}");
        }
    }

    fn paths(entries: &[LayerEntry]) -> Vec<String> {
        entries
            .iter()
            .map(|e| match e.kind {
                EntryKind::Dir => format!("{}/", e.path),
                EntryKind::Opaque => format!("{} (opaque)", e.path),
                EntryKind::Whiteout => format!("{} (whiteout)", e.path),
                _ => e.path.clone(),
            })
            .collect()
    }

    /// The ignore rule without privileges: stubs and their stub-only parents go, real changes
    /// and paths the lower layers have stay.
    #[test]
    fn ignore_rule_table() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let lower = tmp.path().join("lower");
        let upper = tmp.path().join("upper");
        for dir in ["tmp", "srv/has", "var"] {
            std::fs::create_dir_all(lower.join(dir)).unwrap();
        }
        std::fs::write(lower.join("srv/has/stub"), b"").unwrap();
        for dir in ["etc", "proc", "tmp/cache", "srv/has", "var/mnt", "data"] {
            std::fs::create_dir_all(upper.join(dir)).unwrap();
        }
        std::fs::write(upper.join("etc/hosts"), b"").unwrap();
        // Exists below: the upper copy is a real change.
        std::fs::write(upper.join("srv/has/stub"), b"").unwrap();
        // Not empty: the step wrote it.
        std::fs::write(upper.join("data/written"), b"x").unwrap();
        // var differs from the lower var (mode), so it stays although its stub goes.
        std::fs::set_permissions(upper.join("var"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
        // tmp matches the lower tmp: only copied up for the stub.
        let lower_mode = std::fs::metadata(lower.join("tmp")).unwrap().permissions();
        std::fs::set_permissions(upper.join("tmp"), lower_mode).unwrap();
        let options = DiffOptions {
            ignore: [
                "/etc/hosts",
                "proc/",
                "tmp/cache",
                "srv/has/stub",
                "var/mnt",
                "data/written",
            ]
            .map(String::from)
            .to_vec(),
            lower: vec![lower],
            id_map: None,
        };
        let entries = diff_upper(&upper, &options).unwrap();
        assert_eq!(
            paths(&entries),
            [
                "data/",
                "data/written",
                "srv/",
                "srv/has/",
                "srv/has/stub",
                "var/"
            ]
        );
        let all = diff_upper(&upper, &DiffOptions::default()).unwrap();
        assert_eq!(all.len(), 12, "{:?}", paths(&all));
    }

    #[test]
    fn names_a_layer_cannot_hold_are_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join(".wh.x"), b"").unwrap();
        let err = diff_upper(tmp.path(), &DiffOptions::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid layer path \".wh.x\": expected no component starting with '.wh.'"
        );
    }
}
