//! Small JSON records under `kiln/records/<kind>/<hex>.json`.
//!
//! Consumes a kind (`[a-z0-9-]+`), an id digest, the digests the record holds (its refs:
//! blobs and snapshots gc must keep while the record exists) and a serde value; produces the
//! envelope `{"refs": [...], "created": RFC 3339, "last_used": RFC 3339, "value": ...}`
//! written atomically. A use after the write ([`Store::touch_record`]) only moves the file's
//! mtime, so a cache hit rewrites nothing: a record's last use is the later of its envelope's
//! `last_used` and its mtime. What a kind means (cache index, step locators, stat caches) is the
//! caller's business; this module must never interpret a record's value.

use std::io;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{atomic, io_error, Result, Store, StoreError};
use crate::digest::Digest;

/// The on-disk envelope around a record's value.
#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    refs: Vec<Digest>,
    created: String,
    last_used: String,
    value: T,
}

/// What [`Store::records`] reports about one record, without its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordInfo {
    /// The record's kind.
    pub kind: String,
    /// The record's id.
    pub id: Digest,
    /// The digests the record holds.
    pub refs: Vec<Digest>,
    /// When the record was last written.
    pub created: SystemTime,
    /// When the record was last written or touched.
    pub last_used: SystemTime,
    /// The bytes of the record file itself.
    pub size: u64,
}

fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_nanos(time).to_string()
}

fn check_kind(kind: &str) -> Result<()> {
    let valid = !kind.is_empty()
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if valid {
        Ok(())
    } else {
        Err(StoreError::InvalidKind {
            kind: kind.to_string(),
        })
    }
}

fn corrupt(path: &std::path::Path) -> impl FnOnce(serde_json::Error) -> StoreError + '_ {
    move |source| StoreError::Corrupt {
        what: "record",
        path: path.to_path_buf(),
        source,
    }
}

/// Reads a file, mapping "not found" to `None`.
fn read_optional(path: &std::path::Path) -> Result<Option<Vec<u8>>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_error("read", path)(e)),
    }
}

impl Store {
    fn record_path(&self, kind: &str, id: &Digest) -> Result<PathBuf> {
        check_kind(kind)?;
        Ok(self
            .records_dir()
            .join(kind)
            .join(format!("{}.json", id.hex())))
    }

    /// Writes (or replaces) record `kind`/`id` holding `refs`, with `created` and
    /// `last_used` set to now.
    ///
    /// # Errors
    /// [`StoreError::InvalidKind`], [`StoreError::Encode`], I/O errors.
    pub fn put_record<T: Serialize>(
        &self,
        kind: &str,
        id: &Digest,
        refs: &[Digest],
        value: &T,
    ) -> Result<()> {
        let path = self.record_path(kind, id)?;
        let now = timestamp(SystemTime::now());
        let envelope = Envelope {
            refs: refs.to_vec(),
            created: now.clone(),
            last_used: now,
            value,
        };
        self.write_envelope(&path, &envelope, true)
    }

