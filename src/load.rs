//! Images from outside the store: OCI image layouts and the tarballs of `kiln save`,
//! BuildKit's `-o type=oci`, skopeo's `oci-archive:` and `docker save` (the classic layout
//! with `manifest.json`, and the OCI layout docker 25 and later writes).
//!
//! Consumes an OCI layout directory or a tar stream (plain, or gzip, zstd, bzip2 or xz
//! compressed); produces images in the store, each manifest, config and layer checked before
//! anything is stored: every blob's digest and size against its descriptor (or the name the
//! archive gives it), every layer's uncompressed digest against the config's
//! `rootfs.diff_ids`, and the layer media types against those kiln can unpack. Loading
//! happens in two phases. A tarball is first staged whole in `kiln/tmp` (a temp dir a later
//! `Store::open` removes should this process die) and everything is verified there; only
//! then are blobs copied into the store (from a directory through `commit_expecting`, since
//! its files may change after they were checked), followed by the import record and the
//! tags. So a
//! corrupt or truncated input leaves the store as it was: no blobs, no records, no tags.
//!
//! Tags hold a named image. A record of kind [`IMPORT_KIND`] holds the blobs of an image
//! loaded without a name (`kiln load` of an unnamed image, and every `--build-context`
//! base), so gc keeps it; the record also marks the manifest as verified, so loading an OCI
//! layout again (every build naming it) re-hashes only the small manifest. This module must never store a blob it has not verified, never tag
//! before every blob an image needs is stored, and never print.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::Deserialize;
use thiserror::Error;

use crate::digest::{Digest, DigestError, DigestReader, DigestWriter};
use crate::image::{canonical_json, Descriptor, ImageConfig, Manifest, CONFIG_MEDIA_TYPE};
use crate::store::{Reference, Store, StoreError, ANNOTATION_CONTAINERD_NAME, ANNOTATION_REF_NAME};

/// Store record kind naming imported images (its refs keep their blobs from gc).
pub const IMPORT_KIND: &str = "import";

/// The largest JSON document (index, manifest, config) read from an input; anything larger
/// is not a document an image tool writes, and reading it whole could exhaust memory.
const MAX_DOCUMENT: u64 = 16 << 20;

/// How deep symbolic and hard links inside an archive may chain (docker's classic layout
/// links a repeated layer to its first copy: one level).
const MAX_LINK_DEPTH: usize = 16;

