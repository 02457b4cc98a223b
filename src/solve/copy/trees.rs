//! The trees COPY and ADD read from and write into: the build context ([`Context`]), a plain
//! host directory ([`HostDir`]), one inline file ([`SingleFile`], heredocs and downloads) and
//! the empty tree `--link` copies onto ([`Scratch`]).

use std::fs;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::{CopyError, DestKind, DestStat, DestTree, SourceKind, SourceStat, SourceTree};
use crate::context::walk::{Context, EntryKind as WalkKind};
use crate::layer::{FileKind, Follow, Found, RootfsView, Timestamp};

/// A timestamp from nanoseconds since the epoch.
pub(crate) fn from_nanos(nanos: i64) -> Timestamp {
    Timestamp {
        secs: nanos.div_euclid(1_000_000_000),
        nanos: nanos.rem_euclid(1_000_000_000) as u32,
    }
}

/// The extended attributes of the host file `path` that a layer keeps, not following a
/// symlink: only `security.capability`, the one attribute dockerd's layer tar writer
/// records (checked: a file with `user.kiln` and `security.capability` keeps only the
/// capability when ADDed from a tar and when copied on from that stage; from the context it
/// keeps neither, as the context transfer drops attributes).
pub(crate) fn host_xattrs(path: &Path) -> Result<Vec<(String, Vec<u8>)>, CopyError> {
    use rustix::io::Errno;
    let unsupported = |error: Errno| matches!(error, Errno::NOTSUP | Errno::NODATA | Errno::NOENT);
    let size = match rustix::fs::llistxattr(path, &mut []) {
        Ok(size) => size,
        Err(error) if unsupported(error) => return Ok(Vec::new()),
        Err(error) => return Err(io_error(path, error.into())),
    };
    if size == 0 {
        return Ok(Vec::new());
    }
    let mut names = vec![0u8; size];
    let size =
        rustix::fs::llistxattr(path, &mut names).map_err(|error| io_error(path, error.into()))?;
    names.truncate(size);
    let mut out = Vec::new();
    for name in names
        .split(|&byte| byte == 0)
        .filter(|name| !name.is_empty())
    {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        if name != "security.capability" {
            continue;
        }
        let mut value = Vec::new();
        loop {
            let len = match rustix::fs::lgetxattr(path, name, &mut []) {
                Ok(len) => len,
                Err(error) if unsupported(error) => break,
                Err(error) => return Err(io_error(path, error.into())),
            };
            value.resize(len, 0);
            match rustix::fs::lgetxattr(path, name, &mut value) {
                Ok(read) => {
                    value.truncate(read);
                    out.push((name.to_owned(), std::mem::take(&mut value)));
                    break;
                }
                // The value grew in between: ask its size again.
                Err(Errno::RANGE) => continue,
                Err(error) if unsupported(error) => break,
                Err(error) => return Err(io_error(path, error.into())),
            }
        }
    }
    out.sort();
    Ok(out)
}

