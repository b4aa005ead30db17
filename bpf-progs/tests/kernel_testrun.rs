//! The datapath in the running kernel decides flows exactly as the compiler's reference
//! evaluator does (issue 5's proof).
//!
//! The committed object is loaded with its maps pinned in a directory of this process and
//! filled from compiled artifacts; real Ethernet frames go through both tc programs with
//! `BPF_PROG_TEST_RUN`, no interface attached. Each run's verdict, reason (the metrics
//! counter that moved) and deciding rule (from its event) are held against the reference
//! evaluator and the table simulator; conntrack, fragments, generations and malformed
//! packets are held against what `c/policyc.bpf.c` documents.
//!
//! Needs root and bpffs: elsewhere each test says why and skips, except with `CI=true`,
//! where it fails.
#![expect(clippy::print_stderr, reason = "the tests report what they checked and why they skip")]

// The compiler's own comparison of a decision with the reference's, shared rather than
// copied so that the kernel is held to exactly what the table simulator is held to.
#[path = "../../compiler/tests/support/mod.rs"]
mod support;
mod testrun;

use std::cell::RefCell;
use std::time::Instant;

use aya::programs::ProgramError;
use datapath::{EndpointInfo, Reason};
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestError, TestRunner};

use testrun::conformance::{self, Mode, Scenario};
use testrun::fixture::{self, Fixture};
use testrun::generate;
use testrun::judge::{Live, Tally, check_flow};
use testrun::kernel::{Hook, Kernel, LOOPBACK, Outcome, ROW, skb_context};
use testrun::packet::{self, L4, Packet};

#[test]
fn kernel_decides_conformance_scenarios_as_the_reference() {
    if !testrun::available() {
        return;
    }
    let started = Instant::now();
    let mut kernel = Kernel::load("conformance");
    let dirs = conformance::directories();
    assert!(dirs.len() >= 54, "scenario directories are missing: found {}", dirs.len());

    let mut tally = Tally::default();
    let mut next_port = 1024;
    for dir in &dirs {
        for mode in [Mode::Default, Mode::Upstream] {
            let scenario = match Scenario::load(dir, mode) {
                Ok(scenario) => scenario,
                Err(e) => {
                    tally.fail(format!("{} ({mode:?}): {e}", dir.display()));
                    continue;
                }
            };
            let artifact = &scenario.compilation.artifact;
            kernel.load_artifacts([artifact, artifact]);
            conformance::check_scenario(&mut kernel, &scenario, &mut next_port, &mut tally);
        }
    }

    eprintln!(
        "{} scenarios, in both ipBlock modes, {} test runs in {:.1?}:\n{}",
        dirs.len(),
        tally.runs(),
        started.elapsed(),
        tally.summary()
    );
    tally.assert_clean("conformance scenarios");
}

