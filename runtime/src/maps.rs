//! The seam between the runtime and the kernel's maps.
//!
//! Every read and write of a datapath map goes through [`MapBackend`]. The kernel
//! implementation ([`crate::kernel::KernelMaps`]) wraps aya maps opened from their pins;
//! the unit tests use an in-memory fake. The planner and the apply logic know only the
//! trait, so their ordering, the generation flip and convergence after a failure are
//! tested without a kernel.
//!
//! Keys and entries are enums over the typed mirrors of `policyc_maps.h`, so a key can
//! only ever be written to the map it belongs to.

use std::fmt;

use datapath::{
    Config, CtKey, CtValue, EndpointInfo, HostKey, IpcacheKey, IpcacheValue, MetricsValue,
    PolicyKey, PolicyValue, Reason, capacity, map_names,
};

use crate::error::Result;

/// The keyed maps of the datapath. The config array and the per-CPU metrics are reached
/// through their own methods of [`MapBackend`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapName {
    /// Host-side ifindex -> [`EndpointInfo`].
    Endpoints,
    /// Full-length address -> security identity (hash).
    Hosts,
    /// Shorter prefix -> security identity (LPM trie).
    Ipcache,
    /// (table, identity, protocol, port block) -> verdict.
    Policy,
    /// Flows allowed by policy (LRU hash); the runtime only reads it.
    Conntrack,
    /// First fragments let through (LRU hash); the runtime only counts it.
    Frags,
}

impl MapName {
    /// Every keyed map, in the order status reports them.
    pub const ALL: [MapName; 6] = [
        MapName::Endpoints,
        MapName::Hosts,
        MapName::Ipcache,
        MapName::Policy,
        MapName::Conntrack,
        MapName::Frags,
    ];

    /// The maps an artifact fills, in the order apply reports them.
    pub const APPLIED: [MapName; 4] =
        [MapName::Endpoints, MapName::Hosts, MapName::Ipcache, MapName::Policy];

    /// The map's name in the object and in the pin directory.
    pub fn pin_name(self) -> &'static str {
        match self {
            MapName::Endpoints => map_names::ENDPOINTS,
            MapName::Hosts => map_names::HOSTS,
            MapName::Ipcache => map_names::IPCACHE,
            MapName::Policy => map_names::POLICY,
            MapName::Conntrack => map_names::CONNTRACK,
            MapName::Frags => map_names::FRAGS,
        }
    }

    /// The map's `max_entries`, from `policyc_maps.h`.
    pub fn capacity(self) -> u32 {
        match self {
            MapName::Endpoints => capacity::ENDPOINTS,
            MapName::Hosts => capacity::HOSTS,
            MapName::Ipcache => capacity::IPCACHE,
            MapName::Policy => capacity::POLICY,
            MapName::Conntrack => capacity::CONNTRACK,
            MapName::Frags => capacity::FRAGS,
        }
    }
}

impl fmt::Display for MapName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.pin_name())
    }
}

/// A key of one of the keyed maps the runtime writes or reads entry by entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapKey {
    /// An ifindex in `policyc_endpoints`.
    Endpoint(u32),
    /// An address in `policyc_hosts`.
    Host(HostKey),
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
            MapKey::Host(_) => MapName::Hosts,
            MapKey::Ipcache(_) => MapName::Ipcache,
            MapKey::Policy(_) => MapName::Policy,
            MapKey::Conntrack(_) => MapName::Conntrack,
        }
    }
}

/// A key with its value, both generation slots included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MapEntry {
    Endpoint(u32, EndpointInfo),
    Host(HostKey, IpcacheValue),
    Ipcache(IpcacheKey, IpcacheValue),
    Policy(PolicyKey, PolicyValue),
    Conntrack(CtKey, CtValue),
}

impl MapEntry {
    /// The entry's key.
    pub fn key(&self) -> MapKey {
        match *self {
            MapEntry::Endpoint(k, _) => MapKey::Endpoint(k),
            MapEntry::Host(k, _) => MapKey::Host(k),
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
/// [`crate::RuntimeError::WriteMap`], [`crate::RuntimeError::DeleteMap`] or
/// [`crate::RuntimeError::WaitForReaders`].
pub trait MapBackend {
    /// Every key of `map`. A map that changes while it is listed (conntrack does) may
    /// give a key twice or miss one; the listing stops after `capacity` keys, so it
    /// always ends. The frags map has no key type here and lists as empty: it is only
    /// counted, with [`MapBackend::len`].
    fn keys(&self, map: MapName) -> Result<Vec<MapKey>>;

    /// How many entries `map` holds now.
    fn len(&self, map: MapName) -> Result<usize>;

    /// The entry stored under `key`, or `None` when there is none.
    ///
    /// For the ipcache this is a longest-prefix lookup, as the kernel does it: it is an
    /// exact read only for a key that [`MapBackend::keys`] returned.
    fn get(&self, key: &MapKey) -> Result<Option<MapEntry>>;

    /// Every entry of `map` (one of [`MapName::APPLIED`]), as [`MapBackend::keys`] and
    /// [`MapBackend::get`] would give them; a backend may read them faster in bulk.
    fn entries(&self, map: MapName) -> Result<Vec<MapEntry>> {
        let mut entries = Vec::new();
        for key in self.keys(map)? {
            // A key that vanished between listing and reading is simply absent now.
            match self.get(&key)? {
                Some(entry) => entries.push(entry),
                None => tracing::debug!(?key, "key vanished while reading"),
            }
        }
        Ok(entries)
    }

    /// Inserts the entry or replaces the value under its key.
    fn update(&mut self, entry: &MapEntry) -> Result<()>;

    /// Removes the entry under `key`. Removing a key that is not there is not an error:
    /// the map is then already as the caller wants it.
    fn delete(&mut self, key: &MapKey) -> Result<()>;

    /// The config entry as the datapath reads it.
    fn config(&self) -> Result<Config>;

    /// Writes the config entry: every other field first, then the generation with one
    /// aligned store, so a packet reads either the old generation or the new one.
    fn set_config(&mut self, config: &Config) -> Result<()>;

    /// Returns once every datapath program that was running when it was called has
    /// finished: after it, no packet can still be judged in a generation flipped away
    /// from before the call.
    fn wait_for_readers(&mut self) -> Result<()>;

    /// The counters of metrics row `row`, per reason, summed over all CPUs.
    fn metrics(&self, row: u32) -> Result<Vec<(Reason, MetricsValue)>>;

    /// Zeroes metrics row `row`, for an interface that takes it over.
    fn reset_metrics(&mut self, row: u32) -> Result<()>;
}
