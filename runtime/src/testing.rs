//! Test doubles: an in-memory [`MapBackend`] and a model of the datapath's lookup.

use std::{collections::BTreeMap, net::Ipv4Addr};

use datapath::{
    CtKey, CtValue, DIR_INGRESS, FAMILY_IPV4, IDENTITY_ANY, IDENTITY_WORLD, IpcacheKey,
    MetricsValue, PolicyKey, Reason, VERDICT_ALLOW,
};

use crate::{
    error::{Result, RuntimeError},
    maps::{MapBackend, MapEntry, MapKey, MapName},
    plan::MapOp,
    state::MapState,
};

/// Maps held in memory. Every write and delete is logged; `fail_after` makes the
/// operation after that many successful ones fail, as a crash or a kernel error would.
#[derive(Debug, Default)]
pub(crate) struct FakeMaps {
    pub state: MapState,
    pub conntrack: BTreeMap<CtKey, CtValue>,
    pub metrics: Vec<(Reason, MetricsValue)>,
    pub log: Vec<MapOp>,
    pub fail_after: Option<usize>,
}

impl FakeMaps {
    pub fn with_state(state: MapState) -> Self {
        FakeMaps { state, ..FakeMaps::default() }
    }

    fn injected_failure(&self, map: MapName) -> Option<aya::maps::MapError> {
        let fail = self.fail_after.is_some_and(|n| self.log.len() >= n);
        fail.then(|| {
            tracing::debug!(%map, "injected failure");
            aya::maps::MapError::ElementNotFound
        })
    }
}

impl MapBackend for FakeMaps {
    fn keys(&self, map: MapName) -> Result<Vec<MapKey>> {
        let s = &self.state;
        Ok(match map {
            MapName::Endpoints => s.endpoints.keys().map(|k| MapKey::Endpoint(*k)).collect(),
            MapName::Ipcache => s.ipcache.keys().map(|k| MapKey::Ipcache(*k)).collect(),
            MapName::Policy => s.policy.keys().map(|k| MapKey::Policy(*k)).collect(),
            MapName::Conntrack => self.conntrack.keys().map(|k| MapKey::Conntrack(*k)).collect(),
        })
    }

    fn get(&self, key: &MapKey) -> Result<Option<MapEntry>> {
        let s = &self.state;
        Ok(match *key {
            MapKey::Endpoint(k) => s.endpoints.get(&k).map(|v| MapEntry::Endpoint(k, *v)),
            MapKey::Ipcache(k) => s.ipcache.get(&k).map(|v| MapEntry::Ipcache(k, *v)),
            MapKey::Policy(k) => s.policy.get(&k).map(|v| MapEntry::Policy(k, *v)),
            MapKey::Conntrack(k) => self.conntrack.get(&k).map(|v| MapEntry::Conntrack(k, *v)),
        })
    }

    fn update(&mut self, entry: &MapEntry) -> Result<()> {
        if let Some(source) = self.injected_failure(entry.map()) {
            return Err(RuntimeError::WriteMap { map: entry.map().pin_name(), source });
        }
        match *entry {
            MapEntry::Conntrack(k, v) => {
                self.conntrack.insert(k, v);
            }
            other => self.state.insert(other),
        }
        self.log.push(MapOp::Write(*entry));
        Ok(())
    }

    fn delete(&mut self, key: &MapKey) -> Result<()> {
        if let Some(source) = self.injected_failure(key.map()) {
            return Err(RuntimeError::DeleteMap { map: key.map().pin_name(), source });
        }
        let s = &mut self.state;
        match key {
            MapKey::Endpoint(k) => drop(s.endpoints.remove(k)),
            MapKey::Ipcache(k) => drop(s.ipcache.remove(k)),
            MapKey::Policy(k) => drop(s.policy.remove(k)),
            MapKey::Conntrack(k) => drop(self.conntrack.remove(k)),
        }
        self.log.push(MapOp::Delete(*key));
        Ok(())
    }

