//! A host policy enforced on the real kernel: `fixtures/e2e-host` compiled, and
//! `policyc-node apply` binding a node's uplink to the node's host endpoint
//! (`--iface UPLINK=node/edge`) beside a pod's veth. Three network namespaces: the node,
//! the outside world behind the node's uplink (a veth pair), and a pod routed by the
//! node. Real TCP, UDP and ICMP traffic checks that the host policy judges the node's
//! own traffic, at the uplink and, for traffic between the node and its own pod, at the
//! pod's veth, and that traffic routed through the uplink to the pod is judged at the
//! pod by the pod's policy, not by the host's.
//!
//! Needs root, bpffs and BPF. Without them the test is skipped with the reason, except
//! under `CI=true`, where it fails: see `kernel::available`.
#![expect(clippy::print_stderr, reason = "the test reports its progress and why it skips")]

#[allow(dead_code, reason = "each kernel test binary uses its own part of the harness")]
mod kernel;

use std::{
    fs,
    path::PathBuf,
    process::{Command, Output},
};

use kernel::{
    Pod, must, run, text,
    traffic::{Probe, check},
};

const NODE: [u8; 4] = [10, 77, 0, 1];
const OUTSIDE: [u8; 4] = [10, 77, 0, 2];
const GATEWAY: [u8; 4] = [10, 77, 1, 1];
const WEB: [u8; 4] = [10, 77, 1, 2];

/// The three namespaces and the test's pins; dropping it uninstalls policyc and deletes
/// them all, also when the test panics.
struct HostTopology {
    node: Pod,
    outside: Pod,
    web: Pod,
    /// The node's address on the pod network: what the node sends to its pods from.
    gateway: Pod,
    uplink: String,
    pod_veth: String,
    pin_dir: PathBuf,
    work_dir: PathBuf,
}

fn dotted(ip: [u8; 4]) -> String {
    format!("{}.{}.{}.{}", ip[0], ip[1], ip[2], ip[3])
}

impl HostTopology {
    fn create() -> HostTopology {
        let id = std::process::id();
        let work_dir = std::env::temp_dir().join(format!("policyc-host-{id}"));
        fs::create_dir_all(&work_dir).expect("creating the test's work directory");
        let netns = |tag: &str| format!("pch{id}-{tag}");
        let pod =
            |endpoint, netns: String, ip| Pod { endpoint, netns, host_veth: String::new(), ip };
        let topology = HostTopology {
            node: pod("node/edge", netns("node"), NODE),
            outside: pod("outside", netns("out"), OUTSIDE),
            web: pod("x/web", netns("web"), WEB),
            gateway: pod("node/edge", netns("node"), GATEWAY),
            uplink: format!("hu{id}"),
            pod_veth: format!("hp{id}"),
            pin_dir: PathBuf::from(format!("/sys/fs/bpf/policyc-host-{id}")),
            work_dir,
        };
        // From here on, a failure drops `topology`, which removes what was made so far.
        for ns in [&topology.node.netns, &topology.outside.netns, &topology.web.netns] {
            must(Command::new("ip").args(["netns", "add", ns]));
            topology.ip(ns, &["link", "set", "lo", "up"]);
        }
        let (node, outside, web) =
            (&topology.node.netns, &topology.outside.netns, &topology.web.netns);
        // The uplink: the node's end keeps its name, the outside's is eth0.
        topology.ip(
            node,
            &[
                "link",
                "add",
                &topology.uplink,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                outside,
            ],
        );
        topology
            .ip(node, &["addr", "add", &format!("{}/24", dotted(NODE)), "dev", &topology.uplink]);
        topology.ip(node, &["link", "set", &topology.uplink, "up"]);
        topology.ip(outside, &["addr", "add", &format!("{}/24", dotted(OUTSIDE)), "dev", "eth0"]);
        topology.ip(outside, &["link", "set", "eth0", "up"]);
        topology.ip(outside, &["route", "add", "10.77.1.0/24", "via", &dotted(NODE)]);
        // The pod, routed by the node.
        topology.ip(
            node,
            &[
                "link",
                "add",
                &topology.pod_veth,
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                web,
            ],
        );
        topology.ip(
            node,
            &["addr", "add", &format!("{}/24", dotted(GATEWAY)), "dev", &topology.pod_veth],
        );
        topology.ip(node, &["link", "set", &topology.pod_veth, "up"]);
        topology.ip(web, &["addr", "add", &format!("{}/24", dotted(WEB)), "dev", "eth0"]);
        topology.ip(web, &["link", "set", "eth0", "up"]);
        topology.ip(web, &["route", "add", "default", "via", &dotted(GATEWAY)]);
        // Forwarding is a setting of the node's namespace alone.
        must(Command::new("nsenter").arg(format!("--net=/run/netns/{node}")).args([
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]));
        topology
    }

