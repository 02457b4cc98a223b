//! Tags in `index.json`, and finding images by name, digest or id prefix.
//!
//! Consumes references and manifest descriptors; produces the OCI index (one manifest
//! descriptor per tag, annotated with the full normalized name and the time it was tagged)
//! and parsed manifests and configs. Every change is a read-modify-write under
//! `kiln/index.lock` followed by an atomic replace, so concurrent taggers never lose a tag and
//! readers never see a partial file. This module must never tag a manifest the store lacks.

use std::collections::HashMap;
use std::path::Path;
use std::time::SystemTime;

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest, MediaType};

use super::{atomic, io_error, Reference, Result, Store, StoreError};
use crate::digest::Digest;

/// OCI's annotation for a manifest's name in an index.
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";
/// containerd's annotation for an image's full name (read by `ctr import` and nerdctl).
pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
/// When kiln tagged the manifest, RFC 3339.
pub const ANNOTATION_CREATED: &str = "dev.kiln.created";

/// Returns the bytes of an index with no manifests.
pub(super) fn empty_index_json() -> Vec<u8> {
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [],
    });
    index.to_string().into_bytes()
}

/// One entry of `index.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageRecord {
    /// The name it is tagged as, if the entry carries a name kiln can parse.
    pub name: Option<Reference>,
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest descriptor as stored (with its annotations).
    pub manifest: Descriptor,
    /// When it was tagged, if recorded.
    pub created: Option<SystemTime>,
}

/// What [`Store::resolve`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedImage {
    /// The manifest's digest.
    pub digest: Digest,
    /// The manifest descriptor.
    pub manifest: Descriptor,
    /// The tag it was found by, or the first tag naming it; `None` for an untagged manifest.
    pub name: Option<Reference>,
}

/// A manifest and its config, read and verified from the store.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredImage {
    /// The manifest's digest.
    pub manifest_digest: Digest,
    /// The manifest.
    pub manifest: ImageManifest,
    /// The config's digest.
    pub config_digest: Digest,
    /// The config.
    pub config: ImageConfiguration,
    /// The config as stored, with the fields oci-spec's type does not model (docker's
    /// `Healthcheck`, `OnBuild`, `Shell`, ...).
    pub config_json: serde_json::Value,
}

impl StoredImage {
    /// Returns the layer blob digests, base layer first.
    ///
    /// # Errors
    /// [`StoreError::BadDescriptorDigest`] for a non-sha256 layer.
    pub fn layer_digests(&self) -> Result<Vec<Digest>> {
        self.manifest
            .layers()
            .iter()
            .map(descriptor_digest)
            .collect()
    }

    /// Returns the sum of the layer sizes in the manifest: docker's SIZE column, since the
    /// store keeps layers uncompressed.
    pub fn size(&self) -> u64 {
        self.manifest
            .layers()
            .iter()
            .fold(0u64, |sum, layer| sum.saturating_add(layer.size()))
    }

    /// Returns the layers' diff_ids (the names of their snapshots), base layer first.
    ///
    /// # Errors
    /// [`StoreError::BadDescriptorDigest`] for a diff_id that is not a sha256 digest.
    pub fn diff_ids(&self) -> Result<Vec<Digest>> {
        self.config
            .rootfs()
            .diff_ids()
            .iter()
            .map(|text| {
                text.parse()
                    .map_err(|source| StoreError::BadDescriptorDigest {
                        found: text.clone(),
                        source,
                    })
            })
            .collect()
    }
}

/// Returns a descriptor's digest as a [`Digest`].
///
/// # Errors
/// [`StoreError::BadDescriptorDigest`] unless it is sha256.
pub fn descriptor_digest(descriptor: &Descriptor) -> Result<Digest> {
    Digest::try_from(descriptor.digest()).map_err(|source| StoreError::BadDescriptorDigest {
        found: descriptor.digest().to_string(),
        source,
    })
}

fn annotation<'a>(descriptor: &'a Descriptor, key: &str) -> Option<&'a str> {
    descriptor
        .annotations()
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

