//! Stage "cache" of the pipeline: what a step's result depends on, and why a step missed.
//!
//! Consumes the walked [`crate::context::Context`] and each step's resolved inputs; produces
//! content digests of the files a COPY/ADD selects ([`contenthash`]), canonical cache keys
//! with their preimages ([`key`]), miss reasons ([`explain`]) and the plain records the
//! solver stores ([`index`]). It must never write layers or touch the store directly:
//! persistence goes through [`contenthash::StatCacheStorage`] and the solver.

pub mod contenthash;
pub mod explain;
pub mod index;
pub mod key;

pub use self::contenthash::{ContentHasher, StatCache, StatCacheStorage};
pub use self::explain::{FieldChange, MissReason};
pub use self::index::{CacheRecord, LayerRef, StepLocator, StepRecord};
pub use self::key::{CacheKey, Preimage, Value};

/// Why hashing context content failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A selected file could not be read.
    #[error("cannot read {path} to hash it")]
    Read {
        /// The file on disk.
        path: std::path::PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// A path given to hash is not an entry of the walked context.
    #[error("{path:?} is not in the build context: expected a path the context walk kept")]
    NotInContext {
        /// The path as given.
        path: String,
    },
    /// The stat cache could not be saved.
    #[error("cannot save the stat cache")]
    SaveStatCache(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// The cache stage's result type.
pub type Result<T> = std::result::Result<T, CacheError>;
