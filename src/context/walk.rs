//! The build-context walk: a directory on disk plus `.dockerignore` patterns to a [`Context`].
//!
//! Consumes the context root and the ignore patterns; produces every entry a build may use,
//! with the metadata the cache's stat cache keys on (mode, size, mtime, ctime, inode,
//! device, owner) and symlink targets, sorted in walk order. It must never read file content
//! (hashing belongs to `cache::contenthash`, and only for what a COPY selects) and never
//! follow a symlink: a link inside the context is an entry of its own.
//!
//! Directories are read in parallel, one rayon task per directory. Which entries are kept,
//! and which excluded directories are not even entered, is decided by
//! [`ContextFilter::judge`], the same decision BuildKit's context walk makes: an excluded
//! directory is entered only when an exception pattern could re-include something inside.
//!
//! A walk may be given the [`Listings`] of the previous walk of the same directory: a
//! directory whose inode, device, mtime and ctime are what they were then holds the same
//! names (creating, removing or renaming an entry changes both times), so its names are
//! taken from there and only statted, through an `O_PATH` descriptor, instead of being read
//! again. A listing is only kept when its directory's ctime was older than the walk by
//! [`LISTING_TRUST`], so a change in the same clock tick as the read cannot hide.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::ops::Range;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rustix::fs;

use super::ignore::{read_ignore_file, ContextFilter, DirMatches, IgnoreError};

/// Why the context cannot be walked.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    /// A directory, entry or ignore file could not be read.
    #[error("cannot read {path}")]
    Io {
        /// The path being read.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// A name in the context is not UTF-8; patterns and cache keys need text paths.
    #[error("{path} is not valid UTF-8: expected UTF-8 names in the build context")]
    NotUtf8 {
        /// The entry (or symlink whose target is not UTF-8).
        path: PathBuf,
    },
    /// The `.dockerignore` patterns cannot be used.
    #[error("cannot use the .dockerignore patterns")]
    Patterns(#[source] IgnoreError),
}

/// The walk's result type.
pub type Result<T> = std::result::Result<T, WalkError>;

/// What an entry of the context is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file.
    File,
    /// A symbolic link, never followed, with its target as stored.
    Symlink {
        /// The target, as `readlink` returns it.
        target: String,
    },
    /// A fifo, socket or device node.
    Other,
}

/// One kept entry of the context, with its `lstat` metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the context root, `/`-separated, no leading or trailing `/`.
    pub path: String,
    /// What it is.
    pub kind: EntryKind,
    /// `st_mode`: file type and permission bits.
    pub mode: u32,
    /// `st_size` in bytes.
    pub size: u64,
    /// Modification time, nanoseconds since the epoch.
    pub mtime_ns: i64,
    /// Status change time, nanoseconds since the epoch.
    pub ctime_ns: i64,
    /// Inode number.
    pub ino: u64,
    /// Device number.
    pub dev: u64,
    /// Owner user id.
    pub uid: u32,
    /// Owner group id.
    pub gid: u32,
}

/// The walked build context: its root and every kept entry in walk order (depth first,
/// siblings by byte order, a directory right before its contents).
#[derive(Debug, Clone)]
pub struct Context {
    root: PathBuf,
    entries: Vec<Entry>,
}

impl Context {
    /// A context of the given entries under `root`, put in walk order; for callers that
    /// build entries themselves (tests, named contexts).
    pub fn from_entries(root: PathBuf, mut entries: Vec<Entry>) -> Context {
        entries.sort_unstable_by(|a, b| walk_cmp(&a.path, &b.path));
        Context { root, entries }
    }