fn entry_name(descriptor: &Descriptor) -> Option<Reference> {
    let text = annotation(descriptor, ANNOTATION_CONTAINERD_NAME)
        .or_else(|| annotation(descriptor, ANNOTATION_REF_NAME))?;
    Reference::parse(text)
        .ok()
        .filter(|r| r.tag().is_some() && r.digest().is_none())
}

fn is_hex_prefix(text: &str) -> bool {
    (4..=64).contains(&text.len()) && text.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Store {
    fn read_index(&self) -> Result<ImageIndex> {
        let path = self.index_path();
        let bytes = std::fs::read(&path).map_err(io_error("read", &path))?;
        serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
            what: "index",
            path: path.clone(),
            source,
        })
    }

    fn write_index(&self, index: &ImageIndex) -> Result<()> {
        let path = self.index_path();
        let bytes = serde_json::to_vec(index).map_err(|source| StoreError::Encode {
            what: "index",
            path: path.clone(),
            source,
        })?;
        atomic::write_atomic(&self.tmp_dir(), &path, &bytes)
    }

    /// Applies `change` to `index.json` under the index lock; writes it back if `change`
    /// returns true, and returns what `change` returned.
    fn update_index(
        &self,
        change: impl FnOnce(&mut Vec<Descriptor>) -> Result<bool>,
    ) -> Result<bool> {
        let _lock = self.lock_index()?;
        let mut index = self.read_index()?;
        let mut manifests = index.manifests().clone();
        let changed = change(&mut manifests)?;
        if changed {
            index.set_manifests(manifests);
            self.write_index(&index)?;
        }
        Ok(changed)
    }

    /// Tags `manifest` as `name`, replacing whatever `name` tagged before. The stored
    /// descriptor keeps the media type, digest, size and platform of `manifest` and gets the
    /// annotations `org.opencontainers.image.ref.name` and `io.containerd.image.name` (the full
    /// normalized name) and `dev.kiln.created` (now, RFC 3339). Tagging a name with the
    /// manifest it already has changes nothing.
    ///
    /// # Errors
    /// [`StoreError::NotATag`] for a reference without a tag or with a digest,
    /// [`StoreError::BlobNotFound`] if the manifest is not stored, I/O errors.
    pub fn tag(&self, name: &Reference, manifest: &Descriptor) -> Result<()> {
        if name.tag().is_none() || name.digest().is_some() {
            return Err(StoreError::NotATag {
                reference: name.to_string(),
            });
        }
        let digest = descriptor_digest(manifest)?;
        if !self.has_blob(&digest) {
            return Err(StoreError::BlobNotFound {
                digest,
                path: self.blob_path(&digest),
            });
        }
        let full = name.to_string();
        let mut entry = Descriptor::new(manifest.media_type().clone(), manifest.size(), digest);
        entry.set_platform(manifest.platform().clone());
        let created = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        entry.set_annotations(Some(HashMap::from([
            (ANNOTATION_REF_NAME.to_string(), full.clone()),
            (ANNOTATION_CONTAINERD_NAME.to_string(), full),
            (ANNOTATION_CREATED.to_string(), created),
        ])));
        self.update_index(|manifests| {
            // Re-tagging the same manifest (every rebuild that changed nothing) leaves the
            // index alone: no rewrite, and the tag keeps the time it was first made.
            let unchanged = manifests.iter().any(|d| {
                entry_name(d).as_ref() == Some(name) && descriptor_digest(d).ok() == Some(digest)
            });
            if unchanged {
                return Ok(false);
            }
            manifests.retain(|d| entry_name(d).as_ref() != Some(name));
            manifests.push(entry);
            Ok(true)
        })?;
        Ok(())
    }

    /// Removes the tag `name`; returns false if nothing was tagged so. The manifest and its
    /// blobs stay until gc.
    ///
    /// # Errors
    /// I/O errors.
    pub fn untag(&self, name: &Reference) -> Result<bool> {
        self.update_index(|manifests| {
            let before = manifests.len();
            manifests.retain(|d| entry_name(d).as_ref() != Some(name));
            Ok(manifests.len() != before)
        })
    }

    /// Lists the entries of `index.json` in file order (oldest tag first).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] for an unreadable index, I/O errors.
    pub fn images(&self) -> Result<Vec<ImageRecord>> {
        let index = self.read_index()?;
        index
            .manifests()
            .iter()
            .map(|descriptor| {
                Ok(ImageRecord {
                    name: entry_name(descriptor),
                    digest: descriptor_digest(descriptor)?,
                    manifest: descriptor.clone(),
                    created: annotation(descriptor, ANNOTATION_CREATED)
                        .and_then(|t| humantime::parse_rfc3339_weak(t).ok()),
                })
            })
            .collect()
    }

    /// Finds an image by `name[:tag]`, `name@sha256:…`, a full `sha256:…` manifest digest,
    /// or an unambiguous prefix (at least 4 hex digits) of a tagged manifest's digest. A name
    /// is tried before an id prefix, as docker does.
    ///
    /// # Errors
    /// [`StoreError::ImageNotFound`], [`StoreError::AmbiguousId`],
    /// [`StoreError::InvalidReference`] for text that is none of these forms.
    pub fn resolve(&self, text: &str) -> Result<ResolvedImage> {
        let images = self.images()?;
        let not_found = || StoreError::ImageNotFound {
            text: text.to_string(),
        };
        if text.starts_with("sha256:") {
            let digest = text.parse().map_err(|_| not_found())?;
            return self
                .resolve_digest(&images, &digest, None)
                .ok_or_else(not_found);
        }
        let reference = Reference::parse(text);
        if let Ok(reference) = &reference {
            if let Some(digest) = reference.digest() {
                return self
                    .resolve_digest(&images, digest, None)
                    .ok_or_else(not_found);
            }
            if let Some(image) = images.iter().find(|i| i.name.as_ref() == Some(reference)) {
                return Ok(ResolvedImage {
                    digest: image.digest,
                    manifest: image.manifest.clone(),
                    name: image.name.clone(),
                });
            }
        }
        if is_hex_prefix(text) {
            let mut matches: Vec<Digest> = images
                .iter()
                .map(|i| i.digest)
                .filter(|d| d.hex().starts_with(text))
                .collect();
            matches.sort();
            matches.dedup();
            return match matches.as_slice() {
                [] => Err(not_found()),
                [digest] => self
                    .resolve_digest(&images, digest, None)
                    .ok_or_else(not_found),
                _ => Err(StoreError::AmbiguousId {
                    prefix: text.to_string(),
                    matches,
                }),
            };
        }
        match reference {
            Ok(_) => Err(not_found()),
            Err(source) => Err(StoreError::InvalidReference {
                text: text.to_string(),
                source,
            }),
        }
    }

    /// Resolves a manifest digest: a tagged entry if there is one, else a stored blob.
    fn resolve_digest(
        &self,
        images: &[ImageRecord],
        digest: &Digest,
        name: Option<Reference>,
    ) -> Option<ResolvedImage> {
        if let Some(image) = images.iter().find(|i| i.digest == *digest) {
            return Some(ResolvedImage {
                digest: *digest,
                manifest: image.manifest.clone(),
                name: name.or_else(|| image.name.clone()),
            });
        }
        let size = self.blob_size(digest).ok()?;
        Some(ResolvedImage {
            digest: *digest,
            manifest: Descriptor::new(MediaType::ImageManifest, size, *digest),
            name,
        })
    }

    /// Reads and parses the manifest `manifest` and its config, verifying both digests.
    ///
    /// # Errors
    /// [`StoreError::BlobNotFound`], [`StoreError::CorruptBlob`],
    /// [`StoreError::BadImageJson`], [`StoreError::BadDescriptorDigest`].
    pub fn image(&self, manifest: &Digest) -> Result<StoredImage> {
        let bytes = self.read_blob(manifest)?;
        let parsed = ImageManifest::from_reader(bytes.as_slice()).map_err(|source| {
            StoreError::BadImageJson {
                what: "manifest",
                digest: *manifest,
                source,
            }
        })?;
        let config_digest = descriptor_digest(parsed.config())?;
        let config_bytes = self.read_blob(&config_digest)?;
        let bad_config = |source| StoreError::BadImageJson {
            what: "config",
            digest: config_digest,
            source,
        };
        let config_json: serde_json::Value = serde_json::from_slice(&config_bytes)
            .map_err(|e| bad_config(oci_spec::OciSpecError::SerDe(e)))?;
        // oci-spec 0.7 requires `history`, which the image spec makes optional.
        let mut lenient = config_json.clone();
        if let Some(object) = lenient.as_object_mut() {
            object
                .entry("history")
                .or_insert_with(|| serde_json::json!([]));
        }
        let config: ImageConfiguration = serde_json::from_value(lenient)
            .map_err(|e| bad_config(oci_spec::OciSpecError::SerDe(e)))?;
        Ok(StoredImage {
            manifest_digest: *manifest,
            manifest: parsed,
            config_digest,
            config,
            config_json,
        })
    }
}

