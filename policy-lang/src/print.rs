//! Prints NetworkPolicies, CiliumNetworkPolicies and CiliumClusterwideNetworkPolicies
//! back to YAML that the front end reads to an equal AST (apart from spans).
//!
//! The output is meant for machines first (round-trip tests, fuzzing, normalised
//! dumps), so it is explicit rather than short: every defaulted field is written out
//! (`namespace`, `policyTypes`, `protocol`) and every string is double-quoted, which
//! keeps values such as `on`, `123` or `null` from being read back as something else.

use crate::ast::{
    Direction, LabelSelector, Labels, NetPeer, NetPort, NetRule, NetworkPolicy, Operator, PortRef,
};
use crate::ast_cilium::{
    CiliumL4, CiliumPeer, CiliumPeerRule, CiliumPolicy, CiliumPort, CiliumPortSpec, CiliumRule,
    IcmpFamily,
};

/// One NetworkPolicy as a YAML document, without a `---` marker. An empty
/// `policy_types`, which the front end never produces, prints as `[]` and so reads back
/// with the API server's defaults.
pub fn network_policy(policy: &NetworkPolicy) -> String {
    let mut meta = vec![
        ("name", Yaml::str(&policy.meta.name.value)),
        ("namespace", Yaml::str(&policy.meta.namespace)),
    ];
    if !policy.meta.labels.is_empty() {
        meta.push(("labels", labels(&policy.meta.labels)));
    }

    let mut spec = vec![("podSelector", selector(&policy.pod_selector))];
    let types = policy.policy_types.iter().map(|d| Yaml::str(direction(*d))).collect();
    spec.push(("policyTypes", Yaml::Seq(types)));
    if !policy.ingress.is_empty() {
        spec.push(("ingress", Yaml::Seq(policy.ingress.iter().map(|r| rule(r, "from")).collect())));
    }
    if !policy.egress.is_empty() {
        spec.push(("egress", Yaml::Seq(policy.egress.iter().map(|r| rule(r, "to")).collect())));
    }

    let document = Yaml::map(vec![
        ("apiVersion", Yaml::str("networking.k8s.io/v1")),
        ("kind", Yaml::str("NetworkPolicy")),
        ("metadata", Yaml::map(meta)),
        ("spec", Yaml::map(spec)),
    ]);
    let mut out = String::new();
    document.write_block(&mut out, 0);
    out
}

/// Several NetworkPolicies as one multi-document YAML stream.
pub fn network_policies(policies: &[NetworkPolicy]) -> String {
    policies.iter().map(|p| format!("---\n{}", network_policy(p))).collect()
}

/// One Cilium policy as a YAML document, without a `---` marker.
///
/// The AST keeps what a rule means, not every way of writing it, so some fields come
/// out in one canonical spelling: `enableDefaultDeny` is always written (it holds the
/// decoder's defaulting), CIDR peers are `fromCIDRSet`/`toCIDRSet` entries, a reserved
/// identity among endpoint selectors is a `reserved:` selector and otherwise an entity,
/// and ports and ICMP fields are split into entries of at most 40 (Cilium's limit).
/// The rule without an index prints as `spec`, the others as `specs` in index order.
pub fn cilium_policy(policy: &CiliumPolicy) -> String {
    let mut meta = vec![("name", Yaml::str(&policy.meta.name.value))];
    if !policy.clusterwide {
        meta.push(("namespace", Yaml::str(&policy.meta.namespace)));
    }
    if !policy.meta.labels.is_empty() {
        meta.push(("labels", labels(&policy.meta.labels)));
    }
    let mut fields = vec![
        ("apiVersion", Yaml::str("cilium.io/v2")),
        ("kind", Yaml::str(policy.kind())),
        ("metadata", Yaml::map(meta)),
    ];
    let mut specs: Vec<&CiliumRule> = Vec::new();
    for rule in &policy.rules {
        match rule.index {
            None => fields.push(("spec", cilium_rule(rule))),
            Some(_) => specs.push(rule),
        }
    }
    specs.sort_by_key(|r| r.index);
    if !specs.is_empty() {
        fields.push(("specs", Yaml::Seq(specs.into_iter().map(cilium_rule).collect())));
    }
    let mut out = String::new();
    Yaml::map(fields).write_block(&mut out, 0);
    out
}

