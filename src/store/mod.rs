//! The on-disk store: content-addressed blobs, tags in `index.json`, unpacked layer
//! snapshots, small JSON records, locks, image references, and garbage collection.
//!
//! Consumes bytes, snapshot directories, records and names from the engine; produces stable
//! paths, verified bytes, parsed OCI manifests and configs, and summaries of what gc, prune and
//! du found. It knows nothing of cache semantics or Dockerfiles, and it must never leave a
//! half-written file under a final name: every write goes to `kiln/tmp` first, is fsynced and
//! renamed into place, so a crash or Ctrl-C at any point leaves a store the next command uses.
//!
//! The root is an OCI image layout, so exporting or pushing needs no rewrite:
//!
//! ```text
//! root/oci-layout                       {"imageLayoutVersion":"1.0.0"}
//! root/index.json                       OCI index: one manifest descriptor per tag
//! root/blobs/sha256/<hex>               blobs (layers are uncompressed tars here)
//! root/kiln/snapshots/<diff_id hex>/    unpacked layers, renamed in from kiln/tmp
//! root/kiln/records/<kind>/<hex>.json   {refs, created, last_used, value}
//! root/kiln/tmp/<pid>-…                 temp files and dirs; a dead pid's are removed at open
//! root/kiln/lock                        flock: builds shared, gc and prune exclusive
//! root/kiln/index.lock                  flock: index.json read-modify-write, exclusive
//! ```

mod atomic;
mod blobs;
mod gc;
mod index;
mod lock;
mod records;
mod reference;
mod snapshots;

use std::io;
use std::path::{Path, PathBuf};

pub use atomic::remove_tree;
pub use blobs::{BlobReader, BlobWriter, HashingCallerBlob};
pub use gc::{DiskUsage, GcSummary, PruneOptions, PruneSummary};
pub use index::{
    descriptor_digest, ImageRecord, ResolvedImage, StoredImage, ANNOTATION_CONTAINERD_NAME,
    ANNOTATION_CREATED, ANNOTATION_REF_NAME,
};
pub use lock::{LockMode, StoreLock};
pub use records::RecordInfo;
pub use reference::{Reference, ReferenceError, DEFAULT_DOMAIN, DEFAULT_TAG};

use crate::digest::Digest;

/// Marks `dir` as the top of unrelated directory trees (`chattr +T`): every snapshot and
/// sandbox scratch is made in `kiln/tmp`, and the flag lets ext4's Orlov allocator give each
/// of them a block group of its own choosing instead of the one its siblings used.
///
/// Why it matters: ext4 without a journal will not reuse an inode freed less than ~30 s ago
/// while the group has another free one, and finds that out by scanning past each such inode
/// (a buffer lookup apiece) on every allocation. Right after a store was wiped, or a step's
/// scratch removed, every file created in those groups paid a scan of thousands: a cold
/// 10,000-file `COPY` took 3.5 s instead of 0.5 s, and repeated cold builds got slower each
/// time. File systems without the flag refuse it; that is fine, it is only placement.
fn mark_top_of_unrelated_trees(dir: &Path) {
    use rustix::fs::{ioctl_getflags, ioctl_setflags, IFlags};
    let Ok(handle) = std::fs::File::open(dir) else {
        return;
    };
    if let Ok(flags) = ioctl_getflags(&handle) {
        if !flags.contains(IFlags::TOPDIR) {
            let _ = ioctl_setflags(&handle, flags | IFlags::TOPDIR);
        }
    }
}

/// The contents of `oci-layout` this store writes and accepts.
const OCI_LAYOUT: &str = r#"{"imageLayoutVersion":"1.0.0"}"#;

/// Top-level names an OCI layout made by kiln may hold; a root holding only these (or nothing)
/// is a store being created, perhaps by a command that was interrupted.
const LAYOUT_NAMES: &[&str] = &["oci-layout", "index.json", "blobs", "kiln"];

