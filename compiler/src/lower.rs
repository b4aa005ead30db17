//! Lowering of front-end policies to the IR.

use std::collections::BTreeSet;

use policy_lang::ast::{
    LabelSelector, NetPeer, NetPort, NetworkPolicy, Operator, PortRef, Requirement,
};

use crate::identity::{NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX};
use crate::ir::{Action, Peer, Policy, PortMatch, PortSpec, Rule, Tier};

/// A NetworkPolicy: its pod selector restricted to its namespace, isolation per
/// `policyTypes`, one allow rule per ingress/egress entry.
pub fn network_policy(np: &NetworkPolicy) -> Policy {
    let namespace = &np.meta.namespace;
    let mut rules = Vec::new();
    for direction in [policy_lang::ast::Direction::Ingress, policy_lang::ast::Direction::Egress] {
        // Rules of a direction the policy does not isolate are ignored by Kubernetes.
        if !np.policy_types.contains(&direction) {
            continue;
        }
        for (i, rule) in np.rules(direction).iter().enumerate() {
            let peers = (!rule.peers.is_empty())
                .then(|| rule.peers.iter().map(|p| net_peer(p, namespace)).collect());
            rules.push(Rule {
                direction,
                action: Action::Allow,
                peers,
                ports: rule.ports.iter().map(net_port).collect(),
                label: format!("{}[{i}]", direction.name()),
                span: rule.span,
            });
        }
    }
    Policy {
        name: format!("NetworkPolicy {namespace}/{}", np.meta.name.value),
        tier: Tier::Default,
        priority: 0,
        subject: in_namespace(&np.pod_selector, namespace),
        nodes: false,
        isolates: np.policy_types.iter().copied().collect::<BTreeSet<_>>(),
        rules,
        span: np.meta.span,
    }
}

/// `selector` restricted to endpoints of `namespace`.
fn in_namespace(selector: &LabelSelector, namespace: &str) -> LabelSelector {
    let mut out = selector.clone();
    out.match_labels.insert(NAMESPACE_LABEL.into(), namespace.into());
    out
}

fn net_peer(peer: &NetPeer, namespace: &str) -> Peer {
    match peer {
        NetPeer::Pods { namespace_selector, pod_selector, span } => {
            let mut selector = pod_selector.clone().unwrap_or_default();
            selector.span = *span;
            match namespace_selector {
                // podSelector alone: the policy's own namespace.
                None => selector = in_namespace(&selector, namespace),
                Some(ns) => {
                    // Namespace labels are endpoint labels under a prefix; an empty
                    // namespaceSelector still means "pods", never world.
                    for (k, v) in &ns.match_labels {
                        selector
                            .match_labels
                            .insert(format!("{NAMESPACE_LABELS_PREFIX}{k}"), v.clone());
                    }
                    for r in &ns.match_expressions {
                        selector.match_expressions.push(Requirement {
                            key: format!("{NAMESPACE_LABELS_PREFIX}{}", r.key),
                            ..r.clone()
                        });
                    }
                    selector.match_expressions.push(Requirement {
                        key: NAMESPACE_LABEL.into(),
                        operator: Operator::Exists,
                        values: Vec::new(),
                    });
                    selector.match_expressions.sort();
                    selector.match_expressions.dedup();
                }
            }
            Peer::Endpoints(selector)
        }
        NetPeer::IpBlock { cidr, except, .. } => Peer::Cidr { cidr: *cidr, except: except.clone() },
    }
}

fn net_port(port: &NetPort) -> PortMatch {
    let spec = match &port.port {
        None => PortSpec::Any,
        Some(PortRef::Number(p)) => PortSpec::Range(*p, port.end_port.unwrap_or(*p)),
        Some(PortRef::Name(name)) => PortSpec::Named(name.clone()),
    };
    PortMatch { proto: Some(port.protocol.number()), port: spec, span: port.span }
}
