//! The update planner: the operations that take the live maps to a desired state so that
//! every packet is judged wholly by the old state or wholly by the new one.
//!
//! Every value the runtime writes holds two copies, one per generation slot, and the
//! datapath reads the generation once per packet and then only that generation's slot
//! (see `policyc_maps.h`, "Generations"). An update therefore runs in four phases:
//!
//! 1. **prepare**: every key of the old or the new state is written with the old
//!    generation's answer in the live slot and the new one's in the idle slot. Packets
//!    read only the live slot, and a key new to the map gets in it what the old state
//!    answers without it (see below), so nothing a packet sees changes.
//! 2. **flip**: the generation is incremented with one aligned store. A packet that
//!    reads it afterwards is judged wholly by the new state; the conntrack entries,
//!    which cache a verdict together with the generation that took it, are re-checked.
//! 3. **wait**: returns once every packet that read the old generation is done.
//! 4. **level**: the retired slot is brought level with the live one and the keys of
//!    the old state only are deleted. Nobody reads the retired slot any more, and a
//!    deleted key holds in the live slot what the new state answers without it.
//!
//! "What a state answers without a key" is what makes inserts and deletes invisible:
//! an absent endpoint or an endpoint with id 0 drops as unbound; an absent policy key or
//! one whose verdict is `VERDICT_NONE` makes the datapath go on to its next key; and a
//! prefix holds the identity of the longest other prefix of that state that contains
//! it (or the world's), so adding or removing it changes no address's identity.
//!
//! When the live slot already answers as the new state (a repeated apply, or a re-run
//! after an apply was interrupted between the flip and the end), there is no flip:
//! the entries are levelled and the stale keys deleted, which changes no answer. That
//! run still waits for readers before it levels: the interrupted run may have died
//! between its flip and its wait, with packets of the old generation still in flight.
//!
//! An interrupted apply leaves the live slot as it was (before the flip) or as the new
//! state (after it); the next apply reads the live maps, not a record of the last
//! apply, and converges from either. A plan of a state the maps already hold is empty.

use std::collections::{BTreeMap, BTreeSet};

use datapath::{
    Config, EndpointInfo, EndpointPolicy, HostKey, IDENTITY_WORLD, IpcacheKey, IpcacheValue,
    PolicyValue, PolicyVerdict, SLOTS, capacity, slot_of,
};

use crate::{
    error::{Result, RuntimeError},
    maps::{MapBackend, MapEntry, MapKey, MapName},
    state::{LiveMaps, MapState, endpoint_info},
};

/// One operation of a plan, in execution order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MapOp {
    /// Zero a metrics row before an interface takes it over.
    ResetMetrics(u32),
    Write(MapEntry),
    /// Make this generation the live one.
    Flip(u32),
    /// Wait for the packets judged in the old generation.
    Wait,
    Delete(MapKey),
}

/// What an update changes in one map, as the states differ (not counting the
/// operations that carry it out).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MapChanges {
    /// Keys added or whose value changes.
    pub written: usize,
    /// Keys removed.
    pub deleted: usize,
}

/// The operations of one update; see the module documentation.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// The live generation the plan was made against.
    pub generation: u32,
    /// Metrics rows of interfaces new to the endpoints map, zeroed first.
    pub new_rows: Vec<u32>,
    /// Phase 1: entries written with the new state in the idle slot.
    pub prepare: Vec<MapEntry>,
    /// Phases 2 and 3: whether the generation flips.
    pub flip: bool,
    /// Without a flip, whether phase 4 first waits for readers (it touches the slot an
    /// interrupted earlier run may have just retired).
    pub wait_before_level: bool,
    /// Phase 4: entries brought level in both slots.
    pub level: Vec<MapEntry>,
    /// Phase 4: keys of the old state only.
    pub deletes: Vec<MapKey>,
    /// What changes, per map, in [`MapName::APPLIED`] order.
    pub changes: Vec<(MapName, MapChanges)>,
}

/// Which state a key is absent from.
#[derive(Clone, Copy)]
enum Side {
    Old,
    New,
}

