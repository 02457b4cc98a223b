//! Content digests of context entries, and the stat cache that spares re-reading files.
//!
//! Consumes a walked [`Context`] and the paths a COPY/ADD selects; produces one digest per
//! path. It reads the content of selected regular files only, and only when the stat cache
//! has no digest for the file's current metadata. It must never hash metadata that differs
//! between machines or checkouts (mtime, ctime, uid, gid, inode): those only decide whether
//! a cached content digest may be reused.
//!
//! # Entry digest (version 1)
//! SHA-256 over this fixed, ordered header and content part:
//! 1. the byte `1` (format version);
//! 2. the type: `f` regular file, `d` directory, `l` symlink, `p` fifo, `c` character
//!    device, `b` block device, `s` socket;
//! 3. the permission and special bits, `st_mode & 0o7777`, u32 big-endian, except for a
//!    directory, whose bits are written as 0: BuildKit keeps a COPY cached when only a
//!    directory's mode changed (checked against dockerd 20.10 with BuildKit here, for the
//!    selected directory and for one below it), and kiln's hits must be BuildKit's;
//! 4. the size, u64 big-endian, for regular files (0 for every other type: a directory's
//!    size depends on the file system);
//! 5. the symlink target, u64 length big-endian then its bytes (length 0 for other types);
//! 6. for a regular file, the SHA-256 of its bytes; for a directory, its directory digest
//!    (below); nothing for other types.
//!
//! # Directory digest (version 1)
//! SHA-256 over: the byte `1`, the byte `D`, the number of children (u64 big-endian), then
//! per child sorted by name bytes: the name's length (u64 big-endian), the name, and the
//! child's 32-byte entry digest. A selected directory is keyed by its entry digest, the
//! context root (which has no entry) by its directory digest alone.
//!
//! # Stat cache
//! Maps a path to the metadata it had when last hashed (size, mtime ns, ctime ns, inode,
//! `st_mode`) and its content SHA-256. A file whose metadata all match is not read. It is
//! persisted as one record through [`StatCacheStorage`], in a compact binary encoding:
//! `KSTC`, a version byte `1`, the record count (u64), then per record: path length (u32)
//! and bytes, size (u64), mtime (i64), ctime (i64), inode (u64), mode (u32), digest (32
//! bytes), all big-endian. Anything malformed decodes as an empty cache.

use std::collections::BTreeMap;
use std::io::Read;
use std::ops::Range;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::RwLock;

use rayon::prelude::*;
use sha2::{Digest as _, Sha256};

use super::{CacheError, Result};
use crate::context::walk::is_below;
use crate::context::{Context, Entry, EntryKind};
use crate::digest::Digest;

/// The entry and directory digest format version, their first byte.
pub const HASH_VERSION: u8 = 1;

const STAT_MAGIC: &[u8; 4] = b"KSTC";
const STAT_VERSION: u8 = 1;

/// The one-byte type of an entry in its digest header.
fn type_byte(entry: &Entry) -> u8 {
    // S_IFMT and its values are the same on every Linux architecture.
    match &entry.kind {
        EntryKind::Dir => b'd',
        EntryKind::File => b'f',
        EntryKind::Symlink { .. } => b'l',
        EntryKind::Other => match entry.mode & 0o170000 {
            0o010000 => b'p',
            0o020000 => b'c',
            0o060000 => b'b',
            0o140000 => b's',
            _ => b'?',
        },
    }
}

/// The entry digest (module doc) of `entry`, given its content part: the SHA-256 of the
/// bytes for a regular file, the directory digest for a directory, `None` otherwise.
pub fn entry_digest(entry: &Entry, content: Option<&Digest>) -> Digest {
    let size = match entry.kind {
        EntryKind::File => entry.size,
        _ => 0,
    };
    let target = match &entry.kind {
        EntryKind::Symlink { target } => target.as_bytes(),
        _ => &[],
    };
    let content = match entry.kind {
        EntryKind::File | EntryKind::Dir => content,
        _ => None,
    };
    digest_parts(type_byte(entry), entry.mode, size, target, content)
}

