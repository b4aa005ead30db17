//! The reference evaluator: what the policies mean for one flow, decided straight from
//! the lowered IR and the inventory, never from the compiled tables.
//!
//! The solver turns selectors into identity sets, folds precedence into table keys and
//! resolves named ports per identity; the simulator then replays the datapath's lookups
//! on the result. This module does none of that. It takes the endpoints as the inventory
//! describes them (labels, addresses, container ports) and applies the rules of
//! datapath-facts.md directly, so a test that compares it with [`crate::simulate`] checks
//! the whole solver, and a test that compares it with a hand-written expectation checks
//! the lowering.
//!
//! Semantics, per direction at one endpoint, with only the rules of policies that select
//! the endpoint taking part, tier by tier ([`Tier`]):
//! - Admin: policies in priority order (lower first; ties in the given order), rules in
//!   their order; the first rule that matches decides. Allow and Deny are final; Pass
//!   ends the tier and hands the flow to the Default tier. This is AdminNetworkPolicy.
//! - Default (NetworkPolicy and Cilium policies): the endpoint is isolated iff some
//!   Default-tier policy selecting it lists the direction in `isolates`. A matching deny
//!   decides; otherwise, where isolated, a matching allow (allows add up), otherwise
//!   default deny. A direction that is not isolated and that no deny names is not
//!   decided here.
//! - Baseline: as Admin, for the flows no earlier tier decided
//!   (BaselineAdminNetworkPolicy); a Pass here decides nothing either.
//! - Nothing decided: the flow passes ([`Verdict::NotIsolated`]), or, with enforcement
//!   `always`, an allow of the Default tier lets it through and otherwise it is denied.
//! - Host policies (a Cilium `nodeSelector`) select the host endpoints of nodes, by the
//!   node's labels; pod policies select pods. The same semantics apply to both.
//! - Ingress from the endpoint's own node is allowed where a default deny would apply,
//!   the same built-in rule the compiled tables carry; a deny that names the host still
//!   wins.
//!
//! A reply of a connection is judged by conntrack, not by policy: see
//! [`Reference::reply`].
//!
//! Whether an ipBlock matches pod addresses is a switch, [`Options::ipblock_matches_pods`]:
//! off by default, as in Cilium and in the compiled tables; on, as upstream Kubernetes
//! specifies.

use std::net::IpAddr;

use policy_lang::Bundle;
use policy_lang::ast::{ContainerPort, Direction, Labels};

use crate::identity;
use crate::ir::{Action, Enforcement, Entity, Peer, Policy, PortMatch, PortSpec, Rule, Tier};
use crate::solve::{Analysis, HOST_ENDPOINT_PREFIX, namespace_labels};

/// Protocols a port without a protocol stands for: TCP, UDP and SCTP.
const PORT_PROTOCOLS: [u8; 3] = [6, 17, 132];

/// The policy name the built-in host allow reports, as the artifact's rule record does.
pub const BUILT_IN: &str = "built-in";
/// The rule name of the built-in allow of ingress from the endpoint's own node.
pub const HOST_RULE: &str = "allow traffic from the endpoint's own node";

/// Choices where the reference can follow more than one published semantics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Whether an ipBlock (a [`Peer::Cidr`]) matches the address of a pod. `false`, the
    /// default, follows Cilium: a CIDR selector never matches a pod or node address, and
    /// the compiled tables behave so (a pod address resolves to the pod's identity,
    /// which no CIDR peer lists). `true` follows upstream Kubernetes, whose conformance
    /// tests expect `ipBlock: {cidr: <pod IP>/32}` to reach that pod.
    pub ipblock_matches_pods: bool,
    /// When directions are enforced; the compiled tables follow
    /// [`crate::Options::enforcement`].
    pub enforcement: crate::ir::Enforcement,
}

/// One endpoint (a pod, or a node's host endpoint) as the reference sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// `namespace/pod`, or `node/<node>` for a host endpoint.
    pub name: String,
    /// Endpoint labels: the pod's labels plus its namespace and the namespace's labels
    /// (see [`identity::endpoint_labels`]); a host endpoint's are its node's labels.
    pub labels: Labels,
    pub addresses: Vec<IpAddr>,
    /// Named container ports resolve against these (a host endpoint has none).
    pub ports: Vec<ContainerPort>,
    /// A node's host endpoint: host policies (`Policy::nodes`) select it, pod policies
    /// and endpoint peers never do.
    pub host: bool,
}

