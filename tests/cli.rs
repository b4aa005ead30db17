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
    // Replies pass by conntrack at both ends, each naming the rule that allowed the
    // connection there, although no policy allows postgres to open one to the cart.
    assert!(
        text.contains("  replies (shop/postgres-0 -> shop:app=cart (shop/cart-5c8d7f9b4-fghij)), by conntrack at each endpoint:\n    egress at shop/postgres-0: pass, tracked since the connection was allowed by NetworkPolicy shop/postgres ingress[0] fixtures/demo/policies.yaml:106:7\n    ingress at shop/cart-5c8d7f9b4-fghij: pass, tracked since the connection was allowed by NetworkPolicy shop/cart egress[0] fixtures/demo/policies.yaml:79:7\n"),
        "{text}"
    );
    let reverse = policyc(&[
        "trace",
        "fixtures/demo",
        "--from",
        "shop/postgres-0",
        "--to",
        "shop:app=cart",
        "--port",
        "5432",
        "--format",
        "json",
    ]);
    let value: serde_json::Value = serde_json::from_str(&stdout(&reverse)).unwrap();
    assert_eq!(value["allowed"], false, "a new connection the other way is refused");
    assert_eq!(value["replies"]["passes"], false);
    let replies = &value["replies"]["directions"];
    assert_eq!(replies[0]["direction"], "egress");
    assert_eq!(replies[0]["at"], "shop/cart-5c8d7f9b4-fghij");
    assert_eq!(replies[0]["passes"], false);
    assert_eq!(replies[0]["forward"]["result"], "default-deny");
    assert_eq!(replies[1]["direction"], "ingress");
    assert_eq!(replies[1]["at"], "shop/postgres-0");
    assert_eq!(replies[1]["passes"], false);

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

