//! The flattened root filesystem of an image: BuildKit's `type=local` and `type=tar`.
//!
//! Consumes an image of the store; produces its merged tree (every layer applied, whiteouts
//! and opaque directories honoured) as a directory or as one tar in the layer writer's
//! reproducible format. Layers are read through their snapshots (unpacked into the store
//! first when missing) and the merge is [`RootfsView`]'s, so the tree is the one RUN sees.
//! Owners are the snapshot's: exact when kiln runs as root and in `type=tar`; rootless, the
//! files of `type=local` are the current user's (as BuildKit's rootless local exporter writes
//! them). Sockets are left out (a tar cannot hold them) and xattrs are not carried.
//! This module must never change an image in the store.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::compress::open_layer;
use super::{ExportError, Result};
use crate::digest::Digest;
use crate::image::Descriptor;
use crate::layer::{self, EntryKind, FileKind, LayerEntry, LayerSummary, RootfsView};
use crate::sandbox::IdMapping;
use crate::store::Store;

/// Writes the merged tree of image `manifest` as one tar to `out`.
///
/// # Errors
/// Errors reading the image or its layers, [`ExportError::Layer`] when writing fails.
pub fn write_rootfs_tar(store: &Store, manifest: &Digest, out: impl Write) -> Result<LayerSummary> {
    let _lock = store.lock_shared()?;
    let entries = merged_entries(store, manifest)?;
    Ok(layer::write_layer(entries, out, None)?)
}

/// Writes the merged tree of image `manifest` into the directory `dest`, which must be
/// missing or empty.
///
/// # Errors
/// [`ExportError::DestinationNotEmpty`], errors reading the image or its layers,
/// [`ExportError::Layer`] when a file cannot be created.
pub fn write_rootfs_dir(store: &Store, manifest: &Digest, dest: &Path) -> Result<LayerSummary> {
    let empty = match std::fs::read_dir(dest) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) => e.kind() == std::io::ErrorKind::NotFound,
    };
    if !empty {
        return Err(ExportError::DestinationNotEmpty {
            path: dest.to_path_buf(),
        });
    }
    let _lock = store.lock_shared()?;
    let mut entries = merged_entries(store, manifest)?;
    // Rootless in kiln's own user namespace, container owners would land on subordinate host
    // ids, which the user could then neither read nor delete: the files become the user's
    // (container root), as BuildKit's rootless local exporter writes them.
    if matches!(IdMapping::detect(), IdMapping::Nested { .. }) {
        for entry in &mut entries {
            (entry.uid, entry.gid) = (0, 0);
        }
    }
    // The layer writer lays the entries out as a directory while it writes their tar, which
    // nobody needs here.
    Ok(layer::write_layer(entries, std::io::sink(), Some(dest))?)
}

/// The snapshot directory of each layer of image `manifest`, base first, unpacking those
/// not unpacked yet.
fn snapshots(store: &Store, manifest: &Digest) -> Result<Vec<PathBuf>> {
    super::archive::load(store, manifest)?
        .layers
        .iter()
        .map(|(blob, diff_id)| snapshot(store, blob, diff_id))
        .collect()
}

fn snapshot(store: &Store, blob: &Descriptor, diff_id: &Digest) -> Result<PathBuf> {
    if store.has_snapshot(diff_id) {
        return Ok(store.snapshot_path(diff_id));
    }
    let dir = store.temp_dir()?;
    layer::unpack(open_layer(store, blob)?, dir.path())?;
    Ok(store.commit_snapshot(dir, diff_id)?)
}

/// The merged tree as layer entries, the root left out; a file's later names become hard
/// links to its first.
fn merged_entries(store: &Store, manifest: &Digest) -> Result<Vec<LayerEntry>> {
    let view = RootfsView::new(snapshots(store, manifest)?);
    let mut first_name: HashMap<(u64, u64), String> = HashMap::new();
    let mut entries = Vec::new();
    for found in view.walk("/")? {
        let path = found.path.trim_start_matches('/').to_string();
        if path.is_empty() {
            continue;
        }
        let meta = &found.metadata;
        let kind = match meta.kind {
            FileKind::Dir => EntryKind::Dir,
            FileKind::File if meta.nlink > 1 => match first_name.get(&(meta.dev, meta.ino)) {
                Some(target) => EntryKind::Hardlink {
                    target: target.clone(),
                },
                None => {
                    first_name.insert((meta.dev, meta.ino), path.clone());
                    EntryKind::File {
                        source: found.host_path.clone(),
                    }
                }
            },
            FileKind::File => EntryKind::File {
                source: found.host_path.clone(),
            },
            FileKind::Symlink => EntryKind::Symlink {
                target: meta.link_target.clone().unwrap_or_default(),
            },
            FileKind::Fifo => EntryKind::Fifo,
            FileKind::Socket => continue,
            FileKind::CharDevice { major, minor } => EntryKind::CharDevice { major, minor },
            FileKind::BlockDevice { major, minor } => EntryKind::BlockDevice { major, minor },
        };
        entries.push(LayerEntry {
            path,
            kind,
            mode: meta.mode,
            uid: meta.uid,
            gid: meta.gid,
            mtime: meta.mtime,
            xattrs: Vec::new(),
        });
    }
    Ok(entries)
}
