//! A simulator of the compiled tables: decides a packet exactly as the datapath's
//! policy step does, from an [`Artifact`] alone. Tests compare it with what the policies
//! mean and with the kernel; `trace` shows it beside the reference answer.
//!
//! What the datapath decides before its tables are consulted is not simulated here:
//! replies, related ICMP errors and later fragments of tracked flows (conntrack state),
//! and IPv6 neighbour discovery and MLD (ICMPv6 types 130-137 and 143, with the hop
//! limit their RFCs require), which pass whatever the policy, as ARP does for IPv4.

use std::net::IpAddr;

use datapath::{IDENTITY_WORLD, VERDICT_ALLOW};

use crate::artifact::{Artifact, EndpointRecord};
use crate::tables;

/// The datapath's decision for one direction at one endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The direction is not isolated for the endpoint: everything passes.
    NotEnforced,
    /// A policy entry allowed it; the rule cookie.
    Allowed(u32),
    /// A deny entry decided; the rule cookie.
    Denied(u32),
    /// No entry matched: default deny.
    NoMatch,
}

impl Decision {
    pub fn passes(self) -> bool {
        matches!(self, Decision::NotEnforced | Decision::Allowed(_))
    }
}

/// The identity the ipcache gives `ip`: longest prefix match, world when none.
pub fn identity_of(artifact: &Artifact, ip: IpAddr) -> u32 {
    let (family, bytes) = match ip {
        IpAddr::V4(v4) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&v4.octets());
            (datapath::FAMILY_IPV4, b)
        }
        IpAddr::V6(v6) => (datapath::FAMILY_IPV6, v6.octets()),
    };
    artifact
        .ipcache
        .iter()
        .filter(|(key, _)| {
            key.family == family
                && datapath::IpcacheKey::new(family, bytes, key.prefix_bits()).addr == key.addr
        })
        .max_by_key(|(key, _)| key.prefixlen)
        .map_or(IDENTITY_WORLD, |(_, identity)| *identity)
}

/// Decides a packet at `endpoint`: `ingress` for packets to it (peer = source), else
/// packets from it (peer = destination). `port` is the destination port (or ICMP type);
/// `None` for protocols without one.
pub fn decide(
    artifact: &Artifact,
    endpoint: &EndpointRecord,
    ingress: bool,
    peer: IpAddr,
    proto: u8,
    port: Option<u16>,
) -> Decision {
    decide_identity(artifact, endpoint, ingress, identity_of(artifact, peer), proto, port)
}

/// As [`decide`], for a peer given by its identity rather than its address (a pod the
/// tables know the identity of but no address for).
pub fn decide_identity(
    artifact: &Artifact,
    endpoint: &EndpointRecord,
    ingress: bool,
    identity: u32,
    proto: u8,
    port: Option<u16>,
) -> Decision {
    let table = if ingress { endpoint.ingress_table } else { endpoint.egress_table };
    if table == 0 {
        return Decision::NotEnforced;
    }
    for pattern in tables::candidates(identity, proto, port) {
        let key = pattern.key(table);
        if let Ok(i) = artifact.policy.binary_search_by(|(k, _)| k.cmp(&key)) {
            let value = artifact.policy[i].1;
            return if value.verdict == VERDICT_ALLOW {
                Decision::Allowed(value.rule)
            } else {
                Decision::Denied(value.rule)
            };
        }
    }
    Decision::NoMatch
}

/// Both checks of a new connection from `src` to `dst`: egress where the source is an
/// endpoint, ingress where the destination is one. Addresses that are no endpoint of
/// the artifact are not enforced here (they are outside the cluster or on other nodes).
pub fn connect(
    artifact: &Artifact,
    src: IpAddr,
    dst: IpAddr,
    proto: u8,
    port: Option<u16>,
) -> (Decision, Decision) {
    let endpoint_with = |ip: IpAddr| artifact.endpoints.iter().find(|e| e.addresses.contains(&ip));
    let egress = endpoint_with(src)
        .map_or(Decision::NotEnforced, |ep| decide(artifact, ep, false, dst, proto, port));
    let ingress = endpoint_with(dst)
        .map_or(Decision::NotEnforced, |ep| decide(artifact, ep, true, src, proto, port));
    (egress, ingress)
}
