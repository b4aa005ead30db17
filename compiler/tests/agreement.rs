//! Property: on generated clusters and NetworkPolicies, the compiled tables (through the
//! simulator) decide every sampled flow as the reference evaluator does in its default
//! mode, decision and deciding rule included.
//!
//! Inputs are rendered to YAML text and go through the real front end, so the whole
//! pipeline (parse, lower, solve, fold) is under test. The generator is deliberately
//! small: a handful of label keys and values, addresses and ports, so that selectors,
//! ipBlocks and named ports overlap often.

mod support;

use std::fmt::Write as _;
use std::net::IpAddr;

use compiler::reference::{Address, Flow, Reference};
use policy_lang::Sources;
use policy_lang::ast::Direction;
use proptest::prelude::*;

const NAMESPACES: [&str; 4] = ["ns-a", "ns-b", "ns-c", "ns-d"];
const PORT_NAMES: [&str; 3] = ["http", "dns", "metrics"];
const PROTOCOLS: [&str; 3] = ["TCP", "UDP", "SCTP"];
/// ipBlocks: some hold pod addresses (10.0.<namespace>.<10 + pod>), some only outside ones.
const BLOCKS: [(&str, &[&str]); 7] = [
    ("10.0.0.0/8", &[]),
    ("10.0.0.0/8", &["10.0.1.0/24"]),
    ("10.0.1.0/24", &[]),
    ("10.0.0.10/32", &[]),
    ("192.0.2.0/24", &["192.0.2.128/25"]),
    ("0.0.0.0/0", &["10.0.0.0/8"]),
    ("192.0.2.0/25", &[]),
];
/// Addresses of no pod, inside and outside the blocks above.
const EXTERNAL: [&str; 5] = ["192.0.2.1", "192.0.2.200", "203.0.113.9", "10.9.9.9", "10.0.1.99"];
/// Probed ports: the numbers policies and named ports use, and the edges of the ranges
/// the generator writes (which compile to aligned port blocks of many sizes).
const PORTS: [u16; 9] = [80, 81, 53, 8080, 1000, 1023, 1024, 2024, 40080];

#[derive(Clone, Debug)]
struct Cluster {
    namespaces: Vec<Vec<(&'static str, &'static str)>>,
    pods: Vec<Pod>,
    policies: Vec<Policy>,
}

#[derive(Clone, Debug)]
struct Pod {
    namespace: usize,
    labels: Vec<(&'static str, &'static str)>,
    /// (name, containerPort, protocol)
    ports: Vec<(&'static str, u16, &'static str)>,
}

#[derive(Clone, Debug)]
struct Selector {
    labels: Vec<(&'static str, &'static str)>,
    /// (key, operator, values)
    expressions: Vec<(&'static str, &'static str, Vec<&'static str>)>,
}

#[derive(Clone, Debug)]
enum Peer {
    Pods { namespaces: Option<Selector>, pods: Option<Selector> },
    Block(usize),
}

#[derive(Clone, Debug)]
enum PortValue {
    Number(u16, Option<u16>),
    Name(&'static str),
}

#[derive(Clone, Debug)]
struct Port {
    protocol: Option<&'static str>,
    port: Option<PortValue>,
}

#[derive(Clone, Debug)]
struct Rule {
    peers: Vec<Peer>,
    ports: Vec<Port>,
}

#[derive(Clone, Debug)]
struct Policy {
    namespace: usize,
    selector: Selector,
    types: Option<Vec<&'static str>>,
    ingress: Option<Vec<Rule>>,
    egress: Option<Vec<Rule>>,
}

fn label(keys: &'static [&'static str]) -> impl Strategy<Value = (&'static str, &'static str)> {
    (prop::sample::select(keys), prop::sample::select(&["a", "b"][..]))
}

fn labels(
    keys: &'static [&'static str],
) -> impl Strategy<Value = Vec<(&'static str, &'static str)>> {
    prop::collection::vec(label(keys), 0..=2).prop_map(|mut v| {
        v.sort();
        v.dedup_by_key(|(k, _)| *k);
        v
    })
}

