//! Property: on generated clusters and NetworkPolicies, the compiled tables (through the
//! simulator) decide every sampled flow as the reference evaluator does, decision and
//! deciding rule included, in every mode (enforcement default, always and never; ipBlocks
//! matching pods or not).
//!
//! Inputs are rendered to YAML text and go through the real front end, so the whole
//! pipeline (parse, lower, solve, fold) is under test. The generator is shared with the
//! other property tests (support/generate.rs). Cilium policies: agreement_cilium.rs.

mod support;

use policy_lang::Sources;
use proptest::prelude::*;
use support::generate::{Cluster, Peer, Pod, Policy, Port, PortValue, Rule, Selector, cluster};

proptest! {
    // 64 cases (each compiled in six modes) keep `cargo test` fast; PROPTEST_CASES=5000
    // searches deeper.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(64),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn tables_decide_generated_flows_as_the_reference_does(cluster in cluster()) {
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

#[test]
fn the_generator_renders_every_peer_and_port_kind_the_front_end_accepts() {
    let all = |namespace: Option<Selector>| Peer::Pods {
        namespaces: namespace,
        pods: Some(Selector {
            labels: vec![("app", "a")],
            expressions: vec![("tier", "NotIn", vec!["b"])],
        }),
    };
    let rule = Rule {
        peers: vec![
            all(None),
            all(Some(Selector { labels: vec![], expressions: vec![("team", "Exists", vec![])] })),
            Peer::Block(1),
        ],
        ports: vec![
            Port { protocol: None, port: Some(PortValue::Number(80, Some(81))) },
            Port { protocol: Some("UDP"), port: Some(PortValue::Name("dns")) },
            Port { protocol: Some("SCTP"), port: None },
        ],
    };
    let cluster = Cluster {
        nodes: vec![],
        namespaces: vec![vec![("team", "a")], vec![]],
        pods: vec![
            Pod { namespace: 0, labels: vec![("app", "a")], ports: vec![("dns", 53, "UDP")] },
            Pod { namespace: 1, labels: vec![], ports: vec![] },
        ],
        policies: vec![Policy {
            namespace: 0,
            selector: Selector::all(),
            types: Some(vec!["Ingress", "Egress"]),
            ingress: Some(vec![rule.clone(), Rule { peers: vec![], ports: vec![] }]),
            egress: Some(vec![rule]),
        }],
        cilium: vec![],
    };
    let yaml = cluster.render();
    let mut sources = Sources::default();
    sources.add("generated.yaml", yaml.as_str());
    let (bundle, compilation) =
        support::compile(&sources).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!((bundle.pods.len(), bundle.network_policies.len()), (2, 1));
    let rules = &compilation.analysis.policies[0].rules;
    assert_eq!(rules.len(), 3, "{yaml}");
    assert_eq!(rules[0].peers.as_ref().map(Vec::len), Some(3));
    assert_eq!(rules[0].ports.len(), 3);
    assert_eq!(support::generated_disagreements(&yaml, &cluster), Ok(Vec::new()));
}
