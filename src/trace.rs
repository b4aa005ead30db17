//! `policyc trace`: why a flow is allowed or denied, by the reference semantics and by
//! the compiled tables, side by side.

use std::io::Write as _;
use std::net::IpAddr;

use anyhow::{Context as _, bail};
use compiler::artifact::{Artifact, EndpointRecord};
use compiler::reference::{self, Address, Flow, Reference, Verdict};
use compiler::simulate::{self, Decision};
use policy_lang::ast::{Direction, Labels};
use policy_lang::{Bundle, Sources};
use serde_json::json;

/// One end of a traced flow as the user names it.
#[derive(Clone, Debug)]
pub struct End {
    /// What the user typed, for the report.
    pub spec: String,
    pub place: Place,
    /// The pod chosen to stand for the end, when it is one.
    pub pod: Option<String>,
}

/// Where an end is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Place {
    Ip(IpAddr),
    /// A label set that no pod of the namespace matches: a pod of `namespace` with
    /// exactly `labels`, which need not exist.
    LabelSet {
        namespace: String,
        labels: Labels,
    },
}

/// Resolves `spec`: an IP address, `namespace/pod`, `namespace/workload` (any pod the
/// workload owns), `node/NODE` (a node, by its first address: its host endpoint when a
/// host policy selects it), or `namespace:selector` (`shop:app=web,tier in (a,b)`; the
/// first pod in name order that matches). A selector of `key=value` terms only that
/// matches no pod names a pod with exactly those labels, which need not exist.
pub fn resolve(spec: &str, bundle: &Bundle) -> anyhow::Result<End> {
    let node_endpoint = |node: &policy_lang::ast::Node| {
        format!("{}{}", compiler::HOST_ENDPOINT_PREFIX, node.meta.name.value)
    };
    if let Ok(ip) = spec.parse::<IpAddr>() {
        let pod = bundle
            .pods
            .iter()
            .filter(|p| !p.host_network)
            .find(|p| p.ips.iter().any(|i| i.value == ip))
            .map(|p| format!("{}/{}", p.meta.namespace, p.meta.name.value))
            .or_else(|| {
                let mut nodes = bundle.nodes.iter();
                nodes.find(|n| n.addresses.iter().any(|a| a.ip.value == ip)).map(node_endpoint)
            });
        return Ok(End { spec: spec.into(), place: Place::Ip(ip), pod });
    }
    // A pod of a namespace named `node` keeps its name; a node is tried after the pods.
    if let Some(name) = spec.strip_prefix(compiler::HOST_ENDPOINT_PREFIX)
        && !bundle.pods.iter().any(|p| p.meta.namespace == "node" && p.meta.name.value == name)
        && let Some(node) = bundle.nodes.iter().find(|n| n.meta.name.value == name)
    {
        let Some(address) = node.addresses.first() else {
            bail!("node {name} has no address in its status");
        };
        let place = Place::Ip(address.ip.value);
        return Ok(End { spec: spec.into(), place, pod: Some(node_endpoint(node)) });
    }
    let mut pods: Vec<_> = bundle.pods.iter().filter(|p| !p.host_network).collect();
    pods.sort_by(|a, b| {
        (&a.meta.namespace, &a.meta.name.value).cmp(&(&b.meta.namespace, &b.meta.name.value))
    });
    let chosen = if let Some((ns, expr)) = spec.split_once(':') {
        let mut sources = Sources::default();
        let selector =
            policy_lang::selector_expr::parse_cli(&mut sources, expr).map_err(|diags| {
                let rendered: String = diags.iter().map(|d| d.render(&sources)).collect();
                anyhow::anyhow!("invalid selector in `{spec}`:\n{rendered}")
            })?;
        let found =
            pods.into_iter().find(|p| p.meta.namespace == ns && selector.matches(&p.meta.labels));
        let label_set = selector.match_expressions.is_empty() && !selector.match_labels.is_empty();
        if found.is_none() && label_set {
            if !namespace_known(bundle, ns) {
                bail!("no pod matches `{spec}`, and namespace `{ns}` is not in the inputs");
            }
            let place = Place::LabelSet { namespace: ns.into(), labels: selector.match_labels };
            return Ok(End { spec: spec.into(), place, pod: None });
        }
        found
    } else if let Some((ns, name)) = spec.split_once('/') {
        let by_name =
            pods.iter().copied().find(|p| p.meta.namespace == ns && p.meta.name.value == name);
        by_name.or_else(|| {
            pods.into_iter().find(|p| p.meta.namespace == ns && owned_by(bundle, p, name))
        })
    } else {
        bail!(
            "`{spec}` is not an IP address, `namespace/pod`, `namespace/workload`, `node/NODE` or `namespace:selector`"
        )
    };
    let Some(pod) = chosen else { bail!("no pod matches `{spec}`") };
    let Some(ip) = pod.ips.first() else {
        bail!("pod {}/{} has no address (not scheduled?)", pod.meta.namespace, pod.meta.name.value)
    };
    Ok(End {
        spec: spec.into(),
        place: Place::Ip(ip.value),
        pod: Some(format!("{}/{}", pod.meta.namespace, pod.meta.name.value)),
    })
}

