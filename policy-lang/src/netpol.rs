//! Decoder for `networking.k8s.io/v1` NetworkPolicy, following the validation rules of
//! the Kubernetes API server (pkg/apis/networking/validation).

use std::net::IpAddr;

use crate::ast::{
    Cidr, Direction, LabelSelector, NetPeer, NetPort, NetRule, NetworkPolicy, Operator, PortRef,
    Requirement, Sp,
};
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::inventory::{check_label_key, check_label_value, labels, object_meta, protocol};
use crate::reader::{Fields, Reader};
use crate::yaml::{Node, NodeKind};

pub(crate) fn network_policy(r: &mut Reader<'_>, object: &Fields<'_>) -> Option<NetworkPolicy> {
    let meta = object_meta(r, object, "NetworkPolicy", true)?;
    let Some(spec_node) = object.get("spec") else {
        r.push(
            Diagnostic::new(codes::MISSING_FIELD, "NetworkPolicy has no spec")
                .at(object.node.span, "this object")
                .help("add `spec:` with a `podSelector` (`{}` selects every pod)"),
        );
        return None;
    };
    let spec = r.fields(
        spec_node,
        "NetworkPolicy spec",
        &["podSelector", "policyTypes", "ingress", "egress"],
    )?;

    // `podSelector` is not optional in the API type, but an absent one decodes as the
    // empty selector, which selects every pod of the namespace.
    let pod_selector = match spec.get("podSelector") {
        Some(node) => selector(r, node, "spec.podSelector")?,
        None => LabelSelector { span: spec_node.span, ..LabelSelector::default() },
    };

    let ingress = rules(r, spec.get("ingress"), Direction::Ingress);
    let egress = rules(r, spec.get("egress"), Direction::Egress);

    let mut policy_types = Vec::new();
    if let Some(node) = spec.get("policyTypes") {
        for item in r.list(node, "spec.policyTypes") {
            let Some(s) = r.string(item, "a policyTypes entry") else { continue };
            match s.value.as_str() {
                "Ingress" => policy_types.push(Direction::Ingress),
                "Egress" => policy_types.push(Direction::Egress),
                other => r.push(
                    Diagnostic::new(
                        codes::INVALID_POLICY_TYPE,
                        format!("policy type `{other}` is not valid"),
                    )
                    .at(s.span, "not Ingress or Egress")
                    .help("policyTypes entries are `Ingress` or `Egress`, capitalised"),
                ),
            }
        }
        policy_types.sort();
        policy_types.dedup();
    }
    // The API server's defaulting, which applies to an empty list as to a missing one:
    // Ingress always, Egress when egress rules are present. A `policyTypes: []` deny-all
    // must not fail open.
    if policy_types.is_empty() {
        policy_types.push(Direction::Ingress);
        if !egress.is_empty() {
            policy_types.push(Direction::Egress);
        }
    }

    Some(NetworkPolicy { meta, pod_selector, policy_types, ingress, egress })
}

fn rules(r: &mut Reader<'_>, node: Option<&Node>, direction: Direction) -> Vec<NetRule> {
    let Some(node) = node else { return Vec::new() };
    let (what, peers_key) = match direction {
        Direction::Ingress => ("an ingress rule", "from"),
        Direction::Egress => ("an egress rule", "to"),
    };
    let mut out = Vec::new();
    for item in r.list(node, &format!("spec.{}", direction.name())) {
        let Some(fields) = r.fields(item, what, &[peers_key, "ports"]) else { continue };
        let peers = fields
            .get(peers_key)
            .map(|n| r.list(n, peers_key).iter().filter_map(|p| peer(r, p)).collect())
            .unwrap_or_default();
        let ports = fields
            .get("ports")
            .map(|n| r.list(n, "ports").iter().filter_map(|p| port(r, p)).collect())
            .unwrap_or_default();
        out.push(NetRule { peers, ports, span: item.span });
    }
    out
}

fn peer(r: &mut Reader<'_>, node: &Node) -> Option<NetPeer> {
    let fields = r.fields(node, "a peer", &["podSelector", "namespaceSelector", "ipBlock"])?;
    let pod_selector = fields.get("podSelector");
    let namespace_selector = fields.get("namespaceSelector");
    if let Some(block) = fields.get("ipBlock") {
        if pod_selector.is_some() || namespace_selector.is_some() {
            let key = fields.key("ipBlock").unwrap_or(block);
            r.push(
                Diagnostic::new(
                    codes::EXCLUSIVE_FIELDS,
                    "a peer cannot have both ipBlock and a selector",
                )
                .at(key.span, "ipBlock here")
                .help("split it into two peers: one with ipBlock, one with the selectors"),
            );
            return None;
        }
        return ip_block(r, block);
    }
    if pod_selector.is_none() && namespace_selector.is_none() {
        r.push(
            Diagnostic::new(
                codes::EMPTY_PEER,
                "a peer has no podSelector, namespaceSelector or ipBlock",
            )
            .at(node.span, "empty peer")
            .help("use `podSelector: {}` for every pod of the namespace, or remove the peer"),
        );
        return None;
    }
    let pod_selector = match pod_selector {
        Some(n) => Some(selector(r, n, "podSelector")?),
        None => None,
    };
    let namespace_selector = match namespace_selector {
        Some(n) => Some(selector(r, n, "namespaceSelector")?),
        None => None,
    };
    Some(NetPeer::Pods { namespace_selector, pod_selector, span: node.span })
}

