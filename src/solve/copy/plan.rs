//! The copy itself, as fsutil's copier does it, but onto an in-memory overlay of the
//! destination: sources are copied one after another, each seeing what the earlier ones made.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};

use super::pattern::{contains_wildcards, go_match, include_match, Include};
use super::{
    apply_chmod, CopyError, CopyOptions, DestKind, DestStat, DestTree, Owner, Prepared,
    SelectedSource, SourceKind, SourceStat, SourceTree,
};
use crate::context::ignore::PatternMatcher;
use crate::layer::{EntryKind, LayerEntry, Timestamp, MAX_SYMLINKS};
use crate::solve::add;

/// Splits a `/`-separated path into clean components; `..` never climbs above the root.
pub(crate) fn components(path: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other.to_owned()),
        }
    }
    out
}

fn join(parts: &[String]) -> String {
    parts.join("/")
}

fn join2(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_owned()
    } else {
        format!("{dir}/{name}")
    }
}

fn parent(path: &str) -> &str {
    path.rfind('/').map_or("", |at| &path[..at])
}

/// True if and only if the relative archive path `path` climbs out of the directory it is
/// extracted into (moby's breakout check: a rooted path never does, `..` above the start
/// does).
fn escapes_root(path: &str) -> bool {
    if path.starts_with('/') {
        return false;
    }
    let mut depth = 0usize;
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." if depth == 0 => return true,
            ".." => depth -= 1,
            _ => depth += 1,
        }
    }
    false
}

fn shown(path: &str) -> String {
    format!("/{path}")
}

/// What one lookup step found: absent, a non-symlink (dir or not), or a symlink.
enum Step {
    Absent,
    Plain { dir: bool },
    Link(String),
}

/// Resolves `path` chroot-style: symlinks in every component (and the last one when
/// `follow_last`) are followed, absolute targets from the root, `..` stops at the root.
fn resolve<F>(path: &str, follow_last: bool, mut lookup: F) -> Result<String, CopyError>
where
    F: FnMut(&str) -> Result<Step, CopyError>,
{
    let mut pending: VecDeque<String> = components(path).into();
    let mut done: Vec<String> = Vec::new();
    let mut links = 0u32;
    while let Some(name) = pending.pop_front() {
        if name == ".." {
            done.pop();
            continue;
        }
        done.push(name);
        let last = pending.is_empty();
        match lookup(&join(&done))? {
            Step::Absent => {
                // Nothing below an absent entry exists: the rest is lexical.
                for rest in pending.drain(..) {
                    if rest == ".." {
                        done.pop();
                    } else {
                        done.push(rest);
                    }
                }
            }
            Step::Plain { dir } => {
                if !dir && !last {
                    return Err(CopyError::NotADirectory {
                        path: shown(&join(&done)),
                    });
                }
            }
            Step::Link(target) => {
                if last && !follow_last {
                    continue;
                }
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(CopyError::SymlinkLoop { path: shown(path) });
                }
                done.pop();
                if target.starts_with('/') {
                    done.clear();
                }
                for part in target.split('/').rev() {
                    if !part.is_empty() && part != "." {
                        pending.push_front(part.to_owned());
                    }
                }
            }
        }
    }
    Ok(join(&done))
}

fn source_step(tree: &dyn SourceTree, path: &str) -> Result<Step, CopyError> {
    Ok(match tree.stat(path)? {
        None => Step::Absent,
        Some(SourceStat {
            kind: SourceKind::Symlink { target },
            ..
        }) => Step::Link(target),
        Some(stat) => Step::Plain {
            dir: stat.kind == SourceKind::Dir,
        },
    })
}

/// Resolves a source path, following symlinks (BuildKit's `FollowSymlinks`), and stats it.
fn resolve_source(
    tree: &dyn SourceTree,
    path: &str,
) -> Result<(String, Option<SourceStat>), CopyError> {
    let real = match resolve(path, true, |p| source_step(tree, p)) {
        Ok(real) => real,
        // A file used as a directory on the way: the source does not exist.
        Err(CopyError::NotADirectory { .. }) => return Ok((String::new(), None)),
        Err(error) => return Err(error),
    };
    let stat = tree.stat(&real)?;
    Ok((real, stat))
}

