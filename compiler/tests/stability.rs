//! Properties of the artifact as a file a GitOps pipeline reviews and ships, on
//! generated clusters with NetworkPolicies and Cilium policies (support/generate.rs):
//!
//! - determinism: the same input compiled twice, or with its documents in another
//!   order, gives the same bytes;
//! - lock-file stability: with the lock of the previous compile, adding one pod or one
//!   policy keeps every identity number, and changes only the entries the addition
//!   must change; removing it again changes only what it must, and gives back the first
//!   artifact byte for byte when no identity had to change.
//!
//! Both run with ipBlocks matching pods and without. Which entries "must" change is
//! derived from the inputs, not from the solver: entries
//! keyed by an identity that appeared, disappeared or moved (a pod whose identity
//! labels the change altered), the tables of endpoints the changed policy selects, and
//! the addresses of the changed pod and prefixes of the changed policy.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use compiler::Compilation;
use compiler::artifact::Artifact;
use compiler::ir::Peer;
use compiler::lock::Lock;
use datapath::IpcacheKey;
use policy_lang::Sources;
use proptest::prelude::*;
use support::generate::{
    CiliumPolicy, Cluster, NAMESPACES, Policy, cilium_cluster, cilium_policy, cluster, pod, policy,
};

/// Compiles documents, each as a file of its own, in the order given.
fn compile(
    documents: &[(String, String)],
    lock: &Lock,
    ipblock_matches_pods: bool,
) -> Result<Compilation, String> {
    let mut sources = Sources::default();
    for (name, text) in documents {
        sources.add(name.clone(), text.clone());
    }
    let bundle = policy_lang::load_sources(&sources);
    let errors: Vec<String> = bundle.diagnostics.iter().map(|d| d.render(&sources)).collect();
    let errors: Vec<&String> = errors.iter().filter(|e| e.starts_with("error")).collect();
    if !errors.is_empty() {
        return Err(format!("{errors:?}"));
    }
    let options = compiler::Options {
        lock: lock.clone(),
        ipblock_matches_pods,
        ..compiler::Options::default()
    };
    let compilation = compiler::compile_with(&sources, &bundle, &options);
    if compilation.diagnostics.iter().any(|d| d.severity() == policy_lang::Severity::Error) {
        return Err(format!("{:?}", compilation.diagnostics));
    }
    Ok(compilation)
}

/// A cluster of either generator.
fn any_cluster() -> impl Strategy<Value = Cluster> {
    prop_oneof![cluster(), cilium_cluster()]
}

/// What one step adds.
#[derive(Clone, Debug)]
enum Addition {
    Pod(support::generate::Pod),
    Policy(Policy),
    Cilium(CiliumPolicy),
}

fn addition() -> impl Strategy<Value = Addition> {
    prop_oneof![
        pod().prop_map(Addition::Pod),
        policy().prop_map(Addition::Policy),
        cilium_policy().prop_map(Addition::Cilium),
    ]
}

/// The cluster with the addition, and how the compile names what was added: the pod's
/// `namespace/name`, or the lowered policy's name.
fn with(cluster: &Cluster, addition: &Addition) -> (Cluster, Change) {
    let mut out = cluster.clone();
    let change = match addition.clone() {
        Addition::Pod(pod) => {
            out.pods.push(pod);
            out = out.fitted();
            let i = out.pods.len() - 1;
            Change::Pod(format!("{}/p{i}", NAMESPACES[out.pods[i].namespace]))
        }
        Addition::Policy(policy) => {
            out.policies.push(policy);
            out = out.fitted();
            let i = out.policies.len() - 1;
            let namespace = NAMESPACES[out.policies[i].namespace];
            Change::Policy(format!("NetworkPolicy {namespace}/np{i}"))
        }
        Addition::Cilium(policy) => {
            out.cilium.push(policy);
            out = out.fitted();
            let i = out.cilium.len() - 1;
            Change::Policy(match out.cilium[i].namespace {
                Some(ns) => format!("CiliumNetworkPolicy {}/cnp{i}", NAMESPACES[ns]),
                None => format!("CiliumClusterwideNetworkPolicy ccnp{i}"),
            })
        }
    };
    (out, change)
}

