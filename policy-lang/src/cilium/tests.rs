//! Front-end tests of the Cilium decoder: each diagnostic's code and exact position,
//! and the decoded model of valid rules.

use crate::Bundle;
use crate::ast::{Direction, Operator, Protocol};
use crate::ast_cilium::{CiliumPeer, CiliumPeerRule, CiliumPortSpec, Entity, IcmpFamily};
use crate::codes::{self, Code};
use crate::manifest::load_sources;
use crate::source::Sources;

fn load(text: &str) -> Bundle {
    let mut sources = Sources::default();
    sources.add("test.yaml", text);
    load_sources(&sources)
}

/// A CiliumNetworkPolicy in namespace `x` whose spec is `endpointSelector: {}` plus
/// `spec` (indented by two spaces already).
fn cnp(spec: &str) -> String {
    format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\n  namespace: x\n\
         spec:\n  endpointSelector: {{}}\n{spec}"
    )
}

/// 1-based line and column of the first occurrence of `needle`.
fn position(text: &str, needle: &str) -> (u32, u32) {
    let at = text.find(needle).unwrap_or_else(|| panic!("`{needle}` not in the text"));
    let before = &text[..at];
    let line = before.matches('\n').count() as u32 + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32 + 1;
    (line, col)
}

/// Asserts that the text gives exactly one diagnostic, of `code`, starting where
/// `needle` first occurs.
#[track_caller]
fn assert_one(text: &str, code: Code, needle: &str) {
    let bundle = load(text);
    let got: Vec<(&str, u32, u32)> = bundle
        .diagnostics
        .iter()
        .map(|d| (d.code.code, d.span.map_or(0, |s| s.line), d.span.map_or(0, |s| s.col)))
        .collect();
    let (line, col) = position(text, needle);
    assert_eq!(got, [(code.code, line, col)], "{:#?}", bundle.diagnostics);
}

fn only_rule(text: &str, direction: Direction, deny: bool) -> CiliumPeerRule {
    let bundle = load(text);
    assert!(bundle.diagnostics.is_empty(), "{:#?}", bundle.diagnostics);
    let rule = &bundle.cilium_policies[0].rules[0];
    let list = match (direction, deny) {
        (Direction::Ingress, false) => &rule.ingress,
        (Direction::Ingress, true) => &rule.ingress_deny,
        (Direction::Egress, false) => &rule.egress,
        (Direction::Egress, true) => &rule.egress_deny,
    };
    assert_eq!(list.len(), 1, "{list:#?}");
    list[0].clone()
}

#[test]
fn rejects_unknown_icmp_type_names() {
    let text = cnp("  ingress:\n    - icmps:\n        - fields:\n            - type: Ping\n");
    assert_one(&text, codes::INVALID_ICMP, "Ping");
}

#[test]
fn rejects_an_ipv6_type_name_in_the_ipv4_family() {
    let text = cnp(
        "  ingress:\n    - icmps:\n        - fields:\n            - type: NeighborSolicitation\n",
    );
    assert_one(&text, codes::INVALID_ICMP, "NeighborSolicitation");
    let help = load(&text).diagnostics[0].help.clone().unwrap();
    assert!(help.contains("family: IPv6"), "{help}");
}

#[test]
fn rejects_icmp_types_above_255_and_unknown_families() {
    let text = cnp("  ingress:\n    - icmps:\n        - fields:\n            - type: 256\n");
    assert_one(&text, codes::INVALID_ICMP, "256");
    let text = cnp(
        "  ingress:\n    - icmps:\n        - fields:\n            - family: ipv4\n              type: 8\n",
    );
    assert_one(&text, codes::INVALID_ICMP, "ipv4");
}

#[test]
fn rejects_unknown_entities() {
    let text = cnp("  egress:\n    - toEntities:\n        - internet\n");
    assert_one(&text, codes::INVALID_ENTITY, "internet");
    let text = cnp(
        "  egress:\n    - toEndpoints:\n        - matchLabels:\n            reserved:gateway: \"\"\n",
    );
    assert_one(&text, codes::INVALID_ENTITY, "reserved:gateway");
}

