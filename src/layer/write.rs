//! The layer writer: [`LayerEntry`] lists → a reproducible tar, hashed while it is written.
//!
//! Consumes entries and the host files their content comes from; produces the tar bytes on a
//! `Write`, the `diff_id` (sha256 of those bytes) and optionally the same entries as a
//! snapshot directory. Never holds a file's content in memory beyond one copy buffer.
//!
//! # Format (the reproducibility rules live here and nowhere else)
//!
//! The bytes follow what BuildKit (Go's `archive/tar`) writes for image layers, checked
//! against a `docker save` of dockerd 20.10, except that owner names are never written:
//!
//! - Order: depth first. A directory comes before everything inside it; inside a directory the
//!   opaque marker `.wh..wh..opq` comes first, then the `.wh.<name>` whiteouts, then the other
//!   children, each group in byte order of name.
//! - ustar headers (magic `ustar\0`, version `00`); numeric fields are zero-padded octal with a
//!   trailing NUL (7 digits for mode/uid/gid/devices, 11 for size/mtime); the checksum is 6
//!   digits, NUL, space; `uname`, `gname` and `prefix` are empty; device fields are `0000000`
//!   for non-devices.
//! - The mode field carries the file type bits as Go's `FileInfoHeader` does (`0040755`,
//!   `0100644`, `0120777`, …); whiteouts and the opaque marker are regular files (type `0`,
//!   size 0) whose mode is exactly the entry's permission bits, without type bits.
//! - Directory names end with `/`. Hard links are type `1` with size 0 and the mode of a regular
//!   file. Symlinks are type `2`.
//! - A PAX extended header (type `x`, named `<dir>/PaxHeaders.0/<base>` cut to 100 bytes, mode,
//!   owner and mtime 0) precedes an entry when needed, its records sorted by key: `path` when the
//!   name is over 100 bytes or not ASCII (the header name field then holds its first 100
//!   bytes), `linkpath` likewise, `uid`/`gid` above 2097151, `size` above 8 GiB − 1, `mtime`
//!   when nanoseconds are non-zero or seconds are negative or too large (`secs.frac` with
//!   trailing zeros trimmed), `SCHILY.xattr.<name>` per xattr.
//! - The archive ends with two zero blocks and no further padding.

use super::snapshot::{Meta, Snapshot, Special};
use super::{
    check_path, EntryKind, LayerEntry, LayerError, Result, Timestamp, OPAQUE_MARKER,
    WHITEOUT_PREFIX,
};
use crate::digest::{BackgroundDigestWriter, Digest};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

/// What [`write_layer`] wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerSummary {
    /// sha256 of the uncompressed tar: the layer's `diff_id`.
    pub diff_id: Digest,
    /// Length of the tar in bytes.
    pub size: u64,
    /// Number of entries written.
    pub entries: u64,
}

const BLOCK: usize = 512;
const MAX_OCTAL_7: u64 = 0o7777777;
const MAX_OCTAL_11: u64 = 0o77777777777;
const COPY_BUFFER: usize = 256 * 1024;

/// Writes `entries` as a layer tar to `out` (and, when `snapshot` is given, into that
/// directory in snapshot format), in the order and format described in the module doc.
///
/// Content of `File` entries is streamed from their `source`.
///
/// # Errors
/// Before anything is written: [`LayerError::InvalidPath`], [`LayerError::Duplicate`],
/// [`LayerError::MissingParent`], [`LayerError::ParentNotDirectory`],
/// [`LayerError::HardlinkTarget`], [`LayerError::InvalidXattr`], [`LayerError::DeviceNumber`].
/// While writing: [`LayerError::Source`], [`LayerError::SourceNotFile`],
/// [`LayerError::SourceChanged`], [`LayerError::Write`], and [`LayerError::Fs`] for the snapshot.
pub fn write_layer(
    mut entries: Vec<LayerEntry>,
    out: impl Write,
    snapshot: Option<&Path>,
) -> Result<LayerSummary> {
    for entry in &entries {
        validate_entry(entry)?;
    }
    entries.sort_by(compare_entries);
    first_link_carries_content(&mut entries);
    check_structure(&entries)?;

    let mut snap = snapshot.map(Snapshot::open).transpose()?;
    // Headers are small writes; buffer them (after hashing, so the digest is unaffected).
    let mut tar = BackgroundDigestWriter::new(std::io::BufWriter::with_capacity(1 << 20, out));
    let mut buffer = vec![0u8; COPY_BUFFER];
    for entry in &entries {
        write_entry(&mut tar, entry, snap.as_mut(), &mut buffer)?;
    }
    tar.write_all(&[0u8; 2 * BLOCK])
        .map_err(LayerError::Write)?;
    tar.flush().map_err(LayerError::Write)?;
    if let Some(snap) = snap {
        snap.finish()?;
    }
    let (_, diff_id, size) = tar.finish().map_err(LayerError::Write)?;
    Ok(LayerSummary {
        diff_id,
        size,
        entries: entries.len() as u64,
    })
}