/// Errors from the store. Every I/O error names the path and what was being done.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file-system operation failed.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done, e.g. "create directory".
        action: &'static str,
        /// The path involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// No root was given and none can be derived from the environment.
    #[error("cannot choose a store root: set --root, KILN_ROOT, XDG_DATA_HOME or HOME")]
    NoRoot,
    /// The root exists but is not a kiln store.
    #[error(
        "{} is not a kiln store: expected an empty directory or an OCI layout, found {found}",
        path.display()
    )]
    NotAStore {
        /// The root given.
        path: PathBuf,
        /// What was found instead, e.g. "a file" or "entry \"src\" without oci-layout".
        found: String,
    },
    /// The `oci-layout` file names a version this store does not read.
    #[error("{} has an unsupported OCI layout: expected {expected}, found {found:?}", path.display())]
    UnsupportedLayout {
        /// The `oci-layout` file.
        path: PathBuf,
        /// The version (or text) found.
        found: String,
        /// The content expected.
        expected: &'static str,
    },
    /// A JSON file of the store (index.json, a record) could not be parsed.
    #[error("cannot parse {what} {}", path.display())]
    Corrupt {
        /// What the file is, e.g. "index" or "record".
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A value could not be encoded as JSON.
    #[error("cannot encode {what} for {}", path.display())]
    Encode {
        /// What was being encoded.
        what: &'static str,
        /// The file it was meant for.
        path: PathBuf,
        /// The encode error.
        #[source]
        source: serde_json::Error,
    },
    /// Written bytes did not have the digest the writer expected; nothing was stored.
    #[error("digest mismatch for {}: expected {expected}, found {found}", path.display())]
    DigestMismatch {
        /// Where the blob would have gone.
        path: PathBuf,
        /// The digest expected.
        expected: Digest,
        /// The digest of the bytes written.
        found: Digest,
    },
    /// A stored blob's bytes no longer hash to its name.
    #[error("blob {} is corrupt: expected {expected}, found {found}", path.display())]
    CorruptBlob {
        /// The blob file.
        path: PathBuf,
        /// The digest its name promises.
        expected: Digest,
        /// The digest of its bytes.
        found: Digest,
    },
    /// A blob is not in the store.
    #[error("blob {digest} not found at {}", path.display())]
    BlobNotFound {
        /// The digest asked for.
        digest: Digest,
        /// Where it would be.
        path: PathBuf,
    },
    /// A manifest or config blob is not valid OCI JSON.
    #[error("blob {digest} is not a valid OCI {what}")]
    BadImageJson {
        /// "manifest" or "config".
        what: &'static str,
        /// The blob's digest.
        digest: Digest,
        /// The parse error.
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// A descriptor's digest is not a sha256 digest this store can hold.
    #[error("descriptor digest {found} is not a sha256 digest")]
    BadDescriptorDigest {
        /// The digest text found.
        found: String,
        /// Why it was rejected.
        #[source]
        source: crate::digest::DigestError,
    },
    /// A record kind is not `[a-z0-9-]+`.
    #[error("invalid record kind {kind:?}: expected lower-case letters, digits and '-'")]
    InvalidKind {
        /// The kind given.
        kind: String,
    },
    /// `tag` was given a reference without a tag.
    #[error("cannot tag {reference}: expected a name with a tag, found a digest reference")]
    NotATag {
        /// The reference given.
        reference: String,
    },
    /// `resolve` found no image for the text.
    #[error("no such image: {text}")]
    ImageNotFound {
        /// The text given.
        text: String,
    },
    /// An id prefix matches more than one image.
    #[error("image id prefix {prefix} is ambiguous: it matches {}", join(matches))]
    AmbiguousId {
        /// The prefix given.
        prefix: String,
        /// The manifest digests it matches.
        matches: Vec<Digest>,
    },
    /// This process already holds the store lock in a mode that would make the request wait
    /// for itself.
    #[error("cannot lock {} {wanted}: this process already holds it {held}", path.display())]
    LockConflict {
        /// The lock file.
        path: PathBuf,
        /// How this process holds it.
        held: LockMode,
        /// How it was asked for.
        wanted: LockMode,
    },
    /// The text is neither a reference, a digest nor an id prefix.
    #[error("invalid image name {text:?}")]
    InvalidReference {
        /// The text given.
        text: String,
        /// Why it is not a reference.
        #[source]
        source: ReferenceError,
    },
}

/// [`Store::default_root`] over an environment lookup, so it can be tested without touching
/// the process environment.
fn root_from_env(lookup: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<PathBuf> {
    let var = |name: &str| lookup(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(root) = var("KILN_ROOT") {
        return Ok(root);
    }
    if let Some(data) = var("XDG_DATA_HOME").filter(|p| p.is_absolute()) {
        return Ok(data.join("kiln"));
    }
    var("HOME")
        .map(|home| home.join(".local/share/kiln"))
        .ok_or(StoreError::NoRoot)
}

fn join(digests: &[Digest]) -> String {
    digests
        .iter()
        .map(Digest::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The store's result type.
pub type Result<T> = std::result::Result<T, StoreError>;

/// Returns a closure turning an `io::Error` into [`StoreError::Io`] for `action` on `path`.
/// The entries of `dir`, or `None` when it does not exist (a kind of record or a
/// directory of containers never written to).
///
/// # Errors
/// Any other error opening the directory.
pub(crate) fn read_dir_if_present(dir: &Path) -> io::Result<Option<std::fs::ReadDir>> {
    match std::fs::read_dir(dir) {
        Ok(entries) => Ok(Some(entries)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn io_error(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.to_path_buf();
    move |source| StoreError::Io {
        action,
        path,
        source,
    }
}

/// A handle on a store root. Cheap to clone; every method works on the file system directly,
/// so several handles (and processes) may use one root at once.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

impl Store {
    /// Opens the store at `root`, creating the layout if `root` is missing or empty, and
    /// removes temp entries left by processes that are no longer alive.
    ///
    /// # Errors
    /// [`StoreError::NotAStore`] if `root` is a file or a directory holding other things,
    /// [`StoreError::UnsupportedLayout`] for a foreign `oci-layout`, I/O errors otherwise.
    pub fn open(root: &Path) -> Result<Store> {
        Store {
            root: root.to_path_buf(),
        }
        .check_root()?;
        std::fs::create_dir_all(root).map_err(io_error("create directory", root))?;
        // One spelling per root, so the process-wide lock table sees one lock per store.
        let root = std::fs::canonicalize(root).map_err(io_error("resolve", root))?;
        let store = Store { root };
        for dir in [
            store.tmp_dir(),
            store.blobs_dir(),
            store.snapshots_dir(),
            store.records_dir(),
        ] {
            std::fs::create_dir_all(&dir).map_err(io_error("create directory", &dir))?;
        }
        mark_top_of_unrelated_trees(&store.tmp_dir());
        atomic::remove_stale(&store.tmp_dir())?;
        let layout = store.root.join("oci-layout");
        atomic::create_if_absent(&store.tmp_dir(), &layout, OCI_LAYOUT.as_bytes())?;
        store.check_layout(&layout)?;
        let empty_index = index::empty_index_json();
        atomic::create_if_absent(&store.tmp_dir(), &store.index_path(), &empty_index)?;
        Ok(store)
    }

    /// Returns the root used when none is given: `$KILN_ROOT`, else `$XDG_DATA_HOME/kiln`,
    /// else `$HOME/.local/share/kiln`. Empty and relative `XDG_DATA_HOME` values are ignored,
    /// as the XDG base directory specification requires.
    ///
    /// # Errors
    /// [`StoreError::NoRoot`] if none of these variables is usable.
    pub fn default_root() -> Result<PathBuf> {
        root_from_env(|name| std::env::var_os(name))
    }

    /// Returns the root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn check_root(&self) -> Result<()> {
        let meta = match std::fs::metadata(&self.root) {
            Ok(meta) => meta,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(io_error("read", &self.root)(e)),
        };
        if !meta.is_dir() {
            return Err(StoreError::NotAStore {
                path: self.root.clone(),
                found: "a file".into(),
            });
        }
        if self.root.join("oci-layout").exists() {
            return Ok(());
        }
        let entries = std::fs::read_dir(&self.root).map_err(io_error("list", &self.root))?;
        for entry in entries {
            let entry = entry.map_err(io_error("list", &self.root))?;
            let name = entry.file_name();
            if !LAYOUT_NAMES.iter().any(|known| name == *known) {
                return Err(StoreError::NotAStore {
                    path: self.root.clone(),
                    found: format!("entry {:?} and no oci-layout file", name),
                });
            }
        }
        Ok(())
    }

    fn check_layout(&self, layout: &Path) -> Result<()> {
        let text = std::fs::read_to_string(layout).map_err(io_error("read", layout))?;
        let version = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("imageLayoutVersion")?.as_str().map(str::to_string));
        match version.as_deref() {
            Some("1.0.0") => Ok(()),
            _ => Err(StoreError::UnsupportedLayout {
                path: layout.to_path_buf(),
                found: version.unwrap_or(text),
                expected: OCI_LAYOUT,
            }),
        }
    }

    fn kiln_dir(&self) -> PathBuf {
        self.root.join("kiln")
    }

    fn tmp_dir(&self) -> PathBuf {
        self.kiln_dir().join("tmp")
    }

    fn blobs_dir(&self) -> PathBuf {
        self.root.join("blobs").join("sha256")
    }

    fn snapshots_dir(&self) -> PathBuf {
        self.kiln_dir().join("snapshots")
    }

    fn records_dir(&self) -> PathBuf {
        self.kiln_dir().join("records")
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Opens a store in a fresh temp dir; keep the `TempDir` alive while using the store.
    pub(crate) fn temp_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(dir.path()).expect("opens");
        (dir, store)
    }

    #[test]
    fn default_roots() {
        /// KILN_ROOT, XDG_DATA_HOME, HOME, expected root.
        type Row<'a> = (
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
            Option<&'a str>,
        );
        let table: &[Row] = &[
            (Some("/k"), Some("/x"), Some("/h"), Some("/k")),
            (Some("rel"), None, None, Some("rel")),
            (Some(""), Some("/x"), Some("/h"), Some("/x/kiln")),
            (None, Some("/x"), Some("/h"), Some("/x/kiln")),
            (
                None,
                Some("relative"),
                Some("/h"),
                Some("/h/.local/share/kiln"),
            ),
            (None, Some(""), Some("/h"), Some("/h/.local/share/kiln")),
            (None, None, Some("/h"), Some("/h/.local/share/kiln")),
            (None, None, None, None),
            (None, None, Some(""), None),
        ];
        for (kiln, xdg, home, expected) in table {
            let lookup = |name: &str| {
                match name {
                    "KILN_ROOT" => *kiln,
                    "XDG_DATA_HOME" => *xdg,
                    "HOME" => *home,
                    _ => None,
                }
                .map(std::ffi::OsString::from)
            };
            let found = root_from_env(lookup).ok();
            assert_eq!(
                found.as_deref(),
                expected.map(Path::new),
                "{kiln:?} {xdg:?} {home:?}"
            );
        }
    }

    #[test]
    fn open_creates_the_layout_and_reopens() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().join("store");
        let store = Store::open(&root).expect("opens");
        for path in [
            "oci-layout",
            "index.json",
            "blobs/sha256",
            "kiln/snapshots",
            "kiln/records",
            "kiln/tmp",
        ] {
            assert!(root.join(path).exists(), "{path}");
        }
        let index: serde_json::Value =
            serde_json::from_slice(&std::fs::read(root.join("index.json")).expect("reads"))
                .expect("json");
        assert_eq!(index["schemaVersion"], 2);
        assert_eq!(
            index["mediaType"],
            "application/vnd.oci.image.index.v1+json"
        );
        assert_eq!(index["manifests"], serde_json::json!([]));
        drop(store);
        Store::open(&root).expect("reopens");
    }

    #[test]
    fn temp_trees_are_placed_apart_on_ext4() {
        use rustix::fs::{fstatfs, ioctl_getflags, IFlags};
        const EXT4_SUPER_MAGIC: i64 = 0xEF53;
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("store")).expect("opens");
        let tmp = std::fs::File::open(store.tmp_dir()).expect("opens kiln/tmp");
        let magic = fstatfs(&tmp).expect("statfs").f_type as i64;
        if magic != EXT4_SUPER_MAGIC {
            eprintln!(
                "skipped: {} is not on ext4 (f_type {magic:#x})",
                dir.path().display()
            );
            return;
        }
        let flags = ioctl_getflags(&tmp).expect("reads the inode flags");
        assert!(flags.contains(IFlags::TOPDIR), "flags {:#x}", flags.bits());
    }

    #[test]
    fn open_rejects_what_is_not_a_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").expect("writes");
        let project = dir.path().join("project");
        std::fs::create_dir_all(project.join("src")).expect("mkdir");
        let foreign = dir.path().join("foreign");
        std::fs::create_dir_all(&foreign).expect("mkdir");
        std::fs::write(foreign.join("oci-layout"), br#"{"imageLayoutVersion":"9"}"#).expect("w");
        let table: &[(&Path, &str)] = &[
            (
                &file,
                "is not a kiln store: expected an empty directory or an OCI layout, found a file",
            ),
            (&project, "found entry \"src\" and no oci-layout file"),
            (&foreign, "unsupported OCI layout"),
        ];
        for (path, expected) in table {
            let message = Store::open(path).expect_err("rejected").to_string();
            assert!(message.contains(expected), "{message}");
            assert!(message.contains(&path.display().to_string()), "{message}");
        }
    }

    #[test]
    fn open_resumes_an_interrupted_creation() {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(dir.path().join("kiln/tmp")).expect("mkdir");
        std::fs::create_dir_all(dir.path().join("blobs")).expect("mkdir");
        Store::open(dir.path()).expect("opens");
        assert!(dir.path().join("oci-layout").exists());
    }
}