    /// The directory that was walked.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Every entry, in walk order.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True if and only if the context has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entry at `path` (relative, `/`-separated, cleaned), if the context has it.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.index_of(path)
            .and_then(|index| self.entries.get(index))
    }

    /// The position of the entry at `path` in [`Context::entries`].
    pub fn index_of(&self, path: &str) -> Option<usize> {
        self.entries
            .binary_search_by(|entry| walk_cmp(&entry.path, path))
            .ok()
    }

    /// The entries strictly below directory `path`, in walk order; `""` or `.` means the
    /// root, giving every entry.
    pub fn under(&self, path: &str) -> &[Entry] {
        &self.entries[self.range_under(path)]
    }

    /// The positions in [`Context::entries`] of the entries [`Context::under`] returns:
    /// in walk order they are contiguous.
    pub fn range_under(&self, path: &str) -> Range<usize> {
        if path.is_empty() || path == "." {
            return 0..self.entries.len();
        }
        let start = self
            .entries
            .partition_point(|entry| walk_cmp(&entry.path, path) != Ordering::Greater);
        let rest = self.entries.get(start..).unwrap_or(&[]);
        start..start + rest.partition_point(|entry| is_below(&entry.path, path))
    }
}

/// True if and only if `path` is strictly below directory `dir`.
pub fn is_below(path: &str, dir: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

/// Walk order as one byte comparison: `/` sorts below every other byte (a name cannot hold
/// a NUL), which is the same as comparing segment by segment.
pub fn walk_cmp(a: &str, b: &str) -> Ordering {
    let low = |byte: u8| if byte == b'/' { 0 } else { byte };
    a.bytes().map(low).cmp(b.bytes().map(low))
}

/// Reads the ignore patterns for a build: `<Dockerfile>.dockerignore` next to the Dockerfile
/// when it exists (BuildKit prefers it), else `.dockerignore` in the context root, else none.
/// `dockerfile` is `None` when the Dockerfile does not come from a file.
///
/// # Errors
/// [`WalkError::Io`] if a file exists but cannot be read.
pub fn read_dockerignore(root: &Path, dockerfile: Option<&Path>) -> Result<Vec<String>> {
    let specific = dockerfile.and_then(|file| {
        let mut name = file.file_name()?.to_os_string();
        name.push(".dockerignore");
        Some(file.with_file_name(name))
    });
    for candidate in specific.into_iter().chain([root.join(".dockerignore")]) {
        match std::fs::read(&candidate) {
            Ok(bytes) => return Ok(read_ignore_file(&String::from_utf8_lossy(&bytes))),
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(WalkError::Io {
                    path: candidate,
                    source,
                })
            }
        }
    }
    Ok(Vec::new())
}

/// How much older than the walk a directory's ctime must be for its listing to be kept:
/// file times come from a clock that ticks every few milliseconds, so a change made in the
/// tick of the read could otherwise leave the times as they were.
pub const LISTING_TRUST: Duration = Duration::from_secs(2);

/// Walks the context at `root`, applying the `.dockerignore` patterns with Docker's
/// semantics, in parallel. Symlinks are recorded, never followed.
///
/// # Errors
/// Bad patterns, an unreadable directory or entry, or a name that is not UTF-8.
pub fn walk(root: &Path, dockerignore_patterns: &[String]) -> Result<Context> {
    walk_reusing(root, dockerignore_patterns, Listings::default()).map(|walked| walked.context)
}

/// [`walk`], taking the names of unchanged directories from the `previous` walk's listings.
///
/// # Errors
/// As [`walk`].
pub fn walk_reusing(
    root: &Path,
    dockerignore_patterns: &[String],
    previous: Listings,
) -> Result<Walked> {
    let no_includes: &[String] = &[];
    let filter =
        ContextFilter::new(no_includes, dockerignore_patterns).map_err(WalkError::Patterns)?;
    walk_filtered(root, &filter, previous, LISTING_TRUST)
}

/// Walks `root` through any [`ContextFilter`] (include patterns too, as a named context
/// read through a COPY selection would be); [`walk`] is this with `.dockerignore` alone.
///
/// # Errors
/// As [`walk`].
pub fn walk_with(root: &Path, filter: &ContextFilter) -> Result<Context> {
    walk_filtered(root, filter, Listings::default(), LISTING_TRUST).map(|walked| walked.context)
}