/// Gives every entry whole-second times, and when `limit` is given, the time `limit` to
/// every entry newer than it: SOURCE_DATE_EPOCH's clamp (BuildKit's `rewrite-timestamp`),
/// applied to the layers a build makes and never to a base image's.
///
/// BuildKit's layers carry whole seconds only (no PAX mtime records), so the same files give
/// the same layer bytes.
pub fn clamp_mtimes(entries: &mut [LayerEntry], limit: Option<i64>) {
    for entry in entries {
        entry.mtime.nanos = 0;
        if let Some(limit) = limit {
            entry.mtime.secs = entry.mtime.secs.min(limit);
        }
    }
}

fn validate_entry(entry: &LayerEntry) -> Result<()> {
    check_path(&entry.path).map_err(|problem| LayerError::InvalidPath {
        path: entry.path.clone(),
        problem,
    })?;
    if let EntryKind::Hardlink { target } = &entry.kind {
        check_path(target).map_err(|problem| LayerError::InvalidPath {
            path: target.clone(),
            problem,
        })?;
    }
    if let EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } =
        entry.kind
    {
        if u64::from(major) > MAX_OCTAL_7 || u64::from(minor) > MAX_OCTAL_7 {
            return Err(LayerError::DeviceNumber {
                path: entry.path.clone(),
                major,
                minor,
            });
        }
    }
    for (name, _) in &entry.xattrs {
        if name.is_empty() || name.contains('=') || name.contains('\0') {
            return Err(LayerError::InvalidXattr {
                path: entry.path.clone(),
                name: name.clone(),
            });
        }
    }
    Ok(())
}

/// The components of the name an entry has in the tar, each with its sort class: 0 for the
/// opaque marker, 1 for a whiteout, 2 for the rest.
fn tar_components(entry: &LayerEntry) -> impl Iterator<Item = (u8, &str)> {
    let parts = entry.path.split('/');
    let count = entry.path.split('/').count();
    let whiteout = matches!(entry.kind, EntryKind::Whiteout);
    let opaque = matches!(entry.kind, EntryKind::Opaque);
    parts
        .enumerate()
        .map(move |(i, part)| {
            if whiteout && i + 1 == count {
                (1, part)
            } else {
                (2, part)
            }
        })
        .chain(opaque.then_some((0, "")))
}

/// Depth-first order of tar names; see the module doc.
pub(super) fn compare_entries(a: &LayerEntry, b: &LayerEntry) -> Ordering {
    tar_components(a)
        .map(|(class, name)| (class, name.as_bytes()))
        .cmp(tar_components(b).map(|(class, name)| (class, name.as_bytes())))
}

/// Gives the content of a hard-linked file to whichever of its names is written first, as a tar
/// of a real tree would: when a `Hardlink` sorts before the `File` it names, the two swap roles
/// (and any other links to that file point at the first name).
fn first_link_carries_content(entries: &mut [LayerEntry]) {
    if !entries
        .iter()
        .any(|e| matches!(e.kind, EntryKind::Hardlink { .. }))
    {
        return;
    }
    let index: HashMap<String, usize> = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e.kind, EntryKind::File { .. }))
        .map(|(i, e)| (e.path.clone(), i))
        .collect();
    // For each linked file: the smallest index among the file and its links.
    let mut first: HashMap<usize, usize> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        if let EntryKind::Hardlink { target } = &entry.kind {
            if let Some(&file) = index.get(target.as_str()) {
                let slot = first.entry(file).or_insert(file);
                *slot = (*slot).min(i);
            }
        }
    }
    for (file, lead) in first {
        if lead == file {
            continue;
        }
        let lead_path = entries[lead].path.clone();
        let file_path = entries[file].path.clone();
        let content = std::mem::replace(
            &mut entries[file].kind,
            EntryKind::Hardlink {
                target: lead_path.clone(),
            },
        );
        entries[lead].kind = content;
        for entry in entries.iter_mut() {
            if let EntryKind::Hardlink { target } = &mut entry.kind {
                if *target == file_path && entry.path != file_path {
                    target.clone_from(&lead_path);
                }
            }
        }
    }
}

fn parent_of(path: &str) -> Option<&str> {
    path.rfind('/').map(|i| &path[..i])
}

