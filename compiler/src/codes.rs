//! Diagnostic codes of the compiler. They share the registry in
//! `policy_lang::codes` so that one table documents every code; this module re-exports
//! the ones the compiler emits.

pub use policy_lang::codes::{RANGE_TOO_WIDE, UNKNOWN_NAMESPACE};
