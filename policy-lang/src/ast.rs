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
    /// The owner reference marked `controller: true`, such as the ReplicaSet that
    /// created the pod; `None` for a bare pod.
    pub owner: Option<OwnerRef>,
    /// `spec.serviceAccountName` (or the deprecated `spec.serviceAccount`).
    pub service_account: Option<Sp<String>>,
    /// `spec.nodeName`: the node the pod was scheduled to, if it was.
    pub node_name: Option<Sp<String>>,
    /// `spec.hostNetwork`. Such a pod uses its node's network namespace and addresses, so
    /// it shares the node's identity and is not an endpoint of its own; its `ips` are
    /// the node's.
    pub host_network: bool,
}

/// One entry of `metadata.ownerReferences`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OwnerRef {
    pub kind: String,
    pub name: String,
    /// Whether the owner is the object's managing controller. Kubernetes allows at most
    /// one such reference per object.
    pub controller: bool,
    /// The whole entry.
    pub span: Span,
}

/// The kind of an address in a Node's `status.addresses`. Only the IP kinds are kept;
/// `Hostname`, `InternalDNS` and `ExternalDNS` entries are names, not addresses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeAddressKind {
    InternalIp,
    ExternalIp,
}

impl NodeAddressKind {
    pub fn name(self) -> &'static str {
        match self {
            NodeAddressKind::InternalIp => "InternalIP",
            NodeAddressKind::ExternalIp => "ExternalIP",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeAddress {
    pub kind: NodeAddressKind,
    pub ip: Sp<IpAddr>,
}

/// A cluster node. Its `meta.namespace` is empty: nodes are cluster-scoped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub meta: ObjectMeta,
    /// The IP entries of `status.addresses`, in source order.
    pub addresses: Vec<NodeAddress>,
    /// `spec.podCIDRs` (or `spec.podCIDR`): the ranges the node's pods get addresses from.
    pub pod_cidrs: Vec<Sp<Cidr>>,
}

/// The controllers that create pods from a pod template.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum WorkloadKind {
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    Job,
    CronJob,
    ReplicationController,
}

impl WorkloadKind {
    pub fn name(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::ReplicaSet => "ReplicaSet",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
            WorkloadKind::Job => "Job",
            WorkloadKind::CronJob => "CronJob",
            WorkloadKind::ReplicationController => "ReplicationController",
        }
    }
    /// The kind for its `kind:` name.
    pub fn parse(name: &str) -> Option<WorkloadKind> {
        [
            WorkloadKind::Deployment,
            WorkloadKind::ReplicaSet,
            WorkloadKind::StatefulSet,
            WorkloadKind::DaemonSet,
            WorkloadKind::Job,
            WorkloadKind::CronJob,
            WorkloadKind::ReplicationController,
        ]
        .into_iter()
        .find(|k| k.name() == name)
    }
}

/// A workload: an object whose pod template says what its pods will look like, so
/// policies can be checked against pods that do not exist yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub kind: WorkloadKind,
    /// The workload's metadata. Its namespace is also its pods' namespace: controllers
    /// create pods in their own namespace, whatever the template says.
    pub meta: ObjectMeta,
    /// The controller owner reference, such as the Deployment of a ReplicaSet.
    pub owner: Option<OwnerRef>,
    /// `spec.selector`, which the template's labels satisfy. `None` for a Job (or a
    /// CronJob's job template) that leaves it to the API server to generate.
    pub selector: Option<LabelSelector>,
    /// `spec.template.metadata.labels`: the labels every pod of the workload gets.
    pub template_labels: Labels,
    /// The container ports of the template.
    pub ports: Vec<ContainerPort>,
    /// As on [`Pod`].
    pub service_account: Option<Sp<String>>,
    /// As on [`Pod`]: the workload's pods share their node's identity.
    pub host_network: bool,
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
