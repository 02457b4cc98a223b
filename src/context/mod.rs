//! Stage "context" of the pipeline: the build-context walk and `.dockerignore`.
//!
//! Consumes the context directory's entries and the ignore file's text; produces the set of
//! context entries a build may use. It must never decide cache keys or read file content
//! for hashing: that belongs to the cache stage.

pub mod ignore;
pub mod walk;

pub use self::walk::{read_dockerignore, walk, walk_with, Context, Entry, EntryKind, WalkError};
