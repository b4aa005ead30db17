//! The content of the maps the runtime owns, as plain sorted data: what the node should
//! hold (from an artifact and the interface bindings) and what it holds now (read from
//! the live maps, so any drift is seen and repaired).

use std::collections::BTreeMap;

use compiler::artifact::Artifact;
use datapath::{EndpointInfo, IpcacheKey, IpcacheValue, PolicyKey, PolicyValue};

use crate::{
    bindings::BoundInterface,
    error::{Result, RuntimeError},
    maps::{MapBackend, MapEntry, MapName},
};

/// The entries of the endpoints, ipcache and policy maps. Conntrack is not part of it:
/// the datapath owns that map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapState {
    pub endpoints: BTreeMap<u32, EndpointInfo>,
    pub ipcache: BTreeMap<IpcacheKey, IpcacheValue>,
    pub policy: BTreeMap<PolicyKey, PolicyValue>,
}

impl MapState {
    /// What the maps must hold for `artifact` with these interfaces bound: the
    /// artifact's ipcache and policy as they are, and one endpoint entry per interface.
    pub fn desired(artifact: &Artifact, bound: &[BoundInterface]) -> Result<MapState> {
        let mut state = MapState::default();
        for (key, value) in &artifact.ipcache {
            insert_unique(&mut state.ipcache, *key, *value, MapName::Ipcache)?;
        }
        for (key, value) in &artifact.policy {
            insert_unique(&mut state.policy, *key, *value, MapName::Policy)?;
        }
        for interface in bound {
            state.endpoints.insert(interface.ifindex, interface.info);
        }
        Ok(state)
    }

    /// What the live maps hold now.
    pub fn read(backend: &impl MapBackend) -> Result<MapState> {
        let _span = tracing::debug_span!("read_maps").entered();
        let mut state = MapState::default();
        for map in [MapName::Endpoints, MapName::Ipcache, MapName::Policy] {
            for key in backend.keys(map)? {
                // A key that vanished between listing and reading is simply absent now.
                match backend.get(&key)? {
                    Some(entry) => state.insert(entry),
                    None => tracing::debug!(?key, "key vanished while reading"),
                }
            }
        }
        tracing::debug!(
            endpoints = state.endpoints.len(),
            ipcache = state.ipcache.len(),
            policy = state.policy.len(),
            "read live maps"
        );
        Ok(state)
    }

    /// Number of entries in `map` (0 for conntrack, which this state does not hold).
    pub fn len(&self, map: MapName) -> usize {
        match map {
            MapName::Endpoints => self.endpoints.len(),
            MapName::Ipcache => self.ipcache.len(),
            MapName::Policy => self.policy.len(),
            MapName::Conntrack => 0,
        }
    }

    /// Stores `entry`, replacing any value under its key. Conntrack entries are ignored.
    pub fn insert(&mut self, entry: MapEntry) {
        match entry {
            MapEntry::Endpoint(k, v) => {
                self.endpoints.insert(k, v);
            }
            MapEntry::Ipcache(k, v) => {
                self.ipcache.insert(k, v);
            }
            MapEntry::Policy(k, v) => {
                self.policy.insert(k, v);
            }
            MapEntry::Conntrack(..) => {}
        }
    }
}

fn insert_unique<K: Ord + Copy + std::fmt::Debug, V: PartialEq + Copy>(
    map: &mut BTreeMap<K, V>,
    key: K,
    value: V,
    name: MapName,
) -> Result<()> {
    match map.insert(key, value) {
        Some(old) if old != value => {
            Err(RuntimeError::DuplicateKey { map: name.pin_name(), key: format!("{key:?}") })
        }
        _ => Ok(()),
    }
}