/// One end of a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Address {
    Ip(IpAddr),
    /// The node an endpoint runs on, seen from that endpoint. The artifact serves every
    /// node alike, so it gives node addresses the remote-node identity; the node runtime
    /// gives the addresses of its own node the host identity in that node's maps. So a
    /// node address here is a remote node, and its own node is named `Host`: only entity
    /// peers (`host`, `cluster`, `all`) and the built-in host allow see it.
    Host,
    /// A pod without an address, such as one `policyc trace` is asked about by labels
    /// alone: the `n`th added with [`Reference::add_unaddressed`]. Its labels and
    /// container ports count; no ipBlock or CIDR peer can be said to hold it.
    Unaddressed(usize),
}

/// A new connection: source, destination, IP protocol and destination port (or ICMP
/// type; `None` for protocols without either).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Flow {
    pub src: Address,
    pub dst: Address,
    pub proto: u8,
    pub port: Option<u16>,
}

/// The decision in one direction at one endpoint, with its provenance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The deciding allow rule: in the Admin and Baseline tiers the first that matches,
    /// in the Default tier the first matching allow in policy order.
    Allowed { policy: String, rule: String },
    /// The deciding deny rule; in the Default tier denies beat allows.
    Denied { policy: String, rule: String },
    /// No tier decided: no selecting policy isolates the direction and no rule that
    /// matches decides.
    NotIsolated,
    /// Isolated, and nothing allows the flow. Names the isolating policies.
    DefaultDeny { isolating: Vec<String> },
}

impl Verdict {
    pub fn passes(&self) -> bool {
        matches!(self, Verdict::Allowed { .. } | Verdict::NotIsolated)
    }
}

/// Both checks of a flow. A side that is not an endpoint is not enforced: `None`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowVerdict {
    /// At the source, when the source is an endpoint.
    pub egress: Option<Verdict>,
    /// At the destination, when the destination is an endpoint.
    pub ingress: Option<Verdict>,
}

impl FlowVerdict {
    pub fn passes(&self) -> bool {
        self.egress.as_ref().is_none_or(Verdict::passes)
            && self.ingress.as_ref().is_none_or(Verdict::passes)
    }
}

/// How the replies of a connection fare, per endpoint. They are judged by connection
/// tracking, not by policy: the forward packet that passes an endpoint's check opens an
/// entry scoped to that endpoint, and a packet whose reversed tuple is tracked there
/// passes as a reply without a policy lookup (ARCHITECTURE.md, "Connection tracking").
/// So a reply passes at each endpoint that let the forward packet through, whatever the
/// policy says about a new connection in the reverse direction, and each field holds
/// the forward packet's verdict at that endpoint: the rule that allowed the original
/// flow, or why it was not checked, or why it was dropped (then no entry exists there
/// and a reply would be judged as a new connection).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyVerdict {
    /// At the connection's destination, where replies leave: the forward packet's
    /// ingress verdict there. `None` when the destination is not an endpoint.
    pub egress: Option<Verdict>,
    /// At the connection's source, where replies arrive: the forward packet's egress
    /// verdict there. `None` when the source is not an endpoint.
    pub ingress: Option<Verdict>,
}

impl ReplyVerdict {
    /// Whether replies pass both ends, which is whether the connection is established.
    pub fn passes(&self) -> bool {
        self.egress.as_ref().is_none_or(Verdict::passes)
            && self.ingress.as_ref().is_none_or(Verdict::passes)
    }
}

/// A rule that matched a flow, named as traces and the artifact name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleMatch {
    pub policy: String,
    pub rule: String,
    pub action: Action,
    /// The tier of the rule's policy.
    pub tier: Tier,
}

