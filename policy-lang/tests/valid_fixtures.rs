//! Every file in `fixtures/valid` is shaped like what real tools export (kubectl with
//! status and managedFields, the API server's typed lists, Helm output, JSON, CRLF line
//! endings; NetworkPolicies and Cilium policies) and must read without an error or a
//! warning; notes, such as for the Services and ConfigMaps Helm renders, are allowed.
//! `compiler/tests/valid_fixtures.rs` also compiles and lints the directory, with
//! warnings denied.
//!
//! The directory is read as `policyc lint fixtures/valid` reads it, so it is also one
//! consistent cluster: every namespaced object's namespace has its Namespace object
//! (otherwise the compiler would warn, PL0022). The spot checks below pin down what
//! the decoders must get out of these shapes.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use policy_lang::ast::{NodeAddressKind, Pod, Protocol, Workload, WorkloadKind};
use policy_lang::ast_cilium::{CiliumPeer, CiliumPortSpec, Entity, IcmpFamily};
use policy_lang::manifest::read_inputs;
use policy_lang::{Bundle, Severity, Sources, load_sources};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/valid")
}

fn load(paths: &[PathBuf]) -> (Sources, Bundle) {
    let (sources, mut diagnostics) = read_inputs(paths).expect("reading fixtures/valid");
    let mut bundle = load_sources(&sources);
    diagnostics.append(&mut bundle.diagnostics);
    bundle.diagnostics = diagnostics;
    (sources, bundle)
}

/// Errors and warnings, rendered, for a failure message.
fn problems(sources: &Sources, bundle: &Bundle) -> Vec<String> {
    bundle
        .diagnostics
        .iter()
        .filter(|d| d.severity() != Severity::Note)
        .map(|d| d.render(sources))
        .collect()
}

fn pod<'b>(bundle: &'b Bundle, namespace: &str, name: &str) -> &'b Pod {
    bundle
        .pods
        .iter()
        .find(|p| p.meta.namespace == namespace && p.meta.name.value == name)
        .unwrap_or_else(|| panic!("no pod {namespace}/{name}"))
}

fn workload<'b>(bundle: &'b Bundle, kind: WorkloadKind, name: &str) -> &'b Workload {
    bundle
        .workloads
        .iter()
        .find(|w| w.kind == kind && w.meta.name.value == name)
        .unwrap_or_else(|| panic!("no {} {name}", kind.name()))
}

#[test]
fn every_file_reads_without_errors_or_warnings() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(fixtures_dir())
        .expect("fixtures/valid exists")
        .map(|e| e.expect("listing fixtures/valid").path())
        .collect();
    files.sort();
    assert!(files.len() >= 10, "fixtures/valid has only {} files", files.len());
    let mut failures = Vec::new();
    for file in &files {
        let (sources, bundle) = load(std::slice::from_ref(file));
        failures.extend(problems(&sources, &bundle));
        let objects = bundle.namespaces.len()
            + bundle.nodes.len()
            + bundle.pods.len()
            + bundle.workloads.len()
            + bundle.network_policies.len()
            + bundle.cilium_policies.len();
        if objects == 0 {
            failures.push(format!("{}: no object decoded", file.display()));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn the_directory_is_one_consistent_cluster() {
    let (sources, bundle) = load(&[fixtures_dir()]);
    assert_eq!(problems(&sources, &bundle), Vec::<String>::new());

    let namespaces: BTreeSet<&str> =
        bundle.namespaces.iter().map(|n| n.meta.name.value.as_str()).collect();
    let used = bundle
        .pods
        .iter()
        .map(|p| &p.meta)
        .chain(bundle.workloads.iter().map(|w| &w.meta))
        .chain(bundle.network_policies.iter().map(|p| &p.meta))
        .chain(bundle.cilium_policies.iter().filter(|p| !p.clusterwide).map(|p| &p.meta));
    for meta in used {
        assert!(
            namespaces.contains(meta.namespace.as_str()),
            "{} is in namespace `{}`, which has no Namespace object",
            meta.name.value,
            meta.namespace
        );
    }

    // Only the kinds Helm renders besides workloads and policies are skipped.
    let notes: Vec<&str> = bundle
        .diagnostics
        .iter()
        .filter(|d| d.severity() == Severity::Note)
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(
        notes,
        [
            "v1 ServiceAccount does not affect network policy and is skipped",
            "v1 ConfigMap does not affect network policy and is skipped",
            "v1 Service does not affect network policy and is skipped",
        ]
    );
}

#[test]
fn decodes_every_object_of_the_fixtures() {
    let (_, bundle) = load(&[fixtures_dir()]);
    assert_eq!(bundle.namespaces.len(), 4);
    // Three from `kubectl get nodes`, one beside the host firewall.
    assert_eq!(bundle.nodes.len(), 4);
    // Eight from `kubectl get pods -A`, one Helm test hook.
    assert_eq!(bundle.pods.len(), 9);
    assert_eq!(bundle.network_policies.len(), 6);
    // Two CiliumNetworkPolicies and a clusterwide one from kubectl, two from Helm, and
    // a host firewall (a clusterwide policy with a nodeSelector).
    assert_eq!(bundle.cilium_policies.len(), 6);
    assert_eq!(bundle.cilium_policies.iter().filter(|p| p.clusterwide).count(), 2);
    assert!(bundle.cilium_policies.iter().flat_map(|p| &p.rules).any(|r| r.nodes));
    let mut kinds: Vec<&str> = bundle.workloads.iter().map(|w| w.kind.name()).collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "CronJob",
            "DaemonSet",
            "Deployment",
            "Deployment",
            "Deployment",
            "Job",
            "ReplicaSet",
            "ReplicaSet",
            "StatefulSet"
        ]
    );
}

