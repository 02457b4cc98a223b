//! Unpacking: a layer tar stream → a snapshot directory.
//!
//! Consumes an uncompressed layer tar (ours or any image's: ustar, PAX and GNU headers);
//! produces the snapshot format described in the parent module (OCI whiteouts become overlay
//! whiteouts) and the stream's sha256, which is the layer's `diff_id`. Never creates anything
//! outside the snapshot: absolute names and `..` are refused and nothing is created through a
//! symlink (see `snapshot.rs`).

use super::snapshot::{Meta, Snapshot, Special};
use super::{
    check_path, LayerError, PathProblem, Result, Timestamp, OPAQUE_MARKER, WHITEOUT_PREFIX,
};
use crate::digest::{Digest, DigestReader};
use std::io::{self, Read};
use std::path::Path;

/// What [`unpack`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UnpackSummary {
    /// sha256 of the whole tar stream: the layer's `diff_id`.
    pub diff_id: Digest,
    /// Length of the tar stream in bytes.
    pub size: u64,
    /// Number of tar entries applied (whiteouts and opaque markers included).
    pub entries: u64,
    /// Entries the process had no privilege to create (device nodes when not root).
    pub skipped: u64,
}

/// Unpacks the layer tar `layer` into the directory `snapshot` (created when missing).
///
/// Later entries replace earlier ones at the same path; a directory over a directory keeps
/// the contents. Owners, xattrs and device nodes are applied when the process may.
///
/// # Errors
/// [`LayerError::Read`] for a broken stream, [`LayerError::UnsafeTarPath`] for absolute or
/// `..` names, [`LayerError::ThroughNonDirectory`] for an entry below a symlink or file,
/// [`LayerError::UnsupportedEntry`] for sparse and other exotic entries, [`LayerError::Fs`]
/// when the snapshot cannot be written.
pub fn unpack(layer: impl Read, snapshot: &Path) -> Result<UnpackSummary> {
    let mut snap = Snapshot::open(snapshot)?;
    let reader = DigestReader::new(layer);
    // Buffer above the hasher so it hashes large chunks rather than tar's 512-byte reads.
    let mut archive = tar::Archive::new(io::BufReader::with_capacity(1 << 20, reader));
    let mut entries = 0u64;
    for item in archive.entries().map_err(LayerError::Read)? {
        let mut entry = item.map_err(LayerError::Read)?;
        if apply_entry(&mut snap, &mut entry)? {
            entries += 1;
        }
    }
    // Bytes still in the buffer were hashed when they were read.
    let mut reader = archive.into_inner().into_inner();
    // The diff_id covers the whole stream, padding after the end blocks included.
    io::copy(&mut reader, &mut io::sink()).map_err(LayerError::Read)?;
    let skipped = snap.finish()?;
    let (_, diff_id, size) = reader.finish();
    Ok(UnpackSummary {
        diff_id,
        size,
        entries,
        skipped,
    })
}

/// Where a tar name points after cleaning.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Target {
    /// The root directory itself (`./`).
    Root,
    /// A path to create.
    Path(String),
    /// `<dir>/.wh.<name>`: remove `<dir>/<name>` of lower layers.
    Whiteout(String),
    /// `<dir>/.wh..wh..opq`: `<dir>` is opaque.
    Opaque(String),
}

/// Cleans a tar name: strips leading `./` and a trailing `/`, refuses absolute names and
/// `.`/`..` components, and recognizes whiteouts.
pub(super) fn clean_name(raw: &[u8]) -> std::result::Result<Target, PathProblem> {
    let text = std::str::from_utf8(raw).map_err(|_| PathProblem::NotUtf8)?;
    if text.starts_with('/') {
        return Err(PathProblem::Absolute);
    }
    let mut text = text;
    while let Some(rest) = text.strip_prefix("./") {
        text = rest.trim_start_matches('/');
    }
    let text = text.strip_suffix('/').unwrap_or(text);
    if text.is_empty() || text == "." {
        return Ok(Target::Root);
    }
    let (dir, name) = match text.rfind('/') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => ("", text),
    };
    if !dir.is_empty() {
        check_path(dir)?;
    }
    let join = |name: &str| {
        if dir.is_empty() {
            name.to_string()
        } else {
            format!("{dir}/{name}")
        }
    };
    if name == OPAQUE_MARKER {
        return if dir.is_empty() {
            Ok(Target::Opaque(String::new()))
        } else {
            Ok(Target::Opaque(dir.to_string()))
        };
    }
    if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
        check_path(hidden)?;
        return Ok(Target::Whiteout(join(hidden)));
    }
    check_path(name)?;
    Ok(Target::Path(join(name)))
}