/// Several Cilium policies as one multi-document YAML stream.
pub fn cilium_policies(policies: &[CiliumPolicy]) -> String {
    policies.iter().map(|p| format!("---\n{}", cilium_policy(p))).collect()
}

fn cilium_rule(rule: &CiliumRule) -> Yaml {
    let subject = if rule.nodes { "nodeSelector" } else { "endpointSelector" };
    let mut fields = vec![(subject, selector(&rule.subject))];
    let lists = [
        ("ingress", "from", &rule.ingress),
        ("ingressDeny", "from", &rule.ingress_deny),
        ("egress", "to", &rule.egress),
        ("egressDeny", "to", &rule.egress_deny),
    ];
    for (name, prefix, entries) in lists {
        if !entries.is_empty() {
            let entries = entries.iter().map(|e| cilium_entry(e, prefix)).collect();
            fields.push((name, Yaml::Seq(entries)));
        }
    }
    fields.push((
        "enableDefaultDeny",
        Yaml::map(vec![
            ("ingress", Yaml::Bool(rule.default_deny_ingress)),
            ("egress", Yaml::Bool(rule.default_deny_egress)),
        ]),
    ));
    Yaml::map(fields)
}

/// One entry of a rule list; `prefix` is `from` or `to`.
fn cilium_entry(entry: &CiliumPeerRule, prefix: &str) -> Yaml {
    let mut fields: Vec<(String, Yaml)> = Vec::new();
    if let Some(peers) = &entry.peers {
        let endpoints = peers.iter().any(|p| matches!(p, CiliumPeer::Endpoints(_)));
        let cidrs = peers.iter().any(|p| matches!(p, CiliumPeer::Cidr { .. }));
        // Cilium refuses a rule that mixes kinds of peer, so the decoder only ever
        // produces one kind per rule; entities stand among endpoint selectors as
        // `reserved:` labels.
        let (field, items): (&str, Vec<Yaml>) = if endpoints {
            ("Endpoints", peers.iter().map(endpoint_selector).collect())
        } else if cidrs {
            ("CIDRSet", peers.iter().filter_map(cidr_rule).collect())
        } else {
            let names = peers.iter().filter_map(|p| match p {
                CiliumPeer::Entity(e) => Some(Yaml::str(e.value.name())),
                _ => None,
            });
            ("Entities", names.collect())
        };
        fields.push((format!("{prefix}{field}"), Yaml::Seq(items)));
    }
    if let Some(l4) = &entry.l4 {
        fields.extend(cilium_l4(l4));
    }
    Yaml::Map(fields)
}

/// A `fromEndpoints`/`toEndpoints` item.
fn endpoint_selector(peer: &CiliumPeer) -> Yaml {
    match peer {
        CiliumPeer::Endpoints(s) => selector(s),
        CiliumPeer::Entity(e) => Yaml::map(vec![(
            "matchLabels",
            Yaml::Map(vec![(format!("reserved:{}", e.value.name()), Yaml::str(""))]),
        )]),
        CiliumPeer::Cidr { .. } => Yaml::map(vec![]),
    }
}

fn cidr_rule(peer: &CiliumPeer) -> Option<Yaml> {
    let CiliumPeer::Cidr { cidr, except, .. } = peer else { return None };
    let mut fields = vec![("cidr", Yaml::str(&cidr.to_string()))];
    if !except.is_empty() {
        fields.push((
            "except",
            Yaml::Seq(except.iter().map(|c| Yaml::str(&c.to_string())).collect()),
        ));
    }
    Some(Yaml::map(fields))
}

/// `toPorts` or `icmps`, in entries of at most 40 items. An L4 part that lists nothing is
/// one `toPorts` entry with no ports.
fn cilium_l4(l4: &CiliumL4) -> Vec<(String, Yaml)> {
    const MAX: usize = 40;
    let mut out = Vec::new();
    if !l4.ports.is_empty() || l4.icmps.is_empty() {
        let mut entries: Vec<Yaml> = l4
            .ports
            .chunks(MAX)
            .map(|chunk| {
                Yaml::map(vec![("ports", Yaml::Seq(chunk.iter().map(cilium_port).collect()))])
            })
            .collect();
        if entries.is_empty() {
            entries.push(Yaml::map(vec![("ports", Yaml::Seq(Vec::new()))]));
        }
        out.push(("toPorts".to_owned(), Yaml::Seq(entries)));
    }
    if !l4.icmps.is_empty() {
        let entries = l4.icmps.chunks(MAX).map(|chunk| {
            let items = chunk.iter().map(|m| {
                let family = match m.family {
                    IcmpFamily::V4 => "IPv4",
                    IcmpFamily::V6 => "IPv6",
                };
                Yaml::map(vec![
                    ("family", Yaml::str(family)),
                    ("type", Yaml::Int(i64::from(m.icmp_type))),
                ])
            });
            Yaml::map(vec![("fields", Yaml::Seq(items.collect()))])
        });
        out.push(("icmps".to_owned(), Yaml::Seq(entries.collect())));
    }
    out
}

