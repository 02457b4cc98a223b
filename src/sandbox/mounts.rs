//! The mount plan of the sandbox: overlay options, mount targets resolved inside the rootfs,
//! the mount points created for them (and removed again), and a thin mount(2) wrapper.
//!
//! Consumes host paths and paths inside the rootfs; produces option strings, resolved host
//! paths and the list of stubs created. Must never follow a symlink out of the rootfs, and
//! never create anything in the rootfs but the mount points it records.

use std::collections::VecDeque;
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// The most bytes mount(2) reads as its data argument: one page, including the final NUL.
const MOUNT_DATA_MAX: usize = 4095;

/// How many symlinks one lookup may follow, as the kernel's `MAXSYMLINKS`.
const MAX_SYMLINKS: usize = 40;

/// The overlay mount data and, when the absolute paths would not fit in one page, the
/// directory to chdir(2) into first so that the same paths fit relative to it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct OverlayData {
    pub chdir: Option<PathBuf>,
    pub data: String,
}

/// The overlay options that vary from one mount to the next.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OverlayFlags {
    /// The `user.overlay.*` xattrs a mount inside a user namespace must use.
    pub userxattr: bool,
    /// No syncs reach the upper filesystem (Linux 5.10+); see [`super::RootfsSpec::volatile`].
    pub volatile: bool,
}

/// Builds the overlay data for `lower` (lowest first; overlayfs wants the top first), an
/// `empty` directory used when there is no lower, `upper` and `work`. Redirects are neither
/// created nor followed (`nofollow`, the only mode `userxattr` accepts; plain `off` means
/// `follow` on kernels built with redirect_always_follow) and metacopy is off, so every
/// changed file or directory is whole in `upper` (the layer differ reads nothing else). The
/// inodes index is off so snapshots may serve as lowers of several mounts at once (as
/// containerd's snapshotter mounts them).
pub(crate) fn overlay_data(
    lower: &[PathBuf],
    empty: &Path,
    upper: &Path,
    work: &Path,
    flags: OverlayFlags,
) -> Option<OverlayData> {
    let mut lowers: Vec<&Path> = lower.iter().rev().map(PathBuf::as_path).collect();
    if lowers.is_empty() {
        lowers.push(empty);
    }
    let render = |base: Option<&Path>| -> Option<String> {
        let show = |path: &Path| -> Option<String> {
            let path = match base {
                Some(base) => path.strip_prefix(base).ok()?,
                None => path,
            };
            Some(escape(path.to_str()?))
        };
        let lowerdir: Option<Vec<String>> = lowers.iter().map(|path| show(path)).collect();
        let mut data = format!(
            "lowerdir={},upperdir={},workdir={},index=off,redirect_dir=nofollow,metacopy=off",
            lowerdir?.join(":"),
            show(upper)?,
            show(work)?
        );
        if flags.userxattr {
            data.push_str(",userxattr");
        }
        if flags.volatile {
            data.push_str(",volatile");
        }
        Some(data)
    };
    let data = render(None)?;
    if data.len() <= MOUNT_DATA_MAX {
        return Some(OverlayData { chdir: None, data });
    }
    let mut all = lowers.clone();
    all.extend([upper, work]);
    let base = common_ancestor(&all)?;
    let data = render(Some(&base))?;
    (data.len() <= MOUNT_DATA_MAX).then_some(OverlayData {
        chdir: Some(base),
        data,
    })
}

/// Overlayfs splits its options at `,` and lowerdir at `:`; a backslash escapes either.
fn escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if matches!(c, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn common_ancestor(paths: &[&Path]) -> Option<PathBuf> {
    let first = paths.first()?;
    let mut base: Vec<Component> = first.components().collect();
    for path in &paths[1..] {
        let shared = base
            .iter()
            .zip(path.components())
            .take_while(|(a, b)| **a == *b)
            .count();
        base.truncate(shared);
    }
    // Each path must keep a non-empty relative part.
    let base: PathBuf = base.iter().collect();
    paths.iter().all(|path| *path != base).then_some(base)
}

/// Resolves `inside` (a path in the sandbox) against the rootfs at `root`, following symlinks
/// as if `root` were `/` (`..` stops at it; absolute links restart at it), like runc's
/// securejoin. Components that do not exist are appended as they are.
pub(crate) fn resolve_in_root(root: &Path, inside: &str) -> io::Result<PathBuf> {
    let mut pending: VecDeque<OsString> = components(Path::new(inside));
    let mut resolved: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        if part == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved
            .iter()
            .fold(root.to_path_buf(), |path, p| path.join(p))
            .join(&part);
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    resolved.clear();
                }
                for (i, part) in components(&target).into_iter().enumerate() {
                    pending.insert(i, part);
                }
            }
            _ => resolved.push(part),
        }
    }
    Ok(resolved
        .iter()
        .fold(root.to_path_buf(), |path, p| path.join(p)))
}