const INDEX_MEDIA_TYPES: [&str; 2] = [
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

const MANIFEST_MEDIA_TYPES: [&str; 2] = [
    crate::image::MANIFEST_MEDIA_TYPE,
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// The layer media types kiln unpacks, with their compression.
const LAYER_MEDIA_TYPES: [(&str, Compression); 6] = [
    ("application/vnd.oci.image.layer.v1.tar", Compression::None),
    (
        "application/vnd.oci.image.layer.v1.tar+gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.oci.image.layer.v1.tar+zstd",
        Compression::Zstd,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar",
        Compression::None,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        Compression::Gzip,
    ),
    (
        "application/vnd.docker.image.rootfs.diff.tar.zstd",
        Compression::Zstd,
    ),
];

/// Why an image could not be loaded. `input` is the file, directory or `standard input`
/// being loaded; `name` a path inside it.
#[derive(Debug, Error)]
pub enum LoadError {
    /// A file of the input cannot be read.
    #[error("cannot read {name} of {input}")]
    Read {
        /// The input.
        input: Box<str>,
        /// The file inside it.
        name: Box<str>,
        /// What the system said.
        #[source]
        source: io::Error,
    },
    /// The input stream is not a complete tar archive.
    #[error("cannot read {input} as a tar archive (plain, gzip, zstd, bzip2 or xz): it is truncated or corrupt")]
    Archive {
        /// The input.
        input: Box<str>,
        /// What the reader said.
        #[source]
        source: io::Error,
    },
    /// An entry of the archive is named outside the archive's root.
    #[error("archive entry {name:?} of {input} leaves the archive: expected a relative path without '..' above the root")]
    EntryOutside {
        /// The input.
        input: Box<str>,
        /// The entry's name as written.
        name: Box<str>,
    },
    /// A JSON document of the input does not parse.
    #[error("{name} of {input} is not a valid {what}")]
    BadJson {
        /// The input.
        input: Box<str>,
        /// The file inside it.
        name: Box<str>,
        /// What it should have been.
        what: &'static str,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A JSON document of the input is too large to be one.
    #[error("{name} of {input} is larger than {limit} bytes: expected a {what}")]
    TooLarge {
        /// The input.
        input: Box<str>,
        /// The file inside it.
        name: Box<str>,
        /// What it should have been.
        what: &'static str,
        /// The limit.
        limit: u64,
    },
    /// The input is neither an OCI layout nor a docker archive.
    #[error("{input} holds neither an OCI image layout (oci-layout, index.json) nor a docker save manifest.json")]
    UnknownFormat {
        /// The input.
        input: Box<str>,
    },
    /// The input names no image at all.
    #[error("{input} holds no image: its index lists no manifests")]
    NoImages {
        /// The input.
        input: Box<str>,
    },
    /// A file the input's documents name is not in it.
    #[error("{what} {name} is missing from {input}")]
    Missing {
        /// The input.
        input: Box<str>,
        /// What the file is (manifest, config, layer).
        what: &'static str,
        /// Its name in the input.
        name: Box<str>,
    },
    /// A blob's bytes do not have the digest its descriptor (or file name) gives.
    #[error("{name} of {input} is corrupt: expected digest {expected}, found {found}")]
    DigestMismatch {
        /// The input.
        input: Box<str>,
        /// Its name in the input.
        name: Box<str>,
        /// The digest promised.
        expected: Digest,
        /// The digest of its bytes.
        found: Digest,
    },
    /// A blob's length is not the size its descriptor gives.
    #[error(
        "{what} {digest} of {input} has the wrong size: expected {expected} bytes, found {found}"
    )]
    SizeMismatch {
        /// The input.
        input: Box<str>,
        /// What the blob is.
        what: &'static str,
        /// Its digest.
        digest: Digest,
        /// The size promised.
        expected: u64,
        /// Its length.
        found: u64,
    },
    /// A layer's uncompressed bytes are not the layer the config lists.
    #[error("layer {index} of {input} does not match the image config: expected diff_id {expected}, found {found}")]
    DiffIdMismatch {
        /// The input.
        input: Box<str>,
        /// The layer's position, 0 for the base layer.
        index: usize,
        /// The diff_id the config lists.
        expected: Digest,
        /// The digest of the uncompressed layer.
        found: Digest,
    },
    /// The config lists a different number of diff_ids than the manifest has layers.
    #[error("config {config} of {input} lists {diff_ids} diff_ids for {layers} layers: expected one per layer")]
    LayerCount {
        /// The input.
        input: Box<str>,
        /// The config's digest.
        config: Digest,
        /// How many layers the manifest (or manifest.json) has.
        layers: usize,
        /// How many diff_ids the config lists.
        diff_ids: usize,
    },
    /// A document or layer has a media type kiln cannot use.
    #[error("{what} {digest} of {input} has media type {found:?}: expected one of {expected}")]
    MediaType {
        /// The input.
        input: Box<str>,
        /// What the blob is.
        what: &'static str,
        /// Its digest.
        digest: String,
        /// The media type found.
        found: String,
        /// The media types accepted.
        expected: String,
    },
    /// A compressed layer does not decompress.
    #[error("cannot decompress layer {digest} of {input}")]
    Decompress {
        /// The input.
        input: Box<str>,
        /// The layer's digest.
        digest: Digest,
        /// What the decoder said.
        #[source]
        source: io::Error,
    },
    /// A digest in the input is not a sha256 digest.
    #[error("unsupported digest {found:?} in {input}: expected sha256:<64 lower-case hex digits>")]
    BadDigest {
        /// The input.
        input: Box<str>,
        /// The text found.
        found: String,
        /// Why it was rejected.
        #[source]
        source: DigestError,
    },
    /// No image in the input matches what was asked for.
    #[error("no image {wanted:?} in {input}: expected one of {available:?}")]
    NoSuchImage {
        /// The input.
        input: Box<str>,
        /// The tag, digest or platform asked for.
        wanted: String,
        /// What the input names.
        available: Vec<String>,
    },
    /// The input holds several images and none was chosen.
    #[error("{input} holds {count} images: name one with :TAG or @sha256:DIGEST")]
    Ambiguous {
        /// The input.
        input: Box<str>,
        /// How many.
        count: usize,
    },
    /// The store refused to stage or keep something (its error names the path).
    #[error("cannot store the loaded images")]
    Store(#[source] StoreError),
}

/// The result type of loading.
pub type Result<T> = std::result::Result<T, LoadError>;

/// One image [`load_archive`] or [`load_dir`] put in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// The manifest's descriptor; its digest is the image's id in the store.
    pub manifest: Descriptor,
    /// The config's digest (what docker calls the image id).
    pub config: Digest,
    /// The names it was tagged with, in the order the input gives them.
    pub names: Vec<Reference>,
}

/// Loads every image of the tar stream `input` (named `input_name` in errors) into `store`
/// and tags each with the names the archive gives it, as `docker load` does.
///
/// # Errors
/// [`LoadError`]: an unreadable, truncated or unknown archive, a digest, size or diff_id that
/// does not match, an unsupported media type. The store is unchanged after an error in
/// reading or verifying; an I/O error while storing can leave verified blobs that nothing
/// holds, which gc removes.
pub fn load_archive(store: &Store, input: impl Read, input_name: &str) -> Result<Vec<LoadedImage>> {
    let files = Files::stage(store, input, input_name)?;
    let plan = files.plan_all(store)?;
    files.commit(store, &plan)
}

/// Loads every image of the OCI layout directory `dir` into `store`, tagging each with the
/// name its `index.json` entry carries (`io.containerd.image.name`, or a full reference in
/// `org.opencontainers.image.ref.name`).
///
/// # Errors
/// As [`load_archive`].
pub fn load_dir(store: &Store, dir: &Path) -> Result<Vec<LoadedImage>> {
    let files = Files::dir(dir);
    let plan = files.plan_all(store)?;
    files.commit(store, &plan)
}

/// Loads the image `selector` (a tag, `sha256:…` digest, or `None` for the only one) of the
/// OCI layout directory `dir` into `store` without tagging it; returns its manifest digest.
///
/// # Errors
/// As [`load_archive`], plus [`LoadError::NoSuchImage`] and [`LoadError::Ambiguous`].
pub fn import_oci_layout(store: &Store, dir: &Path, selector: Option<&str>) -> Result<Digest> {
    let files = Files::dir(dir);
    let plan = files.plan_selected(store, selector)?;
    files.commit_untagged(store, plan)
}

/// Loads the image `selector` (as for [`import_oci_layout`]) of a tarball (`docker save`, or
/// an OCI layout tar) into `store` without tagging it; returns its manifest digest.
///
/// # Errors
/// As [`import_oci_layout`].
pub fn import_archive(store: &Store, archive: &Path, selector: Option<&str>) -> Result<Digest> {
    let input = archive.display().to_string();
    let file = File::open(archive).map_err(|source| LoadError::Read {
        input: input.as_str().into(),
        name: input.as_str().into(),
        source,
    })?;
    let files = Files::stage(store, file, &input)?;
    let plan = files.plan_selected(store, selector)?;
    files.commit_untagged(store, plan)
}

/// How a layer blob is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The compression of a layer of `media_type`, or `None` if kiln cannot unpack it.
    fn of_media_type(media_type: &str) -> Option<Compression> {
        LAYER_MEDIA_TYPES
            .iter()
            .find(|(known, _)| *known == media_type)
            .map(|(_, compression)| *compression)
    }

    /// The compression `head` (a file's first bytes) shows by its magic number.
    fn sniff(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The OCI media type of a layer compressed so.
    fn oci_media_type(self) -> &'static str {
        match self {
            Compression::None => crate::image::LAYER_MEDIA_TYPE,
            Compression::Gzip => "application/vnd.oci.image.layer.v1.tar+gzip",
            Compression::Zstd => "application/vnd.oci.image.layer.v1.tar+zstd",
        }
    }
}

