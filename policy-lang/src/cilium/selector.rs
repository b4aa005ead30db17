//! Cilium endpoint selectors: Kubernetes label selectors whose keys may carry a label
//! source, `source:key`.
//!
//! Every label policyc knows is a Kubernetes label, so `k8s:` and `any:` (and no prefix)
//! mean the same and are removed. `reserved:` names a reserved identity such as the host;
//! a peer selector that names exactly one becomes that entity. `cidr:` labels select
//! CIDR identities, which `fromCIDR` says more plainly, and any other source is no
//! source a pod label has. The prefixes are removed from a copy of the YAML tree, which
//! then goes through the NetworkPolicy selector decoder, so both kinds check keys,
//! values and operators by the same rules and report them with the same codes.

use crate::ast::{LabelSelector, Sp};
use crate::ast_cilium::Entity;
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::netpol;
use crate::reader::Reader;
use crate::source::Span;
use crate::yaml::{Node, NodeKind};

/// Labels Cilium gives an endpoint from data policyc does not read yet: a selector on
/// them would silently match no pod. (The service account label,
/// `io.cilium.k8s.policy.serviceaccount`, is read from the pod spec.)
const UNREAD_CILIUM_LABELS: &[&str] = &["io.cilium.k8s.policy.cluster"];

/// What a selector selects.
#[derive(Debug)]
pub(super) enum Selected {
    Labels(LabelSelector),
    /// A peer selector of exactly one `reserved:` label.
    Entity(Sp<Entity>),
}

/// Whether the selector chooses the policy's subjects or its peers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Role {
    Subject,
    Peer,
}

/// Decodes a selector; `None` after reporting why it cannot be compiled.
pub(super) fn selector(
    r: &mut Reader<'_>,
    node: &Node,
    what: &str,
    role: Role,
) -> Option<Selected> {
    let mut reserved: Vec<Sp<String>> = Vec::new();
    let mut ok = true;
    let stripped = strip_sources(r, node, &mut reserved, &mut ok);
    let labels = netpol::selector(r, &stripped, what);
    if !ok {
        return None;
    }
    let labels = labels?;
    if reserved.is_empty() {
        return Some(Selected::Labels(labels));
    }

    let first = &reserved[0];
    let unsupported = |r: &mut Reader<'_>, span: Span, why: &str, help: &str| {
        r.push(
            Diagnostic::new(codes::UNSUPPORTED_FIELD, format!("{what} {why}"))
                .at(span, "not supported")
                .help(help.to_owned()),
        );
    };
    if role == Role::Subject {
        unsupported(
            r,
            first.span,
            "selects a reserved identity, which is not a pod or a node",
            "select pods here; to apply a policy to nodes, select them by their labels with nodeSelector in a CiliumClusterwideNetworkPolicy",
        );
        return None;
    }
    if reserved.len() > 1 || !labels.is_empty() {
        let at = reserved.get(1).map_or(first.span, |s| s.span);
        unsupported(
            r,
            at,
            "combines a reserved label with other labels",
            "select the reserved identity alone, or list it under fromEntities/toEntities",
        );
        return None;
    }
    match Entity::parse(&first.value).filter(|e| *e != Entity::All && *e != Entity::Cluster) {
        Some(entity) => Some(Selected::Entity(Sp::new(entity, first.span))),
        None => {
            r.push(
                Diagnostic::new(
                    codes::INVALID_ENTITY,
                    format!("`reserved:{}` is not a reserved identity", first.value),
                )
                .at(first.span, "unknown reserved label")
                .help("reserved labels are host, remote-node, kube-apiserver, ingress, init, health, unmanaged, world, world-ipv4, world-ipv6 and none"),
            );
            None
        }
    }
}

