//! A read-only merged view over stacked snapshot directories, as overlayfs would show them.
//!
//! Consumes snapshot directories (lowest first) in the format of the parent module; produces
//! lookups, merged directory listings, subtree walks and file contents by rootfs path. Symlinks
//! resolve chroot style: an absolute target starts again at the rootfs root and `..` never
//! leaves it. Never writes, and never follows a symlink on the host: every step is an `lstat`
//! inside one snapshot.

use super::{
    fs_err, LayerError, Result, Timestamp, MAX_SYMLINKS, OPAQUE_XATTR_ROOT, OPAQUE_XATTR_USER,
};
use std::collections::BTreeSet;
use std::fs::Metadata as HostMetadata;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// Whether the last component of a looked-up path is followed when it is a symlink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Follow {
    /// Follow symlinks everywhere, the last component included (`stat`).
    All,
    /// Follow symlinks in the parents only (`lstat`).
    NotLast,
}

/// The type of a file in the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    CharDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Device major number.
        major: u32,
        /// Device minor number.
        minor: u32,
    },
}

/// What the view knows about a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Metadata {
    /// The file type.
    pub kind: FileKind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Size in bytes (of the link text for symlinks).
    pub size: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// The link text, for symlinks only.
    pub link_target: Option<String>,
    /// Host inode number, so callers can find hard links (equal `dev` and `ino`).
    pub ino: u64,
    /// Host device id of the snapshot file.
    pub dev: u64,
    /// Host link count.
    pub nlink: u64,
}

/// A file found in the view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Found {
    /// The rootfs path after symlink resolution, absolute (`/` for the root).
    pub path: String,
    /// The host path of the topmost snapshot file providing it.
    pub host_path: PathBuf,
    /// Its metadata.
    pub metadata: Metadata,
}

/// A merged view over snapshot directories, lowest first.
#[derive(Clone, Debug)]
pub struct RootfsView {
    layers: Vec<PathBuf>,
}

/// A resolved file with what is needed to look inside it.
struct Node {
    /// Rootfs path without the leading `/` ("" for the root).
    rel: String,
    host: PathBuf,
    metadata: Metadata,
    /// For directories: indexes of the layers whose directory merges into this one, top first.
    dir_layers: Vec<usize>,
}

impl Node {
    fn found(&self) -> Found {
        Found {
            path: format!("/{}", self.rel),
            host_path: self.host.clone(),
            metadata: self.metadata.clone(),
        }
    }
}

/// `lstat`, with "does not exist" (and "a parent is not a directory") as `None`.
fn lstat(host: &Path) -> Result<Option<HostMetadata>> {
    match std::fs::symlink_metadata(host) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(20) => Ok(None),
        Err(e) => Err(fs_err("inspect", host)(e)),
    }
}

