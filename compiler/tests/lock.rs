//! Lock-file stability: a small change to the inputs changes only what it must.

use std::collections::BTreeSet;
use std::path::PathBuf;

use compiler::artifact::Artifact;
use compiler::{Options, compile_with};
use policy_lang::Sources;

fn demo_sources(extra: Option<&str>) -> Sources {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/demo");
    let mut sources = Sources::default();
    for name in ["namespaces.yaml", "pods.yaml", "policies.yaml"] {
        sources.add(name, std::fs::read_to_string(dir.join(name)).unwrap());
    }
    if let Some(text) = extra {
        sources.add("extra.yaml", text);
    }
    sources
}

fn build(sources: &Sources, options: &Options) -> compiler::Compilation {
    let bundle = policy_lang::load_sources(sources);
    assert!(!bundle.has_errors(), "{:?}", bundle.diagnostics);
    compile_with(sources, &bundle, options)
}

/// A new workload whose labels sort before every existing one: without the lock it
/// would shift every identity number.
const NEW_POD: &str = "
apiVersion: v1
kind: Pod
metadata:
  name: aaa-first
  namespace: shop
  labels: {app: aaa}
status: {podIP: 10.244.9.9}
";

fn numbers(artifact: &Artifact) -> BTreeSet<(String, u32)> {
    artifact.endpoints.iter().map(|e| (e.name.clone(), e.identity)).collect()
}

#[test]
fn adding_a_pod_keeps_every_existing_identity_and_entry() {
    let before = build(&demo_sources(None), &Options::default());
    let options = Options { lock: before.lock.clone(), ..Options::default() };
    let after = build(&demo_sources(Some(NEW_POD)), &options);

    let old = numbers(&before.artifact);
    let new = numbers(&after.artifact);
    assert!(old.is_subset(&new), "an existing endpoint changed identity: {old:?} vs {new:?}");
    assert_eq!(new.len(), old.len() + 1);

    // Endpoint numbers (which own conntrack entries) do not move either.
    for ep in &before.artifact.endpoints {
        assert_eq!(after.artifact.endpoint(&ep.name).unwrap().endpoint_id, ep.endpoint_id);
    }
    // The new pod selects nothing and nothing selects it, except the namespace-wide
    // default deny and DNS policies: the policy entries that existed are all still there.
    let old_entries: BTreeSet<_> = before.artifact.policy.iter().collect();
    let new_entries: BTreeSet<_> = after.artifact.policy.iter().collect();
    assert!(old_entries.is_subset(&new_entries));

    // Without the lock, the same change renumbers existing identities.
    let unlocked = build(&demo_sources(Some(NEW_POD)), &Options::default());
    assert!(!old.is_subset(&numbers(&unlocked.artifact)));
}

#[test]
fn removing_a_pod_retires_its_number_and_a_recompile_is_stable() {
    let with = build(&demo_sources(Some(NEW_POD)), &Options::default());
    let id = with.artifact.endpoint("shop/aaa-first").unwrap().identity;
    let without =
        build(&demo_sources(None), &Options { lock: with.lock.clone(), ..Options::default() });
    assert!(without.lock.retired.contains_key(&id));
    let again =
        build(&demo_sources(None), &Options { lock: without.lock.clone(), ..Options::default() });
    assert_eq!(again.lock.render(), without.lock.render());
    assert_eq!(again.artifact.encode(), without.artifact.encode());
}