    fn ip(&self, netns: &str, args: &[&str]) {
        must(Command::new("ip").arg("-n").arg(netns).args(args));
    }

    /// `policyc-node ARGS` inside the node namespace, with the test's pins and state.
    fn policyc_node(&self, args: &[&str]) -> Output {
        run(Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.node.netns))
            .arg(env!("CARGO_BIN_EXE_policyc-node"))
            .args(args)
            .arg("--pin-dir")
            .arg(&self.pin_dir)
            .arg("--state-dir")
            .arg(self.work_dir.join("state"))
            .env("RUST_LOG", "info"))
    }
}

impl Drop for HostTopology {
    fn drop(&mut self) {
        // Best effort throughout: cleanup must go on past any failure.
        if self.pin_dir.exists() {
            let out = self.policyc_node(&["uninstall"]);
            if !out.status.success() {
                eprintln!("cleanup: policyc-node uninstall failed: {}", text(&out));
            }
        }
        for netns in [&self.node.netns, &self.outside.netns, &self.web.netns] {
            let _ = Command::new("ip").args(["netns", "delete", netns]).output();
        }
        let _ = fs::remove_dir_all(&self.pin_dir);
        let _ = fs::remove_dir_all(&self.work_dir);
    }
}

/// One expectation of `fixtures/e2e-host/cluster.yaml`.
struct Case {
    from: fn(&HostTopology) -> &Pod,
    to: fn(&HostTopology) -> &Pod,
    probe: Probe,
    allowed: bool,
    what: &'static str,
}

const CASES: [Case; 12] = [
    Case {
        from: |t| &t.outside,
        to: |t| &t.node,
        probe: Probe::Tcp(8080),
        allowed: true,
        what: "outside -> node TCP 8080: the host policy allows it from 10.77.0.0/24",
    },
    Case {
        from: |t| &t.outside,
        to: |t| &t.node,
        probe: Probe::Udp(5353),
        allowed: true,
        what: "outside -> node UDP 5353: likewise",
    },
    Case {
        from: |t| &t.outside,
        to: |t| &t.node,
        probe: Probe::Tcp(9090),
        allowed: false,
        what: "outside -> node TCP 9090: the node is isolated by its host policy",
    },
    Case {
        from: |t| &t.outside,
        to: |t| &t.node,
        probe: Probe::Udp(5354),
        allowed: false,
        what: "outside -> node UDP 5354: not in the host policy",
    },
    Case {
        from: |t| &t.outside,
        to: |t| &t.node,
        probe: Probe::Ping,
        allowed: false,
        what: "outside -> node ping: not in the host policy",
    },
    Case {
        from: |t| &t.outside,
        to: |t| &t.web,
        probe: Probe::Tcp(9090),
        allowed: true,
        what: "outside -> web TCP 9090: forwarded at the uplink, allowed by web's policy",
    },
    Case {
        from: |t| &t.outside,
        to: |t| &t.web,
        probe: Probe::Tcp(8080),
        allowed: false,
        what: "outside -> web TCP 8080: judged at web, whose policy does not allow it",
    },
    Case {
        from: |t| &t.outside,
        to: |t| &t.web,
        probe: Probe::Ping,
        allowed: false,
        what: "outside -> web ping: judged at web",
    },
    Case {
        from: |t| &t.gateway,
        to: |t| &t.web,
        probe: Probe::Tcp(7070),
        allowed: true,
        what: "node -> web TCP 7070: from the node's own address, the host identity",
    },
    Case {
        from: |t| &t.web,
        to: |t| &t.node,
        probe: Probe::Tcp(7171),
        allowed: true,
        what: "web -> node TCP 7171: the host policy allows it from app=web",
    },
    Case {
        from: |t| &t.web,
        to: |t| &t.node,
        probe: Probe::Tcp(7272),
        allowed: false,
        what: "web -> node TCP 7272: a local pod, judged by the host policy at web's veth",
    },
    Case {
        from: |t| &t.node,
        to: |t| &t.outside,
        probe: Probe::Tcp(6000),
        allowed: true,
        what: "node -> outside TCP 6000: egress open, the answer passes the isolated ingress",
    },
];

