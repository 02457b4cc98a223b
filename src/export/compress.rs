//! Compressed layer blobs: made once per layer, algorithm and level, and remembered.
//!
//! Consumes a layer as the store holds it (a descriptor, uncompressed for layers kiln built,
//! gzip or zstd for imported ones) and a [`Compression`]; produces the descriptor of a blob in
//! the store holding the layer in that compression. A record of kind [`RECORD_KIND`] maps
//! (diff_id, algorithm, level) to the compressed blob, so the next export (or a registry push)
//! finds it without compressing again; the record holds the blob against gc.
//!
//! The output is the same bytes on every machine, whatever its number of cores:
//!
//! - gzip: the layer is cut into [`GZIP_CHUNK`]-byte chunks, each compressed on its own into a
//!   complete gzip member (RFC 1952 §2.2: a gzip file is a series of members), header without
//!   time, name or comment. Chunks compress in parallel; deflate's window is 32 KiB, so
//!   independent 1 MiB chunks cost well under 1% of ratio.
//! - zstd: libzstd's own multithreading, which cuts jobs by size, not by thread count, so its
//!   frames do not depend on how many workers run them (a unit test checks 1 against 3).
//!
//! This module must never replace a blob of the store nor change an image.

use std::io::{self, Read, Write};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::{ExportError, Result};
use crate::digest::Digest;
use crate::image::{Descriptor, LAYER_MEDIA_TYPE};
use crate::store::Store;

/// The record kind mapping a layer and a compression to its compressed blob.
pub const RECORD_KIND: &str = "compressed-layer";

/// The bytes of uncompressed layer compressed into one gzip member.
pub const GZIP_CHUNK: usize = 1 << 20;

/// OCI media type of a gzip layer.
pub const OCI_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// OCI media type of a zstd layer.
pub const OCI_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
/// Docker media type of an uncompressed layer.
pub const DOCKER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";
/// Docker media type of a gzip layer.
pub const DOCKER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// A layer compression algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Algorithm {
    /// Deflate in gzip members (what `docker push` and BuildKit write by default).
    Gzip,
    /// Zstandard.
    Zstd,
    /// The plain tar.
    None,
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Algorithm {
    /// The name used on the command line and in records: `gzip`, `zstd`, `none`.
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Gzip => "gzip",
            Algorithm::Zstd => "zstd",
            Algorithm::None => "none",
        }
    }

    /// The lowest, highest and default level (all 0 for `none`).
    pub fn levels(self) -> (i32, i32, i32) {
        match self {
            Algorithm::Gzip => (0, 9, 6),
            Algorithm::Zstd => (1, 22, 3),
            Algorithm::None => (0, 0, 0),
        }
    }

    /// The OCI media type of a layer in this compression.
    pub fn oci_media_type(self) -> &'static str {
        match self {
            Algorithm::Gzip => OCI_GZIP,
            Algorithm::Zstd => OCI_ZSTD,
            Algorithm::None => LAYER_MEDIA_TYPE,
        }
    }

    /// The docker media type of a layer in this compression; `None` for zstd, which docker's
    /// schema 2 has no type for.
    pub fn docker_media_type(self) -> Option<&'static str> {
        match self {
            Algorithm::Gzip => Some(DOCKER_GZIP),
            Algorithm::Zstd => None,
            Algorithm::None => Some(DOCKER_TAR),
        }
    }

    /// The compression of a layer with `media_type`, or `None` when it is no layer type kiln
    /// reads.
    pub fn of_media_type(media_type: &str) -> Option<Algorithm> {
        match media_type {
            LAYER_MEDIA_TYPE | DOCKER_TAR => Some(Algorithm::None),
            OCI_GZIP | DOCKER_GZIP => Some(Algorithm::Gzip),
            OCI_ZSTD => Some(Algorithm::Zstd),
            _ => None,
        }
    }
}

/// An algorithm and a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Compression {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The level; `None` is the algorithm's default.
    pub level: Option<i32>,
}

impl Default for Compression {
    /// gzip at its default level, as docker and BuildKit write layers.
    fn default() -> Compression {
        Compression {
            algorithm: Algorithm::Gzip,
            level: None,
        }
    }
}

impl Compression {
    /// Returns the level in force, after checking it is in the algorithm's range.
    ///
    /// # Errors
    /// [`ExportError::BadLevel`] outside the range.
    pub fn effective_level(&self) -> Result<i32> {
        let (min, max, default) = self.algorithm.levels();
        match self.level {
            None => Ok(default),
            // `none` takes any level, as BuildKit ignores it there.
            Some(_) if self.algorithm == Algorithm::None => Ok(0),
            Some(level) if (min..=max).contains(&level) => Ok(level),
            Some(level) => Err(ExportError::BadLevel {
                algorithm: self.algorithm,
                level,
                min,
                max,
            }),
        }
    }
}

