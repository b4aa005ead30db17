//! The content of the maps the runtime owns, as plain sorted data.
//!
//! Two views: [`MapState`] is what one generation says (the artifact's tables and the
//! interface bindings, one value per key), and [`LiveMaps`] is what the kernel holds
//! (both generation slots of every entry, the live generation and each interface's
//! metrics row), read from the live maps so that any drift is seen and repaired.

use std::{collections::BTreeMap, net::IpAddr};

use compiler::artifact::Artifact;
use datapath::{
    EndpointInfo, EndpointPolicy, HostKey, IDENTITY_WORLD, IpcacheKey, IpcacheValue, PolicyKey,
    PolicyValue, PolicyVerdict, SLOTS, slot_of,
};

use crate::{
    bindings::BoundInterface,
    error::{Result, RuntimeError},
    maps::{MapBackend, MapEntry, MapName},
};

/// What one generation of the maps says.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MapState {
    /// Bound interfaces; an interface absent here is not bound (its packets drop).
    pub endpoints: BTreeMap<u32, EndpointPolicy>,
    /// Non-zero `EndpointInfo::flags` of bound interfaces ([`datapath::EP_F_HOST`] on a
    /// node's uplink). Flags belong to the interface, not to a generation.
    pub endpoint_flags: BTreeMap<u32, u32>,
    /// Full-length addresses and their identities.
    pub hosts: BTreeMap<HostKey, u32>,
    /// Shorter prefixes and their identities.
    pub ipcache: BTreeMap<IpcacheKey, u32>,
    /// Policy keys and their verdicts (never `VERDICT_NONE`).
    pub policy: BTreeMap<PolicyKey, PolicyVerdict>,
}

impl MapState {
    /// What the maps must say for `artifact` with these interfaces bound: the artifact's
    /// prefixes split between the hosts map and the trie, its policy entries, and one
    /// endpoint per interface.
    pub fn desired(artifact: &Artifact, bound: &[BoundInterface]) -> Result<MapState> {
        let mut state = MapState::default();
        for (key, identity) in &artifact.ipcache {
            match HostKey::of_prefix(key) {
                Some(host) => insert_unique(&mut state.hosts, host, *identity, MapName::Hosts)?,
                None => insert_unique(&mut state.ipcache, *key, *identity, MapName::Ipcache)?,
            }
        }
        for (key, verdict) in &artifact.policy {
            insert_unique(&mut state.policy, *key, *verdict, MapName::Policy)?;
        }
        for interface in bound {
            state.endpoints.insert(interface.ifindex, interface.policy);
            if interface.host {
                state.endpoint_flags.insert(interface.ifindex, datapath::EP_F_HOST);
                // The copy the pods' interfaces read: traffic between the node and its
                // own pods never crosses the uplink, so the host policy is applied at
                // the pod's interface from this entry (`HOST_ENDPOINT_KEY`).
                state.endpoints.insert(datapath::HOST_ENDPOINT_KEY, interface.policy);
                state.endpoint_flags.insert(datapath::HOST_ENDPOINT_KEY, datapath::EP_F_HOST);
            }
            for address in &interface.addresses {
                let host = host_key(*address);
                let identity = interface.policy.identity;
                if interface.host {
                    // This node's own address, a remote node's in the artifact: here it
                    // is the host (the host endpoint's identity).
                    state.hosts.insert(host, identity);
                } else {
                    insert_unique(&mut state.hosts, host, identity, MapName::Hosts)?;
                }
            }
        }
        Ok(state)
    }

    /// The node's own addresses (its interfaces', loopback aside) get the host identity,
    /// whatever the artifact says of them: the artifact serves every node alike, so a
    /// node's address is a remote node's there, and an interface's address may be in no
    /// inventory at all. On the node itself it is the host, as Kubernetes and Cilium have
    /// it: traffic from the node to its pods (the kubelet's probes) meets the built-in rule
    /// that lets a pod's own node in, and a pod's rules toward `host` mean this node.
    pub fn with_own_addresses(mut self, local: &[IpAddr]) -> MapState {
        for address in local {
            self.hosts.insert(host_key(*address), datapath::IDENTITY_HOST);
        }
        self
    }

    /// The identity the datapath gives `addr` (16 bytes, IPv4 in the first 4) in this
    /// generation: its host entry, else its longest prefix, else the world.
    pub fn identity_of(&self, family: u8, addr: [u8; 16]) -> u32 {
        let host = HostKey { family, pad: [0; 3], addr };
        if let Some(identity) = self.hosts.get(&host) {
            return *identity;
        }
        let full = host.prefix().prefix_bits();
        self.trie_match(family, addr, full + 1).unwrap_or(IDENTITY_WORLD)
    }