/// A walk's result: the context, and the listings to give the next walk.
#[derive(Debug)]
pub struct Walked {
    /// The kept entries.
    pub context: Context,
    /// Every directory listing the next walk may reuse.
    pub listings: Listings,
    /// How many directories were read rather than taken from the previous listings.
    pub directories_read: usize,
}

fn walk_filtered(
    root: &Path,
    filter: &ContextFilter,
    previous: Listings,
    trust: Duration,
) -> Result<Walked> {
    let root_stamp = fs::statx(
        fs::CWD,
        root,
        fs::AtFlags::empty(),
        fs::StatxFlags::BASIC_STATS,
    )
    .map(|stat| DirStamp::of(&stat))
    .map_err(|errno| WalkError::Io {
        path: root.to_path_buf(),
        source: errno.into(),
    })?;
    let trusted_before = SystemTime::now()
        .checked_sub(trust)
        .and_then(|time| time.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |since| {
            i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
        });
    let shared = Shared {
        root,
        filter,
        found: Mutex::new(HashMap::new()),
        previous: Mutex::new(previous.dirs),
        listings: Mutex::new(HashMap::new()),
        trusted_before,
        directories_read: std::sync::atomic::AtomicUsize::new(0),
        error: Mutex::new(None),
        failed: AtomicBool::new(false),
    };
    rayon::scope(|scope| read_directory(scope, &shared, String::new(), None, root_stamp));
    if let Some(error) = lock(&shared.error).take() {
        return Err(error);
    }
    let directories = std::mem::take(&mut *lock(&shared.found));
    let listings = std::mem::take(&mut *lock(&shared.listings));
    Ok(Walked {
        context: Context {
            root: root.to_path_buf(),
            entries: prune_pending(in_walk_order(directories)),
        },
        listings: Listings { dirs: listings },
        directories_read: shared.directories_read.into_inner(),
    })
}

/// What says a directory still holds the names it held: its identity and change times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DirStamp {
    ino: u64,
    dev: u64,
    mtime_ns: i64,
    ctime_ns: i64,
}

impl DirStamp {
    fn of(stat: &fs::Statx) -> DirStamp {
        DirStamp {
            ino: stat.stx_ino,
            dev: fs::makedev(stat.stx_dev_major, stat.stx_dev_minor),
            mtime_ns: nanos(stat.stx_mtime.tv_sec, i64::from(stat.stx_mtime.tv_nsec)),
            ctime_ns: nanos(stat.stx_ctime.tv_sec, i64::from(stat.stx_ctime.tv_nsec)),
        }
    }

    fn of_entry(entry: &Entry) -> DirStamp {
        DirStamp {
            ino: entry.ino,
            dev: entry.dev,
            mtime_ns: entry.mtime_ns,
            ctime_ns: entry.ctime_ns,
        }
    }
}

/// The names one directory held, each with the type its listing gave (`d_type`). The names
/// sit NUL-terminated in one buffer, so a directory costs two allocations however many names
/// it has (a no-change walk of a large context decodes thousands of listings).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listing {
    stamp: DirStamp,
    names: Vec<u8>,
    /// Per name, its type's `S_IFMT` bits shifted down by 12.
    types: Vec<u8>,
}

impl Listing {
    fn new(stamp: DirStamp) -> Listing {
        Listing {
            stamp,
            names: Vec::new(),
            types: Vec::new(),
        }
    }

    fn push(&mut self, name: &CStr, file_type: fs::FileType) {
        self.names.extend_from_slice(name.to_bytes_with_nul());
        self.types.push((file_type.as_raw_mode() >> 12) as u8);
    }

    /// The names and their types, in listing order.
    fn entries(&self) -> impl Iterator<Item = (&CStr, fs::FileType)> {
        let names = self
            .names
            .split_inclusive(|byte| *byte == 0)
            .filter_map(|name| CStr::from_bytes_with_nul(name).ok());
        names.zip(
            self.types
                .iter()
                .map(|kind| fs::FileType::from_raw_mode(rustix::fs::RawMode::from(*kind) << 12)),
        )
    }
}