    fn metrics(&self) -> Result<Vec<(Reason, MetricsValue)>> {
        Ok(self.metrics.clone())
    }
}

/// A packet as the policy step of the datapath sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flow {
    /// The host-side interface the packet crosses.
    pub ifindex: u32,
    /// `DIR_INGRESS` (to the endpoint) or `DIR_EGRESS` (from it).
    pub dir: u8,
    /// The other end: the source for ingress, the destination for egress.
    pub peer: Ipv4Addr,
    pub proto: u8,
    /// Destination port or ICMP type; `None` for protocols without one.
    pub port: Option<u16>,
}

/// What the policy step decides, as in `enforce_policy()` of `policyc.bpf.c`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Verdict {
    NoEndpoint,
    NotEnforced,
    Allow { rule: u32 },
    Deny { rule: u32 },
    NoPolicy,
}

/// The table, its port block sizes and the peer identity a flow is judged with, or the
/// verdict that comes first.
pub(crate) fn resolve(state: &MapState, flow: &Flow) -> Result<(u32, u32, u32), Verdict> {
    let Some(ep) = state.endpoints.get(&flow.ifindex) else {
        return Err(Verdict::NoEndpoint);
    };
    let (table, port_bits) = if flow.dir == DIR_INGRESS {
        (ep.ingress_table, ep.ingress_port_bits)
    } else {
        (ep.egress_table, ep.egress_port_bits)
    };
    if table == 0 {
        return Err(Verdict::NotEnforced);
    }
    Ok((table, port_bits, peer_identity(state, flow.peer)))
}

/// The datapath's decision for `flow` given the maps in `state`: endpoint, table,
/// ipcache longest prefix (else world), then the first policy key present.
pub(crate) fn judge(state: &MapState, flow: &Flow) -> Verdict {
    let (table, port_bits, identity) = match resolve(state, flow) {
        Ok(found) => found,
        Err(verdict) => return verdict,
    };
    let entry = [identity, IDENTITY_ANY]
        .into_iter()
        .find_map(|identity| policy_for_identity(state, table, port_bits, identity, flow));
    match entry {
        None => Verdict::NoPolicy,
        Some(v) if v.verdict == VERDICT_ALLOW => Verdict::Allow { rule: v.rule },
        Some(v) => Verdict::Deny { rule: v.rule },
    }
}

/// The keys of one identity, most specific first, as `policy_for_identity()` of the C
/// program tries them: the port blocks of the sizes in `port_bits` holding the port,
/// from one port up, then every port, then every protocol.
fn policy_for_identity<'a>(
    state: &'a MapState,
    table: u32,
    port_bits: u32,
    identity: u32,
    flow: &Flow,
) -> Option<&'a datapath::PolicyValue> {
    let key = |proto, port_bits, port| PolicyKey { table, identity, proto, port_bits, port };
    let blocks = flow.port.into_iter().flat_map(|port| {
        (1..=datapath::PORT_BITS)
            .rev()
            .filter(move |bits| port_bits & (1 << bits) != 0)
            .map(move |bits| key(flow.proto, bits, port & (u16::MAX << (16 - bits))))
    });
    blocks.chain([key(flow.proto, 0, 0), key(0, 0, 0)]).find_map(|k| state.policy.get(&k))
}

/// Longest-prefix match over the IPv4 entries of the ipcache, else the world identity.
fn peer_identity(state: &MapState, peer: Ipv4Addr) -> u32 {
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&peer.octets());
    (0..=32u32)
        .rev()
        .find_map(|bits| state.ipcache.get(&IpcacheKey::new(FAMILY_IPV4, addr, bits)))
        .map_or(IDENTITY_WORLD, |v| v.identity)
}

/// SplitMix64: a small deterministic generator, so property tests need no dependency and
/// a failing seed can be replayed.
#[derive(Debug)]
pub(crate) struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True with probability `percent`/100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}
