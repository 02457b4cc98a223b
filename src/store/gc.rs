//! Garbage collection, pruning of records, and disk usage.
//!
//! Consumes the tags in `index.json` and the refs of every record; produces summaries of what
//! was freed or is in use. A digest held by a tag or a record keeps both the blob and the
//! snapshot of that name (for uncompressed layers the blob digest is the diff_id); a held
//! manifest also keeps its config, its layers and their snapshots. gc and prune run under the
//! exclusive store lock, so they never collect what a running build (holding it shared) has
//! written but not yet tagged or recorded. This module must never remove anything held.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::Read;
use std::time::{Duration, SystemTime};

use super::{atomic, index, io_error, snapshots, RecordInfo, Result, Store};
use crate::digest::Digest;

/// Manifests are small; a larger blob is a layer and is never parsed.
const MANIFEST_MAX: u64 = 4 << 20;

/// What [`Store::gc`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcSummary {
    /// Blobs removed.
    pub blobs_removed: usize,
    /// Snapshots removed.
    pub snapshots_removed: usize,
    /// Stale temp entries (of dead processes) removed.
    pub temps_removed: usize,
    /// Bytes freed by the blobs and snapshots removed.
    pub bytes_freed: u64,
}

/// What the store holds, for `kiln cache du`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DiskUsage {
    /// Number of blobs.
    pub blob_count: usize,
    /// Bytes of all blobs.
    pub blob_bytes: u64,
    /// Number of snapshots.
    pub snapshot_count: usize,
    /// Bytes of files in all snapshots.
    pub snapshot_bytes: u64,
    /// Number of records, all kinds.
    pub record_count: usize,
    /// Bytes of all record files.
    pub record_bytes: u64,
    /// Bytes of blobs and snapshots that nothing holds: what gc would free now.
    pub unreferenced_bytes: u64,
}

/// Which records of a kind [`Store::prune`] removes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Remove records last used longer ago than this.
    pub older_than: Option<Duration>,
    /// Then remove least recently used records until the bytes held only by records of the
    /// kind are at most this many.
    pub keep_bytes: Option<u64>,
}

/// What [`Store::prune`] removed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneSummary {
    /// Records removed.
    pub records_removed: usize,
    /// Bytes held only by the kind's records before pruning.
    pub bytes_before: u64,
    /// Bytes held only by the kind's records after pruning.
    pub bytes_after: u64,
    /// What the gc that followed removed.
    pub gc: GcSummary,
}

/// Lazily computed facts about digests: what each holds and what its blob and snapshot weigh.
struct Graph<'a> {
    store: &'a Store,
    held: HashMap<Digest, Vec<Digest>>,
    sizes: HashMap<Digest, u64>,
}

impl<'a> Graph<'a> {
    fn new(store: &'a Store) -> Graph<'a> {
        Graph {
            store,
            held: HashMap::new(),
            sizes: HashMap::new(),
        }
    }

    /// Returns `root` and, if its blob is an image manifest, its config, layers and diff_ids.
    fn held(&mut self, root: &Digest) -> &[Digest] {
        let store = self.store;
        self.held.entry(*root).or_insert_with(|| {
            let mut out = vec![*root];
            if let Some(manifest) = small_manifest(store, root) {
                if let Ok(config) = index::descriptor_digest(manifest.config()) {
                    out.push(config);
                    out.extend(diff_ids(store, &config));
                }
                out.extend(
                    manifest
                        .layers()
                        .iter()
                        .filter_map(|l| index::descriptor_digest(l).ok()),
                );
            }
            out
        })
    }

    fn held_by_all(&mut self, roots: impl IntoIterator<Item = Digest>) -> HashSet<Digest> {
        let mut out = HashSet::new();
        for root in roots {
            out.extend(self.held(&root).iter().copied());
        }
        out
    }

    /// Returns the bytes of the blob and the snapshot named `digest` (zero for absent ones).
    fn size(&mut self, digest: &Digest) -> u64 {
        let store = self.store;
        *self.sizes.entry(*digest).or_insert_with(|| {
            let blob = store.blob_size(digest).unwrap_or(0);
            let snapshot = store.snapshot_path(digest);
            let snapshot = if snapshot.is_dir() {
                snapshots::tree_size(&snapshot)
            } else {
                0
            };
            blob.saturating_add(snapshot)
        })
    }
}

fn small_manifest(store: &Store, digest: &Digest) -> Option<oci_spec::image::ImageManifest> {
    let path = store.blob_path(digest);
    let size = std::fs::metadata(&path).ok()?.len();
    if size > MANIFEST_MAX {
        return None;
    }
    let mut first = [0u8; 1];
    std::fs::File::open(&path)
        .ok()?
        .read_exact(&mut first)
        .ok()?;
    if first[0] != b'{' {
        return None;
    }
    index::parse_manifest(&path)
}

fn diff_ids(store: &Store, config: &Digest) -> Vec<Digest> {
    let Ok(bytes) = store.read_blob(config) else {
        return Vec::new();
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Vec::new();
    };
    let ids = value
        .get("rootfs")
        .and_then(|r| r.get("diff_ids"))
        .and_then(|d| d.as_array());
    ids.into_iter()
        .flatten()
        .filter_map(|id| id.as_str()?.parse().ok())
        .collect()
}

/// Lists the digest-named entries of a directory (blob files or snapshot dirs).
fn named_entries(dir: &std::path::Path) -> Result<Vec<Digest>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_error("list", dir))? {
        let entry = entry.map_err(io_error("list", dir))?;
        if let Some(digest) = entry
            .file_name()
            .to_str()
            .and_then(|n| Digest::from_hex(n).ok())
        {
            out.push(digest);
        }
    }
    out.sort();
    Ok(out)
}