/// Selectors over `keys` with values a/b, or the namespace name key with its values.
fn selector(keys: &'static [&'static str]) -> impl Strategy<Value = Selector> {
    let values = prop::sample::subsequence(&["a", "b", "ns-a", "ns-b"][..], 1..=2);
    let expression = (
        prop::sample::select(keys),
        prop::sample::select(&["In", "NotIn", "Exists", "DoesNotExist"][..]),
        values,
    )
        .prop_map(|(k, op, values)| {
            let values = if matches!(op, "In" | "NotIn") { values } else { Vec::new() };
            (k, op, values)
        });
    // At most one label and one expression, so that selectors often match something.
    (prop::option::of(label(keys)), prop::option::of(expression)).prop_map(
        |(labels, expressions)| Selector {
            labels: labels.into_iter().collect(),
            expressions: expressions.into_iter().collect(),
        },
    )
}

const POD_KEYS: &[&str] = &["app", "tier"];
const NAMESPACE_KEYS: &[&str] = &["team", "kubernetes.io/metadata.name"];

fn peer() -> impl Strategy<Value = Peer> {
    prop_oneof![
        (prop::option::of(selector(NAMESPACE_KEYS)), prop::option::of(selector(POD_KEYS)))
            .prop_map(|(namespaces, pods)| match (namespaces, pods) {
                (None, None) => Peer::Pods {
                    namespaces: None,
                    pods: Some(Selector { labels: vec![], expressions: vec![] })
                },
                (namespaces, pods) => Peer::Pods { namespaces, pods },
            }),
        (0..BLOCKS.len()).prop_map(Peer::Block),
    ]
}

fn port() -> impl Strategy<Value = Port> {
    let value = prop_oneof![
        (
            prop::sample::select(&[79u16, 80, 81, 53, 1000, 1023][..]),
            prop::option::of(prop::sample::select(&[0u16, 1, 2, 24, 1000, 1001, 40000][..]))
        )
            .prop_map(|(p, width)| PortValue::Number(p, width.map(|w| p.saturating_add(w)))),
        prop::sample::select(&PORT_NAMES[..]).prop_map(PortValue::Name),
    ];
    (prop::option::of(prop::sample::select(&PROTOCOLS[..])), prop::option::of(value))
        .prop_map(|(protocol, port)| Port { protocol, port })
}

fn rule() -> impl Strategy<Value = Rule> {
    (prop::collection::vec(peer(), 0..=2), prop::collection::vec(port(), 0..=2))
        .prop_map(|(peers, ports)| Rule { peers, ports })
}

fn policy() -> impl Strategy<Value = Policy> {
    let types = prop::option::of(prop::sample::subsequence(&["Ingress", "Egress"][..], 1..=2));
    let rules = || prop::option::of(prop::collection::vec(rule(), 0..=2));
    (0..NAMESPACES.len(), selector(POD_KEYS), types, rules(), rules()).prop_map(
        |(namespace, selector, types, ingress, egress)| Policy {
            namespace,
            selector,
            types,
            ingress,
            egress,
        },
    )
}

fn pod() -> impl Strategy<Value = Pod> {
    let named = (
        prop::sample::select(&PORT_NAMES[..]),
        prop::sample::select(&[80u16, 81, 8080, 53][..]),
        prop::sample::select(&PROTOCOLS[..]),
    );
    (0..NAMESPACES.len(), labels(POD_KEYS), prop::collection::vec(named, 0..=3)).prop_map(
        |(namespace, labels, mut ports)| {
            // Container port names are unique within a pod.
            ports.sort();
            ports.dedup_by_key(|(name, _, _)| *name);
            Pod { namespace, labels, ports }
        },
    )
}

fn cluster() -> impl Strategy<Value = Cluster> {
    (
        prop::collection::vec(labels(&["team"]), 2..=4),
        prop::collection::vec(pod(), 2..=8),
        prop::collection::vec(policy(), 1..=4),
    )
        .prop_map(|(namespaces, mut pods, mut policies)| {
            let n = namespaces.len();
            pods.iter_mut().for_each(|p| p.namespace %= n);
            policies.iter_mut().for_each(|p| p.namespace %= n);
            Cluster { namespaces, pods, policies }
        })
}

fn pod_address(cluster: &Cluster, i: usize) -> IpAddr {
    format!("10.0.{}.{}", cluster.pods[i].namespace, 10 + i).parse().unwrap()
}