/// Wraps a tar stream in the decoder its first bytes call for (`docker load` takes gzip,
/// bzip2 and xz; zstd is what `kiln save --compression zstd` users will try).
fn decompressed<'a>(mut input: impl Read + 'a) -> io::Result<Box<dyn Read + 'a>> {
    let mut head = Vec::with_capacity(6);
    input.by_ref().take(6).read_to_end(&mut head)?;
    let whole = io::Cursor::new(head.clone()).chain(input);
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(whole))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(whole)?)
    } else if head.starts_with(b"BZh") {
        Box::new(bzip2::read::MultiBzDecoder::new(whole))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Box::new(xz2::read::XzDecoder::new_multi_decoder(whole))
    } else {
        Box::new(whole)
    })
}

/// The normal form of an archive entry name: `/`-separated, no `.`, empty or leading `/`
/// parts, `..` applied; `None` if `..` climbs above the root.
fn normalize(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            part => parts.push(part),
        }
    }
    Some(parts.join("/"))
}

/// A file of a staged archive.
#[derive(Debug)]
enum Entry {
    /// A regular file, staged at this path.
    File(PathBuf),
    /// A symbolic or hard link to another entry (normalized name).
    Link(String),
}

/// Where the input's files are: a directory as it is, or a tarball staged in the store.
enum Files {
    Dir {
        root: PathBuf,
        input: String,
    },
    Staged {
        /// Holds the staged files; removed when dropped.
        _dir: tempfile::TempDir,
        entries: HashMap<String, Entry>,
        input: String,
    },
}

/// A blob of the input, checked: where it is and what it is.
#[derive(Debug, Clone)]
struct Checked {
    path: PathBuf,
    digest: Digest,
}

/// One image ready to commit: every blob verified.
#[derive(Debug)]
struct Planned {
    /// The manifest's descriptor as it will be stored and tagged.
    manifest: Descriptor,
    /// The manifest's bytes: read from the input (OCI), or made here (docker's classic
    /// layout has none).
    manifest_bytes: Vec<u8>,
    /// The digests the import record holds: manifest, config, layers.
    refs: Vec<Digest>,
    config: Digest,
    /// The config and layer blobs to copy in.
    blobs: Vec<Checked>,
    names: Vec<Reference>,
}

/// A layer to verify: its blob, its media type's compression, the diff_id the config lists.
#[derive(Debug, Clone)]
struct LayerCheck {
    name: String,
    path: PathBuf,
    compression: Compression,
    /// The blob digest and size the descriptor promises (`None` in docker's classic layout,
    /// where a layer is named by its v1 id).
    expected: Option<(Digest, u64)>,
    diff_id: Digest,
    index: usize,
}

/// `index.json` or a nested image index.
#[derive(Debug, Deserialize)]
struct IndexDoc {
    #[serde(default)]
    manifests: Vec<DescriptorDoc>,
}

/// A manifest, as far as loading needs it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ManifestDoc {
    #[serde(default)]
    media_type: Option<String>,
    config: DescriptorDoc,
    #[serde(default)]
    layers: Vec<DescriptorDoc>,
}

/// A descriptor as written, digest still text so a bad one is reported with its place.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct DescriptorDoc {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    platform: Option<PlatformDoc>,
}

#[derive(Debug, Clone, Deserialize)]
struct PlatformDoc {
    architecture: String,
    os: String,
}

/// One image of a docker `manifest.json`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl DescriptorDoc {
    /// The names an index entry gives its image: containerd's annotation, then OCI's ref
    /// name when it is a whole reference (a bare tag such as `latest` names no repository).
    fn names(&self) -> Vec<Reference> {
        let full = |text: &str| {
            Reference::parse(text)
                .ok()
                .filter(|r| r.tag().is_some() && r.digest().is_none())
        };
        let mut names = Vec::new();
        if let Some(name) = self.annotations.get(ANNOTATION_CONTAINERD_NAME) {
            names.extend(full(name));
        }
        if let Some(name) = self.annotations.get(ANNOTATION_REF_NAME) {
            if name.contains([':', '/']) {
                names.extend(full(name));
            }
        }
        names.dedup();
        names
    }

    /// What a build-context selector matches: the digest, the full name or its tag.
    fn matches(&self, wanted: &str) -> bool {
        if wanted.starts_with("sha256:") {
            return self.digest == wanted;
        }
        let wanted_ref = Reference::parse(wanted).ok();
        self.annotations
            .get(ANNOTATION_REF_NAME)
            .is_some_and(|name| {
                name == wanted || name.rsplit_once(':').is_some_and(|(_, tag)| tag == wanted)
            })
            || self
                .names()
                .iter()
                .any(|name| Some(name) == wanted_ref.as_ref())
    }
}

impl Files {
    fn dir(root: &Path) -> Files {
        Files::Dir {
            root: root.to_path_buf(),
            input: root.display().to_string(),
        }
    }