/// The entry digest (module doc) from its fields, for entries that are not context entries
/// (files of a stage or an image): `kind` is the type byte (`f d l p c b s`), `mode` the
/// permission bits (higher bits are dropped; ignored for directories), `size` 0 for all but regular files, `target`
/// empty for all but symlinks, `content` the content part or `None`.
pub fn digest_parts(
    kind: u8,
    mode: u32,
    size: u64,
    target: &[u8],
    content: Option<&Digest>,
) -> Digest {
    // A directory's mode is left out, as BuildKit's cache does.
    let mode = match kind {
        b'd' => 0,
        _ => mode & 0o7777,
    };
    let mut hasher = Sha256::new();
    hasher.update([HASH_VERSION, kind]);
    hasher.update(mode.to_be_bytes());
    hasher.update(size.to_be_bytes());
    hasher.update((target.len() as u64).to_be_bytes());
    hasher.update(target);
    if let Some(content) = content {
        hasher.update(content.as_bytes());
    }
    Digest::from_array(hasher.finalize().into())
}

/// The directory digest (module doc) of the given children, in any order.
pub fn directory_digest(children: &mut [(&str, Digest)]) -> Digest {
    children.sort_unstable_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut hasher = Sha256::new();
    hasher.update([HASH_VERSION, b'D']);
    hasher.update((children.len() as u64).to_be_bytes());
    for (name, digest) in children.iter() {
        hasher.update((name.len() as u64).to_be_bytes());
        hasher.update(name.as_bytes());
        hasher.update(digest.as_bytes());
    }
    Digest::from_array(hasher.finalize().into())
}

/// A digest of every kept entry's path and of exactly the metadata the stat cache trusts
/// (kind, link target, size, mtime, ctime, inode, device, mode): equal fingerprints mean
/// every file would hash as it did.
pub fn stat_fingerprint(context: &Context) -> Digest {
    let mut hasher = Sha256::new();
    hasher.update([HASH_VERSION, b'F']);
    for entry in context.entries() {
        hasher.update((entry.path.len() as u64).to_be_bytes());
        hasher.update(entry.path.as_bytes());
        hasher.update([type_byte(entry)]);
        if let EntryKind::Symlink { target } = &entry.kind {
            hasher.update((target.len() as u64).to_be_bytes());
            hasher.update(target.as_bytes());
        }
        hasher.update(entry.size.to_be_bytes());
        hasher.update(entry.mtime_ns.to_be_bytes());
        hasher.update(entry.ctime_ns.to_be_bytes());
        hasher.update(entry.ino.to_be_bytes());
        hasher.update(entry.dev.to_be_bytes());
        hasher.update(entry.mode.to_be_bytes());
    }
    Digest::from_array(hasher.finalize().into())
}

/// Where the stat cache is kept between builds; the solver backs it with the store.
pub trait StatCacheStorage {
    /// The bytes saved last time, if any.
    fn load(&self) -> Option<Vec<u8>>;
    /// Replaces the saved bytes.
    ///
    /// # Errors
    /// Whatever kept the bytes from being saved.
    fn save(
        &self,
        bytes: &[u8],
    ) -> std::result::Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// What a file looked like when its content digest was computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StatRecord {
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
    mode: u32,
    content: Digest,
}

impl StatRecord {
    fn matches(&self, entry: &Entry) -> bool {
        self.size == entry.size
            && self.mtime_ns == entry.mtime_ns
            && self.ctime_ns == entry.ctime_ns
            && self.ino == entry.ino
            && self.mode == entry.mode
    }
}

/// Content digests by path, valid while the file's metadata stays the same.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatCache {
    // A B-tree rather than a hash map: decoding builds it in bulk from the sorted records,
    // with no per-key hashing, which keeps loading 40,000 records to a few milliseconds.
    records: BTreeMap<String, StatRecord>,
}

impl StatCache {
    /// An empty cache.
    pub fn new() -> StatCache {
        StatCache::default()
    }