#[test]
fn pods_keep_named_ports_owners_and_addresses() {
    let (_, bundle) = load(&[fixtures_dir()]);

    let dns = pod(&bundle, "kube-system", "coredns-5dd5756b68-7xk2p");
    let ports: Vec<(Option<&str>, u16, Protocol)> =
        dns.ports.iter().map(|p| (p.name.as_deref(), p.port, p.protocol)).collect();
    assert_eq!(
        ports,
        [
            (Some("dns"), 53, Protocol::Udp),
            (Some("dns-tcp"), 53, Protocol::Tcp),
            (Some("metrics"), 9153, Protocol::Tcp)
        ]
    );
    assert_eq!(dns.service_account.as_ref().map(|s| s.value.as_str()), Some("coredns"));

    let web = pod(&bundle, "shop", "web-6b7f9c8d4-2kq9x");
    let owner = web.owner.as_ref().expect("the web pod has a controller");
    assert_eq!((owner.kind.as_str(), owner.name.as_str()), ("ReplicaSet", "web-6b7f9c8d4"));
    let ips: Vec<IpAddr> = web.ips.iter().map(|ip| ip.value).collect();
    assert_eq!(
        ips,
        ["10.244.1.12".parse::<IpAddr>().unwrap(), "fd00:10:244:1::c".parse().unwrap()]
    );
    assert_eq!(web.node_name.as_ref().map(|n| n.value.as_str()), Some("node-a"));

    let pending = pod(&bundle, "shop", "web-6b7f9c8d4-9rtzl");
    assert!(pending.ips.is_empty() && pending.node_name.is_none());

    let exporter = pod(&bundle, "monitoring", "node-exporter-4hx2b");
    assert!(exporter.host_network);
    assert_eq!(exporter.owner.as_ref().map(|o| o.kind.as_str()), Some("DaemonSet"));

    let hook = pod(&bundle, "shop", "cart-test-connection");
    assert!(hook.owner.is_none() && hook.ports.is_empty());
}

#[test]
fn owner_chains_lead_to_the_workloads() {
    let (_, bundle) = load(&[fixtures_dir()]);

    // Pod -> ReplicaSet -> Deployment, the ReplicaSet read from the CRLF file.
    let rs = workload(&bundle, WorkloadKind::ReplicaSet, "web-6b7f9c8d4");
    assert_eq!(
        rs.owner.as_ref().map(|o| (o.kind.as_str(), o.name.as_str())),
        Some(("Deployment", "web"))
    );
    assert_eq!(rs.template_labels["pod-template-hash"], "6b7f9c8d4");
    assert_eq!((rs.meta.name.span.line, rs.meta.name.span.col), (17, 11));
    let deployment = workload(&bundle, WorkloadKind::Deployment, "web");
    assert!(
        deployment
            .selector
            .as_ref()
            .expect("selector")
            .matches(&pod(&bundle, "shop", "web-6b7f9c8d4-2kq9x").meta.labels)
    );

    // Pod -> Job -> CronJob.
    let report = pod(&bundle, "shop", "report-28493460-7pz4q");
    let job_name = &report.owner.as_ref().expect("the report pod has a controller").name;
    let job = workload(&bundle, WorkloadKind::Job, job_name);
    assert!(job.selector.is_some());
    assert_eq!(job.owner.as_ref().map(|o| o.name.as_str()), Some("report"));
    let cronjob = workload(&bundle, WorkloadKind::CronJob, "report");
    assert!(cronjob.selector.is_none());
    assert_eq!(cronjob.template_labels["app.kubernetes.io/name"], "report");
    assert_eq!(cronjob.service_account.as_ref().map(|s| s.value.as_str()), Some("report"));
}

#[test]
fn workloads_carry_their_template() {
    let (_, bundle) = load(&[fixtures_dir()]);

    let cart = workload(&bundle, WorkloadKind::Deployment, "cart");
    let names: Vec<Option<&str>> = cart.ports.iter().map(|p| p.name.as_deref()).collect();
    assert_eq!(names, [Some("grpc"), Some("metrics")]);
    assert_eq!(cart.template_labels["app.kubernetes.io/managed-by"], "Helm");

    let postgres = workload(&bundle, WorkloadKind::StatefulSet, "postgres");
    assert_eq!(postgres.ports[0].name.as_deref(), Some("postgres"));
    assert_eq!(postgres.ports[0].port, 5432);

    let exporter = workload(&bundle, WorkloadKind::DaemonSet, "node-exporter");
    assert!(exporter.host_network);
    assert_eq!(exporter.meta.namespace, "monitoring");
}