impl Store {
    fn tag_roots(&self) -> Result<Vec<Digest>> {
        Ok(self
            .images()?
            .into_iter()
            .map(|image| image.digest)
            .collect())
    }

    fn all_records(&self) -> Result<Vec<RecordInfo>> {
        let mut out = Vec::new();
        for kind in self.record_kinds()? {
            out.extend(self.records(&kind)?);
        }
        Ok(out)
    }

    /// Returns every digest held by a tag or a record.
    fn live(&self, graph: &mut Graph<'_>) -> Result<HashSet<Digest>> {
        let mut roots = self.tag_roots()?;
        roots.extend(self.all_records()?.into_iter().flat_map(|r| r.refs));
        Ok(graph.held_by_all(roots))
    }

    /// Removes blobs and snapshots that no tag and no record holds, and stale temp entries.
    /// Takes the store lock exclusive, so it waits for running builds, unless the caller
    /// already holds it exclusive.
    ///
    /// # Errors
    /// I/O errors; what was removed before one stays removed.
    pub fn gc(&self) -> Result<GcSummary> {
        let _lock = self.lock_for_maintenance()?;
        self.collect()
    }

    /// gc without taking the lock.
    fn collect(&self) -> Result<GcSummary> {
        let mut summary = GcSummary {
            temps_removed: atomic::remove_stale(&self.tmp_dir())?,
            ..GcSummary::default()
        };
        let mut graph = Graph::new(self);
        let live = self.live(&mut graph)?;
        for digest in named_entries(&self.blobs_dir())? {
            if live.contains(&digest) {
                continue;
            }
            let path = self.blob_path(&digest);
            let size = self.blob_size(&digest).unwrap_or(0);
            atomic::remove_tree(&path).map_err(io_error("remove", &path))?;
            summary.blobs_removed += 1;
            summary.bytes_freed = summary.bytes_freed.saturating_add(size);
        }
        for digest in named_entries(&self.snapshots_dir())? {
            if live.contains(&digest) {
                continue;
            }
            let path = self.snapshot_path(&digest);
            let size = snapshots::tree_size(&path);
            atomic::remove_tree(&path).map_err(io_error("remove", &path))?;
            summary.snapshots_removed += 1;
            summary.bytes_freed = summary.bytes_freed.saturating_add(size);
        }
        if summary.blobs_removed + summary.snapshots_removed > 0 {
            atomic::sync_dir(&self.blobs_dir())?;
            atomic::sync_dir(&self.snapshots_dir())?;
        }
        Ok(summary)
    }

    /// Sums what the store holds. Reads without locking, so figures taken while a build runs
    /// may be a moment old.
    ///
    /// # Errors
    /// I/O errors.
    pub fn disk_usage(&self) -> Result<DiskUsage> {
        let mut usage = DiskUsage::default();
        let mut graph = Graph::new(self);
        let live = self.live(&mut graph)?;
        for digest in named_entries(&self.blobs_dir())? {
            let size = self.blob_size(&digest).unwrap_or(0);
            usage.blob_count += 1;
            usage.blob_bytes = usage.blob_bytes.saturating_add(size);
            if !live.contains(&digest) {
                usage.unreferenced_bytes = usage.unreferenced_bytes.saturating_add(size);
            }
        }
        for digest in named_entries(&self.snapshots_dir())? {
            let size = snapshots::tree_size(&self.snapshot_path(&digest));
            usage.snapshot_count += 1;
            usage.snapshot_bytes = usage.snapshot_bytes.saturating_add(size);
            if !live.contains(&digest) {
                usage.unreferenced_bytes = usage.unreferenced_bytes.saturating_add(size);
            }
        }
        for record in self.all_records()? {
            usage.record_count += 1;
            usage.record_bytes = usage.record_bytes.saturating_add(record.size);
        }
        Ok(usage)
    }

