//! Image archives: an OCI image layout that is also a `docker save` archive.
//!
//! Consumes images of the store with the names to give them, a format and a compression;
//! produces one tar (or an OCI layout directory) holding
//!
//! ```text
//! blobs/sha256/<hex>   configs, manifests and layers (compressed as asked)
//! index.json           OCI index: one manifest descriptor per name, annotated with
//!                      io.containerd.image.name (the full name) and
//!                      org.opencontainers.image.ref.name (the tag), as BuildKit writes them
//! manifest.json        docker's list of {Config, RepoTags, Layers}, paths into blobs/
//! oci-layout           {"imageLayoutVersion":"1.0.0"}
//! repositories         docker's legacy {name: {tag: top layer hex}}
//! ```
//!
//! Tar entries come in byte order of name, directories first where they sort, with mode 0644
//! (0755 for directories), owner 0:0, no owner names and time 0, so the archive is a function
//! of the images, the names and the options. The config blob is written as stored, so the
//! image's config digest never changes; the manifest is rewritten only when the layers'
//! compression or the media types change. This module must never print nor change the store
//! beyond adding compressed layer blobs.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::path::Path;

use rayon::prelude::*;

use super::compress::{layer_blob, Algorithm, Compression};
use super::{write_error, ExportError, Result};
use crate::digest::Digest;
use crate::image::{
    canonical_json, Descriptor, ImageConfig, Manifest, CONFIG_MEDIA_TYPE, MANIFEST_MEDIA_TYPE,
};
use crate::store::{Reference, Store, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};

/// Docker's media type of an image manifest (schema 2).
pub const DOCKER_MANIFEST_MEDIA_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's media type of an image config.
pub const DOCKER_CONFIG_MEDIA_TYPE: &str = "application/vnd.docker.container.image.v1+json";
/// OCI media type of an image index.
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";

const OCI_LAYOUT: &[u8] = br#"{"imageLayoutVersion":"1.0.0"}"#;

/// What an archive holds and which media types its manifests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveFormat {
    /// One tar, OCI media types (BuildKit's `type=oci`, plus `manifest.json`).
    Oci,
    /// One tar, docker media types (BuildKit's `type=docker`).
    Docker,
    /// An OCI layout directory, OCI media types.
    OciDir,
}

/// One image to save and the names it gets in the archive.
#[derive(Debug, Clone, PartialEq)]
pub struct SaveImage {
    /// The image's manifest digest in the store.
    pub manifest: Digest,
    /// Its names; none gives an untagged entry in `index.json` and `manifest.json`.
    pub names: Vec<Reference>,
}

/// What [`save`] wrote.
#[derive(Debug, Clone, PartialEq)]
pub struct SaveSummary {
    /// Each image's manifest as written, in the order given.
    pub manifests: Vec<Descriptor>,
    /// Bytes written (the tar, or the files of the directory).
    pub bytes: u64,
}

/// Where an archive goes.
pub enum Destination<'a> {
    /// A tar on a writer; `path` names it in errors (`-` for standard output).
    Tar {
        /// The writer.
        out: &'a mut dyn Write,
        /// Its name for messages.
        path: &'a Path,
    },
    /// An OCI layout directory, created (or empty) at this path.
    Dir(&'a Path),
}

/// One file of the archive: literal bytes, or a blob of the store.
enum Content {
    Bytes(Vec<u8>),
    Blob(Digest, u64),
}

