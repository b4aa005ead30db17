//! CiliumNetworkPolicy and CiliumClusterwideNetworkPolicy, compiled against the cluster
//! of `fixtures/cilium/cluster.yaml` and judged by the table simulator.

mod support;

use std::net::IpAddr;
use std::path::PathBuf;

use compiler::artifact::Artifact;
use compiler::reference::{Address, Flow, Reference, Verdict};
use compiler::simulate::{Decision, connect};
use policy_lang::ast::Direction;
use policy_lang::{Bundle, Sources};

const SERVER: &str = "10.0.1.1";
const CLIENT: &str = "10.0.1.2";
const OTHER: &str = "10.0.1.3";
const Y_CLIENT: &str = "10.0.2.2";
const DB: &str = "10.0.2.3";
const WORLD: &str = "203.0.113.9";

const ICMP: u8 = 1;
const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMPV6: u8 = 58;
const SCTP: u8 = 132;
const ECHO_REQUEST: u16 = 8;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/cilium").join(name)
}

/// The cluster plus the named policy files, read and parsed.
fn load(files: &[&str]) -> (Sources, Bundle) {
    let mut sources = Sources::default();
    for name in std::iter::once(&"cluster.yaml").chain(files) {
        let path = fixture(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        sources.add(format!("fixtures/cilium/{name}"), text);
    }
    let bundle = policy_lang::load_sources(&sources);
    (sources, bundle)
}

/// Compiles policy files that must parse without a diagnostic.
fn compile(files: &[&str]) -> Artifact {
    let (sources, bundle) = load(files);
    assert!(bundle.diagnostics.is_empty(), "{:?}", bundle.diagnostics);
    compile_bundle(&sources, &bundle)
}

fn compile_bundle(sources: &Sources, bundle: &Bundle) -> Artifact {
    let compilation = compiler::compile(sources, bundle);
    assert!(compilation.diagnostics.is_empty(), "{:?}", compilation.diagnostics);
    compilation.artifact
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Whether a new connection passes the source's egress and the destination's ingress.
fn allowed(a: &Artifact, src: &str, dst: &str, proto: u8, port: u16) -> bool {
    let (egress, ingress) = connect(a, ip(src), ip(dst), proto, Some(port));
    egress.passes() && ingress.passes()
}

fn ping(a: &Artifact, src: &str, dst: &str) -> bool {
    allowed(a, src, dst, ICMP, ECHO_REQUEST)
}

#[test]
fn deny_truth_table_holds_while_the_l7_rule_is_reported() {
    // The allows alone: the L7 rule is reported as needing a proxy and left out; the
    // L3 and L4 allows decide every flow of the table.
    let (sources, bundle) = load(&["deny-table/allows.yaml"]);
    let codes: Vec<&str> = bundle.diagnostics.iter().map(|d| d.code.code).collect();
    assert_eq!(codes, ["PL0102"], "{:?}", bundle.diagnostics);
    let span = bundle.diagnostics[0].span.expect("points at the field");
    assert_eq!((span.line, span.col), (39, 11), "at `rules:`");
    let a = compile_bundle(&sources, &bundle);
    assert!(allowed(&a, CLIENT, SERVER, TCP, 80));
    assert!(allowed(&a, CLIENT, SERVER, TCP, 81));
    assert!(ping(&a, CLIENT, SERVER));
    assert!(!allowed(&a, OTHER, SERVER, TCP, 80), "the server is isolated");

    // Column 2: deny TCP 80 from the client.
    let (sources, bundle) = load(&["deny-table/allows.yaml", "deny-table/deny-port-80.yaml"]);
    let a = compile_bundle(&sources, &bundle);
    assert!(allowed(&a, CLIENT, SERVER, TCP, 81));
    assert!(!allowed(&a, CLIENT, SERVER, TCP, 80));
    assert!(ping(&a, CLIENT, SERVER));
    let (_, ingress) = connect(&a, ip(CLIENT), ip(SERVER), TCP, Some(80));
    let Decision::Denied(cookie) = ingress else { panic!("{ingress:?}") };
    let rule = a.rule(cookie).unwrap();
    assert_eq!(
        (rule.policy.as_str(), rule.rule.as_str()),
        ("CiliumNetworkPolicy x/server-deny-80", "ingressDeny[0]")
    );

    // Column 3: deny the client at L3 instead.
    let (sources, bundle) = load(&["deny-table/allows.yaml", "deny-table/deny-client.yaml"]);
    let a = compile_bundle(&sources, &bundle);
    assert!(!allowed(&a, CLIENT, SERVER, TCP, 80));
    assert!(!allowed(&a, CLIENT, SERVER, TCP, 81));
    assert!(!ping(&a, CLIENT, SERVER));

    // Column 4: both denies.
    let files =
        ["deny-table/allows.yaml", "deny-table/deny-port-80.yaml", "deny-table/deny-client.yaml"];
    let (sources, bundle) = load(&files);
    let a = compile_bundle(&sources, &bundle);
    assert!(!allowed(&a, CLIENT, SERVER, TCP, 81));
    assert!(!ping(&a, CLIENT, SERVER));
}

/// Cilium's deny truth table as an expected matrix: one row per set of policy files
/// (under deny-table/, with the cluster), one column per probe from the client to the
/// server; `.` passes, `X` is dropped. The L7 rule of allows.yaml is reported and left
/// out, and the L3/L4 verdicts of the documentation still hold.
const DENY_TABLE: &str = "
# files                                    TCP/80 TCP/81 ICMP/8
allows                                       .      .      .
allows deny-port-80                          X      .      .
allows deny-client                           X      X      X
allows deny-port-80 deny-client              X      X      X
";

#[test]
fn deny_truth_table_holds_in_the_reference_and_the_tables_with_the_deciding_rules() {
    let probes = [(TCP, 80), (TCP, 81), (ICMP, ECHO_REQUEST)];
    let mut failures = Vec::new();
    for line in DENY_TABLE.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#')) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let (names, cells) = words.split_at(words.len() - probes.len());
        let files: Vec<String> = names.iter().map(|n| format!("deny-table/{n}.yaml")).collect();
        let files: Vec<&str> = files.iter().map(String::as_str).collect();
        let (sources, bundle) = load(&files);
        let compilation = compiler::compile(&sources, &bundle);
        let reference = Reference::new(&bundle, &compilation.analysis);
        support::same_endpoints(&reference, &compilation).unwrap();
        for ((proto, port), cell) in probes.iter().zip(cells) {
            let flow = Flow {
                src: Address::Ip(ip(CLIENT)),
                dst: Address::Ip(ip(SERVER)),
                proto: *proto,
                port: Some(*port),
            };
            let expected = *cell == ".";
            let by_reference = reference.evaluate(&flow).passes();
            let (egress, ingress) = support::simulate(&compilation.artifact, &flow);
            let by_tables = egress.passes() && ingress.passes();
            if (by_reference, by_tables) != (expected, expected) {
                failures.push(format!(
                    "{line}: proto {proto} port {port}: expected {cell}, reference {by_reference}, tables {by_tables}"
                ));
            }
            for (direction, decision) in
                [(Direction::Egress, egress), (Direction::Ingress, ingress)]
            {
                if let Err(e) = support::same_decision(
                    &compilation.artifact,
                    &reference,
                    &flow,
                    direction,
                    decision,
                ) {
                    failures.push(format!("{line}: proto {proto} port {port}: {e}"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // The deciding rules, as the reference names them: the L3 allow is the first allow
    // in policy order; a deny names its own rule.
    let verdict = |files: &[&str], proto: u8, port: u16| {
        let (sources, bundle) = load(files);
        let compilation = compiler::compile(&sources, &bundle);
        let reference = Reference::new(&bundle, &compilation.analysis);
        let flow = Flow {
            src: Address::Ip(ip(CLIENT)),
            dst: Address::Ip(ip(SERVER)),
            proto,
            port: Some(port),
        };
        reference.evaluate(&flow).ingress.unwrap()
    };
    let named = |policy: &str, rule: &str| (policy.to_string(), rule.to_string());
    let of = |v: Verdict| match v {
        Verdict::Allowed { policy, rule } | Verdict::Denied { policy, rule } => (policy, rule),
        other => panic!("{other:?}"),
    };
    let allows = "deny-table/allows.yaml";
    assert_eq!(
        of(verdict(&[allows, "deny-table/deny-port-80.yaml"], TCP, 81)),
        named("CiliumNetworkPolicy x/server-allows", "ingress[0]")
    );
    assert!(matches!(
        verdict(&[allows, "deny-table/deny-port-80.yaml"], TCP, 80),
        Verdict::Denied { ref policy, .. } if policy == "CiliumNetworkPolicy x/server-deny-80"
    ));
    assert_eq!(
        of(verdict(&[allows, "deny-table/deny-client.yaml"], ICMP, ECHO_REQUEST)),
        named("CiliumNetworkPolicy x/server-deny-client", "ingressDeny[0]")
    );
}

#[test]
fn l4_only_rules_apply_to_every_peer() {
    let a = compile(&["l4-only.yaml"]);
    for src in [CLIENT, Y_CLIENT, WORLD] {
        assert!(allowed(&a, src, SERVER, TCP, 8080), "{src}");
        assert!(!allowed(&a, src, SERVER, TCP, 8081), "{src}");
    }
    // Egress port 443 without a protocol: TCP, UDP and SCTP, to pods and world.
    for proto in [TCP, UDP, SCTP] {
        assert!(allowed(&a, SERVER, WORLD, proto, 443));
        assert!(allowed(&a, SERVER, DB, proto, 443));
    }
    assert!(!allowed(&a, SERVER, WORLD, TCP, 80));
    assert!(!ping(&a, SERVER, WORLD), "an L4 rule does not open ICMP");
}

#[test]
fn world_and_cluster_entities_split_pods_from_outside() {
    let a = compile(&["entities.yaml"]);
    assert!(allowed(&a, CLIENT, WORLD, TCP, 443));
    assert!(allowed(&a, CLIENT, "8.8.8.8", UDP, 53));
    assert!(!allowed(&a, CLIENT, DB, TCP, 443), "a pod is not world");
    assert!(allowed(&a, OTHER, DB, TCP, 5432));
    assert!(allowed(&a, OTHER, SERVER, TCP, 80));
    assert!(!allowed(&a, OTHER, WORLD, TCP, 443), "world is not cluster");
    // world-ipv4: IPv4 addresses outside the cluster only.
    assert!(allowed(&a, DB, WORLD, TCP, 443));
    assert!(!allowed(&a, DB, "2001:db8::1", TCP, 443));
    assert!(!allowed(&a, DB, SERVER, TCP, 80));
}

#[test]
fn a_reserved_label_selects_its_entity() {
    let a = compile(&["reserved.yaml"]);
    assert!(allowed(&a, CLIENT, WORLD, TCP, 443));
    assert!(!allowed(&a, CLIENT, SERVER, TCP, 80));
    assert!(allowed(&a, OTHER, SERVER, TCP, 80), "`k8s:app` selected only the client");
}

#[test]
fn cidr_sets_honour_except_and_never_match_pods() {
    let a = compile(&["cidr.yaml"]);
    assert!(allowed(&a, CLIENT, "192.0.2.5", TCP, 22));
    assert!(allowed(&a, CLIENT, "192.0.2.5", UDP, 53));
    assert!(!allowed(&a, CLIENT, "192.0.2.200", TCP, 22), "inside the except");
    assert!(allowed(&a, CLIENT, "198.51.100.7", TCP, 443), "a bare address is a /32");
    assert!(!allowed(&a, CLIENT, "198.51.100.7", TCP, 80));
    assert!(!allowed(&a, CLIENT, "198.51.100.8", TCP, 443));
    assert!(allowed(&a, CLIENT, "10.9.9.9", TCP, 443));
    assert!(!allowed(&a, CLIENT, SERVER, TCP, 443), "10.0.0.0/8 does not match the pods in it");
}

#[test]
fn icmps_allow_and_deny_echo_by_type() {
    let a = compile(&["icmp.yaml"]);
    assert!(ping(&a, CLIENT, SERVER));
    assert!(!allowed(&a, CLIENT, SERVER, ICMP, 13), "a timestamp request is another type");
    assert!(!allowed(&a, CLIENT, SERVER, TCP, 80));
    assert!(allowed(&a, CLIENT, SERVER, ICMPV6, 128), "IPv6 EchoRequest is type 128");
    assert!(!allowed(&a, CLIENT, SERVER, ICMPV6, 129));
    // The other pod: everything is allowed but the denied echo request.
    assert!(!ping(&a, OTHER, SERVER));
    assert!(allowed(&a, OTHER, SERVER, ICMP, 13));
    assert!(allowed(&a, OTHER, SERVER, TCP, 80));
}

#[test]
fn protocol_any_means_tcp_udp_and_sctp() {
    let a = compile(&["any-protocol.yaml"]);
    for proto in [TCP, UDP, SCTP] {
        assert!(allowed(&a, CLIENT, SERVER, proto, 53), "proto {proto}");
        assert!(!allowed(&a, CLIENT, SERVER, proto, 54), "proto {proto}");
        assert!(allowed(&a, CLIENT, DB, proto, 1234), "port 0 is every port; proto {proto}");
    }
    assert!(!ping(&a, CLIENT, SERVER));
    assert!(!ping(&a, CLIENT, DB), "port 0 with ANY still excludes ICMP");
}

#[test]
fn empty_endpoint_selectors_stop_at_the_namespace_or_at_pods() {
    let a = compile(&["wildcard-peers.yaml"]);
    // CiliumClusterwideNetworkPolicy: every pod, from any namespace; not world.
    assert!(allowed(&a, CLIENT, DB, TCP, 5432));
    assert!(allowed(&a, Y_CLIENT, DB, TCP, 5432));
    assert!(!allowed(&a, WORLD, DB, TCP, 5432));
    // CiliumNetworkPolicy: the pods of its namespace only.
    assert!(allowed(&a, CLIENT, SERVER, TCP, 80));
    assert!(allowed(&a, OTHER, SERVER, UDP, 53));
    assert!(!allowed(&a, Y_CLIENT, SERVER, TCP, 80));
    assert!(!allowed(&a, WORLD, SERVER, TCP, 80));
}

#[test]
fn default_deny_follows_enable_default_deny_and_deny_rules() {
    let a = compile(&["default-deny.yaml"]);
    // enableDefaultDeny.ingress false: the server stays open, but its deny holds.
    assert!(allowed(&a, WORLD, SERVER, TCP, 9999));
    assert!(allowed(&a, OTHER, SERVER, TCP, 80));
    assert!(!allowed(&a, OTHER, SERVER, TCP, 22));
    assert!(allowed(&a, CLIENT, SERVER, TCP, 22));
    // Not isolated, the allow of TCP 80 decides nothing: what passes is named after the
    // open direction, not after an allow rule, and the allow costs no entry.
    let (_, ingress) = connect(&a, ip(CLIENT), ip(SERVER), TCP, Some(80));
    let Decision::Allowed(cookie) = ingress else { panic!("{ingress:?}") };
    assert_eq!(a.rule(cookie).unwrap().policy, "built-in");
    assert!(a.policy.iter().all(|(_, v)| a.rule(v.rule).unwrap().rule != "ingress[0]"));
    // Only deny rules: the db is isolated, so nothing is allowed.
    assert!(!allowed(&a, CLIENT, DB, TCP, 22));
    assert!(!allowed(&a, CLIENT, DB, TCP, 5432));
    // `ingress: [{}]` isolates and allows nothing; `egress: []` does not isolate.
    assert!(!allowed(&a, CLIENT, Y_CLIENT, TCP, 80));
    assert!(allowed(&a, Y_CLIENT, SERVER, TCP, 80));
    assert!(allowed(&a, Y_CLIENT, WORLD, TCP, 443));
}

#[test]
fn specs_rules_named_ports_and_cross_namespace_peers() {
    let a = compile(&["specs.yaml"]);
    assert!(allowed(&a, CLIENT, SERVER, TCP, 80), "`http` is the server's port 80");
    assert!(!allowed(&a, CLIENT, SERVER, TCP, 81));
    assert!(!allowed(&a, CLIENT, SERVER, UDP, 80));
    assert!(allowed(&a, OTHER, Y_CLIENT, TCP, 80), "the peer names its namespace");
    assert!(!allowed(&a, OTHER, CLIENT, TCP, 80));
    assert!(!allowed(&a, OTHER, DB, TCP, 80));
    let (_, ingress) = connect(&a, ip(CLIENT), ip(SERVER), TCP, Some(80));
    let Decision::Allowed(cookie) = ingress else { panic!("{ingress:?}") };
    assert_eq!(a.rule(cookie).unwrap().policy, "CiliumNetworkPolicy x/several specs[0]");
}

#[test]
fn cilium_and_kubernetes_policies_compile_together() {
    // A NetworkPolicy allowing everything to the server does not lift a Cilium deny.
    let (mut sources, _) = load(&["deny-table/deny-client.yaml"]);
    sources.add(
        "allow-all.yaml",
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: all\n  namespace: x\n\
         spec:\n  podSelector: {}\n  ingress:\n    - {}\n",
    );
    let bundle = policy_lang::load_sources(&sources);
    assert!(bundle.diagnostics.is_empty(), "{:?}", bundle.diagnostics);
    let a = compile_bundle(&sources, &bundle);
    assert!(!allowed(&a, CLIENT, SERVER, TCP, 80));
    assert!(allowed(&a, OTHER, SERVER, TCP, 80));
}

/// The cluster plus one policy given as text.
fn compile_text(policy: &str) -> Artifact {
    let (mut sources, _) = load(&[]);
    sources.add("policy.yaml", policy);
    let bundle = policy_lang::load_sources(&sources);
    assert!(bundle.diagnostics.is_empty(), "{:?}", bundle.diagnostics);
    compile_bundle(&sources, &bundle)
}

#[test]
fn namespace_labels_reach_other_namespaces_only_in_cluster_wide_policies() {
    // Cilium documents namespace labels in peer selectors as meaningful for
    // cluster-wide policies only; a CiliumNetworkPolicy still restricts the peer to its
    // own namespace, where no pod has namespace `y`'s labels.
    let peer = "  ingress:\n    - fromEndpoints:\n        - matchLabels:\n            \
                io.cilium.k8s.namespace.labels.team: blue\n";
    let cnp = format!(
        "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\n  namespace: x\n\
         spec:\n  endpointSelector:\n    matchLabels:\n      app: server\n{peer}"
    );
    let a = compile_text(&cnp);
    assert!(!allowed(&a, Y_CLIENT, SERVER, TCP, 80));
    let ccnp = format!(
        "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: p\n\
         spec:\n  endpointSelector:\n    matchLabels:\n      app: server\n{peer}"
    );
    let a = compile_text(&ccnp);
    assert!(allowed(&a, Y_CLIENT, SERVER, TCP, 80));
    assert!(!allowed(&a, CLIENT, SERVER, TCP, 80));
}

#[test]
fn peers_that_select_nothing_allow_nothing() {
    let head = "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: p\n  namespace: x\n\
                spec:\n  endpointSelector:\n    matchLabels:\n      app: server\n  ingress:\n";
    // An explicitly empty peer list is no wildcard, even with ports.
    let a = compile_text(&format!(
        "{head}    - fromEndpoints: []\n      toPorts:\n        - ports:\n            - port: \"80\"\n"
    ));
    assert!(!allowed(&a, CLIENT, SERVER, TCP, 80));
    let a = compile_text(&format!("{head}    - fromEntities: [none]\n"));
    assert!(!allowed(&a, CLIENT, SERVER, TCP, 80));
    assert!(!allowed(&a, WORLD, SERVER, TCP, 80));
    // A toPorts entry without ports matches nothing either.
    let a = compile_text(&format!("{head}    - toPorts:\n        - {{}}\n"));
    assert!(!allowed(&a, CLIENT, SERVER, TCP, 80));
}

#[test]
fn peers_that_cover_every_identity_compile_to_the_wildcard() {
    let text = "apiVersion: cilium.io/v2
kind: CiliumNetworkPolicy
metadata:
  name: everyone
  namespace: x
spec:
  endpointSelector:
    matchLabels:
      app: server
  ingress:
    - fromEntities: [cluster, world]
      toPorts:
        - ports:
            - port: \"80\"
";
    let (mut sources, _) = load(&["cluster.yaml"]);
    sources.add("everyone.yaml", text);
    let bundle = policy_lang::load_sources(&sources);
    let a = compile_bundle(&sources, &bundle);
    // One wildcard entry for TCP/80 rather than one per identity.
    let port_80: Vec<_> = a
        .policy
        .iter()
        .filter(|(k, _)| k.port_bits == 16 && k.port == 80 && k.proto == 6)
        .collect();
    assert_eq!(port_80.len(), 1, "{port_80:?}");
    assert_eq!(port_80[0].0.identity, 0);
}

const EDGE: &str = "10.0.9.1";
const CORE: &str = "10.0.9.2";
const PARTNER: &str = "198.51.100.7";
const BLOCKED: &str = "198.51.100.66";

#[test]
fn a_host_policy_compiles_to_the_host_endpoint_of_each_node_it_selects() {
    let a = compile(&["host-firewall.yaml"]);
    let hosts: Vec<_> = a.endpoints.iter().filter(|e| e.is_host()).collect();
    assert_eq!(hosts.len(), 1, "only edge-1 is selected: {hosts:?}");
    let edge = hosts[0];
    assert_eq!(edge.name, "node/edge-1");
    assert_eq!(edge.identity, 1, "the reserved host identity");
    assert_eq!(edge.addresses, [ip(EDGE), ip("fd00::9:1")]);
    assert!(edge.ingress_table != 0 && edge.egress_table != 0);
    assert!(a.endpoint("node/core-1").is_none());

    // Ingress: the allow list, with the deny beating the CIDR allow.
    assert!(allowed(&a, PARTNER, EDGE, TCP, 8443));
    assert!(allowed(&a, PARTNER, EDGE, UDP, 53));
    assert!(!allowed(&a, PARTNER, EDGE, TCP, 22), "default deny once selected");
    assert!(!allowed(&a, PARTNER, EDGE, UDP, 8443));
    assert!(!allowed(&a, WORLD, EDGE, TCP, 8443));
    let (_, ingress) = connect(&a, ip(BLOCKED), ip(EDGE), TCP, Some(8443));
    let Decision::Denied(cookie) = ingress else { panic!("{ingress:?}") };
    let rule = a.rule(cookie).unwrap();
    assert_eq!(
        (rule.policy.as_str(), rule.rule.as_str()),
        ("CiliumClusterwideNetworkPolicy edge-hosts", "ingressDeny[0]")
    );
    // Client pods of both namespaces reach the kubelet port; the server pod does not.
    assert!(allowed(&a, CLIENT, EDGE, TCP, 10250));
    assert!(allowed(&a, Y_CLIENT, EDGE, TCP, 10250));
    assert!(!allowed(&a, SERVER, EDGE, TCP, 10250));
    // Other nodes are remote nodes: they may ping, nothing else.
    assert!(ping(&a, CORE, EDGE));
    assert!(!allowed(&a, CORE, EDGE, TCP, 10250));

    // Egress: not isolated (enableDefaultDeny), so only the deny applies.
    assert!(allowed(&a, EDGE, WORLD, TCP, 443));
    assert!(!allowed(&a, EDGE, "169.254.169.254", TCP, 80));
}

#[test]
fn host_policies_select_nodes_only_and_pod_policies_pods_only() {
    // edge-1 carries `app: server`, as the server pod does: the server's policies (in
    // deny-table/allows.yaml) do not apply to it, and the host policy not to the pod.
    let (sources, bundle) = load(&["deny-table/allows.yaml", "host-firewall.yaml"]);
    let with_host = compile_bundle(&sources, &bundle);
    let (sources, bundle) = load(&["deny-table/allows.yaml"]);
    let without = compile_bundle(&sources, &bundle);
    for pod in &without.endpoints {
        let same = with_host.endpoint(&pod.name).unwrap();
        assert_eq!((same.ingress_table, same.egress_table), (pod.ingress_table, pod.egress_table));
    }
    let edge = with_host.endpoint("node/edge-1").unwrap();
    let server = with_host.endpoint("x/server").unwrap();
    assert_ne!(edge.ingress_table, server.ingress_table);
    // The server pod's policy allows the client on TCP 80; the edge node does not.
    assert!(allowed(&with_host, CLIENT, SERVER, TCP, 80));
    assert!(!allowed(&with_host, CLIENT, EDGE, TCP, 80));
}

#[test]
fn the_reference_models_host_endpoints_as_the_tables_do() {
    let (sources, bundle) = load(&["host-firewall.yaml"]);
    let compilation = compiler::compile(&sources, &bundle);
    let reference = Reference::new(&bundle, &compilation.analysis);
    let edge = reference.endpoint_at(Address::Ip(ip(EDGE))).expect("a host endpoint");
    assert!(edge.host);
    assert_eq!(edge.name, "node/edge-1");
    let flow = |src: &str, port| Flow {
        src: Address::Ip(ip(src)),
        dst: Address::Ip(ip(EDGE)),
        proto: TCP,
        port: Some(port),
    };
    let verdict = reference.evaluate(&flow(PARTNER, 8443)).ingress.unwrap();
    assert!(
        matches!(&verdict, Verdict::Allowed { rule, .. } if rule == "ingress[0]"),
        "{verdict:?}"
    );
    let verdict = reference.evaluate(&flow(PARTNER, 22)).ingress.unwrap();
    assert!(matches!(verdict, Verdict::DefaultDeny { .. }), "{verdict:?}");
    // Traffic from the node itself (the host identity) passes by the built-in rule.
    let own = Flow { src: Address::Host, ..flow(PARTNER, 22) };
    assert!(reference.evaluate(&own).passes());
    assert!(reference.endpoint_at(Address::Ip(ip(CORE))).is_none(), "core-1 is not selected");
}