fn check_cases(topology: &HostTopology, when: &str) {
    let mut failures = Vec::new();
    for case in &CASES {
        let (from, to) = ((case.from)(topology), (case.to)(topology));
        // `check` is Ok when the flow passed, both ways.
        match (check(from, to, case.probe, case.allowed), case.allowed) {
            (Ok(()), true) | (Err(_), false) => {}
            (Err(e), true) => failures.push(format!("{when}: {} must pass: {e}", case.what)),
            (Ok(()), false) => failures.push(format!("{when}: {} must be blocked", case.what)),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn enforces_a_host_policy_on_the_uplink_and_judges_forwarded_traffic_at_the_pod() {
    if !kernel::available() {
        return;
    }
    let topology = HostTopology::create();
    let artifact = topology.work_dir.join("host.artifact");
    must(
        Command::new(env!("CARGO_BIN_EXE_policyc"))
            .arg("compile")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/e2e-host"))
            .arg("-o")
            .arg(&artifact),
    );

    eprintln!("baseline, no policy applied: every flow must pass");
    for case in &CASES {
        let (from, to) = ((case.from)(&topology), (case.to)(&topology));
        if let Err(e) = check(from, to, case.probe, true) {
            panic!("baseline: {} must pass before any policy is applied: {e}", case.what);
        }
    }

    let host = format!("{}=node/edge", topology.uplink);
    let pod = format!("{}=x/web", topology.pod_veth);
    let path = artifact.to_str().expect("UTF-8 temp path");
    let apply = ["apply", path, "--iface", &host, "--iface", &pod];
    let out = topology.policyc_node(&apply);
    assert!(out.status.success(), "policyc-node apply failed: {}", text(&out));
    eprintln!("{}", String::from_utf8_lossy(&out.stdout));

    check_cases(&topology, "after apply");

    let status = topology.policyc_node(&["status"]);
    assert!(status.status.success(), "policyc-node status failed: {}", text(&status));
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    eprintln!("{status}");
    let uplink_line = status
        .lines()
        .find(|l| l.trim_start().starts_with(&topology.uplink))
        .unwrap_or_else(|| panic!("status lists no {}:\n{status}", topology.uplink));
    assert!(uplink_line.contains("identity 1 "), "{uplink_line}");
    assert!(uplink_line.contains("(host endpoint, programs reversed)"), "{uplink_line}");
    assert!(uplink_line.contains("links: ingress+egress"), "{uplink_line}");
    let forwarded = status
        .lines()
        .find(|l| l.contains("POLICYC_PASS_FORWARDED"))
        .unwrap_or_else(|| panic!("status counts no forwarded packet:\n{status}"));
    let packets: u64 =
        forwarded.split_whitespace().nth(2).and_then(|n| n.parse().ok()).unwrap_or(0);
    assert!(packets > 0, "the routed flows passed the uplink as forwarded: {forwarded}");

    // A second apply changes nothing, and the binding survives without --iface.
    let again = topology.policyc_node(&["apply", path]);
    assert!(again.status.success(), "second apply failed: {}", text(&again));
    let again = String::from_utf8_lossy(&again.stdout).into_owned();
    assert!(again.contains("attached: none"), "a repeated apply must not attach again:\n{again}");
    check_cases(&topology, "after a second apply");

    // Uninstalled, the uplink carries no program and everything passes again.
    let out = topology.policyc_node(&["uninstall"]);
    assert!(out.status.success(), "policyc-node uninstall failed: {}", text(&out));
    for case in &CASES {
        let (from, to) = ((case.from)(&topology), (case.to)(&topology));
        if let Err(e) = check(from, to, case.probe, true) {
            panic!("after uninstall: {} must pass: {e}", case.what);
        }
    }
}