/// What the record of a compressed layer holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct CompressedRecord {
    digest: Digest,
    size: u64,
}

/// The record id of `diff_id` in `algorithm` at `level`: a versioned, length-prefixed
/// encoding hashed, so a change of chunking or format starts new records.
fn record_id(diff_id: &Digest, algorithm: Algorithm, level: i32) -> Digest {
    let mut preimage = vec![1u8];
    for field in [
        diff_id.to_string(),
        algorithm.name().to_string(),
        level.to_string(),
        GZIP_CHUNK.to_string(),
    ] {
        preimage.extend_from_slice(&(field.len() as u32).to_be_bytes());
        preimage.extend_from_slice(field.as_bytes());
    }
    Digest::of(&preimage)
}

/// Opens a stored layer as its uncompressed tar stream; the blob's digest is checked when
/// the stream reaches its end.
///
/// # Errors
/// [`ExportError::UnsupportedLayer`] for a media type kiln does not read, store errors.
pub fn open_layer(store: &Store, layer: &Descriptor) -> Result<Box<dyn Read + Send>> {
    let algorithm = Algorithm::of_media_type(&layer.media_type).ok_or_else(|| {
        ExportError::UnsupportedLayer {
            digest: layer.digest,
            media_type: layer.media_type.clone(),
        }
    })?;
    let blob = store.open_blob(&layer.digest)?;
    Ok(match algorithm {
        Algorithm::None => Box::new(blob),
        // Multi-member: kiln's own gzip layers are a series of members.
        Algorithm::Gzip => Box::new(flate2::read::MultiGzDecoder::new(blob)),
        Algorithm::Zstd => Box::new(zstd::stream::read::Decoder::new(blob).map_err(|source| {
            ExportError::ReadLayer {
                digest: layer.digest,
                source,
            }
        })?),
    })
}

/// Returns the descriptor (OCI media type) of `layer`, whose uncompressed digest is
/// `diff_id`, in `compression`: the stored blob itself when it already has that algorithm,
/// else a blob made now, or earlier and found through its record.
///
/// # Errors
/// [`ExportError::BadLevel`], [`ExportError::UnsupportedLayer`], [`ExportError::ReadLayer`]
/// when the layer cannot be read or does not match its digests, store errors.
pub fn layer_blob(
    store: &Store,
    layer: &Descriptor,
    diff_id: &Digest,
    compression: Compression,
) -> Result<Descriptor> {
    let level = compression.effective_level()?;
    let algorithm = compression.algorithm;
    let media_type = algorithm.oci_media_type();
    if Algorithm::of_media_type(&layer.media_type) == Some(algorithm) {
        return Ok(Descriptor::new(media_type, layer.digest, layer.size));
    }
    if algorithm == Algorithm::None && store.has_blob(diff_id) {
        let size = store.blob_size(diff_id)?;
        return Ok(Descriptor::new(media_type, *diff_id, size));
    }
    let id = record_id(diff_id, algorithm, level);
    if let Some(record) = store.get_record::<CompressedRecord>(RECORD_KIND, &id)? {
        if store.has_blob(&record.digest) {
            store.touch_record(RECORD_KIND, &id)?;
            return Ok(Descriptor::new(media_type, record.digest, record.size));
        }
    }
    let read_error = |source| ExportError::ReadLayer {
        digest: layer.digest,
        source,
    };
    let mismatch = |found: Digest| {
        let message = format!("the uncompressed layer is {found}, its diff_id {diff_id}");
        read_error(io::Error::new(io::ErrorKind::InvalidData, message))
    };
    // A plain stored layer's digest is its diff_id, and the blob reader checks the digest, so
    // its bytes need no second hash; a compressed one's uncompressed bytes are hashed here.
    let stored_plain = Algorithm::of_media_type(&layer.media_type) == Some(Algorithm::None);
    if stored_plain && layer.digest != *diff_id {
        return Err(mismatch(layer.digest));
    }
    let mut input = HashingReader {
        inner: open_layer(store, layer)?,
        hasher: (!stored_plain).then(Sha256::new),
    };
    let mut writer = store.blob_writer()?;
    compress(&mut input, &mut writer, algorithm, level).map_err(read_error)?;
    if let Some(hasher) = input.hasher {
        let found = Digest::from_array(hasher.finalize().into());
        if found != *diff_id {
            return Err(mismatch(found));
        }
    }
    let (digest, size) = match algorithm {
        Algorithm::None => writer.commit_expecting(diff_id)?,
        _ => writer.commit()?,
    };
    if algorithm != Algorithm::None {
        let record = CompressedRecord { digest, size };
        store.put_record(RECORD_KIND, &id, &[digest], &record)?;
    }
    Ok(Descriptor::new(media_type, digest, size))
}

