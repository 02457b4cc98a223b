//! What ADD adds to COPY: local tar archives extracted (plain, gzip, bzip2, xz, zstd, told
//! apart by their first bytes, never by name), http(s) downloads with `--checksum`, and the
//! files heredoc sources become.
//!
//! Consumes COPY/ADD source words and heredocs, host archive files and URLs; produces
//! [`Prepared`] sources and archive entries as [`LayerEntry`] values whose file content sits
//! in the caller's scratch directory. It must never write outside that scratch directory.
//! BuildKit facts it follows are listed in [`super::copy`].

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;

use sha2::{Digest as _, Sha256, Sha384, Sha512};

use super::copy::{CopyError, Prepared, SingleFile, SourceKind, SourceStat};
use crate::layer::{EntryKind, LayerEntry, Timestamp};
use crate::syntax::instruction::CopySource;

/// How an archive is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// A plain tar.
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// bzip2 (`BZh`).
    Bzip2,
    /// xz (`fd 37 7a 58 5a 00`).
    Xz,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

fn io_error(path: &Path, source: io::Error) -> CopyError {
    CopyError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn decompressor<'a>(file: File, compression: Compression) -> io::Result<Box<dyn Read + 'a>> {
    let file = BufReader::new(file);
    Ok(match compression {
        Compression::None => Box::new(file),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(file)),
        Compression::Bzip2 => Box::new(bzip2::read::MultiBzDecoder::new(file)),
        Compression::Xz => Box::new(xz2::read::XzDecoder::new_multi_decoder(file)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(file)?),
    })
}

/// The compression of `path` when it holds a tar archive (its first, decompressed, 512-byte
/// header has a valid checksum, as Go's `tar.Reader.Next` demands); `None` otherwise.
///
/// # Errors
/// When the file cannot be opened or read.
pub fn archive_compression(path: &Path) -> Result<Option<Compression>, CopyError> {
    let mut magic = [0u8; 6];
    let mut file = File::open(path).map_err(|error| io_error(path, error))?;
    let read = read_up_to(&mut file, &mut magic).map_err(|error| io_error(path, error))?;
    let magic = &magic[..read];
    let compression = if magic.starts_with(&[0x1f, 0x8b]) {
        Compression::Gzip
    } else if magic.starts_with(b"BZh") {
        Compression::Bzip2
    } else if magic.starts_with(&[0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]) {
        Compression::Xz
    } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Compression::Zstd
    } else {
        Compression::None
    };
    let file = File::open(path).map_err(|error| io_error(path, error))?;
    let Ok(mut reader) = decompressor(file, compression) else {
        return Ok(None);
    };
    let mut header = [0u8; 512];
    // A stream that fails to decompress is simply not an archive.
    let Ok(read) = read_up_to(&mut reader, &mut header) else {
        return Ok(None);
    };
    Ok((read == 512 && header_checksum_ok(&header)).then_some(compression))
}

