//! The policyc compiler: lowers parsed policies to an IR, allocates security
//! identities, solves the policies against the cluster inventory into datapath tables,
//! and encodes them as a deterministic map-image [`artifact::Artifact`].
//!
//! This crate does no I/O and never touches the kernel: it turns values into values.
//! Inputs come from `policy-lang`; the artifact bytes go wherever the caller writes them.

pub mod artifact;
mod codes;
pub mod connectivity;
pub mod fuzzing;
pub mod identity;
pub mod ir;
pub mod lint;
pub mod lock;
mod lower;
mod lower_cilium;
pub mod reference;
pub mod render;
pub mod simulate;
mod solve;
pub mod tables;

pub use solve::{
    Analysis, Capacity, Compilation, HOST_ENDPOINT_PREFIX, Options, Stats, compile, compile_with,
};