    /// The number of files it knows.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// True if and only if it knows no file.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The binary encoding from the module doc, records sorted by path.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(13 + self.records.len() * 96);
        out.extend_from_slice(STAT_MAGIC);
        out.push(STAT_VERSION);
        out.extend_from_slice(&(self.records.len() as u64).to_be_bytes());
        for (path, record) in &self.records {
            // A path is a file name the kernel accepted, far below 4 GiB.
            let len = u32::try_from(path.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(path.as_bytes());
            out.extend_from_slice(&record.size.to_be_bytes());
            out.extend_from_slice(&record.mtime_ns.to_be_bytes());
            out.extend_from_slice(&record.ctime_ns.to_be_bytes());
            out.extend_from_slice(&record.ino.to_be_bytes());
            out.extend_from_slice(&record.mode.to_be_bytes());
            out.extend_from_slice(record.content.as_bytes());
        }
        out
    }

    /// Decodes [`StatCache::encode`]'s output; `None` if the bytes are not exactly that.
    pub fn decode(bytes: &[u8]) -> Option<StatCache> {
        let mut input = Reader(bytes);
        if input.take(4)? != STAT_MAGIC || input.take(1)? != [STAT_VERSION] {
            return None;
        }
        let count = u64::from_be_bytes(input.array()?);
        // Each record takes at least 72 bytes, which bounds the allocation by the input.
        let capacity = usize::try_from(count).ok()?.min(bytes.len() / 72);
        let mut records = Vec::with_capacity(capacity);
        for _ in 0..count {
            let len = u32::from_be_bytes(input.array()?) as usize;
            let path = std::str::from_utf8(input.take(len)?).ok()?.to_owned();
            let record = StatRecord {
                size: u64::from_be_bytes(input.array()?),
                mtime_ns: i64::from_be_bytes(input.array()?),
                ctime_ns: i64::from_be_bytes(input.array()?),
                ino: u64::from_be_bytes(input.array()?),
                mode: u32::from_be_bytes(input.array()?),
                content: Digest::from_array(input.array()?),
            };
            records.push((path, record));
        }
        input.0.is_empty().then(|| StatCache {
            records: records.into_iter().collect(),
        })
    }
}

/// A cursor over bytes being decoded.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, len: usize) -> Option<&'a [u8]> {
        if self.0.len() < len {
            return None;
        }
        let (head, rest) = self.0.split_at(len);
        self.0 = rest;
        Some(head)
    }

    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        self.take(N)?.try_into().ok()
    }
}

/// Hashes selected context paths in parallel, reusing content digests from a stat cache.
#[derive(Debug, Default)]
pub struct ContentHasher {
    cache: RwLock<StatCache>,
    files_read: AtomicU64,
    bytes_read: AtomicU64,
    changed: AtomicBool,
}

impl ContentHasher {
    /// A hasher starting from `cache`.
    pub fn new(cache: StatCache) -> ContentHasher {
        ContentHasher {
            cache: RwLock::new(cache),
            ..ContentHasher::default()
        }
    }

    /// A hasher starting from the cache `storage` holds; an empty one if it holds nothing
    /// usable.
    pub fn load(storage: &dyn StatCacheStorage) -> ContentHasher {
        let cache = storage
            .load()
            .and_then(|bytes| StatCache::decode(&bytes))
            .unwrap_or_default();
        ContentHasher::new(cache)
    }

    /// How many files had their content read so far.
    pub fn files_read(&self) -> u64 {
        self.files_read.load(Ordering::Relaxed)
    }

    /// How many content bytes were read so far.
    pub fn bytes_read(&self) -> u64 {
        self.bytes_read.load(Ordering::Relaxed)
    }