#[derive(Clone, Debug)]
enum Change {
    /// `namespace/pod` of the pod added or removed.
    Pod(String),
    /// The lowered name of the policy added or removed.
    Policy(String),
}

/// Label keys a policy change may add to or remove from a pod's identity labels: how
/// the pod resolves a port name an egress rule uses, and (with ipBlocks matching pods)
/// which ipBlocks hold it.
fn derived_key(key: &str) -> bool {
    key.starts_with("k8s:policyc.port.") || key.starts_with("k8s:policyc.ipblock.")
}

fn labels_of(artifact: &Artifact, id: u32) -> Vec<(String, String)> {
    artifact.identities.iter().find(|r| r.id == id).map(|r| r.labels.clone()).unwrap_or_default()
}

/// A table's content without its number: whether it is enforced at all (table 0 is
/// not; an enforced table may be empty), and (identity, proto, port bits, port) ->
/// (verdict, rule).
type Content = (bool, BTreeMap<(u32, u8, u8, u16), (u8, u32)>);

fn content(artifact: &Artifact, table: u32) -> Content {
    let entries = artifact
        .policy
        .iter()
        .filter(|(k, _)| table != 0 && k.table == table)
        .map(|(k, v)| ((k.identity, k.proto, k.port_bits, k.port), (v.verdict, v.rule)))
        .collect();
    (table != 0, entries)
}

/// Whether the endpoint named `name` is selected by the lowered policy `policy` in
/// `compilation` (where the policy exists).
fn selected_by(compilation: &Compilation, policy: &str, name: &str) -> bool {
    let index = compilation.artifact.endpoints.iter().position(|e| e.name == name);
    let Some(labels) = index.map(|i| &compilation.analysis.endpoint_labels[i]) else {
        return false;
    };
    compilation.analysis.policies.iter().any(|p| p.name == policy && p.subject.matches(labels))
}

/// Every prefix a lowered policy names (cidr and except), as ipcache keys.
fn prefixes_of(compilation: &Compilation, policy: &str) -> BTreeSet<(IpAddr, u8)> {
    compilation
        .analysis
        .policies
        .iter()
        .filter(|p| p.name == policy)
        .flat_map(|p| &p.rules)
        .flat_map(|r| r.peers.iter().flatten())
        .flat_map(|peer| match peer {
            Peer::Cidr { cidr, except } => std::iter::once(*cidr).chain(except.clone()).collect(),
            _ => Vec::new(),
        })
        .map(|c| (c.addr, c.prefix))
        .collect()
}

fn prefix(key: &IpcacheKey) -> (IpAddr, u8) {
    let addr = if key.family == datapath::FAMILY_IPV4 {
        IpAddr::from([key.addr[0], key.addr[1], key.addr[2], key.addr[3]])
    } else {
        IpAddr::from(key.addr)
    };
    (addr, key.prefix_bits() as u8)
}

