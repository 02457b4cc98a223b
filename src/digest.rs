//! Content digests: the `sha256:<hex>` names of blobs, layers, configs and cache keys.
//!
//! Consumes bytes (whole, or streamed through [`DigestWriter`]) and digest text; produces
//! [`Digest`] values whose text form is `sha256:` followed by 64 lower-case hex digits, the
//! form OCI descriptors and Docker use. Only SHA-256 exists here: every other algorithm is a
//! typed parse error. This module must never touch the file system.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Why a text is not a `sha256:<64 hex>` digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// There is no `algorithm:` prefix.
    #[error("expected a digest of the form sha256:<64 hex digits>, found {found:?}")]
    MissingAlgorithm {
        /// The text given.
        found: String,
    },
    /// The algorithm is not `sha256`.
    #[error("unsupported digest algorithm {algorithm:?}, expected sha256")]
    UnsupportedAlgorithm {
        /// The algorithm named before the `:`.
        algorithm: String,
    },
    /// The hex part does not have 64 characters.
    #[error("expected 64 hex digits after sha256:, found {found}")]
    BadLength {
        /// How many characters were found.
        found: usize,
    },
    /// A character of the hex part is not a lower-case hex digit.
    #[error("expected a lower-case hex digit at offset {offset} of the digest, found {found:?}")]
    BadHex {
        /// Offset in the hex part (after `sha256:`).
        offset: usize,
        /// The character found.
        found: char,
    },
}

/// A SHA-256 digest.
///
/// `Display`, `Debug` and serde all use `sha256:<64 lower-case hex>`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// Returns the SHA-256 digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Digest {
        Digest(Sha256::digest(bytes).into())
    }

    /// Wraps 32 raw digest bytes.
    pub fn from_array(bytes: [u8; 32]) -> Digest {
        Digest(bytes)
    }

    /// Returns the 32 raw digest bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Returns the 64 lower-case hex digits, without the `sha256:` prefix.
    pub fn hex(&self) -> String {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(HEX[usize::from(byte >> 4)]));
            out.push(char::from(HEX[usize::from(byte & 0xf)]));
        }
        out
    }

    /// Returns the first 12 hex digits: the width of docker's IMAGE ID column.
    pub fn short(&self) -> String {
        let mut hex = self.hex();
        hex.truncate(12);
        hex
    }

    /// Parses 64 lower-case hex digits without the `sha256:` prefix (a blob's file name).
    ///
    /// # Errors
    /// [`DigestError::BadLength`] or [`DigestError::BadHex`].
    pub fn from_hex(hex: &str) -> Result<Digest, DigestError> {
        let count = hex.chars().count();
        if count != 64 {
            return Err(DigestError::BadLength { found: count });
        }
        let mut out = [0u8; 32];
        for (offset, c) in hex.chars().enumerate() {
            let nibble = match c {
                '0'..='9' => c as u8 - b'0',
                'a'..='f' => c as u8 - b'a' + 10,
                _ => return Err(DigestError::BadHex { offset, found: c }),
            };
            let slot = &mut out[offset / 2];
            *slot = if offset % 2 == 0 {
                nibble << 4
            } else {
                *slot | nibble
            };
        }
        Ok(Digest(out))
    }
}

impl FromStr for Digest {
    type Err = DigestError;

    fn from_str(text: &str) -> Result<Digest, DigestError> {
        let Some((algorithm, hex)) = text.split_once(':') else {
            return Err(DigestError::MissingAlgorithm {
                found: text.to_string(),
            });
        };
        if algorithm != "sha256" {
            return Err(DigestError::UnsupportedAlgorithm {
                algorithm: algorithm.to_string(),
            });
        }
        Digest::from_hex(hex)
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.hex())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Digest, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl From<Digest> for oci_spec::image::Digest {
    fn from(digest: Digest) -> oci_spec::image::Digest {
        // Sixty-four lower-case hex digits always satisfy oci-spec's sha256 rules.
        let sha = oci_spec::image::Sha256Digest::from_str(&digest.hex())
            .expect("64 lower-case hex digits are a valid sha256 digest");
        sha.into()
    }
}

impl TryFrom<&oci_spec::image::Digest> for Digest {
    type Error = DigestError;