fn yaml_selector(out: &mut String, indent: usize, s: &Selector) {
    let pad = " ".repeat(indent);
    if s.labels.is_empty() && s.expressions.is_empty() {
        out.push_str(" {}\n");
        return;
    }
    out.push('\n');
    if !s.labels.is_empty() {
        writeln!(out, "{pad}matchLabels:").unwrap();
        for (k, v) in &s.labels {
            writeln!(out, "{pad}  {k}: {v}").unwrap();
        }
    }
    if !s.expressions.is_empty() {
        writeln!(out, "{pad}matchExpressions:").unwrap();
        for (k, op, values) in &s.expressions {
            writeln!(out, "{pad}  - key: {k}\n{pad}    operator: {op}").unwrap();
            if !values.is_empty() {
                writeln!(out, "{pad}    values: [{}]", values.join(", ")).unwrap();
            }
        }
    }
}

fn yaml_rules(out: &mut String, key: &str, peers_key: &str, rules: &[Rule]) {
    if rules.is_empty() {
        writeln!(out, "  {key}: []").unwrap();
        return;
    }
    writeln!(out, "  {key}:").unwrap();
    for rule in rules {
        if rule.peers.is_empty() && rule.ports.is_empty() {
            out.push_str("    - {}\n");
            continue;
        }
        let mut first = true;
        let mut item = |out: &mut String, field: &str| {
            let lead = if std::mem::take(&mut first) { "    - " } else { "      " };
            writeln!(out, "{lead}{field}:").unwrap();
        };
        if !rule.peers.is_empty() {
            item(out, peers_key);
            for peer in &rule.peers {
                match peer {
                    Peer::Pods { namespaces, pods } => {
                        let mut lead = "        - ";
                        if let Some(ns) = namespaces {
                            write!(out, "{lead}namespaceSelector:").unwrap();
                            yaml_selector(out, 12, ns);
                            lead = "          ";
                        }
                        if let Some(pods) = pods {
                            write!(out, "{lead}podSelector:").unwrap();
                            yaml_selector(out, 12, pods);
                        }
                    }
                    Peer::Block(i) => {
                        let (cidr, except) = BLOCKS[*i];
                        writeln!(out, "        - ipBlock:\n            cidr: {cidr}").unwrap();
                        if !except.is_empty() {
                            writeln!(out, "            except: [{}]", except.join(", ")).unwrap();
                        }
                    }
                }
            }
        }
        if !rule.ports.is_empty() {
            item(out, "ports");
            for port in &rule.ports {
                let mut fields = Vec::new();
                if let Some(protocol) = port.protocol {
                    fields.push(format!("protocol: {protocol}"));
                }
                match &port.port {
                    Some(PortValue::Number(p, end)) => {
                        fields.push(format!("port: {p}"));
                        if let Some(end) = end {
                            fields.push(format!("endPort: {end}"));
                        }
                    }
                    Some(PortValue::Name(name)) => fields.push(format!("port: {name}")),
                    None => {}
                }
                writeln!(out, "        - {{{}}}", fields.join(", ")).unwrap();
            }
        }
    }
}

/// The cluster as manifests: namespaces, pods, then policies.
fn render(cluster: &Cluster) -> String {
    let mut out = String::new();
    for (i, labels) in cluster.namespaces.iter().enumerate() {
        writeln!(out, "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}", NAMESPACES[i])
            .unwrap();
        if !labels.is_empty() {
            out.push_str("  labels:\n");
            for (k, v) in labels {
                writeln!(out, "    {k}: {v}").unwrap();
            }
        }
    }
    for (i, pod) in cluster.pods.iter().enumerate() {
        writeln!(
            out,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\n  namespace: {}",
            NAMESPACES[pod.namespace]
        )
        .unwrap();
        if !pod.labels.is_empty() {
            out.push_str("  labels:\n");
            for (k, v) in &pod.labels {
                writeln!(out, "    {k}: {v}").unwrap();
            }
        }
        out.push_str("spec:\n  containers:\n    - name: main\n");
        if !pod.ports.is_empty() {
            out.push_str("      ports:\n");
        }
        for (name, number, protocol) in &pod.ports {
            writeln!(
                out,
                "        - {{name: {name}, containerPort: {number}, protocol: {protocol}}}"
            )
            .unwrap();
        }
        writeln!(out, "status:\n  podIP: {}", pod_address(cluster, i)).unwrap();
    }
    for (i, policy) in cluster.policies.iter().enumerate() {
        writeln!(
            out,
            "---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np{i}\n  namespace: {}\nspec:",
            NAMESPACES[policy.namespace]
        )
        .unwrap();
        out.push_str("  podSelector:");
        yaml_selector(&mut out, 4, &policy.selector);
        if let Some(types) = &policy.types {
            writeln!(out, "  policyTypes: [{}]", types.join(", ")).unwrap();
        }
        if let Some(rules) = &policy.ingress {
            yaml_rules(&mut out, "ingress", "from", rules);
        }
        if let Some(rules) = &policy.egress {
            yaml_rules(&mut out, "egress", "to", rules);
        }
    }
    out
}