/// Whether the inputs know namespace `ns`: declared, or home to a pod or a policy.
fn namespace_known(bundle: &Bundle, ns: &str) -> bool {
    bundle.namespaces.iter().any(|n| n.meta.name.value == ns)
        || bundle.pods.iter().any(|p| p.meta.namespace == ns)
        || bundle.network_policies.iter().any(|p| p.meta.namespace == ns)
        || bundle.cilium_policies.iter().any(|p| !p.clusterwide && p.meta.namespace == ns)
}

/// Whether `pod` is owned, directly or through its owners, by a workload named `name`.
fn owned_by(bundle: &Bundle, pod: &policy_lang::ast::Pod, name: &str) -> bool {
    let mut owner = pod.owner.as_ref();
    for _ in 0..8 {
        let Some(o) = owner else { return false };
        if o.name == name {
            return true;
        }
        owner = bundle
            .workloads
            .iter()
            .find(|w| {
                w.meta.namespace == pod.meta.namespace
                    && w.meta.name.value == o.name
                    && w.kind.name() == o.kind
            })
            .and_then(|w| w.owner.as_ref());
    }
    false
}

/// Both answers for one direction.
struct Side {
    direction: Direction,
    at: String,
    reference: Verdict,
    /// The tables' decision, or why they cannot give one.
    tables: Result<Decision, String>,
}

/// What to trace: both ends, the protocol and the destination port.
pub struct Query {
    pub from: End,
    pub to: End,
    pub proto: u8,
    pub port: Option<u16>,
}

/// One end as the reference and the tables see it.
struct Resolved<'e> {
    end: &'e End,
    address: Address,
    /// For a label set: the identity the compile gives those labels, if any pod has it.
    identity: Option<u32>,
}

impl Resolved<'_> {
    /// How reports name the end where it is checked.
    fn at(&self) -> String {
        self.end.pod.clone().unwrap_or_else(|| self.end.spec.clone())
    }

    /// The identity the tables give this end as a peer.
    fn peer_identity(&self, artifact: &Artifact) -> Result<u32, String> {
        match &self.end.place {
            Place::Ip(ip) => Ok(simulate::identity_of(artifact, *ip)),
            Place::LabelSet { .. } => self.identity.ok_or_else(|| self.no_identity()),
        }
    }

    /// The endpoint whose tables judge this end's own `ingress` or egress. A label set
    /// borrows them from a pod of its identity: selection is by identity, and only an
    /// ingress rule's named port also reads the pod's own container ports, which a
    /// label set has none of.
    fn record<'a>(
        &self,
        artifact: &'a Artifact,
        reference: &Reference<'_>,
        ingress: bool,
    ) -> Result<&'a EndpointRecord, String> {
        match &self.end.place {
            Place::Ip(_) => {
                let pod = self.end.pod.as_deref().unwrap_or_default();
                artifact.endpoint(pod).ok_or_else(|| format!("{pod} is no endpoint of the tables"))
            }
            Place::LabelSet { .. } => {
                let id = self.identity.ok_or_else(|| self.no_identity())?;
                let no_ports = |e: &&EndpointRecord| {
                    reference.endpoints().iter().any(|r| r.name == e.name && r.ports.is_empty())
                };
                artifact
                    .endpoints
                    .iter()
                    .filter(|e| e.identity == id)
                    .find(|e| !ingress || no_ports(e))
                    .ok_or_else(|| {
                        format!("no pod of identity {id} without container ports to stand in")
                    })
            }
        }
    }

    fn no_identity(&self) -> String {
        format!(
            "the tables have no identity for `{}`: no pod has its identity labels",
            self.end.spec
        )
    }
}

