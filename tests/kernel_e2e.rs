//! End to end on the real kernel: `policyc compile` turns `fixtures/e2e` into an
//! artifact, `policyc-node apply` enforces it on veth pairs whose pod ends live in their
//! own network namespaces, and real TCP, UDP and ICMP traffic is checked against what the
//! fixture's policies say, before (everything passes) and after.
//!
//! Needs root, bpffs and BPF. Without them the test is skipped with the reason, except
//! under `CI=true`, where it fails: see `kernel::available`.
#![expect(clippy::print_stderr, reason = "the test reports its progress and why it skips")]

#[allow(dead_code, reason = "each kernel test binary uses its own part of the harness")]
mod kernel;

use std::{
    fmt,
    io::{BufRead, BufReader},
    net::Ipv4Addr,
    path::Path,
    process::{Command, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use compiler::artifact::Artifact;
use datapath::{PolicyKey, PolicyValue, PolicyVerdict, SLOTS, VERDICT_ALLOW, VERDICT_DENY};
use kernel::{
    Topology,
    artifacts::{CLIENT, INTRUDER, PODS, WEB},
    must, text,
    traffic::{Probe, check},
};
use runtime::{MapBackend, MapEntry, MapKey, kernel::KernelMaps, pins::PinDir, spec::ObjectSpec};

/// One expectation of `fixtures/e2e/policies.yaml`.
struct Case {
    from: &'static str,
    to: &'static str,
    probe: Probe,
    allowed: bool,
    why: &'static str,
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let probe = match self.probe {
            Probe::Tcp(port) => format!("TCP {port}"),
            Probe::Udp(port) => format!("UDP {port}"),
            Probe::Ping => "ping".to_owned(),
        };
        write!(f, "{} -> {} {probe}", self.from, self.to)
    }
}

const CASES: [Case; 12] = [
    Case {
        from: kernel::NODE,
        to: WEB,
        probe: Probe::Tcp(9090),
        allowed: true,
        why: "from web's own node (a kubelet probe): the node's address is the host, which \
              the built-in rule lets into every pod",
    },
    Case {
        from: CLIENT,
        to: WEB,
        probe: Probe::Tcp(8080),
        allowed: true,
        why: "web-ingress allows TCP 8080 from app=client, client-egress allows web",
    },
    Case {
        from: CLIENT,
        to: WEB,
        probe: Probe::Tcp(9090),
        allowed: false,
        why: "web-ingress allows only TCP 8080 and UDP 5353",
    },
    Case {
        from: CLIENT,
        to: WEB,
        probe: Probe::Tcp(30000),
        allowed: true,
        why: "web-ingress allows TCP 30000-32767; 30000 is the first port of its first block",
    },
    Case {
        from: CLIENT,
        to: WEB,
        probe: Probe::Tcp(32767),
        allowed: true,
        why: "web-ingress allows TCP 30000-32767; 32767 is the last port of its last block",
    },
    Case {
        from: CLIENT,
        to: WEB,
        probe: Probe::Tcp(29999),
        allowed: false,
        why: "29999 is just below the range",
    },
    Case {
        from: CLIENT,
        to: WEB,
        probe: Probe::Tcp(32768),
        allowed: false,
        why: "32768 is just above the range",
    },
    Case {
        from: CLIENT,
        to: WEB,
        probe: Probe::Udp(5353),
        allowed: true,
        why: "web-ingress allows UDP 5353 from app=client; the echo is a reply",
    },
    Case {
        from: INTRUDER,
        to: WEB,
        probe: Probe::Tcp(8080),
        allowed: false,
        why: "web-ingress's podSelector only matches pods of prod, and web-deny-dev denies it",
    },
    Case {
        from: CLIENT,
        to: INTRUDER,
        probe: Probe::Tcp(8080),
        allowed: false,
        why: "client-egress allows only app=web",
    },
    Case {
        from: CLIENT,
        to: WEB,
        probe: Probe::Ping,
        allowed: false,
        why: "web-ingress allows no ICMP",
    },
    Case {
        from: INTRUDER,
        to: CLIENT,
        probe: Probe::Ping,
        allowed: true,
        why: "client's ingress is not isolated, and its isolated egress lets the reply \
              of a tracked flow out",
    },
];

#[test]
fn enforces_the_e2e_fixture_on_veth_pods() {
    if !kernel::available() {
        return;
    }
    // A fourth pod, a new replica of web, is not in the artifact (see
    // binds_a_pod_the_artifact_does_not_list).
    let pods = [PODS[0], PODS[1], PODS[2], (WEB2, "v", WEB2_ADDRESS)];
    let topology = Topology::create(&pods, Path::new(env!("CARGO_BIN_EXE_policyc-node")));
    let pod = |endpoint| topology.pod(endpoint);

    let artifact_path = topology.work_dir.join("e2e.artifact");
    must(
        Command::new(env!("CARGO_BIN_EXE_policyc"))
            .arg("compile")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/e2e"))
            .arg("-o")
            .arg(&artifact_path),
    );
    let artifact = Artifact::decode(&std::fs::read(&artifact_path).expect("reading the artifact"))
        .expect("policyc compile wrote an artifact that does not decode");

    eprintln!("baseline, no policy applied: every case must pass");
    for case in &CASES {
        if let Err(e) = check(pod(case.from), pod(case.to), case.probe, true) {
            panic!("baseline: {case} must pass before any policy is applied: {e}");
        }
    }

    let bindings: Vec<String> = topology
        .pods
        .iter()
        .filter(|p| p.endpoint != WEB2)
        .map(|p| format!("{}={}", p.host_veth, p.endpoint))
        .collect();
    let mut apply_args = vec!["apply", artifact_path.to_str().expect("UTF-8 temp path")];
    for binding in &bindings {
        apply_args.extend(["--iface", binding]);
    }

    let first = topology.policyc_node(&apply_args);
    assert!(first.status.success(), "policyc-node apply failed: {}", text(&first));
    let summary = String::from_utf8_lossy(&first.stdout).into_owned();
    eprintln!("{summary}");
    assert_eq!(changes(&summary, "policyc_endpoints"), (3, 0), "{summary}");
    assert_eq!(summary.matches("(ingress)").count() + summary.matches("(egress)").count(), 6);

    check_cases(&topology, "after apply");
    observes_a_denied_connection_within_a_second(&topology);
    binds_a_pod_the_artifact_does_not_list(&topology);

    let again = topology.policyc_node(&apply_args);
    assert!(again.status.success(), "second apply failed: {}", text(&again));
    let again = String::from_utf8_lossy(&again.stdout).into_owned();
    for map in ["policyc_endpoints", "policyc_ipcache", "policyc_policy"] {
        assert_eq!(changes(&again, map), (0, 0), "a repeated apply must write nothing:\n{again}");
    }
    assert!(again.contains("attached: none"), "a repeated apply must not attach again:\n{again}");

    repairs_drift(&topology, &artifact, &apply_args);
    detaches_interfaces_no_longer_bound(&topology, &apply_args);

    let status = topology.policyc_node(&["status"]);
    assert!(status.status.success(), "policyc-node status failed: {}", text(&status));
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    eprintln!("{status}");
    let policy_drops =
        counter(&status, "POLICYC_DROP_NO_POLICY") + counter(&status, "POLICYC_DROP_POLICY_DENY");
    assert!(policy_drops > 0, "blocked cases must show as policy drops:\n{status}");
    assert!(counter(&status, "POLICYC_PASS_POLICY") > 0, "{status}");
    assert!(counter(&status, "POLICYC_PASS_REPLY") > 0, "{status}");

    let out = topology.policyc_node(&["uninstall"]);
    assert!(out.status.success(), "policyc-node uninstall failed: {}", text(&out));
    assert!(!topology.pin_dir.exists(), "uninstall must remove {}", topology.pin_dir.display());
    let blocked_before = &CASES[9];
    if let Err(e) =
        check(pod(blocked_before.from), pod(blocked_before.to), blocked_before.probe, true)
    {
        panic!("after uninstall, {blocked_before} must pass again: {e}");
    }
}

/// A new replica of web that the artifact does not list.
const WEB2: &str = "prod/web-2";
const WEB2_ADDRESS: [u8; 4] = [198, 18, 0, 13];

/// `endpoint add` binds a pod the artifact does not list by its labels: it gets web's
/// identity and policy, and other pods' policies see its address as web. A label set the
/// artifact has no identity for is refused with a recompile hint. `endpoint remove`
/// unbinds it, and its address is then the world's again.
fn binds_a_pod_the_artifact_does_not_list(topology: &Topology) {
    let web2 = topology.pod(WEB2);
    let address = Ipv4Addr::from(WEB2_ADDRESS).to_string();
    let add = |labels: &[&str]| {
        let mut args = vec!["endpoint", "add", "--iface", &web2.host_veth, "--endpoint", WEB2];
        args.extend(["--ip", &address]);
        for label in labels {
            args.extend(["--label", label]);
        }
        topology.policyc_node(&args)
    };

    let unknown = add(&["app=cache"]);
    assert!(!unknown.status.success(), "an unknown label set was bound: {}", text(&unknown));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("recompile"), "{}", text(&unknown));

    let added = add(&["app=web", "pod-template-hash=5c9d7f"]);
    assert!(added.status.success(), "endpoint add failed: {}", text(&added));
    let summary = String::from_utf8_lossy(&added.stdout).into_owned();
    assert_eq!(changes(&summary, "policyc_endpoints"), (1, 0), "{summary}");
    assert_eq!(changes(&summary, "policyc_hosts"), (1, 0), "{summary}");
    assert_eq!(changes(&summary, "policyc_policy"), (0, 0), "{summary}");
    let (client, intruder) = (topology.pod(CLIENT), topology.pod(INTRUDER));
    for (from, probe, allowed) in [
        (client, Probe::Tcp(8080), true),
        (client, Probe::Tcp(9090), false),
        (intruder, Probe::Tcp(8080), false),
    ] {
        let result = check(from, web2, probe, allowed);
        assert_eq!(result.is_ok(), allowed, "{} -> {WEB2} {probe:?}: {result:?}", from.endpoint);
    }

    let removed = topology.policyc_node(&["endpoint", "remove", "--iface", &web2.host_veth]);
    assert!(removed.status.success(), "endpoint remove failed: {}", text(&removed));
    let summary = String::from_utf8_lossy(&removed.stdout).into_owned();
    assert_eq!(changes(&summary, "policyc_endpoints"), (0, 1), "{summary}");
    assert_eq!(changes(&summary, "policyc_hosts"), (0, 1), "{summary}");
    // client's egress allows only app=web, and the address is nobody's now.
    assert!(check(client, web2, Probe::Tcp(8080), false).is_err(), "the world passed");
}