#[test]
fn rejects_more_than_40_ports_in_one_entry() {
    let ports: String = (1..=41).map(|p| format!("            - port: \"{p}\"\n")).collect();
    let text = cnp(&format!("  ingress:\n    - toPorts:\n        - ports:\n{ports}"));
    assert_one(&text, codes::TOO_MANY_PORTS, "ports:");
    let ports: String = (1..=40).map(|p| format!("            - port: \"{p}\"\n")).collect();
    assert!(
        load(&cnp(&format!("  ingress:\n    - toPorts:\n        - ports:\n{ports}")))
            .diagnostics
            .is_empty()
    );
}

#[test]
fn rejects_more_than_40_icmp_fields_in_one_entry() {
    let fields: String = (0..41).map(|t| format!("            - type: {t}\n")).collect();
    let text = cnp(&format!("  ingress:\n    - icmps:\n        - fields:\n{fields}"));
    assert_one(&text, codes::TOO_MANY_PORTS, "fields:");
}

#[test]
fn reports_l7_rules_at_the_rules_field_and_leaves_the_rule_out() {
    let text = cnp(
        "  ingress:\n    - toPorts:\n        - ports:\n            - port: \"80\"\n              protocol: TCP\n          rules:\n            http:\n              - method: GET\n    - toPorts:\n        - ports:\n            - port: \"81\"\n",
    );
    assert_one(&text, codes::NEEDS_PROXY, "rules:");
    let bundle = load(&text);
    let rule = &bundle.cilium_policies[0].rules[0];
    assert_eq!(rule.ingress.len(), 1, "only the L4 rule is kept");
    assert_eq!(rule.ingress[0].index, 1);
    assert!(rule.default_deny_ingress);
}

#[test]
fn empty_l7_rules_need_no_proxy() {
    let text = cnp(
        "  ingress:\n    - toPorts:\n        - ports:\n            - port: \"80\"\n          rules: {}\n",
    );
    assert!(load(&text).diagnostics.is_empty());
}

#[test]
fn reports_constructs_that_need_run_time_support() {
    let fqdn = cnp("  egress:\n    - toFQDNs:\n        - matchName: example.com\n");
    assert_one(&fqdn, codes::NEEDS_PROXY, "toFQDNs");
    let groups =
        cnp("  egress:\n    - toGroups:\n        - aws:\n            securityGroupsIds: [sg-1]\n");
    assert_one(&groups, codes::NEEDS_PROXY, "toGroups");
    let auth = cnp(
        "  ingress:\n    - fromEndpoints: [{}]\n      authentication:\n        mode: required\n",
    );
    assert_one(&auth, codes::NEEDS_PROXY, "authentication");
    let tls = cnp(
        "  egress:\n    - toPorts:\n        - ports:\n            - port: \"443\"\n          terminatingTLS:\n            secret:\n              name: s\n",
    );
    assert_one(&tls, codes::NEEDS_PROXY, "terminatingTLS");
    let disabled = cnp(
        "  ingress:\n    - fromEndpoints: [{}]\n      authentication:\n        mode: disabled\n",
    );
    assert!(load(&disabled).diagnostics.is_empty());
}

#[test]
fn reports_fields_that_need_cluster_state_we_do_not_read() {
    let services =
        cnp("  egress:\n    - toServices:\n        - k8sService:\n            serviceName: db\n");
    assert_one(&services, codes::UNSUPPORTED_FIELD, "toServices");
    let group = cnp("  egress:\n    - toCIDRSet:\n        - cidrGroupRef: office\n");
    assert_one(&group, codes::UNSUPPORTED_FIELD, "cidrGroupRef");
    let requires =
        cnp("  ingress:\n    - fromRequires:\n        - matchLabels:\n            env: prod\n");
    assert_one(&requires, codes::UNSUPPORTED_FIELD, "fromRequires");
    let nodes =
        cnp("  ingress:\n    - fromNodes:\n        - matchLabels:\n            role: edge\n");
    assert_one(&nodes, codes::UNSUPPORTED_FIELD, "fromNodes");
    let vrrp = cnp(
        "  ingress:\n    - toPorts:\n        - ports:\n            - port: \"0\"\n              protocol: VRRP\n",
    );
    assert_one(&vrrp, codes::UNSUPPORTED_FIELD, "VRRP");
    let cidr_label = cnp(
        "  ingress:\n    - fromEndpoints:\n        - matchLabels:\n            cidr:10.0.0.0/8: \"\"\n",
    );
    assert_one(&cidr_label, codes::UNSUPPORTED_FIELD, "cidr:10");
    let cluster = cnp(
        "  ingress:\n    - fromEndpoints:\n        - matchLabels:\n            io.cilium.k8s.policy.cluster: east\n",
    );
    assert_one(&cluster, codes::UNSUPPORTED_FIELD, "io.cilium.k8s.policy.cluster");
}