/// Prints the trace; returns whether the compiled tables agree with the reference.
pub fn trace(
    bundle: &Bundle,
    compilation: &compiler::Compilation,
    query: &Query,
    options: &compiler::Options,
    json_output: bool,
) -> anyhow::Result<bool> {
    let Query { from, to, proto, port } = query;
    let (proto, port) = (*proto, *port);
    let artifact = &compilation.artifact;
    let mut reference =
        Reference::new(bundle, &compilation.analysis).with_options(reference::Options {
            ipblock_matches_pods: options.ipblock_matches_pods,
            enforcement: options.enforcement,
        });
    let mut resolve_end = |end| resolved(end, bundle, compilation, options, &mut reference);
    let (src, dst) = (resolve_end(from), resolve_end(to));
    let flow = Flow { src: src.address, dst: dst.address, proto, port };
    let verdict = reference.evaluate(&flow);
    let tables_answer = |subject: &Resolved<'_>, peer: &Resolved<'_>, ingress: bool| {
        let record = subject.record(artifact, &reference, ingress)?;
        let identity = peer.peer_identity(artifact)?;
        let decision = simulate::decide_identity(artifact, record, ingress, identity, proto, port);
        Ok(decision)
    };
    let mut sides = Vec::new();
    if let Some(v) = verdict.egress {
        let tables = tables_answer(&src, &dst, false);
        sides.push(Side { direction: Direction::Egress, at: src.at(), reference: v, tables });
    }
    if let Some(v) = verdict.ingress {
        let tables = tables_answer(&dst, &src, true);
        sides.push(Side { direction: Direction::Ingress, at: dst.at(), reference: v, tables });
    }
    // Replies leave at the destination and arrive at the source; conntrack decides them,
    // so the tables have no answer to show beside the reference's. Each side holds the
    // forward packet's verdict at that endpoint, which is what decides its replies.
    let replies = reference.reply(&flow);
    let replies_pass = replies.passes();
    let reply_sides: Vec<(Direction, String, Verdict)> = [
        (Direction::Egress, dst.at(), replies.egress),
        (Direction::Ingress, src.at(), replies.ingress),
    ]
    .into_iter()
    .filter_map(|(direction, at, forward)| Some((direction, at, forward?)))
    .collect();
    let allowed = sides.iter().all(|s| s.reference.passes());
    // A side the tables cannot answer for is reported as such, not as a disagreement.
    let agree = sides
        .iter()
        .all(|s| s.tables.as_ref().map_or(true, |t| t.passes() == s.reference.passes()));

    let mut out = std::io::stdout().lock();
    if json_output {
        let value = json!({
            "from": end_json(&src),
            "to": end_json(&dst),
            "protocol": proto,
            "port": port,
            "allowed": allowed,
            "tables_agree": agree,
            "directions": sides.iter().map(|s| side_json(s, artifact)).collect::<Vec<_>>(),
            "replies": {
                "passes": replies_pass,
                "directions": reply_sides
                    .iter()
                    .map(|(direction, at, forward)| json!({
                        "direction": direction.name(),
                        "at": at,
                        "passes": forward.passes(),
                        "forward": verdict_json(forward, artifact),
                    }))
                    .collect::<Vec<_>>(),
            },
        });
        writeln!(out, "{}", serde_json::to_string_pretty(&value)?)?;
    } else {
        let port_text = port.map_or(String::new(), |p| format!("/{p}"));
        writeln!(
            out,
            "{} -> {} {}{port_text}",
            describe(from),
            describe(to),
            protocol_name(proto)
        )?;
        for end in [&src, &dst] {
            if let Place::LabelSet { namespace, .. } = &end.end.place {
                let tables = match end.identity {
                    Some(id) => format!("identity {id} in the tables"),
                    None => "no identity in the tables (no pod has its identity labels), so only the reference answers for it".into(),
                };
                writeln!(
                    out,
                    "  {}: no pod matches; traced as a pod of namespace {namespace} with exactly these labels: {tables}",
                    end.end.spec
                )?;
            }
        }
        for s in &sides {
            writeln!(
                out,
                "  {} at {}: {}",
                s.direction.name(),
                s.at,
                verdict_text(&s.reference, artifact)
            )?;
            match &s.tables {
                Ok(d) => writeln!(out, "    compiled tables: {}", decision_text(*d, artifact))?,
                Err(why) => writeln!(out, "    compiled tables: not checked ({why})")?,
            }
        }
        if sides.is_empty() {
            writeln!(out, "  neither end is a pod of the inputs: nothing enforces this flow here")?;
        }
        if !reply_sides.is_empty() {
            writeln!(
                out,
                "  replies ({} -> {}), by conntrack at each endpoint:",
                describe(to),
                describe(from)
            )?;
        }
        for (direction, at, forward) in &reply_sides {
            writeln!(out, "    {} at {at}: {}", direction.name(), reply_text(forward, artifact))?;
        }
        writeln!(out, "verdict: {}", if allowed { "ALLOWED" } else { "DENIED" })?;
        if !agree {
            writeln!(
                out,
                "warning: the compiled tables disagree with the reference; please report this"
            )?;
        }
    }
    Ok(agree)
}

