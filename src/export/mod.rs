//! Export: images of the store out to files other tools read.
//!
//! Consumes images in the store (manifest digests and the names to give them) and export
//! options; produces
//!
//! - an image archive ([`archive`]): one tar (or directory) that is at the same time an OCI
//!   image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) and a `docker save` archive
//!   (`manifest.json`, `repositories`), so `docker load`, skopeo, containerd and umoci all
//!   accept the same file;
//! - compressed layer blobs ([`compress`]), made once per layer, algorithm and level and
//!   remembered in the store;
//! - the flattened root filesystem of an image ([`rootfs`]), as a directory or one tar.
//!
//! Every byte written is a function of the images and the options only: tar entries sorted,
//! fixed owners and times, gzip headers without time or name, compressed chunks cut at fixed
//! offsets whatever the number of threads. This module must never change an image in the
//! store (it only adds compressed blobs and their records) and never prints.

pub mod archive;
pub mod compress;
pub mod output;
pub mod rootfs;

use std::path::PathBuf;

use crate::digest::Digest;
use crate::layer::LayerError;
use crate::store::StoreError;

pub use archive::{save, ArchiveFormat, Destination, SaveImage, SaveSummary};
pub use compress::{Algorithm, Compression};
pub use output::{OutputKind, OutputProblem, OutputSpec};
pub use rootfs::{write_rootfs_dir, write_rootfs_tar};

/// Errors of the export stage.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The store could not be read or written.
    #[error("cannot export from the store")]
    Store(#[from] StoreError),
    /// A layer could not be read, flattened or written.
    #[error("cannot flatten the image's layers")]
    Layer(#[from] LayerError),
    /// Writing the output failed.
    #[error("cannot write {what} {}", path.display())]
    Write {
        /// What was being written ("the archive", "a blob to").
        what: &'static str,
        /// Where (`-` for standard output).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A layer blob could not be read or decompressed.
    #[error("cannot read layer {digest}")]
    ReadLayer {
        /// The layer blob.
        digest: Digest,
        /// The I/O or decompression error.
        #[source]
        source: std::io::Error,
    },
    /// A layer has a media type kiln cannot decompress.
    #[error("layer {digest} has media type {media_type}: expected an OCI or docker layer tar, plain, gzip or zstd")]
    UnsupportedLayer {
        /// The layer blob.
        digest: Digest,
        /// Its media type.
        media_type: String,
    },
    /// A manifest or config in the store is not what an image needs.
    #[error("image {digest} has an unreadable {what}")]
    BadImage {
        /// The manifest digest.
        digest: Digest,
        /// "manifest" or "config".
        what: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A manifest's layers and its config's diff_ids do not pair up.
    #[error("image {digest} has {layers} layers but {diff_ids} diff_ids: expected one per layer")]
    LayerCount {
        /// The manifest digest.
        digest: Digest,
        /// Layers in the manifest.
        layers: usize,
        /// diff_ids in the config.
        diff_ids: usize,
    },
    /// A compression level out of the algorithm's range.
    #[error("invalid {algorithm} compression level {level}: expected {min} to {max}")]
    BadLevel {
        /// The algorithm.
        algorithm: Algorithm,
        /// The level given.
        level: i32,
        /// The lowest level.
        min: i32,
        /// The highest level.
        max: i32,
    },
    /// Docker's media types have no zstd layer.
    #[error("zstd layers need OCI media types: expected --format oci or oci-dir with --compression zstd")]
    DockerZstd,
    /// The destination directory of an OCI layout or a rootfs is not empty.
    #[error("destination {} exists and is not an empty directory", path.display())]
    DestinationNotEmpty {
        /// The destination.
        path: PathBuf,
    },
    /// An `-o` value kiln cannot use.
    #[error("invalid output {given:?}: {problem}")]
    InvalidOutput {
        /// The value given.
        given: String,
        /// What is wrong with it.
        problem: OutputProblem,
    },
    /// Nothing to save.
    #[error("expected at least one image to save")]
    NoImages,
}

/// The export stage's result type.
pub type Result<T> = std::result::Result<T, ExportError>;

/// Returns a closure turning an I/O error into [`ExportError::Write`] of `what` at `path`.
pub(crate) fn write_error(
    what: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> ExportError {
    let path = path.to_path_buf();
    move |source| ExportError::Write { what, path, source }
}
