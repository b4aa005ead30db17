//! The shipped demo cluster, compiled and judged by the table simulator.

use std::net::IpAddr;
use std::path::PathBuf;

use compiler::artifact::Artifact;
use compiler::simulate::{Decision, connect};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(name)
}

fn compile_dir(paths: &[PathBuf]) -> Artifact {
    let (sources, read) = policy_lang::manifest::read_inputs(paths).unwrap();
    assert!(read.is_empty(), "{read:?}");
    let bundle = policy_lang::load_sources(&sources);
    assert!(!bundle.has_errors(), "{:?}", bundle.diagnostics);
    let compilation = compiler::compile(&sources, &bundle);
    assert!(compilation.diagnostics.is_empty(), "{:?}", compilation.diagnostics);
    compilation.artifact
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

const FRONTEND: &str = "10.244.1.10";
const CART: &str = "10.244.1.11";
const POSTGRES: &str = "10.244.2.20";
const PROMETHEUS: &str = "10.244.3.30";
const COREDNS: &str = "10.244.0.5";
const TCP: u8 = 6;
const UDP: u8 = 17;

/// Whether a new connection passes both the source's egress and the destination's
/// ingress, and the names of the rules that decided.
fn allowed(artifact: &Artifact, src: &str, dst: &str, proto: u8, port: u16) -> bool {
    let (egress, ingress) = connect(artifact, ip(src), ip(dst), proto, Some(port));
    egress.passes() && ingress.passes()
}

#[test]
fn demo_allows_exactly_the_flows_its_policies_name() {
    let a = compile_dir(&[fixture("demo")]);
    // Named ports resolve per destination pod: frontend `http` is 8080, cart `grpc` 9090.
    assert!(allowed(&a, FRONTEND, CART, TCP, 9090));
    assert!(!allowed(&a, FRONTEND, CART, TCP, 9100), "frontend egress names only grpc");
    assert!(allowed(&a, PROMETHEUS, CART, TCP, 9100), "metrics from the platform namespace");
    assert!(!allowed(&a, PROMETHEUS, CART, TCP, 9090));
    assert!(allowed(&a, PROMETHEUS, FRONTEND, TCP, 8080), "frontend ingress has no peers");
    assert!(!allowed(&a, PROMETHEUS, FRONTEND, TCP, 9090));
    assert!(allowed(&a, CART, POSTGRES, TCP, 5432));
    assert!(!allowed(&a, FRONTEND, POSTGRES, TCP, 5432), "frontend egress does not name db");
    assert!(allowed(&a, CART, COREDNS, UDP, 53));
    assert!(allowed(&a, POSTGRES, COREDNS, TCP, 53));
    assert!(!allowed(&a, POSTGRES, COREDNS, TCP, 54));
    assert!(!allowed(&a, CART, "8.8.8.8", UDP, 53), "DNS only to kube-dns");
    // ipBlock with except: the lower half of 203.0.113.0/24 only.
    assert!(allowed(&a, CART, "203.0.113.5", TCP, 443));
    assert!(!allowed(&a, CART, "203.0.113.200", TCP, 443));
    assert!(!allowed(&a, CART, "203.0.113.5", TCP, 80));
    // Unselected namespaces stay open.
    assert!(allowed(&a, PROMETHEUS, COREDNS, TCP, 9999));
}

#[test]
fn decisions_name_the_rule_that_decided() {
    let a = compile_dir(&[fixture("demo")]);
    let (egress, ingress) = connect(&a, ip(CART), ip(POSTGRES), TCP, Some(5432));
    let Decision::Allowed(egress_rule) = egress else { panic!("{egress:?}") };
    let Decision::Allowed(ingress_rule) = ingress else { panic!("{ingress:?}") };
    let egress_rule = a.rule(egress_rule).unwrap();
    assert_eq!(
        (egress_rule.policy.as_str(), egress_rule.rule.as_str()),
        ("NetworkPolicy shop/cart", "egress[0]")
    );
    let ingress_rule = a.rule(ingress_rule).unwrap();
    assert_eq!(ingress_rule.policy, "NetworkPolicy shop/postgres");
    assert!(ingress_rule.location.ends_with("policies.yaml:106:7"), "{}", ingress_rule.location);

    let (egress, _) = connect(&a, ip(FRONTEND), ip(POSTGRES), TCP, Some(5432));
    assert_eq!(egress, Decision::NoMatch);
}

#[test]
fn the_same_input_gives_the_same_bytes() {
    let first = compile_dir(&[fixture("demo")]).encode();
    let second = compile_dir(&[fixture("demo")]).encode();
    assert_eq!(first, second);
    // Listing the files one by one, in another order, reads the same inputs.
    let dir = fixture("demo");
    let files = ["policies.yaml", "pods.yaml", "namespaces.yaml"].map(|f| dir.join(f));
    let mut by_file = compile_dir(&files);
    let mut by_dir = compile_dir(&[dir]);
    // Rule locations name the files as given, so compare everything but those.
    by_file.rules.iter_mut().for_each(|r| r.location.clear());
    by_dir.rules.iter_mut().for_each(|r| r.location.clear());
    assert_eq!(by_file.policy, by_dir.policy);
    assert_eq!(by_file.endpoints, by_dir.endpoints);
    assert_eq!(by_file.encode(), by_dir.encode());
}

/// Three more shop pods beside the demo's cart: a second replica; a pod of another
/// identity (`version` counts for identity) that the same policies select; and a canary
/// whose container port `metrics` is another number, which the cart policy's ingress
/// rule (`port: metrics`) resolves on the pod itself.
const MORE_CARTS: &str = "
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata:
      name: cart-5c8d7f9b4-klmno
      namespace: shop
      labels: {app: cart, tier: api, pod-template-hash: 5c8d7f9b4}
    spec:
      containers:
        - name: cart
          ports:
            - {name: grpc, containerPort: 9090}
            - {name: metrics, containerPort: 9100}
    status: {podIP: 10.244.1.12}
  - apiVersion: v1
    kind: Pod
    metadata:
      name: cart-v2
      namespace: shop
      labels: {app: cart, tier: api, version: v2}
    spec:
      containers:
        - name: cart
          ports:
            - {name: grpc, containerPort: 9090}
            - {name: metrics, containerPort: 9100}
    status: {podIP: 10.244.1.13}
  - apiVersion: v1
    kind: Pod
    metadata:
      name: cart-canary
      namespace: shop
      labels: {app: cart, tier: api}
    spec:
      containers:
        - name: cart
          ports:
            - {name: grpc, containerPort: 9090}
            - {name: metrics, containerPort: 9200}
    status: {podIP: 10.244.1.14}
";

#[test]
fn pods_with_identical_policy_share_one_table_and_others_do_not() {
    let dir = fixture("demo");
    let (mut sources, _) = policy_lang::manifest::read_inputs(&[dir]).unwrap();
    sources.add("more-carts.yaml", MORE_CARTS);
    let bundle = policy_lang::load_sources(&sources);
    assert!(!bundle.has_errors(), "{:?}", bundle.diagnostics);
    let compilation = compiler::compile(&sources, &bundle);
    assert!(compilation.diagnostics.is_empty(), "{:?}", compilation.diagnostics);
    let a = &compilation.artifact;
    let ep = |name: &str| a.endpoint(&format!("shop/{name}")).unwrap();
    let cart = ep("cart-5c8d7f9b4-fghij");
    assert_ne!((cart.ingress_table, cart.egress_table), (0, 0));

    // The same selecting policies and the same container ports: the same tables, even
    // across identities.
    for name in ["cart-5c8d7f9b4-klmno", "cart-v2"] {
        let other = ep(name);
        assert_eq!(
            (other.ingress_table, other.egress_table),
            (cart.ingress_table, cart.egress_table),
            "{name}"
        );
    }
    assert_eq!(ep("cart-5c8d7f9b4-klmno").identity, cart.identity);
    assert_ne!(ep("cart-v2").identity, cart.identity);

    // The canary resolves `metrics` to 9200: its own ingress table, the shared egress one.
    let canary = ep("cart-canary");
    assert_eq!(canary.identity, cart.identity);
    assert_eq!(canary.egress_table, cart.egress_table);
    assert_ne!(canary.ingress_table, cart.ingress_table);
    assert!(allowed(a, PROMETHEUS, "10.244.1.14", TCP, 9200));
    assert!(!allowed(a, PROMETHEUS, "10.244.1.14", TCP, 9100));
    assert!(allowed(a, PROMETHEUS, "10.244.1.12", TCP, 9100));

    // Every table an endpoint uses holds entries, and no table is left unused.
    let used: std::collections::BTreeSet<u32> = a
        .endpoints
        .iter()
        .flat_map(|e| [e.ingress_table, e.egress_table])
        .filter(|t| *t != 0)
        .collect();
    let stored: std::collections::BTreeSet<u32> = a.policy.iter().map(|(k, _)| k.table).collect();
    assert_eq!(used, stored);
    assert_eq!(compilation.stats.tables, used.len());
}

#[test]
fn exceeding_a_table_limit_is_an_error_naming_the_costliest_policies() {
    let (sources, _) = policy_lang::manifest::read_inputs(&[fixture("demo")]).unwrap();
    let bundle = policy_lang::load_sources(&sources);
    let options = compiler::Options {
        capacity: compiler::Capacity { policy: 10, ..compiler::Capacity::default() },
        ..compiler::Options::default()
    };
    let compilation = compiler::compile_with(&sources, &bundle, &options);
    let errors: Vec<_> =
        compilation.diagnostics.iter().filter(|d| d.code.code == "PL0300").collect();
    assert_eq!(errors.len(), 1, "{:?}", compilation.diagnostics);
    assert!(
        errors[0].message.contains("needs 16 entries, its limit is 10"),
        "{}",
        errors[0].message
    );
    // allow-dns contributes 6 entries (two per egress-isolated table), more than any other.
    let help = errors[0].help.as_deref().unwrap();
    assert!(help.starts_with("most entries come from: NetworkPolicy shop/allow-dns (6)"), "{help}");
}

#[test]
fn enforcement_modes_agree_between_tables_and_reference() {
    use compiler::ir::Enforcement;
    use compiler::reference::{Address, Flow, Options as RefOptions, Reference};

    let (sources, _) = policy_lang::manifest::read_inputs(&[fixture("demo")]).unwrap();
    let bundle = policy_lang::load_sources(&sources);
    for enforcement in [Enforcement::Default, Enforcement::Always, Enforcement::Never] {
        let options = compiler::Options { enforcement, ..compiler::Options::default() };
        let compilation = compiler::compile_with(&sources, &bundle, &options);
        let reference = Reference::new(&bundle, &compilation.analysis)
            .with_options(RefOptions { enforcement, ..RefOptions::default() });
        let a = &compilation.artifact;
        let pods = [FRONTEND, CART, POSTGRES, PROMETHEUS, COREDNS, "8.8.8.8"];
        for src in pods {
            for dst in pods.iter().filter(|d| **d != src) {
                for (proto, port) in [(TCP, 5432), (TCP, 9090), (UDP, 53), (TCP, 8080)] {
                    let flow = Flow {
                        src: Address::Ip(ip(src)),
                        dst: Address::Ip(ip(dst)),
                        proto,
                        port: Some(port),
                    };
                    let tables = allowed(a, src, dst, proto, port);
                    assert_eq!(
                        tables,
                        reference.evaluate(&flow).passes(),
                        "{enforcement:?} {src} -> {dst} {proto}/{port}"
                    );
                }
            }
        }
        // The unselected monitoring pod: open by default, closed always, open never.
        let open = allowed(a, PROMETHEUS, COREDNS, TCP, 9999);
        assert_eq!(open, enforcement != Enforcement::Always, "{enforcement:?}");
        assert_eq!(allowed(a, FRONTEND, POSTGRES, TCP, 5432), enforcement == Enforcement::Never);
    }
}

#[test]
fn the_artifact_records_which_labels_counted_for_identity() {
    let (sources, _) = policy_lang::manifest::read_inputs(&[fixture("demo")]).unwrap();
    let bundle = policy_lang::load_sources(&sources);
    let options = compiler::Options {
        labels: compiler::identity::LabelFilter {
            include: vec!["example.com/*".into()],
            exclude: vec!["version".into()],
        },
        ..compiler::Options::default()
    };
    let compilation = compiler::compile_with(&sources, &bundle, &options);
    let rules = &compilation.artifact.identity_labels;
    assert_eq!(
        (rules.include.as_slice(), rules.exclude.as_slice()),
        (&["example.com/*".to_owned()][..], &["version".to_owned()][..])
    );
    // Every key a selector of the demo reads is recorded, and counts.
    assert!(rules.selected.iter().any(|k| k == "app"), "{:?}", rules.selected);
    assert!(rules.selected.windows(2).all(|w| w[0] < w[1]), "sorted, no duplicates");
    let decoded = compiler::artifact::Artifact::decode(&compilation.artifact.encode()).unwrap();
    assert_eq!(&decoded.identity_labels, rules);
}
