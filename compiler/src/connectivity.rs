//! Connectivity: every connection an artifact allows, between groups of endpoints and
//! outside address ranges, with the protocols and ports it allows them on.
//!
//! The answer comes from the compiled tables, through [`crate::simulate`], not from the
//! reference evaluator. The tables are what the datapath enforces, and an artifact is all
//! `policyc diff` has when it is given two artifacts; one engine for both commands keeps
//! their answers comparable. (The reference agrees with the tables on every flow, which
//! tests/agreement.rs checks, so nothing is lost.)
//!
//! The result is exact, not sampled. A packet is judged by its table, its peer's
//! identity, its protocol and its port, and each of these takes finitely many classes of
//! values the tables cannot tell apart:
//! - ports: the tables key single ports, so the port numbers in the policy keys of a
//!   protocol, each with its successor, cut 0-65535 into ranges that every table judges
//!   alike (named ports were resolved to numbers by the compiler, so they are among
//!   them). One probe per range decides the whole range;
//! - protocols: TCP, UDP, SCTP, ICMP and ICMPv6, any other protocol a key names, and
//!   "other" for every protocol no key names, which only wildcard keys can match;
//! - outside addresses: each address-table prefix that is not a pod or node stands for
//!   the addresses it covers that no longer prefix covers (one identity, found by longest
//!   prefix match), and "world" for the addresses no prefix covers.
//!
//! Pods are grouped by the workload that owns them ([`Grouping`]). A group pair holds
//! many pod pairs, which policies may treat differently, so each connection reports two
//! sets: what is allowed for *all* pod pairs of the two groups, and what is allowed for
//! *some* but not all of them. A pod never connects to itself here: that traffic stays
//! inside the pod and never meets the datapath.
//!
//! The node a pod runs on is no group: the runtime gives the host identity to the
//! node's own addresses when it applies an artifact, so the artifact cannot name them.
//! (The built-in rule lets a node reach its own pods.) Other nodes are the `nodes` group.
//!
//! Code map: `groups` says which group a pod is in; `outside` finds the outside
//! groups and an address for each; this file judges every group pair.

mod groups;
mod outside;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::IpAddr;

use policy_lang::ast::Cidr;

pub use groups::{Group, Grouping};

use crate::artifact::{Artifact, EndpointRecord};
use crate::simulate;
use crate::tables::PortBlock;

/// A protocol as connectivity reports it. The order is the report's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
    Sctp,
    Icmp,
    Icmpv6,
    /// Another protocol some policy key names.
    Number(u8),
    /// Every protocol no policy key names.
    Other,
}

impl Proto {
    fn from_number(number: u8) -> Proto {
        match number {
            6 => Proto::Tcp,
            17 => Proto::Udp,
            132 => Proto::Sctp,
            1 => Proto::Icmp,
            58 => Proto::Icmpv6,
            n => Proto::Number(n),
        }
    }

    /// The IP protocol number; `None` for [`Proto::Other`].
    pub fn number(self) -> Option<u8> {
        match self {
            Proto::Tcp => Some(6),
            Proto::Udp => Some(17),
            Proto::Sctp => Some(132),
            Proto::Icmp => Some(1),
            Proto::Icmpv6 => Some(58),
            Proto::Number(n) => Some(n),
            Proto::Other => None,
        }
    }

    /// The highest port (or ICMP type) a packet of this protocol is judged by; `None`
    /// for protocols the tables key without a port.
    pub fn max_port(self) -> Option<u16> {
        match self {
            Proto::Tcp | Proto::Udp | Proto::Sctp => Some(u16::MAX),
            Proto::Icmp | Proto::Icmpv6 => Some(u16::from(u8::MAX)),
            Proto::Number(_) | Proto::Other => None,
        }
    }
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Proto::Tcp => f.write_str("TCP"),
            Proto::Udp => f.write_str("UDP"),
            Proto::Sctp => f.write_str("SCTP"),
            Proto::Icmp => f.write_str("ICMP"),
            Proto::Icmpv6 => f.write_str("ICMPv6"),
            Proto::Number(n) => write!(f, "proto {n}"),
            Proto::Other => f.write_str("other"),
        }
    }
}

/// The ports (ICMP types for ICMP) of one protocol a connection is allowed on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PortRanges {
    /// Every port, or the whole protocol where it has none.
    Every,
    /// Inclusive ranges, sorted, neither overlapping nor adjacent.
    Only(Vec<(u16, u16)>),
}

impl fmt::Display for PortRanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortRanges::Every => f.write_str("any"),
            PortRanges::Only(ranges) => {
                for (i, (lo, hi)) in ranges.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    if lo == hi { write!(f, "{sep}{lo}")? } else { write!(f, "{sep}{lo}-{hi}")? }
                }
                Ok(())
            }
        }
    }
}

/// What a connection is allowed on: per protocol, the ports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Allowed {
    /// Every protocol on every port.
    pub any: bool,
    /// Protocols with at least one allowed port; absent ones are not allowed at all.
    pub protocols: BTreeMap<Proto, PortRanges>,
}

