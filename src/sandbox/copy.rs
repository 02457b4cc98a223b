//! The root filesystem without overlayfs: the snapshots merged by copying into the target
//! directory, and after the command every change written into `upper` the way overlayfs
//! would have (whole changed entries with their parents, whiteouts as 0/0 character devices),
//! so the layer differ reads the same kind of upper directory either way.
//!
//! Consumes snapshot directories in overlay format (whiteouts as 0/0 character devices, opaque
//! directories marked by `trusted.overlay.opaque=y` or `user.overlay.opaque=y`), an empty
//! target and an empty upper directory. Produces the merged tree in the target, then the upper
//! directory. Must never follow a symlink, and never write outside target and upper. This is
//! the slow path (a copy and a full scan per command), for kernels that refuse overlay mounts.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The xattrs marking an opaque directory in a snapshot (root, then rootless).
const OPAQUE: [&str; 2] = ["trusted.overlay.opaque", "user.overlay.opaque"];

/// What an entry looked like right after the merge; a difference later is a change.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    size: u64,
    mtime: (i64, i64),
    rdev: u64,
    link: Option<PathBuf>,
    xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Meta {
    fn of(path: &Path) -> io::Result<Meta> {
        let meta = std::fs::symlink_metadata(path)?;
        let link = meta
            .file_type()
            .is_symlink()
            .then(|| std::fs::read_link(path))
            .transpose()?;
        // A directory's size and mtime follow its children, which are compared on their own.
        let dir = meta.is_dir();
        Ok(Meta {
            mode: meta.mode(),
            uid: meta.uid(),
            gid: meta.gid(),
            size: if dir { 0 } else { meta.size() },
            mtime: if dir {
                (0, 0)
            } else {
                (meta.mtime(), meta.mtime_nsec())
            },
            rdev: meta.rdev(),
            link,
            xattrs: xattrs(path).unwrap_or_default(),
        })
    }
}

/// The merged tree as it was handed to the command, by relative path.
pub(crate) struct Manifest(HashMap<PathBuf, Meta>);

/// Copies `lower` (lowest first) into the empty directory `target`, applying each snapshot's
/// whiteouts and opaque directories to the ones below, and records the result.
pub(crate) fn merge(lower: &[PathBuf], target: &Path) -> io::Result<Manifest> {
    for layer in lower {
        let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
        let mut dirs = Vec::new();
        for entry in walk(layer) {
            let (from, relative) = entry?;
            let to = target.join(&relative);
            let meta = from.symlink_metadata()?;
            let kind = meta.file_type();
            if kind.is_char_device() && meta.rdev() == 0 {
                remove_any(&to)?;
                continue;
            }
            if kind.is_dir() {
                let opaque = OPAQUE
                    .iter()
                    .any(|name| xattr(&from, name).as_deref() == Some(b"y"));
                let is_dir = to.symlink_metadata().is_ok_and(|m| m.is_dir());
                if !is_dir || opaque {
                    remove_any(&to)?;
                    std::fs::create_dir(&to)?;
                }
                dirs.push((from.clone(), to));
                continue;
            }
            remove_any(&to)?;
            copy_or_link(&from, &meta, &to, &mut links)?;
        }
        // Directory metadata last, deepest first: creating children changes mtimes.
        for (from, to) in dirs.iter().rev() {
            copy_metadata(from, to)?;
        }
    }
    let mut manifest = HashMap::new();
    for entry in walk(target) {
        let (path, relative) = entry?;
        manifest.insert(relative, Meta::of(&path)?);
    }
    Ok(Manifest(manifest))
}

/// Writes into `upper` what the command changed in `target` since [`merge`]: new and changed
/// entries whole (with copies of their parent directories), and a whiteout for each deleted
/// path whose parent still exists.
pub(crate) fn changes_into_upper(
    manifest: &Manifest,
    target: &Path,
    upper: &Path,
) -> io::Result<()> {
    let mut seen = HashSet::new();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut dirs = Vec::new();
    for entry in walk(target) {
        let (path, relative) = entry?;
        let now = Meta::of(&path)?;
        let changed = manifest.0.get(&relative) != Some(&now);
        seen.insert(relative.clone());
        if !changed {
            continue;
        }
        let to = upper.join(&relative);
        copy_parents(target, upper, &relative, &mut dirs)?;
        let meta = path.symlink_metadata()?;
        if meta.is_dir() {
            if to.symlink_metadata().is_err() {
                std::fs::create_dir(&to)?;
                dirs.push((path.clone(), to));
            }
            continue;
        }
        copy_or_link(&path, &meta, &to, &mut links)?;
    }
    let mut deleted: Vec<&PathBuf> = manifest
        .0
        .keys()
        .filter(|path| !seen.contains(*path))
        .collect();
    deleted.sort();
    for relative in deleted {
        // Only the topmost deleted path gets a whiteout; its parent is still there.
        let parent_exists = relative
            .parent()
            .map_or(true, |p| p.as_os_str().is_empty() || seen.contains(p));
        if !parent_exists {
            continue;
        }
        copy_parents(target, upper, relative, &mut dirs)?;
        mknod(&upper.join(relative), libc::S_IFCHR, 0)?;
    }
    for (from, to) in dirs.iter().rev() {
        copy_metadata(from, to)?;
    }
    Ok(())
}

