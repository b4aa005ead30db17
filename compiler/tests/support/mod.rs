//! Shared by the tests that hold the compiled tables against the reference evaluator.

#![allow(dead_code, reason = "each test file uses a different part of this module")]

use compiler::Compilation;
use compiler::artifact::Artifact;
use compiler::ir::Action;
use compiler::reference::{Address, BUILT_IN, Flow, HOST_RULE, Reference, Verdict};
use compiler::simulate::{self, Decision};
use policy_lang::ast::Direction;
use policy_lang::{Bundle, Severity, Sources};

/// The artifact's name of the rule the tables use where a direction is not isolated
/// but a deny applies.
const OPEN_RULE: &str = "direction not isolated: allow what no deny rule denies";

/// Parses and compiles `sources`; any error is returned, rendered, as `Err`.
pub fn compile(sources: &Sources) -> Result<(Bundle, Compilation), String> {
    let bundle = policy_lang::load_sources(sources);
    let compilation = compiler::compile(sources, &bundle);
    let errors: Vec<String> = bundle
        .diagnostics
        .iter()
        .chain(&compilation.diagnostics)
        .filter(|d| d.severity() == Severity::Error)
        .map(|d| d.render(sources))
        .collect();
    if errors.is_empty() { Ok((bundle, compilation)) } else { Err(errors.join("\n")) }
}

/// Checks that the reference and the compiler see the same endpoints, in the same
/// order, with the same labels and addresses.
pub fn same_endpoints(reference: &Reference<'_>, compilation: &Compilation) -> Result<(), String> {
    let ours: Vec<_> =
        reference.endpoints().iter().map(|e| (&e.name, &e.labels, &e.addresses)).collect();
    let theirs: Vec<_> = compilation
        .artifact
        .endpoints
        .iter()
        .zip(&compilation.analysis.endpoint_labels)
        .map(|(e, labels)| (&e.name, labels, &e.addresses))
        .collect();
    if ours == theirs {
        Ok(())
    } else {
        Err(format!("endpoints differ:\nreference {ours:#?}\ncompiler {theirs:#?}"))
    }
}

/// The simulator's view of a flow given as addresses (the simulator has no host).
pub fn simulate(artifact: &Artifact, flow: &Flow) -> (Decision, Decision) {
    let (Address::Ip(src), Address::Ip(dst)) = (flow.src, flow.dst) else {
        panic!("the table simulator only takes IP addresses: {flow:?}")
    };
    simulate::connect(artifact, src, dst, flow.proto, flow.port)
}

/// Whether the simulator's decision in one direction is the one the reference gives,
/// provenance included: an allow or deny must name a rule the reference finds matching
/// (the tables may name another matching rule than the reference's first one).
pub fn same_decision(
    artifact: &Artifact,
    reference: &Reference<'_>,
    flow: &Flow,
    direction: Direction,
    decision: Decision,
) -> Result<(), String> {
    let (at, peer) = match direction {
        Direction::Egress => (flow.src, flow.dst),
        Direction::Ingress => (flow.dst, flow.src),
    };
    let Some(subject) = reference.endpoint_at(at) else {
        return match decision {
            Decision::NotEnforced => Ok(()),
            other => Err(format!("{direction:?} at a non-endpoint: tables say {other:?}")),
        };
    };
    let verdict = reference.decide(subject, direction, peer, flow.proto, flow.port);
    let matching = reference.matching_rules(subject, direction, peer, flow.proto, flow.port);
    let named = |cookie: u32| {
        artifact.rule(cookie).map(|r| (r.policy.as_str(), r.rule.as_str())).unwrap_or(("?", "?"))
    };
    let matches_rule = |cookie: u32, action: Action| {
        let (policy, rule) = named(cookie);
        matching.iter().any(|m| m.action == action && m.policy == policy && m.rule == rule)
    };
    let ok = match (&verdict, decision) {
        (Verdict::NotIsolated, Decision::NotEnforced) => true,
        (Verdict::NotIsolated, Decision::Allowed(c)) => named(c) == (BUILT_IN, OPEN_RULE),
        (Verdict::Allowed { policy, rule }, Decision::Allowed(c)) if policy == BUILT_IN => {
            rule == HOST_RULE && named(c) == (BUILT_IN, HOST_RULE)
        }
        (Verdict::Allowed { .. }, Decision::Allowed(c)) => matches_rule(c, Action::Allow),
        (Verdict::Denied { .. }, Decision::Denied(c)) => matches_rule(c, Action::Deny),
        (Verdict::DefaultDeny { .. }, Decision::NoMatch) => true,
        _ => false,
    };
    if ok {
        return Ok(());
    }
    let tables = match decision {
        Decision::Allowed(c) | Decision::Denied(c) => format!("{decision:?} = {:?}", named(c)),
        other => format!("{other:?}"),
    };
    Err(format!("{direction:?} at {}: reference {verdict:?}, tables {tables}", subject.name))
}
