//! Connectivity of the shipped fixtures and of small clusters written for one rule each:
//! grouping by owner, outside address ranges, the all/some split, and agreement with the
//! reference evaluator at every port boundary.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::PathBuf;

use compiler::artifact::Artifact;
use compiler::connectivity::{Allowed, Connectivity, Group, Grouping, PortRanges, Proto};
use compiler::reference::{Address, Flow, Reference};
use policy_lang::ast::Cidr;
use policy_lang::{Bundle, Severity, Sources};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures").join(name)
}

fn build(sources: &Sources) -> (Bundle, compiler::Compilation) {
    let bundle = policy_lang::load_sources(sources);
    let compilation = compiler::compile(sources, &bundle);
    let errors: Vec<String> = bundle
        .diagnostics
        .iter()
        .chain(&compilation.diagnostics)
        .filter(|d| d.severity() == Severity::Error)
        .map(|d| d.render(sources))
        .collect();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    (bundle, compilation)
}

fn load(dir: &str) -> (Bundle, compiler::Compilation) {
    let (sources, read) = policy_lang::manifest::read_inputs(&[fixture(dir)]).unwrap();
    assert!(read.is_empty(), "{read:?}");
    build(&sources)
}

fn inline(yaml: &str) -> (Bundle, compiler::Compilation) {
    let mut sources = Sources::default();
    sources.add("cluster.yaml", yaml);
    build(&sources)
}

fn of(bundle: &Bundle, artifact: &Artifact) -> Connectivity {
    compiler::connectivity::connectivity(artifact, &Grouping::from_bundle(bundle))
}

fn pod(namespace: &str, name: &str) -> Group {
    Group::Pod { namespace: namespace.into(), name: name.into() }
}

fn workload(namespace: &str, kind: &str, name: &str) -> Group {
    Group::Workload { namespace: namespace.into(), kind: kind.into(), name: name.into() }
}

fn cidr(text: &str) -> Cidr {
    let (addr, prefix) = text.split_once('/').unwrap();
    Cidr { addr: addr.parse().unwrap(), prefix: prefix.parse().unwrap() }
}

/// `(all, some)` of the connection, rendered; `("none", "none")` when there is none.
fn between(c: &Connectivity, from: &Group, to: &Group) -> (String, String) {
    c.connection(from, to)
        .map_or(("none".into(), "none".into()), |c| (c.all.to_string(), c.some.to_string()))
}

/// Whether `allowed` holds the packet.
fn holds(allowed: &Allowed, proto: u8, port: u16) -> bool {
    let known = [Proto::Tcp, Proto::Udp, Proto::Sctp, Proto::Icmp, Proto::Icmpv6];
    let class = known.into_iter().find(|p| p.number() == Some(proto)).unwrap_or(Proto::Other);
    match allowed.protocols.get(&class) {
        Some(PortRanges::Every) => true,
        Some(PortRanges::Only(ranges)) => ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&port)),
        None => false,
    }
}