    /// Returns, per record of `kind` (sorted by id), the bytes of blobs and snapshots that the
    /// record holds and that no tag and no record of another kind holds. Bytes shared by two
    /// records of `kind` count for both.
    ///
    /// # Errors
    /// [`super::StoreError::InvalidKind`], I/O errors.
    pub fn record_usage(&self, kind: &str) -> Result<Vec<(RecordInfo, u64)>> {
        let mut graph = Graph::new(self);
        let protected = self.protected_from(kind, &mut graph)?;
        let mut out = Vec::new();
        for record in self.records(kind)? {
            let held = graph.held_by_all(record.refs.iter().copied());
            let mut bytes = 0u64;
            for digest in held.difference(&protected) {
                bytes = bytes.saturating_add(graph.size(digest));
            }
            out.push((record, bytes));
        }
        Ok(out)
    }

    /// Returns what tags and records of kinds other than `kind` hold.
    fn protected_from(&self, kind: &str, graph: &mut Graph<'_>) -> Result<HashSet<Digest>> {
        let mut roots = self.tag_roots()?;
        for other in self.record_kinds()? {
            if other != kind {
                roots.extend(self.records(&other)?.into_iter().flat_map(|r| r.refs));
            }
        }
        Ok(graph.held_by_all(roots))
    }