/// `policyc-node observe` shows a denied connection with both sides' identities and
/// labels and the rule that decided, within a second of the connection's first packet.
fn observes_a_denied_connection_within_a_second(topology: &Topology) {
    let args = ["observe", "--format", "json", "--verdict", "drop", "--endpoint", WEB];
    let mut observe = topology
        .policyc_node_command(&[&args[..], &["--protocol", "tcp", "--count", "1"]].concat())
        .args(["--timeout", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting policyc-node observe");

    // It says on stderr when it watches; events judged before that are not shown.
    let (ready_tx, ready) = mpsc::channel();
    let stderr = observe.stderr.take().expect("piped stderr");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line.starts_with("observing verdict events") {
                let _ = ready_tx.send(());
            } else {
                eprintln!("observe: {line}");
            }
        }
    });
    ready.recv_timeout(Duration::from_secs(20)).expect("observe did not start watching");
    let (event_tx, event) = mpsc::channel();
    let stdout = observe.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = event_tx.send((Instant::now(), line));
    });

    let sent = Instant::now();
    let (intruder, web) = (topology.pod(INTRUDER), topology.pod(WEB));
    assert!(check(intruder, web, Probe::Tcp(8080), false).is_err(), "intruder -> web passed");
    let (arrived, line) = event.recv_timeout(Duration::from_secs(20)).expect("no event shown");
    let _ = observe.wait();
    let latency = arrived.duration_since(sent);
    eprintln!("observe showed the drop {latency:?} after the first packet: {line}");
    assert!(latency < Duration::from_secs(1), "observe took {latency:?}");

    let event: serde_json::Value = serde_json::from_str(&line).expect("observe prints JSON");
    assert_eq!(event["reason"], "POLICYC_DROP_POLICY_DENY", "{event}");
    assert_eq!(event["direction"], "ingress", "{event}");
    assert_eq!(event["destination"]["endpoint"], WEB, "{event}");
    assert_eq!(event["source"]["endpoint"], INTRUDER, "{event}");
    assert_eq!(event["destination"]["port"], 8080, "{event}");
    let labels = |side: &str| event[side]["labels"].to_string();
    assert!(labels("destination").contains("k8s:app=web"), "{event}");
    assert!(labels("source").contains("k8s:app=client"), "{event}");
    assert!(labels("source").contains("k8s:io.kubernetes.pod.namespace=dev"), "{event}");
    assert_eq!(event["rule"]["policy"], "CiliumNetworkPolicy prod/web-deny-dev", "{event}");
    assert_eq!(event["rule"]["rule"], "ingressDeny[0]", "{event}");
    assert!(event["rule"]["location"].as_str().unwrap_or("").contains("policies.yaml:"));
}