/// The directory listings of a walk by directory (relative path, `""` for the root), for the
/// next walk of the same root. Kept between builds in [`Listings::encode`]'s form.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Listings {
    dirs: HashMap<String, Listing>,
}

/// First byte of [`Listings::encode`]; bytes with another first byte decode as no listings.
const LISTINGS_VERSION: u8 = 1;

impl Listings {
    /// How many directories have a listing.
    pub fn len(&self) -> usize {
        self.dirs.len()
    }

    /// True if and only if no directory has a listing.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// A compact binary form: version, then per directory its path, stamp and names with
    /// their types, every length and number fixed-width big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![LISTINGS_VERSION];
        let mut dirs: Vec<_> = self.dirs.iter().collect();
        dirs.sort_unstable_by(|a, b| a.0.cmp(b.0));
        for (path, listing) in dirs {
            put_bytes(&mut out, path.as_bytes());
            let stamp = &listing.stamp;
            out.extend_from_slice(&stamp.ino.to_be_bytes());
            out.extend_from_slice(&stamp.dev.to_be_bytes());
            out.extend_from_slice(&stamp.mtime_ns.to_be_bytes());
            out.extend_from_slice(&stamp.ctime_ns.to_be_bytes());
            out.extend_from_slice(&(listing.types.len() as u32).to_be_bytes());
            for (name, file_type) in listing.entries() {
                out.push((file_type.as_raw_mode() >> 12) as u8);
                put_bytes(&mut out, name.to_bytes());
            }
        }
        out
    }

    /// Reads [`Listings::encode`]'s form. Anything else, damaged or from another version,
    /// gives no listings: the walk then reads every directory, which is only slower.
    pub fn decode(bytes: &[u8]) -> Listings {
        decode_listings(bytes).unwrap_or_default()
    }
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
    out.extend_from_slice(bytes);
}

fn decode_listings(bytes: &[u8]) -> Option<Listings> {
    let (&version, mut rest) = bytes.split_first()?;
    if version != LISTINGS_VERSION {
        return None;
    }
    let mut dirs = HashMap::new();
    while !rest.is_empty() {
        let path = String::from_utf8(take_bytes(&mut rest)?.to_vec()).ok()?;
        let stamp = DirStamp {
            ino: u64::from_be_bytes(take(&mut rest)?),
            dev: u64::from_be_bytes(take(&mut rest)?),
            mtime_ns: i64::from_be_bytes(take(&mut rest)?),
            ctime_ns: i64::from_be_bytes(take(&mut rest)?),
        };
        let count = u32::from_be_bytes(take(&mut rest)?);
        let mut listing = Listing::new(stamp);
        for _ in 0..count {
            let [kind] = take::<1>(&mut rest)?;
            let name = take_bytes(&mut rest)?;
            if name.contains(&0) {
                return None;
            }
            listing.names.extend_from_slice(name);
            listing.names.push(0);
            listing.types.push(kind);
        }
        dirs.insert(path, listing);
    }
    Some(Listings { dirs })
}

fn take<const N: usize>(rest: &mut &[u8]) -> Option<[u8; N]> {
    let (head, tail) = rest.split_first_chunk::<N>()?;
    *rest = tail;
    Some(*head)
}

fn take_bytes<'a>(rest: &mut &'a [u8]) -> Option<&'a [u8]> {
    let length = usize::try_from(u32::from_be_bytes(take(rest)?)).ok()?;
    let (head, tail) = rest.split_at_checked(length)?;
    *rest = tail;
    Some(head)
}

/// Joins the directories' sorted listings depth first, each directory followed by its
/// contents: walk order without a global sort (which took a third of a 40,000-entry walk).
/// The stack holds one listing per directory level, on the heap.
fn in_walk_order(mut directories: HashMap<String, Vec<Found>>) -> InWalkOrder {
    let total = directories.values().map(Vec::len).sum();
    let mut out = InWalkOrder {
        entries: Vec::with_capacity(total),
        keep: Vec::with_capacity(total),
    };
    let mut stack = Vec::new();
    stack.extend(directories.remove("").map(Vec::into_iter));
    while let Some(listing) = stack.last_mut() {
        let Some(item) = listing.next() else {
            stack.pop();
            continue;
        };
        let contents = match item.entry.kind {
            EntryKind::Dir => directories.remove(item.entry.path.as_str()),
            _ => None,
        };
        out.entries.push(item.entry);
        out.keep.push(item.keep);
        stack.extend(contents.map(Vec::into_iter));
    }
    out
}