/// A copy of the selector node with `k8s:` and `any:` removed from its keys. Reserved
/// labels of `matchLabels` are moved to `reserved`; every other prefix is reported and
/// its requirement left out, with `ok` cleared.
fn strip_sources(
    r: &mut Reader<'_>,
    node: &Node,
    reserved: &mut Vec<Sp<String>>,
    ok: &mut bool,
) -> Node {
    let NodeKind::Map(entries) = &node.kind else { return node.clone() };
    let mut labels_out: Vec<(Node, Node)> = Vec::new();
    let mut extra_expressions: Vec<Node> = Vec::new();
    let mut out_entries = Vec::new();
    for (field, value) in entries {
        match (field.as_str(), &value.kind) {
            (Some("matchLabels"), NodeKind::Map(labels)) => {
                for (key, label_value) in labels {
                    let Some(raw) = key.as_str() else {
                        labels_out.push((key.clone(), label_value.clone()));
                        continue;
                    };
                    match source_key(r, raw, key.span, ok) {
                        Key::Label(name) => {
                            let key = Node { kind: NodeKind::Str(name.clone()), span: key.span };
                            // `k8s:app` and `app` are one key once stripped; both
                            // must hold, so the second becomes an `In` expression.
                            if labels_out.iter().any(|(k, _)| k.as_str() == Some(name.as_str())) {
                                extra_expressions.push(in_expression(key, label_value));
                            } else {
                                labels_out.push((key, label_value.clone()));
                            }
                        }
                        Key::Reserved(name) => {
                            let empty = matches!(&label_value.kind, NodeKind::Null)
                                || label_value.as_str() == Some("");
                            if !empty {
                                r.push(
                                    Diagnostic::new(
                                        codes::INVALID_LABEL_VALUE,
                                        format!("reserved label `reserved:{name}` has a value"),
                                    )
                                    .at(label_value.span, "must be empty")
                                    .help("write reserved labels with an empty value: `reserved:host: \"\"`"),
                                );
                                *ok = false;
                            }
                            reserved.push(Sp::new(name, key.span));
                        }
                        Key::Dropped => {}
                    }
                }
                let kind = NodeKind::Map(std::mem::take(&mut labels_out));
                out_entries.push((field.clone(), Node { kind, span: value.span }));
            }
            (Some("matchExpressions"), NodeKind::Seq(items)) => {
                let mut kept = Vec::new();
                for item in items {
                    match strip_expression(r, item, ok) {
                        Some(item) => kept.push(item),
                        None => continue,
                    }
                }
                let span = value.span;
                out_entries.push((field.clone(), Node { kind: NodeKind::Seq(kept), span }));
            }
            _ => out_entries.push((field.clone(), value.clone())),
        }
    }
    if !extra_expressions.is_empty() {
        let span = node.span;
        match out_entries.iter_mut().find(|(f, _)| f.as_str() == Some("matchExpressions")) {
            Some((_, Node { kind: NodeKind::Seq(items), .. })) => items.extend(extra_expressions),
            _ => out_entries.push((
                Node { kind: NodeKind::Str("matchExpressions".into()), span },
                Node { kind: NodeKind::Seq(extra_expressions), span },
            )),
        }
    }
    Node { kind: NodeKind::Map(out_entries), span: node.span }
}

/// One `matchExpressions` entry with its key stripped; `None` when it was reported.
fn strip_expression(r: &mut Reader<'_>, item: &Node, ok: &mut bool) -> Option<Node> {
    let NodeKind::Map(fields) = &item.kind else { return Some(item.clone()) };
    let mut out = Vec::new();
    for (field, value) in fields {
        let (Some("key"), Some(raw)) = (field.as_str(), value.as_str()) else {
            out.push((field.clone(), value.clone()));
            continue;
        };
        match source_key(r, raw, value.span, ok) {
            Key::Label(name) => {
                out.push((field.clone(), Node { kind: NodeKind::Str(name), span: value.span }));
            }
            Key::Reserved(_) => {
                r.push(
                    Diagnostic::new(
                        codes::UNSUPPORTED_FIELD,
                        format!("reserved label `{raw}` in a selector expression"),
                    )
                    .at(value.span, "not supported")
                    .help("select reserved identities with matchLabels, or with fromEntities/toEntities"),
                );
                *ok = false;
                return None;
            }
            Key::Dropped => return None,
        }
    }
    Some(Node { kind: NodeKind::Map(out), span: item.span })
}

/// `{key: <key>, operator: In, values: [<value>]}`.
fn in_expression(key: Node, value: &Node) -> Node {
    let span = key.span;
    let s = |text: &str| Node { kind: NodeKind::Str(text.into()), span };
    Node {
        kind: NodeKind::Map(vec![
            (s("key"), key),
            (s("operator"), s("In")),
            (s("values"), Node { kind: NodeKind::Seq(vec![value.clone()]), span: value.span }),
        ]),
        span,
    }
}

enum Key {
    /// A Kubernetes label key, prefix removed.
    Label(String),
    /// The name of a `reserved:` label.
    Reserved(String),
    /// Reported; leave the requirement out.
    Dropped,
}

/// Splits `source:key`. Kubernetes label keys cannot contain `:`, so the first `:`
/// always ends a source.
fn source_key(r: &mut Reader<'_>, raw: &str, span: Span, ok: &mut bool) -> Key {
    let (source, name) = match raw.split_once(':') {
        Some((source, name)) => (Some(source), name),
        None => (None, raw),
    };
    match source {
        None | Some("k8s" | "any") => {
            if UNREAD_CILIUM_LABELS.contains(&name) {
                r.push(
                    Diagnostic::new(codes::UNSUPPORTED_FIELD, format!("label `{name}` is not read yet"))
                        .at(span, "no pod carries this label in policyc")
                        .help("Cilium derives it from data policyc does not read; select pods by their own labels"),
                );
                *ok = false;
                return Key::Dropped;
            }
            Key::Label(name.to_owned())
        }
        Some("reserved") => Key::Reserved(name.to_owned()),
        Some("cidr") => {
            r.push(
                Diagnostic::new(
                    codes::UNSUPPORTED_FIELD,
                    format!("CIDR label `{raw}` in a selector"),
                )
                .at(span, "not supported")
                .help("select addresses with fromCIDR/toCIDR or fromCIDRSet/toCIDRSet"),
            );
            *ok = false;
            Key::Dropped
        }
        Some(other) => {
            r.push(
                Diagnostic::new(
                    codes::INVALID_LABEL_KEY,
                    format!("label source `{other}:` is not supported"),
                )
                .at(span, "unknown source prefix")
                .help("prefix a key with `k8s:`, `any:` or `reserved:`, or with nothing"),
            );
            *ok = false;
            Key::Dropped
        }
    }
}