/// Writes `images` as an archive in `format` with layers in `compression` to `destination`.
///
/// # Errors
/// [`ExportError::NoImages`], [`ExportError::DockerZstd`], [`ExportError::BadLevel`],
/// [`ExportError::DestinationNotEmpty`], errors reading the images and layers,
/// [`ExportError::Write`].
pub fn save(
    store: &Store,
    images: &[SaveImage],
    format: ArchiveFormat,
    compression: Compression,
    destination: Destination<'_>,
) -> Result<SaveSummary> {
    if images.is_empty() {
        return Err(ExportError::NoImages);
    }
    if format == ArchiveFormat::Docker && compression.algorithm == Algorithm::Zstd {
        return Err(ExportError::DockerZstd);
    }
    compression.effective_level()?;
    let _lock = store.lock_shared()?;
    let loaded = images
        .iter()
        .map(|image| load(store, &image.manifest))
        .collect::<Result<Vec<_>>>()?;
    // Each distinct layer once, all of them at the same time.
    let layers: BTreeMap<Digest, (&Descriptor, &Digest)> = loaded
        .iter()
        .flat_map(|image| &image.layers)
        .map(|(blob, diff_id)| (blob.digest, (blob, diff_id)))
        .collect();
    let blobs_by_layer: BTreeMap<Digest, Descriptor> = layers
        .into_par_iter()
        .map(|(digest, (layer, diff_id))| {
            layer_blob(store, layer, diff_id, compression).map(|blob| (digest, blob))
        })
        .collect::<Result<_>>()?;

    let mut files: BTreeMap<String, Content> = BTreeMap::new();
    let mut index_entries = Vec::new();
    let mut docker_entries = Vec::new();
    let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    let mut manifests = Vec::new();
    for (image, request) in loaded.iter().zip(images) {
        let layers: Vec<Descriptor> = image
            .layers
            .iter()
            .map(|(blob, _)| {
                let written = blobs_by_layer
                    .get(&blob.digest)
                    .cloned()
                    .unwrap_or_else(|| blob.clone());
                Descriptor {
                    media_type: layer_media_type(format, compression.algorithm)
                        .unwrap_or(&written.media_type)
                        .to_string(),
                    annotations: blob.annotations.clone(),
                    ..written
                }
            })
            .collect();
        let mut manifest = image.manifest.clone();
        manifest.layers = layers;
        if format == ArchiveFormat::Docker {
            manifest.media_type = DOCKER_MANIFEST_MEDIA_TYPE.to_string();
            manifest.config.media_type = DOCKER_CONFIG_MEDIA_TYPE.to_string();
        } else {
            manifest.media_type = MANIFEST_MEDIA_TYPE.to_string();
            manifest.config.media_type = CONFIG_MEDIA_TYPE.to_string();
        }
        // The stored bytes when nothing changed, so the image keeps its digest.
        let manifest_bytes = match manifest == image.manifest {
            true => image.manifest_bytes.clone(),
            false => canonical_json(&manifest),
        };
        let descriptor = Descriptor::new(
            &manifest.media_type,
            Digest::of(&manifest_bytes),
            manifest_bytes.len() as u64,
        );
        files.insert(
            blob_name(&descriptor.digest),
            Content::Bytes(manifest_bytes),
        );
        files.insert(
            blob_name(&manifest.config.digest),
            Content::Blob(manifest.config.digest, manifest.config.size),
        );
        for layer in &manifest.layers {
            files.insert(
                blob_name(&layer.digest),
                Content::Blob(layer.digest, layer.size),
            );
        }
        if request.names.is_empty() {
            index_entries.push(descriptor.clone());
        }
        for name in &request.names {
            let mut entry = descriptor.clone();
            entry
                .annotations
                .insert(ANNOTATION_CONTAINERD_NAME.to_string(), name.to_string());
            if let Some(tag) = name.tag() {
                entry
                    .annotations
                    .insert(ANNOTATION_REF_NAME.to_string(), tag.to_string());
                if let Some(top) = manifest.layers.last() {
                    repositories
                        .entry(name.familiar_name())
                        .or_default()
                        .insert(tag.to_string(), top.digest.hex());
                }
            }
            index_entries.push(entry);
        }
        docker_entries.push(serde_json::json!({
            "Config": blob_name(&manifest.config.digest),
            "RepoTags": request.names.iter().filter(|n| n.tag().is_some()).map(Reference::familiar).collect::<Vec<_>>(),
            "Layers": manifest.layers.iter().map(|l| blob_name(&l.digest)).collect::<Vec<_>>(),
        }));
        manifests.push(descriptor);
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": index_entries,
    });
    files.insert("index.json".into(), Content::Bytes(canonical_json(&index)));
    files.insert("oci-layout".into(), Content::Bytes(OCI_LAYOUT.to_vec()));
    if format != ArchiveFormat::OciDir {
        files.insert(
            "manifest.json".into(),
            Content::Bytes(canonical_json(&docker_entries)),
        );
        files.insert(
            "repositories".into(),
            Content::Bytes(canonical_json(&repositories)),
        );
    }
    let bytes = match destination {
        Destination::Tar { out, path } => write_tar(store, &files, out, path)?,
        Destination::Dir(dir) => write_dir(store, &files, dir)?,
    };
    Ok(SaveSummary { manifests, bytes })
}

/// The media type every layer gets in `format`, or `None` to keep the OCI one of its blob.
fn layer_media_type(format: ArchiveFormat, algorithm: Algorithm) -> Option<&'static str> {
    match format {
        ArchiveFormat::Docker => algorithm.docker_media_type(),
        _ => Some(algorithm.oci_media_type()),
    }
}

fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// An image read from the store: its manifest (parsed and as stored) and its layers paired
/// with their diff_ids.
pub(super) struct Loaded {
    pub manifest: Manifest,
    pub manifest_bytes: Vec<u8>,
    pub layers: Vec<(Descriptor, Digest)>,
}

