//! The update planner's promise, checked in the running kernel (issue 6's proof): while
//! the maps move from one artifact to the next, every packet is judged exactly as the old
//! artifact judges it until the generation flips, and exactly as the new one does from
//! the flip on.
//!
//! Each case applies an old state to the real pinned maps through the runtime's
//! `KernelMaps`, records what the datapath decides for a pool of packets with the maps
//! settled at the old state and at the new one (conntrack cleared before each, so that
//! policy decides), then runs the plan to the new state one operation at a time and, after
//! every operation, runs the chosen packets through `policyc_from_ep` / `policyc_to_ep`
//! with `BPF_PROG_TEST_RUN`: return code, reason (the metrics counter that moved) and
//! verdict event must be the recorded ones of the state that should be live. Compiled
//! cases also hold both recordings against the compiler's reference evaluator and table
//! simulator. A flow opened under the old state is followed through every step: its
//! later packets pass on the cached verdict until the flip, are judged by the new policy
//! after it, and its replies keep passing.
//!
//! Needs root and bpffs: elsewhere each test says why and skips, except with `CI=true`,
//! where it fails. `PROPTEST_CASES` sets the number of compiled cases.
#![expect(clippy::print_stderr, reason = "the tests report what they checked and why they skip")]

// The compiler's comparison of a decision with the reference's, shared rather than copied
// so that the kernel is held to what the table simulator is held to.
mod stepwise;
#[path = "../../compiler/tests/support/mod.rs"]
mod support;

use std::cell::RefCell;
use std::time::Instant;

use proptest::prelude::*;
use proptest::test_runner::{
    Config as ProptestConfig, RngSeed, TestCaseError, TestError, TestRunner,
};

use stepwise::check::{self, Options, Stats};
use stepwise::harness::{Harness, Verdict};
use stepwise::{Rng, compiled, drawn, generate};

/// Candidate probes recorded per case (compiled cases judge most packets alike, so they
/// record more), and how many of them run after every operation.
const POOL_COMPILED: usize = 192;
const POOL_DRAWN: usize = 64;
const PER_STEP: usize = 12;