    /// Removes records of `kind` as `options` says, then runs gc. With neither option set,
    /// every record of the kind goes. Size accounting counts the bytes of blobs and
    /// snapshots held by records of `kind` and by nothing else (no tag, no other kind).
    /// Takes the store lock exclusive unless the caller already holds it exclusive.
    ///
    /// # Errors
    /// [`super::StoreError::InvalidKind`], I/O errors.
    pub fn prune(&self, kind: &str, options: &PruneOptions) -> Result<PruneSummary> {
        let _lock = self.lock_for_maintenance()?;
        let mut graph = Graph::new(self);
        let protected = self.protected_from(kind, &mut graph)?;
        let mut records = self.records(kind)?;
        records.sort_by(|a, b| a.last_used.cmp(&b.last_used).then(a.id.cmp(&b.id)));
        let holdings: Vec<BTreeSet<Digest>> = records
            .iter()
            .map(|r| {
                let held = graph.held_by_all(r.refs.iter().copied());
                held.difference(&protected).copied().collect()
            })
            .collect();
        let mut holders: HashMap<Digest, usize> = HashMap::new();
        for held in &holdings {
            for digest in held {
                *holders.entry(*digest).or_default() += 1;
            }
        }
        let mut bytes = 0u64;
        for digest in holders.keys() {
            bytes = bytes.saturating_add(graph.size(digest));
        }
        let bytes_before = bytes;

        let cutoff = options
            .older_than
            .and_then(|age| SystemTime::now().checked_sub(age));
        let mut remove = vec![false; records.len()];
        for (i, record) in records.iter().enumerate() {
            let too_old = cutoff.is_some_and(|cutoff| record.last_used < cutoff);
            let everything = options.older_than.is_none() && options.keep_bytes.is_none();
            let over_budget = options.keep_bytes.is_some_and(|keep| bytes > keep);
            if !(too_old || everything || over_budget) {
                continue;
            }
            remove[i] = true;
            for digest in &holdings[i] {
                let Some(count) = holders.get_mut(digest) else {
                    continue;
                };
                *count -= 1;
                if *count == 0 {
                    bytes = bytes.saturating_sub(graph.size(digest));
                }
            }
        }
        let mut records_removed = 0;
        for (record, removed) in records.iter().zip(&remove) {
            if *removed && self.remove_record(kind, &record.id)? {
                records_removed += 1;
            }
        }
        let gc = self.collect()?;
        Ok(PruneSummary {
            records_removed,
            bytes_before,
            bytes_after: bytes,
            gc,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;

    fn snapshot(store: &Store, diff_id: &Digest, bytes: usize) {
        let dir = store.temp_dir().expect("temp dir");
        std::fs::write(dir.path().join("f"), vec![b'x'; bytes]).expect("writes");
        store.commit_snapshot(dir, diff_id).expect("commits");
    }

    #[test]
    fn gc_keeps_what_tags_and_records_hold() {
        let (_dir, store) = temp_store();
        let (tagged_layer, _) = store.put_blob(b"tagged layer").expect("puts");
        snapshot(&store, &tagged_layer, 3);
        let manifest = super::super::index::tests::put_image(&store, "t", &[tagged_layer]);
        store
            .tag(&"app".parse().expect("ref"), &manifest)
            .expect("tags");
        let (cached, _) = store.put_blob(b"cached layer").expect("puts");
        snapshot(&store, &cached, 4);
        store
            .put_record("cache", &Digest::of(b"k"), &[cached], &())
            .expect("records");
        let (orphan, orphan_size) = store.put_blob(b"orphan layer").expect("puts");
        snapshot(&store, &orphan, 5);
        snapshot(&store, &Digest::of(b"snapshot only"), 6);

        let before = store.disk_usage().expect("du");
        assert_eq!(before.blob_count, 5);
        assert_eq!(before.snapshot_count, 4);
        assert_eq!(before.record_count, 1);
        assert_eq!(before.unreferenced_bytes, orphan_size + 5 + 6);

        let summary = store.gc().expect("gc");
        assert_eq!(summary.blobs_removed, 1);
        assert_eq!(summary.snapshots_removed, 2);
        assert_eq!(summary.bytes_freed, orphan_size + 5 + 6);
        assert!(!store.has_blob(&orphan));
        assert!(store.has_blob(&tagged_layer) && store.has_snapshot(&tagged_layer));
        assert!(store.has_blob(&cached) && store.has_snapshot(&cached));
        assert_eq!(store.gc().expect("gc again"), GcSummary::default());

        assert!(store.untag(&"app".parse().expect("ref")).expect("untags"));
        let summary = store.gc().expect("gc");
        // The manifest, its config and the tagged layer's blob, and its snapshot.
        assert_eq!((summary.blobs_removed, summary.snapshots_removed), (3, 1));
        assert!(store.has_blob(&cached));
    }

    #[test]
    fn prune_by_budget_removes_least_recently_used_first() {
        let (_dir, store) = temp_store();
        let mut ids = Vec::new();
        for i in 0..3u8 {
            let (layer, _) = store.put_blob(&[i; 100]).expect("puts");
            let id = Digest::of(&[i]);
            store
                .put_record("cache", &id, &[layer], &i)
                .expect("records");
            ids.push((id, layer));
            std::thread::sleep(Duration::from_millis(5));
        }
        // Record 0 was used last, so 1 is the least recently used.
        store.touch_record("cache", &ids[0].0).expect("touches");
        let usage = store.record_usage("cache").expect("usage");
        assert!(usage.iter().all(|(_, bytes)| *bytes == 100));

        let options = PruneOptions {
            older_than: None,
            keep_bytes: Some(150),
        };
        let summary = store.prune("cache", &options).expect("prunes");
        assert_eq!(
            (
                summary.records_removed,
                summary.bytes_before,
                summary.bytes_after
            ),
            (2, 300, 100)
        );
        assert_eq!(summary.gc.blobs_removed, 2);
        let left: Vec<_> = store
            .records("cache")
            .expect("lists")
            .into_iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(left, [ids[0].0]);
        assert!(store.has_blob(&ids[0].1));
    }

    #[test]
    fn prune_by_age_and_everything() {
        let (_dir, store) = temp_store();
        let (shared, _) = store.put_blob(b"shared").expect("puts");
        store
            .put_record("cache", &Digest::of(b"a"), &[shared], &1)
            .expect("records");
        store
            .put_record("stat", &Digest::of(b"b"), &[shared], &2)
            .expect("records");
        let options = PruneOptions {
            older_than: Some(Duration::from_secs(3600)),
            keep_bytes: None,
        };
        assert_eq!(
            store
                .prune("cache", &options)
                .expect("prunes")
                .records_removed,
            0
        );
        let summary = store
            .prune("cache", &PruneOptions::default())
            .expect("prunes");
        assert_eq!(summary.records_removed, 1);
        // Another kind still holds the blob, so it was never counted and is not collected.
        assert_eq!(summary.bytes_before, 0);
        assert!(store.has_blob(&shared));
        assert_eq!(store.records("stat").expect("lists").len(), 1);
    }
}