impl Allowed {
    pub fn is_empty(&self) -> bool {
        self.protocols.is_empty()
    }
}

impl fmt::Display for Allowed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.any {
            return f.write_str("any");
        }
        if self.protocols.is_empty() {
            return f.write_str("none");
        }
        for (i, (proto, ports)) in self.protocols.iter().enumerate() {
            write!(f, "{}{proto} {ports}", if i == 0 { "" } else { "; " })?;
        }
        Ok(())
    }
}

/// The connections allowed from one group to another.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Connection {
    pub from: Group,
    pub to: Group,
    /// Peer pairs between the groups (pod pairs; an outside group counts as one peer).
    pub pairs: usize,
    /// Allowed for every pair.
    pub all: Allowed,
    /// Allowed for at least one pair but not for all of them.
    pub some: Allowed,
}

/// A group and what it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupInfo {
    pub group: Group,
    /// Endpoint names (`namespace/pod`) of a pod group, addresses of the nodes group,
    /// empty for the other outside groups.
    pub members: Vec<String>,
    /// For a prefix or world: the longest listed prefixes inside it, whose addresses
    /// belong to their own groups. Pod and node addresses are never part of an outside
    /// group either.
    pub excludes: Vec<Cidr>,
}

/// Every allowed connection of an artifact.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Connectivity {
    /// Sorted by group.
    pub groups: Vec<GroupInfo>,
    /// Sorted by source group, then destination group. Pairs with nothing allowed are
    /// left out; so are pairs of two outside groups, which no endpoint enforces.
    pub connections: Vec<Connection>,
    /// Endpoints without an address (pods not yet scheduled): no packet reaches them, so
    /// they are in no group.
    pub unaddressed: Vec<String>,
}

impl Connectivity {
    /// The connection from one group to another, if anything is allowed between them.
    pub fn connection(&self, from: &Group, to: &Group) -> Option<&Connection> {
        self.connections.iter().find(|c| &c.from == from && &c.to == to)
    }
}

/// One peer: a pod, or a representative address of an outside group.
struct Member<'a> {
    endpoint: Option<&'a EndpointRecord>,
    address: IpAddr,
    identity: u32,
}

/// One class of packets the tables cannot tell apart: a protocol and a port range. The
/// probe is `number` with port `lo` (`None` for a protocol without ports).
struct Class {
    proto: Proto,
    number: u8,
    lo: u16,
    hi: u16,
    port: Option<u16>,
}

/// Computes every allowed connection of `artifact`, with pods grouped by `grouping`.
pub fn connectivity(artifact: &Artifact, grouping: &Grouping) -> Connectivity {
    let _span = tracing::debug_span!("connectivity").entered();
    let mut out = Connectivity::default();

    let mut groups: BTreeMap<Group, (Vec<Member<'_>>, GroupInfo)> = BTreeMap::new();
    for ep in &artifact.endpoints {
        let Some(&address) = ep.addresses.first() else {
            out.unaddressed.push(ep.name.clone());
            continue;
        };
        let group = grouping.group_of(&ep.name);
        let identity = simulate::identity_of(artifact, address);
        let (members, info) = groups.entry(group.clone()).or_insert_with(|| {
            (Vec::new(), GroupInfo { group, members: Vec::new(), excludes: Vec::new() })
        });
        members.push(Member { endpoint: Some(ep), address, identity });
        info.members.push(ep.name.clone());
    }
    for (info, address) in outside::outside_groups(artifact) {
        let identity = simulate::identity_of(artifact, address);
        let member = Member { endpoint: None, address, identity };
        groups.insert(info.group.clone(), (vec![member], info));
    }

    let classes = classes(artifact);
    tracing::debug!(groups = groups.len(), classes = classes.len(), "judging group pairs");
    // What a table says about a peer identity depends on nothing else, so each
    // (table, direction, peer identity) is judged once.
    let mut memo: BTreeMap<(u32, bool, u32), Vec<bool>> = BTreeMap::new();
    let mut judge = |ep: &EndpointRecord, ingress: bool, peer: &Member<'_>| -> Vec<bool> {
        let table = if ingress { ep.ingress_table } else { ep.egress_table };
        memo.entry((table, ingress, peer.identity))
            .or_insert_with(|| {
                classes
                    .iter()
                    .map(|c| {
                        simulate::decide(artifact, ep, ingress, peer.address, c.number, c.port)
                            .passes()
                    })
                    .collect()
            })
            .clone()
    };

    for (from, (sources, _)) in &groups {
        for (to, (destinations, _)) in &groups {
            if !from.is_pods() && !to.is_pods() {
                continue;
            }
            let mut pairs = 0;
            let mut counts = vec![0usize; classes.len()];
            for src in sources {
                for dst in destinations {
                    // The same pod: its traffic to itself never leaves it.
                    if std::ptr::eq(src, dst) {
                        continue;
                    }
                    pairs += 1;
                    let egress = src.endpoint.map(|ep| judge(ep, false, dst));
                    let ingress = dst.endpoint.map(|ep| judge(ep, true, src));
                    for (i, count) in counts.iter_mut().enumerate() {
                        let passes = |v: &Option<Vec<bool>>| v.as_ref().is_none_or(|v| v[i]);
                        if passes(&egress) && passes(&ingress) {
                            *count += 1;
                        }
                    }
                }
            }
            let all = allowed(&classes, |i| pairs > 0 && counts[i] == pairs);
            let some = allowed(&classes, |i| counts[i] > 0 && counts[i] < pairs);
            if !all.is_empty() || !some.is_empty() {
                out.connections.push(Connection {
                    from: from.clone(),
                    to: to.clone(),
                    pairs,
                    all,
                    some,
                });
            }
        }
    }
    out.groups = groups.into_values().map(|(_, info)| info).collect();
    out
}

