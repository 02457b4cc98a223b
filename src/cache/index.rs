//! The cache index as plain records: what a key produced, and which key a step had last.
//!
//! Consumes keys and step results from the solver; produces serde records the solver keeps
//! in the store (kind [`CACHE_KIND`] by key, kind [`STEP_KIND`] by [`StepLocator::id`], and
//! the stat cache bytes under [`STAT_KIND`], the walk's listings under [`WALK_KIND`]). It must never do I/O itself: the store owns
//! persistence, this module only the shapes and the locator's identity.

use serde::{Deserialize, Serialize};

use super::key::{Preimage, Value};
use crate::digest::Digest;

/// Store record kind of [`CacheRecord`]s, keyed by cache key.
pub const CACHE_KIND: &str = "cache";
/// Store record kind of [`StepRecord`]s, keyed by [`StepLocator::id`].
pub const STEP_KIND: &str = "step";
/// Store record kind of stat caches, keyed by the digest of the context root path.
pub const STAT_KIND: &str = "stat";
/// Store record kind of a context's directory listings (`context::walk::Listings`), keyed
/// like the stat cache.
pub const WALK_KIND: &str = "walk";
/// Store record kind naming a RUN's output log blob, keyed by the step's cache key.
pub const LOG_KIND: &str = "log";
/// Store record kind of [`MemoRecord`]s, keyed by the context and the step's definition.
pub const MEMO_KIND: &str = "memo";

/// A layer a step produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LayerRef {
    /// The uncompressed layer's digest.
    pub diff_id: Digest,
    /// The uncompressed layer's size in bytes.
    pub size: u64,
}

/// What a cache key produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CacheRecord {
    /// The key.
    pub key: Digest,
    /// The blob holding what the key was hashed from (the preimage as JSON), to explain
    /// later misses. Kept out of the record so a cache hit reads a few hundred bytes even
    /// when the step copies tens of thousands of files.
    pub preimage: Digest,
    /// The layer made, or `None` for a step that changed no file.
    pub layer: Option<LayerRef>,
    /// The step as progress showed it.
    pub text: String,
    /// When it was made, seconds since the epoch.
    pub created: u64,
}

/// Where a step sits: the same place in the same Dockerfile built from the same context,
/// across builds. Its [`StepLocator::id`] names the [`StepRecord`] of the step's last key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepLocator {
    /// The context root, absolute.
    pub context: String,
    /// The Dockerfile path, absolute (`-` for stdin).
    pub dockerfile: String,
    /// The stage's index in the Dockerfile.
    pub stage: usize,
    /// The step's index in the stage.
    pub step: usize,
}

impl StepLocator {
    /// The digest naming the locator's record: the canonical key encoding of its fields.
    pub fn id(&self) -> Digest {
        Preimage::new()
            .field("op", Value::str("step-locator"))
            .field("context", Value::str(&self.context))
            .field("dockerfile", Value::str(&self.dockerfile))
            .field("stage", Value::U64(self.stage as u64))
            .field("step", Value::U64(self.step as u64))
            .digest()
    }
}

/// A shortcut for a COPY/ADD from the build context: the key it had the last time the
/// context's [`stat_fingerprint`](super::contenthash::stat_fingerprint) was this. Every
/// input of a context COPY/ADD key is either in its definition (parent key, expanded
/// instruction, build args) or read from files whose metadata the fingerprint covers, so
/// an equal fingerprint gives an equal key without selecting or hashing anything: the same
/// trust the stat cache puts in unchanged metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoRecord {
    /// The context's stat fingerprint then.
    pub fingerprint: Digest,
    /// The key the step had.
    pub key: Digest,
}

/// The key a step had the last time it was built, so a miss can be compared with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepRecord {
    /// The step's last key; its [`CacheRecord`] holds the preimage.
    pub key: Digest,
    /// The step as progress showed it then.
    pub text: String,
    /// When, seconds since the epoch.
    pub created: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locator_ids_tell_places_apart() {
        let locator = StepLocator {
            context: "/src".to_owned(),
            dockerfile: "/src/Dockerfile".to_owned(),
            stage: 0,
            step: 1,
        };
        let moved = [
            StepLocator {
                context: "/src2".to_owned(),
                ..locator.clone()
            },
            StepLocator {
                dockerfile: "/src/Dockerfile.dev".to_owned(),
                ..locator.clone()
            },
            StepLocator {
                stage: 1,
                ..locator.clone()
            },
            StepLocator {
                step: 0,
                ..locator.clone()
            },
        ];
        for other in moved {
            assert_ne!(other.id(), locator.id(), "{other:?}");
        }
        assert_eq!(locator.clone().id(), locator.id());
    }

    #[test]
    fn records_round_trip_through_json() {
        let record = CacheRecord {
            key: Digest::of(b"k"),
            preimage: Digest::of(b"preimage"),
            layer: Some(LayerRef {
                diff_id: Digest::of(b"l"),
                size: 3,
            }),
            text: "COPY a /".to_owned(),
            created: 1_700_000_000,
        };
        let json = serde_json::to_string(&record).expect("serializes");
        let back: CacheRecord = serde_json::from_str(&json).expect("deserializes");
        assert_eq!(back, record);
    }
}
