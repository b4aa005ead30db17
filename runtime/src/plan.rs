//! The update planner: the entry writes and deletes that turn the live maps into the
//! desired ones, in an order that never lets a packet see a verdict that is neither the
//! old nor the new one (for the flows the argument covers, below).
//!
//! The datapath decides a packet by the first entry present among its policy keys, in a
//! fixed order of rank ([`PolicyKey::rank`]), and finds the peer's identity by longest prefix. For
//! such lookups, writing every new or changed entry most specific first, then deleting
//! every stale entry least specific first, keeps each lookup at its old or its new result
//! after every single operation (see the update-ordering design note for the proof).
//!
//! Across maps, references go one way: endpoints name policy tables, the ipcache names
//! identities, and policy entries are keyed by both. So the planner writes what is
//! referenced before what refers to it, and deletes in the reverse order:
//!
//! 1. policy writes, ascending rank;
//! 2. ipcache writes, longest prefix first;
//! 3. endpoint writes, so an interface points at a table only once it is complete;
//! 4. endpoint deletes;
//! 5. ipcache deletes, shortest prefix first, so an address stops resolving to an identity
//!    before that identity's entries go;
//! 6. policy deletes, descending rank.
//!
//! A flow whose table and peer identity are the same before and after the update is
//! therefore always judged as before or as after. A flow whose peer changes identity (or
//! whose interface changes table) in the same update as the policy of those identities
//! can, between steps 1 and 2, be judged by the new policy of its old identity: no
//! order of single-entry writes avoids that in general. Steps 1-3 at least guarantee that
//! a reference is only ever switched to a complete new table, so a new pod or identity is
//! never dropped for lack of entries.
//! FIXME: a per-endpoint atomic swap (map-in-map, as the design note describes) is the cure
//! for identity and table changes; it needs a datapath change.
//!
//! Only entries that differ are written, so applying the same state twice writes nothing.

use std::collections::BTreeMap;

use datapath::{IpcacheKey, PolicyKey};

use crate::{
    error::{Result, RuntimeError},
    maps::{MapBackend, MapEntry, MapKey, MapName},
    state::MapState,
};

/// One step of a plan.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOp {
    Write(MapEntry),
    Delete(MapKey),
}

/// How many entries of one map a plan writes and deletes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapChanges {
    /// New or changed entries.
    pub written: usize,
    /// Stale entries removed.
    pub deleted: usize,
}

/// The operations of one update: all writes, then all deletes, each in the order the
/// module documentation gives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub writes: Vec<MapEntry>,
    pub deletes: Vec<MapKey>,
}

impl Plan {
    /// The operations to turn `current` into `desired`. Fails when a map would exceed
    /// its capacity at the update's peak, before anything is written.
    pub fn new(current: &MapState, desired: &MapState) -> Result<Plan> {
        let mut plan = Plan::default();

        let mut policy = changed(&current.policy, &desired.policy);
        policy.sort_by_key(|(k, _)| (k.rank(), *k));
        plan.writes.extend(policy.into_iter().map(|(k, v)| MapEntry::Policy(k, v)));

        let mut ipcache = changed(&current.ipcache, &desired.ipcache);
        ipcache.sort_by_key(|(k, _)| (std::cmp::Reverse(k.prefixlen), *k));
        plan.writes.extend(ipcache.into_iter().map(|(k, v)| MapEntry::Ipcache(k, v)));

        let endpoints = changed(&current.endpoints, &desired.endpoints);
        plan.writes.extend(endpoints.into_iter().map(|(k, v)| MapEntry::Endpoint(k, v)));

        plan.deletes.extend(stale(&current.endpoints, &desired.endpoints).map(MapKey::Endpoint));

        let mut ipcache: Vec<IpcacheKey> = stale(&current.ipcache, &desired.ipcache).collect();
        ipcache.sort_by_key(|k| (k.prefixlen, *k));
        plan.deletes.extend(ipcache.into_iter().map(MapKey::Ipcache));

        let mut policy: Vec<PolicyKey> = stale(&current.policy, &desired.policy).collect();
        policy.sort_by_key(|k| (std::cmp::Reverse(k.rank()), *k));
        plan.deletes.extend(policy.into_iter().map(MapKey::Policy));

        plan.check_capacity(current)?;
        Ok(plan)
    }

    /// True when the maps already hold the desired state.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty() && self.deletes.is_empty()
    }

    /// Every operation in execution order.
    pub fn ops(&self) -> impl Iterator<Item = MapOp> + '_ {
        let writes = self.writes.iter().copied().map(MapOp::Write);
        writes.chain(self.deletes.iter().copied().map(MapOp::Delete))
    }

    /// What the plan does to `map`.
    pub fn changes(&self, map: MapName) -> MapChanges {
        MapChanges {
            written: self.writes.iter().filter(|e| e.map() == map).count(),
            deleted: self.deletes.iter().filter(|k| k.map() == map).count(),
        }
    }

    /// Runs the writes (steps 1-3).
    pub fn write(&self, backend: &mut impl MapBackend) -> Result<()> {
        let _span = tracing::debug_span!("write", entries = self.writes.len()).entered();
        self.writes.iter().try_for_each(|entry| backend.update(entry))
    }

    /// Runs the deletes (steps 4-6).
    pub fn delete(&self, backend: &mut impl MapBackend) -> Result<()> {
        let _span = tracing::debug_span!("delete", entries = self.deletes.len()).entered();
        self.deletes.iter().try_for_each(|key| backend.delete(key))
    }

    /// A map holds its current entries plus every inserted key until the deletes run.
    fn check_capacity(&self, current: &MapState) -> Result<()> {
        for map in [MapName::Endpoints, MapName::Ipcache, MapName::Policy] {
            let inserted = self.writes.iter().filter(|e| e.map() == map && !current.has(e));
            let needed = current.len(map) + inserted.count();
            if needed > map.capacity() as usize {
                return Err(RuntimeError::Capacity {
                    map: map.pin_name(),
                    needed,
                    capacity: map.capacity(),
                });
            }
        }
        Ok(())
    }
}

impl MapState {
    /// True when the entry's key is present (with any value).
    fn has(&self, entry: &MapEntry) -> bool {
        match entry {
            MapEntry::Endpoint(k, _) => self.endpoints.contains_key(k),
            MapEntry::Ipcache(k, _) => self.ipcache.contains_key(k),
            MapEntry::Policy(k, _) => self.policy.contains_key(k),
            MapEntry::Conntrack(..) => false,
        }
    }
}

/// Desired entries that are missing or hold another value, in key order.
fn changed<K: Ord + Copy, V: PartialEq + Copy>(
    current: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V>,
) -> Vec<(K, V)> {
    desired.iter().filter(|(k, v)| current.get(k) != Some(v)).map(|(k, v)| (*k, *v)).collect()
}

/// Current keys the desired state does not have, in key order.
fn stale<'a, K: Ord + Copy, V>(
    current: &'a BTreeMap<K, V>,
    desired: &'a BTreeMap<K, V>,
) -> impl Iterator<Item = K> + 'a {
    current.keys().filter(|k| !desired.contains_key(k)).copied()
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