/// The sets of the classes `pick` chooses, per protocol, adjacent ranges merged.
fn allowed(classes: &[Class], pick: impl Fn(usize) -> bool) -> Allowed {
    let mut out = Allowed { any: !classes.is_empty(), protocols: BTreeMap::new() };
    let mut ranges: BTreeMap<Proto, Vec<(u16, u16)>> = BTreeMap::new();
    for (i, class) in classes.iter().enumerate() {
        if !pick(i) {
            out.any = false;
            continue;
        }
        let list = ranges.entry(class.proto).or_default();
        match list.last_mut() {
            Some((_, hi)) if u32::from(*hi) + 1 == u32::from(class.lo) => *hi = class.hi,
            _ => list.push((class.lo, class.hi)),
        }
    }
    for (proto, list) in ranges {
        let every = match proto.max_port() {
            Some(max) => list == [(0, max)],
            None => true,
        };
        let ports = if every { PortRanges::Every } else { PortRanges::Only(list) };
        out.protocols.insert(proto, ports);
    }
    out
}

/// The packet classes of the artifact's tables; see the module documentation.
fn classes(artifact: &Artifact) -> Vec<Class> {
    let mut numbers: BTreeSet<u8> = BTreeSet::from([6, 17, 132, 1, 58]);
    let mut cuts: BTreeMap<u8, BTreeSet<u32>> = BTreeMap::new();
    for (key, _) in &artifact.policy {
        if key.proto == 0 {
            continue;
        }
        numbers.insert(key.proto);
        if key.port_bits != 0 {
            let block = PortBlock { base: key.port, bits: key.port_bits };
            let cut = cuts.entry(key.proto).or_default();
            cut.insert(u32::from(block.first()));
            cut.insert(u32::from(block.last()) + 1);
        }
    }

    let mut protos: Vec<(Proto, u8)> =
        numbers.iter().map(|&n| (Proto::from_number(n), n)).collect();
    // The highest number no key names stands for all of them: only wildcard keys match it.
    if let Some(other) = (0..=u8::MAX).rev().find(|n| !numbers.contains(n)) {
        protos.push((Proto::Other, other));
    }
    protos.sort();

    let mut out = Vec::new();
    for (proto, number) in protos {
        let Some(max) = proto.max_port() else {
            out.push(Class { proto, number, lo: 0, hi: 0, port: None });
            continue;
        };
        let mut starts: BTreeSet<u32> = BTreeSet::from([0]);
        starts.extend(cuts.get(&number).into_iter().flatten().filter(|&&c| c <= u32::from(max)));
        let starts: Vec<u32> = starts.into_iter().collect();
        for (i, &lo) in starts.iter().enumerate() {
            let hi = starts.get(i + 1).map_or(u32::from(max), |next| next - 1);
            let (lo, hi) = (narrow(lo), narrow(hi));
            out.push(Class { proto, number, lo, hi, port: Some(lo) });
        }
    }
    out
}

/// A port that was checked to fit.
fn narrow(port: u32) -> u16 {
    u16::try_from(port).expect("cuts above the protocol's highest port are dropped")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowed_merges_adjacent_ranges_and_names_full_protocols_any() {
        let class = |proto, lo, hi| Class { proto, number: 0, lo, hi, port: Some(lo) };
        let classes = [
            class(Proto::Tcp, 0, 79),
            class(Proto::Tcp, 80, 80),
            class(Proto::Tcp, 81, 442),
            class(Proto::Tcp, 443, 443),
            class(Proto::Tcp, 444, 65535),
            class(Proto::Udp, 0, 65535),
        ];
        let some = allowed(&classes, |i| i == 1 || i == 3 || i == 4);
        assert_eq!(some.to_string(), "TCP 80, 443-65535");
        let udp = allowed(&classes, |i| i == 5);
        assert_eq!(udp.to_string(), "UDP any");
        assert!(allowed(&classes, |_| true).any);
        assert_eq!(allowed(&classes, |_| false).to_string(), "none");
    }
}