/// An entry the walk met: kept by the filter, or a directory entered only because something
/// inside might be kept.
struct Found {
    entry: Entry,
    keep: bool,
}

/// Drops entered-but-excluded directories with nothing kept below them, in place (usually
/// nothing is dropped, and a second vector of a large context costs page faults). In walk
/// order a directory's descendants follow it contiguously, so going backwards the last kept
/// entry seen is the first kept one after the directory; it is below it or nothing is.
fn prune_pending(walked: InWalkOrder) -> Vec<Entry> {
    let InWalkOrder {
        mut entries,
        mut keep,
    } = walked;
    if keep.iter().all(|kept| *kept) {
        return entries;
    }
    let mut next_kept: Option<usize> = None;
    for index in (0..entries.len()).rev() {
        if !keep[index] {
            keep[index] =
                next_kept.is_some_and(|next| is_below(&entries[next].path, &entries[index].path));
        }
        if keep[index] {
            next_kept = Some(index);
        }
    }
    let mut flags = keep.into_iter();
    entries.retain(|_| flags.next().unwrap_or(false));
    entries
}

/// Every entry the walk met in walk order, and for each whether the filter keeps it (or it
/// was only entered because something inside might be kept).
struct InWalkOrder {
    entries: Vec<Entry>,
    keep: Vec<bool>,
}

/// State every directory task shares.
struct Shared<'a> {
    root: &'a Path,
    filter: &'a ContextFilter,
    /// Each directory read, by relative path, its entries sorted by name.
    found: Mutex<HashMap<String, Vec<Found>>>,
    /// The previous walk's listings, each taken out when its directory is met.
    previous: Mutex<HashMap<String, Listing>>,
    /// This walk's listings.
    listings: Mutex<HashMap<String, Listing>>,
    /// A directory read now is listed for the next walk only when its ctime is older.
    trusted_before: i64,
    directories_read: std::sync::atomic::AtomicUsize,
    error: Mutex<Option<WalkError>>,
    failed: AtomicBool,
}

impl Shared<'_> {
    fn fail(&self, error: WalkError) {
        self.failed.store(true, AtomicOrdering::Relaxed);
        lock(&self.error).get_or_insert(error);
    }
}