/// Hashes what passes through it, when it has a hasher: the uncompressed layer, to check
/// its diff_id.
struct HashingReader<R> {
    inner: R,
    hasher: Option<Sha256>,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(hasher) = &mut self.hasher {
            hasher.update(buf.get(..n).unwrap_or_default());
        }
        Ok(n)
    }
}

/// Copies `input` to `out` compressed with `algorithm` at `level`.
///
/// # Errors
/// I/O errors of either side.
pub fn compress(
    input: &mut dyn Read,
    out: &mut dyn Write,
    algorithm: Algorithm,
    level: i32,
) -> io::Result<()> {
    match algorithm {
        Algorithm::None => io::copy(input, out).map(drop),
        Algorithm::Gzip => gzip_parallel(input, out, level),
        Algorithm::Zstd => zstd_parallel(input, out, level),
    }
}

/// Reads up to `limit` bytes; fewer only at the end of `input`.
fn read_chunk(input: &mut dyn Read, limit: usize) -> io::Result<Vec<u8>> {
    let mut chunk = Vec::with_capacity(limit);
    input.take(limit as u64).read_to_end(&mut chunk)?;
    Ok(chunk)
}

/// One gzip member of `chunk`: no time, name or comment in the header.
fn gzip_member(chunk: &[u8], level: i32) -> io::Result<Vec<u8>> {
    let level = flate2::Compression::new(u32::try_from(level).unwrap_or(6));
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::with_capacity(chunk.len() / 2 + 64), level);
    encoder.write_all(chunk)?;
    encoder.finish()
}

/// gzip in [`GZIP_CHUNK`] members, a batch of chunks compressed in parallel at a time, so
/// memory stays at a few chunks per thread.
fn gzip_parallel(input: &mut dyn Read, out: &mut dyn Write, level: i32) -> io::Result<()> {
    let batch = rayon::current_num_threads().max(1) * 4;
    let mut written_any = false;
    loop {
        let mut chunks = Vec::with_capacity(batch);
        let mut at_end = false;
        while chunks.len() < batch {
            let chunk = read_chunk(input, GZIP_CHUNK)?;
            at_end = chunk.len() < GZIP_CHUNK;
            if !chunk.is_empty() {
                chunks.push(chunk);
            }
            if at_end {
                break;
            }
        }
        // An empty layer still needs one member to be a gzip file.
        if chunks.is_empty() && !written_any {
            chunks.push(Vec::new());
        }
        let members: Vec<io::Result<Vec<u8>>> = chunks
            .par_iter()
            .map(|chunk| gzip_member(chunk, level))
            .collect();
        for member in members {
            out.write_all(&member?)?;
            written_any = true;
        }
        if at_end {
            return Ok(());
        }
    }
}

/// zstd with libzstd's workers, one per rayon thread.
fn zstd_parallel(input: &mut dyn Read, out: &mut dyn Write, level: i32) -> io::Result<()> {
    let workers = u32::try_from(rayon::current_num_threads().max(1)).unwrap_or(1);
    zstd_with_workers(input, out, level, workers)
}