/// Checks duplicates, parents and hard link targets of the sorted entries.
fn check_structure(entries: &[LayerEntry]) -> Result<()> {
    // Index of each real (non-marker) entry in write order.
    let mut real: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    let mut whiteouts: HashMap<&str, ()> = HashMap::new();
    let mut opaques: HashMap<&str, ()> = HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let seen = match entry.kind {
            EntryKind::Opaque => opaques.insert(&entry.path, ()).is_some(),
            EntryKind::Whiteout => {
                whiteouts.insert(&entry.path, ()).is_some() || real.contains_key(&*entry.path)
            }
            _ => real.insert(&entry.path, i).is_some() || whiteouts.contains_key(&*entry.path),
        };
        if seen {
            return Err(LayerError::Duplicate {
                path: entry.path.clone(),
            });
        }
    }
    let is_dir = |path: &str| -> Option<bool> {
        real.get(path)
            .map(|&i| matches!(entries[i].kind, EntryKind::Dir))
    };
    for (i, entry) in entries.iter().enumerate() {
        let parent = match entry.kind {
            EntryKind::Opaque => Some(entry.path.as_str()),
            _ => parent_of(&entry.path),
        };
        if let Some(parent) = parent {
            match is_dir(parent) {
                Some(true) => {}
                Some(false) => {
                    return Err(LayerError::ParentNotDirectory {
                        path: entry.path.clone(),
                        parent: parent.to_string(),
                    })
                }
                None => {
                    return Err(LayerError::MissingParent {
                        path: entry.path.clone(),
                        parent: parent.to_string(),
                    })
                }
            }
        }
        if let EntryKind::Hardlink { target } = &entry.kind {
            let ok = real.get(target.as_str()).is_some_and(|&t| {
                t < i
                    && !matches!(
                        entries[t].kind,
                        EntryKind::Dir | EntryKind::Whiteout | EntryKind::Opaque
                    )
            });
            if !ok {
                return Err(LayerError::HardlinkTarget {
                    path: entry.path.clone(),
                    target: target.clone(),
                });
            }
        }
    }
    Ok(())
}

/// The name an entry has in the tar.
fn tar_name(entry: &LayerEntry) -> String {
    match entry.kind {
        EntryKind::Dir => format!("{}/", entry.path),
        EntryKind::Opaque => format!("{}/{OPAQUE_MARKER}", entry.path),
        EntryKind::Whiteout => match entry.path.rfind('/') {
            Some(i) => format!(
                "{}/{WHITEOUT_PREFIX}{}",
                &entry.path[..i],
                &entry.path[i + 1..]
            ),
            None => format!("{WHITEOUT_PREFIX}{}", entry.path),
        },
        _ => entry.path.clone(),
    }
}

/// Header fields of one tar entry before encoding.
pub(super) struct Fields<'a> {
    pub name: &'a str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: Timestamp,
    pub typeflag: u8,
    pub link: &'a str,
    pub device: (u32, u32),
    pub xattrs: &'a [(String, Vec<u8>)],
}

/// Writes `octal` digits of `value` zero-padded to `dst.len() - 1` digits plus a NUL.
fn octal(dst: &mut [u8], value: u64) {
    let width = dst.len() - 1;
    let text = format!("{value:0width$o}");
    let bytes = text.as_bytes();
    // Callers only pass values that fit; keep the low digits if one ever does not.
    let start = bytes.len().saturating_sub(width);
    dst[..width].copy_from_slice(&bytes[start..]);
    dst[width] = 0;
}

fn put_name(dst: &mut [u8; 100], name: &[u8]) {
    let n = name.len().min(dst.len());
    dst[..n].copy_from_slice(&name[..n]);
}

fn needs_pax_text(text: &str) -> bool {
    text.len() > 100 || !text.is_ascii()
}

/// Formats a PAX time the way Go's `archive/tar` does.
fn pax_time(t: Timestamp) -> String {
    if t.nanos == 0 {
        return t.secs.to_string();
    }
    let (sign, secs, nanos) = if t.secs < 0 {
        ("-", -(t.secs + 1), 1_000_000_000 - i64::from(t.nanos))
    } else {
        ("", t.secs, i64::from(t.nanos))
    };
    let text = format!("{sign}{secs}.{nanos:09}");
    text.trim_end_matches('0').to_string()
}

/// One PAX record, `"<len> <key>=<value>\n"` where `len` counts the whole record.
fn pax_record(out: &mut Vec<u8>, key: &str, value: &[u8]) {
    let body = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = body + 1;
    while len != body + len.to_string().len() {
        len = body + len.to_string().len();
    }
    out.extend_from_slice(len.to_string().as_bytes());
    out.push(b' ');
    out.extend_from_slice(key.as_bytes());
    out.push(b'=');
    out.extend_from_slice(value);
    out.push(b'\n');
}

fn finish_header(header: &mut tar::Header) {
    let bytes = header.as_mut_bytes();
    bytes[148..156].fill(b' ');
    let sum: u64 = bytes.iter().map(|&b| u64::from(b)).sum();
    octal(&mut bytes[148..155], sum);
    bytes[155] = b' ';
}

fn blank_ustar() -> tar::Header {
    let mut header = tar::Header::new_ustar();
    // Keep only the magic and version `new_ustar` wrote; every other field is set by the caller.
    let bytes = header.as_mut_bytes();
    bytes[100..257].fill(0);
    bytes[265..].fill(0);
    header
}

