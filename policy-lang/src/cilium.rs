//! Decoder for `cilium.io/v2` CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy,
//! following Cilium's rule sanitizer and CRD schema for the L3/L4 part.
//!
//! Cilium rules can say things an offline compiler cannot enforce: L7 rules, TLS and
//! listeners need its proxy, `toFQDNs` its DNS proxy, `toGroups` a cloud API,
//! `authentication` mutual authentication; `toServices` and `cidrGroupRef` need cluster
//! objects policyc does not read yet. Each is reported at its field with a coded error, and the
//! rule that holds it is left out of the model. For an allow rule that is the safe side
//! (it allows less); an error stops the compile in any case, so a deny rule is never
//! left out of an artifact.

mod entry;
mod ports;
mod selector;
#[cfg(test)]
mod tests;

use crate::ast::Direction;
use crate::ast_cilium::{CiliumPeerRule, CiliumPolicy, CiliumRule};
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::inventory::object_meta;
use crate::reader::{Fields, Reader};
use crate::yaml::{Node, NodeKind};
use selector::{Role, Selected};

/// Top-level fields of both kinds. `specs` holds several rules where `spec` holds one;
/// both may be given.
pub(crate) const OBJECT_FIELDS: [&str; 6] =
    ["apiVersion", "kind", "metadata", "spec", "specs", "status"];

/// Fields of a rule (`spec` or a `specs` entry). `description` and `labels` are metadata
/// for people and tools; they do not change what the rule enforces.
const RULE_FIELDS: &[&str] = &[
    "endpointSelector",
    "nodeSelector",
    "ingress",
    "ingressDeny",
    "egress",
    "egressDeny",
    "enableDefaultDeny",
    "description",
    "labels",
];

/// The four rule lists of a Cilium rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum List {
    Ingress,
    IngressDeny,
    Egress,
    EgressDeny,
}

impl List {
    const ALL: [List; 4] = [List::Ingress, List::IngressDeny, List::Egress, List::EgressDeny];

    fn name(self) -> &'static str {
        match self {
            List::Ingress => "ingress",
            List::IngressDeny => "ingressDeny",
            List::Egress => "egress",
            List::EgressDeny => "egressDeny",
        }
    }

    fn direction(self) -> Direction {
        match self {
            List::Ingress | List::IngressDeny => Direction::Ingress,
            List::Egress | List::EgressDeny => Direction::Egress,
        }
    }

    fn deny(self) -> bool {
        matches!(self, List::IngressDeny | List::EgressDeny)
    }

    /// The prefix of the peer fields: `fromEndpoints`, `toEndpoints`.
    fn peer_prefix(self) -> &'static str {
        match self.direction() {
            Direction::Ingress => "from",
            Direction::Egress => "to",
        }
    }

    /// The schema of one entry. Deny rules have no `authentication`, and no L7 part in
    /// `toPorts`; `toFQDNs` exists for allow rules only.
    fn fields(self) -> &'static [&'static str] {
        match self {
            List::Ingress => &[
                "fromEndpoints",
                "fromRequires",
                "fromCIDR",
                "fromCIDRSet",
                "fromEntities",
                "fromGroups",
                "fromNodes",
                "toPorts",
                "icmps",
                "authentication",
            ],
            List::IngressDeny => &[
                "fromEndpoints",
                "fromRequires",
                "fromCIDR",
                "fromCIDRSet",
                "fromEntities",
                "fromGroups",
                "fromNodes",
                "toPorts",
                "icmps",
            ],
            List::Egress => &[
                "toEndpoints",
                "toRequires",
                "toCIDR",
                "toCIDRSet",
                "toEntities",
                "toServices",
                "toFQDNs",
                "toGroups",
                "toNodes",
                "toPorts",
                "icmps",
                "authentication",
            ],
            List::EgressDeny => &[
                "toEndpoints",
                "toRequires",
                "toCIDR",
                "toCIDRSet",
                "toEntities",
                "toServices",
                "toGroups",
                "toNodes",
                "toPorts",
                "icmps",
            ],
        }
    }
}

pub(crate) fn cilium_policy(
    r: &mut Reader<'_>,
    object: &Fields<'_>,
    clusterwide: bool,
) -> Option<CiliumPolicy> {
    let kind = if clusterwide { "CiliumClusterwideNetworkPolicy" } else { "CiliumNetworkPolicy" };
    let mut meta = object_meta(r, object, kind, !clusterwide)?;
    if clusterwide {
        meta.namespace = String::new();
    }

    let mut rules = Vec::new();
    let mut count = 0;
    if let Some(node) = object.get("spec") {
        count += 1;
        rules.extend(rule(r, node, None, kind));
    }
    if let Some(node) = object.get("specs") {
        let items = r.list(node, "specs");
        count += items.len();
        for (i, item) in items.iter().enumerate() {
            rules.extend(rule(r, item, Some(i), kind));
        }
    }
    if count == 0 {
        r.push(
            Diagnostic::new(codes::MISSING_FIELD, format!("{kind} has neither spec nor specs"))
                .at(object.node.span, "this object")
                .help("add `spec:` with an `endpointSelector` (`{}` selects every pod)"),
        );
        return None;
    }
    Some(CiliumPolicy { meta, clusterwide, rules })
}

