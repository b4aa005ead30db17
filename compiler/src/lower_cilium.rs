//! Lowering of CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy to the IR.
//!
//! Each Cilium rule (`spec`, or one `specs` entry) becomes one IR policy: its own
//! subject, its own default-deny directions and its rules, allows and denies alike. The
//! solver then gives denies precedence, as Cilium does for every kind of policy.
//!
//! Namespaces follow Cilium's Kubernetes translation of selectors:
//! - a CiliumNetworkPolicy's `endpointSelector` only ever selects pods of the policy's
//!   namespace;
//! - its `fromEndpoints`/`toEndpoints` selectors are restricted to the policy's
//!   namespace unless they name `io.kubernetes.pod.namespace` themselves, so
//!   `fromEndpoints: [{}]` is "every pod of this namespace";
//! - in a cluster-wide policy the same selectors only match pods (endpoints with a
//!   namespace), so `fromEndpoints: [{}]` is "every pod of the cluster", never the
//!   host or world;
//! - a cluster-wide `nodeSelector` selects Node objects by their own labels: the policy
//!   applies to the host endpoint of each selected node (`Policy::nodes`), and its peers
//!   read as in any cluster-wide rule.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policy_lang::ast::{Cidr, Direction, LabelSelector, Operator, Requirement};
use policy_lang::ast_cilium::{
    CiliumPeer, CiliumPeerRule, CiliumPolicy, CiliumPort, CiliumPortSpec, CiliumRule,
    Entity as CiliumEntity,
};

use crate::identity::NAMESPACE_LABEL;
use crate::ir::{Action, Entity, Peer, Policy, PortMatch, PortSpec, Rule, Tier};

/// TCP, UDP and SCTP: what Cilium's `ANY` protocol expands to in `toPorts`, even with
/// port 0. ICMP is only ever matched by `icmps` or by a rule without an L4 part.
const ANY_PORT_PROTOCOLS: [u8; 3] = [6, 17, 132];

/// Every rule of a Cilium policy, lowered.
pub fn cilium_policy(policy: &CiliumPolicy) -> Vec<Policy> {
    policy.rules.iter().map(|rule| lower_rule(policy, rule)).collect()
}

fn lower_rule(policy: &CiliumPolicy, rule: &CiliumRule) -> Policy {
    let namespace = (!policy.clusterwide).then_some(policy.meta.namespace.as_str());
    let qualified = match namespace {
        Some(ns) => format!("{ns}/{}", policy.meta.name.value),
        None => policy.meta.name.value.clone(),
    };
    let name = match rule.index {
        None => format!("{} {qualified}", policy.kind()),
        Some(i) => format!("{} {qualified} specs[{i}]", policy.kind()),
    };
    let subject = match namespace {
        Some(ns) => in_namespace(&rule.subject, ns),
        None => rule.subject.clone(),
    };
    let isolates: BTreeSet<Direction> = [Direction::Ingress, Direction::Egress]
        .into_iter()
        .filter(|d| rule.default_deny(*d))
        .collect();

    let lists = [
        ("ingress", Direction::Ingress, Action::Allow, &rule.ingress),
        ("ingressDeny", Direction::Ingress, Action::Deny, &rule.ingress_deny),
        ("egress", Direction::Egress, Action::Allow, &rule.egress),
        ("egressDeny", Direction::Egress, Action::Deny, &rule.egress_deny),
    ];
    let mut rules = Vec::new();
    for (list, direction, action, entries) in lists {
        for entry in entries {
            rules.extend(lower_peer_rule(entry, list, direction, action, namespace));
        }
    }

    Policy {
        name,
        tier: Tier::Default,
        priority: 0,
        subject,
        nodes: rule.nodes,
        isolates,
        rules,
        span: rule.span,
    }
}

/// One rule entry; `None` for an entry that matches nothing at all.
fn lower_peer_rule(
    entry: &CiliumPeerRule,
    list: &str,
    direction: Direction,
    action: Action,
    namespace: Option<&str>,
) -> Option<Rule> {
    // `ingress: [{}]`: no peer and no port. Cilium selects nothing with it; the entry
    // only counted towards default deny, which the decoder already settled.
    if entry.peers.is_none() && entry.l4.is_none() {
        return None;
    }
    let peers = entry
        .peers
        .as_ref()
        .map(|peers| peers.iter().flat_map(|p| lower_peer(p, namespace)).collect());
    let ports: Vec<PortMatch> = match &entry.l4 {
        // No L4 part: every protocol and port, ICMP included.
        None => Vec::new(),
        Some(l4) => {
            let ports: Vec<PortMatch> = l4
                .ports
                .iter()
                .flat_map(lower_port)
                .chain(l4.icmps.iter().map(|m| PortMatch {
                    proto: Some(m.family.protocol()),
                    port: PortSpec::IcmpType(m.icmp_type),
                    span: m.span,
                }))
                .collect();
            // An L4 part that lists no port (`toPorts: [{ports: []}]`) matches nothing;
            // an empty list in the IR would mean every port.
            if ports.is_empty() {
                return None;
            }
            ports
        }
    };
    Some(Rule {
        direction,
        action,
        peers,
        ports,
        label: format!("{list}[{}]", entry.index),
        span: entry.span,
    })
}

