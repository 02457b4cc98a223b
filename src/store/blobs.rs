//! Content-addressed blobs under `blobs/sha256/<hex>`.
//!
//! Consumes bytes (whole or streamed through [`BlobWriter`]); produces digests, paths and
//! verified bytes. Blobs are written without locks: the temp file is hashed while written,
//! fsynced and renamed to its digest's name, and renaming identical bytes over a blob is
//! harmless. This module must never return bytes that do not match the digest asked for.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::path::PathBuf;

use sha2::{Digest as _, Sha256};

use super::{atomic, io_error, Result, Store, StoreError};
use crate::digest::{Digest, DigestWriter};

/// Streams a blob into the store, hashing and counting while it writes. Dropping it without
/// [`commit`](BlobWriter::commit) removes the temp file and stores nothing.
pub struct BlobWriter {
    store: Store,
    out: DigestWriter<BufWriter<BlobFile>>,
}

impl BlobWriter {
    /// Returns the number of bytes written so far.
    pub fn written(&self) -> u64 {
        self.out.written()
    }

    /// Syncs the bytes and moves them to `blobs/sha256/<hex>`; returns the digest and size.
    ///
    /// # Errors
    /// I/O errors; nothing is left in the store after one.
    pub fn commit(self) -> Result<(Digest, u64)> {
        self.finish(None)
    }

    /// Like [`commit`](BlobWriter::commit), but stores the blob only if its digest is
    /// `expected`.
    ///
    /// # Errors
    /// [`StoreError::DigestMismatch`] if the bytes hash to something else (nothing is stored),
    /// I/O errors otherwise.
    pub fn commit_expecting(self, expected: &Digest) -> Result<(Digest, u64)> {
        self.finish(Some(expected))
    }

    fn finish(self, expected: Option<&Digest>) -> Result<(Digest, u64)> {
        let (buffered, digest, size) = self.out.finish();
        let dest = self.store.blob_path(&digest);
        let temp = buffered
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(BlobFile::finish)
            .map_err(io_error("write blob", &dest))?;
        if let Some(expected) = expected {
            if *expected != digest {
                return Err(StoreError::DigestMismatch {
                    path: self.store.blob_path(expected),
                    expected: *expected,
                    found: digest,
                });
            }
        }
        persist(temp, &dest)?;
        Ok((digest, size))
    }
}

/// A blob's temp file, written around the page cache where the file system allows
/// (`O_DIRECT`, in whole aligned chunks; the tail goes through the page cache at the end),
/// and otherwise through it with writeback started every few megabytes.
///
/// Why direct: a blob is read rarely (export, a snapshot unpacked on first use) but a build
/// writes one per step. Through the page cache every megabyte needs fresh pages, which cost
/// more than the disk here (2 ms per MiB on the 2-core VM whose memory the host backs lazily,
/// against 0.7 ms per MiB written directly), and the dirty pages then compete with the next
/// step's writes for the disk.
struct BlobFile {
    temp: tempfile::NamedTempFile,
    /// Bytes waiting to fill a chunk, while the file takes direct writes.
    direct: Option<AlignedChunk>,
    written: u64,
    submitted: u64,
}

/// How many bytes one direct write carries (a multiple of [`DIRECT_ALIGN`]).
const DIRECT_CHUNK: usize = 1 << 20;

/// The alignment `O_DIRECT` asks of buffers, lengths and offsets (the largest logical block
/// size in use).
const DIRECT_ALIGN: usize = 4096;

/// How many bytes are written through the page cache before their writeback is started.
const WRITEBACK_CHUNK: u64 = 8 << 20;

/// A [`DIRECT_CHUNK`]-sized buffer at an address aligned to [`DIRECT_ALIGN`].
struct AlignedChunk {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedChunk {
    fn new() -> AlignedChunk {
        let storage = vec![0u8; DIRECT_CHUNK + DIRECT_ALIGN];
        let misalignment = storage.as_ptr() as usize % DIRECT_ALIGN;
        let start = (DIRECT_ALIGN - misalignment) % DIRECT_ALIGN;
        AlignedChunk {
            storage,
            start,
            len: 0,
        }
    }

    /// Copies as much of `buf` as fits; returns how much.
    fn fill(&mut self, buf: &[u8]) -> usize {
        let n = buf.len().min(DIRECT_CHUNK - self.len);
        let at = self.start + self.len;
        self.storage[at..at + n].copy_from_slice(&buf[..n]);
        self.len += n;
        n
    }

