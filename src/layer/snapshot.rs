//! Creates entries in a snapshot directory, shared by [`super::write_layer`] and
//! [`super::unpack`] so both produce the same format.
//!
//! Consumes clean relative paths (already checked by [`super::check_path`]) and entry metadata;
//! produces files under the snapshot root. Never follows a symlink while creating: every parent
//! component is checked with `lstat` (or known to have been created here), an existing final
//! component is removed before the new one is created with `O_EXCL | O_NOFOLLOW`, and hard link
//! targets are checked the same way. Directory modes and mtimes are applied in
//! [`Snapshot::finish`], because creating children changes a directory's mtime and a read-only
//! directory would refuse them.

use super::{fs_err, LayerError, Result, Timestamp, OPAQUE_XATTR_ROOT, OPAQUE_XATTR_USER};
use rustix::fs::{AtFlags, FileType, Mode, Timespec, Timestamps, XattrFlags, CWD};
use std::collections::HashSet;
use std::fs::File;
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The metadata applied to a created entry.
pub(crate) struct Meta<'a> {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: Timestamp,
    pub xattrs: &'a [(String, Vec<u8>)],
}

/// A special (content-less, non-directory) node.
pub(crate) enum Special<'a> {
    Symlink(&'a str),
    Fifo,
    Char(u32, u32),
    Block(u32, u32),
}

/// A snapshot directory being filled.
pub(crate) struct Snapshot {
    root: PathBuf,
    /// Root of the host's user namespace: opaque directories are marked with
    /// `trusted.overlay.opaque`, which only it may set; anyone else uses `user.overlay.opaque`
    /// and mounts with `userxattr`.
    privileged: bool,
    /// Relative paths known to be real directories (created or `lstat`ed here); "" is the root.
    known_dirs: HashSet<String>,
    /// Directories whose mode and mtime are applied at the end.
    pending_dirs: Vec<(String, u32, Timestamp)>,
    /// Entries skipped because the process lacks the privilege (devices when not root).
    pub skipped: u64,
}

fn errno(op: &'static str, path: &Path, e: rustix::io::Errno) -> LayerError {
    LayerError::Fs {
        op,
        path: path.to_path_buf(),
        error: io::Error::from(e),
    }
}

/// True if and only if `e` means "not allowed for this process" rather than a real failure.
fn not_permitted(e: rustix::io::Errno) -> bool {
    e == rustix::io::Errno::PERM || e == rustix::io::Errno::NOTSUP || e == rustix::io::Errno::ACCESS
}

impl Snapshot {
    /// Opens (creating it when missing) the snapshot directory `root`.
    pub fn open(root: &Path) -> Result<Snapshot> {
        std::fs::create_dir_all(root).map_err(fs_err("create", root))?;
        let mut known_dirs = HashSet::new();
        known_dirs.insert(String::new());
        Ok(Snapshot {
            root: root.to_path_buf(),
            privileged: crate::sandbox::IdMapping::detect().privileged(),
            known_dirs,
            pending_dirs: Vec::new(),
            skipped: 0,
        })
    }

    /// The host path of the relative path `rel`.
    pub fn host(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// Makes sure every parent of `rel` is a real directory; missing ones are created (mode
    /// 0755, owner root, as Docker does for implicit parents) when `create` is set.
    fn ensure_parents(&mut self, rel: &str, create: bool) -> Result<()> {
        let mut end = 0;
        while let Some(slash) = rel[end..].find('/') {
            let prefix = &rel[..end + slash];
            end += slash + 1;
            if self.known_dirs.contains(prefix) {
                continue;
            }
            let host = self.host(prefix);
            match std::fs::symlink_metadata(&host) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    return Err(LayerError::ThroughNonDirectory {
                        path: rel.to_string(),
                        component: prefix.to_string(),
                    })
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound && create => {
                    std::fs::create_dir(&host).map_err(fs_err("create", &host))?;
                }
                Err(e) => return Err(fs_err("inspect", &host)(e)),
            }
            self.known_dirs.insert(prefix.to_string());
        }
        Ok(())
    }