    /// The identity of the longest trie prefix shorter than `below` bits holding `addr`.
    pub(crate) fn trie_match(&self, family: u8, addr: [u8; 16], below: u32) -> Option<u32> {
        (0..below)
            .rev()
            .find_map(|bits| self.ipcache.get(&IpcacheKey::new(family, addr, bits)))
            .copied()
    }
}

/// What the kernel maps hold: both slots of every entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LiveMaps {
    /// `config.generation`: its lowest bit is the live slot.
    pub generation: u32,
    pub endpoints: BTreeMap<u32, EndpointInfo>,
    pub hosts: BTreeMap<HostKey, IpcacheValue>,
    pub ipcache: BTreeMap<IpcacheKey, IpcacheValue>,
    pub policy: BTreeMap<PolicyKey, PolicyValue>,
}

impl LiveMaps {
    /// What the live maps hold now.
    pub fn read(backend: &impl MapBackend) -> Result<LiveMaps> {
        let _span = tracing::debug_span!("read_maps").entered();
        let mut live = LiveMaps { generation: backend.config()?.generation, ..LiveMaps::default() };
        for map in MapName::APPLIED {
            for entry in backend.entries(map)? {
                live.insert(entry);
            }
        }
        tracing::debug!(
            generation = live.generation,
            endpoints = live.endpoints.len(),
            hosts = live.hosts.len(),
            ipcache = live.ipcache.len(),
            policy = live.policy.len(),
            "read live maps"
        );
        Ok(live)
    }

    /// Maps that hold `state` in both slots, at `generation`, with metrics rows numbered
    /// from 1 in ifindex order: what an apply of `state` onto empty maps leaves.
    pub fn settled(state: &MapState, generation: u32) -> LiveMaps {
        LiveMaps {
            generation,
            endpoints: state
                .endpoints
                .iter()
                .zip(1..)
                .map(|((k, v), row)| {
                    let flags = state.endpoint_flags.get(k).copied().unwrap_or(0);
                    (*k, EndpointInfo { flags, ..endpoint_info([*v; SLOTS], row) })
                })
                .collect(),
            hosts: state
                .hosts
                .iter()
                .map(|(k, v)| (*k, IpcacheValue { identity: [*v; SLOTS] }))
                .collect(),
            ipcache: state
                .ipcache
                .iter()
                .map(|(k, v)| (*k, IpcacheValue { identity: [*v; SLOTS] }))
                .collect(),
            policy: state
                .policy
                .iter()
                .map(|(k, v)| (*k, PolicyValue { slot: [*v; SLOTS] }))
                .collect(),
        }
    }

    /// What the generation in `slot` says: entries that slot leaves empty (an unbound
    /// endpoint, a policy key without a verdict) are left out; prefixes are kept with
    /// the identity the slot gives them.
    pub fn view(&self, slot: usize) -> MapState {
        MapState {
            endpoints: self
                .endpoints
                .iter()
                .filter(|(_, v)| v.slot[slot].endpoint_id != 0)
                .map(|(k, v)| (*k, v.slot[slot]))
                .collect(),
            endpoint_flags: self
                .endpoints
                .iter()
                .filter(|(_, v)| v.slot[slot].endpoint_id != 0 && v.flags != 0)
                .map(|(k, v)| (*k, v.flags))
                .collect(),
            hosts: self.hosts.iter().map(|(k, v)| (*k, v.identity[slot])).collect(),
            ipcache: self.ipcache.iter().map(|(k, v)| (*k, v.identity[slot])).collect(),
            policy: self
                .policy
                .iter()
                .filter(|(_, v)| v.slot[slot].verdict != datapath::VERDICT_NONE)
                .map(|(k, v)| (*k, v.slot[slot]))
                .collect(),
        }
    }

    /// What the live generation says.
    pub fn live_view(&self) -> MapState {
        self.view(slot_of(self.generation))
    }

    /// Number of entries of `map` (0 for the maps the datapath owns).
    pub fn len(&self, map: MapName) -> usize {
        match map {
            MapName::Endpoints => self.endpoints.len(),
            MapName::Hosts => self.hosts.len(),
            MapName::Ipcache => self.ipcache.len(),
            MapName::Policy => self.policy.len(),
            MapName::Conntrack | MapName::Frags => 0,
        }
    }

    /// Stores `entry`, replacing any value under its key. Conntrack entries are ignored.
    pub fn insert(&mut self, entry: MapEntry) {
        match entry {
            MapEntry::Endpoint(k, v) => drop(self.endpoints.insert(k, v)),
            MapEntry::Host(k, v) => drop(self.hosts.insert(k, v)),
            MapEntry::Ipcache(k, v) => drop(self.ipcache.insert(k, v)),
            MapEntry::Policy(k, v) => drop(self.policy.insert(k, v)),
            MapEntry::Conntrack(..) => {}
        }
    }