/// Checks that `after` differs from `before` only where `change` must make it differ.
/// `with_change` is whichever of the two holds the changed pod or policy.
fn only_what_must_change(
    before: &Compilation,
    after: &Compilation,
    change: &Change,
    with_change: &Compilation,
) -> Result<(), String> {
    let (old, new) = (&before.artifact, &after.artifact);

    // Numbers of label sets that live on are kept; new ones are fresh.
    for (labels, id) in &before.lock.live {
        if let Some(kept) = after.lock.live.get(labels).filter(|kept| *kept != id) {
            return Err(format!("identity {labels:?} renumbered {id} -> {kept}"));
        }
    }
    let highest = before.lock.live.values().chain(before.lock.retired.keys()).max().copied();
    for (labels, id) in &after.lock.live {
        let fresh = highest.is_none_or(|h| *id > h);
        if !before.lock.live.contains_key(labels) && !fresh {
            return Err(format!("new identity {labels:?} took {id}, not a fresh number"));
        }
    }

    // Endpoints on both sides keep their numbers; an identity moves only when a policy
    // change altered the pod's derived identity labels.
    let mut changed: BTreeSet<u32> = BTreeSet::new();
    let ids = |a: &Artifact| a.identities.iter().map(|r| r.id).collect::<BTreeSet<u32>>();
    changed.extend(ids(old).symmetric_difference(&ids(new)));
    let mut moved = BTreeMap::new();
    for ep in &old.endpoints {
        let Some(now) = new.endpoint(&ep.name) else { continue };
        if now.endpoint_id != ep.endpoint_id {
            return Err(format!("endpoint {} renumbered", ep.name));
        }
        if now.identity == ep.identity {
            continue;
        }
        let (was, is) = (labels_of(old, ep.identity), labels_of(new, now.identity));
        let differing: Vec<&(String, String)> = was
            .iter()
            .filter(|l| !is.contains(l))
            .chain(is.iter().filter(|l| !was.contains(l)))
            .collect();
        let explained = matches!(change, Change::Policy(_))
            && !differing.is_empty()
            && differing.iter().all(|(k, _)| derived_key(k));
        if !explained {
            return Err(format!(
                "{} moved from identity {} to {}: {differing:?}",
                ep.name, ep.identity, now.identity
            ));
        }
        changed.extend([ep.identity, now.identity]);
        moved.insert(ep.name.clone(), ());
    }

    // Addresses: the changed pod's come or go; the changed policy's prefixes may; every
    // other keeps its identity unless its pod moved.
    let changed_addresses: BTreeSet<IpAddr> = match change {
        Change::Pod(name) => {
            with_change.artifact.endpoint(name).unwrap().addresses.iter().copied().collect()
        }
        Change::Policy(_) => BTreeSet::new(),
    };
    let changed_prefixes = match change {
        Change::Policy(policy) => prefixes_of(with_change, policy),
        Change::Pod(_) => BTreeSet::new(),
    };
    let moved_addresses: BTreeSet<IpAddr> = old
        .endpoints
        .iter()
        .filter(|e| moved.contains_key(&e.name))
        .flat_map(|e| e.addresses.iter().copied())
        .collect();
    let map =
        |a: &Artifact| a.ipcache.iter().map(|(k, id)| (prefix(k), *id)).collect::<BTreeMap<_, _>>();
    let (old_ipcache, new_ipcache) = (map(old), map(new));
    for key in old_ipcache.keys().chain(new_ipcache.keys()) {
        let (was, is) = (old_ipcache.get(key), new_ipcache.get(key));
        if was == is {
            continue;
        }
        let full = if key.0.is_ipv4() { 32 } else { 128 };
        let address = key.1 == full
            && (changed_addresses.contains(&key.0) || moved_addresses.contains(&key.0));
        let named = changed_prefixes.contains(key) && (was.is_none() || is.is_none());
        if !(address || named) {
            return Err(format!("ipcache {key:?}: {was:?} -> {is:?}"));
        }
    }

    // Tables: an endpoint's table changes only in entries keyed by a changed identity,
    // unless the changed policy selects it. Table numbers come from the policies that
    // select the endpoints (and their ports), so a table the changed policy does not
    // feed keeps its number even when some of its entries change.
    for ep in &old.endpoints {
        let Some(now) = new.endpoint(&ep.name) else { continue };
        let selected = match change {
            Change::Policy(policy) => selected_by(with_change, policy, &ep.name),
            Change::Pod(_) => false,
        };
        for (direction, was, is) in [
            ("ingress", ep.ingress_table, now.ingress_table),
            ("egress", ep.egress_table, now.egress_table),
        ] {
            let (a, b) = (content(old, was), content(new, is));
            if selected {
                continue;
            }
            if was != is {
                return Err(format!("{} {direction}: table renumbered {was} -> {is}", ep.name));
            }
            if a == b {
                continue;
            }
            if a.0 != b.0 {
                return Err(format!(
                    "{} {direction}: enforcement changed, table {was} -> {is}",
                    ep.name
                ));
            }
            let keys: BTreeSet<_> = a.1.keys().chain(b.1.keys()).collect();
            for key in keys {
                if a.1.get(key) != b.1.get(key) && !changed.contains(&key.0) {
                    return Err(format!(
                        "{} {direction}: entry {key:?} {:?} -> {:?} (changed identities {changed:?})",
                        ep.name,
                        a.1.get(key),
                        b.1.get(key)
                    ));
                }
            }
        }
    }

    // Rules of the other policies keep their cookies and records.
    let rules = |a: &Artifact| -> BTreeSet<_> {
        a.rules
            .iter()
            .filter(|r| !matches!(change, Change::Policy(p) if r.policy == *p))
            .cloned()
            .collect()
    };
    if rules(old) != rules(new) {
        return Err("rules of other policies changed".into());
    }
    Ok(())
}