/// Encodes the header block(s) for `f`: an optional PAX header with its records, then the
/// ustar header.
pub(super) fn encode_header(f: &Fields) -> Vec<u8> {
    let mut records: Vec<(String, Vec<u8>)> = Vec::new();
    if needs_pax_text(f.name) {
        records.push(("path".into(), f.name.as_bytes().to_vec()));
    }
    if needs_pax_text(f.link) {
        records.push(("linkpath".into(), f.link.as_bytes().to_vec()));
    }
    let uid_fits = u64::from(f.uid) <= MAX_OCTAL_7;
    let gid_fits = u64::from(f.gid) <= MAX_OCTAL_7;
    if !uid_fits {
        records.push(("uid".into(), f.uid.to_string().into_bytes()));
    }
    if !gid_fits {
        records.push(("gid".into(), f.gid.to_string().into_bytes()));
    }
    let size_fits = f.size <= MAX_OCTAL_11;
    if !size_fits {
        records.push(("size".into(), f.size.to_string().into_bytes()));
    }
    let secs_fit = u64::try_from(f.mtime.secs).is_ok_and(|s| s <= MAX_OCTAL_11);
    if !secs_fit || f.mtime.nanos != 0 {
        records.push(("mtime".into(), pax_time(f.mtime).into_bytes()));
    }
    for (name, value) in f.xattrs {
        records.push((format!("SCHILY.xattr.{name}"), value.clone()));
    }
    records.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));

    let mut out = Vec::with_capacity(BLOCK * 3);
    if !records.is_empty() {
        let mut body = Vec::new();
        for (key, value) in &records {
            pax_record(&mut body, key, value);
        }
        let (dir, base) = match f.name.rfind('/') {
            Some(i) => (&f.name[..i + 1], &f.name[i + 1..]),
            None => ("", f.name),
        };
        let pax_name = if base.is_empty() {
            format!("{dir}PaxHeaders.0")
        } else {
            format!("{dir}PaxHeaders.0/{base}")
        };
        let mut header = blank_ustar();
        {
            let ustar = header.as_ustar_mut().expect("ustar");
            put_name(&mut ustar.name, pax_name.as_bytes());
            octal(&mut ustar.mode, 0);
            octal(&mut ustar.uid, 0);
            octal(&mut ustar.gid, 0);
            octal(&mut ustar.size, body.len() as u64);
            octal(&mut ustar.mtime, 0);
            ustar.typeflag = [b'x'];
        }
        finish_header(&mut header);
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(&body);
        out.resize(out.len().div_ceil(BLOCK) * BLOCK, 0);
    }

    let mut header = blank_ustar();
    {
        let ustar = header.as_ustar_mut().expect("ustar");
        put_name(&mut ustar.name, f.name.as_bytes());
        octal(&mut ustar.mode, u64::from(f.mode));
        octal(&mut ustar.uid, if uid_fits { u64::from(f.uid) } else { 0 });
        octal(&mut ustar.gid, if gid_fits { u64::from(f.gid) } else { 0 });
        octal(&mut ustar.size, if size_fits { f.size } else { 0 });
        let secs = if secs_fit { f.mtime.secs as u64 } else { 0 };
        octal(&mut ustar.mtime, secs);
        ustar.typeflag = [f.typeflag];
        put_name(&mut ustar.linkname, f.link.as_bytes());
        octal(&mut ustar.dev_major, u64::from(f.device.0));
        octal(&mut ustar.dev_minor, u64::from(f.device.1));
    }
    finish_header(&mut header);
    out.extend_from_slice(header.as_bytes());
    out
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFIFO: u32 = 0o010000;
const S_IFCHR: u32 = 0o020000;
const S_IFBLK: u32 = 0o060000;

