//! Layers: the filesystem changes of one step as a reproducible tar, and the unpacked
//! snapshot directories a build reads from.
//!
//! Consumes [`LayerEntry`] lists (made by the COPY/ADD/WORKDIR code) and layer tar streams
//! (from the store or a base image). Produces layer tars whose uncompressed sha256 is the
//! `diff_id` ([`write_layer`]), snapshot directories ([`write_layer`] with a snapshot,
//! [`unpack`]), a merged read-only view over stacked snapshots ([`RootfsView`]) and user and
//! group resolution inside such a view ([`lookup_user`], [`chown_ids`]).
//!
//! Must never: follow a symlink while creating a snapshot entry, write outside the snapshot
//! directory, hold a whole layer in memory, or know anything about Dockerfiles.
//!
//! # Snapshot format
//!
//! A snapshot is a plain directory in overlayfs *upper dir* form, so the sandbox can mount a
//! stack of them as overlay lower dirs unchanged: a whiteout (`.wh.<name>` in a layer) is a
//! character device 0/0 named `<name>`; an opaque directory (`.wh..wh..opq` in a layer) carries
//! the xattr `trusted.overlay.opaque=y` when created as root, `user.overlay.opaque=y` otherwise.

mod adopt;
mod diff;
mod snapshot;
mod unpack;
mod users;
mod view;
mod write;

pub use adopt::adopt_upper;
pub use diff::{diff_upper, DiffOptions, IdExtent, IdMap};
pub use unpack::{unpack, UnpackSummary};
pub use users::{chown_ids, lookup_user, Chown, ExecUser};
pub use view::{FileKind, Follow, Found, Metadata, RootfsView};
pub use write::{clamp_mtimes, write_layer, LayerSummary};

use std::path::PathBuf;

/// The prefix that marks a whiteout in a layer tar (OCI image spec, "Whiteouts").
pub const WHITEOUT_PREFIX: &str = ".wh.";

/// The name of the opaque-directory marker inside a directory of a layer tar.
pub const OPAQUE_MARKER: &str = ".wh..wh..opq";

/// The xattr marking an opaque directory in a snapshot created by root.
pub const OPAQUE_XATTR_ROOT: &str = "trusted.overlay.opaque";

/// The xattr marking an opaque directory in a snapshot created without root (overlayfs
/// `userxattr` mount option).
pub const OPAQUE_XATTR_USER: &str = "user.overlay.opaque";

/// The most symlinks one lookup follows before giving up (Linux's `MAXSYMLINKS`).
pub const MAX_SYMLINKS: u32 = 40;

/// A point in time as stored in a layer: seconds since the Unix epoch and nanoseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp {
    /// Whole seconds since 1970-01-01T00:00:00Z (negative before it).
    pub secs: i64,
    /// Nanoseconds within the second, below 1 000 000 000.
    pub nanos: u32,
}

/// What a [`LayerEntry`] is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file whose content is read from `source` while the layer is written.
    File {
        /// The host file holding the content.
        source: PathBuf,
    },
    /// A symbolic link.
    Symlink {
        /// The link text, stored as is.
        target: String,
    },
    /// A hard link to another non-directory entry of the same layer. When the link sorts
    /// before the `File` it names, the writer gives the content to the link's name and makes
    /// the file's name the link, as a tar of a real tree would.
    Hardlink {
        /// The layer path of the entry it links to.
        target: String,
    },
    /// A named pipe.
    Fifo,
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
    /// Removes `path` of the layers below (written as `<dir>/.wh.<name>`).
    Whiteout,
    /// Hides everything the layers below have inside the directory `path` (written as
    /// `<path>/.wh..wh..opq`).
    Opaque,
}

/// One entry of a layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerEntry {
    /// Path inside the rootfs: `a/b`, no leading or trailing `/`, no `.` or `..` components.
    pub path: String,
    /// What the entry is.
    pub kind: EntryKind,
    /// Permission bits (`0o7777`); the file type comes from `kind`.
    pub mode: u32,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
    /// Modification time.
    pub mtime: Timestamp,
    /// Extended attributes, written as PAX `SCHILY.xattr.<name>` records.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