/// Reads image `digest` from the store.
///
/// # Errors
/// [`ExportError::BadImage`], [`ExportError::LayerCount`], store errors.
pub(super) fn load(store: &Store, digest: &Digest) -> Result<Loaded> {
    let bad = |what| {
        move |source| ExportError::BadImage {
            digest: *digest,
            what,
            source,
        }
    };
    let manifest_bytes = store.read_blob(digest)?;
    let manifest: Manifest = serde_json::from_slice(&manifest_bytes).map_err(bad("manifest"))?;
    let config: ImageConfig = serde_json::from_slice(&store.read_blob(&manifest.config.digest)?)
        .map_err(bad("config"))?;
    if config.rootfs.diff_ids.len() != manifest.layers.len() {
        return Err(ExportError::LayerCount {
            digest: *digest,
            layers: manifest.layers.len(),
            diff_ids: config.rootfs.diff_ids.len(),
        });
    }
    let layers = manifest
        .layers
        .iter()
        .cloned()
        .zip(config.rootfs.diff_ids.iter().copied())
        .collect();
    Ok(Loaded {
        manifest,
        manifest_bytes,
        layers,
    })
}

/// The directories the blob paths need, in tar order.
const DIRS: [&str; 2] = ["blobs/", "blobs/sha256/"];

fn tar_header(name: &str, size: u64, dir: bool) -> io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_path(name)?;
    header.set_size(size);
    header.set_mode(if dir { 0o755 } else { 0o644 });
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    header.set_cksum();
    Ok(header)
}

/// How much of a blob one read and one write move.
const COPY_BUFFER: usize = 1 << 20;

/// Writes the tar by hand: each entry's ustar header, its bytes, zero padding to 512 bytes,
/// and two zero blocks at the end (what the tar crate's builder writes, with blobs copied a
/// megabyte at a time).
fn write_tar(
    store: &Store,
    files: &BTreeMap<String, Content>,
    out: &mut dyn Write,
    path: &Path,
) -> Result<u64> {
    let mut written = 0u64;
    let mut buffer = vec![0u8; COPY_BUFFER];
    let mut dirs = DIRS.iter().peekable();
    for (name, content) in files {
        while let Some(dir) = dirs.next_if(|dir| **dir < name.as_str()) {
            let header = tar_header(dir, 0, true).map_err(write_error("the archive", path))?;
            out.write_all(header.as_bytes())
                .map_err(write_error("the archive", path))?;
            written += 512;
        }
        let size = match content {
            Content::Bytes(bytes) => bytes.len() as u64,
            Content::Blob(_, size) => *size,
        };
        let header = tar_header(name, size, false).map_err(write_error("the archive", path))?;
        out.write_all(header.as_bytes())
            .map_err(write_error("the archive", path))?;
        let copied = match content {
            Content::Bytes(bytes) => {
                out.write_all(bytes)
                    .map_err(write_error("the archive", path))?;
                size
            }
            Content::Blob(digest, _) => {
                copy_blob(&mut store.open_blob(digest)?, out, &mut buffer, path)?
            }
        };
        if copied != size {
            let message = format!("blob {name} has {copied} bytes, its descriptor {size}");
            let error = io::Error::new(io::ErrorKind::InvalidData, message);
            return Err(write_error("the archive", path)(error));
        }
        let padding = (512 - size % 512) % 512;
        out.write_all(&[0u8; 512][..padding as usize])
            .map_err(write_error("the archive", path))?;
        written += 512 + size + padding;
    }
    out.write_all(&[0u8; 1024])
        .map_err(write_error("the archive", path))?;
    out.flush().map_err(write_error("the archive", path))?;
    Ok(written + 1024)
}

/// Copies a blob to `out`; a blob that fails its digest check at the end fails the write.
fn copy_blob(
    blob: &mut dyn io::Read,
    out: &mut dyn Write,
    buffer: &mut [u8],
    path: &Path,
) -> Result<u64> {
    let mut copied = 0u64;
    loop {
        let n = match blob.read(buffer) {
            Ok(0) => return Ok(copied),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(write_error("the archive", path)(e)),
        };
        out.write_all(buffer.get(..n).unwrap_or_default())
            .map_err(write_error("the archive", path))?;
        copied += n as u64;
    }
}

