//! policyc's front end: reads Kubernetes manifests (YAML or JSON, many documents per
//! file) and turns them into a typed, spanned model of the cluster and its network
//! policies.
//!
//! The pipeline inside this crate is:
//! 1. [`yaml`]: text to a generic tree in which every node knows its exact source span;
//! 2. [`manifest`]: documents (and `List` wrappers) dispatched by `apiVersion`/`kind`;
//! 3. per-kind decoders ([`netpol`], [`inventory`], [`cilium`]) that validate by the
//!    Kubernetes API rules (Cilium's, for its kinds) and build the [`ast`] and
//!    [`ast_cilium`].
//!
//! A mistake in a user's manifest is a [`Diagnostic`] with a stable code and a span, and
//! decoding keeps going so one run reports every problem. `Result` is kept for I/O.
//! This crate knows nothing about identities, tables or maps.

pub mod ast;
pub mod ast_cilium;
mod cilium;
pub mod codes;
pub mod diagnostic;
pub mod fuzzing;
mod inventory;
pub mod manifest;
mod netpol;
pub mod print;
mod reader;
pub mod report;
pub mod selector;
pub mod selector_expr;
pub mod source;
pub mod yaml;

pub use diagnostic::{Diagnostic, Severity};
pub use manifest::{Bundle, load_sources};
pub use source::{FileId, SourceFile, Sources, Span};