#[test]
fn reads_node_selectors_of_cluster_wide_policies_as_host_policies() {
    let text = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: hosts\n\
                spec:\n  nodeSelector:\n    matchLabels:\n      k8s:role: edge\n  ingress:\n    - fromEntities: [world]\n";
    let bundle = load(text);
    assert!(bundle.diagnostics.is_empty(), "{:?}", bundle.diagnostics);
    let rule = &bundle.cilium_policies[0].rules[0];
    assert!(rule.nodes);
    assert_eq!(rule.subject.match_labels.get("role").map(String::as_str), Some("edge"));
    assert!(rule.default_deny_ingress && !rule.default_deny_egress);
}

#[test]
fn rejects_node_selectors_in_namespaced_policies() {
    let text = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\n  namespace: x\n\
                spec:\n  nodeSelector: {}\n  ingress:\n    - fromEntities: [world]\n";
    assert_one(text, codes::NAMESPACED_NODE_SELECTOR, "nodeSelector");
    let bundle = load(text);
    assert!(bundle.cilium_policies[0].rules.is_empty());
    let diag = &bundle.diagnostics[0];
    assert!(diag.help.as_deref().is_some_and(|h| h.contains("CiliumClusterwideNetworkPolicy")));
}

#[test]
fn rejects_reserved_labels_in_node_selectors() {
    let text = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: h\nspec:\n  \
                nodeSelector:\n    matchLabels:\n      reserved:host: \"\"\n  ingress:\n    - {}\n";
    assert_one(text, codes::UNSUPPORTED_FIELD, "reserved:host");
}

#[test]
fn reports_reserved_labels_in_the_endpoint_selector() {
    let text = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: h\nspec:\n  \
                endpointSelector:\n    matchLabels:\n      reserved:host: \"\"\n  ingress:\n    - {}\n";
    assert_one(text, codes::UNSUPPORTED_FIELD, "reserved:host");
}

#[test]
fn rejects_rules_that_mix_peer_kinds() {
    let text = cnp("  ingress:\n    - fromEndpoints: [{}]\n      fromCIDR: [10.0.0.0/8]\n");
    assert_one(&text, codes::EXCLUSIVE_FIELDS, "fromCIDR");
    let text =
        cnp("  egress:\n    - toEntities: [world]\n      toCIDRSet:\n        - cidr: 10.0.0.0/8\n");
    assert_one(&text, codes::EXCLUSIVE_FIELDS, "toCIDRSet");
}

#[test]
fn rejects_to_ports_with_icmps_in_one_rule() {
    let text = cnp(
        "  ingress:\n    - toPorts:\n        - ports:\n            - port: \"80\"\n      icmps:\n        - fields:\n            - type: 8\n",
    );
    assert_one(&text, codes::EXCLUSIVE_FIELDS, "icmps");
}

#[test]
fn rejects_both_endpoint_and_node_selectors() {
    let text = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: both\nspec:\n  \
                endpointSelector: {}\n  nodeSelector: {}\n";
    assert_one(text, codes::EXCLUSIVE_FIELDS, "nodeSelector");
}

#[test]
fn requires_a_spec_and_an_endpoint_selector() {
    let text = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\n  namespace: x\n";
    assert_one(text, codes::MISSING_FIELD, "apiVersion");
    let text = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\n  namespace: x\n\
                spec:\n  ingress:\n    - {}\n";
    assert_one(text, codes::MISSING_FIELD, "ingress");
}

#[test]
fn requires_a_port_and_an_icmp_type() {
    let text = cnp("  ingress:\n    - toPorts:\n        - ports:\n            - protocol: TCP\n");
    assert_one(&text, codes::MISSING_FIELD, "protocol: TCP");
    let text = cnp("  ingress:\n    - icmps:\n        - fields:\n            - family: IPv6\n");
    assert_one(&text, codes::MISSING_FIELD, "family: IPv6");
}

