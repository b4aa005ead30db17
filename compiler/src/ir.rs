//! The policy IR: what every policy kind means, in one shape the solver understands.
//!
//! Every front-end kind is lowered to it (`lower.rs`: NetworkPolicy; `lower_cilium.rs`:
//! CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy, one IR policy per rule), so
//! the solver and the reference semantics are written once. All selectors in the IR
//! match *endpoint labels*: a pod's own labels plus `io.kubernetes.pod.namespace=<ns>`,
//! its service account and its namespace's labels under
//! `io.cilium.k8s.namespace.labels.`. A NetworkPolicy's "pods in my namespace" is then
//! just one more requirement, and a Cilium selector reads the same.
//!
//! Tiers, priorities and the Pass action are there for AdminNetworkPolicy and
//! BaselineAdminNetworkPolicy. The reference evaluator (`reference.rs`) already decides
//! them: ordered tiers, priority order inside the Admin and Baseline tiers, the first
//! matching rule deciding there, Pass handing a flow to the next tier, Baseline deciding
//! only what no earlier tier did. No lowering produces them yet (AdminNetworkPolicy is
//! refused by the front end), and the solver compiles every policy as the Default tier,
//! so a lowering of them must come with the solver's tier fold.

use std::collections::BTreeSet;

use policy_lang::Span;
use policy_lang::ast::{Cidr, Direction, LabelSelector};

/// When an endpoint's direction is enforced, as Cilium's `policy-enforcement` setting.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Enforcement {
    /// Once some policy that selects the endpoint isolates the direction (Kubernetes).
    #[default]
    Default,
    /// Always: an endpoint no policy selects denies everything but the host.
    Always,
    /// Never: every flow passes, denies included.
    Never,
}

/// Ordered tiers. Policies of an earlier tier decide first; `Pass` hands a flow to the
/// next tier. NetworkPolicy and Cilium policies live in `Default`; AdminNetworkPolicy
/// and BaselineAdminNetworkPolicy will use the others (see the module documentation and
/// `reference.rs` for how each tier decides).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Tier {
    Admin,
    Default,
    Baseline,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Action {
    Allow,
    Deny,
    /// Skip the rest of this tier (AdminNetworkPolicy).
    Pass,
}

/// Reserved peers that are not pods.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Entity {
    Host,
    RemoteNode,
    KubeApiserver,
    Ingress,
    Init,
    Health,
    Unmanaged,
    World,
    /// Every pod of the cluster plus the host and remote nodes.
    Cluster,
    /// Everything.
    All,
}

/// Whose traffic a rule is about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Peer {
    /// Pods whose endpoint labels match.
    Endpoints(LabelSelector),
    /// Addresses in `cidr` but not in any `except`.
    Cidr {
        cidr: Cidr,
        except: Vec<Cidr>,
    },
    Entity(Entity),
}

/// A set of destination ports of one protocol (or of every protocol).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PortSpec {
    /// Every port (and every ICMP type).
    Any,
    /// Inclusive range; a single port is `Range(p, p)`.
    Range(u16, u16),
    /// A container port name, resolved per destination pod.
    Named(String),
    /// An ICMP or ICMPv6 type.
    IcmpType(u8),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMatch {
    /// IP protocol number; `None` for every protocol with ports (TCP, UDP, SCTP) when a
    /// port is given, or for every protocol at all when `port` is `Any`.
    pub proto: Option<u8>,
    pub port: PortSpec,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    pub direction: Direction,
    pub action: Action,
    /// `None`: every peer.
    pub peers: Option<Vec<Peer>>,
    /// Empty: every protocol and port.
    pub ports: Vec<PortMatch>,
    /// How traces name the rule inside its policy, e.g. `ingress[0]`.
    pub label: String,
    pub span: Span,
}

/// One policy, lowered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// How traces name the policy, e.g. `NetworkPolicy shop/cart`.
    pub name: String,
    pub tier: Tier,
    /// Order inside the tier; lower first. 0 for kinds without priorities.
    pub priority: u32,
    /// The endpoints the policy applies to: pods by their endpoint labels or, when
    /// `nodes` is set, nodes by their own labels.
    pub subject: LabelSelector,
    /// A host policy (a Cilium `nodeSelector`): it applies to the host endpoint of each
    /// node its subject selects, never to a pod.
    pub nodes: bool,
    /// Directions in which selecting an endpoint turns on default deny.
    pub isolates: BTreeSet<Direction>,
    pub rules: Vec<Rule>,
    pub span: Span,
}

impl Policy {
    /// Every selector of the policy that reads endpoint labels: the subject's (unless it
    /// selects nodes) and every endpoint peer's.
    pub fn selectors(&self) -> impl Iterator<Item = &LabelSelector> {
        std::iter::once(&self.subject).filter(|_| !self.nodes).chain(self.rules.iter().flat_map(
            |r| {
                r.peers.iter().flatten().filter_map(|p| match p {
                    Peer::Endpoints(selector) => Some(selector),
                    _ => None,
                })
            },
        ))
    }
}