/// The bindings of an apply are the complete set: leaving one out detaches it, and
/// naming it again attaches it again.
fn detaches_interfaces_no_longer_bound(topology: &Topology, apply_args: &[&str]) {
    let intruder = topology.pod(INTRUDER);
    let binding = format!("{}={}", intruder.host_veth, intruder.endpoint);
    let without: Vec<&str> = apply_args
        .iter()
        .enumerate()
        .filter(|&(i, arg)| *arg != binding && apply_args.get(i + 1) != Some(&binding.as_str()))
        .map(|(_, arg)| *arg)
        .collect();
    assert_eq!(without.len() + 2, apply_args.len(), "{without:?}");

    let out = topology.policyc_node(&without);
    assert!(out.status.success(), "apply without the intruder failed: {}", text(&out));
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(changes(&summary, "policyc_endpoints"), (0, 1), "{summary}");
    let detached = format!("detached: {0} (ingress), {0} (egress)", intruder.host_veth);
    assert!(summary.contains(&detached), "expected {detached:?} in:\n{summary}");

    let out = topology.policyc_node(apply_args);
    assert!(out.status.success(), "apply with the intruder again failed: {}", text(&out));
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(changes(&summary, "policyc_endpoints"), (1, 0), "{summary}");
    let attached = format!("attached: {0} (ingress), {0} (egress)", intruder.host_veth);
    assert!(summary.contains(&attached), "expected {attached:?} in:\n{summary}");
}

