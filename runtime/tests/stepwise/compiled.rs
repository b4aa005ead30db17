//! Cases compiled from generated clusters: the old artifact from one cluster, the new one
//! from a mix of it and a second cluster (each pod, policy and namespace kept, replaced by
//! the second cluster's of the same name, or dropped; some of the second's added), as a
//! GitOps change would make it. Most new artifacts are compiled with the old one's
//! identity lock, as `policyc compile --lock` would; the others renumber identities,
//! which rewrites much of the maps at once.
//!
//! The endpoint under test is bound at the loopback interface: one endpoint per case,
//! because a test run's skb carries that ifindex and a plan binds one endpoint per
//! interface. Rebinding the interface per probe would write entries the plan does not
//! know of, and so test another update than the planned one. The interface keeps its
//! pod in most new states, is bound to another pod in some, and is unbound in a few;
//! the other pods of the node are bound at interfaces the test never runs packets on,
//! so that their entries are part of the update as on a real node.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use compiler::Compilation;
use compiler::lock::Lock;
use compiler::reference::{Address, Flow, Reference};
use compiler::simulate::{self, Decision};
use datapath::Reason;
use policy_lang::ast::Direction;
use policy_lang::{Bundle, Severity, Sources};
use runtime::MapState;
use runtime::bindings::{self, Binding};

use super::Rng;
use super::check::{Case, Probe};
use super::generate::{self, Cluster};
use super::harness::{Hook, Verdict};

/// One compiled snapshot.
#[derive(Debug)]
pub struct Compiled {
    pub yaml: String,
    pub bundle: Bundle,
    pub compilation: Compilation,
}

impl Compiled {
    /// Compiles `yaml`, keeping the identity numbers of `lock` when given.
    fn new(yaml: String, lock: Option<&Lock>) -> Result<Compiled, String> {
        let mut sources = Sources::default();
        sources.add("cluster.yaml", yaml.as_str());
        let bundle = policy_lang::load_sources(&sources);
        let options =
            compiler::Options { lock: lock.cloned().unwrap_or_default(), ..Default::default() };
        let compilation = compiler::compile_with(&sources, &bundle, &options);
        let errors: Vec<String> = (bundle.diagnostics.iter())
            .chain(&compilation.diagnostics)
            .filter(|d| d.severity() == Severity::Error)
            .map(|d| d.render(&sources))
            .collect();
        if !errors.is_empty() {
            return Err(format!("{}\n--- input ---\n{yaml}", errors.join("\n")));
        }
        let compiled = Compiled { yaml, bundle, compilation };
        crate::support::same_endpoints(&compiled.reference(), &compiled.compilation)?;
        Ok(compiled)
    }

    pub fn reference(&self) -> Reference<'_> {
        Reference::new(&self.bundle, &self.compilation.analysis)
    }
}

/// A compiled case: the states bind `old_endpoint` and `new_endpoint` at the interface
/// under test.
#[derive(Debug)]
pub struct CompiledCase {
    pub case: Case,
    pub old: Compiled,
    pub new: Compiled,
    pub old_endpoint: Option<String>,
    pub new_endpoint: Option<String>,
    /// Whether the new artifact kept the old one's identity numbers.
    pub locked: bool,
}

impl CompiledCase {
    /// Both inputs, for a failure report.
    pub fn inputs(&self) -> String {
        format!(
            "interface bound to {:?}, then {:?}; identities {}\n--- old ---\n{}--- new ---\n{}",
            self.old_endpoint,
            self.new_endpoint,
            if self.locked { "locked" } else { "renumbered" },
            self.old.yaml,
            self.new.yaml
        )
    }
}

