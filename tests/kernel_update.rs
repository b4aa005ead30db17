//! Updates under traffic on the real kernel: while numbered UDP streams run between two
//! pods, `policyc-node apply` switches the node back and forth between two artifacts
//! that differ in thousands of entries, and is also killed (SIGKILL) at random points of
//! an apply and run again. What the update ordering promises (ARCHITECTURE.md,
//! "Updates") is then checked packet by packet:
//!
//! - a flow both artifacts allow loses no packet at all;
//! - a flow both artifacts deny never gets a packet through;
//! - a flow only one artifact allows switches exactly once per switch of artifacts
//!   (its packets arrive in one unbroken run per period of the allowing artifact);
//! - after a killed apply, the next apply converges, and one more writes nothing;
//! - a pinned link that carries another program (as an older policyc-node leaves it)
//!   gets this build's program in place, with no packet of an allowed flow lost;
//! - a pinned map of another layout (as an older datapath leaves it) is not reused: a new
//!   map set is filled, put under every link's program, and pinned in its place, again
//!   with no packet lost.
//!
//! Needs root, bpffs and BPF, as `kernel_e2e` does (see `kernel::available`).
#![expect(clippy::print_stderr, reason = "the test reports its progress and why it skips")]

#[allow(dead_code, reason = "each kernel test binary uses its own part of the harness")]
mod kernel;