    /// Removes the entry under `key`, if any.
    pub fn remove(&mut self, key: &crate::maps::MapKey) {
        use crate::maps::MapKey;
        match key {
            MapKey::Endpoint(k) => drop(self.endpoints.remove(k)),
            MapKey::Host(k) => drop(self.hosts.remove(k)),
            MapKey::Ipcache(k) => drop(self.ipcache.remove(k)),
            MapKey::Policy(k) => drop(self.policy.remove(k)),
            MapKey::Conntrack(_) => {}
        }
    }

    /// True when the entry's key is present (with any value).
    pub fn has(&self, key: &crate::maps::MapKey) -> bool {
        use crate::maps::MapKey;
        match key {
            MapKey::Endpoint(k) => self.endpoints.contains_key(k),
            MapKey::Host(k) => self.hosts.contains_key(k),
            MapKey::Ipcache(k) => self.ipcache.contains_key(k),
            MapKey::Policy(k) => self.policy.contains_key(k),
            MapKey::Conntrack(_) => false,
        }
    }
}

/// An endpoints value.
pub(crate) fn endpoint_info(slot: [EndpointPolicy; SLOTS], metrics_row: u32) -> EndpointInfo {
    EndpointInfo { slot, metrics_row, flags: 0 }
}

/// The hosts map key of one address.
fn host_key(address: IpAddr) -> HostKey {
    let (family, addr) = match address {
        IpAddr::V4(a) => {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&a.octets());
            (datapath::FAMILY_IPV4, bytes)
        }
        IpAddr::V6(a) => (datapath::FAMILY_IPV6, a.octets()),
    };
    HostKey { family, pad: [0; 3], addr }
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

#[cfg(test)]
mod tests {
    use compiler::artifact::EndpointRecord;

    use super::*;

    #[test]
    fn a_bound_host_endpoint_gives_the_nodes_own_addresses_the_host_identity() {
        let edge: IpAddr = "10.0.9.1".parse().unwrap();
        let other: IpAddr = "10.0.9.2".parse().unwrap();
        let key = |ip: IpAddr| {
            let IpAddr::V4(v4) = ip else { unreachable!("IPv4 literals") };
            let mut addr = [0u8; 16];
            addr[..4].copy_from_slice(&v4.octets());
            HostKey { family: datapath::FAMILY_IPV4, pad: [0; 3], addr }
        };
        let full = |ip: IpAddr| key(ip).prefix();
        let remote_node = 6;
        let artifact = Artifact {
            ipcache: vec![(full(edge), remote_node), (full(other), remote_node)],
            endpoints: vec![EndpointRecord {
                name: "node/edge-1".into(),
                endpoint_id: 5,
                identity: datapath::IDENTITY_HOST,
                ingress_table: 4,
                egress_table: 0,
                addresses: vec![edge],
            }],
            ..Artifact::default()
        };
        let bindings = ["eth0=node/edge-1".parse().unwrap()];
        let bound = crate::bindings::resolve(&artifact, &bindings, |_| Ok(2)).unwrap();

        let state = MapState::desired(&artifact, &bound).unwrap();

        assert_eq!(state.hosts[&key(edge)], datapath::IDENTITY_HOST, "this node");
        assert_eq!(state.hosts[&key(other)], remote_node, "another node");
        assert_eq!(state.endpoint_flags[&2], datapath::EP_F_HOST);
        assert_eq!(state.endpoints[&2].identity, datapath::IDENTITY_HOST);
        // The copy the pods' interfaces read, for traffic between the node and its pods.
        let copy = datapath::HOST_ENDPOINT_KEY;
        assert_eq!(state.endpoints[&copy], state.endpoints[&2]);
        assert_eq!(state.endpoint_flags[&copy], datapath::EP_F_HOST);
        // Without the host binding the node's address stays a remote node's.
        let state = MapState::desired(&artifact, &[]).unwrap();
        assert_eq!(state.hosts[&key(edge)], remote_node);
        assert!(state.endpoint_flags.is_empty());
        assert!(!state.endpoints.contains_key(&copy));
        // The node's own addresses are the host on the node itself, host endpoint or not.
        let state = MapState::desired(&artifact, &[]).unwrap().with_own_addresses(&[edge]);
        assert_eq!(state.hosts[&key(edge)], datapath::IDENTITY_HOST);
        assert_eq!(state.hosts[&key(other)], remote_node);
    }
}