#[test]
fn compile_stats_count_host_addresses_apart_from_shorter_prefixes() {
    let dir = std::env::temp_dir().join(format!("policyc-stats-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let artifact = dir.join("cidr.artifact");
    // Five pods and one bare address (a /32) go to the hosts map; 192.0.2.0/24, its
    // except 192.0.2.128/25 and 10.0.0.0/8 to the ipcache trie.
    let inputs = ["fixtures/cilium/cluster.yaml", "fixtures/cilium/cidr.yaml"];
    let args = |extra: &[&'static str]| {
        let mut args = vec!["compile", inputs[0], inputs[1], "-o", artifact.to_str().unwrap()];
        args.extend_from_slice(extra);
        policyc(&args)
    };
    let out = args(&["--stats"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("1 policy tables, 3 policy entries, 6 host entries, 3 ipcache entries"),
        "{text}"
    );
    assert!(text.contains("\n  hosts map: 6 of "), "{text}");
    assert!(text.contains("\n  ipcache map: 3 of "), "{text}");
    assert!(text.contains("\n  policy map: 3 of "), "{text}");
    assert!(
        text.contains("\n  table ") && text.contains(": 3 entries, used by x/client\n"),
        "{text}"
    );

    // Each count is held against its own map's limit.
    let out = args(&["--max-host-entries", "6", "--max-ipcache-entries", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = args(&["--max-host-entries", "5"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the hosts table needs 6 entries, its limit is 5"),
        "{}",
        stderr(&out)
    );
    let out = args(&["--max-ipcache-entries", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("the ipcache table needs 3 entries, its limit is 2"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn trace_names_workloads_by_their_owner_chain() {
    // Pods owned by ReplicaSet web-6b7f9c8d4, itself owned by Deployment web; cart by a
    // Helm-rendered Deployment. The first pod in name order stands for each.
    for from in ["shop/web", "shop/web-6b7f9c8d4"] {
        let out = policyc(&[
            "trace",
            "fixtures/valid",
            "--from",
            from,
            "--to",
            "shop/cart",
            "--port",
            "9090",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.starts_with(&format!(
                "{from} (shop/web-6b7f9c8d4-2kq9x) -> shop/cart (shop/cart-7c9d8b6f5-mq2wd) TCP/9090\n"
            )),
            "{text}"
        );
        assert!(text.contains("  egress at shop/web-6b7f9c8d4-2kq9x: allowed by NetworkPolicy shop/web egress[0] fixtures/valid/network-policies.yaml:82:11\n    compiled tables: allow (NetworkPolicy shop/web egress[0])\n"), "{text}");
        assert!(text.ends_with("verdict: ALLOWED\n"), "{text}");
    }
    let out = policyc(&["trace", "fixtures/valid", "--from", "shop/nothing", "--to", "1.1.1.1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no pod matches `shop/nothing`"), "{}", stderr(&out));
}

#[test]
fn trace_takes_a_label_set_no_pod_has_as_a_pod_with_exactly_those_labels() {
    let trace = |from: &str, to: &str, port: &str| {
        policyc(&["trace", "fixtures/demo", "--from", from, "--to", to, "--port", port])
    };
    // A frontend of a new rollout: its template hash is noise, so the compile would give
    // it the frontend's identity, and the tables answer by that identity.
    let new_frontend = "shop:app=frontend,tier=web,pod-template-hash=next";
    let out = trace(new_frontend, "shop/cart-5c8d7f9b4-fghij", "9090");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.starts_with(&format!("{new_frontend} (no such pod) -> shop/cart-5c8d7f9b4-fghij TCP/9090\n  {new_frontend}: no pod matches; traced as a pod of namespace shop with exactly these labels: identity ")), "{text}");
    assert!(text.contains(&format!("  egress at {new_frontend}: allowed by NetworkPolicy shop/frontend egress[0] fixtures/demo/policies.yaml:46:7\n    compiled tables: allow (NetworkPolicy shop/frontend egress[0])\n")), "{text}");
    assert!(text.contains("  ingress at shop/cart-5c8d7f9b4-fghij: allowed by NetworkPolicy shop/cart ingress[0] fixtures/demo/policies.yaml:63:7\n    compiled tables: allow (NetworkPolicy shop/cart ingress[0])\n"), "{text}");
    assert!(text.ends_with("verdict: ALLOWED\n"), "{text}");

    // The identity is the real frontend's: the same number the lock file gives it.
    let json = policyc(&[
        "trace",
        "fixtures/demo",
        "--from",
        new_frontend,
        "--to",
        "10.244.1.11",
        "--port",
        "9090",
        "--format",
        "json",
    ]);
    let value: serde_json::Value = serde_json::from_str(&stdout(&json)).unwrap();
    let identity = value["from"]["label_set"]["identity"].as_u64().expect("an identity");
    assert_eq!(value["from"]["label_set"]["namespace"], "shop");
    assert_eq!(value["from"]["label_set"]["labels"]["pod-template-hash"], "next");
    assert_eq!(value["from"]["pod"], serde_json::Value::Null);
    let dir = std::env::temp_dir().join(format!("policyc-labelset-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (artifact, lock) = (dir.join("a"), dir.join("lock"));
    let out = policyc(&[
        "compile",
        "fixtures/demo",
        "-o",
        artifact.to_str().unwrap(),
        "--lock",
        lock.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lock_text = std::fs::read_to_string(&lock).unwrap();
    let frontend_line = lock_text.lines().find(|l| l.contains("app=frontend")).unwrap();
    assert!(frontend_line.starts_with(&format!("{identity} ")), "{identity} vs {frontend_line}");
    std::fs::remove_dir_all(&dir).unwrap();

    // A label set whose identity no pod has: the reference answers, the tables cannot.
    let out = trace("shop:app=web,tier=front", "shop/cart-5c8d7f9b4-fghij", "9090");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("  shop:app=web,tier=front: no pod matches; traced as a pod of namespace shop with exactly these labels: no identity in the tables (no pod has its identity labels), so only the reference answers for it\n"), "{text}");
    assert!(text.contains("  egress at shop:app=web,tier=front: denied: isolated by NetworkPolicy shop/allow-dns, NetworkPolicy shop/default-deny and no rule allows it\n    compiled tables: not checked (the tables have no identity for `shop:app=web,tier=front`: no pod has its identity labels)\n"), "{text}");
    assert!(text.ends_with("verdict: DENIED\n"), "{text}");

    // As the destination of ingress with a named port: the label set has no container
    // ports, so `http` does not resolve on it, and no pod of its identity without ports
    // can lend it tables.
    let out = trace(
        "monitoring/prometheus-0",
        "shop:app=frontend,tier=web,pod-template-hash=next",
        "8080",
    );
    let text = stdout(&out);
    assert!(text.contains("  ingress at shop:app=frontend,tier=web,pod-template-hash=next: denied: isolated by NetworkPolicy shop/default-deny, NetworkPolicy shop/frontend and no rule allows it\n    compiled tables: not checked (no pod of identity "), "{text}");

    // A namespace the inputs do not know is a mistake, not a hypothetical pod.
    let out = trace("nope:app=x", "1.1.1.1", "80");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("namespace `nope` is not in the inputs"), "{}", stderr(&out));
}

#[test]
fn trace_takes_a_node_as_an_end_and_judges_it_by_its_host_policy() {
    // worker-1 is selected by the host firewall of fixtures/valid: SSH only from
    // 192.0.2.0/24, egress denied to the metadata service.
    let trace = |from: &str, to: &str, port: &str| {
        let out = policyc(&["trace", "fixtures/valid", "--from", from, "--to", to, "--port", port]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let text = trace("192.0.2.10", "node/worker-1", "22");
    assert!(text.contains("  ingress at node/worker-1: allowed by CiliumClusterwideNetworkPolicy worker-host-firewall ingress[0] fixtures/valid/cilium-host-policy.yaml:39:11\n    compiled tables: allow"), "{text}");
    assert!(text.ends_with("verdict: ALLOWED\n"), "{text}");
    let text = trace("203.0.113.50", "node/worker-1", "22");
    assert!(text.contains("  ingress at node/worker-1: denied: isolated by CiliumClusterwideNetworkPolicy worker-host-firewall and no rule allows it\n    compiled tables: drop (no entry matches)"), "{text}");
    assert!(text.ends_with("verdict: DENIED\n"), "{text}");
    // By address too, and as the source.
    let text = trace("10.0.1.21", "169.254.169.254", "80");
    assert!(text.contains("  egress at node/worker-1: denied by CiliumClusterwideNetworkPolicy worker-host-firewall egressDeny[0]"), "{text}");
    // A node no host policy selects is no endpoint.
    let text = trace("203.0.113.50", "node/node-a", "22");
    assert!(text.contains("nothing enforces this flow here"), "{text}");
}
