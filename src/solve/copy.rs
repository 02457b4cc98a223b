//! COPY and ADD semantics: which source entries a COPY/ADD selects, and the layer entries it
//! makes.
//!
//! Consumes the expanded sources and destination of one COPY/ADD, the tree it reads from
//! ([`SourceTree`]: the context, a stage, an image) and the tree it writes into
//! ([`DestTree`]: the image so far, or [`Scratch`] for `--link`). Produces the entries the
//! cache key hashes ([`select_sources`]) and the [`LayerEntry`] list of the layer
//! ([`plan_copy`]): every created or changed entry plus the directories above them. It never
//! writes into a tree and never reads file content, except that ADD reads archive headers
//! and extracts archives and downloads into the caller's scratch directory ([`add`]).
//!
//! # BuildKit behaviour reproduced (dockerd 20.10.24 / BuildKit 0.8 here, newer BuildKit
//! source for features that version lacks)
//!
//! Checked with a base image holding `/existing` (0700 5:6), `/existsym -> /existing`,
//! `/relsym -> existing2`, a file `/filedest`, users `app` (1000:1001) and `nogrp`
//! (1002:1234), groups `grp` (1001) and `other` (2000), then `docker save` and `tar -tv`:
//! - `COPY a.txt /x/y/` makes `x/`, `x/y/` (0755 0:0, build time) and `x/y/a.txt` with the
//!   source mode and mtime, owner 0:0 (context owners are dropped).
//! - `COPY a.txt /f` makes the file `/f`; `COPY a.txt /existing` writes
//!   `/existing/a.txt` and the layer repeats `existing/` with its own mode and owner
//!   (0700 5:6) and the build time as mtime. Unchanged ancestors keep their mtime.
//! - `COPY dir /d1/` and `COPY dir /d2` copy the contents, hidden files and empty dirs
//!   included; the destination dir is made 0755 (never the source dir's mode); nested
//!   dirs keep their mode. `COPY dir /existing/` keeps `existing/` at 0700 5:6.
//! - `COPY link /l1` (a symlink to a file) copies the target's content as `/l1`;
//!   `COPY dirlink /dl` copies the linked dir's contents; `COPY ln* /w/` also follows
//!   the matches, naming them after the match (`w/lnk`); symlinks inside a copied dir
//!   stay symlinks.
//! - `COPY a.txt b.txt /m` (no trailing slash) is no error: each source is copied in turn
//!   and the last one wins; `COPY *.txt /single` too.
//! - `COPY nope* /x/` (no match) succeeds and changes nothing; `COPY nope /x` fails
//!   (`"/nope" not found`).
//! - `COPY a.txt /filedest/` fails (`not a directory`), `COPY d /filedest` fails
//!   (`cannot copy to non-directory`), `COPY a.txt /existsym` writes
//!   `existing/a.txt`, `COPY a.txt /relsym/sub/` creates `existing2/sub/`. Below the
//!   destination nothing is followed: `COPY tree/ /` with a directory `tree/existsym/`
//!   fails (`cannot copy to non-directory`), and a symlink `existing` in the source onto
//!   the image's directory fails (`cannot replace to directory ... with file`).
//! - `COPY d* /wd/` copies the contents of the matched directory `d1` and the matched
//!   files into `/wd/`; `COPY . /all/` keeps the context's hard links as hard links.
//! - `COPY ../a.txt /a/b/` and `COPY /a.txt /abs` read `a.txt` from the context root;
//!   `COPY a.txt rel/` after `WORKDIR /wd` writes `wd/rel/a.txt`; a `""` or `.`
//!   destination is the working directory.
//! - `--chown=app` gives 1000:1001 (the user's primary group), `--chown=app:other`
//!   1000:2000, `--chown=1234:5678` as given; it applies to the parents it creates and to
//!   every copied entry. `COPY --from=<stage>` without `--chown` keeps the stage's owners.
//! - `--chmod=751` sets the permission bits of copied files and nested dirs, not of
//!   symlinks, created parents or the destination dir. Hard links inside one copied tree
//!   stay hard links.
//! - ADD of a plain, gzip, bzip2 or xz tar (by content: `archgz.txt` is extracted,
//!   `a.txt.gz` holding no tar is copied) extracts into the destination as a directory
//!   (`ADD arch.tar /t9` too), keeping the archive's owners, modes (setuid too) and mtimes
//!   even with `--chown` (which then only owns the created destination dir); the archive's
//!   `./` entry is skipped, existing dirs are merged, parents missing from the archive are
//!   made 0755 0:0. zstd is extracted by newer BuildKit (moby's `DecompressStream` learned
//!   it), so kiln extracts it. Archive paths resolve inside the destination as in a chroot
//!   (moby's `chrootarchive`; BuildKit's newest `applyRootArchive` the same way). The
//!   newest BuildKit (2025) also lets `--chown` override the archive's owners; kiln follows
//!   the dockerd it is compared with.
//! - `ADD <url> /u1/` saves `/u1/<last path segment>` (`__unnamed__` when the path has
//!   none), mode 0600, owner 0:0 or `--chown`, mtime from `Last-Modified` or the epoch
//!   when the server sends none; a downloaded tar is not extracted; `--chmod` is ignored
//!   for downloads.
//! - From BuildKit's source (dispatchCopy, fsutil copy): heredoc sources are files named
//!   after the delimiter, mode 0644, owner 0:0 or `--chown`; `--link` copies onto an empty
//!   tree, so no destination lookups (and no `--link` when `--chmod` is given);
//!   `--parents` keeps each source's path below the context root or below a `/./` pivot;
//!   `--exclude` patterns are Docker patterns matched against paths below each source;
//!   `--unpack` forces (or stops) archive extraction, for URLs too.
//!
//! - Extended attributes: a file with `user.kiln` and `security.capability` keeps only the
//!   capability when ADDed from a tar (`tar --xattrs`) and when copied on with
//!   `COPY --from=<stage>`; copied from the context it keeps neither.
//!
//! Directory mtimes differ in one place: BuildKit's context transfer rewrites the mtime of
//! every non-empty directory of the context to the transfer time; kiln keeps the source
//! mtime, which is what BuildKit's copier itself does.