fn write_entry<W: Write>(
    tar: &mut BackgroundDigestWriter<W>,
    entry: &LayerEntry,
    snap: Option<&mut Snapshot>,
    buffer: &mut [u8],
) -> Result<()> {
    let name = tar_name(entry);
    let perm = entry.mode & 0o7777;
    let meta = Meta {
        mode: perm,
        uid: entry.uid,
        gid: entry.gid,
        mtime: entry.mtime,
        xattrs: &entry.xattrs,
    };
    let mut fields = Fields {
        name: &name,
        mode: perm,
        uid: entry.uid,
        gid: entry.gid,
        size: 0,
        mtime: entry.mtime,
        typeflag: b'0',
        link: "",
        device: (0, 0),
        xattrs: &entry.xattrs,
    };
    let put = |tar: &mut BackgroundDigestWriter<W>, f: &Fields| {
        tar.write_all(&encode_header(f)).map_err(LayerError::Write)
    };
    match &entry.kind {
        EntryKind::File { source } => {
            return write_file(tar, entry, source, fields, snap, &meta, buffer);
        }
        EntryKind::Dir => {
            fields.mode |= S_IFDIR;
            fields.typeflag = b'5';
            put(tar, &fields)?;
            if let Some(snap) = snap {
                snap.dir(&entry.path, &meta)?;
            }
        }
        EntryKind::Symlink { target } => {
            fields.mode |= S_IFLNK;
            fields.typeflag = b'2';
            fields.link = target;
            put(tar, &fields)?;
            if let Some(snap) = snap {
                snap.special(&entry.path, Special::Symlink(target), &meta)?;
            }
        }
        EntryKind::Hardlink { target } => {
            fields.mode |= S_IFREG;
            fields.typeflag = b'1';
            fields.link = target;
            put(tar, &fields)?;
            if let Some(snap) = snap {
                snap.hardlink(&entry.path, target)?;
            }
        }
        EntryKind::Fifo => {
            fields.mode |= S_IFIFO;
            fields.typeflag = b'6';
            put(tar, &fields)?;
            if let Some(snap) = snap {
                snap.special(&entry.path, Special::Fifo, &meta)?;
            }
        }
        EntryKind::CharDevice { major, minor } | EntryKind::BlockDevice { major, minor } => {
            let block = matches!(entry.kind, EntryKind::BlockDevice { .. });
            fields.mode |= if block { S_IFBLK } else { S_IFCHR };
            fields.typeflag = if block { b'4' } else { b'3' };
            fields.device = (*major, *minor);
            put(tar, &fields)?;
            if let Some(snap) = snap {
                let node = if block {
                    Special::Block(*major, *minor)
                } else {
                    Special::Char(*major, *minor)
                };
                snap.special(&entry.path, node, &meta)?;
            }
        }
        EntryKind::Whiteout => {
            put(tar, &fields)?;
            if let Some(snap) = snap {
                snap.whiteout(&entry.path)?;
            }
        }
        EntryKind::Opaque => {
            put(tar, &fields)?;
            if let Some(snap) = snap {
                snap.opaque(&entry.path)?;
            }
        }
    }
    Ok(())
}