    /// A copy of the stat cache as it is now.
    pub fn stat_cache(&self) -> StatCache {
        self.cache
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Saves the stat cache to `storage`, first dropping files `context` no longer has, if
    /// anything changed since it was loaded.
    ///
    /// # Errors
    /// [`CacheError::SaveStatCache`] with the storage's error.
    pub fn save(&self, context: &Context, storage: &dyn StatCacheStorage) -> Result<()> {
        let mut cache = self
            .cache
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = cache.records.len();
        cache
            .records
            .retain(|path, record| context.get(path).is_some_and(|e| record.matches(e)));
        if before == cache.records.len() && !self.changed.load(Ordering::Relaxed) {
            return Ok(());
        }
        storage
            .save(&cache.encode())
            .map_err(CacheError::SaveStatCache)?;
        self.changed.store(false, Ordering::Relaxed);
        Ok(())
    }

    /// The digest of each of `paths` (relative, `/`-separated; `""` or `.` for the root), in
    /// the order given: the entry digest of a file, symlink or directory, the directory
    /// digest of the root. Regular files are read in parallel, only when the stat cache has
    /// no digest for their current metadata.
    ///
    /// # Errors
    /// [`CacheError::NotInContext`] for a path the context lacks, [`CacheError::Read`] if a
    /// file cannot be read.
    pub fn hash<S: AsRef<str>>(
        &self,
        context: &Context,
        paths: &[S],
    ) -> Result<Vec<(String, Digest)>> {
        let entries = context.entries();
        // Which entries' content is needed: a flag per entry keeps the selection sorted and
        // free of duplicates without sorting paths.
        let mut wanted = vec![false; entries.len()];
        let mut selected: Vec<(&str, Option<usize>)> = Vec::with_capacity(paths.len());
        for path in paths {
            let path = path.as_ref();
            let (index, range) = if is_root(path) {
                (None, 0..entries.len())
            } else {
                let index = context
                    .index_of(path)
                    .ok_or_else(|| CacheError::NotInContext {
                        path: path.to_owned(),
                    })?;
                (Some(index), index..context.range_under(path).end)
            };
            selected.push((path, index));
            for at in range {
                if entries[at].kind == EntryKind::File {
                    wanted[at] = true;
                }
            }
        }
        let files: Vec<usize> = (0..entries.len()).filter(|&at| wanted[at]).collect();
        let contents = self.contents(context, &files)?;
        Ok(selected
            .into_iter()
            .map(|(path, index)| {
                let digest = match index {
                    None => tree_digest(entries, "", 0..entries.len(), &contents),
                    Some(at) => {
                        let entry = &entries[at];
                        match entry.kind {
                            EntryKind::File => entry_digest(entry, contents[at].as_ref()),
                            EntryKind::Dir => {
                                let below = context.range_under(&entry.path);
                                let children = tree_digest(entries, &entry.path, below, &contents);
                                entry_digest(entry, Some(&children))
                            }
                            _ => entry_digest(entry, None),
                        }
                    }
                };
                (path.to_owned(), digest)
            })
            .collect())
    }

    /// The content SHA-256 of the files at positions `files` of the context's entries, from
    /// the stat cache or read, as a table indexed like the entries.
    fn contents(&self, context: &Context, files: &[usize]) -> Result<Vec<Option<Digest>>> {
        let entries = context.entries();
        let results: Vec<(usize, Digest, bool)> = {
            let cache = self
                .cache
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            files
                .par_iter()
                .map(|&at| {
                    let entry = &entries[at];
                    match cache.records.get(&entry.path) {
                        Some(record) if record.matches(entry) => Ok((at, record.content, false)),
                        _ => self
                            .read_content(context, entry)
                            .map(|digest| (at, digest, true)),
                    }
                })
                .collect::<Result<_>>()?
        };
        let mut fresh = results.iter().filter(|(_, _, fresh)| *fresh).peekable();
        if fresh.peek().is_some() {
            let mut cache = self
                .cache
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for &(at, content, _) in fresh {
                let entry = &entries[at];
                cache.records.insert(
                    entry.path.clone(),
                    StatRecord {
                        size: entry.size,
                        mtime_ns: entry.mtime_ns,
                        ctime_ns: entry.ctime_ns,
                        ino: entry.ino,
                        mode: entry.mode,
                        content,
                    },
                );
            }
            self.changed.store(true, Ordering::Relaxed);
        }
        let mut table = vec![None; entries.len()];
        for (at, digest, _) in results {
            table[at] = Some(digest);
        }
        Ok(table)
    }

    /// Reads one regular file and returns the SHA-256 of its bytes.
    fn read_content(&self, context: &Context, entry: &Entry) -> Result<Digest> {
        let path = context.root().join(&entry.path);
        let read_error = |source| CacheError::Read {
            path: path.clone(),
            source,
        };
        // The walk saw a regular file; refuse to follow a symlink swapped in since.
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
            .open(&path)
            .map_err(read_error)?;
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            let read = match file.read(&mut buffer) {
                Ok(0) => break,
                Ok(read) => read,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(read_error(error)),
            };
            hasher.update(&buffer[..read]);
            total += read as u64;
        }
        self.files_read.fetch_add(1, Ordering::Relaxed);
        self.bytes_read.fetch_add(total, Ordering::Relaxed);
        Ok(Digest::from_array(hasher.finalize().into()))
    }
}