/// The reference's address of `end` (a label set joins the reference as a pod without
/// an address), and for a label set the identity the compile gives it: its identity
/// labels computed as for any pod, looked up in this compile's numbering.
fn resolved<'e>(
    end: &'e End,
    bundle: &Bundle,
    compilation: &compiler::Compilation,
    options: &compiler::Options,
    reference: &mut Reference<'_>,
) -> Resolved<'e> {
    match &end.place {
        Place::Ip(ip) => Resolved { end, address: Address::Ip(*ip), identity: None },
        Place::LabelSet { namespace, labels } => {
            let endpoint =
                reference::label_set_endpoint(bundle, end.spec.clone(), namespace, labels);
            let selected = compiler::identity::selected_keys(&compilation.analysis.policies);
            let identity_labels =
                compiler::identity::identity_labels(&endpoint.labels, &selected, &options.labels);
            let identity = compilation.lock.live.get(&identity_labels).copied();
            Resolved { end, address: reference.add_unaddressed(endpoint), identity }
        }
    }
}

fn end_json(end: &Resolved<'_>) -> serde_json::Value {
    let label_set = match &end.end.place {
        Place::Ip(_) => serde_json::Value::Null,
        Place::LabelSet { namespace, labels } => json!({
            "namespace": namespace,
            "labels": labels,
            "identity": end.identity,
        }),
    };
    json!({ "spec": end.end.spec, "pod": end.end.pod, "label_set": label_set })
}

fn describe(end: &End) -> String {
    match (&end.pod, &end.place) {
        (Some(pod), _) if *pod != end.spec => format!("{} ({pod})", end.spec),
        (None, Place::LabelSet { .. }) => format!("{} (no such pod)", end.spec),
        _ => end.spec.clone(),
    }
}