use std::{
    fmt::Write as _,
    fs,
    io::{BufRead, BufReader},
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use kernel::{
    Topology,
    artifacts::{BOTH, EXTRA_PEERS, NEITHER, WIDE_ONLY, compile_artifacts},
    stream::Streams,
    text,
};

use kernel::artifacts::{CLIENT, PODS, WEB};

/// Switches between the artifacts with a clean apply each time.
const CLEAN_SWITCHES: usize = 6;
/// Applies killed at a random point, each followed by a clean re-run.
const KILLED_APPLIES: usize = 12;

#[test]
fn updates_under_traffic_keep_every_flow_at_its_old_or_new_verdict() {
    if !kernel::available() {
        return;
    }
    let topology = Topology::create(&PODS, Path::new(env!("CARGO_BIN_EXE_policyc-node")));
    let (narrow, wide) = compile_artifacts(&topology.work_dir);
    let bindings: Vec<String> =
        topology.pods.iter().map(|p| format!("{}={}", p.host_veth, p.endpoint)).collect();
    let apply = |artifact: &Path| {
        let mut args = vec!["apply".to_owned(), artifact.display().to_string()];
        for binding in &bindings {
            args.extend(["--iface".to_owned(), binding.clone()]);
        }
        args
    };
    let run_apply = |artifact: &Path| {
        let args = apply(artifact);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let started = Instant::now();
        let out = topology.policyc_node(&args);
        assert!(out.status.success(), "apply {} failed: {}", artifact.display(), text(&out));
        (String::from_utf8_lossy(&out.stdout).into_owned(), started.elapsed())
    };

    run_apply(&narrow);
    let (client, web) = (topology.pod(CLIENT), topology.pod(WEB));
    let streams = Streams::start(client, web, &[BOTH, NEITHER, WIDE_ONLY]);
    std::thread::sleep(Duration::from_millis(200));

    // Clean switches, timed: how long an apply of thousands of changes takes.
    let mut wide_periods = 0;
    let mut longest = Duration::ZERO;
    for i in 0..CLEAN_SWITCHES {
        let target = if i % 2 == 0 { &wide } else { &narrow };
        let (summary, took) = run_apply(target);
        longest = longest.max(took);
        wide_periods += usize::from(target == &wide);
        eprintln!("switch {i} took {took:?}:\n{summary}");
        assert!(operations(&summary) > 2 * EXTRA_PEERS as usize, "{summary}");
        std::thread::sleep(Duration::from_millis(150));
    }

    // Killed applies: at a random point after the apply says it starts writing, within
    // a fifth of a whole apply's time, which is about how long its writes take (some
    // kills come after it finished, which must be harmless too).
    let mut rng = Lcg(u64::from(std::process::id()));
    let mut killed_log = String::new();
    let mut current = &narrow;
    for i in 0..KILLED_APPLIES {
        let target = if current == &narrow { &wide } else { &narrow };
        let delay = Duration::from_micros(rng.below(longest.as_micros() as u64 / 5 + 1));
        let args = apply(target);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = topology
            .policyc_node_command(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting apply");
        let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr")).lines();
        let writing = stderr.by_ref().map_while(Result::ok).any(|l| l.contains("writing the maps"));
        assert!(writing, "apply {i} ended without starting to write");
        // Keep reading, so the child never fails on a closed pipe instead of being killed.
        let drain = std::thread::spawn(move || stderr.map_while(Result::ok).count());
        std::thread::sleep(delay);
        // SAFETY: kill only sends a signal to our own child, whose pid is still ours
        // because it has not been waited for.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        let status = child.wait().expect("waiting for the killed apply");
        let _ = drain.join();
        assert!(status.success() || status.code().is_none(), "apply {i} failed: {status}");
        let _ = writeln!(killed_log, "kill {i} after {delay:?}: {status}");

        // Whatever the kill left, one apply converges and the next writes nothing. The
        // re-run shows where the kill landed: a flip still to do, or only levelling.
        let (rerun, _) = run_apply(target);
        let _ = writeln!(
            killed_log,
            "  re-run: {} operations, {}",
            operations(&rerun),
            generations(&rerun)
        );
        let (again, _) = run_apply(target);
        assert_eq!(operations(&again), 0, "after kill {i} and a re-run:\n{again}");
        current = target;
        wide_periods += usize::from(target == &wide);
        std::thread::sleep(Duration::from_millis(150));
    }
    eprint!("{killed_log}");

    std::thread::sleep(Duration::from_millis(200));
    let received = streams.finish();
    let port = |p: u16| received.iter().find(|r| r.port == p).expect("a stream per port");

    let both = port(BOTH);
    let missing =
        both.sent as usize - both.runs().iter().map(|(a, b)| (b - a + 1) as usize).sum::<usize>();
    eprintln!("allowed by both: {} sent, {} missing, runs {:?}", both.sent, missing, both.runs());
    assert!(both.sent > 1000, "the stream hardly ran: {} packets", both.sent);
    assert_eq!(both.runs(), [(0, both.sent - 1)], "a flow both artifacts allow lost packets");

    let neither = port(NEITHER);
    assert!(neither.numbers.is_empty(), "a denied flow passed: {:?}", neither.runs());

    replaces_an_older_program_without_a_gap(&topology, current, &run_apply);
    migrates_maps_of_another_layout_without_a_gap(&topology, current, current, &run_apply);
    // A migration that also changes the artifact: first to the new maps with the live
    // artifact, then one switch to the other.
    let other = if current == &narrow { &wide } else { &narrow };
    migrates_maps_of_another_layout_without_a_gap(&topology, current, other, &run_apply);

    let switching = port(WIDE_ONLY);
    let runs = switching.runs();
    eprintln!("allowed by wide only: {wide_periods} wide periods, runs {runs:?}");
    assert_eq!(
        runs.len(),
        wide_periods,
        "the flow must pass in exactly one unbroken run per period of the wide artifact"
    );
}

/// Pins a map of another layout (value size 8, 16 entries) where `policyc_endpoints` is,
/// as an older datapath's map would be, while the running programs keep their own; the
/// next apply must migrate to a fresh map set under streams that lose nothing.
fn migrates_maps_of_another_layout_without_a_gap(
    topology: &Topology,
    live: &Path,
    artifact: &Path,
    run_apply: &dyn Fn(&Path) -> (String, Duration),
) {
    const BPF_MAP_TYPE_HASH: u32 = 1;
    let path = topology.pin_dir.join("policyc_endpoints");
    fs::remove_file(&path).expect("unpinning the endpoints map");
    let older = kernel::create_map(BPF_MAP_TYPE_HASH, 4, 8, 16).expect("creating a map");
    kernel::pin_object(&older, &path).expect("pinning the map of another layout");

    let (client, web) = (topology.pod(CLIENT), topology.pod(WEB));
    let streams = Streams::start(client, web, &[BOTH, NEITHER, WIDE_ONLY]);
    std::thread::sleep(Duration::from_millis(200));
    let (summary, _) = run_apply(artifact);
    eprintln!("migrating from {} to {}:\n{summary}", live.display(), artifact.display());
    std::thread::sleep(Duration::from_millis(200));
    let received = streams.finish();

    assert!(summary.contains("migrated maps (layout changed): policyc_endpoints"), "{summary}");
    let replaced = summary.lines().find(|l| l.contains("program replaced: ")).unwrap_or("");
    assert_eq!(replaced.matches('(').count(), 2 * PODS.len(), "every link moves:\n{summary}");
    let both = &received[0];
    assert_eq!(both.runs(), [(0, both.sent - 1)], "packets lost in the migration");
    assert!(received[1].numbers.is_empty(), "a denied flow passed during the migration");
    // The wide-only flow is in one state before and maybe another after: at most one
    // switch, at one instant.
    let runs = received[2].runs();
    let switched = match (live.ends_with("wide.artifact"), artifact.ends_with("wide.artifact")) {
        (true, true) => runs == [(0, received[2].sent - 1)],
        (false, false) => runs.is_empty(),
        (true, false) => runs.len() == 1 && runs[0].0 == 0,
        (false, true) => runs.len() == 1 && runs[0].1 == received[2].sent - 1,
    };
    assert!(switched, "the wide-only flow must switch at most once: {runs:?}");
    assert!(!topology.pin_dir.join("staging").exists(), "the staging pins are gone");

    let (again, _) = run_apply(artifact);
    assert_eq!(operations(&again), 0, "the migrated maps hold the artifact:\n{again}");
    assert!(!again.contains("migrated") && !again.contains("program replaced"), "{again}");
}

/// Puts a pass-everything program on every pinned link, as if an older datapath were
/// attached, then applies: every link must get this build's program back in place, with
/// no packet of the stream both programs pass lost, and policy enforced again after.
fn replaces_an_older_program_without_a_gap(
    topology: &Topology,
    artifact: &Path,
    run_apply: &dyn Fn(&Path) -> (String, Duration),
) {
    let older = kernel::load_pass_all().expect("loading the stand-in program");
    let links: Vec<PathBuf> = fs::read_dir(topology.pin_dir.join("links"))
        .expect("listing link pins")
        .map(|e| e.expect("a link pin").path())
        .collect();
    assert_eq!(links.len(), 2 * PODS.len(), "{links:?}");
    for link in &links {
        kernel::update_pinned_link(link, &older).expect("putting the stand-in on a link");
    }
    let (client, web) = (topology.pod(CLIENT), topology.pod(WEB));
    assert!(
        kernel::traffic::check(client, web, kernel::traffic::Probe::Udp(NEITHER), true).is_ok(),
        "with the stand-in attached, nothing is enforced"
    );

    let streams = Streams::start(client, web, &[BOTH]);
    std::thread::sleep(Duration::from_millis(200));
    let (summary, _) = run_apply(artifact);
    eprintln!("replacing the stand-in:\n{summary}");
    std::thread::sleep(Duration::from_millis(200));
    let received = streams.finish();
    assert_eq!(summary.matches("(ingress)").count() + summary.matches("(egress)").count(), 6);
    assert!(summary.contains("program replaced: "), "{summary}");
    assert!(summary.contains("already attached: none"), "{summary}");
    assert_eq!(received[0].runs(), [(0, received[0].sent - 1)], "packets lost in the switch");
    assert!(
        kernel::traffic::check(client, web, kernel::traffic::Probe::Udp(NEITHER), false).is_err(),
        "policy is enforced again after the replacement"
    );
    let (again, _) = run_apply(artifact);
    assert!(!again.contains("program replaced"), "the second apply keeps the links:\n{again}");
}

/// `map operations: N` of an apply summary.
fn operations(summary: &str) -> usize {
    summary
        .lines()
        .find_map(|l| l.trim().strip_prefix("map operations: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no operation count in:\n{summary}"))
}

/// `generation A -> B` of an apply summary.
fn generations(summary: &str) -> &str {
    summary
        .lines()
        .find_map(|l| l.split_once('(').and_then(|(_, g)| g.strip_suffix(')')))
        .unwrap_or("no generation line")
}

/// A small deterministic generator for kill points (seeded from the pid, printed).
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 =
            self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}