pub mod pattern;
mod plan;
mod trees;

use std::path::PathBuf;

use thiserror::Error;

pub use self::plan::{plan_copy, select_sources};
pub use self::trees::{HostDir, Scratch, SingleFile};
#[cfg(doc)]
use super::add;
#[cfg(doc)]
use crate::layer::LayerEntry;
use crate::layer::Timestamp;
use crate::syntax::instruction::values::Chmod;

/// A COPY or ADD failure; the solver attaches the Dockerfile location.
#[derive(Debug, Error)]
pub enum CopyError {
    /// A source without wildcards names nothing.
    #[error("source {path:?} not found: expected a file or directory in the build source")]
    SourceNotFound {
        /// The source as written, made absolute (`/nope`).
        path: String,
    },
    /// A wildcard source has a malformed pattern.
    #[error("bad source pattern {pattern:?}: expected a valid wildcard pattern")]
    BadPattern {
        /// The source pattern.
        pattern: String,
    },
    /// A `--exclude` pattern is malformed.
    #[error("bad --exclude pattern: {source}")]
    BadExclude {
        /// What the pattern matcher said.
        #[source]
        source: crate::context::ignore::IgnoreError,
    },
    /// A path the copy must create a directory at is something else.
    #[error("cannot create directory {path:?}: a parent is not a directory")]
    NotADirectory {
        /// The image path, absolute.
        path: String,
    },
    /// A directory would be copied onto something that is no directory.
    #[error("cannot copy to non-directory {path:?}")]
    CopyToNonDirectory {
        /// The image path, absolute.
        path: String,
    },
    /// A file would replace a directory.
    #[error("cannot replace directory {path:?} with a file")]
    ReplaceDirectory {
        /// The image path, absolute.
        path: String,
    },
    /// A source is a fifo or socket, which BuildKit refuses to copy.
    #[error("cannot copy {path:?}: unsupported file type (fifo or socket)")]
    Unsupported {
        /// The source path.
        path: String,
    },
    /// Symlinks nest too deep or loop.
    #[error("too many levels of symbolic links resolving {path:?}")]
    SymlinkLoop {
        /// The path being resolved.
        path: String,
    },
    /// A name is not UTF-8.
    #[error("file name {path:?} is not UTF-8")]
    NotUtf8 {
        /// The host path.
        path: PathBuf,
    },
    /// COPY was given a URL.
    #[error("source can't be a URL for COPY: {url}")]
    UrlInCopy {
        /// The URL.
        url: String,
    },
    /// A git source (not supported yet).
    #[error("git sources are not supported yet: {url}")]
    GitUnsupported {
        /// The git URL.
        url: String,
    },
    /// `--checksum` where BuildKit refuses it.
    #[error("--checksum {problem}")]
    ChecksumMisuse {
        /// Why: `can't be specified for COPY`, `can't be specified for multiple sources`,
        /// `requires HTTP(S) or Git sources`.
        problem: &'static str,
    },
    /// The downloaded content does not have the `--checksum` digest.
    #[error("checksum mismatch for {url}: expected {expected}, got {actual}")]
    ChecksumMismatch {
        /// The URL.
        url: String,
        /// The digest given with `--checksum`.
        expected: String,
        /// The digest of what was downloaded.
        actual: String,
    },
    /// A download failed.
    #[error("cannot download {url}: {reason}")]
    Download {
        /// The URL.
        url: String,
        /// What went wrong (the HTTP status or the transport error).
        reason: String,
    },
    /// An archive could not be read.
    #[error("cannot extract archive {path:?}: {reason}")]
    Archive {
        /// The source path.
        path: String,
        /// What was wrong with it.
        reason: String,
    },
    /// A symbolic `--chmod` could not be applied.
    #[error("invalid --chmod {mode:?}: expected an octal mode or chmod(1) clauses")]
    BadChmod {
        /// The mode as given.
        mode: String,
    },
    /// Reading the image's root file system failed.
    #[error("cannot read {path:?} in the image")]
    View {
        /// The image path.
        path: String,
        /// The error.
        #[source]
        source: crate::layer::LayerError,
    },
    /// Reading a tree or writing scratch files failed.
    #[error("cannot read {path:?}")]
    Io {
        /// The host path.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

/// What a source entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link with its stored target.
    Symlink {
        /// The link text.
        target: String,
    },
    /// A character device.
    CharDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A block device.
    BlockDevice {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
    /// A named pipe (copying one is an error, as in BuildKit).
    Fifo,
    /// Something never copied (a socket, or a context entry the transfer drops).
    Skip,
}

/// The `lstat` of one source entry, as the copy uses it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceStat {
    /// What it is.
    pub kind: SourceKind,
    /// Permission bits, `0o7777`.
    pub mode: u32,
    /// Owner kept when there is no `--chown` (0 for context files).
    pub uid: u32,
    /// Group kept when there is no `--chown`.
    pub gid: u32,
    /// Size in bytes (regular files).
    pub size: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// `(device, inode)` when entries sharing it are hard links of each other.
    pub link_id: Option<(u64, u64)>,
}

/// A tree COPY reads from. Paths are relative to its root, `/`-separated, cleaned, `""`
/// for the root, and never cross a symlink: the copy resolves symlinks itself, chroot-style.
pub trait SourceTree {
    /// The entry at `path` without following a final symlink; `None` when absent.
    ///
    /// # Errors
    /// When the tree cannot be read.
    fn stat(&self, path: &str) -> Result<Option<SourceStat>, CopyError>;
    /// The names in directory `path`, in byte order.
    ///
    /// # Errors
    /// When the tree cannot be read.
    fn children(&self, path: &str) -> Result<Vec<String>, CopyError>;
    /// The host file holding the content of regular file `path`.
    fn host_path(&self, path: &str) -> PathBuf;
    /// The extended attributes of `path` a layer keeps (not following a final symlink),
    /// sorted by name; none by default, as for the build context.
    ///
    /// # Errors
    /// When the tree cannot be read.
    fn xattrs(&self, _path: &str) -> Result<Vec<(String, Vec<u8>)>, CopyError> {
        Ok(Vec::new())
    }
}

/// What an entry of the destination is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DestKind {
    /// A directory.
    Dir,
    /// A symbolic link with its stored target.
    Symlink {
        /// The link text.
        target: String,
    },
    /// Anything else (file, device, ...).
    Other,
}