    /// Writes an envelope; `durable` false skips the fsyncs (see [`atomic::replace_unsynced`]).
    fn write_envelope<T: Serialize>(
        &self,
        path: &std::path::Path,
        envelope: &T,
        durable: bool,
    ) -> Result<()> {
        let bytes = serde_json::to_vec(envelope).map_err(|source| StoreError::Encode {
            what: "record",
            path: path.to_path_buf(),
            source,
        })?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io_error("create directory", dir))?;
        }
        if durable {
            atomic::write_atomic(&self.tmp_dir(), path, &bytes)
        } else {
            atomic::replace_unsynced(&self.tmp_dir(), path, &bytes)
        }
    }

    /// Returns the value of record `kind`/`id`, or `None` if there is none.
    ///
    /// # Errors
    /// [`StoreError::InvalidKind`], [`StoreError::Corrupt`] if the file does not parse as an
    /// envelope around a `T`, I/O errors.
    pub fn get_record<T: DeserializeOwned>(&self, kind: &str, id: &Digest) -> Result<Option<T>> {
        let path = self.record_path(kind, id)?;
        let Some(bytes) = read_optional(&path)? else {
            return Ok(None);
        };
        let envelope: Envelope<T> = serde_json::from_slice(&bytes).map_err(corrupt(&path))?;
        Ok(Some(envelope.value))
    }

    /// Lists the records of `kind`, sorted by id. A kind never written has none.
    ///
    /// # Errors
    /// [`StoreError::InvalidKind`], [`StoreError::Corrupt`], I/O errors.
    pub fn records(&self, kind: &str) -> Result<Vec<RecordInfo>> {
        check_kind(kind)?;
        let dir = self.records_dir().join(kind);
        let Some(entries) = super::read_dir_if_present(&dir).map_err(io_error("list", &dir))?
        else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error("list", &dir))?;
            let name = entry.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".json"))
                .and_then(|hex| Digest::from_hex(hex).ok())
            else {
                continue;
            };
            let path = entry.path();
            // A record removed between listing and reading is simply gone.
            let Some(bytes) = read_optional(&path)? else {
                continue;
            };
            let touched = std::fs::symlink_metadata(&path)
                .and_then(|meta| meta.modified())
                .unwrap_or(SystemTime::UNIX_EPOCH);
            let envelope: Envelope<serde::de::IgnoredAny> =
                serde_json::from_slice(&bytes).map_err(corrupt(&path))?;
            let time =
                |text: &str| humantime::parse_rfc3339_weak(text).unwrap_or(SystemTime::UNIX_EPOCH);
            out.push(RecordInfo {
                kind: kind.to_string(),
                id,
                refs: envelope.refs,
                created: time(&envelope.created),
                last_used: time(&envelope.last_used).max(touched),
                size: bytes.len() as u64,
            });
        }
        out.sort_by_key(|record| record.id);
        Ok(out)
    }

    /// Lists the kinds that have a records directory, sorted.
    ///
    /// # Errors
    /// I/O errors.
    pub fn record_kinds(&self) -> Result<Vec<String>> {
        let dir = self.records_dir();
        let mut kinds = Vec::new();
        for entry in std::fs::read_dir(&dir).map_err(io_error("list", &dir))? {
            let entry = entry.map_err(io_error("list", &dir))?;
            if let Some(kind) = entry.file_name().to_str() {
                if check_kind(kind).is_ok() {
                    kinds.push(kind.to_string());
                }
            }
        }
        kinds.sort();
        Ok(kinds)
    }

    /// Marks record `kind`/`id` used now, by its file's mtime (one utimensat(2), nothing
    /// rewritten or flushed: after a power loss an earlier last use may come back); returns
    /// false if there is no such record.
    ///
    /// # Errors
    /// [`StoreError::InvalidKind`], I/O errors.
    pub fn touch_record(&self, kind: &str, id: &Digest) -> Result<bool> {
        let path = self.record_path(kind, id)?;
        // The clock itself rather than UTIME_NOW: file times tick coarsely (a jiffy), and a
        // use must never look older than the write before it.
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let now = rustix::fs::Timespec {
            tv_sec: i64::try_from(since_epoch.as_secs()).unwrap_or(i64::MAX),
            tv_nsec: i64::from(since_epoch.subsec_nanos()),
        };
        let times = rustix::fs::Timestamps {
            last_access: now,
            last_modification: now,
        };
        match rustix::fs::utimensat(rustix::fs::CWD, &path, &times, rustix::fs::AtFlags::empty()) {
            Ok(()) => Ok(true),
            Err(rustix::io::Errno::NOENT) => Ok(false),
            Err(errno) => Err(io_error("mark as used", &path)(errno.into())),
        }
    }

    /// Removes record `kind`/`id`; returns false if there was none. What it held stays until gc.
    ///
    /// # Errors
    /// [`StoreError::InvalidKind`], I/O errors.
    pub fn remove_record(&self, kind: &str, id: &Digest) -> Result<bool> {
        let path = self.record_path(kind, id)?;
        match std::fs::remove_file(&path) {
            Ok(()) => {
                atomic::sync_parent(&path)?;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error("remove", &path)(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::temp_store;

    #[test]
    fn kinds() {
        let table: &[(&str, bool)] = &[
            ("cache", true),
            ("step-2", true),
            ("", false),
            ("Cache", false),
            ("../x", false),
            ("a/b", false),
            ("a.b", false),
        ];
        for (kind, ok) in table {
            assert_eq!(check_kind(kind).is_ok(), *ok, "{kind}");
        }
    }

    #[test]
    fn put_get_list_touch_remove() {
        let (_dir, store) = temp_store();
        let id = Digest::of(b"key");
        let refs = [Digest::of(b"layer")];
        assert_eq!(
            store.get_record::<String>("cache", &id).expect("reads"),
            None
        );
        assert!(store.records("cache").expect("lists").is_empty());

        store
            .put_record("cache", &id, &refs, &"value".to_string())
            .expect("puts");
        assert_eq!(
            store.get_record::<String>("cache", &id).expect("reads"),
            Some("value".into())
        );
        assert!(matches!(
            store.get_record::<u32>("cache", &id),
            Err(StoreError::Corrupt { what: "record", .. })
        ));
        let before = store.records("cache").expect("lists");
        assert_eq!(before.len(), 1);
        assert_eq!(before[0].id, id);
        assert_eq!(before[0].refs, refs);
        // Written just now: last used when it was written.
        let written = before[0].last_used.duration_since(before[0].created);
        assert!(written.is_ok_and(|d| d < std::time::Duration::from_secs(1)));

        std::thread::sleep(std::time::Duration::from_millis(5));
        assert!(store.touch_record("cache", &id).expect("touches"));
        let after = store.records("cache").expect("lists");
        assert!(after[0].last_used > before[0].last_used);
        assert_eq!(after[0].created, before[0].created);
        assert_eq!(
            store.get_record::<String>("cache", &id).expect("reads"),
            Some("value".into())
        );
        assert_eq!(store.record_kinds().expect("kinds"), ["cache"]);

        assert!(store.remove_record("cache", &id).expect("removes"));
        assert!(!store.remove_record("cache", &id).expect("removes"));
        assert!(!store.touch_record("cache", &id).expect("touches"));
        assert!(matches!(
            store.put_record("../evil", &id, &[], &1),
            Err(StoreError::InvalidKind { .. })
        ));
    }
}
