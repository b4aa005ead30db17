//! Property: on generated clusters with CiliumNetworkPolicy and
//! CiliumClusterwideNetworkPolicy L3/L4 rules (allow and deny lists, endpoints,
//! entities, CIDRs and CIDR sets with except, toPorts with ranges, port 0 and ANY, named
//! ports, icmps, enableDefaultDeny), and now and then a NetworkPolicy beside them, the
//! compiled tables decide every sampled flow as the reference evaluator does, decision
//! and deciding rule included, at pods and at the host endpoints of the nodes that host
//! policies (a `nodeSelector`) select, in every mode (enforcement default, always and never;
//! ipBlocks matching pods or not). Flows include ICMP and ICMPv6 and outside IPv6
//! addresses.

mod support;

use policy_lang::{Severity, Sources};
use proptest::prelude::*;
use support::generate::{
    CiliumL4, CiliumPeers, CiliumPolicy, CiliumPortValue, CiliumRule, Cluster, Pod, Selector,
    cilium_cluster,
};

proptest! {
    // 32 cases (each compiled in six modes, about 5,000 flows each) keep `cargo test`
    // near ten seconds; PROPTEST_CASES=2000 searches deeper.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(32),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn tables_decide_generated_cilium_flows_as_the_reference_does(cluster in cilium_cluster()) {
        let yaml = cluster.render();
        let found = support::generated_disagreements(&yaml, &cluster).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        prop_assert!(
            found.is_empty(),
            "{} disagreements, first: {}\n--- input ---\n{yaml}",
            found.len(),
            found.iter().take(10).cloned().collect::<Vec<_>>().join("\n")
        );
    }
}

/// One rule of each shape the generator writes, in every list, through the front end
/// without a single diagnostic, and agreeing in every mode.
#[test]
fn the_generator_renders_every_cilium_construct_the_front_end_accepts() {
    let client = Selector { labels: vec![("app", "a")], expressions: vec![] };
    let other_namespace = Selector {
        labels: vec![("io.kubernetes.pod.namespace", "ns-b")],
        expressions: vec![("io.cilium.k8s.namespace.labels.team", "Exists", vec![])],
    };
    let ports = |deny: bool| {
        let mut ports = vec![
            (CiliumPortValue::Number(80), Some(1023), Some("TCP")),
            (CiliumPortValue::Number(0), None, Some("ANY")),
            (CiliumPortValue::Number(53), None, None),
        ];
        if !deny {
            ports.push((CiliumPortValue::Name("http"), None, Some("TCP")));
        }
        CiliumL4::Ports(ports)
    };
    let rules = |deny: bool| {
        vec![
            CiliumRule {
                peers: Some(CiliumPeers::Endpoints(vec![client.clone(), other_namespace.clone()])),
                l4: Some(ports(deny)),
            },
            CiliumRule { peers: Some(CiliumPeers::Endpoints(vec![Selector::all()])), l4: None },
            CiliumRule {
                peers: Some(CiliumPeers::Entities(vec!["world-ipv6", "host"])),
                l4: Some(CiliumL4::Icmps(vec![(Some("IPv6"), "EchoRequest"), (None, "8")])),
            },
            CiliumRule { peers: Some(CiliumPeers::Cidr(vec![3, 7])), l4: None },
            CiliumRule { peers: Some(CiliumPeers::CidrSet(vec![1, 5])), l4: Some(ports(deny)) },
            CiliumRule { peers: None, l4: Some(ports(deny)) },
        ]
    };
    let cluster = Cluster {
        // A node with a pod's labels, which only the host policy below selects.
        nodes: vec![vec![("app", "a")], vec![]],
        namespaces: vec![vec![("team", "a")], vec![("team", "b")]],
        pods: vec![
            Pod { namespace: 0, labels: vec![("app", "a")], ports: vec![("http", 80, "TCP")] },
            Pod { namespace: 1, labels: vec![("app", "b")], ports: vec![] },
        ],
        policies: vec![],
        cilium: vec![
            CiliumPolicy {
                namespace: Some(0),
                subject: Selector::all(),
                nodes: false,
                default_deny: Some((Some(false), None)),
                lists: [
                    Some(rules(false)),
                    Some(rules(true)),
                    Some(rules(false)),
                    Some(rules(true)),
                ],
            },
            CiliumPolicy {
                namespace: None,
                subject: client.clone(),
                nodes: false,
                default_deny: None,
                lists: [Some(vec![CiliumRule { peers: None, l4: None }]), None, Some(vec![]), None],
            },
            CiliumPolicy {
                namespace: None,
                subject: client.clone(),
                nodes: true,
                default_deny: None,
                lists: [
                    Some(rules(false)),
                    Some(rules(true)),
                    Some(rules(false)),
                    Some(rules(true)),
                ],
            },
        ],
    };
    let yaml = cluster.render();
    let mut sources = Sources::default();
    sources.add("generated.yaml", yaml.as_str());
    let bundle = policy_lang::load_sources(&sources);
    let diagnostics: Vec<String> = bundle.diagnostics.iter().map(|d| d.render(&sources)).collect();
    assert!(diagnostics.is_empty(), "{}\n{yaml}", diagnostics.join("\n"));
    assert!(!bundle.diagnostics.iter().any(|d| d.severity() == Severity::Error));
    assert_eq!(bundle.cilium_policies.len(), 3);
    let compilation = compiler::compile(&sources, &bundle);
    // Six entries in each of four lists, the L3-only and the empty ones included.
    let cnp = &compilation.analysis.policies.iter().find(|p| p.name.contains("cnp0")).unwrap();
    assert_eq!(cnp.rules.len(), 24, "{yaml}");
    // The host policy selects node n0 (labelled like the pod p0) and no pod; n1 is no
    // endpoint.
    let hosts: Vec<&str> = compilation
        .artifact
        .endpoints
        .iter()
        .filter(|e| e.is_host())
        .map(|e| e.name.as_str())
        .collect();
    assert_eq!(hosts, ["node/n0"]);
    let host = compilation.artifact.endpoint("node/n0").unwrap();
    assert_ne!(host.ingress_table, 0);
    assert_ne!(host.egress_table, 0);
    let pod = compilation.artifact.endpoint("ns-a/p0").unwrap();
    assert!(pod.ingress_table != host.ingress_table && pod.egress_table != host.egress_table);
    assert_eq!(support::generated_disagreements(&yaml, &cluster), Ok(Vec::new()));
}