/// The reference evaluator over one set of policies and endpoints.
#[derive(Debug)]
pub struct Reference<'a> {
    policies: &'a [Policy],
    /// Indexes into `policies` in evaluation order: by tier, then priority, ties in the
    /// given order.
    order: Vec<usize>,
    endpoints: Vec<Endpoint>,
    /// Pods without addresses, by [`Address::Unaddressed`] index.
    unaddressed: Vec<Endpoint>,
    /// Addresses of the nodes of the inventory: remote nodes as peers.
    node_addresses: Vec<IpAddr>,
    options: Options,
}

/// A pod of `namespace` with exactly `labels` and no container port, named `name`, as
/// the bundle's namespaces label it; it need not exist. Its service account is
/// `default`, as for a pod that names none.
pub fn label_set_endpoint(
    bundle: &Bundle,
    name: String,
    namespace: &str,
    labels: &Labels,
) -> Endpoint {
    let namespaces = namespace_labels(bundle, &mut Vec::new());
    // A namespace the inventory does not declare is labelled with its name, as the
    // compile labels one that pods or policies live in.
    let namespace_labels = namespaces.get(namespace).cloned().unwrap_or_else(|| {
        Labels::from([("kubernetes.io/metadata.name".into(), namespace.to_owned())])
    });
    Endpoint {
        name,
        labels: identity::endpoint_labels(labels, namespace, &namespace_labels, "default"),
        addresses: Vec::new(),
        ports: Vec::new(),
        host: false,
    }
}

impl<'a> Reference<'a> {
    /// The policies of a compile, the bundle's pods as endpoints and, for each node that
    /// a host policy selects, its host endpoint, with default [`Options`].
    pub fn new(bundle: &Bundle, analysis: &'a Analysis) -> Self {
        // Missing namespaces were already reported by the compile.
        let namespaces = namespace_labels(bundle, &mut Vec::new());
        let pods = bundle
            .pods
            .iter()
            // A host-network pod shares its node's network namespace and addresses: it is
            // part of the host, not an endpoint of its own. Node addresses are not mapped
            // to the host yet, so its addresses count as outside ones, as in the tables.
            .filter(|pod| !pod.host_network)
            .map(|pod| Endpoint {
                name: format!("{}/{}", pod.meta.namespace, pod.meta.name.value),
                labels: identity::pod_endpoint_labels(pod, &namespaces),
                addresses: pod.ips.iter().map(|ip| ip.value).collect(),
                ports: pod.ports.clone(),
                host: false,
            });
        // A node is a host endpoint once a host policy selects it (Cilium's host
        // firewall leaves a node no policy selects alone).
        let hosts = bundle
            .nodes
            .iter()
            .filter(|node| {
                analysis.policies.iter().any(|p| p.nodes && p.subject.matches(&node.meta.labels))
            })
            .map(|node| Endpoint {
                name: format!("{HOST_ENDPOINT_PREFIX}{}", node.meta.name.value),
                labels: node.meta.labels.clone(),
                addresses: node.addresses.iter().map(|a| a.ip.value).collect(),
                ports: Vec::new(),
                host: true,
            });
        let node_addresses =
            bundle.nodes.iter().flat_map(|n| &n.addresses).map(|a| a.ip.value).collect();
        Reference {
            node_addresses,
            ..Reference::from_parts(&analysis.policies, pods.chain(hosts).collect())
        }
    }

    /// A reference over explicit policies and endpoints, with default [`Options`].
    pub fn from_parts(policies: &'a [Policy], mut endpoints: Vec<Endpoint>) -> Self {
        endpoints.sort_by(|a, b| a.name.cmp(&b.name));
        let mut order: Vec<usize> = (0..policies.len()).collect();
        order.sort_by_key(|&i| (policies[i].tier, policies[i].priority));
        Reference {
            policies,
            order,
            endpoints,
            unaddressed: Vec::new(),
            node_addresses: Vec::new(),
            options: Options::default(),
        }
    }

    pub fn with_options(self, options: Options) -> Self {
        Reference { options, ..self }
    }

    /// The endpoints, sorted by name.
    pub fn endpoints(&self) -> &[Endpoint] {
        &self.endpoints
    }

