//! Generated clusters for the property tests: namespaces, pods, NetworkPolicies and
//! Cilium policies (namespaced and cluster-wide, L3/L4), rendered to YAML documents so
//! that the real front end reads them.
//!
//! The vocabulary is deliberately small: a handful of label keys and values, addresses
//! and ports, so that selectors, CIDRs and named ports overlap often. Pod addresses are
//! 10.0.<namespace>.<10 + pod index>; the CIDRs hold some of them and some outside ones.

use proptest::prelude::*;

mod yaml;

pub const NAMESPACES: [&str; 4] = ["ns-a", "ns-b", "ns-c", "ns-d"];
pub const PORT_NAMES: [&str; 3] = ["http", "dns", "metrics"];
const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];
/// ipBlocks and CIDR sets: some hold pod addresses, some only outside ones.
pub const BLOCKS: [(&str, &[&str]); 8] = [
    ("10.0.0.0/8", &[]),
    ("10.0.0.0/8", &["10.0.1.0/24"]),
    ("10.0.1.0/24", &[]),
    ("10.0.0.10/32", &[]),
    ("192.0.2.0/24", &["192.0.2.128/25"]),
    ("0.0.0.0/0", &["10.0.0.0/8"]),
    ("192.0.2.0/25", &[]),
    ("2001:db8::/32", &["2001:db8:1::/48"]),
];
/// Addresses of no pod, inside and outside the blocks above.
pub const EXTERNAL: [&str; 7] = [
    "192.0.2.1",
    "192.0.2.200",
    "203.0.113.9",
    "10.9.9.9",
    "10.0.1.99",
    "2001:db8::7",
    "2001:db8:1::7",
];
/// Probed ports: the numbers policies and named ports use, and the edges of the ranges
/// the generator writes (which compile to aligned port blocks of many sizes).
pub const PORTS: [u16; 9] = [80, 81, 53, 8080, 1000, 1023, 1024, 2024, 40080];
/// Probed ICMP (protocol 1) and ICMPv6 (58) types: echo requests and replies.
pub const ICMP_TYPES: [(u8, u16); 4] = [(1, 8), (1, 0), (58, 128), (58, 129)];

const POD_KEYS: &[&str] = &["app", "tier"];
const NAMESPACE_KEYS: &[&str] = &["team", "kubernetes.io/metadata.name"];
/// Keys a Cilium peer selector reads: pod labels, the namespace, a namespace label.
const CILIUM_PEER_KEYS: &[&str] =
    &["app", "tier", "io.kubernetes.pod.namespace", "io.cilium.k8s.namespace.labels.team"];
const ENTITIES: &[&str] =
    &["world", "cluster", "host", "all", "none", "world-ipv4", "world-ipv6", "remote-node"];

#[derive(Clone, Debug)]
pub struct Cluster {
    pub namespaces: Vec<Vec<(&'static str, &'static str)>>,
    /// Node labels, one entry per node (`n<i>`, address 10.1.0.<10 + i>).
    pub nodes: Vec<Vec<(&'static str, &'static str)>>,
    pub pods: Vec<Pod>,
    pub policies: Vec<Policy>,
    pub cilium: Vec<CiliumPolicy>,
}

#[derive(Clone, Debug)]
pub struct Pod {
    pub namespace: usize,
    pub labels: Vec<(&'static str, &'static str)>,
    /// (name, containerPort, protocol)
    pub ports: Vec<(&'static str, u16, &'static str)>,
}

