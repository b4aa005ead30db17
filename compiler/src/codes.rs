//! Diagnostic codes of the compiler. They live in the one registry,
//! `policy_lang::codes`, so that a single table (and docs/diagnostics.md) covers every
//! code; this module re-exports it.

pub use policy_lang::codes::*;