/// Locks a mutex, taking the data even if a task panicked while holding it (the data is
/// only ever appended to, so it stays consistent).
fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Reads one directory (`relative` to the root, `""` for the root), or takes its names from
/// the previous walk when its `stamp` is unchanged, judges its entries and spawns a task for
/// each subdirectory the walk must enter.
fn read_directory<'s>(
    scope: &rayon::Scope<'s>,
    shared: &'s Shared<'s>,
    relative: String,
    matches: Option<DirMatches>,
    stamp: DirStamp,
) {
    if shared.failed.load(AtomicOrdering::Relaxed) {
        return;
    }
    let dir = shared.root.join(&relative);
    let unchanged = lock(&shared.previous)
        .remove(&relative)
        .filter(|listing| listing.stamp == stamp);
    // One directory descriptor for the listing and every stat in it: names are looked up
    // relative to it (no path walk from the root per file) and, unlike opendir(3), opening
    // it costs no extra fstat. Only stats need an unchanged directory's descriptor, and an
    // O_PATH one is the cheapest to open and close.
    let access = match unchanged {
        Some(_) => fs::OFlags::PATH,
        None => fs::OFlags::RDONLY,
    };
    let fd = match fs::openat(
        fs::CWD,
        &dir,
        access | fs::OFlags::DIRECTORY | fs::OFlags::CLOEXEC,
        fs::Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(errno) => return shared.fail(io_error(&dir, errno)),
    };
    let listing = match unchanged {
        Some(listing) => listing,
        None => {
            shared
                .directories_read
                .fetch_add(1, AtomicOrdering::Relaxed);
            match list_names(&fd, stamp) {
                Ok(listing) => listing,
                Err(errno) => return shared.fail(io_error(&dir, errno)),
            }
        }
    };
    let mut found = Vec::new();
    for (name, file_type) in listing.entries() {
        let listed = Listed {
            dir: &dir,
            fd: &fd,
            name,
            file_type,
        };
        match judge_entry(shared, &relative, matches.as_ref(), &listed) {
            Ok(Some((item, descend))) => {
                if let Some(child_matches) = descend {
                    let path = item.entry.path.clone();
                    let child_stamp = DirStamp::of_entry(&item.entry);
                    scope.spawn(move |scope| {
                        read_directory(scope, shared, path, Some(child_matches), child_stamp)
                    });
                }
                found.push(item);
            }
            Ok(None) => {}
            Err(error) => return shared.fail(error),
        }
    }
    // Siblings share the directory prefix, so byte order of paths is byte order of names.
    found.sort_unstable_by(|a, b| a.entry.path.cmp(&b.entry.path));
    if listing.stamp.ctime_ns < shared.trusted_before {
        lock(&shared.listings).insert(relative.clone(), listing);
    }
    lock(&shared.found).insert(relative, found);
}

fn io_error(path: &Path, errno: rustix::io::Errno) -> WalkError {
    WalkError::Io {
        path: path.to_path_buf(),
        source: errno.into(),
    }
}

/// Every name in the directory open at `fd` but `.` and `..`, with its listed type.
fn list_names(
    fd: &std::os::fd::OwnedFd,
    stamp: DirStamp,
) -> std::result::Result<Listing, rustix::io::Errno> {
    let mut buffer = vec![std::mem::MaybeUninit::uninit(); 64 * 1024];
    let mut reader = fs::RawDir::new(fd, &mut buffer);
    let mut listing = Listing::new(stamp);
    while let Some(item) = reader.next() {
        let item = item?;
        let name = item.file_name();
        if name.to_bytes() != b"." && name.to_bytes() != b".." {
            listing.push(name, item.file_type());
        }
    }
    Ok(listing)
}

/// One name of a directory listing, with the directory's descriptor to stat it through.
struct Listed<'a> {
    dir: &'a Path,
    fd: &'a std::os::fd::OwnedFd,
    name: &'a CStr,
    file_type: fs::FileType,
}

impl Listed<'_> {
    fn path(&self) -> PathBuf {
        self.dir
            .join(std::ffi::OsStr::from_bytes(self.name.to_bytes()))
    }

    fn io_error(&self) -> impl FnOnce(rustix::io::Errno) -> WalkError + '_ {
        move |errno| WalkError::Io {
            path: self.path(),
            source: errno.into(),
        }
    }

    /// The entry's own metadata (a symlink is not followed).
    fn stat(&self) -> Result<fs::Statx> {
        fs::statx(
            self.fd,
            self.name,
            fs::AtFlags::SYMLINK_NOFOLLOW,
            fs::StatxFlags::BASIC_STATS,
        )
        .map_err(self.io_error())
    }
}