/// `file:line:col` of a rule, from the artifact's provenance records.
fn location(artifact: &Artifact, policy: &str, rule: &str) -> String {
    artifact
        .rules
        .iter()
        .find(|r| r.policy == policy && r.rule == rule)
        .map(|r| r.location.clone())
        .unwrap_or_default()
}

fn verdict_text(v: &Verdict, artifact: &Artifact) -> String {
    match v {
        Verdict::Allowed { policy, rule } => {
            format!("allowed by {policy} {rule} {}", location(artifact, policy, rule))
                .trim_end()
                .into()
        }
        Verdict::Denied { policy, rule } => {
            format!("denied by {policy} {rule} {}", location(artifact, policy, rule))
                .trim_end()
                .into()
        }
        Verdict::NotIsolated => "allowed: no policy isolates this direction".into(),
        Verdict::DefaultDeny { isolating } if isolating.is_empty() => {
            "denied: enforcement is `always` and no rule allows it".into()
        }
        Verdict::DefaultDeny { isolating } => {
            format!("denied: isolated by {} and no rule allows it", isolating.join(", "))
        }
    }
}

/// How replies fare at one endpoint, given the forward packet's verdict there.
fn reply_text(forward: &Verdict, artifact: &Artifact) -> String {
    if forward.passes() {
        let why = match forward {
            Verdict::NotIsolated => "passed unchecked (no policy isolates its direction)".into(),
            allowed => verdict_text(allowed, artifact),
        };
        format!("pass, tracked since the connection was {why}")
    } else {
        format!(
            "no conntrack entry, the connection is refused here ({})",
            verdict_text(forward, artifact)
        )
    }
}

fn decision_text(d: Decision, artifact: &Artifact) -> String {
    let rule = |cookie: u32| {
        artifact
            .rule(cookie)
            .map_or(format!("rule #{cookie}"), |r| format!("{} {}", r.policy, r.rule))
    };
    match d {
        Decision::NotEnforced => "pass (direction not enforced)".into(),
        Decision::Allowed(c) => format!("allow ({})", rule(c)),
        Decision::Denied(c) => format!("deny ({})", rule(c)),
        Decision::NoMatch => "drop (no entry matches)".into(),
    }
}

fn side_json(s: &Side, artifact: &Artifact) -> serde_json::Value {
    json!({
        "direction": s.direction.name(),
        "at": s.at,
        "reference": verdict_json(&s.reference, artifact),
        "tables": s.tables.as_ref().ok().map(|d| json!({ "passes": d.passes(), "decision": decision_text(*d, artifact) })),
        "tables_unchecked": s.tables.as_ref().err(),
    })
}

/// A reference verdict: its result and, for a rule, the policy, rule and location.
fn verdict_json(v: &Verdict, artifact: &Artifact) -> serde_json::Value {
    let (result, policy, rule) = match v {
        Verdict::Allowed { policy, rule } => ("allowed", Some(policy), Some(rule)),
        Verdict::Denied { policy, rule } => ("denied", Some(policy), Some(rule)),
        Verdict::NotIsolated => ("not-isolated", None, None),
        Verdict::DefaultDeny { .. } => ("default-deny", None, None),
    };
    let location = match (policy, rule) {
        (Some(p), Some(r)) => Some(location(artifact, p, r)),
        _ => None,
    };
    json!({ "result": result, "policy": policy, "rule": rule, "location": location })
}

pub fn protocol_name(proto: u8) -> String {
    match proto {
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "ICMPv6".into(),
        132 => "SCTP".into(),
        n => format!("proto {n}"),
    }
}

/// `tcp`, `UDP`, `icmp`, `sctp` or a protocol number.
pub fn parse_protocol(text: &str) -> anyhow::Result<u8> {
    Ok(match text.to_ascii_lowercase().as_str() {
        "tcp" => 6,
        "udp" => 17,
        "sctp" => 132,
        "icmp" => 1,
        "icmpv6" => 58,
        other => other.parse().with_context(|| format!("`{text}` is not a protocol"))?,
    })
}