/// Parses a PAX time (`secs[.frac]`, possibly negative).
pub(super) fn parse_pax_time(text: &str) -> Option<Timestamp> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
    let secs: i64 = whole.parse().ok()?;
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let mut nanos: u32 = 0;
    for (i, digit) in frac.bytes().take(9).enumerate() {
        nanos += u32::from(digit - b'0') * 10u32.pow(8 - i as u32);
    }
    Some(match (negative, nanos) {
        (false, _) => Timestamp { secs, nanos },
        (true, 0) => Timestamp {
            secs: -secs,
            nanos: 0,
        },
        (true, n) => Timestamp {
            secs: -secs - 1,
            nanos: 1_000_000_000 - n,
        },
    })
}

/// Applies one tar entry; returns false for entries that carry nothing (global headers, the
/// root directory).
fn apply_entry<R: Read>(snap: &mut Snapshot, entry: &mut tar::Entry<R>) -> Result<bool> {
    let raw_path = entry.path_bytes().into_owned();
    let shown = String::from_utf8_lossy(&raw_path).into_owned();
    let unsafe_path = |problem| LayerError::UnsafeTarPath {
        path: shown.clone(),
        problem,
    };
    let kind = entry.header().entry_type();
    if kind == tar::EntryType::XGlobalHeader {
        return Ok(false);
    }
    let target = clean_name(&raw_path).map_err(unsafe_path)?;

    let header = entry.header();
    let mut mode = header.mode().map_err(LayerError::Read)? & 0o7777;
    let mut uid = header.uid().map_err(LayerError::Read)?;
    let mut gid = header.gid().map_err(LayerError::Read)?;
    let mut mtime = Timestamp {
        secs: header.mtime().map_err(LayerError::Read)? as i64,
        nanos: 0,
    };
    // GNU tar leaves the device fields blank for non-devices, so read them only for devices.
    let device = if matches!(kind, tar::EntryType::Char | tar::EntryType::Block) {
        (
            header
                .device_major()
                .map_err(LayerError::Read)?
                .unwrap_or(0),
            header
                .device_minor()
                .map_err(LayerError::Read)?
                .unwrap_or(0),
        )
    } else {
        (0, 0)
    };
    let link = entry.link_name_bytes().map(|l| l.into_owned());
    let mut xattrs = Vec::new();
    if let Some(extensions) = entry.pax_extensions().map_err(LayerError::Read)? {
        for ext in extensions {
            let ext = ext.map_err(LayerError::Read)?;
            let (Ok(key), value) = (ext.key(), ext.value_bytes()) else {
                continue;
            };
            let text = std::str::from_utf8(value).ok();
            match key {
                "uid" => uid = text.and_then(|t| t.parse().ok()).unwrap_or(uid),
                "gid" => gid = text.and_then(|t| t.parse().ok()).unwrap_or(gid),
                "mtime" => mtime = text.and_then(parse_pax_time).unwrap_or(mtime),
                _ => {
                    if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                        xattrs.push((name.to_string(), value.to_vec()));
                    }
                }
            }
        }
    }
    let (Ok(uid), Ok(gid)) = (u32::try_from(uid), u32::try_from(gid)) else {
        return Err(LayerError::Read(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("tar entry {shown:?}: owner {uid}:{gid} expected 32-bit ids"),
        )));
    };

    let rel = match target {
        Target::Root => return Ok(false),
        Target::Whiteout(rel) => {
            snap.whiteout(&rel)?;
            return Ok(true);
        }
        Target::Opaque(rel) => {
            snap.opaque(&rel)?;
            return Ok(true);
        }
        Target::Path(rel) => rel,
    };
    if kind == tar::EntryType::Directory {
        // Docker keeps set-id and sticky bits on directories.
        mode &= 0o7777;
    }
    let meta = Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs: &xattrs,
    };
    let link_text = || -> Result<String> {
        let bytes = link.clone().unwrap_or_default();
        String::from_utf8(bytes).map_err(|_| unsafe_path(PathProblem::NotUtf8))
    };
    match kind {
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            let (mut file, host) = snap.create_file(&rel)?;
            io::copy(entry, &mut file).map_err(|error| LayerError::Fs {
                op: "write",
                path: host.clone(),
                error,
            })?;
            drop(file);
            snap.set_meta(&host, &meta, false)?;
        }
        tar::EntryType::Directory => snap.dir(&rel, &meta)?,
        tar::EntryType::Symlink => {
            let target = link_text()?;
            snap.special(&rel, Special::Symlink(&target), &meta)?;
        }
        tar::EntryType::Link => {
            let target = match clean_name(link.as_deref().unwrap_or_default()) {
                Ok(Target::Path(target)) => target,
                Ok(_) => return Err(unsafe_path(PathProblem::Reserved)),
                Err(problem) => return Err(unsafe_path(problem)),
            };
            snap.hardlink(&rel, &target)?;
        }
        tar::EntryType::Char => snap.special(&rel, Special::Char(device.0, device.1), &meta)?,
        tar::EntryType::Block => snap.special(&rel, Special::Block(device.0, device.1), &meta)?,
        tar::EntryType::Fifo => snap.special(&rel, Special::Fifo, &meta)?,
        other => {
            return Err(LayerError::UnsupportedEntry {
                path: shown,
                kind: char::from(other.as_byte()),
            })
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_name_table() {
        let path = |s: &str| Ok(Target::Path(s.to_string()));
        let cases: Vec<(&str, std::result::Result<Target, PathProblem>)> = vec![
            ("a", path("a")),
            ("./a/b", path("a/b")),
            ("a/b/", path("a/b")),
            ("./", Ok(Target::Root)),
            (".", Ok(Target::Root)),
            ("a/.wh.b", Ok(Target::Whiteout("a/b".into()))),
            (".wh.b", Ok(Target::Whiteout("b".into()))),
            ("a/.wh..wh..opq", Ok(Target::Opaque("a".into()))),
            (".wh..wh..opq", Ok(Target::Opaque(String::new()))),
            ("/etc/passwd", Err(PathProblem::Absolute)),
            ("../x", Err(PathProblem::DotDot)),
            ("a/../../x", Err(PathProblem::DotDot)),
            ("a/..", Err(PathProblem::DotDot)),
            ("a/.wh...", Err(PathProblem::DotDot)),
            ("a/.wh.", Err(PathProblem::Empty)),
            ("a/.wh.x/b", Err(PathProblem::Reserved)),
            ("a//b", Err(PathProblem::EmptyComponent)),
        ];
        for (raw, want) in cases {
            assert_eq!(clean_name(raw.as_bytes()), want, "{raw:?}");
        }
        assert_eq!(clean_name(b"a\xff"), Err(PathProblem::NotUtf8));
    }

    #[test]
    fn parse_pax_time_table() {
        let t = |secs, nanos| Some(Timestamp { secs, nanos });
        let cases = [
            ("0", t(0, 0)),
            ("1700000000", t(1_700_000_000, 0)),
            ("1.5", t(1, 500_000_000)),
            ("1.000000001", t(1, 1)),
            ("1.0000000019", t(1, 1)),
            ("-1.5", t(-2, 500_000_000)),
            ("-3", t(-3, 0)),
            ("x", None),
            ("1.x", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_pax_time(text), want, "{text:?}");
        }
    }
}