    /// Stages every regular file of the tar stream `input` in a temp dir of the store,
    /// remembering links by name; rejects a truncated or unreadable stream.
    fn stage(store: &Store, input: impl Read, name: &str) -> Result<Files> {
        let archive_error = |source| LoadError::Archive {
            input: name.into(),
            source,
        };
        let dir = store.temp_dir().map_err(LoadError::Store)?;
        let mut entries = HashMap::new();
        let reader = decompressed(input).map_err(archive_error)?;
        let mut archive = tar::Archive::new(reader);
        for (count, entry) in archive.entries().map_err(archive_error)?.enumerate() {
            let mut entry = entry.map_err(archive_error)?;
            let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
            let outside = || LoadError::EntryOutside {
                input: name.into(),
                name: raw.as_str().into(),
            };
            let path = normalize(&raw).ok_or_else(outside)?;
            let kind = entry.header().entry_type();
            let staged = if kind.is_file() || kind == tar::EntryType::Continuous {
                let file = dir.path().join(count.to_string());
                let mut out = File::create(&file).map_err(|source| LoadError::Read {
                    input: name.into(),
                    name: raw.as_str().into(),
                    source,
                })?;
                let copied = io::copy(&mut entry, &mut out).map_err(archive_error)?;
                // The tar reader ends an entry silently where the stream ends.
                if copied != entry.size() {
                    return Err(archive_error(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "entry {raw:?} ends after {copied} of {} bytes",
                            entry.size()
                        ),
                    )));
                }
                Entry::File(file)
            } else if kind.is_symlink() || kind.is_hard_link() {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                // A symlink is relative to its directory; a hard link names an entry.
                let joined = match (kind.is_symlink(), path.rsplit_once('/')) {
                    (true, Some((parent, _))) if !target.starts_with('/') => {
                        format!("{parent}/{target}")
                    }
                    _ => target,
                };
                Entry::Link(normalize(&joined).ok_or_else(outside)?)
            } else {
                continue;
            };
            entries.insert(path, staged);
        }
        Ok(Files::Staged {
            _dir: dir,
            entries,
            input: name.into(),
        })
    }

    fn input(&self) -> &str {
        match self {
            Files::Dir { input, .. } | Files::Staged { input, .. } => input,
        }
    }

    /// The file the input holds under `name`, links followed; `None` if there is none.
    fn path(&self, name: &str) -> Option<PathBuf> {
        let mut name = normalize(name)?;
        match self {
            Files::Dir { root, .. } => Some(root.join(name)).filter(|p| p.is_file()),
            Files::Staged { entries, .. } => {
                for _ in 0..MAX_LINK_DEPTH {
                    match entries.get(&name)? {
                        Entry::File(path) => return Some(path.clone()),
                        Entry::Link(target) => name = target.clone(),
                    }
                }
                None
            }
        }
    }

    fn require(&self, name: &str, what: &'static str) -> Result<PathBuf> {
        self.path(name).ok_or_else(|| LoadError::Missing {
            input: self.input().into(),
            what,
            name: name.into(),
        })
    }

    fn read_error(&self, name: &str) -> impl FnOnce(io::Error) -> LoadError {
        let input: Box<str> = self.input().into();
        let name: Box<str> = name.into();
        move |source| LoadError::Read {
            input,
            name,
            source,
        }
    }

    /// Reads the document `name`, at most [`MAX_DOCUMENT`] bytes of it.
    fn read_document(&self, name: &str, what: &'static str) -> Result<Vec<u8>> {
        let path = self.require(name, what)?;
        let file = File::open(&path).map_err(self.read_error(name))?;
        let mut bytes = Vec::new();
        file.take(MAX_DOCUMENT + 1)
            .read_to_end(&mut bytes)
            .map_err(self.read_error(name))?;
        if bytes.len() as u64 > MAX_DOCUMENT {
            return Err(LoadError::TooLarge {
                input: self.input().into(),
                name: name.into(),
                what,
                limit: MAX_DOCUMENT,
            });
        }
        Ok(bytes)
    }

    fn parse<T: serde::de::DeserializeOwned>(
        &self,
        bytes: &[u8],
        name: &str,
        what: &'static str,
    ) -> Result<T> {
        serde_json::from_slice(bytes).map_err(|source| LoadError::BadJson {
            input: self.input().into(),
            name: name.into(),
            what,
            source,
        })
    }

    fn digest(&self, text: &str) -> Result<Digest> {
        text.parse().map_err(|source| LoadError::BadDigest {
            input: self.input().into(),
            found: text.to_string(),
            source,
        })
    }

    /// Reads the small blob `descriptor` names and checks its digest and size.
    fn read_blob(&self, descriptor: &DescriptorDoc, what: &'static str) -> Result<Vec<u8>> {
        let digest = self.digest(&descriptor.digest)?;
        let name = blob_name(&digest);
        let bytes = self.read_document(&name, what)?;
        self.check(&name, &digest, &Digest::of(&bytes))?;
        self.check_size(what, &digest, descriptor.size, bytes.len() as u64)?;
        Ok(bytes)
    }

    fn check(&self, name: &str, expected: &Digest, found: &Digest) -> Result<()> {
        if expected == found {
            return Ok(());
        }
        Err(LoadError::DigestMismatch {
            input: self.input().into(),
            name: name.into(),
            expected: *expected,
            found: *found,
        })
    }

    fn check_size(
        &self,
        what: &'static str,
        digest: &Digest,
        expected: u64,
        found: u64,
    ) -> Result<()> {
        if expected == found {
            return Ok(());
        }
        Err(LoadError::SizeMismatch {
            input: self.input().into(),
            what,
            digest: *digest,
            expected,
            found,
        })
    }

    fn is_oci(&self) -> bool {
        self.path("oci-layout").is_some() && self.path("index.json").is_some()
    }

    /// Every image of the input, verified. An OCI layout is read through `index.json`
    /// (docker 25's archives have both; the OCI side keeps the manifest digests), with names
    /// from docker's `manifest.json` added for images whose index entry has none.
    fn plan_all(&self, store: &Store) -> Result<Vec<Planned>> {
        let mut plans = Vec::new();
        if self.is_oci() {
            let index = self.read_index()?;
            if index.manifests.is_empty() {
                return Err(LoadError::NoImages {
                    input: self.input().into(),
                });
            }
            let docker_names = self.docker_names()?;
            for entry in &index.manifests {
                let manifest = self.manifest_for_platform(entry)?;
                let mut names = entry.names();
                if let Some(plan) = plans
                    .iter_mut()
                    .find(|p: &&mut Planned| p.manifest.digest.to_string() == manifest.digest)
                {
                    plan.names.extend(names);
                    continue;
                }
                let mut plan = self.plan_manifest(store, &manifest)?;
                if names.is_empty() {
                    names = docker_names.get(&plan.config).cloned().unwrap_or_default();
                }
                plan.names = names;
                plans.push(plan);
            }
        } else {
            for entry in self.docker_entries()? {
                plans.push(self.plan_docker(&entry)?);
            }
        }
        for plan in &mut plans {
            dedup_keep_order(&mut plan.names);
        }
        Ok(plans)
    }

    /// The one image `selector` names (see [`import_oci_layout`]), verified.
    fn plan_selected(&self, store: &Store, selector: Option<&str>) -> Result<Planned> {
        let input: Box<str> = self.input().into();
        if self.is_oci() {
            let index = self.read_index()?;
            let found = match selector {
                None => match index.manifests.as_slice() {
                    [only] => Some(only),
                    [] => return Err(LoadError::NoImages { input }),
                    many => {
                        return Err(LoadError::Ambiguous {
                            input,
                            count: many.len(),
                        })
                    }
                },
                Some(wanted) => index.manifests.iter().find(|e| e.matches(wanted)),
            };
            let entry = found.ok_or_else(|| LoadError::NoSuchImage {
                input,
                wanted: selector.unwrap_or_default().to_string(),
                available: index
                    .manifests
                    .iter()
                    .map(|e| {
                        e.annotations
                            .get(ANNOTATION_REF_NAME)
                            .cloned()
                            .unwrap_or_else(|| e.digest.clone())
                    })
                    .collect(),
            })?;
            let manifest = self.manifest_for_platform(entry)?;
            return self.plan_manifest(store, &manifest);
        }
        let entries = self.docker_entries()?;
        let tags = |entry: &DockerEntry| entry.repo_tags.clone().unwrap_or_default();
        let entry = match (entries.as_slice(), selector) {
            ([only], None) => only,
            (_, None) => {
                return Err(LoadError::Ambiguous {
                    input,
                    count: entries.len(),
                })
            }
            (_, Some(wanted)) => entries
                .iter()
                .find(|entry| tags(entry).iter().any(|tag| tag_matches(tag, wanted)))
                .ok_or_else(|| LoadError::NoSuchImage {
                    input,
                    wanted: wanted.to_string(),
                    available: entries.iter().flat_map(tags).collect(),
                })?,
        };
        self.plan_docker(entry)
    }

    fn read_index(&self) -> Result<IndexDoc> {
        let what = "OCI image index";
        self.parse(&self.read_document("index.json", what)?, "index.json", what)
    }

    fn docker_entries(&self) -> Result<Vec<DockerEntry>> {
        if self.path("manifest.json").is_none() {
            return Err(LoadError::UnknownFormat {
                input: self.input().into(),
            });
        }
        let what = "docker save manifest";
        let entries: Vec<DockerEntry> = self.parse(
            &self.read_document("manifest.json", what)?,
            "manifest.json",
            what,
        )?;
        if entries.is_empty() {
            return Err(LoadError::NoImages {
                input: self.input().into(),
            });
        }
        Ok(entries)
    }

    /// Config digest → `RepoTags` of docker's `manifest.json`, when the input has one.
    fn docker_names(&self) -> Result<HashMap<Digest, Vec<Reference>>> {
        if self.path("manifest.json").is_none() {
            return Ok(HashMap::new());
        }
        let mut names = HashMap::new();
        for entry in self.docker_entries()? {
            let config = self.require(&entry.config, "config")?;
            let digest = digest_file(&config)
                .map_err(self.read_error(&entry.config))?
                .0;
            let tags = entry.repo_tags.unwrap_or_default();
            names.insert(
                digest,
                tags.iter()
                    .filter_map(|t| Reference::parse(t).ok())
                    .collect(),
            );
        }
        Ok(names)
    }

    /// The manifest descriptor `entry` leads to: itself, or for an index the entry for this
    /// machine's platform (the first real platform when none matches), verified on the way.
    fn manifest_for_platform(&self, entry: &DescriptorDoc) -> Result<DescriptorDoc> {
        let mut entry = entry.clone();
        for _ in 0..MAX_LINK_DEPTH {
            if !INDEX_MEDIA_TYPES.contains(&entry.media_type.as_str()) {
                return Ok(entry);
            }
            let bytes = self.read_blob(&entry, "image index")?;
            let index: IndexDoc = self.parse(&bytes, &entry.digest, "image index")?;
            let host = crate::graph::Platform::host();
            // Attestation manifests BuildKit adds sit under the platform unknown/unknown.
            let images: Vec<&DescriptorDoc> = index
                .manifests
                .iter()
                .filter(|m| m.platform.as_ref().map_or(true, |p| p.os != "unknown"))
                .collect();
            let chosen = images
                .iter()
                .find(|m| {
                    m.platform
                        .as_ref()
                        .is_some_and(|p| p.os == host.os && p.architecture == host.arch)
                })
                .or_else(|| images.first())
                .ok_or_else(|| LoadError::NoSuchImage {
                    input: self.input().into(),
                    wanted: host.to_string(),
                    available: Vec::new(),
                })?;
            entry = (*chosen).clone();
        }
        Err(LoadError::NoSuchImage {
            input: self.input().into(),
            wanted: crate::graph::Platform::host().to_string(),
            available: Vec::new(),
        })
    }

    /// Verifies an OCI (or docker v2) manifest, its config and its layers.
    fn plan_manifest(&self, store: &Store, descriptor: &DescriptorDoc) -> Result<Planned> {
        let digest = self.digest(&descriptor.digest)?;
        let bytes = self.read_blob(descriptor, "manifest")?;
        let manifest: ManifestDoc = self.parse(&bytes, &descriptor.digest, "image manifest")?;
        let media_type = manifest
            .media_type
            .clone()
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| descriptor.media_type.clone());
        if !MANIFEST_MEDIA_TYPES.contains(&media_type.as_str()) {
            return Err(LoadError::MediaType {
                input: self.input().into(),
                what: "manifest",
                digest: descriptor.digest.clone(),
                found: media_type,
                expected: MANIFEST_MEDIA_TYPES.join(", "),
            });
        }
        let config_digest = self.digest(&manifest.config.digest)?;
        let layer_digests = manifest
            .layers
            .iter()
            .map(|layer| self.digest(&layer.digest))
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<Digest> = [digest, config_digest]
            .into_iter()
            .chain(layer_digests.iter().copied())
            .collect();
        let mut stored = Descriptor::new(&media_type, digest, bytes.len() as u64);
        stored.annotations = BTreeMap::new();
        if already_loaded(store, &refs) {
            return Ok(Planned {
                manifest: stored,
                manifest_bytes: bytes,
                refs,
                config: config_digest,
                blobs: Vec::new(),
                names: Vec::new(),
            });
        }
        let config_bytes = self.read_blob(&manifest.config, "config")?;
        let config: ImageConfig =
            self.parse(&config_bytes, &manifest.config.digest, "image config")?;
        self.check_layer_count(&config_digest, manifest.layers.len(), &config)?;
        let mut checks = Vec::new();
        let layers = manifest.layers.iter().zip(&layer_digests);
        for (index, ((layer, layer_digest), diff_id)) in
            layers.zip(&config.rootfs.diff_ids).enumerate()
        {
            let layer_digest = *layer_digest;
            let compression = Compression::of_media_type(&layer.media_type).ok_or_else(|| {
                LoadError::MediaType {
                    input: self.input().into(),
                    what: "layer",
                    digest: layer.digest.clone(),
                    found: layer.media_type.clone(),
                    expected: LAYER_MEDIA_TYPES
                        .iter()
                        .map(|(m, _)| *m)
                        .collect::<Vec<_>>()
                        .join(", "),
                }
            })?;
            let name = blob_name(&layer_digest);
            checks.push(LayerCheck {
                path: self.require(&name, "layer")?,
                name,
                compression,
                expected: Some((layer_digest, layer.size)),
                diff_id: *diff_id,
                index,
            });
        }
        let mut blobs = vec![Checked {
            path: self.require(&blob_name(&config_digest), "config")?,
            digest: config_digest,
        }];
        blobs.extend(self.check_layers(&checks)?);
        Ok(Planned {
            manifest: stored,
            manifest_bytes: bytes,
            refs,
            config: config_digest,
            blobs,
            names: Vec::new(),
        })
    }

    /// Verifies an image of docker's `manifest.json` and makes the OCI manifest the store
    /// keeps for it (docker's classic layout has none).
    fn plan_docker(&self, entry: &DockerEntry) -> Result<Planned> {
        let config_path = self.require(&entry.config, "config")?;
        let config_bytes = self.read_document(&entry.config, "image config")?;
        let config_digest = Digest::of(&config_bytes);
        if let Some(named) = named_digest(&entry.config) {
            self.check(&entry.config, &named, &config_digest)?;
        }
        let config: ImageConfig = self.parse(&config_bytes, &entry.config, "image config")?;
        self.check_layer_count(&config_digest, entry.layers.len(), &config)?;
        let mut checks = Vec::new();
        for (index, (name, diff_id)) in entry.layers.iter().zip(&config.rootfs.diff_ids).enumerate()
        {
            let path = self.require(name, "layer")?;
            let mut head = Vec::new();
            File::open(&path)
                .and_then(|file| file.take(4).read_to_end(&mut head))
                .map_err(self.read_error(name))?;
            checks.push(LayerCheck {
                name: name.clone(),
                path,
                compression: Compression::sniff(&head),
                expected: None,
                diff_id: *diff_id,
                index,
            });
        }
        let mut layers = Vec::new();
        let mut blobs = vec![Checked {
            path: config_path,
            digest: config_digest,
        }];
        for (check, blob) in checks.iter().zip(self.check_layers(&checks)?) {
            if let Some(named) = named_digest(&check.name) {
                self.check(&check.name, &named, &blob.digest)?;
            }
            let size = std::fs::metadata(&blob.path)
                .map_err(self.read_error(&check.name))?
                .len();
            layers.push(Descriptor::new(
                check.compression.oci_media_type(),
                blob.digest,
                size,
            ));
            blobs.push(blob);
        }
        let manifest = Manifest::new(
            Descriptor::new(CONFIG_MEDIA_TYPE, config_digest, config_bytes.len() as u64),
            layers,
        );
        let bytes = canonical_json(&manifest);
        let digest = Digest::of(&bytes);
        let names = entry
            .repo_tags
            .iter()
            .flatten()
            .filter_map(|t| Reference::parse(t).ok())
            .collect();
        Ok(Planned {
            manifest: Descriptor::new(
                crate::image::MANIFEST_MEDIA_TYPE,
                digest,
                bytes.len() as u64,
            ),
            manifest_bytes: bytes,
            refs: std::iter::once(digest)
                .chain(blobs.iter().map(|b| b.digest))
                .collect(),
            config: config_digest,
            blobs,
            names,
        })
    }

    fn check_layer_count(&self, config: &Digest, layers: usize, image: &ImageConfig) -> Result<()> {
        let diff_ids = image.rootfs.diff_ids.len();
        if layers == diff_ids {
            return Ok(());
        }
        Err(LoadError::LayerCount {
            input: self.input().into(),
            config: *config,
            layers,
            diff_ids,
        })
    }

    /// Hashes every layer (in parallel: each is one read, compressed and uncompressed
    /// digests at once) and checks both digests and the size.
    fn check_layers(&self, checks: &[LayerCheck]) -> Result<Vec<Checked>> {
        checks
            .par_iter()
            .map(|check| {
                let (digest, size, diff_id) = layer_digests(&check.path, check.compression)
                    .map_err(|error| match error {
                        LayerReadError::Read(source) => self.read_error(&check.name)(source),
                        LayerReadError::Decode(source, digest) => LoadError::Decompress {
                            input: self.input().into(),
                            digest: check.expected.map_or(digest, |(d, _)| d),
                            source,
                        },
                    })?;
                if let Some((expected, expected_size)) = check.expected {
                    self.check(&check.name, &expected, &digest)?;
                    self.check_size("layer", &digest, expected_size, size)?;
                }
                if diff_id != check.diff_id {
                    return Err(LoadError::DiffIdMismatch {
                        input: self.input().into(),
                        index: check.index,
                        expected: check.diff_id,
                        found: diff_id,
                    });
                }
                Ok(Checked {
                    path: check.path.clone(),
                    digest,
                })
            })
            .collect()
    }

    /// Stores every planned image and tags it; see the module doc for the order.
    fn commit(&self, store: &Store, plans: &[Planned]) -> Result<Vec<LoadedImage>> {
        // gc runs under the exclusive lock, so nothing stored here is collected before the
        // record and tags that hold it are written.
        let _lock = store.lock_shared().map_err(LoadError::Store)?;
        for plan in plans {
            // A named image is held by its tags, so `kiln rmi` frees it as it frees a built
            // one; only an image without a name needs the record to outlive the next gc (as
            // docker keeps an untagged loaded image).
            self.store_image(store, plan, plan.names.is_empty())?;
        }
        let mut loaded = Vec::new();
        for plan in plans {
            for name in &plan.names {
                store
                    .tag(name, &plan.manifest.to_oci())
                    .map_err(LoadError::Store)?;
            }
            loaded.push(LoadedImage {
                manifest: plan.manifest.clone(),
                config: plan.config,
                names: plan.names.clone(),
            });
        }
        Ok(loaded)
    }

    fn commit_untagged(&self, store: &Store, plan: Planned) -> Result<Digest> {
        let _lock = store.lock_shared().map_err(LoadError::Store)?;
        self.store_image(store, &plan, true)?;
        Ok(plan.manifest.digest)
    }

    /// Copies an image's verified blobs into the store, then its manifest, then (when
    /// `keep`) the import record.
    fn store_image(&self, store: &Store, plan: &Planned, keep: bool) -> Result<()> {
        for blob in &plan.blobs {
            if store.has_blob(&blob.digest) {
                continue;
            }
            let name = blob_name(&blob.digest);
            let mut file = File::open(&blob.path).map_err(self.read_error(&name))?;
            match self {
                // A staged file sits in this process's own temp dir and was hashed after it
                // was written, so it is copied without hashing it again.
                Files::Staged { .. } => {
                    let mut writer = store
                        .blob_writer_hashed_by_caller()
                        .map_err(LoadError::Store)?;
                    io::copy(&mut file, &mut writer).map_err(self.read_error(&name))?;
                    writer.commit_as(&blob.digest).map_err(LoadError::Store)?;
                }
                // A directory's file may change after it was checked: hash what is copied.
                Files::Dir { .. } => {
                    let mut writer = store.blob_writer().map_err(LoadError::Store)?;
                    io::copy(&mut file, &mut writer).map_err(self.read_error(&name))?;
                    writer
                        .commit_expecting(&blob.digest)
                        .map_err(LoadError::Store)?;
                }
            }
        }
        let (digest, _) = store
            .put_blob(&plan.manifest_bytes)
            .map_err(LoadError::Store)?;
        debug_assert_eq!(digest, plan.manifest.digest);
        if !keep {
            return Ok(());
        }
        let value = self.input().to_string();
        // Loading the same image from the same place again writes nothing.
        let known = store
            .get_record::<String>(IMPORT_KIND, &digest)
            .map_err(LoadError::Store)?;
        if known.as_ref() == Some(&value) {
            return Ok(());
        }
        store
            .put_record(IMPORT_KIND, &digest, &plan.refs, &value)
            .map_err(LoadError::Store)
    }
}