fn io_error(path: &Path, source: io::Error) -> CopyError {
    CopyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The root directory's stat when a tree has no entry for it.
fn root_dir() -> SourceStat {
    SourceStat {
        kind: SourceKind::Dir,
        mode: 0o755,
        uid: 0,
        gid: 0,
        size: 0,
        mtime: Timestamp::default(),
        link_id: None,
    }
}

/// The build context as COPY sees it: every kept entry, owned by 0:0 (BuildKit's context
/// transfer drops the local owners), fifos, sockets and devices left out (the transfer
/// drops them too).
impl SourceTree for Context {
    fn stat(&self, path: &str) -> Result<Option<SourceStat>, CopyError> {
        if path.is_empty() {
            return Ok(Some(root_dir()));
        }
        let Some(entry) = self.get(path) else {
            return Ok(None);
        };
        let kind = match &entry.kind {
            WalkKind::Dir => SourceKind::Dir,
            WalkKind::File => SourceKind::File,
            WalkKind::Symlink { target } => SourceKind::Symlink {
                target: target.clone(),
            },
            WalkKind::Other => SourceKind::Skip,
        };
        Ok(Some(SourceStat {
            kind,
            mode: entry.mode & 0o7777,
            uid: 0,
            gid: 0,
            size: entry.size,
            mtime: from_nanos(entry.mtime_ns),
            link_id: (entry.ino != 0).then_some((entry.dev, entry.ino)),
        }))
    }

    fn children(&self, path: &str) -> Result<Vec<String>, CopyError> {
        let below = self.under(path);
        let skip = if path.is_empty() { 0 } else { path.len() + 1 };
        Ok(below
            .iter()
            .filter_map(|entry| entry.path.get(skip..))
            .filter(|rest| !rest.contains('/'))
            .map(str::to_owned)
            .collect())
    }

    fn host_path(&self, path: &str) -> PathBuf {
        self.root().join(path)
    }
}

/// A directory on the host used as a tree: a stage's unpacked root file system without
/// whiteouts, a named context, or a test fixture.
#[derive(Debug, Clone)]
pub struct HostDir {
    root: PathBuf,
    keep_owners: bool,
}

impl HostDir {
    /// The tree rooted at `root`. With `keep_owners` false every entry reads as owned by
    /// 0:0, as build-context files do; true keeps the owners on disk (stage sources).
    pub fn new(root: impl Into<PathBuf>, keep_owners: bool) -> HostDir {
        HostDir {
            root: root.into(),
            keep_owners,
        }
    }

    fn full(&self, path: &str) -> PathBuf {
        if path.is_empty() {
            self.root.clone()
        } else {
            self.root.join(path)
        }
    }

    fn lstat(&self, path: &str) -> Result<Option<fs::Metadata>, CopyError> {
        let full = self.full(path);
        match fs::symlink_metadata(&full) {
            Ok(meta) => Ok(Some(meta)),
            Err(error)
                if matches!(error.kind(), io::ErrorKind::NotFound)
                    || error.raw_os_error() == Some(20) =>
            {
                Ok(None)
            }
            Err(error) => Err(io_error(&full, error)),
        }
    }
}

impl SourceTree for HostDir {
    fn stat(&self, path: &str) -> Result<Option<SourceStat>, CopyError> {
        let Some(meta) = self.lstat(path)? else {
            return Ok(None);
        };
        let file_type = meta.file_type();
        let (major, minor) = device_numbers(meta.rdev());
        let kind = if file_type.is_dir() {
            SourceKind::Dir
        } else if file_type.is_file() {
            SourceKind::File
        } else if file_type.is_symlink() {
            let full = self.full(path);
            let target = fs::read_link(&full).map_err(|error| io_error(&full, error))?;
            SourceKind::Symlink {
                target: target.to_string_lossy().into_owned(),
            }
        } else if file_type.is_char_device() {
            SourceKind::CharDevice { major, minor }
        } else if file_type.is_block_device() {
            SourceKind::BlockDevice { major, minor }
        } else if file_type.is_fifo() {
            SourceKind::Fifo
        } else {
            SourceKind::Skip
        };
        let (uid, gid) = match self.keep_owners {
            true => (meta.uid(), meta.gid()),
            false => (0, 0),
        };
        Ok(Some(SourceStat {
            kind,
            mode: meta.mode() & 0o7777,
            uid,
            gid,
            size: meta.size(),
            mtime: Timestamp {
                secs: meta.mtime(),
                nanos: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
            },
            link_id: (meta.nlink() > 1 && !file_type.is_dir()).then_some((meta.dev(), meta.ino())),
        }))
    }

    fn children(&self, path: &str) -> Result<Vec<String>, CopyError> {
        let full = self.full(path);
        let mut names = Vec::new();
        for entry in fs::read_dir(&full).map_err(|error| io_error(&full, error))? {
            let entry = entry.map_err(|error| io_error(&full, error))?;
            match entry.file_name().into_string() {
                Ok(name) => names.push(name),
                Err(name) => {
                    return Err(CopyError::NotUtf8 {
                        path: full.join(name),
                    })
                }
            }
        }
        names.sort_unstable();
        Ok(names)
    }

    fn host_path(&self, path: &str) -> PathBuf {
        self.full(path)
    }

    fn xattrs(&self, path: &str) -> Result<Vec<(String, Vec<u8>)>, CopyError> {
        // A context-like tree loses its attributes in transfer, as owners.
        match self.keep_owners {
            true => host_xattrs(&self.full(path)),
            false => Ok(Vec::new()),
        }
    }
}

impl DestTree for HostDir {
    fn lstat(&self, path: &str) -> Result<Option<DestStat>, CopyError> {
        let Some(stat) = SourceTree::stat(self, path)? else {
            return Ok(None);
        };
        Ok(Some(DestStat {
            kind: match stat.kind {
                SourceKind::Dir => DestKind::Dir,
                SourceKind::Symlink { target } => DestKind::Symlink { target },
                _ => DestKind::Other,
            },
            mode: stat.mode,
            uid: stat.uid,
            gid: stat.gid,
            mtime: stat.mtime,
        }))
    }
}

/// Linux `dev_t` to major and minor numbers (glibc's `gnu_dev_major`/`gnu_dev_minor`).
fn device_numbers(rdev: u64) -> (u32, u32) {
    let major = ((rdev >> 32) & 0xffff_f000) | ((rdev >> 8) & 0x0000_0fff);
    let minor = ((rdev >> 12) & 0xffff_ff00) | (rdev & 0x0000_00ff);
    (major as u32, minor as u32)
}

/// A tree of exactly one regular file at `name`: a heredoc body or a downloaded file.
#[derive(Debug, Clone)]
pub struct SingleFile {
    /// The file's name, one component.
    pub name: String,
    /// Where its content is on the host.
    pub file: PathBuf,
    /// Its metadata.
    pub stat: SourceStat,
}

impl SourceTree for SingleFile {
    fn stat(&self, path: &str) -> Result<Option<SourceStat>, CopyError> {
        Ok(if path.is_empty() {
            Some(root_dir())
        } else if path == self.name {
            Some(self.stat.clone())
        } else {
            None
        })
    }

    fn children(&self, path: &str) -> Result<Vec<String>, CopyError> {
        Ok(if path.is_empty() {
            vec![self.name.clone()]
        } else {
            Vec::new()
        })
    }

    fn host_path(&self, _path: &str) -> PathBuf {
        self.file.clone()
    }
}

/// The empty tree: what `COPY --link` copies onto, so the layer never depends on the image
/// below, and what `COPY --from=scratch` reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct Scratch;

impl SourceTree for Scratch {
    fn stat(&self, path: &str) -> Result<Option<SourceStat>, CopyError> {
        Ok(path.is_empty().then(root_dir))
    }

    fn children(&self, _path: &str) -> Result<Vec<String>, CopyError> {
        Ok(Vec::new())
    }

    fn host_path(&self, _path: &str) -> PathBuf {
        PathBuf::new()
    }
}

impl DestTree for Scratch {
    fn lstat(&self, _path: &str) -> Result<Option<DestStat>, CopyError> {
        Ok(None)
    }
}

fn view_lstat(view: &RootfsView, path: &str) -> Result<Option<Found>, CopyError> {
    view.lookup(path, Follow::NotLast)
        .map_err(|source| CopyError::View {
            path: format!("/{path}"),
            source,
        })
}

/// A stage's or image's merged root file system as a COPY source: owners are kept.
impl SourceTree for RootfsView {
    fn stat(&self, path: &str) -> Result<Option<SourceStat>, CopyError> {
        if path.is_empty() {
            return Ok(Some(root_dir()));
        }
        let Some(found) = view_lstat(self, path)? else {
            return Ok(None);
        };
        let meta = found.metadata;
        let kind = match meta.kind {
            FileKind::Dir => SourceKind::Dir,
            FileKind::File => SourceKind::File,
            FileKind::Symlink => SourceKind::Symlink {
                target: meta.link_target.clone().unwrap_or_default(),
            },
            FileKind::Fifo => SourceKind::Fifo,
            FileKind::Socket => SourceKind::Skip,
            FileKind::CharDevice { major, minor } => SourceKind::CharDevice { major, minor },
            FileKind::BlockDevice { major, minor } => SourceKind::BlockDevice { major, minor },
        };
        Ok(Some(SourceStat {
            link_id: (meta.nlink > 1 && kind == SourceKind::File).then_some((meta.dev, meta.ino)),
            kind,
            mode: meta.mode & 0o7777,
            uid: meta.uid,
            gid: meta.gid,
            size: meta.size,
            mtime: meta.mtime,
        }))
    }

    fn children(&self, path: &str) -> Result<Vec<String>, CopyError> {
        let listed = self.read_dir(path).map_err(|source| CopyError::View {
            path: format!("/{path}"),
            source,
        })?;
        Ok(listed.into_iter().map(|(name, _)| name).collect())
    }

    fn host_path(&self, path: &str) -> PathBuf {
        match view_lstat(self, path) {
            Ok(Some(found)) => found.host_path,
            _ => PathBuf::from(path),
        }
    }

    fn xattrs(&self, path: &str) -> Result<Vec<(String, Vec<u8>)>, CopyError> {
        match view_lstat(self, path)? {
            Some(found) => host_xattrs(&found.host_path),
            None => Ok(Vec::new()),
        }
    }
}

/// The image so far as the tree a COPY writes into.
impl DestTree for RootfsView {
    fn lstat(&self, path: &str) -> Result<Option<DestStat>, CopyError> {
        let Some(found) = view_lstat(self, path)? else {
            return Ok(None);
        };
        let meta = found.metadata;
        Ok(Some(DestStat {
            kind: match meta.kind {
                FileKind::Dir => DestKind::Dir,
                FileKind::Symlink => DestKind::Symlink {
                    target: meta.link_target.clone().unwrap_or_default(),
                },
                _ => DestKind::Other,
            },
            mode: meta.mode & 0o7777,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
        }))
    }
}