/// The case made of `old` and a mix of it with `other`; `seed` draws the mix, the
/// endpoint under test and `probes` probes.
pub fn case(
    old: &Cluster,
    other: &Cluster,
    seed: u64,
    probes: usize,
) -> Result<CompiledCase, String> {
    let mut rng = Rng::new(seed);
    let (old_yaml, other_yaml) = (old.render(), other.render());
    let new_yaml = mix(&old_yaml, &other_yaml, &mut rng);
    let old_compiled = Compiled::new(old_yaml, None)?;
    let locked = rng.chance(75);
    let lock = locked.then_some(&old_compiled.compilation.lock);
    let new_compiled = Compiled::new(new_yaml, lock)?;

    let names = |c: &Compiled| -> Vec<String> {
        c.compilation.artifact.endpoints.iter().map(|e| e.name.clone()).collect()
    };
    let (old_names, new_names) = (names(&old_compiled), names(&new_compiled));
    let pick = |rng: &mut Rng, names: &[String]| names[rng.below(names.len())].clone();
    // Mostly a pod some policy isolates: the others accept everything in both states.
    let isolated: Vec<String> = (old_compiled.compilation.artifact.endpoints.iter())
        .filter(|e| e.ingress_table != 0 || e.egress_table != 0)
        .map(|e| e.name.clone())
        .collect();
    let old_endpoint = if !isolated.is_empty() && rng.chance(80) {
        Some(pick(&mut rng, &isolated))
    } else {
        (!old_names.is_empty()).then(|| pick(&mut rng, &old_names))
    };
    // Mostly the same pod; sometimes another one, or none.
    let draw = rng.below(100);
    let new_endpoint = match &old_endpoint {
        _ if new_names.is_empty() || draw < 10 => None,
        Some(name) if draw >= 25 && new_names.contains(name) => Some(name.clone()),
        _ => Some(pick(&mut rng, &new_names)),
    };

    // The node's other pods, each bound at its own interface in both states or in none.
    let all: BTreeSet<&String> = old_names.iter().chain(&new_names).collect();
    let mut others = Vec::new();
    for (j, name) in all.into_iter().enumerate() {
        let under_test = Some(name) == old_endpoint.as_ref() || Some(name) == new_endpoint.as_ref();
        if !under_test && rng.chance(70) {
            others.push((format!("pod{j}"), 100 + j as u32, name.clone()));
        }
    }
    let old_state = state(&old_compiled, old_endpoint.as_deref(), &others)?;
    let new_state = state(&new_compiled, new_endpoint.as_deref(), &others)?;

    let local: BTreeSet<IpAddr> = [(&old_compiled, &old_endpoint), (&new_compiled, &new_endpoint)]
        .into_iter()
        .filter_map(|(c, name)| c.compilation.artifact.endpoint(name.as_deref()?))
        .flat_map(|e| e.addresses.iter().copied())
        .collect();
    let mut next_port = 1024;
    let mut pool: Vec<Probe> = generate::flows(old, &mut next_port)
        .into_iter()
        .chain(generate::flows(other, &mut next_port))
        .flat_map(|packet| {
            let from = local.contains(&packet.src).then_some(Hook::FromEndpoint);
            let to = local.contains(&packet.dst).then_some(Hook::ToEndpoint);
            [from, to].into_iter().flatten().map(move |hook| Probe { hook, packet })
        })
        .collect();
    rng.shuffle(&mut pool);
    pool.truncate(probes);

    let case = Case {
        name: format!("compiled case (seed {seed:#x})"),
        old: old_state,
        new: new_state,
        probes: pool,
    };
    Ok(CompiledCase {
        case,
        old: old_compiled,
        new: new_compiled,
        old_endpoint,
        new_endpoint,
        locked,
    })
}

/// The desired maps of `compiled` with `under_test` at the loopback interface and
/// `others` (interface, ifindex, endpoint) where the artifact has them, resolved by the
/// runtime's own binding code.
fn state(
    compiled: &Compiled,
    under_test: Option<&str>,
    others: &[(String, u32, String)],
) -> Result<MapState, String> {
    let artifact = &compiled.compilation.artifact;
    let mut ifindex = BTreeMap::from([("test0".to_owned(), super::harness::LOOPBACK)]);
    let mut bound = Vec::new();
    if let Some(name) = under_test {
        bound.push(Binding { interface: "test0".into(), endpoint: name.into(), pod: None });
    }
    for (interface, index, name) in others {
        if artifact.endpoint(name).is_some() {
            ifindex.insert(interface.clone(), *index);
            bound.push(Binding { interface: interface.clone(), endpoint: name.clone(), pod: None });
        }
    }
    let resolved = bindings::resolve(artifact, &bound, |name| {
        ifindex.get(name).copied().ok_or_else(|| std::io::Error::other("no such interface"))
    })
    .map_err(|e| format!("binding: {e}"))?;
    MapState::desired(artifact, &resolved).map_err(|e| format!("desired state: {e}"))
}