/// True if and only if the manifest `refs[0]` was loaded before (its import record exists,
/// written only after every blob was verified) and the store still holds every blob.
fn already_loaded(store: &Store, refs: &[Digest]) -> bool {
    let Some(manifest) = refs.first() else {
        return false;
    };
    matches!(
        store.get_record::<serde_json::Value>(IMPORT_KIND, manifest),
        Ok(Some(_))
    ) && refs.iter().all(|digest| store.has_blob(digest))
}

/// `blobs/sha256/<hex>`.
fn blob_name(digest: &Digest) -> String {
    format!("blobs/sha256/{}", digest.hex())
}

/// The digest a docker archive's file name promises: `blobs/sha256/<hex>` (docker 25) or
/// `<hex>.json` (a classic config); `None` for names that promise none (`<v1 id>/layer.tar`).
fn named_digest(name: &str) -> Option<Digest> {
    let name = normalize(name)?;
    let hex = match name.rsplit_once('/') {
        Some((parent, hex)) if parent.ends_with("blobs/sha256") => hex,
        Some(_) => return None,
        None => name.strip_suffix(".json")?,
    };
    Digest::from_hex(hex).ok()
}

/// True if `tag` (as docker writes it, `app:1` or `docker.io/library/app:1`) names `wanted`.
fn tag_matches(tag: &str, wanted: &str) -> bool {
    let normalize =
        |text: &str| Reference::parse(text).map_or_else(|_| text.to_string(), |r| r.to_string());
    normalize(tag) == normalize(wanted)
}