    fn bytes(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }
}

impl BlobFile {
    fn new(temp: tempfile::NamedTempFile) -> BlobFile {
        let direct = set_direct(temp.as_file(), true).is_ok();
        BlobFile {
            temp,
            direct: direct.then(AlignedChunk::new),
            written: 0,
            submitted: 0,
        }
    }

    /// Writes the bytes still in the chunk through the page cache and returns the file.
    fn finish(mut self) -> io::Result<tempfile::NamedTempFile> {
        self.leave_direct()?;
        Ok(self.temp)
    }

    /// Stops direct writes: what is in the chunk goes through the page cache.
    fn leave_direct(&mut self) -> io::Result<()> {
        if let Some(chunk) = self.direct.take() {
            set_direct(self.temp.as_file(), false)?;
            self.temp.write_all(chunk.bytes())?;
        }
        Ok(())
    }

    fn write_through_page_cache(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.temp.write(buf)?;
        self.written += n as u64;
        if self.written - self.submitted >= WRITEBACK_CHUNK {
            let (Ok(offset), Ok(length)) = (
                i64::try_from(self.submitted),
                i64::try_from(self.written - self.submitted),
            ) else {
                return Ok(n);
            };
            // Only a hint that starts writeback without waiting for it: the fsync at commit
            // is what makes the bytes durable, so a failure here changes nothing.
            // SAFETY: sync_file_range on a descriptor we own, with plain integers.
            unsafe {
                libc::sync_file_range(
                    std::os::fd::AsRawFd::as_raw_fd(self.temp.as_file()),
                    offset,
                    length,
                    libc::SYNC_FILE_RANGE_WRITE,
                )
            };
            self.submitted = self.written;
        }
        Ok(n)
    }
}

/// Sets or clears `O_DIRECT` on `file`; file systems without direct I/O refuse to set it.
fn set_direct(file: &File, on: bool) -> io::Result<()> {
    use rustix::fs::{fcntl_getfl, fcntl_setfl, OFlags};
    let flags = fcntl_getfl(file)?;
    let flags = match on {
        true => flags | OFlags::DIRECT,
        false => flags - OFlags::DIRECT,
    };
    fcntl_setfl(file, flags)?;
    Ok(())
}

impl Write for BlobFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(chunk) = self.direct.as_mut() else {
            return self.write_through_page_cache(buf);
        };
        let n = chunk.fill(buf);
        if chunk.len == DIRECT_CHUNK {
            match self.temp.write_all(chunk.bytes()) {
                Ok(()) => chunk.len = 0,
                // Some file systems accept the flag but not the writes.
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => self.leave_direct()?,
                Err(e) => return Err(e),
            }
        }
        Ok(n)
    }

    /// Bytes short of a whole chunk stay in it until [`BlobFile::finish`]: nothing reads the
    /// temp file before then.
    fn flush(&mut self) -> io::Result<()> {
        self.temp.flush()
    }
}

/// Syncs a finished temp file and renames it to `dest`.
fn persist(temp: tempfile::NamedTempFile, dest: &std::path::Path) -> Result<()> {
    temp.as_file()
        .sync_all()
        .map_err(io_error("sync blob", dest))?;
    temp.persist(dest)
        .map_err(|e| io_error("rename a temp file to", dest)(e.error))?;
    atomic::sync_parent(dest)
}

/// Streams a blob whose writer hashes the bytes itself (the layer writer computes a layer's
/// diff_id while writing it), so they are not hashed twice. Dropping it without
/// [`commit_as`](HashingCallerBlob::commit_as) stores nothing.
pub struct HashingCallerBlob {
    store: Store,
    out: BufWriter<BlobFile>,
}

impl HashingCallerBlob {
    /// Syncs the bytes and stores them as the blob `digest`, which the caller computed over
    /// exactly the bytes it wrote; reads still verify it.
    ///
    /// # Errors
    /// I/O errors; nothing is left in the store after one.
    pub fn commit_as(self, digest: &Digest) -> Result<()> {
        let dest = self.store.blob_path(digest);
        let temp = self
            .out
            .into_inner()
            .map_err(|e| e.into_error())
            .and_then(BlobFile::finish)
            .map_err(io_error("write blob", &dest))?;
        persist(temp, &dest)
    }
}