/// The source paths a wildcard pattern selects, in walk order, as fsutil's
/// `ResolveWildcards` finds them; a pattern without wildcards is returned cleaned.
fn match_sources(tree: &dyn SourceTree, pattern: &str) -> Result<Vec<String>, CopyError> {
    let parts = components(pattern);
    let Some(first_wild) = parts.iter().position(|part| contains_wildcards(part)) else {
        return Ok(vec![join(&parts)]);
    };
    let rest = &parts[first_wild..];
    let (base, stat) = resolve_source(tree, &join(&parts[..first_wild]))?;
    let mut out = Vec::new();
    if stat.is_some_and(|stat| stat.kind == SourceKind::Dir) {
        walk_matches(tree, &base, &[], rest, &mut out)?;
    }
    Ok(out)
}

fn walk_matches(
    tree: &dyn SourceTree,
    dir: &str,
    below: &[String],
    pattern: &[String],
    out: &mut Vec<String>,
) -> Result<(), CopyError> {
    let depth = below.len();
    let Some(component) = pattern.get(depth) else {
        return Ok(());
    };
    for name in tree.children(dir)? {
        // `*` never crosses `/`, so matching component by component is Go's Match.
        if !go_match(component, &name).unwrap_or(false) {
            continue;
        }
        let path = join2(dir, &name);
        if depth + 1 == pattern.len() {
            out.push(path);
        } else if tree
            .stat(&path)?
            .is_some_and(|stat| stat.kind == SourceKind::Dir)
        {
            let mut next = below.to_vec();
            next.push(name);
            walk_matches(tree, &path, &next, pattern, out)?;
        }
    }
    Ok(())
}

/// `--exclude`, judged on paths below each copied source (fsutil's `exclude`).
struct Exclude(Option<PatternMatcher>);

impl Exclude {
    fn new(patterns: &[String]) -> Result<Exclude, CopyError> {
        if patterns.is_empty() {
            return Ok(Exclude(None));
        }
        PatternMatcher::new(patterns)
            .map(|matcher| Exclude(Some(matcher)))
            .map_err(|source| CopyError::BadExclude { source })
    }