#[test]
fn demo_lists_exactly_the_connections_its_policies_allow() {
    let (bundle, compilation) = load("demo");
    let c = of(&bundle, &compilation.artifact);
    let shop = |name: &str| pod("shop", name);
    let cart = shop("cart-5c8d7f9b4-fghij");
    let frontend = shop("frontend-7d9f8c6b5-abcde");
    let postgres = shop("postgres-0");
    let prometheus = pod("monitoring", "prometheus-0");
    let coredns = pod("kube-system", "coredns-6f6b679f8f-xyz12");
    let any = ("any".to_string(), "none".to_string());
    let only = |text: &str| (text.to_string(), "none".to_string());

    assert_eq!(between(&c, &frontend, &cart), only("TCP 9090"), "named port grpc resolved");
    assert_eq!(between(&c, &prometheus, &cart), only("TCP 9100"));
    assert_eq!(between(&c, &cart, &postgres), only("TCP 5432"));
    assert_eq!(between(&c, &frontend, &postgres), only("none"));
    assert_eq!(between(&c, &postgres, &coredns), only("TCP 53; UDP 53"));
    assert_eq!(between(&c, &prometheus, &coredns), any, "neither end is isolated");
    // The ipBlock with an except: the /24 without its upper half, which is a group of
    // its own because it has an identity of its own.
    let lower = Group::Cidr(cidr("203.0.113.0/24"));
    let upper = Group::Cidr(cidr("203.0.113.128/25"));
    assert_eq!(between(&c, &cart, &lower), only("TCP 443"));
    assert_eq!(between(&c, &cart, &upper), only("none"));
    assert_eq!(between(&c, &cart, &Group::World), only("none"));
    assert_eq!(between(&c, &Group::World, &frontend), only("TCP 8080"));
    assert!(c.connection(&Group::World, &lower).is_none(), "outside pairs are not listed");

    let names: Vec<String> = c.groups.iter().map(|g| g.group.to_string()).collect();
    assert_eq!(
        names,
        [
            "Pod kube-system/coredns-6f6b679f8f-xyz12",
            "Pod monitoring/prometheus-0",
            "Pod shop/cart-5c8d7f9b4-fghij",
            "Pod shop/frontend-7d9f8c6b5-abcde",
            "Pod shop/postgres-0",
            "203.0.113.0/24",
            "203.0.113.128/25",
            "world",
        ]
    );
    let info = |g: &Group| c.groups.iter().find(|i| &i.group == g).unwrap();
    assert_eq!(info(&lower).excludes, [cidr("203.0.113.128/25")]);
    assert_eq!(info(&Group::World).excludes, [cidr("203.0.113.0/24")]);
    assert!(c.unaddressed.is_empty());
    assert_eq!(c.connections.len(), 26);
}

