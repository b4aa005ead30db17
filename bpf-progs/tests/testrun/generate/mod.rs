//! Generated clusters: namespaces, dual-stack pods with named ports, NetworkPolicies and
//! CiliumNetworkPolicies (denies, entities, CIDR sets and ICMP types), rendered to YAML so
//! that the whole front end is under test. It follows the generator of
//! compiler/tests/agreement.rs (a few label keys and values, addresses and ports, so that
//! selectors, blocks and named ports overlap often) and adds what only the kernel can be
//! asked about: IPv6 addresses and blocks, and ICMP.

use std::net::IpAddr;

use proptest::prelude::*;

use super::packet::{GRE, L4, Packet, SCTP, SYN, TCP, UDP};

mod render;

const NAMESPACES: [&str; 4] = ["ns-a", "ns-b", "ns-c", "ns-d"];
const PORT_NAMES: [&str; 3] = ["http", "dns", "metrics"];
const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];
const POD_KEYS: &[&str] = &["app", "tier"];
const NAMESPACE_KEYS: &[&str] = &["team", "kubernetes.io/metadata.name"];
/// Blocks: some hold pod addresses (10.0.<namespace>.<10 + pod>, fd00::<namespace>:<10 +
/// pod>), some only outside ones.
const BLOCKS: [(&str, &[&str]); 13] = [
    ("10.0.0.0/8", &[]),
    ("10.0.0.0/8", &["10.0.1.0/24"]),
    ("10.0.1.0/24", &[]),
    ("10.0.0.10/32", &[]),
    ("192.0.2.0/24", &["192.0.2.128/25"]),
    ("0.0.0.0/0", &["10.0.0.0/8"]),
    ("192.0.2.0/25", &[]),
    ("fd00::/16", &[]),
    ("fd00::/16", &["fd00::1:0/112"]),
    ("fd00::1:0/112", &[]),
    ("fd00::10/128", &[]),
    ("2001:db8::/32", &["2001:db8::8000/113"]),
    ("::/0", &["fd00::/16"]),
];
/// Addresses of no pod, inside and outside the blocks above.
const EXTERNAL: [&str; 10] = [
    "192.0.2.1",
    "192.0.2.200",
    "203.0.113.9",
    "10.9.9.9",
    "10.0.1.99",
    "2001:db8::1",
    "2001:db8::8001",
    "2001:db8:1::9",
    "fd00::9:9",
    "fd00::1:99",
];
/// Probed ports: the numbers policies and named ports use, and the edges of the ranges
/// the generator writes (which compile to aligned port blocks of many sizes, up to the
/// half of all ports that ranges ending at 65535 take).
const PORTS: [u16; 11] = [80, 81, 53, 8080, 1000, 1023, 1024, 2024, 32767, 40080, 65535];
/// ICMP types the Cilium policies name, per family (echo request, timestamp, node
/// information query; the last of each family appears in no policy).
const ICMP_TYPES: [(&str, u8); 6] =
    [("IPv4", 8), ("IPv4", 13), ("IPv6", 128), ("IPv6", 139), ("IPv4", 0), ("IPv6", 129)];
/// Cilium entities whose addresses the generated clusters have.
const ENTITIES: [&str; 5] = ["world", "cluster", "all", "world-ipv4", "world-ipv6"];

#[derive(Clone, Debug)]
pub struct Cluster {
    namespaces: Vec<Vec<(&'static str, &'static str)>>,
    pods: Vec<Pod>,
    policies: Vec<Policy>,
    cilium: Vec<CiliumPolicy>,
}

#[derive(Clone, Debug)]
struct Pod {
    namespace: usize,
    labels: Vec<(&'static str, &'static str)>,
    /// (name, containerPort, protocol)
    ports: Vec<(&'static str, u16, &'static str)>,
    /// Whether the pod has an IPv6 address besides its IPv4 one.
    dual_stack: bool,
}