/// Stats and judges one directory entry. Returns `None` for an entry the walk drops, else
/// the entry and, for a directory the walk must enter, the results for its children.
fn judge_entry(
    shared: &Shared<'_>,
    parent: &str,
    matches: Option<&DirMatches>,
    item: &Listed<'_>,
) -> Result<Option<(Found, Option<DirMatches>)>> {
    let name = item
        .name
        .to_str()
        .map_err(|_| WalkError::NotUtf8 { path: item.path() })?;
    let mut path = String::with_capacity(parent.len() + 1 + name.len());
    if !parent.is_empty() {
        path.push_str(parent);
        path.push('/');
    }
    path.push_str(name);
    // The type from the directory listing (d_type) needs no system call, so excluded
    // entries are judged without a stat; the stat comes only for what is kept or entered
    // (and first, for a file system that does not fill in d_type).
    let mut early_stat = None;
    let listed_dir = match item.file_type {
        fs::FileType::Unknown => {
            let stat = item.stat()?;
            let is_dir =
                fs::FileType::from_raw_mode(stat.stx_mode.into()) == fs::FileType::Directory;
            early_stat = Some(stat);
            is_dir
        }
        file_type => file_type == fs::FileType::Directory,
    };
    let verdict = shared
        .filter
        .judge(&path, listed_dir, matches)
        .map_err(WalkError::Patterns)?;
    let entered = listed_dir && verdict.descend;
    if !(verdict.keep || entered) {
        return Ok(None);
    }
    let stat = match early_stat {
        Some(stat) => stat,
        None => item.stat()?,
    };
    // Trust the stat over the listing if the entry was replaced in between.
    let file_type = fs::FileType::from_raw_mode(stat.stx_mode.into());
    let is_dir = file_type == fs::FileType::Directory;
    let kind = match file_type {
        fs::FileType::Directory => EntryKind::Dir,
        fs::FileType::RegularFile => EntryKind::File,
        fs::FileType::Symlink => {
            let target = fs::readlinkat(item.fd, item.name, Vec::new()).map_err(item.io_error())?;
            let target = target
                .into_string()
                .map_err(|_| WalkError::NotUtf8 { path: item.path() })?;
            EntryKind::Symlink { target }
        }
        _ => EntryKind::Other,
    };
    let entry = Entry {
        path,
        kind,
        mode: u32::from(stat.stx_mode),
        size: stat.stx_size,
        mtime_ns: nanos(stat.stx_mtime.tv_sec, i64::from(stat.stx_mtime.tv_nsec)),
        ctime_ns: nanos(stat.stx_ctime.tv_sec, i64::from(stat.stx_ctime.tv_nsec)),
        ino: stat.stx_ino,
        dev: fs::makedev(stat.stx_dev_major, stat.stx_dev_minor),
        uid: stat.stx_uid,
        gid: stat.stx_gid,
    };
    let descend = (entered && is_dir).then_some(verdict.matches);
    Ok(Some((
        Found {
            entry,
            keep: verdict.keep,
        },
        descend,
    )))
}