impl Write for HashingCallerBlob {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Reads a blob and checks its digest when the end is reached: the final `read` returns an
/// `InvalidData` error instead of end-of-file if the bytes do not match. Use it to stream
/// large blobs (layers) without holding them in memory.
pub struct BlobReader {
    file: File,
    hasher: Sha256,
    expected: Digest,
    path: PathBuf,
    verified: bool,
}

impl BlobReader {
    /// Returns the blob's path.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n > 0 {
            self.hasher.update(buf.get(..n).unwrap_or(buf));
        } else if !buf.is_empty() && !self.verified {
            let found = Digest::from_array(std::mem::take(&mut self.hasher).finalize().into());
            if found != self.expected {
                let error = StoreError::CorruptBlob {
                    path: self.path.clone(),
                    expected: self.expected,
                    found,
                };
                return Err(io::Error::new(io::ErrorKind::InvalidData, error));
            }
            self.verified = true;
        }
        Ok(n)
    }
}

impl Store {
    /// Starts a blob; write to it, then [`BlobWriter::commit`].
    ///
    /// # Errors
    /// I/O errors creating the temp file.
    pub fn blob_writer(&self) -> Result<BlobWriter> {
        let temp = atomic::temp_file(&self.tmp_dir(), ".blob")?;
        let out = DigestWriter::new(BufWriter::with_capacity(1 << 16, BlobFile::new(temp)));
        Ok(BlobWriter {
            store: self.clone(),
            out,
        })
    }

    /// Starts a blob whose bytes the caller hashes itself (see [`HashingCallerBlob`]).
    ///
    /// # Errors
    /// I/O errors creating the temp file.
    pub fn blob_writer_hashed_by_caller(&self) -> Result<HashingCallerBlob> {
        let temp = atomic::temp_file(&self.tmp_dir(), ".blob")?;
        Ok(HashingCallerBlob {
            store: self.clone(),
            out: BufWriter::with_capacity(1 << 16, BlobFile::new(temp)),
        })
    }

    /// Stores `bytes` as a blob; returns its digest and size.
    ///
    /// # Errors
    /// I/O errors.
    pub fn put_blob(&self, bytes: &[u8]) -> Result<(Digest, u64)> {
        // A blob already holding exactly these bytes is left alone (no write, no fsync); one
        // that does not (corrupt) is replaced below.
        let digest = Digest::of(bytes);
        if std::fs::read(self.blob_path(&digest)).is_ok_and(|existing| existing == bytes) {
            return Ok((digest, bytes.len() as u64));
        }
        let mut writer = self.blob_writer()?;
        let path = self.tmp_dir();
        writer
            .write_all(bytes)
            .map_err(io_error("write a blob in", &path))?;
        writer.commit()
    }

    /// Returns true if and only if a blob named `digest` exists (its bytes are not checked).
    pub fn has_blob(&self, digest: &Digest) -> bool {
        self.blob_path(digest).is_file()
    }