#[test]
fn nodes_of_a_typed_list_keep_addresses_and_pod_cidrs() {
    let (_, bundle) = load(&[fixtures_dir().join("nodes-api.json")]);
    let node = bundle.nodes.iter().find(|n| n.meta.name.value == "node-a").expect("node-a");
    assert_eq!(node.meta.namespace, "");
    let addresses: Vec<(NodeAddressKind, String)> =
        node.addresses.iter().map(|a| (a.kind, a.ip.value.to_string())).collect();
    assert_eq!(
        addresses,
        [
            (NodeAddressKind::InternalIp, "10.0.1.11".to_owned()),
            (NodeAddressKind::InternalIp, "fd00:10:0:1::11".to_owned()),
            (NodeAddressKind::ExternalIp, "203.0.113.11".to_owned()),
        ]
    );
    let cidrs: Vec<String> = node.pod_cidrs.iter().map(|c| c.value.to_string()).collect();
    assert_eq!(cidrs, ["10.244.1.0/24", "fd00:10:244:1::/64"]);
    assert_eq!(node.meta.labels["topology.kubernetes.io/zone"], "eu-central-1b");
}

#[test]
fn cilium_exports_keep_rules_and_drop_status_and_source_prefixes() {
    let (_, bundle) = load(&[fixtures_dir().join("cilium-policies-export.yaml")]);
    let policy =
        |name: &str| bundle.cilium_policies.iter().find(|p| p.meta.name.value == name).expect(name);

    // `k8s:` is the only source of pod labels, so it is dropped from selector keys.
    let web = policy("web-to-payment-provider");
    assert_eq!(web.meta.namespace, "shop");
    let rule = &web.rules[0];
    assert_eq!(rule.subject.match_labels["app.kubernetes.io/name"], "web");
    assert!(rule.default_deny_egress && !rule.default_deny_ingress);
    let Some([CiliumPeer::Cidr { cidr, except, .. }]) = rule.egress[0].peers.as_deref() else {
        panic!("one CIDR set peer: {:?}", rule.egress[0].peers)
    };
    assert_eq!(
        (cidr.to_string(), except[0].to_string()),
        ("203.0.113.0/24".into(), "203.0.113.128/25".into())
    );

    // `specs`: two rules, the second's explicit enableDefaultDeny kept as written.
    let hardening = policy("postgres-hardening");
    assert_eq!(hardening.rules.iter().map(|r| r.index).collect::<Vec<_>>(), [Some(0), Some(1)]);
    assert!(hardening.rules[0].default_deny_ingress && hardening.rules[0].default_deny_egress);
    assert!(hardening.rules[1].default_deny_ingress && !hardening.rules[1].default_deny_egress);
    let port = &hardening.rules[1].egress_deny[0].l4.as_ref().expect("ports").ports[0];
    assert_eq!(
        (port.protocol, &port.port),
        (Some(Protocol::Tcp), &CiliumPortSpec::Range(5433, 5433))
    );

    let dns = policy("cluster-dns");
    assert!(dns.clusterwide && dns.meta.namespace.is_empty());
    let subject = &dns.rules[0].subject.match_labels;
    assert_eq!(subject["io.kubernetes.pod.namespace"], "kube-system");
    let ingress = &dns.rules[0].ingress;
    assert!(
        matches!(ingress[0].peers.as_deref(), Some([CiliumPeer::Entity(e)]) if e.value == Entity::Cluster)
    );
    let icmps = &ingress[1].l4.as_ref().expect("icmps").icmps;
    let types: Vec<(IcmpFamily, u8)> = icmps.iter().map(|m| (m.family, m.icmp_type)).collect();
    assert_eq!(types, [(IcmpFamily::V4, 8), (IcmpFamily::V6, 128)]);
}

#[test]
fn helm_output_with_an_empty_document_reads_its_cilium_policies() {
    let (sources, bundle) = load(&[fixtures_dir().join("helm-cart-cilium.yaml")]);
    assert!(bundle.diagnostics.is_empty(), "{:?}", problems(&sources, &bundle));
    let names: Vec<&str> =
        bundle.cilium_policies.iter().map(|p| p.meta.name.value.as_str()).collect();
    assert_eq!(names, ["cart-test-connection", "cart-metrics"]);
    let metrics = &bundle.cilium_policies[1].rules[0].ingress[0];
    let entities: Vec<Entity> = metrics
        .peers
        .iter()
        .flatten()
        .filter_map(|p| match p {
            CiliumPeer::Entity(e) => Some(e.value),
            _ => None,
        })
        .collect();
    assert_eq!(entities, [Entity::Host, Entity::RemoteNode]);
    let named = &bundle.cilium_policies[0].rules[0].egress[0].l4.as_ref().expect("ports").ports[0];
    assert_eq!(named.port, CiliumPortSpec::Named("grpc".into()));
}
