//! Stage "solve" of the pipeline: runs a [`BuildGraph`] against the store and the cache.
//!
//! Consumes the parsed Dockerfile, the build options, the context directory and a [`Store`];
//! produces an image in the store (config, manifest, tags) and a report of every step: cached
//! or not, why it missed, how long it took, which layer it made. It is the only module that
//! combines cache lookups, execution and layer commits; what a step does to the image config
//! is in [`config`], COPY/ADD semantics in [`copy`] and [`add`], events in [`events`].
//!
//! Stages run on their own threads as soon as the stages they need are done, so independent
//! stages overlap; every result is a pure function of its inputs, so the image is the same
//! however the work interleaves.

pub mod config;
mod engine;
pub mod events;
mod export;
mod step;
/// Layer snapshots and commits, shared with `container` (kiln run, commit, bundle).
pub(crate) use step::{commit_layer, snapshot, LayerBlob, StepError};

pub use engine::{
    build, BuildError, BuildOutcome, BuildRequest, NamedContext, SecretSource, StepReport,
};
pub mod add;
pub mod copy;