fn is_root(path: &str) -> bool {
    path.is_empty() || path == "."
}

/// The directory digest of directory `dir` (`""` for the root), whose descendants are
/// `entries[below]` in walk order, with file contents from `contents` (indexed like
/// `entries`). A stack of open directories (as deep as the tree, on the heap) closes each
/// directory when the walk leaves it; no recursion, no hashing of paths.
fn tree_digest(
    entries: &[Entry],
    dir: &str,
    below: Range<usize>,
    contents: &[Option<Digest>],
) -> Digest {
    struct Open<'a> {
        entry: Option<&'a Entry>,
        path: &'a str,
        children: Vec<(&'a str, Digest)>,
    }
    fn close(stack: &mut Vec<Open<'_>>) {
        let Some(mut done) = stack.pop() else {
            return;
        };
        let Some(parent) = stack.last_mut() else {
            return;
        };
        if let Some(entry) = done.entry {
            let digest = entry_digest(entry, Some(&directory_digest(&mut done.children)));
            parent.children.push((name_of(done.path), digest));
        }
    }
    let mut stack = vec![Open {
        entry: None,
        path: dir,
        children: Vec::new(),
    }];
    for at in below {
        let Some(entry) = entries.get(at) else {
            break;
        };
        while stack.len() > 1
            && stack
                .last()
                .is_some_and(|open| !is_below(&entry.path, open.path))
        {
            close(&mut stack);
        }
        match entry.kind {
            EntryKind::Dir => stack.push(Open {
                entry: Some(entry),
                path: &entry.path,
                children: Vec::new(),
            }),
            _ => {
                let content = contents.get(at).copied().flatten();
                let digest = entry_digest(entry, content.as_ref());
                if let Some(open) = stack.last_mut() {
                    open.children.push((name_of(&entry.path), digest));
                }
            }
        }
    }
    while stack.len() > 1 {
        close(&mut stack);
    }
    let mut top = stack.pop().map(|open| open.children).unwrap_or_default();
    directory_digest(&mut top)
}

