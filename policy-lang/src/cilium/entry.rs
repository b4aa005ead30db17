//! One entry of a rule list (`ingress`, `ingressDeny`, `egress`, `egressDeny`): its
//! L3 peers and its L4 part.

use std::net::IpAddr;

use super::selector::{self, Role, Selected};
use super::{List, ports};
use crate::ast::{Cidr, Direction, Sp};
use crate::ast_cilium::{CiliumL4, CiliumPeer, CiliumPeerRule, CiliumPort, Entity};
use crate::codes::{self, Code};
use crate::diagnostic::Diagnostic;
use crate::netpol::parse_cidr;
use crate::reader::{Fields, Reader};
use crate::yaml::{Node, NodeKind};

/// A list field that is present and not empty.
fn non_empty<'n>(fields: &Fields<'n>, name: &str) -> Option<&'n Node> {
    fields.get(name).filter(|n| !matches!(&n.kind, NodeKind::Seq(items) if items.is_empty()))
}

/// One entry of a rule list; `None` when it cannot be compiled (reported).
pub(super) fn peer_rule(
    r: &mut Reader<'_>,
    node: &Node,
    index: usize,
    list: List,
) -> Option<CiliumPeerRule> {
    let fields = r.fields(node, &format!("an {} rule", list.name()), list.fields())?;
    let p = list.peer_prefix();
    let mut ok = true;

    // Cilium's rule sanitizer refuses a rule that mixes kinds of L3 peer (endpoints,
    // CIDRs, CIDR sets, entities, nodes, groups, and for egress services and FQDNs):
    // each rule names its peers one way.
    let mut kinds = vec!["Endpoints", "CIDR", "CIDRSet", "Entities", "Nodes", "Groups"];
    if list.direction() == Direction::Egress {
        kinds.extend(["Services", "FQDNs"]);
    }
    let mut present: Vec<(String, &Node)> = kinds
        .iter()
        .map(|k| format!("{p}{k}"))
        .filter(|name| list.fields().contains(&name.as_str()) && non_empty(&fields, name).is_some())
        .filter_map(|name| fields.key(&name).map(|key| (name, key)))
        .collect();
    // Point at whichever of them comes second in the file.
    present.sort_by_key(|(_, key)| (key.span.line, key.span.col));
    if let [(first, _), (second, key), ..] = present.as_slice() {
        r.push(
            Diagnostic::new(
                codes::EXCLUSIVE_FIELDS,
                format!("{first} and {second} cannot be combined in one rule"),
            )
            .at(key.span, format!("{first} is set too"))
            .help("Cilium rejects rules that mix peer kinds; write one rule per kind of peer"),
        );
        ok = false;
    }

    ok &= report_unsupported(r, &fields, list);

    let mut peers: Option<Vec<CiliumPeer>> = None;
    if let Some(n) = fields.get(&format!("{p}Endpoints")) {
        let out = peers.get_or_insert_with(Vec::new);
        for item in r.list(n, &format!("{p}Endpoints")) {
            match selector::selector(r, item, &format!("a {p}Endpoints selector"), Role::Peer) {
                Some(Selected::Labels(selector)) => out.push(CiliumPeer::Endpoints(selector)),
                Some(Selected::Entity(entity)) => out.push(CiliumPeer::Entity(entity)),
                None => ok = false,
            }
        }
    }
    if let Some(n) = fields.get(&format!("{p}CIDR")) {
        let out = peers.get_or_insert_with(Vec::new);
        for item in r.list(n, &format!("{p}CIDR")) {
            match cidr_or_address(r, item) {
                Some(cidr) => {
                    out.push(CiliumPeer::Cidr { cidr, except: Vec::new(), span: item.span })
                }
                None => ok = false,
            }
        }
    }
    if let Some(n) = fields.get(&format!("{p}CIDRSet")) {
        let out = peers.get_or_insert_with(Vec::new);
        for item in r.list(n, &format!("{p}CIDRSet")) {
            match cidr_rule(r, item) {
                Some(peer) => out.push(peer),
                None => ok = false,
            }
        }
    }
    if let Some(n) = fields.get(&format!("{p}Entities")) {
        let out = peers.get_or_insert_with(Vec::new);
        for item in r.list(n, &format!("{p}Entities")) {
            let Some(name) = r.string(item, "an entity") else {
                ok = false;
                continue;
            };
            match Entity::parse(&name.value) {
                Some(entity) => out.push(CiliumPeer::Entity(Sp::new(entity, name.span))),
                None => {
                    let names: Vec<&str> = Entity::ALL.iter().map(|e| e.name()).collect();
                    r.push(
                        Diagnostic::new(
                            codes::INVALID_ENTITY,
                            format!("`{}` is not an entity", name.value),
                        )
                        .at(name.span, "unknown entity")
                        .help(format!("entities are {}", names.join(", "))),
                    );
                    ok = false;
                }
            }
        }
    }

    let l4 = l4(r, &fields, list, &mut ok);
    ok.then_some(CiliumPeerRule { peers, l4, index, span: node.span })
}