    fn excludes(&self, rel: &str, is_dir: bool) -> Result<bool, CopyError> {
        let Some(matcher) = &self.0 else {
            return Ok(false);
        };
        if rel.is_empty()
            || !matcher
                .matches(rel)
                .map_err(|source| CopyError::BadExclude { source })?
        {
            return Ok(false);
        }
        if is_dir && matcher.has_exclusions() {
            // An exception below this directory needs it walked.
            let dir_slash = format!("{rel}/");
            let reaches_inside = matcher.patterns().iter().any(|pattern| {
                pattern.is_exclusion() && format!("{}/", pattern.text()).starts_with(&dir_slash)
            });
            if reaches_inside {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// A `--parents` source: the directory copied from and the include pattern below it.
struct ParentsSource {
    root: String,
    pattern: String,
    required: bool,
}

fn parents_source(word: &str) -> ParentsSource {
    let (root, pattern) = match word.split_once("/./") {
        Some((root, pattern)) => (root, pattern),
        None => ("/", word),
    };
    let pattern = join(&components(pattern));
    ParentsSource {
        required: !contains_wildcards(root) && !contains_wildcards(&pattern),
        root: root.to_owned(),
        pattern,
    }
}

/// Lists what a COPY/ADD reads from `tree`, for the cache key: every entry of every
/// selected source (directories walked, `--exclude` and `--parents` applied), in copy
/// order. Heredoc and download sources are not in the tree and not listed.
///
/// # Errors
/// A missing source without wildcards ([`CopyError::SourceNotFound`]), bad patterns, and
/// tree read errors.
pub fn select_sources(
    sources: &[Prepared],
    options: &CopyOptions,
    tree: &dyn SourceTree,
) -> Result<Vec<SelectedSource>, CopyError> {
    let exclude = Exclude::new(&options.exclude)?;
    let mut out = Vec::new();
    for source in sources {
        let Prepared::Tree { pattern } = source else {
            continue;
        };
        if options.parents {
            let spec = parents_source(pattern);
            let (root, stat) = resolve_source(tree, &spec.root)?;
            check_parents_required(tree, &spec, &root, stat.as_ref())?;
            list_tree(tree, &root, &exclude, Some(&spec.pattern), &mut out)?;
            continue;
        }
        let matches = match_sources(tree, pattern)?;
        for matched in matches {
            let (real, stat) = resolve_source(tree, &matched)?;
            let Some(stat) = stat else {
                return Err(CopyError::SourceNotFound {
                    path: shown(&matched),
                });
            };
            if stat.kind == SourceKind::Dir {
                list_tree(tree, &real, &exclude, None, &mut out)?;
            } else {
                out.push(selected(tree, real, stat));
            }
        }
    }
    Ok(out)
}

fn selected(tree: &dyn SourceTree, path: String, stat: SourceStat) -> SelectedSource {
    SelectedSource {
        source: (stat.kind == SourceKind::File).then(|| tree.host_path(&path)),
        key_path: path,
        kind: stat.kind,
    }
}

fn check_parents_required(
    tree: &dyn SourceTree,
    spec: &ParentsSource,
    root: &str,
    stat: Option<&SourceStat>,
) -> Result<(), CopyError> {
    let missing = match stat {
        None => true,
        Some(_) if spec.required => resolve_source(tree, &join2(root, &spec.pattern))?
            .1
            .is_none(),
        Some(_) => false,
    };
    if missing && (spec.required || stat.is_none()) {
        return Err(CopyError::SourceNotFound {
            path: shown(&join(&components(&format!(
                "{}/{}",
                spec.root, spec.pattern
            )))),
        });
    }
    Ok(())
}

fn list_tree(
    tree: &dyn SourceTree,
    dir: &str,
    exclude: &Exclude,
    include: Option<&str>,
    out: &mut Vec<SelectedSource>,
) -> Result<(), CopyError> {
    let pattern = include.unwrap_or_default();
    let mut stack = vec![Frame {
        dir: dir.to_owned(),
        rel: String::new(),
        target: String::new(),
        including: include.is_some(),
        names: tree.children(dir)?.into_iter(),
    }];
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.names.next() else {
            stack.pop();
            continue;
        };
        let path = join2(&frame.dir, &name);
        let child_rel = join2(&frame.rel, &name);
        let Some(stat) = tree.stat(&path)? else {
            continue;
        };
        let is_dir = stat.kind == SourceKind::Dir;
        let mut including = frame.including;
        if including {
            match include_match(pattern, &child_rel) {
                Include::No => continue,
                Include::Partial if !is_dir => continue,
                Include::Partial => {}
                Include::Full => including = false,
            }
        }
        if exclude.excludes(&child_rel, is_dir)? {
            continue;
        }
        if is_dir {
            if !including {
                out.push(selected(tree, path.clone(), stat));
            }
            let names = tree.children(&path)?.into_iter();
            stack.push(Frame {
                dir: path,
                rel: child_rel,
                target: String::new(),
                including,
                names,
            });
        } else {
            out.push(selected(tree, path, stat));
        }
    }
    Ok(())
}

/// Plans a COPY/ADD: the layer entries it makes when copying `sources` from `tree` into
/// `dest` (pass [`super::Scratch`] when [`CopyOptions::is_linked`]). Directories above
/// every entry are included, existing ones with their metadata (and `options.now` as mtime
/// when their content changed), created ones 0755 with the `--chown` owner.
///
/// # Errors
/// A missing source, a destination that is not a directory where one is needed, a file
/// replacing a directory, fifo sources, symlink loops, unreadable trees or archives.
pub fn plan_copy(
    sources: &[Prepared],
    options: &CopyOptions,
    tree: &dyn SourceTree,
    dest: &dyn DestTree,
) -> Result<Vec<LayerEntry>, CopyError> {
    let mut plan = Plan {
        base: dest,
        entries: BTreeMap::new(),
        modified: BTreeSet::new(),
        fresh: BTreeSet::new(),
        skip_chmod: false,
        options,
        exclude: Exclude::new(&options.exclude)?,
        inodes: HashMap::new(),
    };
    let (dest_path, dir_required) = destination(&options.destination, &options.workdir);
    for source in sources {
        let matches = match source {
            Prepared::Tree { pattern } if !options.parents => match_sources(tree, pattern)?,
            _ => Vec::new(),
        };
        if matches!(source, Prepared::Tree { .. }) && !options.parents && matches.is_empty() {
            // BuildKit's AllowEmptyWildcard: a pattern matching nothing changes nothing.
            continue;
        }
        if dir_required {
            plan.mkdir_all(&dest_path)?;
        } else {
            plan.mkdir_all(parent(&dest_path))?;
        }
        match source {
            Prepared::Tree { pattern } if options.parents => {
                plan.copy_parents(tree, pattern, &dest_path)?;
            }
            Prepared::Tree { .. } => {
                let unpack = options.unpack.unwrap_or(options.add);
                for matched in &matches {
                    plan.copy_one(tree, matched, &dest_path, unpack)?;
                }
            }
            Prepared::File { file, download } => {
                let unpack = *download && options.unpack == Some(true);
                // dockerd 20.10 leaves downloads at 0600 whatever --chmod says.
                plan.skip_chmod = *download;
                plan.copy_one(file, &file.name.clone(), &dest_path, unpack)?;
                plan.skip_chmod = false;
            }
        }
    }
    plan.finish()
}

/// The destination as an image path without leading `/`, and whether it must be a
/// directory (a trailing `/` or `/.`, or the working directory itself).
fn destination(destination: &str, workdir: &str) -> (String, bool) {
    let dir_required = destination.is_empty()
        || destination == "."
        || destination.ends_with('/')
        || destination.ends_with("/.");
    let full = if destination.starts_with('/') {
        destination.to_owned()
    } else {
        format!("{workdir}/{destination}")
    };
    (join(&components(&full)), dir_required)
}

/// One source directory being copied: where it is, where it goes, the names left.
struct Frame {
    dir: String,
    rel: String,
    target: String,
    /// True while no directory above matched the `--parents` pattern fully.
    including: bool,
    names: std::vec::IntoIter<String>,
}

struct Plan<'a> {
    base: &'a dyn DestTree,
    entries: BTreeMap<String, LayerEntry>,
    /// Existing directories whose children changed: their mtime becomes `now`.
    modified: BTreeSet<String>,
    /// Directories this copy made where the image had nothing: the image has nothing
    /// below them either, so lookups there never reach it.
    fresh: BTreeSet<String>,
    /// True while copying a download, which `--chmod` does not touch.
    skip_chmod: bool,
    options: &'a CopyOptions,
    exclude: Exclude,
    /// First layer path of each hard-linked source inode.
    inodes: HashMap<(u64, u64), String>,
}

fn dest_stat(entry: &LayerEntry) -> DestStat {
    DestStat {
        kind: match &entry.kind {
            EntryKind::Dir => DestKind::Dir,
            EntryKind::Symlink { target } => DestKind::Symlink {
                target: target.clone(),
            },
            _ => DestKind::Other,
        },
        mode: entry.mode,
        uid: entry.uid,
        gid: entry.gid,
        mtime: entry.mtime,
    }
}

impl Plan<'_> {
    fn lstat(&self, path: &str) -> Result<Option<DestStat>, CopyError> {
        if path.is_empty() {
            return Ok(Some(DestStat {
                kind: DestKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: Timestamp::default(),
            }));
        }
        if let Some(entry) = self.entries.get(path) {
            return Ok(Some(dest_stat(entry)));
        }
        // A planned non-directory hides whatever the image has below it.
        let mut above = parent(path);
        while !above.is_empty() {
            if let Some(entry) = self.entries.get(above) {
                if entry.kind != EntryKind::Dir || self.fresh.contains(above) {
                    return Ok(None);
                }
            }
            above = parent(above);
        }
        self.base.lstat(path)
    }

    fn resolve(&self, path: &str) -> Result<String, CopyError> {
        self.resolve_below("", path, true)
    }

    fn owner(&self, stat: &SourceStat) -> Owner {
        self.options.owner.unwrap_or(Owner {
            uid: stat.uid,
            gid: stat.gid,
        })
    }

    /// `MkdirAll` on the resolved path: missing directories are made 0755, owned by the
    /// `--chown` owner or root, with `now` as mtime. Returns the resolved path.
    fn mkdir_all(&mut self, path: &str) -> Result<String, CopyError> {
        let real = self.resolve(path)?;
        let parts = components(&real);
        for end in 1..=parts.len() {
            let here = join(&parts[..end]);
            match self.lstat(&here)? {
                Some(stat) if stat.kind == DestKind::Dir => {}
                Some(_) => return Err(CopyError::NotADirectory { path: shown(&here) }),
                None => {
                    let owner = self.options.owner.unwrap_or(Owner { uid: 0, gid: 0 });
                    self.put(LayerEntry {
                        path: here,
                        kind: EntryKind::Dir,
                        mode: 0o755,
                        uid: owner.uid,
                        gid: owner.gid,
                        mtime: self.options.now,
                        xattrs: Vec::new(),
                    })?;
                }
            }
        }
        Ok(real)
    }

    fn put(&mut self, entry: LayerEntry) -> Result<(), CopyError> {
        let existing = self.lstat(&entry.path)?;
        match &existing {
            Some(existing) if existing.kind == DestKind::Dir && entry.kind != EntryKind::Dir => {
                return Err(CopyError::ReplaceDirectory {
                    path: shown(&entry.path),
                })
            }
            None if entry.kind == EntryKind::Dir => {
                self.fresh.insert(entry.path.clone());
            }
            _ => {}
        }
        self.modified.insert(parent(&entry.path).to_owned());
        self.entries.insert(entry.path.clone(), entry);
        Ok(())
    }

    /// fsutil `Copy` for one matched source (followed), including ADD's archive extraction.
    fn copy_one(
        &mut self,
        tree: &dyn SourceTree,
        matched: &str,
        dest: &str,
        unpack: bool,
    ) -> Result<(), CopyError> {
        // Each match is its own fsutil copy: hard links are only kept within one.
        self.inodes.clear();
        let (real, stat) = resolve_source(tree, matched)?;
        let Some(stat) = stat else {
            return Err(CopyError::SourceNotFound {
                path: shown(matched),
            });
        };
        let dest_real = self.resolve(dest)?;
        let dest_stat = self.lstat(&dest_real)?;
        let dest_is_dir = dest_stat.as_ref().is_some_and(|s| s.kind == DestKind::Dir);
        if stat.kind == SourceKind::File && unpack {
            let host = tree.host_path(&real);
            if let Some(compression) = add::archive_compression(&host)? {
                if dest_stat.is_some() && !dest_is_dir {
                    return Err(CopyError::CopyToNonDirectory {
                        path: shown(&dest_real),
                    });
                }
                let dir = self.mkdir_all(&dest_real)?;
                let entries =
                    add::extract_archive(&host, compression, &self.options.scratch, matched)?;
                return self.merge_archive(&dir, entries, matched);
            }
        }
        if stat.kind == SourceKind::Dir {
            match dest_stat {
                Some(_) if !dest_is_dir => {
                    return Err(CopyError::CopyToNonDirectory {
                        path: shown(&dest_real),
                    })
                }
                Some(_) => {}
                None => {
                    self.mkdir_all(&dest_real)?;
                }
            }
            return self.copy_children(tree, &real, "", &dest_real, None);
        }
        let target = if dest_is_dir {
            let name = components(matched).pop().unwrap_or_default();
            join2(&dest_real, &name)
        } else {
            dest_real
        };
        self.mkdir_all(parent(&target))?;
        self.place(tree, &real, &target, stat, false).map(|_| ())
    }

    /// `--parents`: copies what the include pattern selects below the source root,
    /// making each matched entry's source parents (with their metadata) on the way.
    fn copy_parents(
        &mut self,
        tree: &dyn SourceTree,
        word: &str,
        dest: &str,
    ) -> Result<(), CopyError> {
        self.inodes.clear();
        let spec = parents_source(word);
        let (root, stat) = resolve_source(tree, &spec.root)?;
        check_parents_required(tree, &spec, &root, stat.as_ref())?;
        let dest_real = self.mkdir_all(dest)?;
        self.copy_children(tree, &root, "", &dest_real, Some(&spec.pattern))
    }

    /// Copies the contents of source directory `dir` to `target`, depth first with an
    /// explicit stack (no recursion, however deep the tree). With `include` (`--parents`),
    /// directories that only lead to a match are entered without being made.
    fn copy_children(
        &mut self,
        tree: &dyn SourceTree,
        dir: &str,
        rel: &str,
        target: &str,
        include: Option<&str>,
    ) -> Result<(), CopyError> {
        let pattern = include.unwrap_or_default();
        let mut stack = vec![Frame {
            dir: dir.to_owned(),
            rel: rel.to_owned(),
            target: target.to_owned(),
            including: include.is_some(),
            names: tree.children(dir)?.into_iter(),
        }];
        while let Some(frame) = stack.last_mut() {
            let Some(name) = frame.names.next() else {
                stack.pop();
                continue;
            };
            let path = join2(&frame.dir, &name);
            let child_rel = join2(&frame.rel, &name);
            let child_target = join2(&frame.target, &name);
            let Some(stat) = tree.stat(&path)? else {
                continue;
            };
            let is_dir = stat.kind == SourceKind::Dir;
            if frame.including {
                match include_match(pattern, &child_rel) {
                    Include::No => continue,
                    Include::Partial if !is_dir => continue,
                    Include::Partial => {
                        // Made only once something inside matches (fsutil's delayed
                        // createParentDirs).
                        if self.exclude.excludes(&child_rel, true)? {
                            continue;
                        }
                        let names = tree.children(&path)?.into_iter();
                        stack.push(Frame {
                            dir: path,
                            rel: child_rel,
                            target: child_target,
                            including: true,
                            names,
                        });
                        continue;
                    }
                    Include::Full => {
                        let (dir, rel, target) =
                            (frame.dir.clone(), frame.rel.clone(), frame.target.clone());
                        self.make_source_parents(tree, &dir, &rel, &target)?;
                    }
                }
            }
            if self.exclude.excludes(&child_rel, is_dir)? {
                continue;
            }
            if self.place(tree, &path, &child_target, stat, true)? {
                let names = tree.children(&path)?.into_iter();
                stack.push(Frame {
                    dir: path,
                    rel: child_rel,
                    target: child_target,
                    including: false,
                    names,
                });
            }
        }
        Ok(())
    }

    /// Makes the directories of `rel` (below the `--parents` root) that are missing, each
    /// with its source directory's metadata.
    fn make_source_parents(
        &mut self,
        tree: &dyn SourceTree,
        dir: &str,
        rel: &str,
        target: &str,
    ) -> Result<(), CopyError> {
        let rel_parts = components(rel);
        let dir_parts = components(dir);
        let target_parts = components(target);
        let depth = rel_parts.len();
        for level in 1..=depth {
            let up = depth - level;
            let here = join(&target_parts[..target_parts.len() - up]);
            let source = join(&dir_parts[..dir_parts.len() - up]);
            if self.lstat(&here)?.is_some() {
                continue;
            }
            if let Some(stat) = tree.stat(&source)? {
                let entry = self.entry_for(tree, &source, &here, &stat)?;
                self.put(entry)?;
            }
        }
        Ok(())
    }

    /// fsutil `copy` for one entry, without a directory's contents: directories are merged
    /// (their metadata overwritten when `overwrite`), anything else replaces what is there.
    /// Returns true when `path` is a directory whose contents are to be copied next.
    fn place(
        &mut self,
        tree: &dyn SourceTree,
        path: &str,
        target: &str,
        stat: SourceStat,
        overwrite: bool,
    ) -> Result<bool, CopyError> {
        match stat.kind {
            SourceKind::Dir => {
                match self.lstat(target)? {
                    None => {
                        let entry = self.entry_for(tree, path, target, &stat)?;
                        self.put(entry)?;
                    }
                    Some(existing) if existing.kind != DestKind::Dir => {
                        return Err(CopyError::CopyToNonDirectory {
                            path: shown(target),
                        })
                    }
                    Some(_) if overwrite => {
                        let entry = self.entry_for(tree, path, target, &stat)?;
                        self.put(entry)?;
                    }
                    Some(_) => {}
                }
                Ok(true)
            }
            SourceKind::Skip => Ok(false),
            SourceKind::Fifo => Err(CopyError::Unsupported { path: shown(path) }),
            _ => {
                let entry = self.entry_for(tree, path, target, &stat)?;
                self.put(entry)?;
                Ok(false)
            }
        }
    }

    /// The layer entry a source entry becomes at `target`.
    fn entry_for(
        &mut self,
        tree: &dyn SourceTree,
        path: &str,
        target: &str,
        stat: &SourceStat,
    ) -> Result<LayerEntry, CopyError> {
        let owner = self.owner(stat);
        let is_dir = stat.kind == SourceKind::Dir;
        let mode = match (&self.options.chmod, &stat.kind) {
            (Some(chmod), kind)
                if !self.skip_chmod && !matches!(kind, SourceKind::Symlink { .. }) =>
            {
                apply_chmod(chmod, stat.mode, is_dir)?
            }
            _ => stat.mode,
        };
        let kind = match &stat.kind {
            SourceKind::Dir => EntryKind::Dir,
            SourceKind::File => match stat.link_id {
                Some(id) => match self.inodes.get(&id) {
                    Some(first) => EntryKind::Hardlink {
                        target: first.clone(),
                    },
                    None => {
                        self.inodes.insert(id, target.to_owned());
                        EntryKind::File {
                            source: tree.host_path(path),
                        }
                    }
                },
                None => EntryKind::File {
                    source: tree.host_path(path),
                },
            },
            SourceKind::Symlink { target } => EntryKind::Symlink {
                target: target.clone(),
            },
            SourceKind::CharDevice { major, minor } => EntryKind::CharDevice {
                major: *major,
                minor: *minor,
            },
            SourceKind::BlockDevice { major, minor } => EntryKind::BlockDevice {
                major: *major,
                minor: *minor,
            },
            SourceKind::Fifo | SourceKind::Skip => EntryKind::Fifo,
        };
        let xattrs = match kind {
            EntryKind::Hardlink { .. } => Vec::new(),
            _ => tree.xattrs(path)?,
        };
        Ok(LayerEntry {
            path: target.to_owned(),
            kind,
            mode,
            uid: owner.uid,
            gid: owner.gid,
            mtime: stat.mtime,
            xattrs,
        })
    }

    /// Puts an extracted archive under `dir` as moby's untar does: paths resolve inside
    /// `dir` as in a chroot, missing parents are made 0755 root-owned, the archive's root
    /// entry is skipped, directories merge, anything else replaces what is there, hard
    /// links are rebased under `dir`.
    fn merge_archive(
        &mut self,
        dir: &str,
        entries: Vec<LayerEntry>,
        shown_source: &str,
    ) -> Result<(), CopyError> {
        for mut entry in entries {
            let escapes = match &entry.kind {
                EntryKind::Hardlink { target } => escapes_root(&entry.path) || escapes_root(target),
                _ => escapes_root(&entry.path),
            };
            if escapes {
                return Err(CopyError::Archive {
                    path: shown_source.to_owned(),
                    reason: format!("{:?} is outside of the destination", entry.path),
                });
            }
            let rel = join(&components(&entry.path));
            if rel.is_empty() {
                continue;
            }
            let is_dir = entry.kind == EntryKind::Dir;
            let resolved = self.resolve_below(dir, &rel, is_dir)?;
            if resolved.is_empty() {
                continue;
            }
            entry.path = join2(dir, &resolved);
            if let EntryKind::Hardlink { target } = &entry.kind {
                let target = self.resolve_below(dir, &join(&components(target)), false)?;
                entry.kind = EntryKind::Hardlink {
                    target: join2(dir, &target),
                };
            }
            let parts = components(&resolved);
            for end in 1..parts.len() {
                let here = join2(dir, &join(&parts[..end]));
                match self.lstat(&here)? {
                    Some(stat) if stat.kind == DestKind::Dir => {}
                    Some(_) => return Err(CopyError::NotADirectory { path: shown(&here) }),
                    None => self.put(LayerEntry {
                        path: here,
                        kind: EntryKind::Dir,
                        mode: 0o755,
                        uid: 0,
                        gid: 0,
                        mtime: self.options.now,
                        xattrs: Vec::new(),
                    })?,
                }
            }
            let merge = is_dir
                && self
                    .lstat(&entry.path)?
                    .is_some_and(|stat| stat.kind == DestKind::Dir);
            if !merge {
                // Replaced: nothing planned below it survives.
                let below = format!("{}/", entry.path);
                self.entries
                    .retain(|path, _| path != &entry.path && !path.starts_with(&below));
                if is_dir {
                    // A directory made anew: nothing of the image shows through below it.
                    self.fresh.insert(entry.path.clone());
                }
            }
            self.modified.insert(parent(&entry.path).to_owned());
            self.entries.insert(entry.path.clone(), entry);
        }
        Ok(())
    }

    /// Resolves `rel` below `dir` with `dir` as the root (absolute symlink targets start at
    /// `dir`, `..` stops there).
    fn resolve_below(&self, dir: &str, rel: &str, follow_last: bool) -> Result<String, CopyError> {
        resolve(rel, follow_last, |p| {
            Ok(match self.lstat(&join2(dir, p))? {
                None => Step::Absent,
                Some(DestStat {
                    kind: DestKind::Symlink { target },
                    ..
                }) => Step::Link(target),
                Some(stat) => Step::Plain {
                    dir: stat.kind == DestKind::Dir,
                },
            })
        })
    }

    /// The planned entries plus every directory above them that the image already has.
    fn finish(self) -> Result<Vec<LayerEntry>, CopyError> {
        let mut parents: BTreeMap<String, LayerEntry> = BTreeMap::new();
        for path in self.entries.keys() {
            let mut above = parent(path);
            while !above.is_empty() {
                if self.entries.contains_key(above) || parents.contains_key(above) {
                    above = parent(above);
                    continue;
                }
                if let Some(stat) = self.base.lstat(above)? {
                    let mtime = if self.modified.contains(above) {
                        self.options.now
                    } else {
                        stat.mtime
                    };
                    parents.insert(
                        above.to_owned(),
                        LayerEntry {
                            path: above.to_owned(),
                            kind: EntryKind::Dir,
                            mode: stat.mode,
                            uid: stat.uid,
                            gid: stat.gid,
                            mtime,
                            xattrs: Vec::new(),
                        },
                    );
                }
                above = parent(above);
            }
        }
        let mut entries: Vec<LayerEntry> = self.entries.into_values().collect();
        entries.extend(parents.into_values());
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(entries)
    }
}
