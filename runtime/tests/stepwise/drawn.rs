//! Cases drawn directly as map states, as the planner's unit tests draw them but in both
//! address families: nested prefixes (a /0 among them) and host entries whose identities
//! change, policy keys of every shape (single ports, port blocks of many sizes, whole
//! protocols, every protocol; allow and deny; the peer's identity and any identity), and
//! endpoints whose tables, identity or endpoint id change at the interface under test.
//! They reach corners compiled clusters rarely do, such as a deny over an allow or a
//! prefix that starts to answer for a host the old state had.

use std::net::IpAddr;

use datapath::{
    EndpointPolicy, FAMILY_IPV4, FAMILY_IPV6, HostKey, IDENTITY_ANY, IDENTITY_WORLD, IpcacheKey,
    PolicyKey, PolicyVerdict, VERDICT_ALLOW, VERDICT_DENY, port_bits_of,
};
use runtime::MapState;

use super::Rng;
use super::check::{Case, Probe};
use super::harness::{Hook, LOOPBACK};
use super::packet::{GRE, ICMP, ICMPV6, L4, Packet, SCTP, SYN, TCP, UDP};

const TABLES: [u32; 3] = [1, 2, 3];
const IDENTITIES: [u32; 6] = [IDENTITY_WORLD, 256, 257, 258, 259, 260];
/// (protocol, port bits, first port): single ports and ICMP types, blocks of 2 to 32768
/// ports, whole protocols, every protocol.
const SHAPES: [(u8, u8, u16); 16] = [
    (TCP, 16, 80),
    (TCP, 16, 443),
    (TCP, 15, 80),
    (TCP, 10, 1024),
    (TCP, 1, 32768),
    (TCP, 0, 0),
    (UDP, 16, 53),
    (UDP, 14, 52),
    (UDP, 4, 0),
    (UDP, 0, 0),
    (SCTP, 16, 80),
    (SCTP, 0, 0),
    (ICMP, 16, 8),
    (ICMPV6, 16, 128),
    (GRE, 0, 0),
    (0, 0, 0),
];
const PREFIXES: [(&str, u32); 12] = [
    ("0.0.0.0", 0),
    ("198.18.0.0", 15),
    ("198.18.0.0", 16),
    ("198.18.1.0", 24),
    ("198.18.1.0", 25),
    ("198.18.1.128", 26),
    ("198.19.0.0", 31),
    ("::", 0),
    ("fd00::", 16),
    ("fd00::1:0", 112),
    ("fd00::1:0", 120),
    ("2001:db8::", 32),
];
const HOSTS: [&str; 7] = [
    "198.18.1.1",
    "198.18.1.2",
    "198.18.1.129",
    "198.19.0.1",
    "fd00::1:1",
    "fd00::1:2",
    "2001:db8::5",
];
/// Peers: the hosts, addresses in one prefix or several, and outside all of them.
const PEERS: [&str; 16] = [
    "198.18.1.1",
    "198.18.1.2",
    "198.18.1.3",
    "198.18.1.129",
    "198.18.1.200",
    "198.18.2.5",
    "198.19.0.1",
    "198.19.7.7",
    "203.0.113.9",
    "fd00::1:1",
    "fd00::1:2",
    "fd00::1:3",
    "fd00::1:1ff",
    "fd00::9:9",
    "2001:db8::5",
    "2001:db8:1::9",
];
/// Destination ports: on, beside and inside the blocks of [`SHAPES`].
const PORTS: [u16; 10] = [80, 81, 82, 443, 53, 55, 1030, 2048, 40000, 65535];

/// The case of `seed`: two states and `probes` candidate probes.
pub fn case(seed: u64, probes: usize) -> Case {
    let mut rng = Rng::new(seed);
    let old = state(&mut rng, None);
    let new = state(&mut rng, old.endpoints.get(&LOOPBACK));
    let probes = (0..probes).map(|n| probe(&mut rng, n as u16)).collect();
    Case { name: format!("drawn case {seed}"), old, new, probes }
}