/// Reports the fields of a rule entry that an offline compile cannot enforce; `false`
/// if there was one.
fn report_unsupported(r: &mut Reader<'_>, fields: &Fields<'_>, list: List) -> bool {
    let p = list.peer_prefix();
    let checks: [(String, Code, &str, String); 6] = [
        (
            format!("{p}Requires"),
            codes::UNSUPPORTED_FIELD,
            "is deprecated and not supported",
            format!("put the requirement into the {p}Endpoints selectors themselves"),
        ),
        (
            format!("{p}Groups"),
            codes::NEEDS_PROXY,
            "needs a cloud provider's API at run time",
            format!("list the addresses with {p}CIDR or {p}CIDRSet"),
        ),
        (
            format!("{p}Nodes"),
            codes::UNSUPPORTED_FIELD,
            "selects nodes by label, which is not supported yet",
            format!("use {p}Entities (host, remote-node), or the nodes' addresses in {p}CIDR"),
        ),
        (
            "toServices".to_owned(),
            codes::UNSUPPORTED_FIELD,
            "needs the cluster's Services and EndpointSlices, which policyc does not read yet",
            "select the service's pods with toEndpoints".to_owned(),
        ),
        (
            "toFQDNs".to_owned(),
            codes::NEEDS_PROXY,
            "needs Cilium's DNS proxy at run time",
            "list stable addresses with toCIDR or toCIDRSet".to_owned(),
        ),
        (
            "authentication".to_owned(),
            codes::NEEDS_PROXY,
            "needs mutual authentication at run time",
            "remove it: policyc enforces L3 and L4 only".to_owned(),
        ),
    ];
    let mut ok = true;
    for (name, code, why, help) in checks {
        if !list.fields().contains(&name.as_str()) {
            continue;
        }
        let Some(value) = non_empty(fields, &name) else { continue };
        // `authentication: {mode: disabled}` asks for nothing.
        if name == "authentication" && value.get("mode").and_then(Node::as_str) == Some("disabled")
        {
            continue;
        }
        let key = fields.key(&name).expect("present fields have keys");
        let label = if code == codes::NEEDS_PROXY {
            "needs run-time support: rule not compiled"
        } else {
            "not supported yet: rule not compiled"
        };
        r.push(Diagnostic::new(code, format!("`{name}` {why}")).at(key.span, label).help(help));
        ok = false;
    }
    ok
}

/// The `toPorts` and `icmps` of a rule entry: `None` when it has neither.
fn l4(r: &mut Reader<'_>, fields: &Fields<'_>, list: List, ok: &mut bool) -> Option<CiliumL4> {
    let to_ports = non_empty(fields, "toPorts");
    let icmps = non_empty(fields, "icmps");
    if let (Some(_), Some(_)) = (to_ports, icmps) {
        let key = fields.key("icmps").expect("present fields have keys");
        r.push(
            Diagnostic::new(codes::EXCLUSIVE_FIELDS, "a rule cannot have both toPorts and icmps")
                .at(key.span, "toPorts is set too")
                .help("write two rules: one with toPorts, one with icmps"),
        );
        *ok = false;
    }
    if to_ports.is_none() && icmps.is_none() {
        return None;
    }

    let mut out = CiliumL4 { ports: Vec::new(), icmps: Vec::new() };
    for entry in to_ports.map(|n| r.list(n, "toPorts")).unwrap_or_default() {
        match port_rule(r, entry, list.deny()) {
            Some(ports) => out.ports.extend(ports),
            None => *ok = false,
        }
    }
    for entry in icmps.map(|n| r.list(n, "icmps")).unwrap_or_default() {
        let Some(f) = r.fields(entry, "an icmps entry", &["fields"]) else {
            *ok = false;
            continue;
        };
        let Some(list_node) = f.get("fields") else { continue };
        let items = r.list(list_node, "icmps fields");
        let key = f.key("fields").expect("present fields have keys");
        *ok &= ports::check_count(r, key, items.len(), "an icmps entry's fields");
        for item in items {
            match ports::icmp_field(r, item) {
                Some(m) => out.icmps.push(m),
                None => *ok = false,
            }
        }
    }
    Some(out)
}