/// Creates the missing parents of `relative` in `upper` (their metadata copied at the end),
/// as overlayfs copies up the directories above a change.
fn copy_parents(
    target: &Path,
    upper: &Path,
    relative: &Path,
    dirs: &mut Vec<(PathBuf, PathBuf)>,
) -> io::Result<()> {
    let mut partial = PathBuf::new();
    let parents: Vec<_> = relative
        .parent()
        .into_iter()
        .flat_map(Path::components)
        .collect();
    for component in parents {
        partial.push(component);
        let to = upper.join(&partial);
        if to.symlink_metadata().is_err() {
            std::fs::create_dir(&to)?;
            dirs.push((target.join(&partial), to));
        }
    }
    Ok(())
}

/// Every entry below `root` (not `root` itself), parents before children, in name order,
/// without following symlinks: `(path, path relative to root)`.
fn walk(root: &Path) -> impl Iterator<Item = io::Result<(PathBuf, PathBuf)>> + '_ {
    let entries = walkdir::WalkDir::new(root)
        .min_depth(1)
        .follow_links(false)
        .sort_by_file_name();
    entries.into_iter().map(move |entry| {
        let path = entry.map_err(io::Error::from)?.into_path();
        let relative = path
            .strip_prefix(root)
            .map_err(|_| invalid())?
            .to_path_buf();
        Ok((path, relative))
    })
}