    /// Removes whatever is at `rel` unless it is a directory and `keep_dir` is set; returns
    /// true if and only if a directory was kept.
    fn clear(&mut self, rel: &str, keep_dir: bool) -> Result<bool> {
        let host = self.host(rel);
        match std::fs::symlink_metadata(&host) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(fs_err("inspect", &host)(e)),
            Ok(m) if m.is_dir() => {
                if keep_dir {
                    return Ok(true);
                }
                std::fs::remove_dir_all(&host).map_err(fs_err("remove", &host))?;
                let inside = format!("{rel}/");
                self.known_dirs
                    .retain(|d| d != rel && !d.starts_with(&inside));
                self.pending_dirs
                    .retain(|(d, _, _)| d != rel && !d.starts_with(&inside));
                Ok(false)
            }
            Ok(_) => {
                std::fs::remove_file(&host).map_err(fs_err("remove", &host))?;
                Ok(false)
            }
        }
    }

    /// Creates (or keeps) the directory `rel`; its mode and mtime are applied by `finish`.
    pub fn dir(&mut self, rel: &str, meta: &Meta) -> Result<()> {
        self.ensure_parents(rel, true)?;
        let host = self.host(rel);
        if !self.clear(rel, true)? {
            std::fs::create_dir(&host).map_err(fs_err("create", &host))?;
        }
        self.known_dirs.insert(rel.to_string());
        self.owner_and_xattrs(&host, meta)?;
        self.pending_dirs.retain(|(d, _, _)| d != rel);
        self.pending_dirs
            .push((rel.to_string(), meta.mode, meta.mtime));
        Ok(())
    }

    /// Creates the regular file `rel` empty and returns it for writing; call
    /// [`Snapshot::set_meta`] once its content is written.
    pub fn create_file(&mut self, rel: &str) -> Result<(File, PathBuf)> {
        self.ensure_parents(rel, true)?;
        self.clear(rel, false)?;
        let host = self.host(rel);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&host)
            .map_err(fs_err("create", &host))?;
        Ok((file, host))
    }

    /// Creates a symlink, fifo or device node at `rel` and applies `meta`.
    pub fn special(&mut self, rel: &str, node: Special, meta: &Meta) -> Result<()> {
        self.ensure_parents(rel, true)?;
        self.clear(rel, false)?;
        let host = self.host(rel);
        let is_link = matches!(node, Special::Symlink(_));
        let made = match node {
            Special::Symlink(target) => {
                std::os::unix::fs::symlink(target, &host).map_err(fs_err("create", &host))?;
                true
            }
            Special::Fifo => self.mknod(&host, FileType::Fifo, 0, 0)?,
            Special::Char(major, minor) => {
                self.mknod(&host, FileType::CharacterDevice, major, minor)?
            }
            Special::Block(major, minor) => {
                self.mknod(&host, FileType::BlockDevice, major, minor)?
            }
        };
        if made {
            self.set_meta(&host, meta, is_link)?;
        }
        Ok(())
    }

    /// Returns false (and counts the entry as skipped) when the process may not create the
    /// node; device nodes need `CAP_MKNOD`.
    fn mknod(&mut self, host: &Path, kind: FileType, major: u32, minor: u32) -> Result<bool> {
        let dev = rustix::fs::makedev(major, minor);
        match rustix::fs::mknodat(CWD, host, kind, Mode::from_raw_mode(0o600), dev) {
            Ok(()) => Ok(true),
            Err(e) if not_permitted(e) && kind != FileType::Fifo => {
                self.skipped += 1;
                Ok(false)
            }
            Err(e) => Err(errno("create", host, e)),
        }
    }

    /// Creates `rel` as a hard link to the earlier entry `target`.
    pub fn hardlink(&mut self, rel: &str, target: &str) -> Result<()> {
        self.ensure_parents(target, false)?;
        self.ensure_parents(rel, true)?;
        self.clear(rel, false)?;
        let from = self.host(target);
        let host = self.host(rel);
        // linkat(2) without AT_SYMLINK_FOLLOW links a symlink target itself, never what it
        // points at.
        std::fs::hard_link(&from, &host).map_err(fs_err("link", &host))
    }

    /// Makes `rel` an overlayfs whiteout: a character device 0/0 (unprivileged since Linux 5.8).
    pub fn whiteout(&mut self, rel: &str) -> Result<()> {
        self.ensure_parents(rel, true)?;
        self.clear(rel, false)?;
        let host = self.host(rel);
        rustix::fs::mknodat(
            CWD,
            &host,
            FileType::CharacterDevice,
            Mode::empty(),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|e| errno("create the whiteout", &host, e))
    }

    /// Marks the directory `rel` opaque, creating it (implicitly, mode 0755) when missing.
    pub fn opaque(&mut self, rel: &str) -> Result<()> {
        if !self.known_dirs.contains(rel) {
            let meta = Meta {
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: Timestamp::default(),
                xattrs: &[],
            };
            self.dir(rel, &meta)?;
        }
        let host = self.host(rel);
        rustix::fs::lsetxattr(
            &host,
            opaque_xattr(self.privileged),
            b"y",
            XattrFlags::empty(),
        )
        .map_err(|e| errno("mark opaque", &host, e))
    }

    /// Applies owner (when permitted), mode (unless `is_link`), xattrs (when permitted) and
    /// mtime to the non-directory `host`.
    pub fn set_meta(&self, host: &Path, meta: &Meta, is_link: bool) -> Result<()> {
        self.owner_and_xattrs(host, meta)?;
        // chown clears set-id bits, so the mode goes on after the owner; Linux has no mode
        // for symlinks.
        if !is_link {
            rustix::fs::chmod(host, Mode::from_raw_mode(meta.mode & 0o7777))
                .map_err(|e| errno("set the mode of", host, e))?;
        }
        set_mtime(host, meta.mtime)
    }

    fn owner_and_xattrs(&self, host: &Path, meta: &Meta) -> Result<()> {
        match std::os::unix::fs::lchown(host, Some(meta.uid), Some(meta.gid)) {
            Ok(()) => {}
            // EINVAL: the id has no mapping in this user namespace.
            Err(e)
                if e.raw_os_error().is_some_and(|code| {
                    let errno = rustix::io::Errno::from_raw_os_error(code);
                    not_permitted(errno) || errno == rustix::io::Errno::INVAL
                }) => {}
            Err(e) => return Err(fs_err("change the owner of", host)(e)),
        }
        for (name, value) in meta.xattrs {
            // A layer must not be able to fake overlay metadata of the snapshot itself.
            if name.contains(".overlay.") {
                continue;
            }
            match rustix::fs::lsetxattr(host, name.as_str(), value, XattrFlags::empty()) {
                Ok(()) => {}
                Err(e) if not_permitted(e) => {}
                Err(e) => return Err(errno("set an xattr on", host, e)),
            }
        }
        Ok(())
    }

    /// Applies the deferred directory modes and mtimes, deepest first.
    pub fn finish(mut self) -> Result<u64> {
        self.pending_dirs
            .sort_by_key(|d| std::cmp::Reverse(d.0.matches('/').count()));
        for (rel, mode, mtime) in &self.pending_dirs {
            let host = self.host(rel);
            rustix::fs::chmod(&host, Mode::from_raw_mode(mode & 0o7777))
                .map_err(|e| errno("set the mode of", &host, e))?;
            set_mtime(&host, *mtime)?;
        }
        Ok(self.skipped)
    }
}

/// The xattr that marks an opaque directory in a snapshot made by a process that is
/// `privileged` (see [`Snapshot`]'s field).
pub(super) fn opaque_xattr(privileged: bool) -> &'static str {
    if privileged {
        OPAQUE_XATTR_ROOT
    } else {
        OPAQUE_XATTR_USER
    }
}

pub(super) fn set_mtime(host: &Path, mtime: Timestamp) -> Result<()> {
    let ts = Timespec {
        tv_sec: mtime.secs,
        tv_nsec: i64::from(mtime.nanos.min(999_999_999)),
    };
    let times = Timestamps {
        last_access: ts,
        last_modification: ts,
    };
    rustix::fs::utimensat(CWD, host, &times, AtFlags::SYMLINK_NOFOLLOW)
        .map_err(|e| errno("set the mtime of", host, e))
}