fn dedup_keep_order(names: &mut Vec<Reference>) {
    let mut seen = Vec::new();
    names.retain(|name| {
        let new = !seen.contains(name);
        if new {
            seen.push(name.clone());
        }
        new
    });
}

/// Returns the digest and length of a file.
fn digest_file(path: &Path) -> io::Result<(Digest, u64)> {
    let mut writer = DigestWriter::new(io::sink());
    io::copy(&mut File::open(path)?, &mut writer)?;
    let (_, digest, size) = writer.finish();
    Ok((digest, size))
}

/// Why a layer could not be hashed: its file, or its compressed stream (with the digest of
/// what was read, for the message when no descriptor names it).
enum LayerReadError {
    Read(io::Error),
    Decode(io::Error, Digest),
}

/// Reads a layer blob once and returns its digest, its length and the digest of its
/// uncompressed bytes (the diff_id).
fn layer_digests(
    path: &Path,
    compression: Compression,
) -> std::result::Result<(Digest, u64, Digest), LayerReadError> {
    let file = File::open(path).map_err(LayerReadError::Read)?;
    let raw = DigestReader::new(file);
    let mut buffered = BufReader::with_capacity(1 << 17, raw);
    let mut uncompressed = DigestWriter::new(io::sink());
    let decoded = match compression {
        Compression::None => io::copy(&mut buffered, &mut uncompressed),
        Compression::Gzip => {
            // Several gzip members in a row are one valid stream (parallel compressors
            // write them).
            io::copy(
                &mut flate2::bufread::MultiGzDecoder::new(&mut buffered),
                &mut uncompressed,
            )
        }
        Compression::Zstd => zstd::stream::read::Decoder::with_buffer(&mut buffered)
            .and_then(|mut decoder| io::copy(&mut decoder, &mut uncompressed)),
    };
    let finish = |buffered: BufReader<DigestReader<File>>| {
        let (_, digest, size) = buffered.into_inner().finish();
        (digest, size)
    };
    if let Err(error) = decoded {
        // Hash the rest so the message can name the blob by its digest.
        let _ = io::copy(&mut buffered, &mut io::sink());
        return Err(LayerReadError::Decode(error, finish(buffered).0));
    }
    // The decoder stops at the end of the compressed stream; the blob's digest covers every
    // byte after it too.
    loop {
        let n = buffered.fill_buf().map_err(LayerReadError::Read)?.len();
        if n == 0 {
            break;
        }
        buffered.consume(n);
    }
    let (_, diff_id, _) = uncompressed.finish();
    let (digest, size) = finish(buffered);
    let diff_id = match compression {
        Compression::None => digest,
        _ => diff_id,
    };
    Ok((digest, size, diff_id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn tags_match_in_short_and_full_form() {
        assert!(tag_matches("app:1", "docker.io/library/app:1"));
        assert!(tag_matches("docker.io/library/app:latest", "app"));
        assert!(!tag_matches("app:1", "app:2"));
    }

    #[test]
    fn entry_names_normalize_inside_the_root() {
        let table: &[(&str, Option<&str>)] = &[
            ("a/./b", Some("a/b")),
            ("/abs/layer.tar", Some("abs/layer.tar")),
            ("./manifest.json", Some("manifest.json")),
            ("x/../y", Some("y")),
            ("id/../../etc/passwd", None),
            ("..", None),
            ("blobs//sha256/", Some("blobs/sha256")),
        ];
        for (name, expected) in table {
            assert_eq!(normalize(name).as_deref(), *expected, "{name}");
        }
    }

    #[test]
    fn file_names_promise_digests() {
        let hex = "ab".repeat(32);
        let digest = Digest::from_hex(&hex).ok();
        let table: &[(String, Option<Digest>)] = &[
            (format!("blobs/sha256/{hex}"), digest),
            (format!("./blobs/sha256/{hex}"), digest),
            (format!("{hex}.json"), digest),
            (format!("{hex}/layer.tar"), None),
            ("config.json".to_string(), None),
            (format!("other/{hex}"), None),
        ];
        for (name, expected) in table {
            assert_eq!(named_digest(name), *expected, "{name}");
        }
    }

    #[test]
    fn media_types_and_magic_give_compression() {
        let table: &[(&str, Option<Compression>)] = &[
            (
                "application/vnd.oci.image.layer.v1.tar",
                Some(Compression::None),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.v1.tar+zstd",
                Some(Compression::Zstd),
            ),
            (
                "application/vnd.docker.image.rootfs.diff.tar.gzip",
                Some(Compression::Gzip),
            ),
            (
                "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
                None,
            ),
            (
                "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                None,
            ),
            ("text/plain", None),
        ];
        for (media_type, expected) in table {
            assert_eq!(
                Compression::of_media_type(media_type),
                *expected,
                "{media_type}"
            );
        }
        assert_eq!(Compression::sniff(&[0x1f, 0x8b, 8, 0]), Compression::Gzip);
        assert_eq!(
            Compression::sniff(&[0x28, 0xb5, 0x2f, 0xfd]),
            Compression::Zstd
        );
        assert_eq!(Compression::sniff(b"ustar"), Compression::None);
        assert_eq!(Compression::sniff(b""), Compression::None);
    }

    fn write_temp(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(bytes).expect("writes");
        file
    }

    #[test]
    fn layer_digests_cover_compressed_and_uncompressed_bytes() {
        let tar = b"pretend this is a tar".repeat(1000);
        let mut gzip = Vec::new();
        for chunk in tar.chunks(5000) {
            // Independent members, as a parallel compressor writes them.
            let mut encoder =
                flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            encoder.write_all(chunk).expect("compresses");
            gzip.extend(encoder.finish().expect("finishes"));
        }
        let zstd = zstd::encode_all(tar.as_slice(), 3).expect("compresses");
        let table: &[(&[u8], Compression)] = &[
            (&tar, Compression::None),
            (&gzip, Compression::Gzip),
            (&zstd, Compression::Zstd),
        ];
        for (bytes, compression) in table {
            let file = write_temp(bytes);
            let Ok((digest, size, diff_id)) = layer_digests(file.path(), *compression) else {
                panic!("{compression:?} layer hashes");
            };
            assert_eq!(digest, Digest::of(bytes), "{compression:?}");
            assert_eq!(size, bytes.len() as u64, "{compression:?}");
            assert_eq!(diff_id, Digest::of(&tar), "{compression:?}");
        }
        let truncated = write_temp(&gzip[..gzip.len() / 2]);
        assert!(matches!(
            layer_digests(truncated.path(), Compression::Gzip),
            Err(LayerReadError::Decode(..))
        ));
        let garbage = write_temp(b"not zstd at all");
        assert!(matches!(
            layer_digests(garbage.path(), Compression::Zstd),
            Err(LayerReadError::Decode(..))
        ));
    }

    #[test]
    fn index_entries_name_images() {
        let entry = |annotations: &[(&str, &str)]| DescriptorDoc {
            media_type: crate::image::MANIFEST_MEDIA_TYPE.to_string(),
            digest: Digest::of(b"m").to_string(),
            size: 1,
            annotations: annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            platform: None,
        };
        let names = |e: &DescriptorDoc| {
            e.names()
                .iter()
                .map(Reference::familiar)
                .collect::<Vec<_>>()
        };
        let both = entry(&[
            (ANNOTATION_CONTAINERD_NAME, "docker.io/library/app:1"),
            (ANNOTATION_REF_NAME, "1"),
        ]);
        assert_eq!(names(&both), ["app:1"]);
        assert!(both.matches("1"));
        assert!(both.matches("app:1"));
        assert!(both.matches(&Digest::of(b"m").to_string()));
        assert!(!both.matches("2"));
        let full_ref = entry(&[(ANNOTATION_REF_NAME, "example.com/team/app:2")]);
        assert_eq!(names(&full_ref), ["example.com/team/app:2"]);
        assert!(full_ref.matches("2"));
        let bare_tag = entry(&[(ANNOTATION_REF_NAME, "latest")]);
        assert!(names(&bare_tag).is_empty());
        assert!(names(&entry(&[])).is_empty());
    }

    #[test]
    fn compressed_streams_are_unwrapped() {
        let tar = b"ustar body".to_vec();
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gzip.write_all(&tar).expect("compresses");
        let gzip = gzip.finish().expect("finishes");
        let zstd = zstd::encode_all(tar.as_slice(), 1).expect("compresses");
        let mut bzip = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bzip.write_all(&tar).expect("compresses");
        let bzip = bzip.finish().expect("finishes");
        let mut xz = xz2::write::XzEncoder::new(Vec::new(), 1);
        xz.write_all(&tar).expect("compresses");
        let xz = xz.finish().expect("finishes");
        for (name, bytes) in [
            ("tar", &tar),
            ("gzip", &gzip),
            ("zstd", &zstd),
            ("bzip2", &bzip),
            ("xz", &xz),
        ] {
            let mut out = Vec::new();
            decompressed(bytes.as_slice())
                .and_then(|mut r| r.read_to_end(&mut out))
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(out, tar, "{name}");
        }
        let mut out = Vec::new();
        decompressed(&b"ab"[..])
            .and_then(|mut r| r.read_to_end(&mut out))
            .expect("short input");
        assert_eq!(out, b"ab");
    }
}