#[derive(Clone, Debug)]
pub struct Selector {
    pub labels: Vec<(&'static str, &'static str)>,
    /// (key, operator, values)
    pub expressions: Vec<(&'static str, &'static str, Vec<&'static str>)>,
}

impl Selector {
    pub fn all() -> Selector {
        Selector { labels: vec![], expressions: vec![] }
    }
}

#[derive(Clone, Debug)]
pub enum Peer {
    Pods { namespaces: Option<Selector>, pods: Option<Selector> },
    Block(usize),
}

#[derive(Clone, Debug)]
pub enum PortValue {
    Number(u16, Option<u16>),
    Name(&'static str),
}

#[derive(Clone, Debug)]
pub struct Port {
    pub protocol: Option<&'static str>,
    pub port: Option<PortValue>,
}

#[derive(Clone, Debug)]
pub struct Rule {
    pub peers: Vec<Peer>,
    pub ports: Vec<Port>,
}

/// A NetworkPolicy.
#[derive(Clone, Debug)]
pub struct Policy {
    pub namespace: usize,
    pub selector: Selector,
    pub types: Option<Vec<&'static str>>,
    pub ingress: Option<Vec<Rule>>,
    pub egress: Option<Vec<Rule>>,
}

/// A CiliumNetworkPolicy (`namespace: Some`) or CiliumClusterwideNetworkPolicy.
#[derive(Clone, Debug)]
pub struct CiliumPolicy {
    pub namespace: Option<usize>,
    pub subject: Selector,
    /// The subject is a `nodeSelector` (a host policy); only without a namespace.
    pub nodes: bool,
    /// `enableDefaultDeny`: (ingress, egress), each given or not.
    pub default_deny: Option<(Option<bool>, Option<bool>)>,
    /// `ingress`, `ingressDeny`, `egress`, `egressDeny`, each present or not.
    pub lists: [Option<Vec<CiliumRule>>; 4],
}

pub const CILIUM_LISTS: [&str; 4] = ["ingress", "ingressDeny", "egress", "egressDeny"];

/// One entry of a Cilium rule list: at most one kind of L3 peer, at most one L4 part.
#[derive(Clone, Debug)]
pub struct CiliumRule {
    pub peers: Option<CiliumPeers>,
    pub l4: Option<CiliumL4>,
}

#[derive(Clone, Debug)]
pub enum CiliumPeers {
    Endpoints(Vec<Selector>),
    Entities(Vec<&'static str>),
    /// Plain prefixes or addresses (`fromCIDR`): the cidr of a block, no except.
    Cidr(Vec<usize>),
    /// `fromCIDRSet`: blocks with their except.
    CidrSet(Vec<usize>),
}

#[derive(Clone, Debug)]
pub enum CiliumL4 {
    /// `toPorts: [{ports: ...}]`: (port, endPort, protocol incl. ANY).
    Ports(Vec<(CiliumPortValue, Option<u16>, Option<&'static str>)>),
    /// `icmps: [{fields: ...}]`: (family, type).
    Icmps(Vec<(Option<&'static str>, &'static str)>),
}

#[derive(Clone, Debug)]
pub enum CiliumPortValue {
    Number(u16),
    Name(&'static str),
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

/// Selectors over `keys` with values a/b or namespace names. At most one label and one
/// expression, so that selectors often match something.
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
    let label = (prop::sample::select(keys), prop::sample::select(&["a", "b", "ns-a", "ns-b"][..]));
    (prop::option::of(label), prop::option::of(expression)).prop_map(|(labels, expressions)| {
        Selector {
            labels: labels.into_iter().collect(),
            expressions: expressions.into_iter().collect(),
        }
    })
}

fn peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        (prop::option::of(selector(NAMESPACE_KEYS)), prop::option::of(selector(POD_KEYS)))
            .prop_map(|(namespaces, pods)| match (namespaces, pods) {
                (None, None) => Peer::Pods { namespaces: None, pods: Some(Selector::all()) },
                (namespaces, pods) => Peer::Pods { namespaces, pods },
            }),
        // NetworkPolicy ipBlocks here are IPv4: the pods are.
        (0..BLOCKS.len() - 1).prop_map(Peer::Block),
    ]
}

fn port_number() -> impl Strategy<Value = (u16, Option<u16>)> {
    (
        prop::sample::select(&[79u16, 80, 81, 53, 1000, 1023][..]),
        prop::option::of(prop::sample::select(&[0u16, 1, 2, 24, 1000, 1001, 40000][..])),
    )
        .prop_map(|(p, width)| (p, width.map(|w| p.saturating_add(w))))
}

fn port() -> impl Strategy<Value = Port> {
    let value = prop_oneof![
        port_number().prop_map(|(p, end)| PortValue::Number(p, end)),
        prop::sample::select(&PORT_NAMES[..]).prop_map(PortValue::Name),
    ];
    (prop::option::of(prop::sample::select(&PROTOCOLS[..])), prop::option::of(value))
        .prop_map(|(protocol, port)| Port { protocol, port })
}

fn rule() -> impl Strategy<Value = Rule> {
    (prop::collection::vec(peer(), 0..=2), prop::collection::vec(port(), 0..=2))
        .prop_map(|(peers, ports)| Rule { peers, ports })
}

pub fn policy() -> impl Strategy<Value = Policy> {
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

fn cilium_peers() -> impl Strategy<Value = CiliumPeers> {
    prop_oneof![
        prop::collection::vec(selector(CILIUM_PEER_KEYS), 0..=2).prop_map(CiliumPeers::Endpoints),
        prop::sample::subsequence(ENTITIES, 1..=2).prop_map(CiliumPeers::Entities),
        prop::collection::vec(0..BLOCKS.len(), 1..=2).prop_map(CiliumPeers::Cidr),
        prop::collection::vec(0..BLOCKS.len(), 1..=2).prop_map(CiliumPeers::CidrSet),
    ]
}

/// An L4 part. Deny rules take no named port: Cilium resolves names only for allows'
/// proxies and redirects, and the generator keeps to what every reader agrees on.
fn cilium_l4(deny: bool) -> impl Strategy<Value = CiliumL4> {
    let numbers = prop_oneof![
        port_number().prop_map(|(p, end)| (CiliumPortValue::Number(p), end)),
        Just((CiliumPortValue::Number(0), None)),
    ];
    let value = if deny {
        numbers.boxed()
    } else {
        prop_oneof![
            2 => numbers,
            1 => prop::sample::select(&PORT_NAMES[..]).prop_map(|n| (CiliumPortValue::Name(n), None)),
        ]
        .boxed()
    };
    let protocol = prop::option::of(prop::sample::select(&["TCP", "UDP", "SCTP", "ANY"][..]));
    let ports = prop::collection::vec((value, protocol), 1..=2)
        .prop_map(|v| v.into_iter().map(|((p, end), proto)| (p, end, proto)).collect());
    let icmp = prop::sample::select(
        &[
            (None, "8"),
            (None, "0"),
            (Some("IPv4"), "EchoRequest"),
            (Some("IPv6"), "EchoRequest"),
            (Some("IPv6"), "128"),
            (Some("IPv6"), "129"),
        ][..],
    );
    prop_oneof![
        3 => ports.prop_map(CiliumL4::Ports),
        1 => prop::collection::vec(icmp, 1..=2).prop_map(CiliumL4::Icmps),
    ]
}

fn cilium_rule(deny: bool) -> impl Strategy<Value = CiliumRule> {
    (prop::option::of(cilium_peers()), prop::option::of(cilium_l4(deny)))
        .prop_map(|(peers, l4)| CiliumRule { peers, l4 })
}

pub fn cilium_policy() -> impl Strategy<Value = CiliumPolicy> {
    let list = |deny| prop::option::of(prop::collection::vec(cilium_rule(deny), 0..=2));
    let default_deny =
        prop::option::of((prop::option::of(any::<bool>()), prop::option::of(any::<bool>())));
    (
        prop::option::of(0..NAMESPACES.len()),
        selector(POD_KEYS),
        any::<bool>(),
        default_deny,
        (list(false), list(true), list(false), list(true)),
    )
        .prop_map(|(namespace, subject, nodes, default_deny, (i, id, e, ed))| CiliumPolicy {
            nodes: nodes && namespace.is_none(),
            namespace,
            subject,
            default_deny,
            lists: [i, id, e, ed],
        })
}

pub fn pod() -> impl Strategy<Value = Pod> {
    let named = (
        prop::sample::select(&PORT_NAMES[..]),
        prop::sample::select(&[80u16, 81, 8080, 53][..]),
        prop::sample::select(&PROTOCOLS[..]),
    );
    (0..NAMESPACES.len(), labels(POD_KEYS), prop::collection::vec(named, 0..=3)).prop_map(
        |(namespace, labels, mut ports)| {
            // Container port names are unique within a pod.
            ports.sort();
            ports.dedup_by_key(|(name, _, _)| *name);
            Pod { namespace, labels, ports }
        },
    )
}

/// NetworkPolicies only.
pub fn cluster() -> impl Strategy<Value = Cluster> {
    (
        prop::collection::vec(labels(&["team"]), 2..=4),
        prop::collection::vec(pod(), 2..=8),
        prop::collection::vec(policy(), 1..=4),
    )
        .prop_map(|(namespaces, pods, policies)| {
            Cluster { namespaces, nodes: Vec::new(), pods, policies, cilium: Vec::new() }.fitted()
        })
}

/// Cilium policies, host policies among them, with a NetworkPolicy now and then. Nodes
/// carry labels of the keys pods have, so that a pod policy's subject could select a
/// node's labels and a host policy's a pod's, were the two mixed up.
pub fn cilium_cluster() -> impl Strategy<Value = Cluster> {
    (
        prop::collection::vec(labels(&["team"]), 2..=4),
        prop::collection::vec(labels(POD_KEYS), 0..=3),
        prop::collection::vec(pod(), 2..=8),
        prop::collection::vec(policy(), 0..=1),
        prop::collection::vec(cilium_policy(), 1..=4),
    )
        .prop_map(|(namespaces, nodes, pods, policies, cilium)| {
            Cluster { namespaces, nodes, pods, policies, cilium }.fitted()
        })
}

/// Documents as one YAML stream.
pub fn join<'a>(documents: impl IntoIterator<Item = &'a str>) -> String {
    documents.into_iter().map(|d| format!("---\n{d}")).collect()
}