/// Seconds and nanoseconds as nanoseconds since the epoch, saturating far outside
/// 1678..2262.
fn nanos(secs: i64, nsec: i64) -> i64 {
    secs.saturating_mul(1_000_000_000).saturating_add(nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind) -> Entry {
        Entry {
            path: path.to_owned(),
            kind,
            mode: 0,
            size: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            ino: 0,
            dev: 0,
            uid: 0,
            gid: 0,
        }
    }

    #[test]
    fn walk_order_puts_contents_right_after_their_directory() {
        let cases = [
            ("a/b", "a-c", Ordering::Less),
            ("a", "a/b", Ordering::Less),
            ("a.txt", "a/z", Ordering::Greater),
            ("b", "a/z", Ordering::Greater),
            ("x/y", "x/y", Ordering::Equal),
        ];
        for (a, b, expected) in cases {
            assert_eq!(walk_cmp(a, b), expected, "{a} vs {b}");
        }
    }

    #[test]
    fn looks_up_and_lists_below() {
        let paths = ["a.txt", "a/z", "a", "a/b", "a/b/c", "ab", "b"];
        let entries = paths
            .iter()
            .map(|path| entry(path, EntryKind::File))
            .collect();
        let context = Context::from_entries(PathBuf::from("/ctx"), entries);
        let listed: Vec<&str> = context.entries().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(listed, ["a", "a/b", "a/b/c", "a/z", "a.txt", "ab", "b"]);
        let cases: &[(&str, &[&str])] = &[
            ("a", &["a/b", "a/b/c", "a/z"]),
            ("a/b", &["a/b/c"]),
            ("b", &[]),
            ("missing", &[]),
            ("", &["a", "a/b", "a/b/c", "a/z", "a.txt", "ab", "b"]),
        ];
        for (dir, expected) in cases {
            let below: Vec<&str> = context.under(dir).iter().map(|e| e.path.as_str()).collect();
            assert_eq!(below, *expected, "under {dir:?}");
        }
        assert!(context.get("a/b/c").is_some());
        assert!(context.get("a/b/d").is_none());
    }

    fn paths(context: &Context) -> Vec<&str> {
        context.entries().iter().map(|e| e.path.as_str()).collect()
    }

    #[test]
    fn unchanged_directories_are_not_read_again_and_changed_ones_are() {
        let root = tempfile::tempdir().unwrap();
        for dir in ["a/b", "c"] {
            std::fs::create_dir_all(root.path().join(dir)).unwrap();
        }
        for file in ["a/x", "a/b/f", "c/g", "top"] {
            std::fs::write(root.path().join(file), file).unwrap();
        }
        let filter = ContextFilter::new(&[] as &[String], &[]).unwrap();
        let walk =
            |previous| walk_filtered(root.path(), &filter, previous, Duration::ZERO).unwrap();
        let first = walk(Listings::default());
        assert_eq!(first.directories_read, 4);
        assert_eq!(first.listings.len(), 4);

        let again = walk(first.listings.clone());
        assert_eq!(again.directories_read, 0, "nothing changed");
        assert_eq!(paths(&again.context), paths(&first.context));
        assert_eq!(again.listings, first.listings);

        // File times tick coarsely; a change must land in a later tick than the listing.
        std::thread::sleep(Duration::from_millis(50));
        std::fs::write(root.path().join("a/b/new"), "new").unwrap();
        std::fs::remove_file(root.path().join("a/x")).unwrap();
        let changed = walk(again.listings);
        assert_eq!(
            changed.directories_read, 2,
            "a and a/b changed, the root and c did not"
        );
        assert_eq!(
            paths(&changed.context),
            ["a", "a/b", "a/b/f", "a/b/new", "c", "c/g", "top"]
        );
    }

    #[test]
    fn a_listing_younger_than_the_trust_window_is_not_kept() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("f"), "f").unwrap();
        let filter = ContextFilter::new(&[] as &[String], &[]).unwrap();
        let walked =
            walk_filtered(root.path(), &filter, Listings::default(), LISTING_TRUST).unwrap();
        assert!(walked.listings.is_empty());
    }

    #[test]
    fn listings_survive_encoding_and_damage_reads_as_none() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("d/e")).unwrap();
        std::fs::write(root.path().join("d/file"), "x").unwrap();
        std::os::unix::fs::symlink("file", root.path().join("d/link")).unwrap();
        let filter = ContextFilter::new(&[] as &[String], &[]).unwrap();
        let listings = walk_filtered(root.path(), &filter, Listings::default(), Duration::ZERO)
            .unwrap()
            .listings;
        let bytes = listings.encode();
        assert_eq!(Listings::decode(&bytes), listings);
        for damaged in [
            &bytes[..bytes.len() - 1],
            &bytes[..1],
            &[9u8, 0, 0][..],
            &[],
        ] {
            let decoded = Listings::decode(damaged);
            assert!(decoded.len() < listings.len(), "{damaged:?}");
        }
    }

    #[test]
    fn prunes_entered_directories_with_nothing_kept() {
        let found = |path: &str, keep| Found {
            entry: entry(path, EntryKind::Dir),
            keep,
        };
        let items = vec![
            found("a", false),
            found("a/b", false),
            found("a/b/keep", true),
            found("a/c", false),
            found("d", false),
            found("d/x", false),
            found("e", true),
        ];
        let walked = InWalkOrder {
            keep: items.iter().map(|item| item.keep).collect(),
            entries: items.into_iter().map(|item| item.entry).collect(),
        };
        let kept: Vec<String> = prune_pending(walked).into_iter().map(|e| e.path).collect();
        assert_eq!(kept, ["a", "a/b", "a/b/keep", "e"]);
    }
}