/// The normal and `..` components of `path` (root and `.` dropped).
fn components(path: &Path) -> VecDeque<OsString> {
    path.components()
        .filter_map(|component| match component {
            Component::Normal(name) => Some(name.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect()
}

/// Whether a mount point must be a directory or a file (a bind of a file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PointKind {
    Dir,
    File,
}

/// A path the sandbox created in the rootfs (so in the overlay upper), to be removed after
/// the command when still empty, with its parent's times to put back.
#[derive(Debug)]
pub(crate) struct Stub {
    path: PathBuf,
    kind: PointKind,
    parent_times: Option<(libc::timespec, libc::timespec)>,
}

/// Resolves `inside` in the rootfs at `root` and creates whatever is missing: directories on
/// the way (0755), then the mount point itself (a directory, or an empty 0644 file). Each
/// creation is recorded in `stubs`. Returns the host path to mount on.
pub(crate) fn mount_point(
    root: &Path,
    inside: &str,
    kind: PointKind,
    stubs: &mut Vec<Stub>,
) -> io::Result<PathBuf> {
    let target = resolve_in_root(root, inside)?;
    let relative = target
        .strip_prefix(root)
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let mut path = root.to_path_buf();
    let parts: Vec<&OsStr> = relative.iter().collect();
    for (i, part) in parts.iter().enumerate() {
        let parent_times = times(&path);
        path.push(part);
        if std::fs::symlink_metadata(&path).is_ok() {
            continue;
        }
        let last = i + 1 == parts.len();
        if last && kind == PointKind::File {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)?;
        } else {
            std::fs::create_dir(&path)?;
        }
        let kind = if last { kind } else { PointKind::Dir };
        stubs.push(Stub {
            path: path.clone(),
            kind,
            parent_times,
        });
    }
    Ok(target)
}

/// Removes the stubs, newest first, that are still empty, and restores their parents' access
/// and modification times, so a mount point leaves no trace but copied-up parent directories
/// with their original metadata.
pub(crate) fn remove_stubs(stubs: &mut Vec<Stub>) {
    while let Some(stub) = stubs.pop() {
        let removed = match stub.kind {
            PointKind::Dir => std::fs::remove_dir(&stub.path).is_ok(),
            PointKind::File => {
                let empty = std::fs::symlink_metadata(&stub.path).is_ok_and(|meta| meta.len() == 0);
                empty && std::fs::remove_file(&stub.path).is_ok()
            }
        };
        if let (true, Some(times), Some(parent)) = (removed, stub.parent_times, stub.path.parent())
        {
            set_times(parent, times);
        }
    }
}

fn times(path: &Path) -> Option<(libc::timespec, libc::timespec)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path).ok()?;
    let atime = libc::timespec {
        tv_sec: meta.atime(),
        tv_nsec: meta.atime_nsec(),
    };
    let mtime = libc::timespec {
        tv_sec: meta.mtime(),
        tv_nsec: meta.mtime_nsec(),
    };
    Some((atime, mtime))
}

fn set_times(path: &Path, (atime, mtime): (libc::timespec, libc::timespec)) {
    let Ok(path) = CString::new(path.as_os_str().as_bytes()) else {
        return;
    };
    let times = [atime, mtime];
    // SAFETY: a NUL-terminated path and two timespecs, both alive for the call. A failure only
    // leaves a newer mtime on a copied-up directory, so it is ignored.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            path.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
}