/// The metadata of one destination entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DestStat {
    /// What it is.
    pub kind: DestKind,
    /// Permission bits, `0o7777`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: Timestamp,
}

/// The tree a COPY writes into (the image's merged root file system), read only.
pub trait DestTree {
    /// The entry at `path` (relative, no symlinks in its parents) without following a final
    /// symlink; `None` when absent or whited out.
    ///
    /// # Errors
    /// When the tree cannot be read.
    fn lstat(&self, path: &str) -> Result<Option<DestStat>, CopyError>;
}

/// A resolved `--chown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Owner {
    /// User id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
}

/// One COPY/ADD source after [`add::prepare_sources`]: a path in the source tree, or a file
/// already on the host (heredoc body, download).
#[derive(Debug, Clone)]
pub enum Prepared {
    /// A path or wildcard pattern in the source tree, as written.
    Tree {
        /// The source word, expanded.
        pattern: String,
    },
    /// A file made for this step.
    File {
        /// The tree holding it.
        file: SingleFile,
        /// True for a download: extracted only with `--unpack=true`.
        download: bool,
    },
}

/// Everything about one COPY/ADD except its sources and trees.
#[derive(Debug, Clone)]
pub struct CopyOptions {
    /// The destination as written, expanded.
    pub destination: String,
    /// The image's working directory (`""` means `/`).
    pub workdir: String,
    /// `--chown`, resolved in the destination image.
    pub owner: Option<Owner>,
    /// `--chmod`.
    pub chmod: Option<Chmod>,
    /// `--link` (ignored when `--chmod` is given, as BuildKit does).
    pub link: bool,
    /// `--parents`.
    pub parents: bool,
    /// `--exclude` patterns.
    pub exclude: Vec<String>,
    /// True for ADD: local archives are extracted unless `unpack` says otherwise.
    pub add: bool,
    /// `--unpack`.
    pub unpack: Option<bool>,
    /// The time created and changed directories get (the build time, or SOURCE_DATE_EPOCH).
    pub now: Timestamp,
    /// A directory for files extracted from archives.
    pub scratch: PathBuf,
}

