//! The node daemon on the real kernel: `policyc-node watch DIR` enforces each artifact a
//! GitOps pull drops into DIR, refuses a corrupt one without touching enforcement, is
//! killed and restarted under traffic without a lost packet (its first apply after the
//! restart writes nothing), and serves Prometheus metrics on a loopback address.
//!
//! Needs root, bpffs and BPF, as `kernel_e2e` does (see `kernel::available`).
#![expect(clippy::print_stderr, reason = "the test reports its progress and why it skips")]

#[allow(dead_code, reason = "each kernel test binary uses its own part of the harness")]
mod kernel;

use std::{
    fs,
    io::{BufRead, BufReader, Read, Write},
    net::TcpStream,
    path::Path,
    process::{Child, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use kernel::{
    Topology,
    artifacts::{BOTH, CLIENT, NEITHER, PODS, WEB, WIDE_ONLY, compile_artifacts},
    in_netns,
    stream::Streams,
};
use serde_json::Value;

const METRICS: &str = "127.0.0.1:19464";

/// A running daemon and the JSON log lines it wrote so far.
struct Daemon {
    child: Child,
    logs: Arc<Mutex<Vec<Value>>>,
}

impl Daemon {
    fn start(topology: &Topology, dir: &Path) -> Daemon {
        let bindings: Vec<String> =
            topology.pods.iter().map(|p| format!("{}={}", p.host_veth, p.endpoint)).collect();
        let mut args = vec!["--log-format", "json", "watch", dir.to_str().expect("UTF-8 path")];
        for binding in &bindings {
            args.extend(["--iface", binding]);
        }
        args.extend(["--interval", "0.05", "--resync", "3", "--metrics", METRICS]);
        let mut child = topology
            .policyc_node_command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting policyc-node watch");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = Arc::clone(&logs);
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                match serde_json::from_str::<Value>(&line) {
                    Ok(value) => sink.lock().expect("log lock").push(value),
                    Err(_) => eprintln!("watch (not JSON): {line}"),
                }
            }
        });
        Daemon { child, logs }
    }

    /// Waits until a log line satisfies `want`, and returns it.
    fn wait_for(&self, what: &str, want: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(found) = self.logs.lock().expect("log lock").iter().find(|v| want(v)) {
                return found.clone();
            }
            assert!(Instant::now() < deadline, "the daemon never logged {what}: {:#?}", self.logs);
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn message(value: &Value) -> &str {
    value["fields"]["message"].as_str().unwrap_or("")
}

fn applied(path: &Path) -> impl Fn(&Value) -> bool + '_ {
    move |v| message(v) == "applied" && v["fields"]["path"] == path.display().to_string()
}

/// Puts `source` into the watched directory the way a pull does: a hidden temporary
/// file, renamed into place.
fn drop_into(dir: &Path, source: &Path, name: &str) {
    let hidden = dir.join(format!(".{name}.tmp"));
    fs::copy(source, &hidden).expect("copying an artifact");
    fs::rename(&hidden, dir.join(name)).expect("renaming it into place");
}

#[test]
fn the_daemon_follows_the_directory_and_restarts_without_touching_the_datapath() {
    if !kernel::available() {
        return;
    }
    let topology = Topology::create(&PODS, Path::new(env!("CARGO_BIN_EXE_policyc-node")));
    let (narrow, wide) = compile_artifacts(&topology.work_dir);
    let dir = topology.work_dir.join("gitops");
    fs::create_dir_all(&dir).expect("creating the watched directory");

    drop_into(&dir, &narrow, "cluster-1.artifact");
    let daemon = Daemon::start(&topology, &dir);
    daemon.wait_for("the first artifact applied", applied(&dir.join("cluster-1.artifact")));

    let (client, web) = (topology.pod(CLIENT), topology.pod(WEB));
    let streams = Streams::start(client, web, &[BOTH, NEITHER, WIDE_ONLY]);
    thread::sleep(Duration::from_millis(200));

    // A newer artifact takes over.
    thread::sleep(Duration::from_millis(20)); // a distinct modification time
    drop_into(&dir, &wide, "cluster-2.artifact");
    let second =
        daemon.wait_for("the second artifact applied", applied(&dir.join("cluster-2.artifact")));
    assert!(second["fields"]["operations"].as_u64().unwrap_or(0) > 1000, "{second}");

    // A corrupt newer file is refused; enforcement stays on the second artifact.
    thread::sleep(Duration::from_millis(20));
    fs::write(dir.join("cluster-3.artifact"), b"PLCYMAP\0 cut short").expect("writing junk");
    daemon.wait_for("the corrupt artifact refused", |v| {
        message(v).starts_with("artifact refused")
            && v["fields"]["path"].as_str().is_some_and(|p| p.ends_with("cluster-3.artifact"))
    });
    thread::sleep(Duration::from_millis(300));
    fs::remove_file(dir.join("cluster-3.artifact")).expect("removing the junk");

    let metrics = scrape(&topology.node);
    for needle in [
        "policyc_artifacts_refused_total 1",
        "policyc_datapath_packets_total{verdict=\"pass\",reason=\"policy\"}",
        "policyc_map_entries{map=\"policyc_policy\"}",
        "policyc_apply_duration_seconds_count",
    ] {
        assert!(metrics.contains(needle), "metrics lack {needle:?}:\n{metrics}");
    }
    let ok = metrics
        .lines()
        .find_map(|l| l.strip_prefix("policyc_applies_total{result=\"ok\"} "))
        .and_then(|n| n.parse::<u64>().ok())
        .expect("an applies counter");
    assert!(ok >= 2, "{metrics}");

    // Killed and restarted: the datapath is pinned, and the restart writes nothing.
    daemon.kill();
    thread::sleep(Duration::from_millis(300));
    let daemon = Daemon::start(&topology, &dir);
    let first = daemon.wait_for("the restart's apply", applied(&dir.join("cluster-2.artifact")));
    assert_eq!(first["fields"]["operations"], 0, "the restart rewrote maps: {first}");
    thread::sleep(Duration::from_millis(300));
    daemon.kill();

    let received = streams.finish();
    let port = |p: u16| received.iter().find(|r| r.port == p).expect("a stream per port");
    let both = port(BOTH);
    assert_eq!(both.runs(), [(0, both.sent - 1)], "packets lost across the daemon's life");
    assert!(port(NEITHER).numbers.is_empty(), "a denied flow passed");
    assert_eq!(port(WIDE_ONLY).runs().len(), 1, "the wide-only flow switched on once");
}

/// `GET /metrics` from inside the node's network namespace, where the daemon listens.
fn scrape(node: &str) -> String {
    in_netns(node, || {
        let mut stream = TcpStream::connect(METRICS).expect("connecting to the metrics port");
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        stream.write_all(b"GET /metrics HTTP/1.1\r\nhost: node\r\n\r\n").expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("reading the response");
        assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
        response
    })
}