/// The connectivity comes from the compiled tables; the reference evaluator decides from
/// the policies. They must agree on every port that could make a difference: all ports
/// below 1100, every port next to one the policies name, and a stride through the rest.
#[test]
fn demo_agrees_with_the_reference_at_every_port_boundary() {
    let (bundle, compilation) = load("demo");
    let c = of(&bundle, &compilation.artifact);
    let reference = Reference::new(&bundle, &compilation.analysis);

    let mut peers: Vec<(Group, IpAddr)> = reference
        .endpoints()
        .iter()
        .map(|e| {
            let (namespace, name) = e.name.split_once('/').unwrap();
            (pod(namespace, name), e.addresses[0])
        })
        .collect();
    for (group, address) in [
        (Group::Cidr(cidr("203.0.113.0/24")), "203.0.113.5"),
        (Group::Cidr(cidr("203.0.113.128/25")), "203.0.113.200"),
        (Group::World, "192.0.2.1"),
    ] {
        peers.push((group, address.parse().unwrap()));
    }

    let mut ports: BTreeSet<u16> = (0..1100).chain((0..=u16::MAX).step_by(251)).collect();
    for named in [53u16, 443, 5432, 8080, 9090, 9100, u16::MAX] {
        ports.extend([named.saturating_sub(1), named, named.saturating_add(1)]);
    }

    let mut disagreements = Vec::new();
    for (from, src) in &peers {
        for (to, dst) in &peers {
            if from == to || (!from.is_pods() && !to.is_pods()) {
                continue;
            }
            let connection = c.connection(from, to);
            for proto in [6u8, 17, 132] {
                for &port in &ports {
                    let flow = Flow {
                        src: Address::Ip(*src),
                        dst: Address::Ip(*dst),
                        proto,
                        port: Some(port),
                    };
                    let expected = reference.evaluate(&flow).passes();
                    let got = connection.is_some_and(|c| holds(&c.all, proto, port));
                    if expected != got {
                        disagreements.push(format!("{from} -> {to} {proto}/{port}: {got}"));
                    }
                }
            }
        }
    }
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

#[test]
fn pods_are_grouped_by_the_topmost_owner_the_inputs_name() {
    let (bundle, compilation) = load("valid");
    let c = of(&bundle, &compilation.artifact);
    let members = |g: &Group| c.groups.iter().find(|i| &i.group == g).map(|i| i.members.clone());

    // Pod -> ReplicaSet -> Deployment, both in the inputs.
    let web = workload("shop", "Deployment", "web");
    assert_eq!(members(&web).unwrap(), ["shop/web-6b7f9c8d4-2kq9x", "shop/web-6b7f9c8d4-x7m4n"]);
    // Pod -> Job -> CronJob; Pod -> StatefulSet.
    assert!(members(&workload("shop", "CronJob", "report")).is_some());
    assert!(members(&workload("shop", "StatefulSet", "postgres")).is_some());
    // The ReplicaSet is not among the inputs (its Deployment is): grouped by the owner
    // the pod names.
    let coredns = workload("kube-system", "ReplicaSet", "coredns-5dd5756b68");
    assert_eq!(members(&coredns).unwrap(), ["kube-system/coredns-5dd5756b68-7xk2p"]);
    // A pending replica and a bare pod without an address are judged nowhere; the
    // host-network DaemonSet pod is part of its node.
    assert_eq!(c.unaddressed, ["shop/cart-test-connection", "shop/web-6b7f9c8d4-9rtzl"]);
    assert!(members(&workload("monitoring", "DaemonSet", "node-exporter")).is_none());
    assert!(members(&Group::Nodes).unwrap().contains(&"10.0.1.11".to_string()));

    let cart = workload("shop", "Deployment", "cart");
    let postgres = workload("shop", "StatefulSet", "postgres");
    let report = workload("shop", "CronJob", "report");
    let lb = Group::Cidr(cidr("198.51.100.0/24"));
    assert_eq!(between(&c, &web, &cart).0, "TCP 9090");
    assert_eq!(between(&c, &report, &postgres).0, "TCP 5432");
    assert_eq!(between(&c, &lb, &web).0, "TCP 8080");
    assert_eq!(c.connection(&lb, &web).unwrap().pairs, 2);
    // Two replicas of web, each to the other: nothing allows that.
    assert!(c.connection(&web, &web).is_none());
}

const TWO_REPLICAS: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: app, labels: {kubernetes.io/metadata.name: app}}
---
apiVersion: v1
kind: Pod
metadata:
  name: client
  namespace: app
  labels: {role: client}
status: {podIP: 10.0.0.1}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1-a
  namespace: app
  labels: {app: web, track: canary}
  ownerReferences:
    - {apiVersion: apps/v1, kind: ReplicaSet, name: web-1, uid: u1, controller: true}
spec:
  containers:
    - name: web
      ports: [{name: http, containerPort: 8080}]
status: {podIP: 10.0.0.2}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-1-b
  namespace: app
  labels: {app: web}
  ownerReferences:
    - {apiVersion: apps/v1, kind: ReplicaSet, name: web-1, uid: u1, controller: true}
spec:
  containers:
    - name: web
      ports: [{name: http, containerPort: 8081}]
status: {podIP: 10.0.0.3}
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: web, namespace: app}
spec:
  podSelector: {matchLabels: {app: web}}
  ingress:
    - from: [{podSelector: {matchLabels: {role: client}}}]
      ports: [{port: 80}, {port: http}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: canary, namespace: app}
spec:
  podSelector: {matchLabels: {track: canary}}
  ingress:
    - from: [{podSelector: {matchLabels: {role: client}}}]
      ports: [{protocol: UDP, port: 5000, endPort: 5010}]
"#;