#[test]
fn rejects_icmp_and_lowercase_protocols_in_to_ports() {
    let text = cnp(
        "  ingress:\n    - toPorts:\n        - ports:\n            - port: \"0\"\n              protocol: ICMP\n",
    );
    assert_one(&text, codes::INVALID_PROTOCOL, "ICMP");
    let text = cnp(
        "  ingress:\n    - toPorts:\n        - ports:\n            - port: \"53\"\n              protocol: udp\n",
    );
    assert_one(&text, codes::INVALID_PROTOCOL, "udp");
}

#[test]
fn rejects_ports_out_of_range_and_bad_ranges() {
    let text = cnp("  ingress:\n    - toPorts:\n        - ports:\n            - port: \"70000\"\n");
    assert_one(&text, codes::INVALID_PORT, "\"70000\"");
    let text = cnp(
        "  ingress:\n    - toPorts:\n        - ports:\n            - port: \"8080\"\n              endPort: 80\n",
    );
    assert_one(&text, codes::INVALID_END_PORT, "80\n");
    let text = cnp(
        "  ingress:\n    - toPorts:\n        - ports:\n            - port: http\n              endPort: 90\n",
    );
    assert_one(&text, codes::INVALID_END_PORT, "90");
    let text = cnp(
        "  ingress:\n    - toPorts:\n        - ports:\n            - port: \"0\"\n              endPort: 90\n",
    );
    assert_one(&text, codes::INVALID_END_PORT, "90");
}

#[test]
fn rejects_unknown_label_sources() {
    let text = cnp(
        "  ingress:\n    - fromEndpoints:\n        - matchLabels:\n            container:app: web\n",
    );
    assert_one(&text, codes::INVALID_LABEL_KEY, "container:app");
}

#[test]
fn rejects_except_outside_the_cidr_set() {
    let text = cnp(
        "  egress:\n    - toCIDRSet:\n        - cidr: 10.0.0.0/8\n          except:\n            - 192.168.0.0/16\n",
    );
    assert_one(&text, codes::EXCEPT_OUTSIDE_CIDR, "192.168.0.0/16");
}

#[test]
fn rejects_other_cilium_api_versions() {
    let text = "apiVersion: cilium.io/v1alpha1\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\n";
    assert_one(text, codes::UNSUPPORTED_API, "cilium.io/v1alpha1");
}

#[test]
fn reports_duplicate_cluster_wide_policies() {
    let one = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: same\n\
               spec:\n  endpointSelector: {}\n";
    let text = format!("{one}---\n{one}");
    let bundle = load(&text);
    let codes: Vec<&str> = bundle.diagnostics.iter().map(|d| d.code.code).collect();
    assert_eq!(codes, ["PL0019"]);
    assert_eq!(bundle.diagnostics[0].span.map(|s| s.line), Some(11), "the second name");
}

#[test]
fn enable_default_deny_must_be_boolean() {
    let text = cnp("  enableDefaultDeny:\n    ingress: \"no\"\n  ingress:\n    - {}\n");
    assert_one(&text, codes::WRONG_TYPE, "\"no\"");
}

#[test]
fn default_deny_follows_the_rules_present_unless_set() {
    let bundle = load(&cnp("  ingressDeny:\n    - fromEntities: [world]\n  egress: []\n"));
    let rule = &bundle.cilium_policies[0].rules[0];
    assert!(rule.default_deny_ingress, "deny rules alone turn default deny on");
    assert!(!rule.default_deny_egress, "an empty list has no rules");
    let bundle = load(&cnp(
        "  enableDefaultDeny:\n    ingress: false\n  ingress:\n    - fromEntities: [world]\n",
    ));
    assert!(!bundle.cilium_policies[0].rules[0].default_deny_ingress);
}

