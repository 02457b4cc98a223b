//! What a build reports while it runs: one stream of [`Event`]s about vertices.
//!
//! A vertex is one unit of work the user sees, numbered in the order it starts, like
//! BuildKit's: the internal steps (loading the Dockerfile, the context, base image metadata),
//! each FROM/COPY/ADD/RUN/WORKDIR step, and the export. The engine only emits events; how
//! they are shown (plain, tty, json) is [`crate::progress`]'s business.

use std::time::Duration;

use serde::Serialize;

/// A vertex number, from 1, as printed after `#`.
pub type VertexId = usize;

/// One thing that happened during a build.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Work on a vertex began.
    Started {
        /// Its number.
        vertex: VertexId,
        /// What it is: `[internal] load build context`, `[stage-1 2/3] COPY a /b`.
        name: String,
    },
    /// The vertex's result came from the cache; nothing ran.
    Cached {
        /// Its number.
        vertex: VertexId,
    },
    /// Why the vertex could not come from the cache.
    Miss {
        /// Its number.
        vertex: VertexId,
        /// The reasons, most useful first (`src/index.js changed (sha256:1a2b… → …)`).
        reasons: Vec<String>,
    },
    /// A status line or byte counter of a running vertex (`transferring context: 2.1MB`).
    Status {
        /// Its number.
        vertex: VertexId,
        /// What is being done.
        name: String,
        /// Bytes or items done.
        current: u64,
        /// The total when known.
        total: Option<u64>,
        /// True when this status is finished.
        completed: bool,
    },
    /// Output of a running vertex (RUN), one line without its newline.
    Log {
        /// Its number.
        vertex: VertexId,
        /// Seconds since the vertex started.
        elapsed: Duration,
        /// The line.
        line: String,
    },
    /// The vertex finished.
    Done {
        /// Its number.
        vertex: VertexId,
        /// How long it took.
        duration: Duration,
    },
    /// The vertex failed; the build stops.
    Failed {
        /// Its number.
        vertex: VertexId,
        /// How long it ran.
        duration: Duration,
        /// The error, one line.
        error: String,
    },
    /// Something the user should know that does not stop the build.
    Warning {
        /// The message.
        message: String,
    },
}

/// Receives events; called from several threads at once.
pub trait Reporter: Sync {
    /// Takes one event.
    fn report(&self, event: Event);
}

impl<F: Fn(Event) + Sync> Reporter for F {
    fn report(&self, event: Event) {
        self(event)
    }
}