/// One `toPorts` entry; `None` when it cannot be compiled (reported).
fn port_rule(r: &mut Reader<'_>, node: &Node, deny: bool) -> Option<Vec<CiliumPort>> {
    const ALLOW: &[&str] =
        &["ports", "rules", "terminatingTLS", "originatingTLS", "serverNames", "listener"];
    let fields = r.fields(node, "a toPorts entry", if deny { &["ports"] } else { ALLOW })?;
    let mut ok = true;
    if !deny {
        let proxied = [
            ("rules", "L7 rules need Cilium's proxy at run time"),
            ("terminatingTLS", "TLS termination needs Cilium's proxy at run time"),
            ("originatingTLS", "TLS origination needs Cilium's proxy at run time"),
            ("serverNames", "matching TLS server names needs Cilium's proxy at run time"),
            ("listener", "an Envoy listener needs Cilium's proxy at run time"),
        ];
        for (name, why) in proxied {
            // `rules: {}` has no L7 rule in it, and Cilium treats it as none.
            let given = non_empty(&fields, name)
                .is_some_and(|v| !matches!(&v.kind, NodeKind::Map(entries) if entries.is_empty()));
            if !given {
                continue;
            }
            let key = fields.key(name).expect("present fields have keys");
            r.push(
                Diagnostic::new(codes::NEEDS_PROXY, why)
                    .at(key.span, "needs a proxy: rule not compiled")
                    .help("policyc enforces L3 and L4 only: drop this part, or keep enforcing the policy with Cilium"),
            );
            ok = false;
        }
    }
    let mut out = Vec::new();
    if let Some(list_node) = fields.get("ports") {
        let items = r.list(list_node, "toPorts ports");
        let key = fields.key("ports").expect("present fields have keys");
        ok &= ports::check_count(r, key, items.len(), "a toPorts entry's ports");
        for item in items {
            match ports::port(r, item) {
                Some(port) => out.push(port),
                None => ok = false,
            }
        }
    }
    ok.then_some(out)
}

/// A `fromCIDRSet`/`toCIDRSet` entry.
fn cidr_rule(r: &mut Reader<'_>, node: &Node) -> Option<CiliumPeer> {
    let fields = r.fields(
        node,
        "a CIDR set entry",
        &["cidr", "except", "cidrGroupRef", "cidrGroupSelector"],
    )?;
    for name in ["cidrGroupRef", "cidrGroupSelector"] {
        if let (Some(_), Some(key)) = (fields.get(name), fields.key(name)) {
            r.push(
                Diagnostic::new(codes::UNSUPPORTED_FIELD, format!("`{name}` is not supported yet"))
                    .at(key.span, "needs CiliumCIDRGroup objects")
                    .help("policyc does not read CiliumCIDRGroups yet; write the CIDRs under `cidr` and `except`"),
            );
            return None;
        }
    }
    let Some(cidr_node) = fields.get("cidr") else {
        r.push(
            Diagnostic::new(codes::MISSING_FIELD, "a CIDR set entry has no cidr")
                .at(node.span, "cidr missing")
                .help("add `cidr:`, such as `cidr: 10.0.0.0/8`"),
        );
        return None;
    };
    // Unlike fromCIDR, a CIDR set entry needs the `/len` (Cilium's CIDRRule rules).
    let cidr = parse_cidr(r, cidr_node)?;
    let mut except = Vec::new();
    let mut ok = true;
    if let Some(list) = fields.get("except") {
        for item in r.list(list, "except") {
            let Some(e) = parse_cidr(r, item) else {
                ok = false;
                continue;
            };
            // Cilium's check: the except prefix starts inside the cidr (same family).
            if !cidr.contains(e.addr) {
                r.push(
                    Diagnostic::new(
                        codes::EXCEPT_OUTSIDE_CIDR,
                        format!("except `{e}` is not inside cidr `{cidr}`"),
                    )
                    .at(item.span, "outside the cidr")
                    .help(format!("except entries must be ranges inside {cidr}")),
                );
                ok = false;
                continue;
            }
            except.push(e);
        }
    }
    except.sort();
    except.dedup();
    ok.then_some(CiliumPeer::Cidr { cidr, except, span: node.span })
}

/// A `fromCIDR`/`toCIDR` entry: a prefix, or a bare address standing for itself.
fn cidr_or_address(r: &mut Reader<'_>, node: &Node) -> Option<Cidr> {
    if let Some(ip) =
        node.as_str().filter(|s| !s.contains('/')).and_then(|s| s.parse::<IpAddr>().ok())
    {
        return Some(Cidr { addr: ip, prefix: if ip.is_ipv4() { 32 } else { 128 } });
    }
    parse_cidr(r, node)
}
