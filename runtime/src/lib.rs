//! policyc's node runtime: it loads the datapath object, pins its maps, attaches its
//! programs to the interfaces of the node's endpoints, and applies artifacts to the maps.
//!
//! The runtime never parses YAML or policies: its input is a decoded
//! [`compiler::artifact::Artifact`] plus interface bindings (`veth1=prod/web`). Its
//! state is the kernel's: maps and links are pinned in a bpffs directory, and every
//! apply compares the desired content with the live maps, not with a record of the last
//! apply, so drift is repaired and a repeated apply writes nothing.
//!
//! Code map:
//! - [`maps`]: the [`MapBackend`] trait, the one seam for every map operation;
//!   [`kernel`] implements it over aya, the tests over memory.
//! - [`state`] and [`plan`]: what a generation says and what the maps hold, and the
//!   operations between them (the generation switch is argued in [`plan`]).
//! - `sync`: the config map's shared mapping (the generation store) and the wait for
//!   the programs in flight.
//! - [`bindings`]: `NAME=NAMESPACE/POD` resolved to ifindex and endpoint entry.
//! - [`spec`]: the embedded object's map layouts, checked against every pinned map.
//! - [`pins`] and `links`: the pin directory and the pinned tcx links.
//! - [`loader`]: `install`, `apply`, `uninstall`, `status`.
//! - [`store`]: the node's copy of each applied artifact, by checksum;
//!   [`observe`]: verdict events from the ring buffer, explained with it.
//! - [`watch`]: the daemon that applies the newest artifact of a directory and serves
//!   Prometheus metrics.
//!
//! Logging is through `tracing` only, with a span per phase; the binaries choose where
//! it goes.

pub mod bindings;
mod error;
pub mod kernel;
mod links;
pub mod loader;
pub mod maps;
pub mod observe;
pub mod pins;
pub mod plan;
pub mod spec;
pub mod state;
pub mod store;
mod sync;
pub mod watch;

#[cfg(test)]
mod testing;

pub use bindings::{Binding, BoundInterface};
pub use datapath::{MetricsValue, Reason};
pub use error::{Result, RuntimeError};
pub use loader::{
    ApplyOptions, ApplyReport, InstallReport, InterfaceStatus, MapUsage, Status, UninstallReport,
    apply, install, status, uninstall,
};
pub use maps::{MapBackend, MapEntry, MapKey, MapName};
pub use pins::{DEFAULT_PIN_DIR, Hook};
pub use plan::{MapChanges, MapOp, Plan};
pub use state::{LiveMaps, MapState};
pub use store::{ArtifactStore, DEFAULT_STATE_DIR};