fn ip_block(r: &mut Reader<'_>, node: &Node) -> Option<NetPeer> {
    let fields = r.fields(node, "ipBlock", &["cidr", "except"])?;
    let Some(cidr_node) = fields.get("cidr") else {
        r.push(
            Diagnostic::new(codes::MISSING_FIELD, "ipBlock has no cidr")
                .at(node.span, "cidr missing")
                .help("add `cidr:`, such as `cidr: 10.0.0.0/8`"),
        );
        return None;
    };
    let cidr = parse_cidr(r, cidr_node)?;
    let mut except = Vec::new();
    if let Some(list) = fields.get("except") {
        for item in r.list(list, "ipBlock.except") {
            let Some(e) = parse_cidr(r, item) else { continue };
            if !cidr.contains_cidr(&e) || e.prefix == cidr.prefix {
                r.push(
                    Diagnostic::new(
                        codes::EXCEPT_OUTSIDE_CIDR,
                        format!("except `{e}` is not strictly inside cidr `{cidr}`"),
                    )
                    .at(item.span, "outside the block")
                    .help(format!("except entries must be smaller ranges inside {cidr}")),
                );
                continue;
            }
            except.push(e);
        }
    }
    except.sort();
    except.dedup();
    Some(NetPeer::IpBlock { cidr, except, span: node.span })
}

/// Parses `addr/len`. Host bits are cleared, as the API server's CIDR parsing does.
pub(crate) fn parse_cidr(r: &mut Reader<'_>, node: &Node) -> Option<Cidr> {
    let s = r.string(node, "a CIDR")?;
    let bad = |r: &mut Reader<'_>, why: &str| {
        r.push(
            Diagnostic::new(codes::INVALID_CIDR, format!("`{}` is not a valid CIDR", s.value))
                .at(s.span, why.to_owned())
                .help("write an address and a prefix length, such as 10.0.0.0/8 or 2001:db8::/32"),
        );
    };
    let Some((addr, len)) = s.value.split_once('/') else {
        bad(r, "no prefix length");
        return None;
    };
    let Ok(addr) = addr.parse::<IpAddr>() else {
        bad(r, "not an IP address");
        return None;
    };
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match len.parse::<u8>() {
        Ok(p) if p <= max && !len.starts_with('+') => p,
        _ => {
            bad(r, &format!("prefix length must be 0-{max}"));
            return None;
        }
    };
    let addr = match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    };
    Some(Cidr { addr, prefix })
}

fn port(r: &mut Reader<'_>, node: &Node) -> Option<NetPort> {
    let fields = r.fields(node, "a port", &["protocol", "port", "endPort"])?;
    let protocol = match fields.get("protocol").and_then(|n| r.string(n, "protocol")) {
        Some(p) => protocol(r, &p)?,
        None => crate::ast::Protocol::Tcp,
    };
    let port = match fields.get("port") {
        None => None,
        Some(n) => Some(port_ref(r, n)?),
    };
    let mut end_port = None;
    if let Some(n) = fields.get("endPort") {
        let end = r.int(n, "endPort")?;
        match &port {
            Some(PortRef::Number(start)) => {
                if end.value < i64::from(*start) || end.value > 65535 {
                    r.push(
                        Diagnostic::new(
                            codes::INVALID_END_PORT,
                            format!("endPort {} is not between port {start} and 65535", end.value),
                        )
                        .at(end.span, "out of range")
                        .help("endPort is the inclusive end of the range and must be >= port"),
                    );
                    return None;
                }
                end_port = Some(end.value as u16);
            }
            Some(PortRef::Name(name)) => {
                r.push(
                    Diagnostic::new(
                        codes::INVALID_END_PORT,
                        format!("endPort with named port `{name}`"),
                    )
                    .at(end.span, "needs a numeric port")
                    .help("a range needs numeric bounds: give `port` as a number, or drop endPort"),
                );
                return None;
            }
            None => {
                r.push(
                    Diagnostic::new(codes::INVALID_END_PORT, "endPort without port")
                        .at(end.span, "no port to start the range")
                        .help("add `port:` with the first port of the range"),
                );
                return None;
            }
        }
    }
    Some(NetPort { protocol, port, end_port, span: node.span })
}