fn lower_peer(peer: &CiliumPeer, namespace: Option<&str>) -> Vec<Peer> {
    match peer {
        CiliumPeer::Endpoints(selector) => {
            vec![Peer::Endpoints(peer_selector(selector, namespace))]
        }
        CiliumPeer::Cidr { cidr, except, .. } => {
            vec![Peer::Cidr { cidr: *cidr, except: except.clone() }]
        }
        CiliumPeer::Entity(entity) => {
            let entity = match entity.value {
                CiliumEntity::All => Entity::All,
                CiliumEntity::World => Entity::World,
                // The IR's World covers both families. Each family's world is every
                // address of it that is no endpoint: the whole address range as a CIDR
                // peer, which by the solver's rules never matches a pod address and
                // takes in every CIDR identity of the family.
                CiliumEntity::WorldIpv4 => {
                    return vec![whole_family(IpAddr::V4(Ipv4Addr::UNSPECIFIED))];
                }
                CiliumEntity::WorldIpv6 => {
                    return vec![whole_family(IpAddr::V6(Ipv6Addr::UNSPECIFIED))];
                }
                CiliumEntity::Cluster => Entity::Cluster,
                CiliumEntity::Host => Entity::Host,
                CiliumEntity::Init => Entity::Init,
                CiliumEntity::Ingress => Entity::Ingress,
                CiliumEntity::Unmanaged => Entity::Unmanaged,
                CiliumEntity::RemoteNode => Entity::RemoteNode,
                CiliumEntity::Health => Entity::Health,
                CiliumEntity::KubeApiserver => Entity::KubeApiserver,
                // `none` can be named but never exists.
                CiliumEntity::None => return Vec::new(),
            };
            vec![Peer::Entity(entity)]
        }
    }
}

fn whole_family(addr: IpAddr) -> Peer {
    Peer::Cidr { cidr: Cidr { addr, prefix: 0 }, except: Vec::new() }
}

/// A peer selector with Cilium's namespace defaults applied (see the module
/// documentation).
fn peer_selector(selector: &LabelSelector, namespace: Option<&str>) -> LabelSelector {
    let names_namespace = selector.match_labels.contains_key(NAMESPACE_LABEL)
        || selector.match_expressions.iter().any(|r| r.key == NAMESPACE_LABEL);
    if names_namespace {
        return selector.clone();
    }
    match namespace {
        Some(ns) => in_namespace(selector, ns),
        None => {
            let mut out = selector.clone();
            out.match_expressions.push(Requirement {
                key: NAMESPACE_LABEL.into(),
                operator: Operator::Exists,
                values: Vec::new(),
            });
            out.match_expressions.sort();
            out.match_expressions.dedup();
            out
        }
    }
}

/// `selector` restricted to endpoints of `namespace`.
fn in_namespace(selector: &LabelSelector, namespace: &str) -> LabelSelector {
    let mut out = selector.clone();
    out.match_labels.insert(NAMESPACE_LABEL.into(), namespace.into());
    out
}

/// One `toPorts` port. `ANY` with a port number or name leaves the protocol open, and
/// the solver expands it to TCP, UDP and SCTP; `ANY` with port 0 must be spelled out,
/// since an open protocol with every port would also match ICMP.
fn lower_port(port: &CiliumPort) -> Vec<PortMatch> {
    let proto = port.protocol.map(|p| p.number());
    let span = port.span;
    match (&port.port, proto) {
        (CiliumPortSpec::All, Some(p)) => {
            vec![PortMatch { proto: Some(p), port: PortSpec::Any, span }]
        }
        (CiliumPortSpec::All, None) => ANY_PORT_PROTOCOLS
            .iter()
            .map(|p| PortMatch { proto: Some(*p), port: PortSpec::Any, span })
            .collect(),
        (CiliumPortSpec::Range(start, end), proto) => {
            vec![PortMatch { proto, port: PortSpec::Range(*start, *end), span }]
        }
        (CiliumPortSpec::Named(name), proto) => {
            vec![PortMatch { proto, port: PortSpec::Named(name.clone()), span }]
        }
    }
}