fn read_up_to(reader: &mut dyn Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut total = 0;
    while total < buf.len() {
        match reader.read(&mut buf[total..]) {
            Ok(0) => break,
            Ok(n) => total += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(total)
}

/// The ustar header checksum: the sum of all bytes with the checksum field read as spaces,
/// stored as octal in bytes 148..156 (signed sums accepted too, as Go does).
fn header_checksum_ok(header: &[u8; 512]) -> bool {
    if header.iter().all(|&b| b == 0) {
        return false;
    }
    let field = &header[148..156];
    let text: String = field
        .iter()
        .map(|&b| b as char)
        .filter(|c| c.is_ascii_digit())
        .collect();
    let Ok(stored) = i64::from_str_radix(&text, 8) else {
        return false;
    };
    let (mut unsigned, mut signed) = (0i64, 0i64);
    for (index, &byte) in header.iter().enumerate() {
        let byte = if (148..156).contains(&index) {
            b' '
        } else {
            byte
        };
        unsigned += i64::from(byte);
        signed += i64::from(byte as i8);
    }
    stored == unsigned || stored == signed
}

/// Extracts the archive at `path` into layer entries relative to the archive root (the
/// caller puts them under the destination); file contents are written into `scratch`.
/// `shown` names the source in errors.
///
/// # Errors
/// [`CopyError::Archive`] when the archive is corrupt, [`CopyError::Io`] when scratch files
/// cannot be written.
pub fn extract_archive(
    path: &Path,
    compression: Compression,
    scratch: &Path,
    shown: &str,
) -> Result<Vec<LayerEntry>, CopyError> {
    let bad = |reason: String| CopyError::Archive {
        path: shown.to_owned(),
        reason,
    };
    let file = File::open(path).map_err(|error| io_error(path, error))?;
    let reader = decompressor(file, compression).map_err(|error| bad(error.to_string()))?;
    let mut archive = tar::Archive::new(reader);
    let mut out = Vec::new();
    let dir = tempfile::Builder::new()
        .prefix("add-")
        .tempdir_in(scratch)
        .map_err(|error| io_error(scratch, error))?
        .keep();
    for (index, entry) in archive
        .entries()
        .map_err(|error| bad(error.to_string()))?
        .enumerate()
    {
        let mut entry = entry.map_err(|error| bad(error.to_string()))?;
        let header = entry.header().clone();
        let name = entry
            .path()
            .map_err(|error| bad(error.to_string()))?
            .to_string_lossy()
            .into_owned();
        let link = entry
            .link_name()
            .map_err(|error| bad(error.to_string()))?
            .map(|link| link.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mut xattrs = Vec::new();
        if let Ok(Some(extensions)) = entry.pax_extensions() {
            for extension in extensions.flatten() {
                if let Ok(key) = extension.key() {
                    // dockerd's layers keep only file capabilities (see copy's module doc).
                    if key == "SCHILY.xattr.security.capability" {
                        xattrs.push((
                            "security.capability".to_owned(),
                            extension.value_bytes().to_vec(),
                        ));
                    }
                }
            }
        }
        let device = || {
            let major = header.device_major().ok().flatten().unwrap_or(0);
            let minor = header.device_minor().ok().flatten().unwrap_or(0);
            (major, minor)
        };
        let kind = match header.entry_type() {
            tar::EntryType::Directory => EntryKind::Dir,
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let file = dir.join(index.to_string());
                let mut out_file = File::create(&file).map_err(|error| io_error(&file, error))?;
                io::copy(&mut entry, &mut out_file).map_err(|error| bad(error.to_string()))?;
                EntryKind::File { source: file }
            }
            tar::EntryType::Symlink => EntryKind::Symlink { target: link },
            tar::EntryType::Link => EntryKind::Hardlink { target: link },
            tar::EntryType::Char => {
                let (major, minor) = device();
                EntryKind::CharDevice { major, minor }
            }
            tar::EntryType::Block => {
                let (major, minor) = device();
                EntryKind::BlockDevice { major, minor }
            }
            tar::EntryType::Fifo => EntryKind::Fifo,
            // Global and vendor headers carry no file.
            _ => continue,
        };
        // Go reads a blank numeric field as 0; so does kiln.
        let mode = header.mode().unwrap_or(0) & 0o7777;
        let uid = header.uid().unwrap_or(0);
        let gid = header.gid().unwrap_or(0);
        let mtime = header.mtime().unwrap_or(0);
        out.push(LayerEntry {
            path: name,
            kind,
            mode,
            uid: u32::try_from(uid).unwrap_or(u32::MAX),
            gid: u32::try_from(gid).unwrap_or(u32::MAX),
            mtime: Timestamp {
                secs: i64::try_from(mtime).unwrap_or(i64::MAX),
                nanos: 0,
            },
            xattrs,
        });
    }
    Ok(out)
}

/// True if and only if `word` is an http(s) URL.
pub fn is_url(word: &str) -> bool {
    word.starts_with("http://") || word.starts_with("https://")
}

/// True if and only if `word` names a git repository (BuildKit's `ParseGitRef` shapes:
/// `git@host:…`, `git://…`, `ssh://…`, or an http(s) URL whose path ends in `.git`).
pub fn is_git(word: &str) -> bool {
    if word.starts_with("git@") || word.starts_with("git://") || word.starts_with("ssh://") {
        return true;
    }
    if !is_url(word) {
        return false;
    }
    let without_fragment = word.split('#').next().unwrap_or(word);
    let without_query = without_fragment
        .split('?')
        .next()
        .unwrap_or(without_fragment);
    without_query.ends_with(".git") || without_query.ends_with(".git/")
}

/// Turns COPY/ADD sources into [`Prepared`] ones: tree paths stay as they are, heredoc
/// bodies (already expanded) become 0644 files named after the delimiter with mtime `now`,
/// URLs (ADD only) are downloaded into `scratch` and checked against `checksum`.
///
/// # Errors
/// A URL in COPY, a git source, `--checksum` where BuildKit refuses it, a failed download
/// or a checksum mismatch, and scratch write errors.
pub fn prepare_sources(
    sources: &[CopySource],
    is_add: bool,
    checksum: Option<&str>,
    now: Timestamp,
    scratch: &Path,
) -> Result<Vec<Prepared>, CopyError> {
    if let Some(_digest) = checksum {
        let problem = if !is_add {
            Some("can't be specified for COPY")
        } else if sources.len() != 1 {
            Some("can't be specified for multiple sources")
        } else if !matches!(&sources[0], CopySource::Path { path } if is_url(path) || is_git(path))
        {
            Some("requires HTTP(S) or Git sources")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(CopyError::ChecksumMisuse { problem });
        }
    }
    let mut out = Vec::new();
    for source in sources {
        match source {
            CopySource::Path { path } if is_git(path) => {
                return Err(CopyError::GitUnsupported { url: path.clone() });
            }
            CopySource::Path { path } if is_url(path) => {
                if !is_add {
                    return Err(CopyError::UrlInCopy { url: path.clone() });
                }
                out.push(Prepared::File {
                    file: fetch_url(path, checksum, scratch)?,
                    download: true,
                });
            }
            CopySource::Path { path } => out.push(Prepared::Tree {
                pattern: path.clone(),
            }),
            CopySource::Heredoc(doc) => {
                let file = scratch_file(scratch, doc.body().as_bytes())?;
                let name = doc.name.trim_start_matches('/').to_owned();
                out.push(Prepared::File {
                    file: SingleFile {
                        stat: file_stat(0o644, doc.body().len() as u64, now),
                        name,
                        file,
                    },
                    download: false,
                });
            }
        }
    }
    Ok(out)
}

fn file_stat(mode: u32, size: u64, mtime: Timestamp) -> SourceStat {
    SourceStat {
        kind: SourceKind::File,
        mode,
        uid: 0,
        gid: 0,
        size,
        mtime,
        link_id: None,
    }
}

fn scratch_file(scratch: &Path, content: &[u8]) -> Result<std::path::PathBuf, CopyError> {
    let mut file = tempfile::Builder::new()
        .prefix("inline-")
        .tempfile_in(scratch)
        .map_err(|error| io_error(scratch, error))?;
    file.write_all(content)
        .map_err(|error| io_error(file.path(), error))?;
    let (_, path) = file
        .keep()
        .map_err(|error| io_error(scratch, error.error))?;
    Ok(path)
}

/// The name a download gets: the last segment of the URL path, percent-decoded, or
/// `__unnamed__` when there is none (BuildKit).
pub fn url_file_name(url: &str) -> String {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = after_scheme
        .split(['?', '#'])
        .next()
        .unwrap_or("")
        .split_once('/')
        .map_or("", |(_, path)| path);
    let last = path.trim_end_matches('/').rsplit('/').next().unwrap_or("");
    let decoded = percent_decode(last);
    if decoded.is_empty() || decoded == "." || decoded == ".." {
        "__unnamed__".to_owned()
    } else {
        decoded
    }
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Downloads `url` into `scratch` as ADD does: mode 0600, mtime from `Last-Modified` (the
/// epoch without it), verified against `checksum` (`sha256:`, `sha384:` or `sha512:`).
///
/// # Errors
/// [`CopyError::Download`] for transport errors and non-2xx statuses,
/// [`CopyError::ChecksumMismatch`] showing both digests.
pub fn fetch_url(
    url: &str,
    checksum: Option<&str>,
    scratch: &Path,
) -> Result<SingleFile, CopyError> {
    let failed = |reason: String| CopyError::Download {
        url: url.to_owned(),
        reason,
    };
    let response = ureq::get(url)
        .call()
        .map_err(|error| failed(error.to_string()))?;
    let mtime = response
        .header("Last-Modified")
        .and_then(parse_http_date)
        .unwrap_or_default();
    let mut reader = response.into_reader();
    let mut file = tempfile::Builder::new()
        .prefix("download-")
        .tempfile_in(scratch)
        .map_err(|error| io_error(scratch, error))?;
    let algorithm = checksum
        .and_then(|c| c.split_once(':'))
        .map_or("sha256", |(a, _)| a);
    let mut hasher: Box<dyn sha2::digest::DynDigest> = match algorithm {
        "sha384" => Box::new(Sha384::new()),
        "sha512" => Box::new(Sha512::new()),
        _ => Box::new(Sha256::new()),
    };
    let mut buffer = vec![0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let read = match reader.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(failed(error.to_string())),
        };
        hasher.update(&buffer[..read]);
        file.write_all(&buffer[..read])
            .map_err(|error| io_error(file.path(), error))?;
        size += read as u64;
    }
    let hex: String = hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    let actual = format!("{algorithm}:{hex}");
    if let Some(expected) = checksum {
        if expected != actual {
            return Err(CopyError::ChecksumMismatch {
                url: url.to_owned(),
                expected: expected.to_owned(),
                actual,
            });
        }
    }
    let (_, path) = file
        .keep()
        .map_err(|error| io_error(scratch, error.error))?;
    Ok(SingleFile {
        name: url_file_name(url),
        file: path,
        stat: file_stat(0o600, size, mtime),
    })
}

/// Parses an RFC 7231 IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn parse_http_date(text: &str) -> Option<Timestamp> {
    let parts: Vec<&str> = text.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts.as_slice() else {
        return None;
    };
    let day: i64 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let month = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ]
    .iter()
    .position(|m| m == month)? as i64
        + 1;
    let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next()??);
    // Days from civil (Howard Hinnant's algorithm).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(Timestamp {
        secs: days * 86_400 + h * 3600 + m * 60 + s,
        nanos: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_dates_and_sources() {
        let names = [
            ("http://h/a/b.tar.gz", "b.tar.gz"),
            ("http://h/", "__unnamed__"),
            ("http://h", "__unnamed__"),
            ("https://h/x%20y?q=1", "x y"),
            ("https://h/dir/", "dir"),
        ];
        for (url, name) in names {
            assert_eq!(url_file_name(url), name, "{url}");
        }
        assert_eq!(
            parse_http_date("Mon, 23 Nov 2026 10:59:04 GMT"),
            Some(Timestamp {
                secs: 1_795_431_544,
                nanos: 0
            })
        );
        assert_eq!(parse_http_date("yesterday"), None);
        assert!(is_git("https://github.com/o/r.git#main"));
        assert!(is_git("git@github.com:o/r"));
        assert!(!is_git("https://example.com/r.tar"));
    }
}