    /// Returns where the blob `digest` is or would be.
    pub fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.blobs_dir().join(digest.hex())
    }

    /// Returns the size in bytes of blob `digest`.
    ///
    /// # Errors
    /// [`StoreError::BlobNotFound`], or an I/O error.
    pub fn blob_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.blob_path(digest);
        let meta = std::fs::metadata(&path).map_err(self.blob_io(digest, "read"))?;
        Ok(meta.len())
    }

    /// Maps "not found" on blob `digest` to [`StoreError::BlobNotFound`], other errors to
    /// [`StoreError::Io`] for `action`.
    fn blob_io(
        &self,
        digest: &Digest,
        action: &'static str,
    ) -> impl FnOnce(io::Error) -> StoreError {
        let path = self.blob_path(digest);
        let digest = *digest;
        move |source| match source.kind() {
            io::ErrorKind::NotFound => StoreError::BlobNotFound { digest, path },
            _ => StoreError::Io {
                action,
                path,
                source,
            },
        }
    }

    /// Reads blob `digest` whole and checks that its bytes hash to `digest`.
    ///
    /// # Errors
    /// [`StoreError::BlobNotFound`], [`StoreError::CorruptBlob`], or an I/O error.
    pub fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.blob_path(digest);
        let bytes = std::fs::read(&path).map_err(self.blob_io(digest, "read"))?;
        let found = Digest::of(&bytes);
        if found != *digest {
            return Err(StoreError::CorruptBlob {
                path,
                expected: *digest,
                found,
            });
        }
        Ok(bytes)
    }

    /// Opens blob `digest` for streaming; the reader checks the digest at the end.
    ///
    /// # Errors
    /// [`StoreError::BlobNotFound`], or an I/O error.
    pub fn open_blob(&self, digest: &Digest) -> Result<BlobReader> {
        let path = self.blob_path(digest);
        let file = File::open(&path).map_err(self.blob_io(digest, "open"))?;
        Ok(BlobReader {
            file,
            hasher: Sha256::new(),
            expected: *digest,
            path,
            verified: false,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;

    fn tmp_entries(store: &Store) -> usize {
        std::fs::read_dir(store.tmp_dir()).expect("lists").count()
    }

    #[test]
    fn put_read_and_stream() {
        let (_dir, store) = temp_store();
        let table: &[&[u8]] = &[b"", b"hello", &[0u8; 200_000]];
        for bytes in table {
            let (digest, size) = store.put_blob(bytes).expect("puts");
            assert_eq!(digest, Digest::of(bytes));
            assert_eq!(size, bytes.len() as u64);
            assert!(store.has_blob(&digest));
            assert_eq!(store.blob_size(&digest).expect("size"), size);
            assert_eq!(store.read_blob(&digest).expect("reads"), *bytes);
            let mut streamed = Vec::new();
            store
                .open_blob(&digest)
                .expect("opens")
                .read_to_end(&mut streamed)
                .expect("reads");
            assert_eq!(streamed, *bytes);
            // Idempotent: the same bytes again are a no-op.
            assert_eq!(store.put_blob(bytes).expect("puts again"), (digest, size));
        }
        assert_eq!(tmp_entries(&store), 0);
    }

    /// Blobs of whole direct chunks and of chunks plus a tail, written in odd pieces, through
    /// both writers, read back byte for byte.
    #[test]
    fn blobs_spanning_direct_chunks_keep_every_byte() {
        let (_dir, store) = temp_store();
        for size in [DIRECT_CHUNK, 2 * DIRECT_CHUNK + 12_345, DIRECT_CHUNK - 1] {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 7 + i / 4099) as u8).collect();
            let mut plain = store.blob_writer().expect("writer");
            let mut hashed = store.blob_writer_hashed_by_caller().expect("writer");
            for piece in bytes.chunks(300_001) {
                plain.write_all(piece).expect("writes");
                hashed.write_all(piece).expect("writes");
            }
            let (digest, written) = plain.commit().expect("commits");
            assert_eq!((digest, written), (Digest::of(&bytes), size as u64));
            assert_eq!(store.read_blob(&digest).expect("reads"), bytes);
            std::fs::remove_file(store.blob_path(&digest)).expect("removes");
            hashed.commit_as(&digest).expect("commits");
            assert_eq!(store.read_blob(&digest).expect("reads"), bytes);
        }
        assert_eq!(tmp_entries(&store), 0);
    }

    #[test]
    fn commit_expecting_rejects_other_bytes_and_leaves_nothing() {
        let (_dir, store) = temp_store();
        let expected = Digest::of(b"right");
        let mut writer = store.blob_writer().expect("writer");
        writer.write_all(b"wrong").expect("writes");
        match writer.commit_expecting(&expected) {
            Err(StoreError::DigestMismatch {
                expected: e, found, ..
            }) => {
                assert_eq!(e, expected);
                assert_eq!(found, Digest::of(b"wrong"));
            }
            other => panic!("expected a mismatch, got {other:?}"),
        }
        assert!(!store.has_blob(&expected));
        assert!(!store.has_blob(&Digest::of(b"wrong")));
        assert_eq!(tmp_entries(&store), 0);

        let mut writer = store.blob_writer().expect("writer");
        writer.write_all(b"right").expect("writes");
        assert_eq!(
            writer.commit_expecting(&expected).expect("commits").0,
            expected
        );
    }

    #[test]
    fn missing_and_corrupt_blobs_are_errors() {
        let (_dir, store) = temp_store();
        let absent = Digest::of(b"absent");
        assert!(matches!(
            store.read_blob(&absent),
            Err(StoreError::BlobNotFound { .. })
        ));
        assert!(matches!(
            store.open_blob(&absent),
            Err(StoreError::BlobNotFound { .. })
        ));
        let (digest, _) = store.put_blob(b"good bytes").expect("puts");
        std::fs::write(store.blob_path(&digest), b"evil bytes").expect("corrupts");
        assert!(matches!(
            store.read_blob(&digest),
            Err(StoreError::CorruptBlob { .. })
        ));
        let error = store
            .open_blob(&digest)
            .expect("opens")
            .read_to_end(&mut Vec::new())
            .expect_err("detects");
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
    }

    #[test]
    fn dropped_writer_leaves_nothing() {
        let (_dir, store) = temp_store();
        let mut writer = store.blob_writer().expect("writer");
        writer.write_all(b"abandoned").expect("writes");
        drop(writer);
        assert_eq!(tmp_entries(&store), 0);
        assert!(!store.has_blob(&Digest::of(b"abandoned")));
    }
}