    /// Adds a pod that has no address (its `addresses` are ignored), for flows to name
    /// as [`Address::Unaddressed`]; returns its address.
    pub fn add_unaddressed(&mut self, endpoint: Endpoint) -> Address {
        self.unaddressed.push(endpoint);
        Address::Unaddressed(self.unaddressed.len() - 1)
    }

    /// The endpoint that owns `address`, if any.
    pub fn endpoint_at(&self, address: Address) -> Option<&Endpoint> {
        match address {
            Address::Ip(ip) => self.endpoints.iter().find(|e| e.addresses.contains(&ip)),
            Address::Host => None,
            Address::Unaddressed(i) => self.unaddressed.get(i),
        }
    }

    /// Decides both directions of a new connection.
    pub fn evaluate(&self, flow: &Flow) -> FlowVerdict {
        let egress = self
            .endpoint_at(flow.src)
            .map(|ep| self.decide(ep, Direction::Egress, flow.dst, flow.proto, flow.port));
        let ingress = self
            .endpoint_at(flow.dst)
            .map(|ep| self.decide(ep, Direction::Ingress, flow.src, flow.proto, flow.port));
        FlowVerdict { egress, ingress }
    }

    /// Decides the replies of the connection `flow` opens (see [`ReplyVerdict`]).
    pub fn reply(&self, flow: &Flow) -> ReplyVerdict {
        let forward = self.evaluate(flow);
        ReplyVerdict { egress: forward.ingress, ingress: forward.egress }
    }

    /// Decides a flow at `subject` in `direction`; `peer` is the other end (the source
    /// for ingress, the destination for egress).
    pub fn decide(
        &self,
        subject: &Endpoint,
        direction: Direction,
        peer: Address,
        proto: u8,
        port: Option<u16>,
    ) -> Verdict {
        if self.options.enforcement == Enforcement::Never {
            return Verdict::NotIsolated;
        }
        let matches = self.matching_rules(subject, direction, peer, proto, port);
        let decided = |m: &RuleMatch| {
            let (policy, rule) = (m.policy.clone(), m.rule.clone());
            match m.action {
                Action::Allow => Some(Verdict::Allowed { policy, rule }),
                Action::Deny => Some(Verdict::Denied { policy, rule }),
                Action::Pass => None,
            }
        };
        // The first match of an ordered tier decides, and a Pass ends the tier undecided.
        let first_of = |tier: Tier| matches.iter().find(|m| m.tier == tier).and_then(&decided);
        let host_allow = || {
            (direction == Direction::Ingress && peer == Address::Host)
                .then(|| Verdict::Allowed { policy: BUILT_IN.into(), rule: HOST_RULE.into() })
        };

        if let Some(verdict) = first_of(Tier::Admin) {
            return verdict;
        }

        let default_tier = || matches.iter().filter(|m| m.tier == Tier::Default);
        if let Some(deny) = default_tier().find(|m| m.action == Action::Deny) {
            return decided(deny).expect("a deny decides");
        }
        let isolating: Vec<String> = self
            .selecting(subject)
            .filter(|p| p.tier == Tier::Default && p.isolates.contains(&direction))
            .map(|p| p.name.clone())
            .collect();
        let always = self.options.enforcement == Enforcement::Always;
        let allow = default_tier().find(|m| m.action == Action::Allow);
        if let Some(allow) = allow.filter(|_| !isolating.is_empty() || always) {
            return decided(allow).expect("an allow decides");
        }
        if !isolating.is_empty() {
            return host_allow().unwrap_or(Verdict::DefaultDeny { isolating });
        }

        if let Some(verdict) = first_of(Tier::Baseline) {
            return verdict;
        }
        if always {
            return host_allow().unwrap_or(Verdict::DefaultDeny { isolating });
        }
        Verdict::NotIsolated
    }