/// Copies a non-directory, or hard-links it to the copy of an earlier name of the same inode
/// (`links`, by source dev and inode), so hard links stay hard links.
fn copy_or_link(
    from: &Path,
    meta: &std::fs::Metadata,
    to: &Path,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> io::Result<()> {
    if meta.nlink() > 1 {
        if let Some(first) = links.get(&(meta.dev(), meta.ino())) {
            return std::fs::hard_link(first, to);
        }
        links.insert((meta.dev(), meta.ino()), to.to_path_buf());
    }
    copy_entry(from, to)
}

/// Copies one non-directory entry with its metadata.
fn copy_entry(from: &Path, to: &Path) -> io::Result<()> {
    let meta = from.symlink_metadata()?;
    let kind = meta.file_type();
    if kind.is_symlink() {
        std::os::unix::fs::symlink(std::fs::read_link(from)?, to)?;
    } else if kind.is_file() {
        std::fs::copy(from, to)?;
    } else if kind.is_fifo() {
        mknod(to, libc::S_IFIFO, 0)?;
    } else if kind.is_char_device() {
        mknod(to, libc::S_IFCHR, meta.rdev())?;
    } else if kind.is_block_device() {
        mknod(to, libc::S_IFBLK, meta.rdev())?;
    } else {
        // Sockets cannot be copied; a layer cannot hold them either.
        return Ok(());
    }
    copy_metadata(from, to)
}

/// Owner, permission bits, xattrs (overlayfs's own left out) and times of `from` onto `to`,
/// without following symlinks. An owner the user namespace cannot map stays the caller's.
fn copy_metadata(from: &Path, to: &Path) -> io::Result<()> {
    let meta = from.symlink_metadata()?;
    let c_to = c_path(to)?;
    // SAFETY: a NUL-terminated path and plain ids.
    let rc = unsafe { libc::lchown(c_to.as_ptr(), meta.uid(), meta.gid()) };
    if rc != 0 {
        let error = io::Error::last_os_error();
        if !matches!(error.raw_os_error(), Some(libc::EINVAL | libc::EPERM)) {
            return Err(error);
        }
    }
    if !meta.file_type().is_symlink() {
        // After chown, which clears set-id bits.
        std::fs::set_permissions(
            to,
            std::os::unix::fs::PermissionsExt::from_mode(meta.mode() & 0o7777),
        )?;
    }
    for (name, value) in xattrs(from)? {
        if name.starts_with(b"trusted.overlay.") || name.starts_with(b"user.overlay.") {
            continue;
        }
        let c_name = CString::new(name).map_err(|_| invalid())?;
        // SAFETY: NUL-terminated path and name, and a live value buffer with its length.
        unsafe {
            libc::lsetxattr(
                c_to.as_ptr(),
                c_name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
    }
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    // SAFETY: a NUL-terminated path and two timespecs.
    let rc = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c_to.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn mknod(path: &Path, kind: libc::mode_t, rdev: u64) -> io::Result<()> {
    let c = c_path(path)?;
    // SAFETY: a NUL-terminated path; mode and device are plain integers.
    if unsafe { libc::mknod(c.as_ptr(), kind | 0o600, rdev) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Removes everything inside `dir`, keeping `dir`.
pub(crate) fn clear(dir: &Path) -> io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        remove_any(&entry?.path())?;
    }
    Ok(())
}

fn remove_any(path: &Path) -> io::Result<()> {
    match path.symlink_metadata() {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(_) => Ok(()),
    }
}

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| invalid())
}

fn invalid() -> io::Error {
    io::Error::from_raw_os_error(libc::EINVAL)
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let c = c_path(path).ok()?;
    let c_name = CString::new(name).ok()?;
    let mut value = vec![0u8; 256];
    // SAFETY: NUL-terminated path and name, and a buffer of the given length.
    let len = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c_name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    usize::try_from(len).ok().map(|len| {
        value.truncate(len);
        value
    })
}

/// All xattrs of `path` (not following symlinks), sorted by name.
fn xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = c_path(path)?;
    // SAFETY: a NUL-terminated path; a null buffer asks for the size.
    let size = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    let Ok(size) = usize::try_from(size) else {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::ENOTSUP) => Ok(Vec::new()),
            _ => Err(error),
        };
    };
    let mut names = vec![0u8; size];
    // SAFETY: a buffer of the given length.
    let got = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    names.truncate(usize::try_from(got).unwrap_or(0));
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let c_name = CString::new(name).map_err(|_| invalid())?;
        // SAFETY: a null buffer asks for the size.
        let len = unsafe { libc::lgetxattr(c.as_ptr(), c_name.as_ptr(), std::ptr::null_mut(), 0) };
        let Ok(len) = usize::try_from(len) else {
            continue;
        };
        let mut value = vec![0u8; len];
        // SAFETY: a buffer of the given length.
        let got = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                c_name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        let Ok(got) = usize::try_from(got) else {
            continue;
        };
        value.truncate(got);
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path) -> Vec<String> {
        let mut paths: Vec<String> = walkdir::WalkDir::new(root)
            .min_depth(1)
            .into_iter()
            .map(|e| {
                let e = e.unwrap();
                let rel = e.path().strip_prefix(root).unwrap().display().to_string();
                let meta = e.path().symlink_metadata().unwrap();
                if meta.file_type().is_char_device() {
                    format!("{rel} (whiteout)")
                } else if meta.is_dir() {
                    format!("{rel}/")
                } else {
                    format!(
                        "{rel}={}",
                        std::fs::read_to_string(e.path()).unwrap_or_default()
                    )
                }
            })
            .collect();
        paths.sort();
        paths
    }

    #[test]
    fn merge_applies_whiteouts_and_changes_become_an_overlay_upper() {
        let dir = tempfile::tempdir().unwrap();
        let (base, top, target, upper) = (
            dir.path().join("base"),
            dir.path().join("top"),
            dir.path().join("t"),
            dir.path().join("u"),
        );
        for d in [&base, &top, &target, &upper] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::create_dir_all(base.join("etc/sub")).unwrap();
        std::fs::write(base.join("etc/a"), "a").unwrap();
        std::fs::write(base.join("etc/gone"), "g").unwrap();
        std::fs::write(base.join("etc/sub/x"), "x").unwrap();
        std::fs::write(base.join("keep"), "k").unwrap();
        std::fs::create_dir(top.join("etc")).unwrap();
        mknod(&top.join("etc/gone"), libc::S_IFCHR, 0).unwrap();
        std::fs::write(top.join("etc/a"), "a2").unwrap();
        let manifest = merge(&[base, top], &target).unwrap();
        assert_eq!(
            tree(&target),
            ["etc/", "etc/a=a2", "etc/sub/", "etc/sub/x=x", "keep=k"]
        );

        std::fs::write(target.join("etc/new"), "n").unwrap();
        std::fs::remove_dir_all(target.join("etc/sub")).unwrap();
        std::fs::write(target.join("keep"), "k2").unwrap();
        changes_into_upper(&manifest, &target, &upper).unwrap();
        assert_eq!(
            tree(&upper),
            ["etc/", "etc/new=n", "etc/sub (whiteout)", "keep=k2"]
        );
    }
}