/// mount(2) with optional source, filesystem type and data.
pub(crate) fn mount(
    source: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: libc::c_ulong,
    data: Option<&str>,
) -> io::Result<()> {
    let c_path = |path: &Path| {
        CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
    };
    let c_str =
        |text: &str| CString::new(text).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
    let source = source.map(c_path).transpose()?;
    let target = c_path(target)?;
    let fstype = fstype.map(c_str).transpose()?;
    let data = data.map(c_str).transpose()?;
    let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
    // SAFETY: every pointer is null or a NUL-terminated string alive for the call.
    let rc = unsafe {
        libc::mount(
            ptr(&source),
            target.as_ptr(),
            ptr(&fstype),
            flags,
            ptr(&data).cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Remounts the bind mount at `target` read-only, keeping the flags the kernel locks on mounts
/// inherited into a user namespace (nosuid, nodev, noexec, atime; mount_namespaces(7)), since
/// a remount that clears them fails with EPERM.
pub(crate) fn remount_readonly(target: &Path) -> io::Result<()> {
    let c_target = CString::new(target.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    // SAFETY: statvfs fills the zeroed struct from a NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_target.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let keep = [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (libc::ST_RELATIME, libc::MS_RELATIME),
    ];
    let flags = keep.iter().filter(|(st, _)| stat.f_flag & *st != 0).fold(
        libc::MS_REMOUNT | libc::MS_BIND | libc::MS_RDONLY,
        |flags, (_, ms)| flags | ms,
    );
    mount(None, target, None, flags, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_lowerdir_lists_the_top_layer_first() {
        let p = PathBuf::from;
        let fixed = "upperdir=/u,workdir=/w,index=off,redirect_dir=nofollow,metacopy=off";
        let table = [
            (
                vec![p("/s/a"), p("/s/b")],
                OverlayFlags::default(),
                format!("lowerdir=/s/b:/s/a,{fixed}"),
            ),
            (
                vec![],
                OverlayFlags {
                    userxattr: false,
                    volatile: true,
                },
                format!("lowerdir=/e,{fixed},volatile"),
            ),
            (
                vec![p("/s/a:b,c")],
                OverlayFlags {
                    userxattr: true,
                    volatile: true,
                },
                format!("lowerdir=/s/a\\:b\\,c,{fixed},userxattr,volatile"),
            ),
        ];
        for (lower, flags, want) in table {
            let (e, u, w) = (Path::new("/e"), Path::new("/u"), Path::new("/w"));
            let got = overlay_data(&lower, e, u, w, flags);
            assert_eq!(
                got,
                Some(OverlayData {
                    chdir: None,
                    data: want
                })
            );
        }
    }

    #[test]
    fn long_overlay_data_goes_relative_to_the_common_directory() {
        let base = format!("/store/{}", "x".repeat(100));
        let lower: Vec<PathBuf> = (0..60)
            .map(|i| PathBuf::from(format!("{base}/snap/{i:03}")))
            .collect();
        let upper = PathBuf::from(format!("{base}/tmp/u"));
        let work = PathBuf::from(format!("{base}/tmp/w"));
        let got = overlay_data(
            &lower,
            Path::new("/e"),
            &upper,
            &work,
            OverlayFlags::default(),
        )
        .unwrap();
        assert_eq!(got.chdir, Some(PathBuf::from(&base)));
        assert!(
            got.data.starts_with("lowerdir=snap/059:snap/058:"),
            "{}",
            got.data
        );
        assert!(got.data.contains(",upperdir=tmp/u,workdir=tmp/w,"));
    }

    #[test]
    fn targets_resolve_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("run/lock")).unwrap();
        std::fs::create_dir_all(root.join("var")).unwrap();
        std::os::unix::fs::symlink("/run", root.join("var/run")).unwrap();
        std::os::unix::fs::symlink("../../..", root.join("run/up")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        let table = [
            ("/var/run/lock", Some("run/lock")),
            ("/var/run/new/x", Some("run/new/x")),
            ("/run/up/etc", Some("etc")),
            ("/../../etc", Some("etc")),
            ("relative/./a", Some("relative/a")),
            ("/loop/a", None),
        ];
        for (inside, want) in table {
            let got = resolve_in_root(root, inside).ok();
            assert_eq!(got, want.map(|w| root.join(w)), "{inside}");
        }
    }

    #[test]
    fn mount_points_are_created_recorded_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/kept"), "").unwrap();
        let before = std::fs::metadata(root.join("etc"))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let mut stubs = Vec::new();
        let hosts = mount_point(root, "/etc/hosts", PointKind::File, &mut stubs).unwrap();
        let deep = mount_point(root, "/a/b", PointKind::Dir, &mut stubs).unwrap();
        let kept = mount_point(root, "/etc/kept", PointKind::File, &mut stubs).unwrap();
        assert_eq!(
            (hosts.is_file(), deep.is_dir(), stubs.len()),
            (true, true, 3)
        );
        assert_eq!(kept, root.join("etc/kept"));
        remove_stubs(&mut stubs);
        let left: Vec<_> = walkdir::WalkDir::new(root)
            .min_depth(1)
            .into_iter()
            .map(|e| e.unwrap().path().strip_prefix(root).unwrap().to_path_buf())
            .collect();
        assert_eq!(left, [PathBuf::from("etc"), PathBuf::from("etc/kept")]);
        assert_eq!(
            std::fs::metadata(root.join("etc"))
                .unwrap()
                .modified()
                .unwrap(),
            before
        );
    }

    #[test]
    fn non_empty_stubs_stay() {
        let dir = tempfile::tempdir().unwrap();
        let mut stubs = Vec::new();
        let file = mount_point(dir.path(), "/f", PointKind::File, &mut stubs).unwrap();
        std::fs::write(&file, "data").unwrap();
        remove_stubs(&mut stubs);
        assert!(file.is_file());
    }
}
