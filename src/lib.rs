//! kiln: a daemonless Dockerfile build tool.
//!
//! The pipeline, one module per stage, declared in pipeline order; data flows one way:
//!
//! ```text
//!  Dockerfile bytes ──syntax──▶ Dockerfile (typed instructions)
//!                   ──graph───▶ BuildGraph (stages, steps, expanded words, dependencies)
//! ```
//!
//! [`words`] is the shell-word lexer both stages use.

pub mod words;

pub mod syntax;

/// Renders located errors for the command line.
pub mod diagnostic;