/// True if and only if `m` is an overlayfs whiteout (character device 0/0).
fn is_whiteout(m: &HostMetadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

/// True if and only if the directory `host` carries an overlay opaque xattr set to `y`.
fn is_opaque(host: &Path) -> bool {
    [OPAQUE_XATTR_ROOT, OPAQUE_XATTR_USER].iter().any(|name| {
        let mut value = [0u8; 4];
        matches!(rustix::fs::lgetxattr(host, *name, &mut value), Ok(1) if value[0] == b'y')
    })
}

fn metadata_of(host: &Path, m: &HostMetadata) -> Result<Metadata> {
    let ft = m.file_type();
    let rdev = m.rdev();
    let device = || {
        (
            rustix::fs::major(rdev as rustix::fs::Dev),
            rustix::fs::minor(rdev as rustix::fs::Dev),
        )
    };
    let kind = if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_fifo() {
        FileKind::Fifo
    } else if ft.is_socket() {
        FileKind::Socket
    } else if ft.is_char_device() {
        let (major, minor) = device();
        FileKind::CharDevice { major, minor }
    } else {
        let (major, minor) = device();
        FileKind::BlockDevice { major, minor }
    };
    let link_target = if ft.is_symlink() {
        let target = std::fs::read_link(host).map_err(fs_err("read the link", host))?;
        Some(
            target
                .into_os_string()
                .into_string()
                .map_err(|_| LayerError::NonUtf8Name {
                    path: host.to_path_buf(),
                })?,
        )
    } else {
        None
    };
    Ok(Metadata {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size: m.size(),
        mtime: Timestamp {
            secs: m.mtime(),
            nanos: u32::try_from(m.mtime_nsec()).unwrap_or(0),
        },
        link_target,
        ino: m.ino(),
        dev: m.dev(),
        nlink: m.nlink(),
    })
}

/// Splits a rootfs path into its components, dropping empty ones and `.`.
fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

fn join(rel: &str, name: &str) -> String {
    if rel.is_empty() {
        name.to_string()
    } else {
        format!("{rel}/{name}")
    }
}

impl RootfsView {
    /// A view over `snapshots`, lowest first (an empty list is an empty root directory).
    pub fn new(snapshots: Vec<PathBuf>) -> RootfsView {
        RootfsView { layers: snapshots }
    }

    /// The snapshot directories, lowest first.
    pub fn snapshots(&self) -> &[PathBuf] {
        &self.layers
    }

    fn host(&self, layer: usize, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.layers[layer].clone()
        } else {
            self.layers[layer].join(rel)
        }
    }

    fn root(&self) -> Result<Node> {
        let mut dir_layers = Vec::new();
        let mut top = None;
        for layer in (0..self.layers.len()).rev() {
            let host = self.host(layer, "");
            let m = std::fs::symlink_metadata(&host).map_err(fs_err("inspect", &host))?;
            if !m.is_dir() {
                return Err(LayerError::NotADirectory {
                    path: host.display().to_string(),
                });
            }
            if top.is_none() {
                top = Some((host.clone(), metadata_of(&host, &m)?));
            }
            dir_layers.push(layer);
            if is_opaque(&host) {
                break;
            }
        }
        let (host, metadata) = match top {
            Some(top) => top,
            None => (
                PathBuf::new(),
                Metadata {
                    kind: FileKind::Dir,
                    mode: 0o755,
                    uid: 0,
                    gid: 0,
                    size: 0,
                    mtime: Timestamp::default(),
                    link_target: None,
                    ino: 0,
                    dev: 0,
                    nlink: 1,
                },
            ),
        };
        Ok(Node {
            rel: String::new(),
            host,
            metadata,
            dir_layers,
        })
    }

    /// The entry `name` of the directory `parent`, overlay rules applied.
    fn child(&self, parent: &Node, name: &str) -> Result<Option<Node>> {
        let rel = join(&parent.rel, name);
        let mut layers = parent.dir_layers.iter().copied();
        let (top_layer, host, m) = loop {
            let Some(layer) = layers.next() else {
                return Ok(None);
            };
            let host = self.host(layer, &rel);
            if let Some(m) = lstat(&host)? {
                break (layer, host, m);
            }
        };
        if is_whiteout(&m) {
            return Ok(None);
        }
        let metadata = metadata_of(&host, &m)?;
        let mut dir_layers = Vec::new();
        if m.is_dir() {
            dir_layers.push(top_layer);
            if !is_opaque(&host) {
                for layer in layers {
                    let lower = self.host(layer, &rel);
                    match lstat(&lower)? {
                        None => continue,
                        Some(lm) if lm.is_dir() => {
                            dir_layers.push(layer);
                            if is_opaque(&lower) {
                                break;
                            }
                        }
                        // A whiteout or non-directory hides everything further down.
                        Some(_) => break,
                    }
                }
            }
        }
        Ok(Some(Node {
            rel,
            host,
            metadata,
            dir_layers,
        }))
    }

    fn resolve(&self, path: &str, follow: Follow) -> Result<Option<Node>> {
        let root = self.root()?;
        let mut pending: Vec<String> = components(path).rev().map(str::to_string).collect();
        let mut stack: Vec<Node> = Vec::new();
        let mut links = 0u32;
        while let Some(name) = pending.pop() {
            if name == "." {
                continue;
            }
            if name == ".." {
                stack.pop();
                continue;
            }
            let parent = stack.last().unwrap_or(&root);
            if parent.metadata.kind != FileKind::Dir {
                return Ok(None);
            }
            let Some(node) = self.child(parent, &name)? else {
                return Ok(None);
            };
            if node.metadata.kind == FileKind::Symlink
                && (!pending.is_empty() || follow == Follow::All)
            {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(LayerError::SymlinkLoop {
                        path: path.to_string(),
                    });
                }
                let target = node.metadata.link_target.clone().unwrap_or_default();
                if target.starts_with('/') {
                    stack.clear();
                }
                pending.extend(components(&target).rev().map(str::to_string));
                continue;
            }
            stack.push(node);
        }
        Ok(Some(stack.pop().unwrap_or(root)))
    }

    /// Looks `path` up (absolute or relative to the root), resolving symlinks chroot style and
    /// honouring whiteouts and opaque directories; `None` when it does not exist.
    ///
    /// # Errors
    /// [`LayerError::SymlinkLoop`] after [`MAX_SYMLINKS`] symlinks, [`LayerError::Fs`] when a
    /// snapshot cannot be read.
    pub fn lookup(&self, path: &str, follow: Follow) -> Result<Option<Found>> {
        Ok(self.resolve(path, follow)?.map(|node| node.found()))
    }

    fn list(&self, dir: &Node) -> Result<Vec<Node>> {
        let mut names = BTreeSet::new();
        for &layer in &dir.dir_layers {
            let host = self.host(layer, &dir.rel);
            for item in std::fs::read_dir(&host).map_err(fs_err("list", &host))? {
                let item = item.map_err(fs_err("list", &host))?;
                let name = item
                    .file_name()
                    .into_string()
                    .map_err(|_| LayerError::NonUtf8Name { path: item.path() })?;
                names.insert(name);
            }
        }
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            if let Some(node) = self.child(dir, &name)? {
                out.push(node);
            }
        }
        Ok(out)
    }

    fn resolve_dir(&self, path: &str) -> Result<Node> {
        let node = self
            .resolve(path, Follow::All)?
            .ok_or_else(|| LayerError::NotFound {
                path: path.to_string(),
            })?;
        if node.metadata.kind != FileKind::Dir {
            return Err(LayerError::NotADirectory {
                path: path.to_string(),
            });
        }
        Ok(node)
    }

    /// The merged entries of the directory `path` (symlinks followed), sorted by name in byte
    /// order: upper snapshots hide lower ones, whiteouts remove, opaque directories stop.
    ///
    /// # Errors
    /// [`LayerError::NotFound`], [`LayerError::NotADirectory`], [`LayerError::SymlinkLoop`],
    /// [`LayerError::NonUtf8Name`], [`LayerError::Fs`].
    pub fn read_dir(&self, path: &str) -> Result<Vec<(String, Found)>> {
        let dir = self.resolve_dir(path)?;
        Ok(self
            .list(&dir)?
            .into_iter()
            .map(|node| {
                let name = node.rel.rsplit('/').next().unwrap_or_default().to_string();
                (name, node.found())
            })
            .collect())
    }

    /// The merged subtree at `path` (symlinks in `path` followed, none below it), depth first:
    /// each directory before its entries, entries in byte order of name. A non-directory gives
    /// itself alone. Paths in the result are rootfs paths.
    ///
    /// # Errors
    /// As [`RootfsView::read_dir`], and [`LayerError::NotFound`] when `path` does not exist.
    pub fn walk(&self, path: &str) -> Result<Vec<Found>> {
        let top = self
            .resolve(path, Follow::All)?
            .ok_or_else(|| LayerError::NotFound {
                path: path.to_string(),
            })?;
        let mut out = Vec::new();
        let mut stack = vec![top];
        while let Some(node) = stack.pop() {
            out.push(node.found());
            if node.metadata.kind == FileKind::Dir {
                let mut children = self.list(&node)?;
                children.reverse();
                stack.extend(children);
            }
        }
        Ok(out)
    }

    /// The content of the regular file at `path` (symlinks followed); `None` when it does not
    /// exist.
    ///
    /// # Errors
    /// [`LayerError::NotAFile`] when it is not a regular file, [`LayerError::Fs`] when it
    /// cannot be read.
    pub fn read_file(&self, path: &str) -> Result<Option<Vec<u8>>> {
        let Some(node) = self.resolve(path, Follow::All)? else {
            return Ok(None);
        };
        if node.metadata.kind != FileKind::File {
            return Err(LayerError::NotAFile {
                path: path.to_string(),
            });
        }
        std::fs::read(&node.host)
            .map(Some)
            .map_err(fs_err("read", &node.host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn lookup_resolves_like_a_chroot() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("usr/bin")).unwrap();
        std::fs::write(root.join("usr/bin/sh"), b"sh").unwrap();
        symlink("usr/bin", root.join("bin")).unwrap();
        symlink("/usr/bin/sh", root.join("usr/bin/abs")).unwrap();
        symlink("../../../../usr", root.join("usr/bin/up")).unwrap();
        symlink("missing", root.join("dangling")).unwrap();
        symlink("self", root.join("self")).unwrap();
        let view = RootfsView::new(vec![root.to_path_buf()]);
        let cases: &[(&str, Follow, Option<&str>)] = &[
            ("/", Follow::All, Some("/")),
            ("", Follow::All, Some("/")),
            ("/bin/sh", Follow::All, Some("/usr/bin/sh")),
            ("bin/sh", Follow::NotLast, Some("/usr/bin/sh")),
            ("/bin", Follow::NotLast, Some("/bin")),
            ("/bin", Follow::All, Some("/usr/bin")),
            ("/bin/abs", Follow::All, Some("/usr/bin/sh")),
            ("/bin/abs", Follow::NotLast, Some("/usr/bin/abs")),
            ("/bin/up/bin/sh", Follow::All, Some("/usr/bin/sh")),
            ("/../../usr/./bin//sh", Follow::All, Some("/usr/bin/sh")),
            ("/usr/bin/sh/x", Follow::All, None),
            ("/dangling", Follow::All, None),
            ("/dangling", Follow::NotLast, Some("/dangling")),
            ("/nothing", Follow::All, None),
            ("/self", Follow::NotLast, Some("/self")),
        ];
        for (path, follow, want) in cases {
            let got = view.lookup(path, *follow).unwrap().map(|f| f.path);
            assert_eq!(got.as_deref(), *want, "{path:?} {follow:?}");
        }
        assert!(matches!(
            view.lookup("/self", Follow::All),
            Err(LayerError::SymlinkLoop { .. })
        ));
    }
}
