//! The seam between the runtime and the kernel's maps.
//!
//! Every read and write of a datapath map goes through [`MapBackend`]. The kernel
//! implementation ([`crate::kernel::KernelMaps`]) wraps aya maps opened from their pins;
//! the unit tests use an in-memory fake. The planner and the apply logic know only the
//! trait, so their ordering and convergence are tested without a kernel.
//!
//! Keys and entries are enums over the typed mirrors of `policyc_maps.h`, so a key can
//! only ever be written to the map it belongs to.

use std::fmt;

use datapath::{
    CtKey, CtValue, EndpointInfo, IpcacheKey, IpcacheValue, MetricsValue, PolicyKey, PolicyValue,
    Reason, capacity, map_names,
};

use crate::error::Result;

/// The keyed maps of the datapath. The per-CPU metrics array is read through
/// [`MapBackend::metrics`] instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapName {
    /// Host-side ifindex -> [`EndpointInfo`].
    Endpoints,
    /// Peer prefix -> security identity (LPM trie).
    Ipcache,
    /// (table, identity, protocol, port) -> verdict.
    Policy,
    /// Flows allowed by policy (LRU hash); the runtime only reads it.
    Conntrack,
}

impl MapName {
    /// Every keyed map, in the order status reports them.
    pub const ALL: [MapName; 4] =
        [MapName::Endpoints, MapName::Ipcache, MapName::Policy, MapName::Conntrack];

    /// The map's name in the object and in the pin directory.
    pub fn pin_name(self) -> &'static str {
        match self {
            MapName::Endpoints => map_names::ENDPOINTS,
            MapName::Ipcache => map_names::IPCACHE,
            MapName::Policy => map_names::POLICY,
            MapName::Conntrack => map_names::CONNTRACK,
        }
    }

    /// The map's `max_entries`, from `policyc_maps.h`.
    pub fn capacity(self) -> u32 {
        match self {
            MapName::Endpoints => capacity::ENDPOINTS,
            MapName::Ipcache => capacity::IPCACHE,
            MapName::Policy => capacity::POLICY,
            MapName::Conntrack => capacity::CONNTRACK,
        }
    }
}

impl fmt::Display for MapName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.pin_name())
    }
}

/// A key of one of the keyed maps.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapKey {
    /// An ifindex in `policyc_endpoints`.
    Endpoint(u32),
    /// A prefix in `policyc_ipcache`.
    Ipcache(IpcacheKey),
    /// A key of `policyc_policy`.
    Policy(PolicyKey),
    /// A flow in `policyc_ct`.
    Conntrack(CtKey),
}

impl MapKey {
    /// The map this key belongs to.
    pub fn map(&self) -> MapName {
        match self {
            MapKey::Endpoint(_) => MapName::Endpoints,
            MapKey::Ipcache(_) => MapName::Ipcache,
            MapKey::Policy(_) => MapName::Policy,
            MapKey::Conntrack(_) => MapName::Conntrack,
        }
    }
}

/// A key with its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapEntry {
    Endpoint(u32, EndpointInfo),
    Ipcache(IpcacheKey, IpcacheValue),
    Policy(PolicyKey, PolicyValue),
    Conntrack(CtKey, CtValue),
}

impl MapEntry {
    /// The entry's key.
    pub fn key(&self) -> MapKey {
        match *self {
            MapEntry::Endpoint(k, _) => MapKey::Endpoint(k),
            MapEntry::Ipcache(k, _) => MapKey::Ipcache(k),
            MapEntry::Policy(k, _) => MapKey::Policy(k),
            MapEntry::Conntrack(k, _) => MapKey::Conntrack(k),
        }
    }

    /// The map this entry belongs to.
    pub fn map(&self) -> MapName {
        self.key().map()
    }
}

/// Every kernel map operation the runtime performs.
///
/// Implementations report failures as [`crate::RuntimeError::ReadMap`],
/// [`crate::RuntimeError::WriteMap`] or [`crate::RuntimeError::DeleteMap`].
pub trait MapBackend {
    /// Every key of `map`. A map that changes while it is listed (conntrack does) may
    /// give a key twice or miss one; the listing stops after `capacity` keys, so it
    /// always ends.
    fn keys(&self, map: MapName) -> Result<Vec<MapKey>>;

    /// The entry stored under `key`, or `None` when there is none.
    ///
    /// For the ipcache this is a longest-prefix lookup, as the kernel does it: it is an
    /// exact read only for a key that [`MapBackend::keys`] returned.
    fn get(&self, key: &MapKey) -> Result<Option<MapEntry>>;

    /// Inserts the entry or replaces the value under its key.
    fn update(&mut self, entry: &MapEntry) -> Result<()>;

    /// Removes the entry under `key`. Removing a key that is not there is not an error:
    /// the map is then already as the caller wants it.
    fn delete(&mut self, key: &MapKey) -> Result<()>;

    /// The datapath's counters, per reason, summed over all CPUs.
    fn metrics(&self) -> Result<Vec<(Reason, MetricsValue)>>;
}
