//! The outside groups: address ranges of the address table that are neither pods nor
//! nodes, each with one address that stands for all of its addresses.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policy_lang::ast::Cidr;

use super::{Group, GroupInfo};
use crate::artifact::Artifact;
use crate::identity::{FIRST_CIDR_IDENTITY, reserved};

/// The outside groups of the address table, each with a representative address: one per
/// CIDR prefix, one for the nodes and one for the world. Groups without an address of
/// their own (a prefix made up entirely of longer prefixes and pod addresses) are left
/// out.
pub(super) fn outside_groups(artifact: &Artifact) -> Vec<(GroupInfo, IpAddr)> {
    let entries: Vec<(Cidr, u32)> = artifact
        .ipcache
        .iter()
        .map(|(key, identity)| {
            let addr = if key.family == datapath::FAMILY_IPV4 {
                IpAddr::V4(Ipv4Addr::new(key.addr[0], key.addr[1], key.addr[2], key.addr[3]))
            } else {
                IpAddr::V6(Ipv6Addr::from(key.addr))
            };
            let prefix = u8::try_from(key.prefix_bits()).unwrap_or(u8::MAX);
            (Cidr { addr, prefix }, *identity)
        })
        .collect();
    let prefixes: Vec<Cidr> = entries.iter().map(|(cidr, _)| *cidr).collect();
    let cidr_groups: Vec<Cidr> = entries
        .iter()
        .filter(|(_, identity)| *identity >= FIRST_CIDR_IDENTITY)
        .map(|(cidr, _)| *cidr)
        .collect();
    let inner = |outer: &Cidr| -> Vec<Cidr> {
        let inside = |c: &&Cidr| *c != outer && outer.contains_cidr(c);
        let candidates: Vec<&Cidr> = cidr_groups.iter().filter(inside).collect();
        candidates
            .iter()
            .filter(|c| !candidates.iter().any(|o| o != *c && o.contains_cidr(c)))
            .map(|c| **c)
            .collect()
    };

    let mut out = Vec::new();
    for cidr in &cidr_groups {
        let holes: Vec<Cidr> =
            prefixes.iter().filter(|p| *p != cidr && cidr.contains_cidr(p)).copied().collect();
        if let Some(address) = free_address(*cidr, &holes) {
            out.push((
                GroupInfo { group: Group::Cidr(*cidr), members: vec![], excludes: inner(cidr) },
                address,
            ));
        }
    }

    let nodes: Vec<&Cidr> =
        entries.iter().filter(|(_, id)| *id == reserved::REMOTE_NODE).map(|(c, _)| c).collect();
    if let Some(first) = nodes.first() {
        let members = nodes.iter().map(|c| c.addr.to_string()).collect();
        out.push((GroupInfo { group: Group::Nodes, members, excludes: vec![] }, first.addr));
    }

    // Addresses no entry covers resolve to the world identity, in either family alike,
    // so one address of either family stands for all of them.
    let roots = [
        Cidr { addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED), prefix: 0 },
        Cidr { addr: IpAddr::V6(Ipv6Addr::UNSPECIFIED), prefix: 0 },
    ];
    if let Some(address) = roots.iter().find_map(|root| free_address(*root, &prefixes)) {
        // A listed /0 takes the whole of its family out of the world.
        let excludes = roots
            .iter()
            .flat_map(|root| if cidr_groups.contains(root) { vec![*root] } else { inner(root) })
            .collect();
        let info = GroupInfo { group: Group::World, members: vec![], excludes };
        out.push((info, address));
    }
    out
}

/// An address of `net` in none of `holes` (prefixes of the same family), if there is one.
fn free_address(net: Cidr, holes: &[Cidr]) -> Option<IpAddr> {
    let inside: Vec<Cidr> = holes.iter().filter(|h| net.contains_cidr(h)).copied().collect();
    if inside.iter().any(|h| h.prefix == net.prefix) {
        return None;
    }
    if inside.is_empty() {
        return Some(net.addr);
    }
    // A hole strictly inside means the prefix has room to split.
    let (bits, width) = match net.addr {
        IpAddr::V4(v4) => (u128::from(u32::from(v4)), 32u8),
        IpAddr::V6(v6) => (u128::from(v6), 128u8),
    };
    let upper = bits | (1u128 << (width - net.prefix - 1));
    let address = |bits: u128| match net.addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::from(u32::try_from(bits).unwrap_or(u32::MAX))),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from(bits)),
    };
    let half = |bits: u128| Cidr { addr: address(bits), prefix: net.prefix + 1 };
    free_address(half(bits), &inside).or_else(|| free_address(half(upper), &inside))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidr(s: &str) -> Cidr {
        let (addr, prefix) = s.split_once('/').unwrap();
        Cidr { addr: addr.parse().unwrap(), prefix: prefix.parse().unwrap() }
    }

    #[test]
    fn free_address_skips_longer_prefixes() {
        let net = cidr("203.0.113.0/24");
        let holes = [cidr("203.0.113.0/25"), cidr("203.0.113.128/32")];
        assert_eq!(free_address(net, &holes), Some("203.0.113.129".parse().unwrap()));
        let covered = [cidr("203.0.113.0/25"), cidr("203.0.113.128/25")];
        assert_eq!(free_address(net, &covered), None);
    }

    #[test]
    fn free_address_of_the_whole_space_avoids_every_hole() {
        let root = cidr("0.0.0.0/0");
        assert_eq!(free_address(root, &[cidr("0.0.0.0/1")]), Some("128.0.0.0".parse().unwrap()));
        assert_eq!(free_address(root, &[cidr("0.0.0.0/0")]), None);
        let v6 = cidr("::/0");
        assert_eq!(free_address(v6, &[cidr("10.0.0.0/8")]), Some("::".parse().unwrap()));
    }
}