/// Checks every case and fails with the list of all that went wrong.
fn check_cases(topology: &Topology, when: &str) {
    let mut wrong = Vec::new();
    for case in &CASES {
        let result =
            check(topology.pod(case.from), topology.pod(case.to), case.probe, case.allowed);
        let verdict = if case.allowed { "allowed" } else { "blocked" };
        match (case.allowed, result) {
            (true, Ok(())) | (false, Err(_)) => eprintln!("{when}: ok, {case} {verdict}"),
            (true, Err(e)) => wrong.push(format!("{case} must pass ({}): {e}", case.why)),
            (false, Ok(())) => wrong.push(format!("{case} must be blocked ({})", case.why)),
        }
    }
    assert!(wrong.is_empty(), "{when}:\n{}", wrong.join("\n"));
}

/// Changes the live policy map behind policyc's back (a stray allow of TCP 9090 and the
/// TCP 8080 allow turned into a deny), checks that the kernel obeys the change, and that
/// the next apply puts everything back.
fn repairs_drift(topology: &Topology, artifact: &Artifact, apply_args: &[&str]) {
    let web = artifact.endpoint(WEB).expect("the artifact has prod/web");
    let client = artifact.endpoint(CLIENT).expect("the artifact has prod/client");
    let key = |port| PolicyKey {
        table: web.ingress_table,
        identity: client.identity,
        proto: 6,
        port_bits: 16,
        port,
    };
    // Drift in both generation slots, as a foreign writer that knows nothing of them would.
    let value =
        |verdict, rule| PolicyValue { slot: [PolicyVerdict { verdict, pad: [0; 3], rule }; SLOTS] };

    let pins = PinDir::new(&topology.pin_dir);
    let mut maps =
        KernelMaps::open(&pins, &ObjectSpec::embedded().unwrap()).expect("opening the pinned maps");
    let Some(MapEntry::Policy(_, allowed)) = maps.get(&MapKey::Policy(key(8080))).unwrap() else {
        panic!("the policy map has no entry for client -> web TCP 8080");
    };
    maps.update(&MapEntry::Policy(key(9090), value(VERDICT_ALLOW, allowed.slot[0].rule))).unwrap();
    maps.update(&MapEntry::Policy(key(8080), value(VERDICT_DENY, allowed.slot[0].rule))).unwrap();

    let (client_pod, web_pod) = (topology.pod(CLIENT), topology.pod(WEB));
    check(client_pod, web_pod, Probe::Tcp(9090), true)
        .unwrap_or_else(|e| panic!("the stray allow of TCP 9090 must take effect: {e}"));
    assert!(
        check(client_pod, web_pod, Probe::Tcp(8080), false).is_err(),
        "the deny written over TCP 8080 must take effect"
    );

    let out = topology.policyc_node(apply_args);
    assert!(out.status.success(), "apply after drift failed: {}", text(&out));
    let summary = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        changes(&summary, "policyc_policy"),
        (1, 1),
        "the apply must rewrite one entry and delete one:\n{summary}"
    );
    check_cases(topology, "after drift repair");
}

/// (written, deleted) for `map` in an apply summary.
fn changes(summary: &str, map: &str) -> (usize, usize) {
    let line = summary
        .lines()
        .find(|l| l.split_whitespace().next() == Some(map))
        .unwrap_or_else(|| panic!("no line for {map} in:\n{summary}"));
    let numbers: Vec<usize> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
    assert_eq!(numbers.len(), 2, "unexpected summary line {line:?}");
    (numbers[0], numbers[1])
}

/// The packet count of a reason in `policyc-node status` output.
fn counter(status: &str, reason: &str) -> u64 {
    let line = status
        .lines()
        .find(|l| l.split_whitespace().next() == Some(reason))
        .unwrap_or_else(|| panic!("no counter {reason} in:\n{status}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    fields
        .get(2)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("bad counter line {line:?}"))
}