/// A state; `keep` is the old state's endpoint under test, which the new state usually
/// keeps (with its own tables), as an update of a running pod does.
fn state(rng: &mut Rng, keep: Option<&EndpointPolicy>) -> MapState {
    let mut state = MapState::default();
    for table in TABLES {
        for identity in IDENTITIES.into_iter().chain([IDENTITY_ANY]) {
            for (proto, port_bits, port) in SHAPES {
                if rng.chance(12) {
                    let verdict = if rng.chance(75) { VERDICT_ALLOW } else { VERDICT_DENY };
                    let rule = rng.below(40) as u32 + 1;
                    let key = PolicyKey { table, identity, proto, port_bits, port };
                    state.policy.insert(key, PolicyVerdict { verdict, pad: [0; 3], rule });
                }
            }
        }
    }
    for (addr, bits) in PREFIXES {
        if rng.chance(50) {
            let (family, bytes) = address(addr.parse().expect("an address"));
            let identity = rng.pick(&IDENTITIES[1..]);
            state.ipcache.insert(IpcacheKey::new(family, bytes, bits), identity);
        }
    }
    for addr in HOSTS {
        if rng.chance(50) {
            let (family, addr) = address(addr.parse().expect("an address"));
            let host = HostKey { family, pad: [0; 3], addr };
            state.hosts.insert(host, rng.pick(&IDENTITIES[1..]));
        }
    }

    let under_test = match keep {
        Some(old) if rng.chance(80) => Some((old.endpoint_id, old.identity)),
        _ if rng.chance(90) => Some((rng.pick(&[11, 12]), rng.pick(&[300, 301]))),
        _ => None,
    };
    let others = [2, 3, 4].map(|ifindex| (ifindex, rng.chance(60).then_some((ifindex + 20, 302))));
    for (ifindex, bound) in [(LOOPBACK, under_test)].into_iter().chain(others) {
        if let Some((endpoint_id, identity)) = bound {
            let (ingress_table, egress_table) = (rng.pick(&[0, 1, 2, 3]), rng.pick(&[0, 1, 2, 3]));
            let bits = |table| port_bits_of(state.policy.keys().filter(|k| k.table == table));
            let policy = EndpointPolicy {
                endpoint_id,
                identity,
                ingress_table,
                egress_table,
                ingress_port_bits: bits(ingress_table),
                egress_port_bits: bits(egress_table),
            };
            state.endpoints.insert(ifindex, policy);
        }
    }
    state
}

/// A packet between the endpoint (an address no state maps) and a peer, either way.
fn probe(rng: &mut Rng, n: u16) -> Probe {
    let peer: IpAddr = rng.pick(&PEERS).parse().expect("an address");
    let local: IpAddr = if peer.is_ipv4() { "192.0.2.7" } else { "fd99::7" }.parse().expect("ok");
    let sport = 20_000 + n;
    let l4 = match rng.below(6) {
        0 | 1 => L4::Tcp { sport, dport: rng.pick(&PORTS), flags: SYN },
        2 => L4::Udp { sport, dport: rng.pick(&PORTS) },
        3 => L4::Sctp { sport, dport: rng.pick(&PORTS) },
        4 if peer.is_ipv4() => L4::Icmp { kind: rng.pick(&[8, 0, 13]), id: sport },
        4 => L4::Icmp { kind: rng.pick(&[128, 129, 139]), id: sport },
        _ => L4::Other(GRE),
    };
    let hook = rng.pick(&[Hook::FromEndpoint, Hook::ToEndpoint]);
    let (src, dst) = match hook {
        Hook::FromEndpoint => (local, peer),
        Hook::ToEndpoint => (peer, local),
    };
    Probe { hook, packet: Packet { src, dst, l4 } }
}

fn address(ip: IpAddr) -> (u8, [u8; 16]) {
    let mut bytes = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            bytes[..4].copy_from_slice(&v4.octets());
            (FAMILY_IPV4, bytes)
        }
        IpAddr::V6(v6) => (FAMILY_IPV6, v6.octets()),
    }
}

/// A fixed case for the established-flow check: under the old state the endpoint under
/// test may open TCP 80 to 198.18.1.1 (identity 256) and TCP 443 to the world, and its
/// ingress is isolated with nothing allowed; the new state denies the first and allows
/// the second by another rule.
pub fn established_case() -> Case {
    let host = HostKey { family: FAMILY_IPV4, pad: [0; 3], addr: address(ip("198.18.1.1")).1 };
    let key = |identity, port| PolicyKey { table: 2, identity, proto: TCP, port_bits: 16, port };
    let verdict = |verdict, rule| PolicyVerdict { verdict, pad: [0; 3], rule };
    let mut old = MapState::default();
    old.hosts.insert(host, 256);
    old.policy.insert(key(256, 80), verdict(VERDICT_ALLOW, 7));
    old.policy.insert(key(IDENTITY_WORLD, 443), verdict(VERDICT_ALLOW, 8));
    // Ingress: table 1, which holds no key: everything is refused but replies.
    let bits = 1 << datapath::PORT_BITS;
    let endpoint = EndpointPolicy {
        endpoint_id: 11,
        identity: 300,
        ingress_table: 1,
        egress_table: 2,
        ingress_port_bits: 0,
        egress_port_bits: bits,
    };
    old.endpoints.insert(LOOPBACK, endpoint);
    let mut new = old.clone();
    new.policy.insert(key(256, 80), verdict(VERDICT_DENY, 9));
    new.policy.insert(key(IDENTITY_WORLD, 443), verdict(VERDICT_ALLOW, 10));

    let syn = |dst: &str, sport, dport| Probe {
        hook: Hook::FromEndpoint,
        packet: Packet {
            src: ip("192.0.2.7"),
            dst: ip(dst),
            l4: L4::Tcp { sport, dport, flags: SYN },
        },
    };
    let probes = vec![syn("198.18.1.1", 30001, 80), syn("203.0.113.9", 30002, 443)];
    Case { name: "established case".into(), old, new, probes }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}
