//! Test doubles: an in-memory [`MapBackend`] and a model of the datapath's lookup.

use std::{collections::BTreeMap, net::Ipv4Addr};

use datapath::{
    Config, CtKey, CtValue, DIR_INGRESS, FAMILY_IPV4, IDENTITY_ANY, MetricsValue, PolicyKey,
    PolicyVerdict, Reason, VERDICT_ALLOW,
};

use crate::{
    error::{Result, RuntimeError},
    maps::{MapBackend, MapEntry, MapKey, MapName},
    plan::MapOp,
    state::{LiveMaps, MapState},
};

/// Maps held in memory. Every operation is logged; `fail_after` makes the operation after
/// that many successful ones fail, as a crash or a kernel error would.
#[derive(Debug, Default)]
pub(crate) struct FakeMaps {
    /// The keyed maps and the generation.
    pub live: LiveMaps,
    /// The config fields other than the generation.
    pub config: Config,
    pub conntrack: BTreeMap<CtKey, CtValue>,
    pub metrics: BTreeMap<(u32, Reason), MetricsValue>,
    pub log: Vec<MapOp>,
    pub fail_after: Option<usize>,
}

impl FakeMaps {
    fn fail(&self, map: &'static str) -> Result<()> {
        if self.fail_after.is_some_and(|n| self.log.len() >= n) {
            tracing::debug!(map, "injected failure");
            return Err(RuntimeError::WriteMap {
                map,
                source: aya::maps::MapError::ElementNotFound,
            });
        }
        Ok(())
    }
}

impl MapBackend for FakeMaps {
    fn keys(&self, map: MapName) -> Result<Vec<MapKey>> {
        let s = &self.live;
        Ok(match map {
            MapName::Endpoints => s.endpoints.keys().map(|k| MapKey::Endpoint(*k)).collect(),
            MapName::Hosts => s.hosts.keys().map(|k| MapKey::Host(*k)).collect(),
            MapName::Ipcache => s.ipcache.keys().map(|k| MapKey::Ipcache(*k)).collect(),
            MapName::Policy => s.policy.keys().map(|k| MapKey::Policy(*k)).collect(),
            MapName::Conntrack => self.conntrack.keys().map(|k| MapKey::Conntrack(*k)).collect(),
            MapName::Frags => vec![],
        })
    }

    fn len(&self, map: MapName) -> Result<usize> {
        self.keys(map).map(|k| k.len())
    }

    fn get(&self, key: &MapKey) -> Result<Option<MapEntry>> {
        let s = &self.live;
        Ok(match *key {
            MapKey::Endpoint(k) => s.endpoints.get(&k).map(|v| MapEntry::Endpoint(k, *v)),
            MapKey::Host(k) => s.hosts.get(&k).map(|v| MapEntry::Host(k, *v)),
            MapKey::Ipcache(k) => s.ipcache.get(&k).map(|v| MapEntry::Ipcache(k, *v)),
            MapKey::Policy(k) => s.policy.get(&k).map(|v| MapEntry::Policy(k, *v)),
            MapKey::Conntrack(k) => self.conntrack.get(&k).map(|v| MapEntry::Conntrack(k, *v)),
        })
    }

    fn update(&mut self, entry: &MapEntry) -> Result<()> {
        self.fail(entry.map().pin_name())?;
        match *entry {
            MapEntry::Conntrack(k, v) => drop(self.conntrack.insert(k, v)),
            other => self.live.insert(other),
        }
        self.log.push(MapOp::Write(*entry));
        Ok(())
    }

    fn delete(&mut self, key: &MapKey) -> Result<()> {
        self.fail(key.map().pin_name())?;
        match key {
            MapKey::Conntrack(k) => drop(self.conntrack.remove(k)),
            other => self.live.remove(other),
        }
        self.log.push(MapOp::Delete(*key));
        Ok(())
    }

    fn config(&self) -> Result<Config> {
        Ok(Config { generation: self.live.generation, ..self.config })
    }

    fn set_config(&mut self, config: &Config) -> Result<()> {
        self.fail(datapath::map_names::CONFIG)?;
        self.config = *config;
        if config.generation != self.live.generation {
            self.live.generation = config.generation;
            self.log.push(MapOp::Flip(config.generation));
        }
        Ok(())
    }

    fn wait_for_readers(&mut self) -> Result<()> {
        self.fail("barrier")?;
        self.log.push(MapOp::Wait);
        Ok(())
    }

    fn metrics(&self, row: u32) -> Result<Vec<(Reason, MetricsValue)>> {
        Ok(Reason::ALL
            .iter()
            .map(|r| (*r, self.metrics.get(&(row, *r)).copied().unwrap_or_default()))
            .collect())
    }

    fn reset_metrics(&mut self, row: u32) -> Result<()> {
        self.fail(datapath::map_names::METRICS)?;
        self.metrics.retain(|(r, _), _| *r != row);
        self.log.push(MapOp::ResetMetrics(row));
        Ok(())
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

/// The datapath's decision for `flow` given what one generation says: endpoint, table,
/// peer identity (host entry, longest prefix, else world), then the first policy key
/// present.
pub(crate) fn judge(state: &MapState, flow: &Flow) -> Verdict {
    let Some(ep) = state.endpoints.get(&flow.ifindex) else {
        return Verdict::NoEndpoint;
    };
    let (table, port_bits) = if flow.dir == DIR_INGRESS {
        (ep.ingress_table, ep.ingress_port_bits)
    } else {
        (ep.egress_table, ep.egress_port_bits)
    };
    if table == 0 {
        return Verdict::NotEnforced;
    }
    let mut addr = [0u8; 16];
    addr[..4].copy_from_slice(&flow.peer.octets());
    let identity = state.identity_of(FAMILY_IPV4, addr);
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
) -> Option<&'a PolicyVerdict> {
    let key = |proto, port_bits, port| PolicyKey { table, identity, proto, port_bits, port };
    let blocks = flow.port.into_iter().flat_map(|port| {
        (1..=datapath::PORT_BITS)
            .rev()
            .filter(move |bits| port_bits & (1 << bits) != 0)
            .map(move |bits| key(flow.proto, bits, port & (u16::MAX << (16 - bits))))
    });
    blocks.chain([key(flow.proto, 0, 0), key(0, 0, 0)]).find_map(|k| state.policy.get(&k))
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