fn write_dir(store: &Store, files: &BTreeMap<String, Content>, dir: &Path) -> Result<u64> {
    match std::fs::read_dir(dir) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                return Err(ExportError::DestinationNotEmpty {
                    path: dir.to_path_buf(),
                });
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(_) => {
            return Err(ExportError::DestinationNotEmpty {
                path: dir.to_path_buf(),
            })
        }
    }
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).map_err(write_error("the directory", &blobs))?;
    let mut bytes = 0;
    for (name, content) in files {
        let path = dir.join(name);
        let mut file = std::fs::File::create(&path).map_err(write_error("the file", &path))?;
        bytes += match content {
            Content::Bytes(data) => {
                file.write_all(data)
                    .map_err(write_error("the file", &path))?;
                data.len() as u64
            }
            Content::Blob(digest, _) => {
                let mut blob = store.open_blob(digest)?;
                io::copy(&mut blob, &mut file).map_err(write_error("the file", &path))?
            }
        };
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;

    /// Stores a one-file layer, a config naming `diff_ids` (the layer's own when `None`) and
    /// a manifest; returns the manifest digest and the layer digest.
    fn put_image(store: &Store, diff_ids: Option<Vec<Digest>>) -> (Digest, Digest) {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_ustar();
        header.set_path("hello").unwrap();
        header.set_size(6);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append(&header, &b"hello\n"[..]).unwrap();
        let layer = tar.into_inner().unwrap();
        let (layer_digest, layer_size) = store.put_blob(&layer).unwrap();
        let mut config = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            ..ImageConfig::default()
        };
        config.rootfs.diff_ids = diff_ids.unwrap_or_else(|| vec![layer_digest]);
        let (config_digest, config_size) = store.put_blob(&canonical_json(&config)).unwrap();
        let manifest = Manifest::new(
            Descriptor::new(CONFIG_MEDIA_TYPE, config_digest, config_size),
            vec![Descriptor::new(
                crate::image::LAYER_MEDIA_TYPE,
                layer_digest,
                layer_size,
            )],
        );
        (
            store.put_blob(&canonical_json(&manifest)).unwrap().0,
            layer_digest,
        )
    }

    fn save_to_vec(
        store: &Store,
        images: &[SaveImage],
        format: ArchiveFormat,
        compression: Compression,
    ) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        let summary = save(
            store,
            images,
            format,
            compression,
            Destination::Tar {
                out: &mut out,
                path: Path::new("-"),
            },
        )?;
        assert_eq!(summary.bytes, out.len() as u64);
        Ok(out)
    }

    #[test]
    fn the_tar_is_sorted_padded_and_terminated() {
        let (_dir, store) = temp_store();
        let (manifest, _) = put_image(&store, None);
        let images = [SaveImage {
            manifest,
            names: vec![Reference::parse("app:1").unwrap()],
        }];
        let none = Compression {
            algorithm: Algorithm::None,
            level: None,
        };
        let bytes = save_to_vec(&store, &images, ArchiveFormat::Oci, none).unwrap();
        assert_eq!(bytes.len() % 512, 0);
        assert!(bytes[bytes.len() - 1024..].iter().all(|b| *b == 0));
        let mut archive = tar::Archive::new(&bytes[..]);
        let names: Vec<String> = archive
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted);
        assert_eq!(names[..2], ["blobs/", "blobs/sha256/"]);
        assert_eq!(
            names[names.len() - 4..],
            ["index.json", "manifest.json", "oci-layout", "repositories"]
        );
        // Uncompressed OCI keeps the stored manifest, so the image keeps its digest.
        let hex = manifest.hex();
        assert!(names.iter().any(|n| n.ends_with(&hex)));
    }

    #[test]
    fn what_cannot_be_saved_is_an_error() {
        let (_dir, store) = temp_store();
        let (good, layer) = put_image(&store, None);
        let (bad, _) = put_image(&store, Some(Vec::new()));
        let image = |manifest| SaveImage {
            manifest,
            names: Vec::new(),
        };
        let zstd = Compression {
            algorithm: Algorithm::Zstd,
            level: None,
        };
        let gzip = Compression::default();
        let cases: Vec<(Vec<SaveImage>, ArchiveFormat, Compression, &str)> = vec![
            (
                Vec::new(),
                ArchiveFormat::Oci,
                gzip,
                "expected at least one image",
            ),
            (
                vec![image(good)],
                ArchiveFormat::Docker,
                zstd,
                "zstd layers need OCI",
            ),
            (
                vec![image(bad)],
                ArchiveFormat::Oci,
                gzip,
                "has 1 layers but 0 diff_ids",
            ),
        ];
        for (images, format, compression, expected) in cases {
            let error = save_to_vec(&store, &images, format, compression).unwrap_err();
            assert!(error.to_string().contains(expected), "{error}");
        }
        // A stored layer whose bytes changed fails the export instead of shipping them.
        std::fs::write(store.blob_path(&layer), b"tampered").unwrap();
        let none = Compression {
            algorithm: Algorithm::None,
            level: None,
        };
        let error = save_to_vec(&store, &[image(good)], ArchiveFormat::Oci, none).unwrap_err();
        let cause = std::error::Error::source(&error).map(ToString::to_string);
        assert!(
            cause.as_deref().is_some_and(|c| c.contains("is corrupt")),
            "{error}: {cause:?}"
        );
    }
}
