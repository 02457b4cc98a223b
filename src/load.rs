//! Images from outside the store: OCI image layouts and `docker save` archives.
//!
//! Consumes an OCI layout directory (`oci-layout`, `index.json`, `blobs/sha256/…`) or a
//! `docker save` tarball (its `manifest.json` with a config and layer tars, or the OCI layout
//! newer docker versions write); produces the image in the store, every blob verified against
//! its digest on the way in, and returns the manifest digest. A record (kind
//! [`IMPORT_KIND`]) holds the imported blobs so gc keeps them until they are pruned. A corrupt
//! or truncated input leaves no blob behind: each blob is hashed while it is written and only
//! renamed into the store when its digest matches.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use thiserror::Error;

use crate::digest::Digest;
use crate::image::{canonical_json, Descriptor, ImageConfig, Manifest, CONFIG_MEDIA_TYPE};
use crate::store::{Store, StoreError};

/// Store record kind naming imported images (its refs keep their blobs from gc).
pub const IMPORT_KIND: &str = "import";

const INDEX_MEDIA_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// Why an image could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// A file of the input cannot be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// A JSON document of the input does not parse.
    #[error("{} is not a valid {what}", path.display())]
    BadJson {
        /// The file.
        path: PathBuf,
        /// What it should have been.
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// The input is neither an OCI layout nor a docker archive.
    #[error("{} holds neither an OCI image layout (oci-layout, index.json) nor a docker save manifest.json", path.display())]
    UnknownFormat {
        /// The input.
        path: PathBuf,
    },
    /// No image in the input matches what was asked for.
    #[error("no image {wanted:?} in {}: expected one of {available:?}", path.display())]
    NoSuchImage {
        /// The input.
        path: PathBuf,
        /// The tag or digest asked for.
        wanted: String,
        /// What the input names.
        available: Vec<String>,
    },
    /// The input holds several images and none was chosen.
    #[error("{} holds {count} images: name one with :TAG or @sha256:DIGEST", path.display())]
    Ambiguous {
        /// The input.
        path: PathBuf,
        /// How many.
        count: usize,
    },
    /// A digest in the input is not a sha256 digest.
    #[error("unsupported digest {found:?} in {}: expected sha256:<64 hex digits>", path.display())]
    BadDigest {
        /// The input.
        path: PathBuf,
        /// The text found.
        found: String,
    },
    /// The store refused a blob (a digest mismatch means the input is corrupt).
    #[error("cannot store a blob of {}", path.display())]
    Store {
        /// The input.
        path: PathBuf,
        /// The store's error.
        #[source]
        source: StoreError,
    },
}

/// The result type of loading.
pub type Result<T> = std::result::Result<T, LoadError>;

/// Loads the image `selector` (a tag, `sha256:…` digest, or `None` for the only one) of the
/// OCI layout directory `dir` into `store`; returns its manifest digest.
///
/// # Errors
/// [`LoadError`]: unreadable or invalid layout, no matching image, corrupt blobs.
pub fn import_oci_layout(store: &Store, dir: &Path, selector: Option<&str>) -> Result<Digest> {
    let layout = Layout {
        root: dir.to_path_buf(),
    };
    let index_path = dir.join("index.json");
    let index: Index = read_json(&index_path, "OCI image index")?;
    let chosen = choose(dir, &index.manifests, selector)?;
    let manifest_digest = layout.manifest_for_platform(&chosen)?;
    layout.import_manifest(store, &manifest_digest)?;
    Ok(manifest_digest)
}

/// Loads the image of a `docker save` tarball (or an OCI layout tarball) into `store`;
/// returns its manifest digest.
///
/// # Errors
/// [`LoadError`]: unreadable or unknown format, several images, corrupt content.
pub fn import_archive(store: &Store, archive: &Path, selector: Option<&str>) -> Result<Digest> {
    let unpacked = store.temp_dir().map_err(|source| LoadError::Store {
        path: archive.to_path_buf(),
        source,
    })?;
    let file = File::open(archive).map_err(read_error(archive))?;
    let mut tar = tar::Archive::new(file);
    tar.set_preserve_permissions(false);
    tar.set_unpack_xattrs(false);
    // `unpack` refuses entries that would land outside the directory.
    tar.unpack(unpacked.path()).map_err(read_error(archive))?;
    let root = unpacked.path();
    if root.join("oci-layout").is_file() && root.join("index.json").is_file() {
        return import_oci_layout(store, root, selector);
    }
    let manifest_path = root.join("manifest.json");
    if !manifest_path.is_file() {
        return Err(LoadError::UnknownFormat {
            path: archive.to_path_buf(),
        });
    }
    let entries: Vec<DockerManifest> = read_json(&manifest_path, "docker save manifest")?;
    let entry = match (entries.as_slice(), selector) {
        ([only], None) => only,
        (_, None) => {
            return Err(LoadError::Ambiguous {
                path: archive.to_path_buf(),
                count: entries.len(),
            })
        }
        (_, Some(wanted)) => entries
            .iter()
            .find(|entry| entry.repo_tags.iter().any(|tag| tag_matches(tag, wanted)))
            .ok_or_else(|| LoadError::NoSuchImage {
                path: archive.to_path_buf(),
                wanted: wanted.to_string(),
                available: entries.iter().flat_map(|e| e.repo_tags.clone()).collect(),
            })?,
    };
    import_docker_entry(store, root, archive, entry)
}

