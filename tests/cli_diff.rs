//! `policyc diff` on the two-step conformance scenarios: the connections each change
//! adds, removes or changes, the map operations between the two artifacts, and the exit
//! codes of diff(1).

mod support;

use support::{policyc, stdout};

use std::path::{Path, PathBuf};
use std::process::Output;

/// A directory holding the shared conformance cluster and one scenario's policies, so
/// that a single path names a complete input. Each test passes its own `test` name: tests
/// run in parallel, and one must never read a file another is still copying.
fn scenario(test: &str, name: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/conformance");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("cli-diff-{}", std::process::id()))
        .join(test)
        .join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(root.join("cluster.yaml"), dir.join("cluster.yaml")).unwrap();
    std::fs::copy(root.join(name).join("policy.yaml"), dir.join("policy.yaml")).unwrap();
    dir
}

/// Compiles a scenario into an artifact file and returns its path.
fn artifact(test: &str, name: &str) -> PathBuf {
    let dir = scenario(test, name);
    let path = dir.with_extension("artifact");
    let out = policyc(&["compile", dir.to_str().unwrap(), "-o", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    path
}

fn diff(old: &Path, new: &Path, format: &str) -> Output {
    policyc(&["diff", old.to_str().unwrap(), new.to_str().unwrap(), "--format", format])
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_str(&stdout(out)).expect("diff writes JSON")
}

#[test]
fn a_stacked_policy_changes_the_ports_of_three_connections() {
    let before = scenario("stacked", "15-stacked-port-policies-before");
    let after = scenario("stacked", "15-stacked-port-policies-after");
    let out = diff(&before, &after, "txt");
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(text.starts_with("connections: 0 added, 0 removed, 3 changed\n"), "{text}");
    for source in ["y/a", "y/b", "y/c"] {
        let line = format!("  ~ Pod {source} -> Pod x/a: TCP 81 => TCP 80-81\n");
        assert!(text.contains(&line), "missing {line:?} in\n{text}");
    }
    // x/a moves to a new table: one entry per y identity and port, plus the built-in
    // host entry, are new; the old table's four entries go. All eleven are prepared in
    // the idle slot before the flip, the seven new ones levelled after it, the four old
    // ones deleted.
    assert!(text.contains("  policyc_policy: 7 written, 4 deleted\n"), "{text}");
    assert!(
        text.contains("map operations: 18 write(s), 4 delete(s), 1 generation flip\n"),
        "{text}"
    );
    assert!(text.contains("  ~ x/a: identity 256, ingress table"), "{text}");
}

#[test]
fn two_artifacts_give_the_semantic_diff_and_the_map_operations() {
    let before = artifact("artifacts", "26-ingress-port-80-then-allow-all-before");
    let after = artifact("artifacts", "26-ingress-port-80-then-allow-all-after");
    let out = diff(&before, &after, "json");
    assert_eq!(out.status.code(), Some(1));
    let value = json(&out);
    assert_eq!(value["schema"], "policyc.diff/v1");
    assert_eq!(value["equal"], false);
    let changed = value["connections"]["changed"].as_array().unwrap();
    // Nine sources (eight other pods and the world) into each of the three x pods.
    assert_eq!(changed.len(), 27);
    let first = &changed[0];
    assert_eq!((&first["from"], &first["to"]), (&"Pod x/a".into(), &"Pod x/b".into()));
    assert_eq!(first["old"]["all"]["text"], "TCP 80");
    assert_eq!(first["new"]["all"]["text"], "any");
    assert_eq!(value["connections"]["added"], serde_json::json!([]));
    assert_eq!(value["maps"]["policyc_policy"], serde_json::json!({"written": 3, "deleted": 2}));
    assert_eq!(value["maps"]["policyc_ipcache"], serde_json::json!({"written": 0, "deleted": 0}));
    let ops: Vec<&str> =
        value["operations"].as_array().unwrap().iter().map(|o| o["op"].as_str().unwrap()).collect();
    // Five keys prepared (three new, two to go), the flip, the wait, the three new ones
    // levelled, the two old ones deleted.
    assert_eq!(
        ops,
        ["write", "write", "write", "write", "write", "flip", "wait", "write", "write", "write"]
            .into_iter()
            .chain(["delete", "delete"])
            .collect::<Vec<_>>()
    );
    assert_eq!(value["operations"][0]["map"], "policyc_policy");
    assert_eq!(value["operations"][5]["value"], serde_json::json!({"generation": 1}));
    // A key new to the map answers "no entry" in the live slot until the flip.
    let prepared = &value["operations"].as_array().unwrap()[..5];
    assert!(
        prepared.iter().any(|o| o["value"]["live"].is_null() && o["value"]["next"].is_object())
    );
    assert_eq!(value["endpoints"].as_array().unwrap().len(), 3);
}

#[test]
fn deleting_a_deny_all_adds_connections_and_restoring_it_removes_them() {
    let with = scenario("deny-all", "d4-deleted-policy-before");
    let without = scenario("deny-all", "d4-deleted-policy-after");

    let added = json(&diff(&with, &without, "json"));
    let list = added["connections"]["added"].as_array().unwrap();
    assert_eq!(list.len(), 27);
    assert!(list.iter().all(|c| c["all"]["any"] == true));
    assert!(list.iter().any(|c| c["from"] == "world" && c["to"] == "Pod x/c"));
    assert_eq!(added["maps"]["policyc_policy"], serde_json::json!({"written": 0, "deleted": 1}));

    let removed = json(&diff(&without, &with, "json"));
    assert_eq!(removed["connections"]["removed"].as_array().unwrap().len(), 27);
    assert_eq!(removed["connections"]["added"], serde_json::json!([]));
    assert_eq!(removed["maps"]["policyc_policy"], serde_json::json!({"written": 1, "deleted": 0}));
}

#[test]
fn equal_inputs_exit_zero_whether_manifests_or_artifacts() {
    let dir = scenario("equal", "26-ingress-port-80-then-allow-all-before");
    let compiled = artifact("equal", "26-ingress-port-80-then-allow-all-before");
    for (old, new) in [(&dir, &dir), (&compiled, &dir), (&dir, &compiled)] {
        let out = diff(old, new, "txt");
        assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
        assert!(stdout(&out).contains("map operations: 0 write(s), 0 delete(s)"));
    }
}

#[test]
fn unreadable_inputs_exit_two() {
    let dir = scenario("unreadable", "26-ingress-port-80-then-allow-all-before");
    let missing = Path::new("no/such/input");
    assert_eq!(diff(&dir, missing, "txt").status.code(), Some(2));

    // Starts like an artifact, then is not one.
    let broken = dir.with_extension("broken");
    std::fs::write(&broken, b"PLCYMAP\0 and then nothing").unwrap();
    let out = diff(&broken, &dir, "txt");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("decoding artifact"));
}
