//! The policyc datapath as Rust sees it: the committed BPF object and mirrors of the map
//! layouts defined in `c/policyc_maps.h`.
//!
//! The C header is the only definition of the layouts. Everything here copies it, and
//! `tests/layout.rs` checks the copy against the BTF of the committed object (struct
//! sizes, field offsets) and against the object's map definitions (type, key size,
//! value size, capacity), so a drift fails `cargo test` without needing a kernel.
//!
//! This crate does no I/O and never talks to the kernel. With the `aya` feature the
//! mirrors implement `aya::Pod`, so the runtime can use them as map keys and values.

mod abi;
mod layout;

pub use abi::{MAPS_HEADER, abi_hash};
pub use layout::*;

/// The compiled datapath object (`bpf-progs/policyc.bpf.o`), built by `build-bpf.sh` and
/// committed so that building policyc never needs clang.
pub static OBJECT: &[u8] = &AlignedObject(*include_bytes!("../policyc.bpf.o")).0;

/// ELF parsers want the object 8-byte aligned; `include_bytes!` alone gives no alignment.
#[repr(C, align(8))]
struct AlignedObject<T: ?Sized>(T);