/// Every disagreement between the simulator and the reference on the sampled flows.
fn disagreements(yaml: &str, cluster: &Cluster) -> Result<Vec<String>, String> {
    let mut sources = Sources::default();
    sources.add("generated.yaml", yaml);
    let (bundle, compilation) = support::compile(&sources)?;
    let reference = Reference::new(&bundle, &compilation.analysis);
    support::same_endpoints(&reference, &compilation)?;
    let upstream_options =
        compiler::Options { ipblock_matches_pods: true, ..compiler::Options::default() };
    let upstream = compiler::compile_with(&sources, &bundle, &upstream_options);
    let upstream_reference =
        Reference::new(&bundle, &upstream.analysis).with_options(compiler::reference::Options {
            ipblock_matches_pods: true,
            ..Default::default()
        });

    let pods: Vec<IpAddr> = (0..cluster.pods.len()).map(|i| pod_address(cluster, i)).collect();
    let external: Vec<IpAddr> = EXTERNAL.iter().map(|a| a.parse().unwrap()).collect();
    let mut pairs = Vec::new();
    for &src in &pods {
        pairs.extend(pods.iter().filter(|&&dst| dst != src).map(|&dst| (src, dst)));
        pairs.extend(external.iter().flat_map(|&ext| [(src, ext), (ext, src)]));
    }
    let mut out = Vec::new();
    for (src, dst) in pairs {
        for proto in [6, 17, 132] {
            for port in PORTS {
                let flow =
                    Flow { src: Address::Ip(src), dst: Address::Ip(dst), proto, port: Some(port) };
                let expected = reference.evaluate(&flow);
                let (egress, ingress) = support::simulate(&compilation.artifact, &flow);
                if expected.passes() != (egress.passes() && ingress.passes()) {
                    out.push(format!(
                        "{src} -> {dst} proto {proto} port {port}: pass/fail differs"
                    ));
                }
                // The same with ipBlocks matching pods, in both the tables and the
                // reference: identities split by block membership must stay exact.
                let (egress_up, ingress_up) = support::simulate(&upstream.artifact, &flow);
                if upstream_reference.evaluate(&flow).passes()
                    != (egress_up.passes() && ingress_up.passes())
                {
                    out.push(format!(
                        "{src} -> {dst} proto {proto} port {port}: pass/fail differs with ipblock_matches_pods"
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
                        out.push(format!("{src} -> {dst} proto {proto} port {port}: {e}"));
                    }
                }
            }
        }
    }
    Ok(out)
}

proptest! {
    // 128 cases keep `cargo test` fast; PROPTEST_CASES=20000 searches deeper.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(128),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn tables_decide_generated_flows_as_the_reference_does(cluster in cluster()) {
        let yaml = render(&cluster);
        let found = disagreements(&yaml, &cluster).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
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
        namespaces: vec![vec![("team", "a")], vec![]],
        pods: vec![
            Pod { namespace: 0, labels: vec![("app", "a")], ports: vec![("dns", 53, "UDP")] },
            Pod { namespace: 1, labels: vec![], ports: vec![] },
        ],
        policies: vec![Policy {
            namespace: 0,
            selector: Selector { labels: vec![], expressions: vec![] },
            types: Some(vec!["Ingress", "Egress"]),
            ingress: Some(vec![rule.clone(), Rule { peers: vec![], ports: vec![] }]),
            egress: Some(vec![rule]),
        }],
    };
    let yaml = render(&cluster);
    let mut sources = Sources::default();
    sources.add("generated.yaml", yaml.as_str());
    let (bundle, compilation) =
        support::compile(&sources).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    assert_eq!((bundle.pods.len(), bundle.network_policies.len()), (2, 1));
    let rules = &compilation.analysis.policies[0].rules;
    assert_eq!(rules.len(), 3, "{yaml}");
    assert_eq!(rules[0].peers.as_ref().map(Vec::len), Some(3));
    assert_eq!(rules[0].ports.len(), 3);
    assert_eq!(disagreements(&yaml, &cluster), Ok(Vec::new()));
}