fn cilium_port(port: &CiliumPort) -> Yaml {
    // Cilium's `port` is a string field; numbers are written as its exports write them.
    let (start, end) = match &port.port {
        CiliumPortSpec::All => ("0".to_owned(), None),
        CiliumPortSpec::Range(start, end) if start == end => (start.to_string(), None),
        CiliumPortSpec::Range(start, end) => (start.to_string(), Some(*end)),
        CiliumPortSpec::Named(name) => (name.clone(), None),
    };
    let mut fields = vec![("port", Yaml::Str(start))];
    if let Some(end) = end {
        fields.push(("endPort", Yaml::Int(i64::from(end))));
    }
    let protocol = port.protocol.map_or("ANY", |p| p.name());
    fields.push(("protocol", Yaml::str(protocol)));
    Yaml::map(fields)
}

/// The `policyTypes` spelling of a direction.
fn direction(d: Direction) -> &'static str {
    match d {
        Direction::Ingress => "Ingress",
        Direction::Egress => "Egress",
    }
}

fn labels(labels: &Labels) -> Yaml {
    Yaml::Map(labels.iter().map(|(k, v)| (k.clone(), Yaml::str(v))).collect())
}

fn selector(s: &LabelSelector) -> Yaml {
    let mut fields = Vec::new();
    if !s.match_labels.is_empty() {
        fields.push(("matchLabels", labels(&s.match_labels)));
    }
    if !s.match_expressions.is_empty() {
        let expressions = s.match_expressions.iter().map(|r| {
            let operator = match r.operator {
                Operator::In => "In",
                Operator::NotIn => "NotIn",
                Operator::Exists => "Exists",
                Operator::DoesNotExist => "DoesNotExist",
            };
            let mut fields = vec![("key", Yaml::str(&r.key)), ("operator", Yaml::str(operator))];
            if !r.values.is_empty() {
                fields.push(("values", Yaml::Seq(r.values.iter().map(|v| Yaml::str(v)).collect())));
            }
            Yaml::map(fields)
        });
        fields.push(("matchExpressions", Yaml::Seq(expressions.collect())));
    }
    Yaml::map(fields)
}

fn rule(rule: &NetRule, peers_key: &'static str) -> Yaml {
    let mut fields = Vec::new();
    if !rule.peers.is_empty() {
        fields.push((peers_key, Yaml::Seq(rule.peers.iter().map(peer).collect())));
    }
    if !rule.ports.is_empty() {
        fields.push(("ports", Yaml::Seq(rule.ports.iter().map(port).collect())));
    }
    Yaml::map(fields)
}

fn peer(peer: &NetPeer) -> Yaml {
    match peer {
        NetPeer::Pods { namespace_selector, pod_selector, span: _ } => {
            let mut fields = Vec::new();
            if let Some(s) = namespace_selector {
                fields.push(("namespaceSelector", selector(s)));
            }
            if let Some(s) = pod_selector {
                fields.push(("podSelector", selector(s)));
            }
            Yaml::map(fields)
        }
        NetPeer::IpBlock { cidr, except, span: _ } => {
            let mut fields = vec![("cidr", Yaml::str(&cidr.to_string()))];
            if !except.is_empty() {
                let except = except.iter().map(|c| Yaml::str(&c.to_string())).collect();
                fields.push(("except", Yaml::Seq(except)));
            }
            Yaml::map(vec![("ipBlock", Yaml::map(fields))])
        }
    }
}

fn port(port: &NetPort) -> Yaml {
    let mut fields = vec![("protocol", Yaml::str(port.protocol.name()))];
    match &port.port {
        Some(PortRef::Number(n)) => fields.push(("port", Yaml::Int(i64::from(*n)))),
        Some(PortRef::Name(name)) => fields.push(("port", Yaml::str(name))),
        None => {}
    }
    if let Some(end) = port.end_port {
        fields.push(("endPort", Yaml::Int(i64::from(end))));
    }
    Yaml::map(fields)
}

