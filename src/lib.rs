//! kiln: a daemonless Dockerfile build tool.
//!
//! The pipeline, one module per stage, declared in pipeline order; data flows one way:
//!
//! ```text
//!  Dockerfile bytes ──syntax::parse──▶ Parsed (lossless tree + typed instructions)
//!  Parsed + BuildOptions (build args, target, platforms)
//!                   ──graph::lower──▶ BuildGraph (needed stages in build order: base,
//!                                     platform, dependencies, steps with expanded words
//!                                     and the build args each uses)
//!  context entries + .dockerignore text
//!                   ──context::ignore──▶ the entries a build may use (Docker's patterns)
//!  Context + selected paths + step inputs ──cache──▶ content digests, keys, miss reasons
//!  blobs, snapshot dirs, records, tags ──store──▶ the on-disk OCI layout (verified reads, gc)
//!  LayerEntry list ──layer::write_layer──▶ layer tar + diff_id (+ snapshot dir); tar ──unpack──▶ snapshot; snapshots ──RootfsView──▶ merged lookups
//!  RunSpec (argv, env, ids, snapshots as lowers, mounts) ──sandbox::run──▶ output, exit status, overlay upper dir
//! ```
//!
//! [`words`] is the shell-word lexer both stages use.

pub mod words;

pub mod syntax;

pub mod graph;

pub mod digest;

/// The build context: which entries a build may use, after `.dockerignore`.
pub mod context;

pub mod cache;

pub mod store;

pub mod layer;

pub mod sandbox;

pub mod container;

/// Images from OCI layouts and `docker save` archives into the store.
pub mod load;

/// The image config and manifest documents.
pub mod image;

pub mod export;
/// The build engine: runs the graph against the store and the cache.
pub mod solve;

/// Shows build events: BuildKit's plain lines, JSON, or a terminal view.
pub mod progress;

/// Renders located errors for the command line.
pub mod diagnostic;