#[test]
fn a_connection_reports_what_all_pod_pairs_and_what_only_some_are_allowed() {
    let (bundle, compilation) = inline(TWO_REPLICAS);
    let c = of(&bundle, &compilation.artifact);
    let client = pod("app", "client");
    let web = workload("app", "ReplicaSet", "web-1");

    let connection = c.connection(&client, &web).unwrap();
    assert_eq!(connection.pairs, 2);
    assert_eq!(connection.all.to_string(), "TCP 80");
    // The named port resolves to 8080 on one replica and 8081 on the other; only the
    // canary admits the UDP range.
    assert_eq!(connection.some.to_string(), "TCP 8080-8081; UDP 5000-5010");
    // The replicas reach each other on nothing; the client is not isolated.
    assert!(c.connection(&web, &web).is_none());
    assert_eq!(between(&c, &web, &client).0, "any");
}

#[test]
fn an_artifact_alone_gives_the_same_connectivity_with_pods_ungrouped() {
    let (bundle, compilation) = inline(TWO_REPLICAS);
    let decoded = Artifact::decode(&compilation.artifact.encode()).unwrap();
    let grouped = of(&bundle, &decoded);
    assert_eq!(grouped, of(&bundle, &compilation.artifact));

    let bare = compiler::connectivity::connectivity(&decoded, &Grouping::default());
    let a = bare.connection(&pod("app", "client"), &pod("app", "web-1-a")).unwrap();
    assert_eq!(
        (a.all.to_string(), a.some.is_empty()),
        ("TCP 80, 8080; UDP 5000-5010".into(), true)
    );
    let b = bare.connection(&pod("app", "client"), &pod("app", "web-1-b")).unwrap();
    assert_eq!(b.all.to_string(), "TCP 80, 8081");
}

#[test]
fn an_owner_cycle_in_the_inputs_ends_the_climb() {
    let yaml = r#"
apiVersion: v1
kind: Namespace
metadata: {name: a}
---
apiVersion: apps/v1
kind: ReplicaSet
metadata:
  name: one
  namespace: a
  ownerReferences: [{apiVersion: apps/v1, kind: Deployment, name: two, uid: u2, controller: true}]
spec:
  selector: {matchLabels: {app: x}}
  template: {metadata: {labels: {app: x}}, spec: {containers: [{name: c}]}}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: two
  namespace: a
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: one, uid: u1, controller: true}]
spec:
  selector: {matchLabels: {app: x}}
  template: {metadata: {labels: {app: x}}, spec: {containers: [{name: c}]}}
---
apiVersion: v1
kind: Pod
metadata:
  name: p
  namespace: a
  labels: {app: x}
  ownerReferences: [{apiVersion: apps/v1, kind: ReplicaSet, name: one, uid: u1, controller: true}]
status: {podIP: 10.0.0.9}
"#;
    let mut sources = Sources::default();
    sources.add("cycle.yaml", yaml);
    let bundle = policy_lang::load_sources(&sources);
    let grouping = Grouping::from_bundle(&bundle);
    assert_eq!(grouping.group_of("a/p"), workload("a", "Deployment", "two"));
}

#[test]
fn the_same_input_gives_the_same_connectivity() {
    let (bundle, compilation) = load("valid");
    let first = of(&bundle, &compilation.artifact);
    let (bundle, compilation) = load("valid");
    assert_eq!(first, of(&bundle, &compilation.artifact));
}

#[test]
fn a_host_endpoint_is_a_group_of_its_own_judged_by_its_host_policy() {
    let (bundle, compilation) = load("e2e-host");
    let c = of(&bundle, &compilation.artifact);
    let edge = Group::Host { name: "edge".into() };
    assert_eq!(edge.to_string(), "Node edge");
    assert!(c.groups.iter().any(|g| g.group == edge), "{:?}", c.groups);
    let outside = Group::Cidr(cidr("10.77.0.0/24"));
    let (all, some) = between(&c, &outside, &edge);
    assert_eq!((all.as_str(), some.as_str()), ("TCP 8080; UDP 5353", "none"));
    // The pod behind the node has its own policy.
    let (all, _) = between(&c, &outside, &pod("x", "web"));
    assert_eq!(all, "TCP 9090");
}
