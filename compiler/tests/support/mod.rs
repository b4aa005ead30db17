//! Shared by the tests that hold the compiled tables against the reference evaluator.

#![allow(dead_code, reason = "each test file uses a different part of this module")]

pub mod generate;

use std::net::IpAddr;

use compiler::Compilation;
use compiler::artifact::Artifact;
use compiler::ir::{Action, Enforcement};
use compiler::reference::{
    Address, BUILT_IN, Flow, HOST_RULE, Options as ReferenceOptions, Reference, Verdict,
};
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

/// Every combination of the semantics switches that the compile and the reference
/// share: enforcement mode, and whether ipBlocks match pod addresses.
pub const MODES: [(Enforcement, bool); 6] = [
    (Enforcement::Default, false),
    (Enforcement::Default, true),
    (Enforcement::Always, false),
    (Enforcement::Always, true),
    (Enforcement::Never, false),
    (Enforcement::Never, true),
];

/// Every disagreement over `flows` between the tables (through the simulator) and the
/// reference, in each of [`MODES`]: whether the flow passes and, per direction, the
/// decision and the deciding rule. An input that does not compile is an `Err`.
pub fn disagreements_in_every_mode(
    sources: &Sources,
    bundle: &Bundle,
    flows: &[Flow],
) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for (enforcement, ipblock_matches_pods) in MODES {
        let options = compiler::Options { enforcement, ipblock_matches_pods, ..Default::default() };
        let compilation = compiler::compile_with(sources, bundle, &options);
        let errors: Vec<String> = compilation
            .diagnostics
            .iter()
            .filter(|d| d.severity() == Severity::Error)
            .map(|d| d.render(sources))
            .collect();
        if !errors.is_empty() {
            return Err(errors.join("\n"));
        }
        let reference = Reference::new(bundle, &compilation.analysis)
            .with_options(ReferenceOptions { enforcement, ipblock_matches_pods });
        same_endpoints(&reference, &compilation)?;
        let mode = format!("{enforcement:?}, ipblock_matches_pods {ipblock_matches_pods}");
        for flow in flows {
            let expected = reference.evaluate(flow).passes();
            let (egress, ingress) = simulate(&compilation.artifact, flow);
            let name = || {
                format!(
                    "[{mode}] {:?} -> {:?} proto {} port {:?}",
                    flow.src, flow.dst, flow.proto, flow.port
                )
            };
            if expected != (egress.passes() && ingress.passes()) {
                out.push(format!("{}: pass/fail differs", name()));
            }
            for (direction, decision) in
                [(Direction::Egress, egress), (Direction::Ingress, ingress)]
            {
                if let Err(e) =
                    same_decision(&compilation.artifact, &reference, flow, direction, decision)
                {
                    out.push(format!("{}: {e}", name()));
                }
            }
        }
    }
    Ok(out)
}

/// The flows the agreement tests sample: every ordered pair of `pods`, and each pod
/// with each of `external` both ways; TCP, UDP and SCTP on `ports`, and `icmp` types.
pub fn sample_flows(
    pods: &[IpAddr],
    external: &[IpAddr],
    ports: &[u16],
    icmp: &[(u8, u16)],
) -> Vec<Flow> {
    let mut pairs = Vec::new();
    for &src in pods {
        pairs.extend(pods.iter().filter(|&&dst| dst != src).map(|&dst| (src, dst)));
        pairs.extend(external.iter().flat_map(|&ext| [(src, ext), (ext, src)]));
    }
    let probes: Vec<(u8, u16)> = [6, 17, 132]
        .into_iter()
        .flat_map(|proto| ports.iter().map(move |&port| (proto, port)))
        .chain(icmp.iter().copied())
        .collect();
    pairs
        .into_iter()
        .flat_map(|(src, dst)| {
            probes.iter().map(move |&(proto, port)| Flow {
                src: Address::Ip(src),
                dst: Address::Ip(dst),
                proto,
                port: Some(port),
            })
        })
        .collect()
}

/// Every disagreement, in every mode, on the flows the agreement tests sample from a
/// generated cluster rendered as `yaml`: between its pods, and between its pods and the
/// outside addresses, on the probed ports and ICMP types.
pub fn generated_disagreements(
    yaml: &str,
    cluster: &generate::Cluster,
) -> Result<Vec<String>, String> {
    let mut sources = Sources::default();
    sources.add("generated.yaml", yaml);
    let (bundle, _) = compile(&sources)?;
    // Node addresses join the pods': a node is a host endpoint when a host policy selects
    // it, and a remote-node peer to every endpoint.
    let pods: Vec<IpAddr> = (0..cluster.pods.len())
        .map(|i| cluster.pod_address(i))
        .chain((0..cluster.nodes.len()).map(|i| cluster.node_address(i)))
        .collect();
    let external: Vec<IpAddr> = generate::EXTERNAL.iter().map(|a| a.parse().unwrap()).collect();
    let flows = sample_flows(&pods, &external, &generate::PORTS, &generate::ICMP_TYPES);
    disagreements_in_every_mode(&sources, &bundle, &flows)
}