/// The compiled cases of one test: each a pair of generated clusters and a seed for the
/// mix, the bindings and the probes. The cases are the same on every run (drawn from
/// `seed` unless `PROPTEST_RNG_SEED` says otherwise), so that a failure replays.
fn compiled_cases(
    harness: &mut Harness,
    seed: u64,
    default_cases: u32,
    options: Options,
    stats: &mut Stats,
) -> Result<usize, String> {
    let cases =
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default_cases);
    let mut config = ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 24,
        ..ProptestConfig::default()
    };
    if config.rng_seed == RngSeed::Random {
        config.rng_seed = RngSeed::Fixed(seed);
    }
    let harness = RefCell::new(harness);
    let stats = RefCell::new(stats);
    let held = RefCell::new(0);
    let strategy = (generate::cluster(), generate::cluster(), any::<u64>());
    let result = TestRunner::new(config).run(&strategy, |(old, other, seed)| {
        let made =
            compiled::case(&old, &other, seed, POOL_COMPILED).map_err(TestCaseError::fail)?;
        let mut validate = |old: &[Verdict], new: &[Verdict]| {
            let probes = &made.case.probes;
            let endpoints = [made.old_endpoint.as_deref(), made.new_endpoint.as_deref()];
            *held.borrow_mut() += compiled::check_reference(&made.old, endpoints[0], probes, old)
                .map_err(|e| format!("old artifact: {e}"))?;
            *held.borrow_mut() += compiled::check_reference(&made.new, endpoints[1], probes, new)
                .map_err(|e| format!("new artifact: {e}"))?;
            Ok(())
        };
        let mut rng = Rng::new(seed);
        check::run_case(
            &mut harness.borrow_mut(),
            &made.case,
            options,
            &mut rng,
            &mut stats.borrow_mut(),
            &mut validate,
        )
        .map_err(|e| TestCaseError::fail(format!("{e}\n{}", made.inputs())))
    });
    // The reason holds the report and both inputs as YAML; proptest's Debug form of the
    // clusters would say the same at ten times the length.
    match result {
        Ok(()) => Ok(held.into_inner()),
        Err(TestError::Fail(reason, _)) => Err(reason.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

/// Drawn cases `seeds`, each checked with `options`.
fn drawn_cases(
    harness: &mut Harness,
    seeds: std::ops::Range<u64>,
    options: Options,
    stats: &mut Stats,
) -> Result<(), String> {
    for seed in seeds {
        let case = drawn::case(seed, POOL_DRAWN);
        let mut rng = Rng::new(seed);
        check::run_case(harness, &case, options, &mut rng, stats, &mut |_, _| Ok(()))?;
    }
    Ok(())
}

#[test]
fn compiled_updates_judge_each_packet_by_the_old_artifact_until_the_flip_then_by_the_new() {
    if !stepwise::available() {
        return;
    }
    let started = Instant::now();
    let mut harness = Harness::load("compiled");
    let mut stats = Stats::default();
    let options = Options { per_step: PER_STEP, way_back: true, interrupt: false };

    let held =
        compiled_cases(&mut harness, 1, 40, options, &mut stats).unwrap_or_else(|e| panic!("{e}"));

    eprintln!(
        "compiled updates, {} test runs in {:.1?}, {held} recorded verdicts held against the \
         reference:\n{}",
        harness.runs,
        started.elapsed(),
        stats.summary()
    );
    assert!(stats.flips >= stats.cases, "every case flips at least once: {stats:?}");
    assert!(stats.compared_differing > 0, "no probe told the artifacts apart: {stats:?}");
    assert!(stats.established > 0, "no case followed an established flow: {stats:?}");
    assert!(held > 0, "no decision was held against the reference");
}

#[test]
fn drawn_updates_judge_each_packet_by_the_old_state_until_the_flip_then_by_the_new() {
    if !stepwise::available() {
        return;
    }
    let started = Instant::now();
    let mut harness = Harness::load("drawn");
    let mut stats = Stats::default();
    let options = Options { per_step: PER_STEP, way_back: true, interrupt: false };

    drawn_cases(&mut harness, 0..24, options, &mut stats).unwrap_or_else(|e| panic!("{e}"));

    eprintln!(
        "drawn updates, {} test runs in {:.1?}:\n{}",
        harness.runs,
        started.elapsed(),
        stats.summary()
    );
    assert!(stats.compared_differing > 0, "no probe told the states apart: {stats:?}");
    assert!(stats.established > 0, "no case followed an established flow: {stats:?}");
}

#[test]
fn an_interrupted_update_planned_again_from_the_live_maps_judges_each_packet_by_the_live_state() {
    if !stepwise::available() {
        return;
    }
    let started = Instant::now();
    let mut harness = Harness::load("interrupted");
    let mut stats = Stats::default();
    let options = Options { per_step: PER_STEP, way_back: false, interrupt: true };

    compiled_cases(&mut harness, 2, 16, options, &mut stats).unwrap_or_else(|e| panic!("{e}"));
    drawn_cases(&mut harness, 100..124, options, &mut stats).unwrap_or_else(|e| panic!("{e}"));

    eprintln!(
        "interrupted updates, {} test runs in {:.1?}:\n{}",
        harness.runs,
        started.elapsed(),
        stats.summary()
    );
    let before_flip = stats.interrupted - stats.interrupted_after_flip;
    assert!(before_flip > 0, "never stopped before the flip: {stats:?}");
    assert!(stats.interrupted_after_flip > 0, "never stopped after the flip: {stats:?}");
}

#[test]
fn an_established_flow_is_judged_by_the_new_policy_from_the_flip_and_its_replies_keep_passing() {
    if !stepwise::available() {
        return;
    }
    let mut harness = Harness::load("established");
    let mut stats = Stats::default();
    let options = Options { per_step: 2, way_back: false, interrupt: false };
    let base = drawn::established_case();
    // The new state denies the first flow, allows the second by another rule, and (third)
    // binds another endpoint at the interface, whose policy refuses the first flow's
    // replies: they no longer belong to a flow of this endpoint.
    let mut rebound = base.clone();
    rebound.new.endpoints.values_mut().for_each(|e| e.endpoint_id = 12);
    let cases = [
        check::Case { probes: vec![base.probes[0]], ..base.clone() },
        check::Case {
            probes: vec![base.probes[1]],
            name: "established case, allowed".into(),
            ..base
        },
        check::Case {
            probes: vec![rebound.probes[0]],
            name: "established case, rebound".into(),
            ..rebound
        },
    ];
    for case in &cases {
        let mut rng = Rng::new(0);
        check::run_case(&mut harness, case, options, &mut rng, &mut stats, &mut |_, _| Ok(()))
            .unwrap_or_else(|e| panic!("{e}"));
    }

    eprintln!("established flows, {} test runs:\n{}", harness.runs, stats.summary());
    assert_eq!(stats.established, 3, "{stats:?}");
    assert_eq!(stats.established_dropped, 2, "{stats:?}");
    assert_eq!(stats.established_rebound, 1, "{stats:?}");
}