/// `new` made from the documents of `old` and `other`: namespaces from either (the
/// other's labels sometimes), and each pod or policy kept, replaced by the other's of the
/// same name, or dropped, and some only the other has added. Pod addresses follow the
/// pod's index, so no two pods of the mix share one.
fn mix(old: &str, other: &str, rng: &mut Rng) -> String {
    let docs = |text: &str| -> BTreeMap<(usize, String), String> {
        text.split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| (key(d), d.to_owned()))
            .collect()
    };
    let (old, other) = (docs(old), docs(other));
    let keys: BTreeSet<&(usize, String)> = old.keys().chain(other.keys()).collect();
    let mut out = String::new();
    for key in keys {
        let namespace = key.0 == 0;
        let chosen = match (old.get(key), other.get(key)) {
            (Some(a), Some(b)) => match rng.below(100) {
                0..60 => Some(a),
                60..85 => Some(b),
                _ if namespace => Some(a),
                _ => None,
            },
            (Some(a), None) => (namespace || rng.chance(80)).then_some(a),
            (None, Some(b)) => (namespace || rng.chance(40)).then_some(b),
            (None, None) => None,
        };
        if let Some(doc) = chosen {
            out.push_str("---\n");
            out.push_str(doc);
        }
    }
    out
}

/// A rendered document's kind (in the order they must come: namespaces first) and name.
fn key(doc: &str) -> (usize, String) {
    let field = |prefix: &str| {
        doc.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_default().trim().to_owned()
    };
    let order = ["Namespace", "Pod", "NetworkPolicy", "CiliumNetworkPolicy"];
    let kind = field("kind: ");
    (order.iter().position(|k| *k == kind).unwrap_or(order.len()), field("  name: "))
}

/// Holds what the kernel decided with the maps settled at one artifact against the
/// reference evaluator and the table simulator: the decision, its rule, the peer's
/// identity and the deciding key of its event. Returns how many decisions were held
/// against the reference (those of packets from or to the bound endpoint's own address;
/// the simulator judges every packet).
pub fn check_reference(
    compiled: &Compiled,
    endpoint: Option<&str>,
    probes: &[Probe],
    verdicts: &[Verdict],
) -> Result<usize, String> {
    let artifact = &compiled.compilation.artifact;
    let reference = compiled.reference();
    let record = endpoint.and_then(|name| artifact.endpoint(name));
    let mut held = 0;
    for (probe, verdict) in probes.iter().zip(verdicts) {
        let place = || format!("{} at {endpoint:?}", probe.describe());
        let Some(record) = record else {
            if verdict.reason != Reason::DropNoEndpoint {
                return Err(format!("{}: {} with no endpoint bound", place(), verdict.describe()));
            }
            continue;
        };
        let rule = verdict.event.map_or(0, |e| e.rule);
        let decision = match verdict.reason {
            Reason::PassNotEnforced => Decision::NotEnforced,
            Reason::PassPolicy => Decision::Allowed(rule),
            Reason::DropPolicyDeny => Decision::Denied(rule),
            Reason::DropNoPolicy => Decision::NoMatch,
            _ => return Err(format!("{}: {} where policy decides", place(), verdict.describe())),
        };
        let (ingress, direction) = match probe.hook {
            Hook::ToEndpoint => (true, Direction::Ingress),
            Hook::FromEndpoint => (false, Direction::Egress),
        };
        let (peer, packet) = (probe.peer(), &probe.packet);
        let simulated =
            simulate::decide(artifact, record, ingress, peer, packet.proto(), packet.port());
        if simulated != decision {
            return Err(format!("{}: kernel {decision:?}, simulator {simulated:?}", place()));
        }
        if record.addresses.contains(&probe.local()) {
            let flow = Flow {
                src: Address::Ip(packet.src),
                dst: Address::Ip(packet.dst),
                proto: packet.proto(),
                port: packet.port(),
            };
            crate::support::same_decision(artifact, &reference, &flow, direction, decision)
                .map_err(|e| format!("{}: kernel and reference differ: {e}", place()))?;
            held += 1;
        }
        if let Some(event) = verdict.event {
            let identity = simulate::identity_of(artifact, peer);
            let facts = (event.endpoint_id, event.identity, event.peer_identity);
            if facts != (record.endpoint_id, record.identity, identity) {
                return Err(format!(
                    "{}: event of endpoint {}, identity {}, peer {}; expected {}, {}, {identity}",
                    place(),
                    facts.0,
                    facts.1,
                    facts.2,
                    record.endpoint_id,
                    record.identity
                ));
            }
            if let Decision::Allowed(rule) | Decision::Denied(rule) = decision {
                let found = artifact.policy.iter().find(|(k, _)| *k == event.entry);
                if found.is_none_or(|(_, v)| v.rule != rule) {
                    return Err(format!(
                        "{}: event names key {:?}, not rule {rule}'s",
                        place(),
                        event.entry
                    ));
                }
            }
        }
    }
    Ok(held)
}