    fn try_from(digest: &oci_spec::image::Digest) -> Result<Digest, DigestError> {
        digest.as_ref().parse()
    }
}

/// A writer that hashes and counts every byte it passes on to the inner writer.
pub struct DigestWriter<W: Write> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> DigestWriter<W> {
    /// Wraps `inner`; nothing is hashed yet.
    pub fn new(inner: W) -> DigestWriter<W> {
        DigestWriter {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Returns the number of bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Returns a reference to the inner writer.
    pub fn get_ref(&self) -> &W {
        &self.inner
    }

    /// Returns the inner writer, the digest of everything written and its length in bytes.
    ///
    /// The inner writer is not flushed: callers that need it flushed do so first.
    pub fn finish(self) -> (W, Digest, u64) {
        (
            self.inner,
            Digest(self.hasher.finalize().into()),
            self.written,
        )
    }
}

impl<W: Write> Write for DigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        // Only the bytes the inner writer accepted are hashed, so a short write stays exact.
        let n = self.inner.write(buf)?;
        let accepted = buf.get(..n).unwrap_or(buf);
        self.hasher.update(accepted);
        self.written += accepted.len() as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// [`DigestWriter`] with the hashing on a thread of its own, for large streams (a layer of
/// hundreds of megabytes): sha256 is the costliest part of writing one, and the bytes are
/// handed over a megabyte at a time, in order, so the digest is the same.
pub struct BackgroundDigestWriter<W: Write> {
    inner: W,
    pending: Vec<u8>,
    hasher: BackgroundHasher,
    written: u64,
}

/// Where the bytes go to be hashed: a thread, or this one when none could be started.
enum BackgroundHasher {
    Thread {
        chunks: std::sync::mpsc::SyncSender<Vec<u8>>,
        done: std::thread::JoinHandle<Sha256>,
    },
    Inline(Sha256),
}

/// How many bytes are handed to the hashing thread at a time.
const HASH_CHUNK: usize = 1 << 20;

impl<W: Write> BackgroundDigestWriter<W> {
    /// Wraps `inner` and starts the hashing thread.
    pub fn new(inner: W) -> BackgroundDigestWriter<W> {
        let (chunks, receiver) = std::sync::mpsc::sync_channel::<Vec<u8>>(8);
        let spawned = std::thread::Builder::new()
            .name("kiln-sha256".into())
            .spawn(move || {
                let mut hasher = Sha256::new();
                while let Ok(chunk) = receiver.recv() {
                    hasher.update(&chunk);
                }
                hasher
            });
        let hasher = match spawned {
            Ok(done) => BackgroundHasher::Thread { chunks, done },
            Err(_) => BackgroundHasher::Inline(Sha256::new()),
        };
        BackgroundDigestWriter {
            inner,
            pending: Vec::with_capacity(HASH_CHUNK),
            hasher,
            written: 0,
        }
    }

    fn hand_over(&mut self) {
        let chunk = std::mem::replace(&mut self.pending, Vec::with_capacity(HASH_CHUNK));
        match &mut self.hasher {
            BackgroundHasher::Thread { chunks, .. } => {
                // The thread only stops once the sender is gone; if it died, the digest is
                // lost and `finish` reports that.
                let _ = chunks.send(chunk);
            }
            BackgroundHasher::Inline(hasher) => hasher.update(&chunk),
        }
    }

    /// Returns the inner writer, the digest of everything written and its length in bytes,
    /// once the hashing thread is through. The inner writer is not flushed.
    ///
    /// # Errors
    /// An I/O error when the hashing thread died.
    pub fn finish(mut self) -> io::Result<(W, Digest, u64)> {
        self.hand_over();
        let hasher = match self.hasher {
            BackgroundHasher::Thread { chunks, done } => {
                drop(chunks);
                done.join()
                    .map_err(|_| io::Error::other("the sha256 thread died"))?
            }
            BackgroundHasher::Inline(hasher) => hasher,
        };
        Ok((self.inner, Digest(hasher.finalize().into()), self.written))
    }
}

impl<W: Write> Write for BackgroundDigestWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        let accepted = buf.get(..n).unwrap_or(buf);
        self.written += accepted.len() as u64;
        let mut rest = accepted;
        while !rest.is_empty() {
            let room = HASH_CHUNK - self.pending.len();
            let (now, later) = rest.split_at(room.min(rest.len()));
            self.pending.extend_from_slice(now);
            if self.pending.len() == HASH_CHUNK {
                self.hand_over();
            }
            rest = later;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader that hashes and counts every byte read through it; the reading counterpart of
/// [`DigestWriter`].
pub struct DigestReader<R: Read> {
    inner: R,
    hasher: Sha256,
    read: u64,
}

impl<R: Read> DigestReader<R> {
    /// Wraps `inner`; nothing is hashed yet.
    pub fn new(inner: R) -> DigestReader<R> {
        DigestReader {
            inner,
            hasher: Sha256::new(),
            read: 0,
        }
    }

    /// Returns the inner reader, the digest of everything read and its length in bytes.
    pub fn finish(self) -> (R, Digest, u64) {
        (self.inner, Digest(self.hasher.finalize().into()), self.read)
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let read = buf.get(..n).unwrap_or(buf);
        self.hasher.update(read);
        self.read += read.len() as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_background_writer_hashes_like_the_plain_one() {
        let data: Vec<u8> = (0..(3 * HASH_CHUNK + 12345))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut plain = DigestWriter::new(Vec::new());
        let mut background = BackgroundDigestWriter::new(Vec::new());
        for piece in data.chunks(70_000) {
            plain.write_all(piece).unwrap();
            background.write_all(piece).unwrap();
        }
        let (plain_bytes, plain_digest, plain_len) = plain.finish();
        let (bytes, digest, len) = background.finish().unwrap();
        assert_eq!((digest, len), (plain_digest, plain_len));
        assert_eq!(bytes, plain_bytes);
        assert_eq!(digest, Digest::of(&data));
        let (_, empty, _) = BackgroundDigestWriter::new(Vec::new()).finish().unwrap();
        assert_eq!(empty, Digest::of(b""));
    }

    const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

    #[test]
    fn known_digests() {
        let table: &[(&[u8], &str)] = &[
            (b"", EMPTY),
            (
                b"abc",
                "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            ),
        ];
        for (input, expected) in table {
            let digest = Digest::of(input);
            assert_eq!(digest.to_string(), *expected);
            assert_eq!(format!("{digest:?}"), *expected);
            assert_eq!(expected.parse::<Digest>(), Ok(digest));
        }
        assert_eq!(Digest::of(b"").short(), "e3b0c44298fc");
    }

    #[test]
    fn parse_errors() {
        let long = format!("sha256:{}", "a".repeat(65));
        let table: &[(&str, DigestError)] = &[
            (
                "",
                DigestError::MissingAlgorithm {
                    found: String::new(),
                },
            ),
            (
                "abc",
                DigestError::MissingAlgorithm {
                    found: "abc".into(),
                },
            ),
            (
                "sha512:00",
                DigestError::UnsupportedAlgorithm {
                    algorithm: "sha512".into(),
                },
            ),
            (
                "SHA256:00",
                DigestError::UnsupportedAlgorithm {
                    algorithm: "SHA256".into(),
                },
            ),
            ("sha256:", DigestError::BadLength { found: 0 }),
            ("sha256:abc", DigestError::BadLength { found: 3 }),
            (&long, DigestError::BadLength { found: 65 }),
            (
                "sha256:E3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                DigestError::BadHex {
                    offset: 0,
                    found: 'E',
                },
            ),
            (
                "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85é",
                DigestError::BadHex {
                    offset: 63,
                    found: 'é',
                },
            ),
        ];
        for (input, expected) in table {
            assert_eq!(input.parse::<Digest>().as_ref(), Err(expected), "{input}");
        }
    }

    #[test]
    fn serde_round_trip() {
        let digest = Digest::of(b"x");
        let json = serde_json::to_string(&digest).expect("serializes");
        assert_eq!(json, format!("\"{digest}\""));
        assert_eq!(
            serde_json::from_str::<Digest>(&json).expect("parses"),
            digest
        );
        assert!(serde_json::from_str::<Digest>("\"sha256:00\"").is_err());
    }

    #[test]
    fn oci_conversion_round_trip() {
        let digest = Digest::of(b"layer");
        let oci: oci_spec::image::Digest = digest.into();
        assert_eq!(oci.to_string(), digest.to_string());
        assert_eq!(Digest::try_from(&oci), Ok(digest));
    }

    #[test]
    fn writer_hashes_and_counts() {
        let mut writer = DigestWriter::new(Vec::new());
        writer.write_all(b"a").expect("writes");
        writer.write_all(b"bc").expect("writes");
        assert_eq!(writer.written(), 3);
        let (inner, digest, size) = writer.finish();
        assert_eq!(inner, b"abc");
        assert_eq!(digest, Digest::of(b"abc"));
        assert_eq!(size, 3);
    }

    #[test]
    fn reader_hashes_and_counts_what_was_read() {
        let table: &[(&[u8], usize)] = &[(b"", 0), (b"abc", 3), (b"abcdef", 2)];
        for (bytes, take) in table {
            let mut reader = DigestReader::new(*bytes);
            let mut out = vec![0u8; *take];
            reader.read_exact(&mut out).expect("reads");
            let (rest, digest, size) = reader.finish();
            assert_eq!(digest, Digest::of(&bytes[..*take]));
            assert_eq!(size, *take as u64);
            assert_eq!(rest, &bytes[*take..]);
        }
    }
}