fn port_ref(r: &mut Reader<'_>, node: &Node) -> Option<PortRef> {
    match &node.kind {
        NodeKind::Int(n) => match u16::try_from(*n) {
            Ok(p) if p > 0 => Some(PortRef::Number(p)),
            _ => {
                r.push(
                    Diagnostic::new(codes::INVALID_PORT, format!("port {n} is out of range"))
                        .at(node.span, "must be 1-65535")
                        .help("use a port between 1 and 65535, or a named container port"),
                );
                None
            }
        },
        NodeKind::Str(name) => {
            // Kubernetes wants the name in lower case (Cilium accepts any case).
            if is_service_name(name) && !name.bytes().any(|b| b.is_ascii_uppercase()) {
                Some(PortRef::Name(name.clone()))
            } else {
                r.push(
                    Diagnostic::new(codes::INVALID_PORT, format!("`{name}` is not a valid port name"))
                        .at(node.span, "not a number or an IANA service name")
                        .help("a port is a number, or a container port name of at most 15 lowercase letters, digits and `-`"),
                );
                None
            }
        }
        _ => {
            port_type_error(r, node);
            None
        }
    }
}

/// An IANA service name (RFC 6335, section 5.1): 1-15 letters, digits and `-`, at least
/// one letter, no `-` at either end or twice in a row. Case is the caller's concern.
pub(crate) fn is_service_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && name.bytes().any(|b| b.is_ascii_alphabetic())
        && !name.starts_with('-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// A port given as neither a number nor a name.
pub(crate) fn port_type_error(r: &mut Reader<'_>, node: &Node) {
    r.push(
        Diagnostic::new(
            codes::WRONG_TYPE,
            format!("port must be a number or a name, found {}", node.kind.describe()),
        )
        .at(node.span, "expected a number or a string")
        .help("write a port number such as 8080, or a container port name such as http"),
    );
}

pub(crate) fn selector(r: &mut Reader<'_>, node: &Node, what: &str) -> Option<LabelSelector> {
    let fields = r.fields(node, what, &["matchLabels", "matchExpressions"])?;
    let mut out = LabelSelector { span: node.span, ..LabelSelector::default() };
    if let Some(n) = fields.get("matchLabels") {
        out.match_labels = labels(r, n, &format!("{what}.matchLabels"));
    }
    if let Some(n) = fields.get("matchExpressions") {
        for item in r.list(n, &format!("{what}.matchExpressions")) {
            if let Some(req) = requirement(r, item) {
                out.match_expressions.push(req);
            }
        }
    }
    out.match_expressions.sort();
    out.match_expressions.dedup();
    Some(out)
}

fn requirement(r: &mut Reader<'_>, node: &Node) -> Option<Requirement> {
    let fields = r.fields(node, "a selector expression", &["key", "operator", "values"])?;
    let missing = |r: &mut Reader<'_>, field: &str| {
        r.push(
            Diagnostic::new(codes::MISSING_FIELD, format!("selector expression has no `{field}`"))
                .at(node.span, format!("`{field}` missing"))
                .help("an expression needs `key` and `operator` (In, NotIn, Exists, DoesNotExist)"),
        );
    };
    // A field of the wrong type was reported as such; only an absent one is "missing".
    let key = match fields.get("key") {
        Some(n) => r.string(n, "key")?,
        None => {
            missing(r, "key");
            return None;
        }
    };
    let op = match fields.get("operator") {
        Some(n) => r.string(n, "operator")?,
        None => {
            missing(r, "operator");
            return None;
        }
    };
    let values: Vec<Sp<String>> = fields
        .get("values")
        .map(|n| r.list(n, "values").iter().filter_map(|v| r.string(v, "a value")).collect())
        .unwrap_or_default();
    check_label_key(r, &key);
    for v in &values {
        check_label_value(r, v);
    }
    let operator = match op.value.as_str() {
        "In" => Operator::In,
        "NotIn" => Operator::NotIn,
        "Exists" => Operator::Exists,
        "DoesNotExist" => Operator::DoesNotExist,
        other => {
            r.push(
                Diagnostic::new(
                    codes::INVALID_SELECTOR,
                    format!("operator `{other}` is not valid"),
                )
                .at(op.span, "unknown operator")
                .help("use In, NotIn, Exists or DoesNotExist"),
            );
            return None;
        }
    };
    let needs_values = matches!(operator, Operator::In | Operator::NotIn);
    if needs_values == values.is_empty() {
        let (label, help) = if needs_values {
            ("needs at least one value", "list the values under `values:`")
        } else {
            ("takes no values", "remove `values:` from this expression")
        };
        r.push(
            Diagnostic::new(codes::INVALID_SELECTOR, format!("operator {} {label}", op.value))
                .at(op.span, label)
                .help(help),
        );
        return None;
    }
    let mut values: Vec<String> = values.into_iter().map(|v| v.value).collect();
    values.sort();
    values.dedup();
    Some(Requirement { key: key.value, operator, values })
}