proptest! {
    // 48 cases, each compiled five times; PROPTEST_CASES=2000 searches deeper.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(48),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_same_input_in_any_document_order_gives_the_same_bytes(
        cluster in any_cluster(),
        keys in prop::collection::vec(any::<u32>(), 32),
        ipblock_matches_pods in any::<bool>(),
    ) {
        let documents = cluster.documents();
        let mut order: Vec<usize> = (0..documents.len()).collect();
        order.sort_by_key(|&i| keys[i % keys.len()].wrapping_add(i as u32));
        let shuffled: Vec<(String, String)> = order.iter().map(|&i| documents[i].clone()).collect();
        let lock = Lock::default();

        let first = compile(&documents, &lock, ipblock_matches_pods).map_err(TestCaseError::fail)?;
        let again = compile(&documents, &lock, ipblock_matches_pods).map_err(TestCaseError::fail)?;
        let reordered = compile(&shuffled, &lock, ipblock_matches_pods).map_err(TestCaseError::fail)?;
        let bytes = first.artifact.encode();
        prop_assert!(bytes == again.artifact.encode(), "two compiles differ");
        prop_assert!(bytes == reordered.artifact.encode(), "files given in another order differ: {order:?}");
        prop_assert_eq!(first.lock.render(), reordered.lock.render());

        // One file with the documents in another order: rule locations name other lines
        // and the source digest hashes other text; everything else is the same.
        let one = |docs: &[(String, String)]| {
            let text = support::generate::join(docs.iter().map(|(_, t)| t.as_str()));
            compile(&[("all.yaml".to_owned(), text)], &lock, ipblock_matches_pods)
        };
        let mut a = one(&documents).map_err(TestCaseError::fail)?.artifact;
        let mut b = one(&shuffled).map_err(TestCaseError::fail)?.artifact;
        for artifact in [&mut a, &mut b] {
            artifact.rules.iter_mut().for_each(|r| r.location.clear());
            artifact.source_digest = [0; 32];
        }
        prop_assert!(a.encode() == b.encode(), "one file in another document order differs");
        prop_assert_eq!(a.policy, first.artifact.policy);
    }

    #[test]
    fn adding_or_removing_one_pod_or_policy_changes_only_what_it_must(
        cluster in any_cluster(),
        addition in addition(),
        ipblock_matches_pods in any::<bool>(),
    ) {
        let (bigger, change) = with(&cluster, &addition);
        let fail = |e: String| TestCaseError::fail(format!("{e}\nchange {change:?}\n{}", bigger.render()));
        let before = compile(&cluster.documents(), &Lock::default(), ipblock_matches_pods).map_err(fail)?;
        let after = compile(&bigger.documents(), &before.lock, ipblock_matches_pods).map_err(fail)?;
        only_what_must_change(&before, &after, &change, &after).map_err(fail)?;

        let removed = compile(&cluster.documents(), &after.lock, ipblock_matches_pods).map_err(fail)?;
        only_what_must_change(&after, &removed, &change, &after).map_err(fail)?;
        let moved = before.artifact.endpoints.iter().any(|e| {
            after.artifact.endpoint(&e.name).is_some_and(|now| now.identity != e.identity)
        });
        if !moved {
            prop_assert!(
                removed.artifact.encode() == before.artifact.encode(),
                "removing the addition did not give back the first artifact\nchange {change:?}\n{}",
                bigger.render()
            );
        }
    }
}