#[test]
fn decodes_peers_ports_and_icmps() {
    let rule = only_rule(
        &cnp(
            "  ingress:\n    - fromEndpoints:\n        - matchLabels:\n            k8s:app: web\n            any:tier: front\n            app: api\n      toPorts:\n        - ports:\n            - port: 80\n            - port: \"8000\"\n              endPort: 8010\n              protocol: UDP\n            - port: HTTP-Alt\n            - port: \"0\"\n              protocol: ANY\n",
        ),
        Direction::Ingress,
        false,
    );
    let Some(peers) = &rule.peers else { panic!("peers") };
    let CiliumPeer::Endpoints(selector) = &peers[0] else { panic!("{peers:?}") };
    assert_eq!(selector.match_labels.get("app").map(String::as_str), Some("web"));
    assert_eq!(selector.match_labels.get("tier").map(String::as_str), Some("front"));
    // `k8s:app` and `app` are the same key once stripped: both must hold.
    assert_eq!(selector.match_expressions.len(), 1);
    assert_eq!(selector.match_expressions[0].operator, Operator::In);
    assert_eq!(selector.match_expressions[0].values, ["api"]);

    let ports = &rule.l4.as_ref().unwrap().ports;
    assert_eq!(ports[0].port, CiliumPortSpec::Range(80, 80));
    assert_eq!(ports[0].protocol, None);
    assert_eq!(
        (ports[1].port.clone(), ports[1].protocol),
        (CiliumPortSpec::Range(8000, 8010), Some(Protocol::Udp))
    );
    assert_eq!(ports[2].port, CiliumPortSpec::Named("http-alt".into()));
    assert_eq!((ports[3].port.clone(), ports[3].protocol), (CiliumPortSpec::All, None));

    let rule = only_rule(
        &cnp(
            "  egressDeny:\n    - icmps:\n        - fields:\n            - type: \"8\"\n            - family: IPv6\n              type: EchoReply\n",
        ),
        Direction::Egress,
        true,
    );
    assert!(rule.peers.is_none(), "no L3 peer: every peer");
    let icmps = &rule.l4.as_ref().unwrap().icmps;
    assert_eq!((icmps[0].family, icmps[0].icmp_type), (IcmpFamily::V4, 8));
    assert_eq!((icmps[1].family, icmps[1].icmp_type), (IcmpFamily::V6, 129));
}

#[test]
fn decodes_entities_cidrs_and_empty_peer_lists() {
    let rule = only_rule(
        &cnp("  egress:\n    - toEntities: [world-ipv6, none]\n"),
        Direction::Egress,
        false,
    );
    let peers = rule.peers.unwrap();
    assert!(matches!(&peers[0], CiliumPeer::Entity(e) if e.value == Entity::WorldIpv6));
    assert!(matches!(&peers[1], CiliumPeer::Entity(e) if e.value == Entity::None));

    let rule = only_rule(
        &cnp("  egress:\n    - toCIDR: [192.0.2.7, \"2001:db8::/32\"]\n"),
        Direction::Egress,
        false,
    );
    let peers = rule.peers.unwrap();
    assert!(matches!(&peers[0], CiliumPeer::Cidr { cidr, .. } if cidr.prefix == 32));
    assert!(
        matches!(&peers[1], CiliumPeer::Cidr { cidr, .. } if cidr.prefix == 32 && cidr.addr.is_ipv6())
    );

    // An explicitly empty peer list selects nothing, unlike a missing one.
    let rule = only_rule(
        &cnp(
            "  ingress:\n    - fromEndpoints: []\n      toPorts:\n        - ports:\n            - port: \"80\"\n",
        ),
        Direction::Ingress,
        false,
    );
    assert_eq!(rule.peers, Some(Vec::new()));

    let rule = only_rule(
        &cnp(
            "  ingress:\n    - fromEndpoints:\n        - matchLabels:\n            reserved:host: \"\"\n",
        ),
        Direction::Ingress,
        false,
    );
    assert!(matches!(&rule.peers.unwrap()[0], CiliumPeer::Entity(e) if e.value == Entity::Host));
}

#[test]
fn decodes_specs_and_cluster_wide_policies() {
    let text = "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: c\nspecs:\n  \
                - endpointSelector: {}\n    ingress:\n      - {}\n  - endpointSelector: {}\n    egress:\n      - {}\n";
    let bundle = load(text);
    assert!(bundle.diagnostics.is_empty(), "{:#?}", bundle.diagnostics);
    let policy = &bundle.cilium_policies[0];
    assert!(policy.clusterwide);
    assert_eq!(policy.meta.namespace, "");
    assert_eq!(policy.rules.iter().map(|r| r.index).collect::<Vec<_>>(), [Some(0), Some(1)]);
    assert!(policy.rules[0].default_deny_ingress && !policy.rules[0].default_deny_egress);
    assert!(!policy.rules[1].default_deny_ingress && policy.rules[1].default_deny_egress);
}