/// One image of a docker `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifest {
    config: String,
    #[serde(default)]
    repo_tags: Vec<String>,
    layers: Vec<String>,
}

/// Stores a docker-archive image: its config as is, each layer tar as a blob (gzip layers
/// keep their compression and media type), and a new OCI manifest over them.
fn import_docker_entry(
    store: &Store,
    root: &Path,
    archive: &Path,
    entry: &DockerManifest,
) -> Result<Digest> {
    let put = |path: &Path| -> Result<(Digest, u64)> {
        let mut file = File::open(path).map_err(read_error(path))?;
        let mut writer = store.blob_writer().map_err(store_error(archive))?;
        io::copy(&mut file, &mut writer).map_err(read_error(path))?;
        writer.commit().map_err(store_error(archive))
    };
    let config_path = inside(root, &entry.config);
    let _: ImageConfig = read_json(&config_path, "image config")?;
    let (config_digest, config_size) = put(&config_path)?;
    let mut layers = Vec::new();
    for layer in &entry.layers {
        let path = inside(root, layer);
        let media_type = match is_gzip(&path)? {
            true => "application/vnd.oci.image.layer.v1.tar+gzip",
            false => crate::image::LAYER_MEDIA_TYPE,
        };
        let (digest, size) = put(&path)?;
        layers.push(Descriptor::new(media_type, digest, size));
    }
    let manifest = Manifest::new(
        Descriptor::new(CONFIG_MEDIA_TYPE, config_digest, config_size),
        layers,
    );
    let (digest, _) = store
        .put_blob(&canonical_json(&manifest))
        .map_err(store_error(archive))?;
    keep(store, archive, &digest, &manifest)?;
    Ok(digest)
}

/// A path named inside an unpacked archive, never outside it.
fn inside(root: &Path, name: &str) -> PathBuf {
    let clean: PathBuf = Path::new(name)
        .components()
        .filter(|part| matches!(part, std::path::Component::Normal(_)))
        .collect();
    root.join(clean)
}

fn is_gzip(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 2];
    let mut file = File::open(path).map_err(read_error(path))?;
    match file.read_exact(&mut magic) {
        Ok(()) => Ok(magic == [0x1f, 0x8b]),
        Err(error) if error.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
        Err(error) => Err(read_error(path)(error)),
    }
}

/// True if `tag` (as docker writes it, `app:1` or `docker.io/library/app:1`) names `wanted`.
fn tag_matches(tag: &str, wanted: &str) -> bool {
    let normalize = |text: &str| {
        crate::store::Reference::parse(text).map_or_else(|_| text.to_string(), |r| r.to_string())
    };
    normalize(tag) == normalize(wanted)
}

#[derive(Debug, Deserialize)]
struct Index {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct IndexEntry {
    #[serde(default)]
    media_type: String,
    digest: String,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<PlatformEntry>,
}

#[derive(Debug, Clone, Deserialize)]
struct PlatformEntry {
    architecture: String,
    os: String,
}

/// The index entry `selector` names: a digest, or a tag matched against the entry's
/// `org.opencontainers.image.ref.name` (the full name or its tag part).
fn choose(dir: &Path, entries: &[IndexEntry], selector: Option<&str>) -> Result<IndexEntry> {
    let name_of = |entry: &IndexEntry| {
        entry
            .annotations
            .get("org.opencontainers.image.ref.name")
            .cloned()
    };
    let found = match selector {
        None => match entries {
            [only] => Some(only),
            _ => {
                return Err(LoadError::Ambiguous {
                    path: dir.to_path_buf(),
                    count: entries.len(),
                })
            }
        },
        Some(wanted) if wanted.starts_with("sha256:") => {
            entries.iter().find(|entry| entry.digest == wanted)
        }
        Some(wanted) => entries.iter().find(|entry| {
            name_of(entry).is_some_and(|name| {
                name == wanted || name.rsplit_once(':').is_some_and(|(_, tag)| tag == wanted)
            })
        }),
    };
    found.cloned().ok_or_else(|| LoadError::NoSuchImage {
        path: dir.to_path_buf(),
        wanted: selector.unwrap_or_default().to_string(),
        available: entries
            .iter()
            .map(|entry| name_of(entry).unwrap_or_else(|| entry.digest.clone()))
            .collect(),
    })
}

/// An OCI layout directory being read.
struct Layout {
    root: PathBuf,
}

impl Layout {
    fn digest(&self, text: &str) -> Result<Digest> {
        text.parse().map_err(|_| LoadError::BadDigest {
            path: self.root.clone(),
            found: text.to_string(),
        })
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.root.join("blobs/sha256").join(digest.hex())
    }

