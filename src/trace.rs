//! `policyc trace`: why a flow is allowed or denied, by the reference semantics and by
//! the compiled tables, side by side.

use std::io::Write as _;
use std::net::IpAddr;

use anyhow::{Context as _, bail};
use compiler::artifact::Artifact;
use compiler::reference::{Address, Flow, Reference, Verdict};
use compiler::simulate::{self, Decision};
use policy_lang::ast::Direction;
use policy_lang::{Bundle, Sources};
use serde_json::json;

/// One end of a traced flow as the user names it.
#[derive(Clone, Debug)]
pub struct End {
    /// What the user typed, for the report.
    pub spec: String,
    pub address: Address,
    /// The pod chosen to stand for the end, when it is one.
    pub pod: Option<String>,
}

/// Resolves `spec`: an IP address, `namespace/pod`, `namespace/workload` (any pod the
/// workload owns), or `namespace:selector` (`shop:app=web,tier in (a,b)`; the first pod
/// in name order that matches).
pub fn resolve(spec: &str, bundle: &Bundle) -> anyhow::Result<End> {
    if let Ok(ip) = spec.parse::<IpAddr>() {
        let pod = bundle
            .pods
            .iter()
            .find(|p| p.ips.iter().any(|i| i.value == ip))
            .map(|p| format!("{}/{}", p.meta.namespace, p.meta.name.value));
        return Ok(End { spec: spec.into(), address: Address::Ip(ip), pod });
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
        pods.into_iter().find(|p| p.meta.namespace == ns && selector.matches(&p.meta.labels))
    } else if let Some((ns, name)) = spec.split_once('/') {
        let by_name =
            pods.iter().copied().find(|p| p.meta.namespace == ns && p.meta.name.value == name);
        by_name.or_else(|| {
            pods.into_iter().find(|p| p.meta.namespace == ns && owned_by(bundle, p, name))
        })
    } else {
        bail!(
            "`{spec}` is not an IP address, `namespace/pod`, `namespace/workload` or `namespace:selector`"
        )
    };
    let Some(pod) = chosen else { bail!("no pod matches `{spec}`") };
    let Some(ip) = pod.ips.first() else {
        bail!("pod {}/{} has no address (not scheduled?)", pod.meta.namespace, pod.meta.name.value)
    };
    Ok(End {
        spec: spec.into(),
        address: Address::Ip(ip.value),
        pod: Some(format!("{}/{}", pod.meta.namespace, pod.meta.name.value)),
    })
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
    tables: Option<Decision>,
}

/// What to trace: both ends, the protocol and the destination port.
pub struct Query {
    pub from: End,
    pub to: End,
    pub proto: u8,
    pub port: Option<u16>,
}

/// Prints the trace; returns whether the compiled tables agree with the reference.
pub fn trace(
    bundle: &Bundle,
    compilation: &compiler::Compilation,
    query: &Query,
    reference_options: compiler::reference::Options,
    json_output: bool,
) -> anyhow::Result<bool> {
    let Query { from, to, proto, port } = query;
    let (proto, port) = (*proto, *port);
    let artifact = &compilation.artifact;
    let reference = Reference::new(bundle, &compilation.analysis).with_options(reference_options);
    let flow = Flow { src: from.address, dst: to.address, proto, port };
    let verdict = reference.evaluate(&flow);
    let ip = |a: Address| match a {
        Address::Ip(ip) => Some(ip),
        Address::Host => None,
    };
    let mut sides = Vec::new();
    if let Some(v) = verdict.egress {
        let at = from.pod.clone().unwrap_or_else(|| from.spec.clone());
        let tables = tables_answer(artifact, &at, false, ip(to.address), proto, port);
        sides.push(Side { direction: Direction::Egress, at, reference: v, tables });
    }
    if let Some(v) = verdict.ingress {
        let at = to.pod.clone().unwrap_or_else(|| to.spec.clone());
        let tables = tables_answer(artifact, &at, true, ip(from.address), proto, port);
        sides.push(Side { direction: Direction::Ingress, at, reference: v, tables });
    }
    // Replies leave at the destination and arrive at the source; conntrack decides them,
    // so the tables have no answer to show beside the reference's.
    let replies = reference.reply(&flow);
    let replies_pass = replies.passes();
    let mut reply_sides = Vec::new();
    if let Some(v) = replies.egress {
        let at = to.pod.clone().unwrap_or_else(|| to.spec.clone());
        reply_sides.push(Side { direction: Direction::Egress, at, reference: v, tables: None });
    }
    if let Some(v) = replies.ingress {
        let at = from.pod.clone().unwrap_or_else(|| from.spec.clone());
        reply_sides.push(Side { direction: Direction::Ingress, at, reference: v, tables: None });
    }
    let allowed = sides.iter().all(|s| s.reference.passes());
    let agree = sides.iter().all(|s| s.tables.is_none_or(|t| t.passes() == s.reference.passes()));

    let mut out = std::io::stdout().lock();
    if json_output {
        let value = json!({
            "from": { "spec": from.spec, "pod": from.pod },
            "to": { "spec": to.spec, "pod": to.pod },
            "protocol": proto,
            "port": port,
            "allowed": allowed,
            "tables_agree": agree,
            "directions": sides.iter().map(|s| side_json(s, artifact)).collect::<Vec<_>>(),
            "replies": {
                "passes": replies_pass,
                "directions": reply_sides.iter().map(|s| reply_json(s, artifact)).collect::<Vec<_>>(),
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
        for s in &sides {
            writeln!(
                out,
                "  {} at {}: {}",
                s.direction.name(),
                s.at,
                verdict_text(&s.reference, artifact)
            )?;
            match s.tables {
                Some(d) => writeln!(out, "    compiled tables: {}", decision_text(d, artifact))?,
                None => {
                    writeln!(out, "    compiled tables: not checked (the peer has no address)")?
                }
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
        for s in &reply_sides {
            writeln!(
                out,
                "    {} at {}: {}",
                s.direction.name(),
                s.at,
                reply_text(&s.reference, artifact)
            )?;
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

fn describe(end: &End) -> String {
    match &end.pod {
        Some(pod) if *pod != end.spec => format!("{} ({pod})", end.spec),
        _ => end.spec.clone(),
    }
}

fn tables_answer(
    artifact: &Artifact,
    endpoint: &str,
    ingress: bool,
    peer: Option<IpAddr>,
    proto: u8,
    port: Option<u16>,
) -> Option<Decision> {
    let ep = artifact.endpoint(endpoint)?;
    Some(simulate::decide(artifact, ep, ingress, peer?, proto, port))
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
    let (result, policy, rule) = match &s.reference {
        Verdict::Allowed { policy, rule } => ("allowed", Some(policy), Some(rule)),
        Verdict::Denied { policy, rule } => ("denied", Some(policy), Some(rule)),
        Verdict::NotIsolated => ("not-isolated", None, None),
        Verdict::DefaultDeny { .. } => ("default-deny", None, None),
    };
    let location = match (policy, rule) {
        (Some(p), Some(r)) => Some(location(artifact, p, r)),
        _ => None,
    };
    json!({
        "direction": s.direction.name(),
        "at": s.at,
        "reference": { "result": result, "policy": policy, "rule": rule, "location": location },
        "tables": s.tables.map(|d| json!({ "passes": d.passes(), "decision": decision_text(d, artifact) })),
    })
}

fn reply_json(s: &Side, artifact: &Artifact) -> serde_json::Value {
    let forward = &side_json(s, artifact)["reference"];
    json!({
        "direction": s.direction.name(),
        "at": s.at,
        "passes": s.reference.passes(),
        "forward": forward,
    })
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