/// Why a layer path was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PathProblem {
    /// The path is empty.
    Empty,
    /// The path starts with `/`.
    Absolute,
    /// The path has an empty component (`a//b`) or ends with `/`.
    EmptyComponent,
    /// The path has a `.` component.
    Dot,
    /// The path has a `..` component.
    DotDot,
    /// The path contains a NUL byte.
    Nul,
    /// A component starts with `.wh.`, which layers reserve for whiteouts.
    Reserved,
    /// The path is not UTF-8.
    NotUtf8,
}

impl std::fmt::Display for PathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathProblem::Empty => "expected a non-empty path",
            PathProblem::Absolute => "expected a relative path, found a leading '/'",
            PathProblem::EmptyComponent => "expected no empty component or trailing '/'",
            PathProblem::Dot => "expected no '.' component",
            PathProblem::DotDot => "expected no '..' component",
            PathProblem::Nul => "expected no NUL byte",
            PathProblem::Reserved => "expected no component starting with '.wh.'",
            PathProblem::NotUtf8 => "expected UTF-8",
        })
    }
}

/// Errors of the layer stage.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    /// A layer path is not a clean relative path.
    #[error("invalid layer path {path:?}: {problem}")]
    InvalidPath {
        /// The path as given.
        path: String,
        /// What is wrong with it.
        problem: PathProblem,
    },
    /// Two entries of one layer have the same path.
    #[error("duplicate layer entry {path:?}")]
    Duplicate {
        /// The repeated path.
        path: String,
    },
    /// An entry's parent directory is not an entry of the layer.
    #[error("layer entry {path:?} expected its parent directory {parent:?} in the layer")]
    MissingParent {
        /// The entry.
        path: String,
        /// The missing parent.
        parent: String,
    },
    /// An entry's parent is in the layer but is not a directory.
    #[error("layer entry {path:?} expected {parent:?} to be a directory")]
    ParentNotDirectory {
        /// The entry.
        path: String,
        /// The parent that is not a directory.
        parent: String,
    },
    /// A hard link points at something that is not an earlier non-directory entry.
    #[error(
        "hard link {path:?} expected {target:?} to be a non-directory entry earlier in the layer"
    )]
    HardlinkTarget {
        /// The hard link.
        path: String,
        /// Its target.
        target: String,
    },
    /// An xattr name is empty or contains `=` or NUL, which PAX records cannot carry.
    #[error("layer entry {path:?}: invalid xattr name {name:?}")]
    InvalidXattr {
        /// The entry.
        path: String,
        /// The xattr name.
        name: String,
    },
    /// A device number does not fit the 7 octal digits of a ustar header.
    #[error("layer entry {path:?}: device {major}:{minor} expected numbers below 2097152")]
    DeviceNumber {
        /// The entry.
        path: String,
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// The source of a file entry could not be opened or read.
    #[error("cannot read {} for layer entry {path:?}", source_path.display())]
    Source {
        /// The entry.
        path: String,
        /// The host file.
        source_path: PathBuf,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// The source of a file entry is not a regular file.
    #[error("layer entry {path:?}: expected {} to be a regular file", source_path.display())]
    SourceNotFile {
        /// The entry.
        path: String,
        /// The host path.
        source_path: PathBuf,
    },
    /// The source of a file entry changed size while it was being written.
    #[error("layer entry {path:?}: {} changed while being read (expected {expected} bytes, found {found})", source_path.display())]
    SourceChanged {
        /// The entry.
        path: String,
        /// The host file.
        source_path: PathBuf,
        /// Size when opened.
        expected: u64,
        /// Bytes actually there (at least this many when larger).
        found: u64,
    },
    /// Writing the layer stream failed.
    #[error("cannot write the layer stream")]
    Write(#[source] std::io::Error),
    /// Reading the layer stream failed or it is not a valid tar.
    #[error("cannot read the layer stream")]
    Read(#[source] std::io::Error),
    /// A tar entry's path is unsafe or unusable.
    #[error("layer tar entry {path:?}: {problem}")]
    UnsafeTarPath {
        /// The path as stored in the tar (lossy UTF-8).
        path: String,
        /// What is wrong with it.
        problem: PathProblem,
    },
    /// A tar entry would be created through a symlink or a non-directory.
    #[error("layer tar entry {path:?}: expected {component:?} to be a directory, found a symlink or file")]
    ThroughNonDirectory {
        /// The entry.
        path: String,
        /// The component that is not a directory.
        component: String,
    },
    /// A tar entry has a type a snapshot cannot hold.
    #[error("layer tar entry {path:?}: unsupported entry type {kind:?}")]
    UnsupportedEntry {
        /// The entry.
        path: String,
        /// The tar type flag.
        kind: char,
    },
    /// A file system operation on a snapshot or a view failed.
    #[error("cannot {op} {}", path.display())]
    Fs {
        /// What was being done ("create", "read", "set the mode of", …).
        op: &'static str,
        /// The host path.
        path: PathBuf,
        /// The I/O error.
        #[source]
        error: std::io::Error,
    },
    /// A file name in a snapshot is not UTF-8.
    #[error("expected a UTF-8 file name, found {}", path.display())]
    NonUtf8Name {
        /// The host path.
        path: PathBuf,
    },
    /// Resolving a rootfs path met more than [`MAX_SYMLINKS`] symlinks.
    #[error("too many levels of symbolic links resolving {path:?}")]
    SymlinkLoop {
        /// The path being resolved.
        path: String,
    },
    /// A rootfs path does not exist in the view.
    #[error("{path:?} not found in the rootfs")]
    NotFound {
        /// The rootfs path.
        path: String,
    },
    /// A rootfs path names something that is not a directory where one is needed.
    #[error("expected {path:?} to be a directory")]
    NotADirectory {
        /// The rootfs path.
        path: String,
    },
    /// A rootfs path names something that is not a regular file where one is needed.
    #[error("expected {path:?} to be a regular file")]
    NotAFile {
        /// The rootfs path.
        path: String,
    },
    /// A user name is not in the rootfs's `/etc/passwd`.
    #[error("unable to find user {name}: no matching entries in passwd file")]
    UnknownUser {
        /// The user name.
        name: String,
    },
    /// A group name is not in the rootfs's `/etc/group`.
    #[error("unable to find group {name}: no matching entries in group file")]
    UnknownGroup {
        /// The group name.
        name: String,
    },
}

/// The layer stage's result type.
pub type Result<T> = std::result::Result<T, LayerError>;

/// Wraps an I/O error on the host path `path` into [`LayerError::Fs`].
pub(crate) fn fs_err(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> LayerError {
    let path = path.to_path_buf();
    move |error| LayerError::Fs { op, path, error }
}

/// Checks that `path` is a clean relative layer path and returns its components.
///
/// # Errors
/// The [`PathProblem`] of the first rule it breaks.
pub fn check_path(path: &str) -> std::result::Result<Vec<&str>, PathProblem> {
    if path.is_empty() {
        return Err(PathProblem::Empty);
    }
    if path.starts_with('/') {
        return Err(PathProblem::Absolute);
    }
    if path.contains('\0') {
        return Err(PathProblem::Nul);
    }
    let parts: Vec<&str> = path.split('/').collect();
    for part in &parts {
        match *part {
            "" => return Err(PathProblem::EmptyComponent),
            "." => return Err(PathProblem::Dot),
            ".." => return Err(PathProblem::DotDot),
            p if p.starts_with(WHITEOUT_PREFIX) => return Err(PathProblem::Reserved),
            _ => {}
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_path_table() {
        let cases: &[(&str, std::result::Result<usize, PathProblem>)] = &[
            ("a", Ok(1)),
            ("a/b/c", Ok(3)),
            ("a b/ü", Ok(2)),
            ("", Err(PathProblem::Empty)),
            ("/a", Err(PathProblem::Absolute)),
            ("a/", Err(PathProblem::EmptyComponent)),
            ("a//b", Err(PathProblem::EmptyComponent)),
            ("./a", Err(PathProblem::Dot)),
            ("a/../b", Err(PathProblem::DotDot)),
            ("..", Err(PathProblem::DotDot)),
            ("a\0b", Err(PathProblem::Nul)),
            ("a/.wh.b", Err(PathProblem::Reserved)),
            (".wh..wh..opq", Err(PathProblem::Reserved)),
            ("a/.whb", Ok(2)),
        ];
        for (path, want) in cases {
            assert_eq!(check_path(path).map(|p| p.len()), *want, "{path:?}");
        }
    }
}