/// Returns true if and only if `path` holds JSON that parses as an OCI image manifest.
pub(super) fn parse_manifest(path: &Path) -> Option<ImageManifest> {
    let file = std::fs::File::open(path).ok()?;
    ImageManifest::from_reader(std::io::BufReader::new(file)).ok()
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::store::tests::temp_store;

    /// Stores a config and a manifest over `layers`; returns the manifest descriptor.
    pub(crate) fn put_image(store: &Store, seed: &str, layers: &[Digest]) -> Descriptor {
        let config = serde_json::json!({
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"seed": seed}},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(Digest::to_string).collect::<Vec<_>>()},
        });
        let (config_digest, config_size) = store
            .put_blob(config.to_string().as_bytes())
            .expect("puts config");
        let layer_descriptors: Vec<_> = layers
            .iter()
            .map(|d| {
                serde_json::json!({
                    "mediaType": "application/vnd.oci.image.layer.v1.tar",
                    "digest": d.to_string(),
                    "size": store.blob_size(d).unwrap_or(0),
                })
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": config_digest.to_string(),
                "size": config_size,
            },
            "layers": layer_descriptors,
        });
        let (digest, size) = store
            .put_blob(manifest.to_string().as_bytes())
            .expect("puts");
        Descriptor::new(MediaType::ImageManifest, size, digest)
    }

    fn reference(text: &str) -> Reference {
        Reference::parse(text).expect("valid reference")
    }

    #[test]
    fn tag_replace_untag() {
        let (_dir, store) = temp_store();
        let one = put_image(&store, "one", &[]);
        let two = put_image(&store, "two", &[]);
        store.tag(&reference("app"), &one).expect("tags");
        store.tag(&reference("app:v1"), &one).expect("tags");
        store.tag(&reference("app"), &two).expect("retags");
        let images = store.images().expect("lists");
        let names: Vec<_> = images
            .iter()
            .map(|i| (i.name.as_ref().map(Reference::familiar), i.digest))
            .collect();
        let one_digest = descriptor_digest(&one).expect("sha256");
        let two_digest = descriptor_digest(&two).expect("sha256");
        assert_eq!(
            names,
            [
                (Some("app:v1".to_string()), one_digest),
                (Some("app:latest".to_string()), two_digest)
            ]
        );
        let annotations = images[1]
            .manifest
            .annotations()
            .clone()
            .expect("annotations");
        assert_eq!(
            annotations[ANNOTATION_REF_NAME],
            "docker.io/library/app:latest"
        );
        assert_eq!(
            annotations[ANNOTATION_CONTAINERD_NAME],
            "docker.io/library/app:latest"
        );
        assert!(images[1].created.is_some());

        assert!(store.untag(&reference("app:v1")).expect("untags"));
        assert!(!store.untag(&reference("app:v1")).expect("untags"));
        assert_eq!(store.images().expect("lists").len(), 1);

        let missing = Descriptor::new(MediaType::ImageManifest, 1, Digest::of(b"nope"));
        assert!(matches!(
            store.tag(&reference("x"), &missing),
            Err(StoreError::BlobNotFound { .. })
        ));
        let by_digest = reference(&format!("app@{}", one_digest));
        assert!(matches!(
            store.tag(&by_digest, &one),
            Err(StoreError::NotATag { .. })
        ));
    }

    #[test]
    fn resolve_forms() {
        let (_dir, store) = temp_store();
        let mut made = Vec::new();
        for i in 0..3 {
            let descriptor = put_image(&store, &format!("seed{i}"), &[]);
            made.push(descriptor_digest(&descriptor).expect("sha256"));
            store
                .tag(&reference(&format!("img{i}")), &descriptor)
                .expect("tags");
        }
        let untagged = put_image(&store, "untagged", &[]);
        let untagged = descriptor_digest(&untagged).expect("sha256");

        let first = made[0];
        let ok: Vec<(String, Digest)> = vec![
            ("img0".into(), first),
            ("img0:latest".into(), first),
            ("docker.io/library/img0".into(), first),
            ("img2".into(), made[2]),
            (first.to_string(), first),
            (format!("whatever@{first}"), first),
            (first.hex()[..12].to_string(), first),
            (first.hex(), first),
            (untagged.to_string(), untagged),
        ];
        for (text, expected) in &ok {
            assert_eq!(store.resolve(text).expect(text).digest, *expected, "{text}");
        }
        assert_eq!(
            store.resolve("img0").expect("found").name,
            Some(reference("img0"))
        );

        // A prefix no stored digest starts with: flip the first digit of every candidate.
        let unused = (0..16u32)
            .map(|n| format!("{:x}000", n))
            .find(|p| !made.iter().any(|d| d.hex().starts_with(p.as_str())))
            .expect("three digests cannot start with all sixteen digits");
        let errors: Vec<(String, &str)> = vec![
            ("img999".into(), "no such image: img999"),
            ("sha256:zz".into(), "no such image: sha256:zz"),
            (Digest::of(b"none").to_string(), "no such image"),
            ("Bad Name".into(), "invalid image name \"Bad Name\""),
            (unused.clone(), "no such image"),
            ("abc".into(), "no such image: abc"),
        ];
        for (text, expected) in &errors {
            let message = store.resolve(text).expect_err(text).to_string();
            assert!(message.contains(expected), "{text}: {message}");
        }
    }

    #[test]
    fn ambiguous_prefix_is_reported() {
        let (_dir, store) = temp_store();
        // Find, in memory, two contents whose digests share four leading hex digits.
        let mut seen: HashMap<String, u32> = HashMap::new();
        let (one, two) = (0u32..)
            .find_map(|i| {
                let prefix = Digest::of(&i.to_le_bytes()).hex()[..4].to_string();
                seen.insert(prefix, i).map(|j| (j, i))
            })
            .expect("a collision exists");
        let mut digests = Vec::new();
        for (i, n) in [one, two].into_iter().enumerate() {
            let (digest, size) = store.put_blob(&n.to_le_bytes()).expect("puts");
            let descriptor = Descriptor::new(MediaType::ImageManifest, size, digest);
            store
                .tag(&reference(&format!("p{i}")), &descriptor)
                .expect("tags");
            digests.push(digest);
        }
        digests.sort();
        let prefix = digests[0].hex()[..4].to_string();
        match store.resolve(&prefix) {
            Err(StoreError::AmbiguousId { prefix: p, matches }) => {
                assert_eq!(p, prefix);
                assert_eq!(matches, digests);
            }
            other => panic!("expected ambiguity, got {other:?}"),
        }
        let longer = digests[0].hex()[..20].to_string();
        assert_eq!(store.resolve(&longer).expect("unique").digest, digests[0]);
    }

    #[test]
    fn image_reads_manifest_and_config() {
        let (_dir, store) = temp_store();
        let (layer, _) = store.put_blob(b"layer tar").expect("puts");
        let descriptor = put_image(&store, "x", &[layer]);
        let digest = descriptor_digest(&descriptor).expect("sha256");
        let image = store.image(&digest).expect("reads");
        assert_eq!(image.layer_digests().expect("layers"), [layer]);
        assert_eq!(image.diff_ids().expect("diff ids"), [layer]);
        assert_eq!(image.size(), 9);
        assert!(parse_manifest(&store.blob_path(&digest)).is_some());
        assert!(parse_manifest(&store.blob_path(&layer)).is_none());
        assert!(matches!(
            store.image(&layer),
            Err(StoreError::BadImageJson {
                what: "manifest",
                ..
            })
        ));
    }
}