impl Plan {
    /// The operations that take `live` to `desired`. Fails, before anything is written,
    /// when a map could not hold the old and the new keys together.
    pub fn new(live: &LiveMaps, desired: &MapState) -> Result<Plan> {
        let s = slot_of(live.generation);
        let old = live.view(s);
        let state = |side| if matches!(side, Side::Old) { &old } else { desired };
        let rows = assign_rows(live, desired)?;
        // Flags belong to an interface, not to a generation: a bound interface takes the
        // desired flags with the plan's first write (they change only with its role, when
        // its programs are re-attached the other way round anyway). The endpoints are
        // staged as if they had them already, so every later write keeps them.
        let flags_of = |k: &u32| desired.endpoint_flags.get(k).copied().unwrap_or(0);
        let endpoints: BTreeMap<u32, EndpointInfo> = live
            .endpoints
            .iter()
            .map(|(k, v)| {
                let flags = if desired.endpoints.contains_key(k) { flags_of(k) } else { v.flags };
                (*k, EndpointInfo { flags, ..*v })
            })
            .collect();
        let reflagged: Vec<MapEntry> = endpoints
            .iter()
            .filter(|(k, v)| live.endpoints.get(k).is_some_and(|old| old.flags != v.flags))
            .map(|(k, v)| MapEntry::Endpoint(*k, *v))
            .collect();

        let stages = [
            stage(
                &endpoints,
                &desired.endpoints,
                s,
                |_, _| EndpointPolicy::default(),
                |k| EndpointInfo {
                    flags: flags_of(k),
                    ..endpoint_info([EndpointPolicy::default(); SLOTS], rows[k])
                },
            )
            .wrap(MapName::Endpoints, MapEntry::Endpoint, MapKey::Endpoint),
            stage(
                &live.hosts,
                &desired.hosts,
                s,
                |k: &HostKey, side| {
                    let full = k.prefix().prefix_bits();
                    state(side).trie_match(k.family, k.addr, full + 1).unwrap_or(IDENTITY_WORLD)
                },
                |_| IpcacheValue::default(),
            )
            .wrap(MapName::Hosts, MapEntry::Host, MapKey::Host),
            stage(
                &live.ipcache,
                &desired.ipcache,
                s,
                |k: &IpcacheKey, side| {
                    let bits = k.prefix_bits();
                    state(side).trie_match(k.family, k.addr, bits).unwrap_or(IDENTITY_WORLD)
                },
                |_| IpcacheValue::default(),
            )
            .wrap(MapName::Ipcache, MapEntry::Ipcache, MapKey::Ipcache),
            stage(
                &live.policy,
                &desired.policy,
                s,
                |_, _| PolicyVerdict::default(),
                |_| PolicyValue::default(),
            )
            .wrap(MapName::Policy, MapEntry::Policy, MapKey::Policy),
        ];

        let flip = stages.iter().any(|st| st.differs);
        let mut plan = Plan { generation: live.generation, flip, ..Plan::default() };
        plan.new_rows = desired
            .endpoints
            .keys()
            .filter(|k| !live.endpoints.contains_key(k))
            .map(|k| rows[k])
            .collect();
        for st in stages {
            plan.changes.push((st.map, st.changes));
            plan.deletes.extend(st.deletes);
            if flip {
                plan.prepare.extend(st.prepare);
                plan.level.extend(st.level_after_prepare);
            } else {
                // The live slot already answers as the new state: levelling and deleting
                // change no answer, and a prepared value would only be levelled again.
                plan.level.extend(st.level_now);
            }
        }
        if flip {
            plan.prepare.splice(0..0, reflagged);
        } else {
            plan.level.splice(0..0, reflagged);
        }
        plan.wait_before_level = !flip && (!plan.level.is_empty() || !plan.deletes.is_empty());
        plan.check_capacity(live)?;
        Ok(plan)
    }

    /// True when the maps already hold the desired state.
    pub fn is_empty(&self) -> bool {
        self.prepare.is_empty() && self.level.is_empty() && self.deletes.is_empty() && !self.flip
    }

    /// The generation live after the plan.
    pub fn next_generation(&self) -> u32 {
        if self.flip { self.generation.wrapping_add(1) } else { self.generation }
    }