    /// A manifest's digest: `entry` itself, or for an index the entry for this machine's
    /// platform (the first one when none matches).
    fn manifest_for_platform(&self, entry: &IndexEntry) -> Result<Digest> {
        let digest = self.digest(&entry.digest)?;
        if !INDEX_MEDIA_TYPES.contains(&entry.media_type.as_str()) {
            return Ok(digest);
        }
        let index: Index = read_json(&self.blob_path(&digest), "image index")?;
        let host = crate::graph::Platform::host();
        let chosen = index
            .manifests
            .iter()
            .find(|m| {
                m.platform
                    .as_ref()
                    .is_some_and(|p| p.os == host.os && p.architecture == host.arch)
            })
            .or_else(|| index.manifests.first())
            .ok_or_else(|| LoadError::NoSuchImage {
                path: self.root.clone(),
                wanted: host.to_string(),
                available: Vec::new(),
            })?;
        self.manifest_for_platform(chosen)
    }

    /// Copies a manifest, its config and its layers into the store, each verified.
    fn import_manifest(&self, store: &Store, digest: &Digest) -> Result<()> {
        let manifest_path = self.blob_path(digest);
        let manifest: Manifest = read_json(&manifest_path, "image manifest")?;
        for descriptor in std::iter::once(&manifest.config).chain(&manifest.layers) {
            self.copy_blob(store, &descriptor.digest)?;
        }
        self.copy_blob(store, digest)?;
        keep(store, &self.root, digest, &manifest)
    }

    fn copy_blob(&self, store: &Store, digest: &Digest) -> Result<()> {
        if store.has_blob(digest) {
            return Ok(());
        }
        let path = self.blob_path(digest);
        let mut file = File::open(&path).map_err(read_error(&path))?;
        let mut writer = store.blob_writer().map_err(store_error(&self.root))?;
        io::copy(&mut file, &mut writer).map_err(read_error(&path))?;
        writer
            .commit_expecting(digest)
            .map_err(store_error(&self.root))?;
        Ok(())
    }
}

/// Records the import so gc keeps the image's blobs.
fn keep(store: &Store, source: &Path, digest: &Digest, manifest: &Manifest) -> Result<()> {
    let mut refs = vec![*digest, manifest.config.digest];
    refs.extend(manifest.layers.iter().map(|layer| layer.digest));
    let value = source.display().to_string();
    // Loading the same image again (every build naming the layout) writes nothing.
    let known = store
        .get_record::<String>(IMPORT_KIND, digest)
        .map_err(store_error(source))?;
    if known.as_ref() == Some(&value) {
        return Ok(());
    }
    store
        .put_record(IMPORT_KIND, digest, &refs, &value)
        .map_err(store_error(source))
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &'static str) -> Result<T> {
    let bytes = std::fs::read(path).map_err(read_error(path))?;
    serde_json::from_slice(&bytes).map_err(|source| LoadError::BadJson {
        path: path.to_path_buf(),
        what,
        source,
    })
}

fn read_error(path: &Path) -> impl FnOnce(io::Error) -> LoadError {
    let path = path.to_path_buf();
    move |source| LoadError::Read { path, source }
}

fn store_error(path: &Path) -> impl FnOnce(StoreError) -> LoadError {
    let path = path.to_path_buf();
    move |source| LoadError::Store { path, source }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_match_in_short_and_full_form() {
        assert!(tag_matches("app:1", "docker.io/library/app:1"));
        assert!(tag_matches("docker.io/library/app:latest", "app"));
        assert!(!tag_matches("app:1", "app:2"));
    }

    #[test]
    fn archive_names_stay_inside() {
        let root = Path::new("/r");
        assert_eq!(inside(root, "../../etc/passwd"), Path::new("/r/etc/passwd"));
        assert_eq!(
            inside(root, "/abs/layer.tar"),
            Path::new("/r/abs/layer.tar")
        );
        assert_eq!(inside(root, "a/./b"), Path::new("/r/a/b"));
    }
}