#[test]
fn kernel_decides_generated_flows_as_the_reference() {
    if !testrun::available() {
        return;
    }
    let started = Instant::now();
    let kernel = RefCell::new(Kernel::load("generated"));
    let totals = RefCell::new(Tally::default());
    let next_port = RefCell::new(1024u16);
    // 128 clusters keep the test to seconds; PROPTEST_CASES=5000 searches deeper.
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(128);
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 64,
        ..ProptestConfig::default()
    };

    let result = TestRunner::new(config).run(&generate::cluster(), |cluster| {
        let yaml = cluster.render();
        let mut sources = policy_lang::Sources::default();
        sources.add("generated.yaml", yaml.as_str());
        let (bundle, compilation) =
            support::compile(&sources).map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        let reference = compiler::reference::Reference::new(&bundle, &compilation.analysis);
        support::same_endpoints(&reference, &compilation)
            .map_err(|e| TestCaseError::fail(format!("{e}\n{yaml}")))?;
        let live =
            Live { name: "generated", artifact: &compilation.artifact, reference: &reference };

        let mut kernel = kernel.borrow_mut();
        kernel.load_artifacts([&compilation.artifact, &compilation.artifact]);
        let mut tally = Tally::default();
        for packet in generate::flows(&cluster, &mut next_port.borrow_mut()) {
            check_flow(&mut kernel, &live, &packet, true, &mut tally);
        }
        totals.borrow_mut().add_counts(&tally);
        tally
            .check("cluster")
            .map_err(|e| TestCaseError::fail(format!("{e}\n--- input ---\n{yaml}")))
    });

    let totals = totals.into_inner();
    eprintln!(
        "{cases} generated clusters, {} test runs in {:.1?}:\n{}",
        totals.runs(),
        started.elapsed(),
        totals.summary()
    );
    // The failure's reason holds the report and the shrunk cluster as YAML; the cluster's
    // Debug form, which proptest would add, says the same at ten times the length.
    match result {
        Ok(()) => {}
        Err(TestError::Fail(reason, _)) => panic!("{reason}"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn kernel_switches_between_conformance_snapshots_with_the_generation() {
    if !testrun::available() {
        return;
    }
    let started = Instant::now();
    let mut kernel = Kernel::load("generations");
    let dirs = conformance::directories();
    let pairs: Vec<_> = dirs
        .iter()
        .filter_map(|d| {
            let name = d.file_name()?.to_str()?;
            let after = d.with_file_name(name.strip_suffix("-before")?.to_owned() + "-after");
            Some((d.clone(), after))
        })
        .collect();
    assert!(pairs.len() >= 9, "two-step scenarios are missing: found {}", pairs.len());

    let mut tally = Tally::default();
    let mut next_port = 1024;
    for (before, after) in &pairs {
        let loaded = (Scenario::load(before, Mode::Default), Scenario::load(after, Mode::Default));
        let (before, after) = match loaded {
            (Ok(before), Ok(after)) => (before, after),
            (Err(e), _) | (_, Err(e)) => {
                tally.fail(format!("{}: {e}", before.display()));
                continue;
            }
        };
        // Before in slot 0, after in slot 1, as an update leaves them just before the flip;
        // generation 2 is slot 0 again, in a new conntrack epoch.
        kernel.load_artifacts([&before.compilation.artifact, &after.compilation.artifact]);
        for generation in [0, 1, 2] {
            kernel.set_generation(generation);
            let live = if generation % 2 == 0 { &before } else { &after };
            conformance::check_scenario(&mut kernel, live, &mut next_port, &mut tally);
        }
        kernel.set_generation(0);
    }

    eprintln!(
        "{} two-step scenarios in three generations, {} test runs in {:.1?}:\n{}",
        pairs.len(),
        tally.runs(),
        started.elapsed(),
        tally.summary()
    );
    tally.assert_clean("snapshots by generation");
}

#[test]
fn conntrack_passes_replies_and_established_packets_until_the_generation_changes() {
    if !testrun::available() {
        return;
    }
    let mut kernel = Kernel::load("conntrack");
    let mut tally = Tally::default();
    testrun::conntrack::check(&mut kernel, &mut tally);
    eprintln!("{}", tally.summary());
    tally.assert_clean("conntrack");
}

#[test]
fn later_fragments_follow_the_verdict_of_their_first_fragment() {
    if !testrun::available() {
        return;
    }
    let mut kernel = Kernel::load("fragments");
    let mut tally = Tally::default();
    testrun::fragments::check(&mut kernel, &mut tally);
    eprintln!("{}", tally.summary());
    tally.assert_clean("fragments");
}

#[test]
fn host_endpoints_judge_the_nodes_own_traffic_and_pass_forwarded_traffic() {
    if !testrun::available() {
        return;
    }
    let mut kernel = Kernel::load("host");
    let mut tally = Tally::default();
    testrun::host::check(&mut kernel, &mut tally);
    eprintln!("{}", tally.summary());
    tally.assert_clean("host endpoints");
}

#[test]
fn malformed_packets_drop_and_unusual_headers_are_judged_like_plain_ones() {
    if !testrun::available() {
        return;
    }
    let mut kernel = Kernel::load("malformed");
    let mut tally = Tally::default();
    testrun::malformed::check(&mut kernel, &mut tally);
    eprintln!("{}", tally.summary());
    tally.assert_clean("malformed packets");
}

#[test]
fn frames_that_are_not_ip_pass_and_unbound_interfaces_drop_ip() {
    if !testrun::available() {
        return;
    }
    let mut kernel = Kernel::load("unbound");
    let mut tally = Tally::default();
    testrun::malformed::check_not_ip_and_unbound(&mut kernel, &mut tally);
    eprintln!("{}", tally.summary());
    tally.assert_clean("frames that are not IP, unbound interfaces");
}

/// `BPF_PROG_TEST_RUN` gives a tc program's skb the loopback device unless the context's
/// `ifindex` names another device of the test's network namespace (`-ENODEV` if none has
/// it): which is why the harness binds the endpoint under test at ifindex 1.
#[test]
fn test_runs_carry_the_loopback_ifindex_unless_the_context_names_a_device() {
    if !testrun::available() {
        return;
    }
    let mut kernel = Kernel::load("ifindex");
    let fixture = Fixture::before();
    kernel.load_artifacts([fixture.artifact(), fixture.artifact()]);
    let client = kernel.bind(Some("x/client")).expect("the client is an endpoint");
    let syn = Packet {
        src: fixture::ip(fixture::CLIENT),
        dst: fixture::ip(fixture::SERVER),
        l4: L4::Tcp { sport: 40040, dport: 80, flags: packet::SYN },
    };
    let ifindex_of = |outcome: &Outcome| outcome.events.first().map(|e| (e.reason, e.ifindex));
    let policy = Reason::PassPolicy.code();

    let outcome = kernel.run(Hook::FromEndpoint, &syn.frame());
    assert_eq!(ifindex_of(&outcome), Some((policy, LOOPBACK)), "no context: {outcome:?}");
    let ctx = skb_context(LOOPBACK, 0);
    let outcome = kernel.run_with(Hook::FromEndpoint, &syn.frame(), Some(&ctx), ROW).unwrap();
    assert_eq!(ifindex_of(&outcome), Some((policy, LOOPBACK)), "ifindex 1: {outcome:?}");

    match other_device() {
        Some((name, ifindex)) => {
            let ctx = skb_context(ifindex, 0);
            let outcome = kernel.run_with(Hook::FromEndpoint, &syn.frame(), Some(&ctx), 0).unwrap();
            let no_endpoint = Reason::DropNoEndpoint.code();
            assert_eq!(ifindex_of(&outcome), Some((no_endpoint, ifindex)), "{name}: {outcome:?}");
            let info = EndpointInfo { slot: [client; 2], metrics_row: ROW, flags: 0 };
            kernel.set_endpoint(ifindex, Some(info));
            let outcome =
                kernel.run_with(Hook::FromEndpoint, &syn.frame(), Some(&ctx), ROW).unwrap();
            assert_eq!(ifindex_of(&outcome), Some((policy, ifindex)), "{name}: {outcome:?}");
        }
        None => eprintln!("no network device besides loopback: the context ifindex is not checked"),
    }

    let ctx = skb_context(i32::MAX as u32, 0);
    match kernel.run_with(Hook::FromEndpoint, &syn.frame(), Some(&ctx), ROW) {
        Err(ProgramError::SyscallError(e)) if e.io_error.raw_os_error() == Some(libc::ENODEV) => {}
        other => panic!("a test run on no device should fail with ENODEV: {other:?}"),
    }
}

/// The name and ifindex of a network device other than loopback, if there is one.
fn other_device() -> Option<(String, u32)> {
    let entries = std::fs::read_dir("/sys/class/net").ok()?;
    let mut devices: Vec<(String, u32)> = entries
        .flatten()
        .filter_map(|e| {
            let ifindex = std::fs::read_to_string(e.path().join("ifindex")).ok()?;
            Some((e.file_name().to_string_lossy().into_owned(), ifindex.trim().parse().ok()?))
        })
        .filter(|(_, ifindex)| *ifindex != LOOPBACK)
        .collect();
    devices.sort_by_key(|(_, ifindex)| *ifindex);
    devices.into_iter().next()
}