    /// Phases 1 to 3 in execution order: what must happen before a new interface may be
    /// attached.
    pub fn switch_ops(&self) -> impl Iterator<Item = MapOp> + '_ {
        let rows = self.new_rows.iter().copied().map(MapOp::ResetMetrics);
        let prepare = self.prepare.iter().copied().map(MapOp::Write);
        let flip = self.flip.then_some([MapOp::Flip(self.next_generation()), MapOp::Wait]);
        rows.chain(prepare).chain(flip.into_iter().flatten())
    }

    /// Phase 4 in execution order.
    pub fn level_ops(&self) -> impl Iterator<Item = MapOp> + '_ {
        let wait = self.wait_before_level.then_some(MapOp::Wait);
        let level = self.level.iter().copied().map(MapOp::Write);
        wait.into_iter().chain(level).chain(self.deletes.iter().copied().map(MapOp::Delete))
    }

    /// Every operation in execution order.
    pub fn ops(&self) -> impl Iterator<Item = MapOp> + '_ {
        self.switch_ops().chain(self.level_ops())
    }

    /// Map operations (writes, deletes and the flip) the plan performs.
    pub fn op_count(&self) -> usize {
        self.ops().filter(|op| !matches!(op, MapOp::Wait | MapOp::ResetMetrics(_))).count()
    }

    /// What the plan changes in `map`.
    pub fn changes(&self, map: MapName) -> MapChanges {
        self.changes.iter().find(|(m, _)| *m == map).map(|(_, c)| *c).unwrap_or_default()
    }

    /// Runs phases 1 to 3; `config` is written with the new generation at the flip.
    pub fn switch(&self, backend: &mut impl MapBackend, config: &Config) -> Result<()> {
        let _span = tracing::debug_span!("switch", writes = self.prepare.len()).entered();
        self.switch_ops().try_for_each(|op| run(backend, op, config))
    }

    /// Runs phase 4.
    pub fn settle(&self, backend: &mut impl MapBackend) -> Result<()> {
        let _span =
            tracing::debug_span!("level", writes = self.level.len(), deletes = self.deletes.len())
                .entered();
        self.level_ops().try_for_each(|op| run(backend, op, &Config::default()))
    }

    /// A map holds the old keys and the new ones between phases 1 and 4.
    fn check_capacity(&self, live: &LiveMaps) -> Result<()> {
        for map in MapName::APPLIED {
            let added: BTreeSet<MapKey> = self
                .prepare
                .iter()
                .chain(&self.level)
                .map(MapEntry::key)
                .filter(|k| k.map() == map && !live.has(k))
                .collect();
            let needed = live.len(map) + added.len();
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

/// Runs one operation; `config` supplies the fields written with a flip.
pub fn run(backend: &mut impl MapBackend, op: MapOp, config: &Config) -> Result<()> {
    match op {
        MapOp::ResetMetrics(row) => backend.reset_metrics(row),
        MapOp::Write(entry) => backend.update(&entry),
        MapOp::Flip(generation) => backend.set_config(&Config { generation, ..*config }),
        MapOp::Wait => backend.wait_for_readers(),
        MapOp::Delete(key) => backend.delete(&key),
    }
}

/// A value with one copy per generation slot.
trait Slotted: Copy + PartialEq {
    type Slot: Copy + PartialEq;
    fn slot(&self, slot: usize) -> Self::Slot;
    /// This value with its slots replaced (what is not per slot is kept).
    fn with_slots(self, slots: [Self::Slot; SLOTS]) -> Self;
}

impl Slotted for EndpointInfo {
    type Slot = EndpointPolicy;
    fn slot(&self, slot: usize) -> EndpointPolicy {
        self.slot[slot]
    }
    fn with_slots(self, slot: [EndpointPolicy; SLOTS]) -> Self {
        EndpointInfo { slot, ..self }
    }
}

impl Slotted for IpcacheValue {
    type Slot = u32;
    fn slot(&self, slot: usize) -> u32 {
        self.identity[slot]
    }
    fn with_slots(self, identity: [u32; SLOTS]) -> Self {
        IpcacheValue { identity }
    }
}

impl Slotted for PolicyValue {
    type Slot = PolicyVerdict;
    fn slot(&self, slot: usize) -> PolicyVerdict {
        self.slot[slot]
    }
    fn with_slots(self, slot: [PolicyVerdict; SLOTS]) -> Self {
        PolicyValue { slot }
    }
}

/// One map's part of a plan, before it is known whether the generation flips.
struct Stage<K, V> {
    /// Phase 1 writes.
    prepare: Vec<(K, V)>,
    /// Phase 4 writes after phase 1 ran.
    level_after_prepare: Vec<(K, V)>,
    /// The writes when there is no flip: the same values, compared with the map as is.
    level_now: Vec<(K, V)>,
    deletes: Vec<K>,
    /// Whether some key answers otherwise in the new state than in the live slot.
    differs: bool,
    changes: MapChanges,
}

/// A [`Stage`] in terms of map entries.
struct Staged {
    map: MapName,
    prepare: Vec<MapEntry>,
    level_after_prepare: Vec<MapEntry>,
    level_now: Vec<MapEntry>,
    deletes: Vec<MapKey>,
    differs: bool,
    changes: MapChanges,
}

impl<K: Copy, V: Copy> Stage<K, V> {
    fn wrap(
        self,
        map: MapName,
        entry: impl Fn(K, V) -> MapEntry,
        key: impl Fn(K) -> MapKey,
    ) -> Staged {
        let entries = |v: Vec<(K, V)>| v.into_iter().map(|(k, v)| entry(k, v)).collect();
        Staged {
            map,
            prepare: entries(self.prepare),
            level_after_prepare: entries(self.level_after_prepare),
            level_now: entries(self.level_now),
            deletes: self.deletes.into_iter().map(key).collect(),
            differs: self.differs,
            changes: self.changes,
        }
    }
}

/// Plans one map. `absent(key, side)` is what that side's state answers for a key it
/// does not have; `fresh(key)` is the value a key new to the map starts from.
fn stage<K: Ord + Copy, V: Slotted>(
    current: &BTreeMap<K, V>,
    desired: &BTreeMap<K, V::Slot>,
    live_slot: usize,
    absent: impl Fn(&K, Side) -> V::Slot,
    fresh: impl Fn(&K) -> V,
) -> Stage<K, V> {
    let mut stage = Stage {
        prepare: vec![],
        level_after_prepare: vec![],
        level_now: vec![],
        deletes: vec![],
        differs: false,
        changes: MapChanges::default(),
    };
    let keys: BTreeSet<&K> = current.keys().chain(desired.keys()).collect();
    for &key in keys {
        let now = current.get(&key).copied();
        let live = now.map_or_else(|| absent(&key, Side::Old), |v| v.slot(live_slot));
        let wanted = desired.get(&key).copied();
        let new = wanted.unwrap_or_else(|| absent(&key, Side::New));
        let base = now.unwrap_or_else(|| fresh(&key));

        let mut slots = [new; SLOTS];
        slots[live_slot] = live;
        let prepared = base.with_slots(slots);
        if now != Some(prepared) {
            stage.prepare.push((key, prepared));
        }
        stage.differs |= live != new;

        if wanted.is_some() {
            let settled = base.with_slots([new; SLOTS]);
            if prepared != settled {
                stage.level_after_prepare.push((key, settled));
            }
            if now != Some(settled) {
                stage.level_now.push((key, settled));
            }
            if now.is_none() || live != new {
                stage.changes.written += 1;
            }
        } else {
            stage.deletes.push(key);
            if now.is_some() {
                stage.changes.deleted += 1;
            }
        }
    }
    stage
}

/// The metrics row of every interface of `desired`: its current one, or for an interface
/// new to the map the lowest row no entry of the map holds (row 0 counts unbound
/// interfaces and is never given out).
fn assign_rows(live: &LiveMaps, desired: &MapState) -> Result<BTreeMap<u32, u32>> {
    let used: BTreeSet<u32> = live.endpoints.values().map(|v| v.metrics_row).collect();
    let mut free = (1..capacity::ENDPOINTS).filter(|row| !used.contains(row));
    let mut rows = BTreeMap::new();
    for ifindex in desired.endpoints.keys() {
        let row = match live.endpoints.get(ifindex) {
            Some(info) => info.metrics_row,
            None => free.next().ok_or(RuntimeError::Capacity {
                map: MapName::Endpoints.pin_name(),
                needed: live.endpoints.len() + 1,
                capacity: capacity::ENDPOINTS - 1,
            })?,
        };
        rows.insert(*ifindex, row);
    }
    Ok(rows)
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