fn write_file<W: Write>(
    tar: &mut BackgroundDigestWriter<W>,
    entry: &LayerEntry,
    source: &Path,
    mut fields: Fields,
    snap: Option<&mut Snapshot>,
    meta: &Meta,
    buffer: &mut [u8],
) -> Result<()> {
    let source_err = |error| LayerError::Source {
        path: entry.path.clone(),
        source_path: source.to_path_buf(),
        error,
    };
    let mut file = std::fs::File::open(source).map_err(source_err)?;
    let stat = file.metadata().map_err(source_err)?;
    if !stat.is_file() {
        return Err(LayerError::SourceNotFile {
            path: entry.path.clone(),
            source_path: source.to_path_buf(),
        });
    }
    let size = stat.len();
    fields.mode |= S_IFREG;
    fields.size = size;
    tar.write_all(&encode_header(&fields))
        .map_err(LayerError::Write)?;
    let mut copy = match snap {
        Some(snap) => Some((snap.create_file(&entry.path)?, snap)),
        None => None,
    };
    let mut left = size;
    while left > 0 {
        let want = buffer
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = file.read(&mut buffer[..want]).map_err(source_err)?;
        if n == 0 {
            return Err(LayerError::SourceChanged {
                path: entry.path.clone(),
                source_path: source.to_path_buf(),
                expected: size,
                found: size - left,
            });
        }
        tar.write_all(&buffer[..n]).map_err(LayerError::Write)?;
        if let Some(((out, host), _)) = copy.as_mut() {
            out.write_all(&buffer[..n])
                .map_err(|error| LayerError::Fs {
                    op: "write",
                    path: host.clone(),
                    error,
                })?;
        }
        left -= n as u64;
    }
    if file.read(&mut buffer[..1]).map_err(source_err)? != 0 {
        return Err(LayerError::SourceChanged {
            path: entry.path.clone(),
            source_path: source.to_path_buf(),
            expected: size,
            found: size + 1,
        });
    }
    let pad = (BLOCK - (size % BLOCK as u64) as usize) % BLOCK;
    tar.write_all(&[0u8; BLOCK][..pad])
        .map_err(LayerError::Write)?;
    if let Some(((out, host), snap)) = copy {
        drop(out);
        snap.set_meta(&host, meta, false)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn clamp_mtimes_clamps_only_newer_entries_and_drops_nanoseconds() {
        // (secs, nanos, limit, expected secs)
        let table: &[(i64, u32, Option<i64>, i64)] = &[
            (100, 5, None, 100),
            (100, 5, Some(50), 50),
            (100, 0, Some(100), 100),
            (10, 999, Some(50), 10),
            (-5, 1, Some(0), -5),
        ];
        for &(secs, nanos, limit, expected) in table {
            let mut entries = vec![LayerEntry {
                path: "f".into(),
                kind: EntryKind::Dir,
                mode: 0o755,
                uid: 0,
                gid: 0,
                mtime: Timestamp { secs, nanos },
                xattrs: Vec::new(),
            }];
            clamp_mtimes(&mut entries, limit);
            let want = Timestamp {
                secs: expected,
                nanos: 0,
            };
            assert_eq!(entries[0].mtime, want, "{secs} {nanos} {limit:?}");
        }
    }

    use super::*;
    use std::path::PathBuf;

    fn entry(path: &str, kind: EntryKind) -> LayerEntry {
        LayerEntry {
            path: path.to_string(),
            kind,
            mode: 0o755,
            uid: 0,
            gid: 0,
            mtime: Timestamp {
                secs: 1_700_000_000,
                nanos: 0,
            },
            xattrs: Vec::new(),
        }
    }

    fn dir(path: &str) -> LayerEntry {
        entry(path, EntryKind::Dir)
    }

    fn link(path: &str, target: &str) -> LayerEntry {
        entry(
            path,
            EntryKind::Symlink {
                target: target.into(),
            },
        )
    }

    #[test]
    fn order_is_depth_first_with_markers_first() {
        let mut entries = vec![
            link("b/z", "x"),
            dir("b"),
            entry("b/sub", EntryKind::Whiteout),
            link("a-b", "x"),
            entry("b", EntryKind::Opaque),
            dir("a"),
            link("a/c", "x"),
            entry("b/a", EntryKind::Whiteout),
            dir("b/y"),
            link("b/y/q", "x"),
            link("B", "x"),
            link("b/.hidden", "x"),
        ];
        entries.sort_by(compare_entries);
        let names: Vec<String> = entries.iter().map(tar_name).collect();
        assert_eq!(
            names,
            [
                "B",
                "a/",
                "a/c",
                "a-b",
                "b/",
                "b/.wh..wh..opq",
                "b/.wh.a",
                "b/.wh.sub",
                "b/.hidden",
                "b/y/",
                "b/y/q",
                "b/z",
            ]
        );
    }

    #[test]
    fn structure_errors() {
        let hard = |path: &str, target: &str| {
            entry(
                path,
                EntryKind::Hardlink {
                    target: target.into(),
                },
            )
        };
        let cases: Vec<(Vec<LayerEntry>, &str)> = vec![
            (vec![dir("a"), dir("a")], "duplicate layer entry \"a\""),
            (
                vec![dir("a"), link("a/b", "x"), entry("a/b", EntryKind::Whiteout)],
                "duplicate layer entry \"a/b\"",
            ),
            (
                vec![dir("a"), entry("a", EntryKind::Opaque), entry("a", EntryKind::Opaque)],
                "duplicate layer entry \"a\"",
            ),
            (
                vec![link("a/b", "x")],
                "layer entry \"a/b\" expected its parent directory \"a\" in the layer",
            ),
            (
                vec![entry("a", EntryKind::Opaque)],
                "layer entry \"a\" expected its parent directory \"a\" in the layer",
            ),
            (
                vec![link("a", "x"), link("a/b", "x")],
                "layer entry \"a/b\" expected \"a\" to be a directory",
            ),
            (
                vec![hard("a", "b"), link("b", "x")],
                "hard link \"a\" expected \"b\" to be a non-directory entry earlier in the layer",
            ),
            (
                vec![dir("d"), hard("a", "d")],
                "hard link \"a\" expected \"d\" to be a non-directory entry earlier in the layer",
            ),
            (
                vec![hard("a", "nothing")],
                "hard link \"a\" expected \"nothing\" to be a non-directory entry earlier in the layer",
            ),
            (vec![dir("/a")], "invalid layer path \"/a\": expected a relative path, found a leading '/'"),
            (vec![dir("a/../b")], "invalid layer path \"a/../b\": expected no '..' component"),
            (
                vec![hard("a", "../etc/passwd")],
                "invalid layer path \"../etc/passwd\": expected no '..' component",
            ),
            (
                vec![LayerEntry {
                    xattrs: vec![("a=b".into(), vec![])],
                    ..dir("a")
                }],
                "layer entry \"a\": invalid xattr name \"a=b\"",
            ),
            (
                vec![entry(
                    "dev",
                    EntryKind::CharDevice {
                        major: 1 << 22,
                        minor: 0,
                    },
                )],
                "layer entry \"dev\": device 4194304:0 expected numbers below 2097152",
            ),
        ];
        for (entries, want) in cases {
            let mut out = Vec::new();
            let err = write_layer(entries, &mut out, None).unwrap_err();
            assert_eq!(err.to_string(), want);
            assert!(
                out.is_empty(),
                "nothing is written before validation: {want}"
            );
        }
    }

    #[test]
    fn pax_records_count_their_own_length() {
        let cases: &[(&str, &[u8], &str)] = &[
            ("path", b"a", "9 path=a\n"),
            ("path", &[b'x'; 90], ""),
            ("uid", b"4294967295", "18 uid=4294967295\n"),
        ];
        for (key, value, want) in cases {
            let mut out = Vec::new();
            pax_record(&mut out, key, value);
            let text = String::from_utf8(out).unwrap();
            let (len, _) = text.split_once(' ').unwrap();
            assert_eq!(len.parse::<usize>().unwrap(), text.len(), "{text:?}");
            if !want.is_empty() {
                assert_eq!(text, *want);
            }
        }
    }

    #[test]
    fn pax_time_table() {
        let t = |secs, nanos| Timestamp { secs, nanos };
        let cases = [
            (t(0, 0), "0"),
            (t(1_700_000_000, 0), "1700000000"),
            (t(1, 500_000_000), "1.5"),
            (t(1, 1), "1.000000001"),
            (t(-2, 500_000_000), "-1.5"),
            (t(-3, 0), "-3"),
        ];
        for (time, want) in cases {
            assert_eq!(pax_time(time), want);
            assert_eq!(super::super::unpack::parse_pax_time(want), Some(time));
        }
    }

    #[test]
    fn octal_fields_match_go() {
        let cases: &[(usize, u64, &[u8])] = &[
            (8, 0o755, b"0000755\0"),
            (8, 0o40755, b"0040755\0"),
            (12, 3, b"00000000003\0"),
            (12, 0o77777777777, b"77777777777\0"),
        ];
        for (width, value, want) in cases {
            let mut field = vec![0xffu8; *width];
            octal(&mut field, *value);
            assert_eq!(&field, want);
        }
    }

    /// The header of a short-named file is one block; a long name or nanoseconds add a PAX
    /// header named the way Go names it.
    #[test]
    fn pax_header_only_when_needed() {
        let fields = |name: &'static str, nanos: u32, uid: u32| Fields {
            name,
            mode: 0o100644,
            uid,
            gid: 0,
            size: 0,
            mtime: Timestamp { secs: 5, nanos },
            typeflag: b'0',
            link: "",
            device: (0, 0),
            xattrs: &[],
        };
        assert_eq!(encode_header(&fields("a/b", 0, 0)).len(), BLOCK);
        let long = Box::leak(format!("d/{}", "n".repeat(150)).into_boxed_str());
        let cases: [(&str, u32, u32, &str); 4] = [
            (long, 0, 0, "d/PaxHeaders.0/nnnn"),
            ("a/b", 7, 0, "a/PaxHeaders.0/b"),
            ("dir/", 7, 0, "dir/PaxHeaders.0"),
            ("ü", 0, 1 << 30, "PaxHeaders.0/ü"),
        ];
        for (name, nanos, uid, pax_name) in cases {
            let bytes = encode_header(&fields(name, nanos, uid));
            assert_eq!(bytes.len(), BLOCK * 3, "{name}");
            assert_eq!(bytes[156], b'x');
            assert!(bytes.starts_with(pax_name.as_bytes()), "{name}");
            assert_eq!(bytes[2 * BLOCK + 156], b'0');
        }
    }

    /// Blocks copied from a BuildKit layer (`COPY d /d` on dockerd 20.10, `docker save`): ours
    /// are identical except for the owner names BuildKit adds (and so the checksum).
    #[test]
    fn headers_match_buildkit_bytes() {
        fn block(pieces: &[(usize, &[u8])]) -> Vec<u8> {
            let mut out = vec![0u8; BLOCK];
            for (at, bytes) in pieces {
                out[*at..*at + bytes.len()].copy_from_slice(bytes);
            }
            out
        }
        fn without_names(mut bytes: Vec<u8>) -> Vec<u8> {
            for start in (0..bytes.len()).step_by(BLOCK) {
                bytes[start + 148..start + 156].fill(0);
                bytes[start + 265..start + 329].fill(0);
            }
            bytes
        }
        let file = block(&[
            (0, b"d/a"),
            (
                100,
                b"0100644\x000000000\x000000000\x0000000000003\x0015301015721\x00011427\x00 0",
            ),
            (257, b"ustar\x0000root"),
            (297, b"root"),
            (329, b"0000000\x000000000"),
        ]);
        let long = format!("d/{}", "n".repeat(150));
        let pax_name = format!("d/PaxHeaders.0/{}", "n".repeat(85));
        let mut pax = block(&[(0, pax_name.as_bytes()), (257, b"ustar\x0000")]);
        pax[100..157].copy_from_slice(
            b"0000000\x000000000\x000000000\x0000000000242\x0000000000000\x00032652\x00 x",
        );
        pax.extend(block(&[(0, format!("162 path={long}\n").as_bytes())]));
        let mut long_file = file.clone();
        long_file[..100].copy_from_slice(&long.as_bytes()[..100]);
        long_file[124..136].copy_from_slice(b"00000000001\x00");
        pax.extend(long_file);
        let fields = |name| Fields {
            name,
            mode: 0o100644,
            uid: 0,
            gid: 0,
            size: if name == "d/a" { 3 } else { 1 },
            mtime: Timestamp {
                secs: 1_795_431_377,
                nanos: 0,
            },
            typeflag: b'0',
            link: "",
            device: (0, 0),
            xattrs: &[],
        };
        assert_eq!(
            without_names(encode_header(&fields("d/a"))),
            without_names(file)
        );
        assert_eq!(
            without_names(encode_header(&fields(&long))),
            without_names(pax)
        );
    }

    fn fixture(src: &Path) -> Vec<LayerEntry> {
        std::fs::write(src.join("hello"), b"hello, layer\n").unwrap();
        std::fs::write(src.join("empty"), b"").unwrap();
        std::fs::write(src.join("big"), vec![b'z'; 1000]).unwrap();
        let file = |path: &str, source: &str, mode: u32| LayerEntry {
            mode,
            ..entry(
                path,
                EntryKind::File {
                    source: src.join(source),
                },
            )
        };
        let long = format!("app/{}", "long-name-".repeat(12));
        vec![
            file("app/hello.txt", "hello", 0o644),
            dir("app"),
            file("app/empty", "empty", 0o600),
            LayerEntry {
                uid: 1000,
                gid: 1000,
                mtime: Timestamp {
                    secs: 1_700_000_000,
                    nanos: 123_456_789,
                },
                xattrs: vec![("user.kiln".into(), b"v".to_vec())],
                ..file(&long, "big", 0o4755)
            },
            entry(
                "app/hard",
                EntryKind::Hardlink {
                    target: "app/hello.txt".into(),
                },
            ),
            link("app/link", "hello.txt"),
            link("app/abs", &format!("/{}", "t".repeat(120))),
            entry("app/gone", EntryKind::Whiteout),
            entry("app", EntryKind::Opaque),
            dir("etc"),
            LayerEntry {
                uid: 3_000_000,
                ..entry("etc/fifo", EntryKind::Fifo)
            },
        ]
    }

    /// Pins the bytes: any change to order or header format changes this digest.
    const GOLDEN_DIFF_ID: &str =
        "sha256:307da2c12033a55c325fbccc8cd21989a77c31d0bf4dae5788d60e3cc5618aa2";

    #[test]
    fn golden_diff_id() {
        let dir = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let summary = write_layer(fixture(dir.path()), &mut out, None).unwrap();
        assert_eq!(summary.size, out.len() as u64);
        assert_eq!(summary.entries, 11);
        assert_eq!(summary.diff_id, Digest::of(&out));
        assert_eq!(out.len() % BLOCK, 0);
        assert!(out.ends_with(&[0u8; 2 * BLOCK]));
        assert_eq!(summary.diff_id.to_string(), GOLDEN_DIFF_ID);
        // Writing again gives the same bytes.
        let mut again = Vec::new();
        write_layer(fixture(dir.path()), &mut again, None).unwrap();
        assert_eq!(out, again);
    }

    #[test]
    fn source_problems_are_typed() {
        let dir = tempfile::tempdir().unwrap();
        let missing = entry(
            "x",
            EntryKind::File {
                source: dir.path().join("missing"),
            },
        );
        let err = write_layer(vec![missing], Vec::new(), None).unwrap_err();
        assert!(matches!(err, LayerError::Source { .. }), "{err:?}");
        let not_file = entry(
            "x",
            EntryKind::File {
                source: PathBuf::from(dir.path()),
            },
        );
        let err = write_layer(vec![not_file], Vec::new(), None).unwrap_err();
        assert!(matches!(err, LayerError::SourceNotFile { .. }), "{err:?}");
        // procfs files report size 0 but have content: the same as a file that grew.
        let grew = entry(
            "x",
            EntryKind::File {
                source: PathBuf::from("/proc/self/status"),
            },
        );
        match write_layer(vec![grew], Vec::new(), None) {
            Err(LayerError::SourceChanged {
                expected, found, ..
            }) => assert_eq!((expected, found), (0, 1)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn the_first_name_of_a_linked_file_carries_the_content() {
        let dir = tempfile::tempdir().unwrap();
        let source = dir.path().join("content");
        std::fs::write(&source, b"shared").unwrap();
        let hard = |path: &str| entry(path, EntryKind::Hardlink { target: "z".into() });
        let mut entries = vec![
            entry(
                "z",
                EntryKind::File {
                    source: source.clone(),
                },
            ),
            hard("b"),
            hard("a"),
        ];
        entries.sort_by(compare_entries);
        first_link_carries_content(&mut entries);
        let kinds: Vec<(&str, &EntryKind)> =
            entries.iter().map(|e| (e.path.as_str(), &e.kind)).collect();
        let to_a = EntryKind::Hardlink { target: "a".into() };
        assert_eq!(
            kinds,
            [
                ("a", &EntryKind::File { source }),
                ("b", &to_a),
                ("z", &to_a),
            ]
        );
        check_structure(&entries).unwrap();
    }
}