impl CopyOptions {
    /// True if and only if the copy ignores the destination image (`--link` without
    /// `--chmod`): plan it against [`Scratch`].
    pub fn is_linked(&self) -> bool {
        self.link && self.chmod.is_none()
    }
}

/// One entry a COPY/ADD reads from its source tree, for the cache key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SelectedSource {
    /// Its path in the source tree (relative, `/`-separated; symlinks given as sources are
    /// listed at the path they resolve to).
    pub key_path: String,
    /// What it is.
    pub kind: SourceKind,
    /// The host file with its content, for regular files.
    pub source: Option<PathBuf>,
}

/// Applies `--chmod` to a permission set: octal replaces the `0o777` bits (fsutil keeps the
/// special bits of the source), symbolic clauses are applied as chmod(1) does.
///
/// # Errors
/// [`CopyError::BadChmod`] for a symbolic mode that does not parse.
pub fn apply_chmod(chmod: &Chmod, mode: u32, is_dir: bool) -> Result<u32, CopyError> {
    match chmod {
        Chmod::Octal(bits) => Ok((mode & !0o777) | (bits & 0o777)),
        Chmod::Symbolic(text) => symbolic_chmod(text, mode, is_dir)
            .ok_or_else(|| CopyError::BadChmod { mode: text.clone() }),
    }
}

/// chmod(1) clauses `[ugoa]*([-+=]([rwxXst]*|[ugo]))+`, comma separated; no `who` means all.
fn symbolic_chmod(text: &str, mut mode: u32, is_dir: bool) -> Option<u32> {
    for clause in text.split(',') {
        let who_end = clause
            .find(|c: char| !matches!(c, 'u' | 'g' | 'o' | 'a'))
            .unwrap_or(clause.len());
        let (who, mut rest) = clause.split_at(who_end);
        let mut mask = 0u32;
        for c in who.chars() {
            mask |= match c {
                'u' => 0o4700,
                'g' => 0o2070,
                'o' => 0o1007,
                _ => 0o7777,
            };
        }
        if who.is_empty() {
            mask = 0o7777;
        }
        if rest.is_empty() {
            return None;
        }
        while let Some(op) = rest.chars().next() {
            if !matches!(op, '+' | '-' | '=') {
                return None;
            }
            rest = &rest[1..];
            let end = rest.find(['+', '-', '=']).unwrap_or(rest.len());
            let (perms, tail) = rest.split_at(end);
            rest = tail;
            let mut bits = 0u32;
            for c in perms.chars() {
                bits |= match c {
                    'r' => 0o444,
                    'w' => 0o222,
                    'x' => 0o111,
                    'X' if is_dir || mode & 0o111 != 0 => 0o111,
                    'X' => 0,
                    's' => 0o6000,
                    't' => 0o1000,
                    'u' => ((mode >> 6) & 7) * 0o111,
                    'g' => ((mode >> 3) & 7) * 0o111,
                    'o' => (mode & 7) * 0o111,
                    _ => return None,
                };
            }
            let bits = bits & mask;
            mode = match op {
                '+' => mode | bits,
                '-' => mode & !bits,
                _ => (mode & !(mask & 0o777)) | bits,
            };
        }
    }
    Some(mode & 0o7777)
}

#[cfg(test)]
mod tests;