/// The last segment of a path.
fn name_of(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn entry(path: &str, kind: EntryKind, mode: u32, size: u64) -> Entry {
        Entry {
            path: path.to_owned(),
            kind,
            mode,
            size,
            mtime_ns: 1,
            ctime_ns: 2,
            ino: 3,
            dev: 4,
            uid: 5,
            gid: 6,
        }
    }

    #[test]
    fn entry_digest_ignores_owner_and_times_only() {
        let content = Digest::of(b"hello");
        let file = entry("a", EntryKind::File, 0o100644, 5);
        let base = entry_digest(&file, Some(&content));
        let same = Entry {
            mtime_ns: 9,
            ctime_ns: 9,
            ino: 9,
            dev: 9,
            uid: 0,
            gid: 0,
            ..file.clone()
        };
        assert_eq!(entry_digest(&same, Some(&content)), base);
        let different = [
            Entry {
                mode: 0o100755,
                ..file.clone()
            },
            Entry {
                mode: 0o104644,
                ..file.clone()
            },
            Entry {
                size: 6,
                ..file.clone()
            },
            Entry {
                kind: EntryKind::Symlink {
                    target: String::new(),
                },
                ..file.clone()
            },
        ];
        for other in different {
            assert_ne!(entry_digest(&other, Some(&content)), base, "{other:?}");
        }
        assert_ne!(entry_digest(&file, Some(&Digest::of(b"hellO"))), base);
        let link = |target: &str| {
            entry(
                "l",
                EntryKind::Symlink {
                    target: target.to_owned(),
                },
                0o120777,
                1,
            )
        };
        assert_ne!(
            entry_digest(&link("a"), None),
            entry_digest(&link("b"), None)
        );
        // A directory's st_size is the file system's business.
        let dir = |size| entry("d", EntryKind::Dir, 0o40755, size);
        assert_eq!(
            entry_digest(&dir(4096), Some(&content)),
            entry_digest(&dir(60), Some(&content))
        );
    }

    #[test]
    fn directory_digest_is_order_free_and_name_sensitive() {
        let a = Digest::of(b"a");
        let b = Digest::of(b"b");
        let one = directory_digest(&mut [("x", a), ("y", b)]);
        assert_eq!(one, directory_digest(&mut [("y", b), ("x", a)]));
        assert_ne!(one, directory_digest(&mut [("x", b), ("y", a)]));
        assert_ne!(one, directory_digest(&mut [("x", a), ("z", b)]));
        assert_ne!(one, directory_digest(&mut [("x", a)]));
    }

    #[test]
    fn tree_digest_covers_nested_and_empty_directories() {
        let tree = |extra: Option<Entry>| {
            let mut entries = vec![
                entry("d", EntryKind::Dir, 0o40755, 0),
                entry("d/f", EntryKind::File, 0o100644, 1),
                entry("g", EntryKind::File, 0o100644, 1),
            ];
            entries.extend(extra);
            let context = Context::from_entries(PathBuf::from("/"), entries);
            let contents = vec![Some(Digest::of(b"c")); context.len()];
            tree_digest(context.entries(), "", 0..context.len(), &contents)
        };
        let plain = tree(None);
        let c = Digest::of(b"c");
        let file = |path| entry(path, EntryKind::File, 0o100644, 1);
        let by_hand = directory_digest(&mut [
            (
                "d",
                entry_digest(
                    &entry("d", EntryKind::Dir, 0o40755, 0),
                    Some(&directory_digest(&mut [(
                        "f",
                        entry_digest(&file("d/f"), Some(&c)),
                    )])),
                ),
            ),
            ("g", entry_digest(&file("g"), Some(&c))),
        ]);
        assert_eq!(plain, by_hand);
        let with_empty = tree(Some(entry("d/e", EntryKind::Dir, 0o40755, 0)));
        assert_ne!(plain, with_empty, "an empty directory counts");
        let other_mode = tree(Some(entry("d/e", EntryKind::Dir, 0o40700, 0)));
        assert_eq!(
            with_empty, other_mode,
            "a directory's mode does not, as in BuildKit"
        );
    }

    #[test]
    fn stat_cache_round_trips_and_rejects_garbage() {
        let mut cache = StatCache::new();
        for index in 0..3u64 {
            cache.records.insert(
                format!("dir/file{index}"),
                StatRecord {
                    size: index,
                    mtime_ns: -1,
                    ctime_ns: i64::MAX,
                    ino: 7,
                    mode: 0o100644,
                    content: Digest::of(&index.to_be_bytes()),
                },
            );
        }
        let bytes = cache.encode();
        assert_eq!(StatCache::decode(&bytes), Some(cache.clone()));
        let cases: &[&[u8]] = &[
            b"",
            b"KSTC",
            b"XSTC\x01\0\0\0\0\0\0\0\0",
            &bytes[..bytes.len() - 1],
            &[bytes.as_slice(), b"x"].concat(),
        ];
        for garbage in cases {
            assert_eq!(StatCache::decode(garbage), None, "{garbage:?}");
        }
        // A huge count with no records behind it neither allocates nor panics.
        let mut huge = b"KSTC\x01".to_vec();
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(StatCache::decode(&huge), None);
    }
}