/// One rule; `None` when it cannot be compiled (reported).
fn rule(r: &mut Reader<'_>, node: &Node, index: Option<usize>, kind: &str) -> Option<CiliumRule> {
    let what = match index {
        None => "spec".to_owned(),
        Some(i) => format!("specs[{i}]"),
    };
    let fields = r.fields(node, &format!("{kind} {what}"), RULE_FIELDS)?;

    // (key, value) of `nodeSelector`: the key spans the diagnostics about the field.
    let node_selector =
        fields.get("nodeSelector").and_then(|n| fields.key("nodeSelector").map(|k| (k, n)));
    let subject = match (fields.get("endpointSelector"), node_selector) {
        (Some(_), Some((key, _))) => {
            r.push(
                Diagnostic::new(codes::EXCLUSIVE_FIELDS, "a rule cannot have both endpointSelector and nodeSelector")
                    .at(key.span, "nodeSelector here")
                    .help("write two rules: one for pods (endpointSelector), one for nodes (nodeSelector)"),
            );
            None
        }
        (None, Some((key, _))) if kind == "CiliumNetworkPolicy" => {
            // Cilium refuses a node selector in a namespaced policy: nodes belong to no
            // namespace, so only a cluster-wide policy can select them.
            r.push(
                Diagnostic::new(
                    codes::NAMESPACED_NODE_SELECTOR,
                    "a CiliumNetworkPolicy cannot select nodes: nodeSelector is for CiliumClusterwideNetworkPolicy",
                )
                .at(key.span, "nodes belong to no namespace")
                .help("move the rule to a CiliumClusterwideNetworkPolicy (no namespace), or select pods with endpointSelector"),
            );
            None
        }
        (None, Some((_, selector_node))) => {
            match selector::selector(
                r,
                selector_node,
                &format!("{what}.nodeSelector"),
                Role::Subject,
            ) {
                Some(Selected::Labels(selector)) => Some(selector),
                _ => None,
            }
        }
        (Some(selector_node), None) => {
            match selector::selector(
                r,
                selector_node,
                &format!("{what}.endpointSelector"),
                Role::Subject,
            ) {
                Some(Selected::Labels(selector)) => Some(selector),
                _ => None,
            }
        }
        (None, None) => {
            r.push(
                Diagnostic::new(codes::MISSING_FIELD, format!("{what} has no endpointSelector"))
                    .at(node.span, "endpointSelector missing")
                    .help("add `endpointSelector: {}` to select every pod the policy may select"),
            );
            None
        }
    };

    let mut lists: [Vec<CiliumPeerRule>; 4] = Default::default();
    let mut counts = [0usize; 4];
    for (slot, list) in List::ALL.into_iter().enumerate() {
        let Some(list_node) = fields.get(list.name()) else { continue };
        let items = r.list(list_node, &format!("{what}.{}", list.name()));
        counts[slot] = items.len();
        for (i, item) in items.iter().enumerate() {
            lists[slot].extend(entry::peer_rule(r, item, i, list));
        }
    }

    // Cilium's defaulting: a direction turns on default deny when the rule has allow
    // or deny rules for it, unless enableDefaultDeny says otherwise, so a deny-only
    // policy isolates too. Sources: the cilium.io/v2 API reference of
    // `enableDefaultDeny` (unset, it is on for each direction that has rules, whether
    // Ingress or IngressDeny), and the deny-policy page of Cilium's documentation
    // (deny policies put a pod into default deny just as allow policies do). An empty
    // list (`egress: []`) has no rules and leaves its direction open.
    let mut explicit = [None, None];
    if let Some(n) = fields.get("enableDefaultDeny")
        && let Some(f) = r.fields(n, "enableDefaultDeny", &["ingress", "egress"])
    {
        for (slot, name) in ["ingress", "egress"].into_iter().enumerate() {
            explicit[slot] =
                f.get(name).and_then(|n| boolean(r, n, &format!("enableDefaultDeny.{name}")));
        }
    }
    let default_deny_ingress = explicit[0].unwrap_or(counts[0] + counts[1] > 0);
    let default_deny_egress = explicit[1].unwrap_or(counts[2] + counts[3] > 0);

    let [ingress, ingress_deny, egress, egress_deny] = lists;
    Some(CiliumRule {
        index,
        subject: subject?,
        nodes: node_selector.is_some(),
        default_deny_ingress,
        default_deny_egress,
        ingress,
        ingress_deny,
        egress,
        egress_deny,
        span: node.span,
    })
}

fn boolean(r: &mut Reader<'_>, node: &Node, what: &str) -> Option<bool> {
    match node.kind {
        NodeKind::Bool(b) => Some(b),
        _ => {
            r.push(
                Diagnostic::new(
                    codes::WRONG_TYPE,
                    format!("{what} must be a boolean, found {}", node.kind.describe()),
                )
                .at(node.span, "expected true or false")
                .help("write `true` or `false`, unquoted"),
            );
            None
        }
    }
}
