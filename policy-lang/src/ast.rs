//! The typed model of the manifests, after validation. Every value a diagnostic or a
//! trace might point at keeps its [`Span`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::source::Span;

/// A value and where it was written.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Sp<T> {
    pub value: T,
    pub span: Span,
}

impl<T> Sp<T> {
    pub fn new(value: T, span: Span) -> Self {
        Sp { value, span }
    }
}

/// Labels of an object, sorted by key.
pub type Labels = BTreeMap<String, String>;

/// Name, namespace and labels of an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    pub name: Sp<String>,
    /// The namespace; `default` when a namespaced object leaves it out.
    pub namespace: String,
    pub labels: Labels,
    /// The whole object, for diagnostics about it as a whole.
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Namespace {
    pub meta: ObjectMeta,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Protocol {
    Tcp,
    Udp,
    Sctp,
}

impl Protocol {
    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Sctp => 132,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "TCP",
            Protocol::Udp => "UDP",
            Protocol::Sctp => "SCTP",
        }
    }

    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "TCP" => Some(Protocol::Tcp),
            "UDP" => Some(Protocol::Udp),
            "SCTP" => Some(Protocol::Sctp),
            _ => None,
        }
    }
}

/// A named container port, which policies may refer to by name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerPort {
    pub name: Option<String>,
    pub port: u16,
    pub protocol: Protocol,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub meta: ObjectMeta,
    /// `status.podIPs` (or `status.podIP`); empty for a pod not yet scheduled.
    pub ips: Vec<Sp<IpAddr>>,
    pub ports: Vec<ContainerPort>,
}

/// `matchExpressions` operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Operator {
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Requirement {
    pub key: String,
    pub operator: Operator,
    /// Sorted and deduplicated.
    pub values: Vec<String>,
}

/// A Kubernetes label selector. The empty selector selects everything.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LabelSelector {
    pub match_labels: Labels,
    pub match_expressions: Vec<Requirement>,
    pub span: Span,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Direction {
    Ingress,
    Egress,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        }
    }
}

/// An IP prefix, host bits zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.prefix)).unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.prefix)).unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }

    pub fn contains_cidr(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.addr)
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// One peer of a NetworkPolicy rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetPeer {
    /// Pods chosen by selectors. Without a namespace selector: the policy's namespace.
    /// Without a pod selector: every pod of the selected namespaces.
    Pods {
        namespace_selector: Option<LabelSelector>,
        pod_selector: Option<LabelSelector>,
        span: Span,
    },
    IpBlock {
        cidr: Cidr,
        except: Vec<Cidr>,
        span: Span,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortRef {
    Number(u16),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetPort {
    pub protocol: Protocol,
    /// `None`: every port of the protocol.
    pub port: Option<PortRef>,
    /// Inclusive end of a numeric port range.
    pub end_port: Option<u16>,
    pub span: Span,
}

/// One entry of `ingress` or `egress`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetRule {
    /// Empty: every peer.
    pub peers: Vec<NetPeer>,
    /// Empty: every port and protocol.
    pub ports: Vec<NetPort>,
    pub span: Span,
}

/// A `networking.k8s.io/v1` NetworkPolicy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPolicy {
    pub meta: ObjectMeta,
    pub pod_selector: LabelSelector,
    /// After defaulting: Ingress, plus Egress when the policy has an egress section.
    pub policy_types: Vec<Direction>,
    pub ingress: Vec<NetRule>,
    pub egress: Vec<NetRule>,
}

impl NetworkPolicy {
    pub fn rules(&self, direction: Direction) -> &[NetRule] {
        match direction {
            Direction::Ingress => &self.ingress,
            Direction::Egress => &self.egress,
        }
    }
}
