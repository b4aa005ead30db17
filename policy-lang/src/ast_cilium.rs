//! The typed model of `cilium.io/v2` CiliumNetworkPolicy and
//! CiliumClusterwideNetworkPolicy, L3/L4 part, after validation.
//!
//! Only what an offline compile can enforce is kept. Every construct that needs a proxy,
//! DNS, a cloud API or cluster state we do not read was reported with a coded
//! diagnostic while decoding, and the rule holding it left out (see the decoder,
//! `cilium.rs`); nothing is dropped without one.
//!
//! Selectors are stored with the `k8s:` and `any:` source prefixes of their keys
//! removed: every label policyc knows comes from Kubernetes, so both mean the same here.

use crate::ast::{Cidr, Direction, LabelSelector, ObjectMeta, Protocol, Sp};
use crate::source::Span;

/// A CiliumNetworkPolicy or CiliumClusterwideNetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CiliumPolicy {
    /// For a cluster-wide policy, `meta.namespace` is empty.
    pub meta: ObjectMeta,
    pub clusterwide: bool,
    /// `spec` (labelled `None`), then every entry of `specs` (labelled with its index).
    pub rules: Vec<CiliumRule>,
}

impl CiliumPolicy {
    /// The kind's name, as manifests and diagnostics spell it.
    pub fn kind(&self) -> &'static str {
        if self.clusterwide { "CiliumClusterwideNetworkPolicy" } else { "CiliumNetworkPolicy" }
    }
}

/// One Cilium rule: the content of `spec` or of one `specs` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CiliumRule {
    /// `None` for `spec`, `Some(i)` for `specs[i]`.
    pub index: Option<usize>,
    /// `endpointSelector`, or `nodeSelector` when `nodes` is set; prefixes removed.
    pub subject: LabelSelector,
    /// Whether the subject is a `nodeSelector`: the rule is a host policy, which applies
    /// to the nodes whose labels match (only in a cluster-wide policy).
    pub nodes: bool,
    /// Whether selecting an endpoint turns on default deny, per direction, after
    /// Cilium's defaulting: `enableDefaultDeny` when given, else whether the direction
    /// has allow or deny rules at all (counted before invalid rules were left out).
    pub default_deny_ingress: bool,
    pub default_deny_egress: bool,
    pub ingress: Vec<CiliumPeerRule>,
    pub ingress_deny: Vec<CiliumPeerRule>,
    pub egress: Vec<CiliumPeerRule>,
    pub egress_deny: Vec<CiliumPeerRule>,
    pub span: Span,
}

impl CiliumRule {
    pub fn default_deny(&self, direction: Direction) -> bool {
        match direction {
            Direction::Ingress => self.default_deny_ingress,
            Direction::Egress => self.default_deny_egress,
        }
    }
}

/// Entity names of `fromEntities`/`toEntities`, and the reserved labels a selector can
/// name with the `reserved:` prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entity {
    All,
    World,
    WorldIpv4,
    WorldIpv6,
    Cluster,
    Host,
    Init,
    Ingress,
    Unmanaged,
    RemoteNode,
    Health,
    None,
    KubeApiserver,
}

impl Entity {
    /// Every entity, in the order Cilium's API reference lists them.
    pub const ALL: [Entity; 13] = [
        Entity::All,
        Entity::World,
        Entity::WorldIpv4,
        Entity::WorldIpv6,
        Entity::Cluster,
        Entity::Host,
        Entity::Init,
        Entity::Ingress,
        Entity::Unmanaged,
        Entity::RemoteNode,
        Entity::Health,
        Entity::None,
        Entity::KubeApiserver,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Entity::All => "all",
            Entity::World => "world",
            Entity::WorldIpv4 => "world-ipv4",
            Entity::WorldIpv6 => "world-ipv6",
            Entity::Cluster => "cluster",
            Entity::Host => "host",
            Entity::Init => "init",
            Entity::Ingress => "ingress",
            Entity::Unmanaged => "unmanaged",
            Entity::RemoteNode => "remote-node",
            Entity::Health => "health",
            Entity::None => "none",
            Entity::KubeApiserver => "kube-apiserver",
        }
    }

    pub fn parse(name: &str) -> Option<Entity> {
        Entity::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// One L3 peer of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CiliumPeer {
    /// `fromEndpoints`/`toEndpoints` entry, prefixes removed. The namespace rules
    /// (restriction to the policy's namespace, or to managed pods in a cluster-wide
    /// policy) are applied when lowering, not here.
    Endpoints(LabelSelector),
    /// `fromEntities`/`toEntities` entry, or a selector that names only a
    /// `reserved:` label.
    Entity(Sp<Entity>),
    /// `fromCIDR`/`toCIDR` entry (no except) or `fromCIDRSet`/`toCIDRSet` entry.
    Cidr { cidr: Cidr, except: Vec<Cidr>, span: Span },
}

/// Which ports of a protocol a port entry matches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CiliumPortSpec {
    /// `port: 0`: every port.
    All,
    /// Inclusive range; a single port is `Range(p, p)`.
    Range(u16, u16),
    /// A container port name, lowercased as Cilium compares them.
    Named(String),
}

/// One entry of a `toPorts` entry's `ports`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CiliumPort {
    /// `None` for `ANY` (or no protocol): TCP, UDP and SCTP.
    pub protocol: Option<Protocol>,
    pub port: CiliumPortSpec,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IcmpFamily {
    V4,
    V6,
}

impl IcmpFamily {
    /// The IP protocol number of ICMP for the family.
    pub fn protocol(self) -> u8 {
        match self {
            IcmpFamily::V4 => 1,
            IcmpFamily::V6 => 58,
        }
    }
}

/// One `fields` entry of an `icmps` entry: only the type is matched, never the code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IcmpMatch {
    pub family: IcmpFamily,
    pub icmp_type: u8,
    pub span: Span,
}

/// The L4 part of a rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CiliumL4 {
    pub ports: Vec<CiliumPort>,
    pub icmps: Vec<IcmpMatch>,
}

/// One entry of `ingress`, `ingressDeny`, `egress` or `egressDeny`.
///
/// Cilium reads the two halves of a rule so: without an L3 peer but with an L4 part, the
/// rule applies to every peer; without an L4 part, to every protocol and port. A rule
/// with neither (`ingress: [{}]`) matches nothing, and only turns on default deny.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CiliumPeerRule {
    /// `None`: no L3 peer field was given. `Some(empty)`: peers were given but select
    /// nothing (`fromEndpoints: []`, `fromEntities: [none]`).
    pub peers: Option<Vec<CiliumPeer>>,
    /// `None`: neither `toPorts` nor `icmps` was given. `Some` with no ports: they were
    /// given but list nothing, so the rule matches nothing.
    pub l4: Option<CiliumL4>,
    /// Index in its list, for traces (`ingress[2]`).
    pub index: usize,
    pub span: Span,
}
