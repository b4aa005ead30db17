//! The `policyc` binary as CI pipelines use it: exit codes, output formats, determinism.

mod support;

use support::{policyc, stderr, stdout};

use std::path::Path;
use std::process::Command;

#[test]
fn lint_exit_codes_follow_ci_conventions() {
    let clean = policyc(&["lint", "fixtures/demo"]);
    assert_eq!(clean.status.code(), Some(0), "{}", stderr(&clean));

    let errors = policyc(&["lint", "fixtures/invalid/PL0013-port-out-of-range.yaml"]);
    assert_eq!(errors.status.code(), Some(1));
    assert!(stderr(&errors).contains("error[PL0013]"), "{}", stderr(&errors));

    // A warning fails only with --deny-warnings.
    let warning = "fixtures/invalid/PL0200-policy-selects-nothing.yaml";
    assert_eq!(policyc(&["lint", warning]).status.code(), Some(0));
    assert_eq!(policyc(&["lint", "--deny-warnings", warning]).status.code(), Some(1));

    let missing = policyc(&["lint", "no/such/dir"]);
    assert_eq!(missing.status.code(), Some(2), "{}", stderr(&missing));
    let usage = policyc(&["lint", "--format", "xml", "fixtures/demo"]);
    assert_eq!(usage.status.code(), Some(2));
}

#[test]
fn lint_writes_sarif_that_names_rules_and_regions() {
    let out =
        policyc(&["lint", "--format", "sarif", "fixtures/invalid/PL0013-port-out-of-range.yaml"]);
    assert_eq!(out.status.code(), Some(1));
    let log: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("SARIF is JSON");
    assert_eq!(log["version"], "2.1.0");
    let result = &log["runs"][0]["results"][0];
    assert_eq!(result["ruleId"], "PL0013");
    let region = &result["locations"][0]["physicalLocation"]["region"];
    assert_eq!(region["startLine"], 16);
    assert_eq!(region["startColumn"], 17);
}

#[test]
fn sarif_places_a_result_without_a_span_in_an_input_file() {
    // PL0300 is about the inputs as a whole; code scanning still needs a file and a line.
    let fixture = "fixtures/invalid/PL0300-policy-table-full.yaml";
    let out = policyc(&["lint", "--format", "sarif", "--max-policy-entries", "2", fixture]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let log: serde_json::Value = serde_json::from_str(&stdout(&out)).expect("SARIF is JSON");
    let results = log["runs"][0]["results"].as_array().expect("results");
    let result = results.iter().find(|r| r["ruleId"] == "PL0300").expect("a PL0300 result");
    let location = &result["locations"][0]["physicalLocation"];
    assert_eq!(location["artifactLocation"]["uri"], fixture);
    assert_eq!(location["region"]["startLine"], 1);
    assert_eq!(location["region"]["startColumn"], 1);
    let rule =
        &log["runs"][0]["tool"]["driver"]["rules"][result["ruleIndex"].as_u64().unwrap() as usize];
    assert!(rule["helpUri"].as_str().unwrap().starts_with("https://"), "{rule}");
}

#[test]
fn compile_is_byte_identical_across_runs_and_refuses_bad_input() {
    let dir = std::env::temp_dir().join(format!("policyc-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = dir.join("a.artifact");
    let b = dir.join("b.artifact");
    for path in [&a, &b] {
        let out = policyc(&["compile", "fixtures/demo", "-o", path.to_str().unwrap()]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert!(stdout(&out).contains("5 endpoints"), "{}", stdout(&out));
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    let inspect = policyc(&["inspect", a.to_str().unwrap()]);
    assert!(inspect.status.success());
    assert!(stdout(&inspect).contains("NetworkPolicy shop/postgres ingress[0]"));

    let bad = dir.join("bad.artifact");
    let out = policyc(&[
        "compile",
        "fixtures/invalid/PL0013-port-out-of-range.yaml",
        "-o",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(!Path::new(&bad).exists(), "an artifact was written despite errors");

    // A corrupted artifact is refused with the reason.
    let mut bytes = std::fs::read(&a).unwrap();
    let last = bytes.len() - 40;
    bytes[last] ^= 1;
    std::fs::write(&bad, bytes).unwrap();
    let out = policyc(&["inspect", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("checksum mismatch"), "{}", stderr(&out));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn trace_names_the_deciding_rule_and_its_line() {
    let out = policyc(&[
        "trace",
        "fixtures/demo",
        "--from",
        "shop:app=cart",
        "--to",
        "shop/postgres-0",
        "--port",
        "5432",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(
            "egress at shop/cart-5c8d7f9b4-fghij: allowed by NetworkPolicy shop/cart egress[0]"
        ),
        "{text}"
    );
    assert!(text.contains("ingress at shop/postgres-0: allowed by NetworkPolicy shop/postgres ingress[0] fixtures/demo/policies.yaml:106:7"), "{text}");
    assert!(text.ends_with("verdict: ALLOWED\n"), "{text}");

    let out = policyc(&[
        "trace",
        "fixtures/demo",
        "--from",
        "10.244.1.11",
        "--to",
        "203.0.113.200",
        "--port",
        "443",
        "--format",
        "json",
    ]);
    let value: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(value["allowed"], false);
    assert_eq!(value["tables_agree"], true);
    assert_eq!(value["directions"][0]["reference"]["result"], "default-deny");
}

#[test]
fn compile_keeps_identity_numbers_through_the_lock_file() {
    let dir = std::env::temp_dir().join(format!("policyc-lock-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let lock = dir.join("identities.lock");
    let out_file = dir.join("x.artifact");
    let run = || {
        policyc(&[
            "compile",
            "fixtures/demo",
            "-o",
            out_file.to_str().unwrap(),
            "--lock",
            lock.to_str().unwrap(),
        ])
    };
    assert!(run().status.success());
    let first = std::fs::read_to_string(&lock).unwrap();
    assert!(first.starts_with("# policyc identity lock"), "{first}");
    assert!(first.lines().any(|l| l.starts_with("256 ")), "{first}");
    assert!(run().status.success());
    assert_eq!(std::fs::read_to_string(&lock).unwrap(), first);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn lint_reads_standard_input_for_dash() {
    use std::io::Write as _;
    let mut child = Command::new(env!("CARGO_BIN_EXE_policyc"))
        .args(["lint", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running policyc");
    let policy = "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: x\n  namespace: default\nspec:\n  podSelector: {}\n  policyTypes: [Sideways]\n";
    child.stdin.take().unwrap().write_all(policy.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("error[PL0015]") && err.contains("--> <stdin>:8:17"), "{err}");
}