    /// Every rule of the policies selecting `subject` that matches the flow, Pass rules
    /// included, in evaluation order: by tier, then priority, then the given policy
    /// order, then rule order.
    pub fn matching_rules(
        &self,
        subject: &Endpoint,
        direction: Direction,
        peer: Address,
        proto: u8,
        port: Option<u16>,
    ) -> Vec<RuleMatch> {
        // A host endpoint is no pod: as a peer, its addresses are a remote node's.
        let peer_endpoint = self.endpoint_at(peer).filter(|e| !e.host);
        // Named ports are the destination's: the subject's own for ingress, the peer's
        // for egress (a destination that is no pod defines no names).
        let destination = match direction {
            Direction::Ingress => Some(subject),
            Direction::Egress => peer_endpoint,
        };
        let mut out = Vec::new();
        for policy in self.selecting(subject) {
            for rule in policy.rules.iter().filter(|r| r.direction == direction) {
                if self.rule_matches(rule, peer, peer_endpoint, destination, proto, port) {
                    out.push(RuleMatch {
                        policy: policy.name.clone(),
                        rule: rule.label.clone(),
                        action: rule.action,
                        tier: policy.tier,
                    });
                }
            }
        }
        out
    }

    /// The policies selecting `subject`, in evaluation order.
    fn selecting<'s>(&'s self, subject: &'s Endpoint) -> impl Iterator<Item = &'a Policy> + 's {
        let policies = self.policies;
        self.order
            .iter()
            .map(move |&i| &policies[i])
            .filter(|p| p.nodes == subject.host && p.subject.matches(&subject.labels))
    }

    fn rule_matches(
        &self,
        rule: &Rule,
        peer: Address,
        peer_endpoint: Option<&Endpoint>,
        destination: Option<&Endpoint>,
        proto: u8,
        port: Option<u16>,
    ) -> bool {
        let peer_ok = rule
            .peers
            .as_ref()
            .is_none_or(|peers| peers.iter().any(|p| self.peer_matches(p, peer, peer_endpoint)));
        peer_ok
            && (rule.ports.is_empty()
                || rule.ports.iter().any(|m| port_matches(m, destination, proto, port)))
    }

    fn peer_matches(&self, peer: &Peer, address: Address, endpoint: Option<&Endpoint>) -> bool {
        let remote_node = matches!(address, Address::Ip(ip) if self.node_addresses.contains(&ip));
        match peer {
            Peer::Endpoints(selector) => endpoint.is_some_and(|e| selector.matches(&e.labels)),
            Peer::Cidr { cidr, except } => match address {
                Address::Host | Address::Unaddressed(_) => false,
                // Node addresses are remote nodes, which no CIDR peer matches (Cilium).
                Address::Ip(_) if remote_node => false,
                Address::Ip(_) if endpoint.is_some() && !self.options.ipblock_matches_pods => false,
                Address::Ip(ip) => cidr.contains(ip) && !except.iter().any(|e| e.contains(ip)),
            },
            Peer::Entity(entity) => match entity {
                Entity::All => true,
                Entity::Host => address == Address::Host,
                Entity::Cluster => address == Address::Host || endpoint.is_some() || remote_node,
                Entity::World => {
                    matches!(address, Address::Ip(_)) && endpoint.is_none() && !remote_node
                }
                Entity::RemoteNode => remote_node,
                // No address in the inventory belongs to these yet.
                Entity::KubeApiserver
                | Entity::Ingress
                | Entity::Init
                | Entity::Health
                | Entity::Unmanaged => false,
            },
        }
    }
}

/// Whether one port clause covers the flow. `destination` resolves named ports.
fn port_matches(
    m: &PortMatch,
    destination: Option<&Endpoint>,
    proto: u8,
    port: Option<u16>,
) -> bool {
    let proto_ok = match (m.proto, &m.port) {
        (Some(p), _) => p == proto,
        (None, PortSpec::Any) => true,
        (None, _) => PORT_PROTOCOLS.contains(&proto),
    };
    if !proto_ok {
        return false;
    }
    match &m.port {
        PortSpec::Any => true,
        PortSpec::Range(start, end) => port.is_some_and(|p| (*start..=*end).contains(&p)),
        PortSpec::IcmpType(t) => port == Some(u16::from(*t)),
        PortSpec::Named(name) => port.is_some_and(|p| {
            destination.is_some_and(|d| {
                d.ports.iter().any(|c| {
                    c.name.as_deref() == Some(name.as_str())
                        && c.protocol.number() == proto
                        && c.port == p
                })
            })
        }),
    }
}

#[cfg(test)]
mod tests;