#[derive(Clone, Debug)]
struct Selector {
    labels: Vec<(&'static str, &'static str)>,
    /// (key, operator, values)
    expressions: Vec<(&'static str, &'static str, Vec<&'static str>)>,
}

#[derive(Clone, Debug)]
enum Peer {
    Pods { namespaces: Option<Selector>, pods: Option<Selector> },
    Block(usize),
}

#[derive(Clone, Debug)]
enum PortValue {
    Number(u16, Option<u16>),
    Name(&'static str),
}

#[derive(Clone, Debug)]
struct Port {
    protocol: Option<&'static str>,
    port: Option<PortValue>,
}

#[derive(Clone, Debug)]
struct Rule {
    peers: Vec<Peer>,
    ports: Vec<Port>,
}

#[derive(Clone, Debug)]
struct Policy {
    namespace: usize,
    selector: Selector,
    types: Option<Vec<&'static str>>,
    ingress: Option<Vec<Rule>>,
    egress: Option<Vec<Rule>>,
}

/// One peer kind per Cilium rule, as Cilium requires.
#[derive(Clone, Debug)]
enum CiliumPeer {
    Any,
    Endpoints(Selector),
    CidrSet(usize),
    Entity(&'static str),
}

#[derive(Clone, Debug)]
enum CiliumL4 {
    Any,
    /// A port is always given in Cilium (`0` for every port).
    Ports(Vec<(Option<&'static str>, PortValue)>),
    Icmps(Vec<(&'static str, u8)>),
}

#[derive(Clone, Debug)]
struct CiliumPolicy {
    namespace: usize,
    selector: Selector,
    /// ingress, ingressDeny, egress, egressDeny.
    lists: [Vec<(CiliumPeer, CiliumL4)>; 4],
}

fn label(keys: &'static [&'static str]) -> impl Strategy<Value = (&'static str, &'static str)> {
    (prop::sample::select(keys), prop::sample::select(&["a", "b"][..]))
}

fn labels(
    keys: &'static [&'static str],
) -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    prop::collection::vec(label(keys), 0..=2).prop_map(|mut v| {
        v.sort();
        v.dedup_by_key(|(k, _)| *k);
        v
    })
}

/// At most one label and one expression, so that selectors often match something.
fn selector(keys: &'static [&'static str]) -> impl Strategy<Value = Selector> {
    let values = prop::sample::subsequence(&["a", "b", "ns-a", "ns-b"][..], 1..=2);
    let expression = (
        prop::sample::select(keys),
        prop::sample::select(&["In", "NotIn", "Exists", "DoesNotExist"][..]),
        values,
    )
        .prop_map(|(k, op, values)| {
            let values = if matches!(op, "In" | "NotIn") { values } else { Vec::new() };
            (k, op, values)
        });
    (prop::option::of(label(keys)), prop::option::of(expression)).prop_map(
        |(labels, expressions)| Selector {
            labels: labels.into_iter().collect(),
            expressions: expressions.into_iter().collect(),
        },
    )
}

fn peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        (prop::option::of(selector(NAMESPACE_KEYS)), prop::option::of(selector(POD_KEYS)))
            .prop_map(|(namespaces, pods)| match (namespaces, pods) {
                (None, None) => Peer::Pods {
                    namespaces: None,
                    pods: Some(Selector { labels: vec![], expressions: vec![] })
                },
                (namespaces, pods) => Peer::Pods { namespaces, pods },
            }),
        (0..BLOCKS.len()).prop_map(Peer::Block),
    ]
}

fn port_value() -> impl Strategy<Value = PortValue> {
    prop_oneof![
        (
            prop::sample::select(&[79u16, 80, 81, 53, 1000, 1023][..]),
            prop::option::of(prop::sample::select(&[0u16, 1, 2, 24, 1000, 1001, 40000, 65535][..]))
        )
            .prop_map(|(p, width)| PortValue::Number(p, width.map(|w| p.saturating_add(w)))),
        prop::sample::select(&PORT_NAMES[..]).prop_map(PortValue::Name),
    ]
}

fn port() -> impl Strategy<Value = Port> {
    (prop::option::of(prop::sample::select(&PROTOCOLS[..])), prop::option::of(port_value()))
        .prop_map(|(protocol, port)| Port { protocol, port })
}

fn rule() -> impl Strategy<Value = Rule> {
    (prop::collection::vec(peer(), 0..=2), prop::collection::vec(port(), 0..=2))
        .prop_map(|(peers, ports)| Rule { peers, ports })
}

fn policy() -> impl Strategy<Value = Policy> {
    let types = prop::option::of(prop::sample::subsequence(&["Ingress", "Egress"][..], 1..=2));
    let rules = || prop::option::of(prop::collection::vec(rule(), 0..=2));
    (0..NAMESPACES.len(), selector(POD_KEYS), types, rules(), rules()).prop_map(
        |(namespace, selector, types, ingress, egress)| Policy {
            namespace,
            selector,
            types,
            ingress,
            egress,
        },
    )
}

fn cilium_rule() -> impl Strategy<Value = (CiliumPeer, CiliumL4)> {
    let peer = prop_oneof![
        Just(CiliumPeer::Any),
        selector(POD_KEYS).prop_map(CiliumPeer::Endpoints),
        (0..BLOCKS.len()).prop_map(CiliumPeer::CidrSet),
        prop::sample::select(&ENTITIES[..]).prop_map(CiliumPeer::Entity),
    ];
    let protocol =
        prop::sample::select(&[None, Some("TCP"), Some("UDP"), Some("SCTP"), Some("ANY")][..]);
    let l4 = prop_oneof![
        Just(CiliumL4::Any),
        prop::collection::vec((protocol, port_value()), 1..=2).prop_map(CiliumL4::Ports),
        prop::collection::vec(prop::sample::select(&ICMP_TYPES[..4]), 1..=2)
            .prop_map(CiliumL4::Icmps),
    ];
    (peer, l4)
}

fn cilium_policy() -> impl Strategy<Value = CiliumPolicy> {
    let list = || prop::collection::vec(cilium_rule(), 0..=2);
    (0..NAMESPACES.len(), selector(POD_KEYS), list(), list(), list(), list()).prop_map(
        |(namespace, selector, a, b, c, d)| CiliumPolicy {
            namespace,
            selector,
            lists: [a, b, c, d],
        },
    )
}

fn pod() -> impl Strategy<Value = Pod> {
    let named = (
        prop::sample::select(&PORT_NAMES[..]),
        prop::sample::select(&[80u16, 81, 8080, 53][..]),
        prop::sample::select(&PROTOCOLS[..]),
    );
    let dual_stack = prop::bool::weighted(0.8);
    (0..NAMESPACES.len(), labels(POD_KEYS), prop::collection::vec(named, 0..=3), dual_stack)
        .prop_map(|(namespace, labels, mut ports, dual_stack)| {
            // Container port names are unique within a pod.
            ports.sort();
            ports.dedup_by_key(|(name, _, _)| *name);
            Pod { namespace, labels, ports, dual_stack }
        })
}

pub fn cluster() -> impl Strategy<Value = Cluster> {
    (
        prop::collection::vec(labels(&["team"]), 2..=4),
        prop::collection::vec(pod(), 2..=6),
        prop::collection::vec(policy(), 0..=3),
        prop::collection::vec(cilium_policy(), 0..=2),
    )
        .prop_map(|(namespaces, mut pods, mut policies, mut cilium)| {
            let n = namespaces.len();
            pods.iter_mut().for_each(|p| p.namespace %= n);
            policies.iter_mut().for_each(|p| p.namespace %= n);
            cilium.iter_mut().for_each(|p| p.namespace %= n);
            Cluster { namespaces, pods, policies, cilium }
        })
}

impl Cluster {
    /// Pod `i`'s addresses: IPv4, then IPv6 if it is dual-stack.
    pub fn addresses(&self, i: usize) -> Vec<IpAddr> {
        let pod = &self.pods[i];
        let v4 = format!("10.0.{}.{}", pod.namespace, 10 + i).parse().expect("an address");
        let v6 = format!("fd00::{}:{}", pod.namespace, 10 + i).parse().expect("an address");
        if pod.dual_stack { vec![v4, v6] } else { vec![v4] }
    }
}

/// The ICMP types flows probe, per family: every type the policies can name, and one
/// they never name.
pub fn icmp_types(ipv4: bool) -> Vec<u8> {
    let family = if ipv4 { "IPv4" } else { "IPv6" };
    ICMP_TYPES.iter().filter(|(f, _)| *f == family).map(|(_, t)| *t).collect()
}

/// The packets that open the flows checked on a cluster: between every two pods and
/// between each pod and two outside addresses, both ways, in each family both ends have;
/// per pair of addresses, three ports of each of TCP, UDP and SCTP (rotating, so that
/// every port is probed), each ICMP type of [`icmp_types`], and GRE, which has no ports.
/// `next_port` numbers source ports and echo ids so that no two flows share a tuple.
pub fn flows(cluster: &Cluster, next_port: &mut u16) -> Vec<Packet> {
    let external: Vec<IpAddr> = EXTERNAL.iter().map(|a| a.parse().expect("an address")).collect();
    let mut pairs = Vec::new();
    for i in 0..cluster.pods.len() {
        for j in (0..cluster.pods.len()).filter(|j| *j != i) {
            for src in cluster.addresses(i) {
                let same_family =
                    cluster.addresses(j).into_iter().filter(|d| d.is_ipv4() == src.is_ipv4());
                pairs.extend(same_family.map(|dst| (src, dst)));
            }
        }
        for (n, pod) in cluster.addresses(i).into_iter().enumerate() {
            let outside: Vec<IpAddr> =
                external.iter().copied().filter(|e| e.is_ipv4() == pod.is_ipv4()).collect();
            for k in 0..2 {
                let ext = outside[(i * 2 + n + k * 3) % outside.len()];
                pairs.extend([(pod, ext), (ext, pod)]);
            }
        }
    }

    let mut port = || {
        *next_port = next_port.checked_add(1).unwrap_or(1024);
        *next_port
    };
    let mut out = Vec::new();
    for (k, (src, dst)) in pairs.into_iter().enumerate() {
        for (p, proto) in [TCP, UDP, SCTP].into_iter().enumerate() {
            for (_, &dport) in PORTS.iter().enumerate().filter(|(i, _)| (i + k + p) % 3 == 0) {
                let sport = port();
                let l4 = match proto {
                    TCP => L4::Tcp { sport, dport, flags: SYN },
                    UDP => L4::Udp { sport, dport },
                    _ => L4::Sctp { sport, dport },
                };
                out.push(Packet { src, dst, l4 });
            }
        }
        for kind in icmp_types(src.is_ipv4()) {
            out.push(Packet { src, dst, l4: L4::Icmp { kind, id: port() } });
        }
        out.push(Packet { src, dst, l4: L4::Other(GRE) });
    }
    out
}