/// The few YAML shapes policies need, written in block style.
enum Yaml {
    Str(String),
    Int(i64),
    Bool(bool),
    Seq(Vec<Yaml>),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    fn str(s: &str) -> Yaml {
        Yaml::Str(s.to_owned())
    }

    fn map(fields: Vec<(&str, Yaml)>) -> Yaml {
        Yaml::Map(fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())
    }

    /// A value that fits after `key: ` or `- ` on the same line.
    fn inline(&self) -> Option<String> {
        match self {
            Yaml::Str(s) => Some(quote(s)),
            Yaml::Int(n) => Some(n.to_string()),
            Yaml::Bool(b) => Some(b.to_string()),
            Yaml::Seq(items) if items.is_empty() => Some("[]".into()),
            Yaml::Map(entries) if entries.is_empty() => Some("{}".into()),
            Yaml::Seq(_) | Yaml::Map(_) => None,
        }
    }

    /// Writes a non-inline collection, each line indented by `indent` spaces.
    fn write_block(&self, out: &mut String, indent: usize) {
        let pad = " ".repeat(indent);
        match self {
            Yaml::Map(entries) => {
                for (key, value) in entries {
                    match value.inline() {
                        Some(v) => out.push_str(&format!("{pad}{}: {v}\n", key_text(key))),
                        None => {
                            out.push_str(&format!("{pad}{}:\n", key_text(key)));
                            value.write_block(out, indent + 2);
                        }
                    }
                }
            }
            Yaml::Seq(items) => {
                for item in items {
                    match item.inline() {
                        Some(v) => out.push_str(&format!("{pad}- {v}\n")),
                        None => {
                            // The item's first line goes after the dash: write it as
                            // if indented two more, then put `- ` in those two columns.
                            let mut block = String::new();
                            item.write_block(&mut block, indent + 2);
                            out.push_str(&pad);
                            out.push_str("- ");
                            out.push_str(&block[indent + 2..]);
                        }
                    }
                }
            }
            Yaml::Str(_) | Yaml::Int(_) | Yaml::Bool(_) => {
                out.push_str(&pad);
                out.push_str(&self.inline().unwrap_or_default());
                out.push('\n');
            }
        }
    }
}

/// A mapping key: plain when it is a simple word that YAML reads only as a string
/// (every field name is), quoted otherwise.
fn key_text(key: &str) -> String {
    let simple = key.starts_with(|c: char| c.is_ascii_alphabetic())
        && key.chars().all(|c| c.is_ascii_alphanumeric())
        && !["null", "true", "false", "yes", "no", "on", "off", "y", "n"]
            .contains(&key.to_ascii_lowercase().as_str());
    if simple { key.to_owned() } else { quote(key) }
}

/// A YAML double-quoted scalar. Everything outside printable ASCII is escaped, so the
/// text reads back exactly whatever the reader's idea of line breaks or printable
/// characters (YAML 1.2, section 5.7).
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            ' '..='~' => out.push(c),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) <= 0xffff => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_every_string_and_escapes_the_unprintable() {
        assert_eq!(quote("on"), "\"on\"");
        assert_eq!(quote("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quote("\u{7f}\n\u{e9}\u{1f600}"), "\"\\u007f\\n\\u00e9\\U0001f600\"");
    }

    #[test]
    fn quotes_keys_that_are_not_simple_words() {
        assert_eq!(key_text("matchLabels"), "matchLabels");
        assert_eq!(key_text("on"), "\"on\"");
        assert_eq!(key_text("kubernetes.io/name"), "\"kubernetes.io/name\"");
        assert_eq!(key_text("1a"), "\"1a\"");
    }

    #[test]
    fn writes_sequences_of_mappings_with_the_first_field_after_the_dash() {
        let yaml = Yaml::map(vec![(
            "ports",
            Yaml::Seq(vec![
                Yaml::map(vec![("protocol", Yaml::str("TCP")), ("port", Yaml::Int(80))]),
                Yaml::map(vec![]),
            ]),
        )]);
        let mut out = String::new();
        yaml.write_block(&mut out, 0);
        assert_eq!(out, "ports:\n  - protocol: \"TCP\"\n    port: 80\n  - {}\n");
    }
}