fn zstd_with_workers(
    input: &mut dyn Read,
    out: &mut dyn Write,
    level: i32,
    workers: u32,
) -> io::Result<()> {
    let mut encoder = zstd::stream::write::Encoder::new(out, level)?;
    // Never 0: single-threaded mode frames the output differently from any worker count.
    encoder.multithread(workers.max(1))?;
    io::copy(input, &mut encoder)?;
    encoder.finish().map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;

    /// Text-like bytes that compress somewhat, different in every chunk.
    fn sample(len: usize) -> Vec<u8> {
        let mut state = 0x2545_f491_u32;
        (0..len)
            .map(|i| {
                state ^= state << 13;
                state ^= state >> 17;
                state ^= state << 5;
                match i % 7 {
                    0 => b'\n',
                    _ => b'a' + (state % 16) as u8,
                }
            })
            .collect()
    }

    fn in_pool<T: Send>(threads: usize, work: impl FnOnce() -> T + Send) -> T {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .expect("pool")
            .install(work)
    }

    fn gzip(input: &[u8], level: i32) -> Vec<u8> {
        let mut out = Vec::new();
        gzip_parallel(&mut &input[..], &mut out, level).expect("compresses");
        out
    }

    #[test]
    fn gzip_members_decode_to_the_input_whatever_the_thread_count() {
        let sizes = [
            0,
            1,
            GZIP_CHUNK - 1,
            GZIP_CHUNK,
            GZIP_CHUNK + 1,
            9 * GZIP_CHUNK / 2,
        ];
        for size in sizes {
            let input = sample(size);
            let one = in_pool(1, || gzip(&input, 6));
            let three = in_pool(3, || gzip(&input, 6));
            assert_eq!(one, three, "size {size}");
            // Header: magic, deflate, no flags, mtime 0.
            assert_eq!(one[..8], [0x1f, 0x8b, 8, 0, 0, 0, 0, 0], "size {size}");
            let mut decoded = Vec::new();
            flate2::read::MultiGzDecoder::new(&one[..])
                .read_to_end(&mut decoded)
                .expect("decodes");
            assert_eq!(decoded, input, "size {size}");
            let members = size.div_ceil(GZIP_CHUNK).max(1);
            let headers = one.windows(4).filter(|w| w == &[0x1f, 0x8b, 8, 0]).count();
            assert!(headers >= members, "size {size}: {headers} < {members}");
        }
    }

    #[test]
    fn zstd_frames_do_not_depend_on_the_worker_count() {
        let input = sample(24 << 20);
        let run = |workers| {
            let mut out = Vec::new();
            zstd_with_workers(&mut &input[..], &mut out, 3, workers).expect("compresses");
            out
        };
        let one = run(1);
        assert_eq!(one, run(3));
        assert_eq!(zstd::decode_all(&one[..]).expect("decodes"), input);
    }

    #[test]
    fn levels_are_checked_per_algorithm() {
        let table: &[(Algorithm, Option<i32>, Option<i32>)] = &[
            (Algorithm::Gzip, None, Some(6)),
            (Algorithm::Gzip, Some(0), Some(0)),
            (Algorithm::Gzip, Some(9), Some(9)),
            (Algorithm::Gzip, Some(10), None),
            (Algorithm::Zstd, None, Some(3)),
            (Algorithm::Zstd, Some(22), Some(22)),
            (Algorithm::Zstd, Some(0), None),
            (Algorithm::None, Some(7), Some(0)),
        ];
        for &(algorithm, level, expected) in table {
            let found = Compression { algorithm, level }.effective_level().ok();
            assert_eq!(found, expected, "{algorithm} {level:?}");
        }
    }

    #[test]
    fn compressed_blobs_are_made_once_and_match_their_diff_id() {
        let (_dir, store) = temp_store();
        let tar = sample(3 * GZIP_CHUNK);
        let (diff_id, size) = store.put_blob(&tar).expect("puts");
        let layer = Descriptor::new(LAYER_MEDIA_TYPE, diff_id, size);
        for algorithm in [Algorithm::Gzip, Algorithm::Zstd] {
            let compression = Compression {
                algorithm,
                level: None,
            };
            let first = layer_blob(&store, &layer, &diff_id, compression).expect("compresses");
            assert_eq!(first.media_type, algorithm.oci_media_type());
            assert_ne!(first.digest, diff_id);
            let id = record_id(&diff_id, algorithm, compression.effective_level().unwrap());
            let record: CompressedRecord = store.get_record(RECORD_KIND, &id).unwrap().unwrap();
            assert_eq!(record.digest, first.digest);
            // Found through the record the second time, and back to the same tar.
            let again = layer_blob(&store, &layer, &diff_id, compression).expect("again");
            assert_eq!(again, first);
            let mut plain = Vec::new();
            open_layer(&store, &first)
                .unwrap()
                .read_to_end(&mut plain)
                .unwrap();
            assert_eq!(plain, tar);
            // From the compressed blob back to none gives the uncompressed blob.
            let none = Compression {
                algorithm: Algorithm::None,
                level: None,
            };
            let back = layer_blob(&store, &first, &diff_id, none).expect("plain");
            assert_eq!(back.digest, diff_id);
        }
        let none = Compression {
            algorithm: Algorithm::None,
            level: None,
        };
        assert_eq!(
            layer_blob(&store, &layer, &diff_id, none).unwrap(),
            Descriptor::new(LAYER_MEDIA_TYPE, diff_id, size)
        );
        // A diff_id the bytes do not have is refused, and nothing is recorded.
        let wrong = Digest::of(b"not this layer");
        let gzip = Compression::default();
        assert!(matches!(
            layer_blob(&store, &layer, &wrong, gzip),
            Err(ExportError::ReadLayer { .. })
        ));
        let id = record_id(&wrong, Algorithm::Gzip, 6);
        assert!(store
            .get_record::<CompressedRecord>(RECORD_KIND, &id)
            .unwrap()
            .is_none());
    }
}
