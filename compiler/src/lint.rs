//! Lints: warnings about policies that compile but probably do not mean what their
//! authors think. They run on a finished [`Compilation`], so they judge exactly what
//! the datapath will enforce.

use std::collections::BTreeSet;

use policy_lang::ast::Direction;
use policy_lang::{Bundle, Diagnostic, Sources};

use crate::codes;
use crate::ir::{Action, Peer};
use crate::simulate::{Decision, decide};
use crate::solve::Compilation;
use crate::tables::Pattern;

/// Which optional lints to run.
#[derive(Clone, Copy, Debug, Default)]
pub struct LintOptions {
    /// Warn about every pod that no policy isolates (off by default: many clusters
    /// leave some namespaces open on purpose).
    pub unisolated_pods: bool,
}

/// Runs every lint. Inventory-dependent lints (selects nothing, DNS) run only when the
/// inputs contain pods: a repository of policies alone says nothing about what they
/// select.
pub fn lint(
    _sources: &Sources,
    bundle: &Bundle,
    compilation: &Compilation,
    options: LintOptions,
) -> Vec<Diagnostic> {
    let _span = tracing::info_span!("lint").entered();
    let mut out = Vec::new();
    let analysis = &compilation.analysis;
    let artifact = &compilation.artifact;
    // Labels of the pods (host endpoints left out: pod policies and peers never select
    // them).
    let pod_labels: Vec<&policy_lang::ast::Labels> = artifact
        .endpoints
        .iter()
        .zip(&analysis.endpoint_labels)
        .filter(|(e, _)| !e.is_host())
        .map(|(_, labels)| labels)
        .collect();
    let has_inventory = !pod_labels.is_empty();

    for policy in &analysis.policies {
        let judged = has_inventory || !bundle.nodes.is_empty();
        if policy.nodes
            && judged
            && !bundle.nodes.iter().any(|n| policy.subject.matches(&n.meta.labels))
        {
            out.push(
                Diagnostic::new(codes::POLICY_SELECTS_NOTHING, format!("{} selects no node", policy.name))
                    .at(policy.subject.span, "matches no node of the inventory")
                    .help("check the nodeSelector's labels against the Node objects' labels, and include the Node manifests (`kubectl get nodes -o yaml`)"),
            );
        }
        let selected = pod_labels.iter().filter(|labels| policy.subject.matches(labels)).count();
        if has_inventory && selected == 0 && !policy.nodes {
            out.push(
                Diagnostic::new(
                    codes::POLICY_SELECTS_NOTHING,
                    format!("{} selects no pod", policy.name),
                )
                .at(policy.subject.span, "matches no pod of the inventory")
                .help("check the selector's labels against the pods' labels, or remove the policy"),
            );
        }
        for rule in &policy.rules {
            for peer in rule.peers.iter().flatten() {
                match peer {
                    Peer::Endpoints(selector)
                        if has_inventory && !pod_labels.iter().any(|l| selector.matches(l)) =>
                    {
                        out.push(
                            Diagnostic::new(
                                codes::PEER_SELECTS_NOTHING,
                                format!("a peer of {} {} selects no pod", policy.name, rule.label),
                            )
                            .at(selector.span, "matches no pod of the inventory")
                            .help("check the peer's pod and namespace labels; as written it allows nothing"),
                        );
                    }
                    // A /0 is "the world" (e.g. Cilium's world-ipv4 entity): that it
                    // holds pod addresses is the point, not a mistake.
                    Peer::Cidr { cidr, except } if cidr.prefix > 0 => {
                        let inside: Vec<&str> = artifact
                            .endpoints
                            .iter()
                            .filter(|e| !e.is_host())
                            .filter(|e| {
                                e.addresses.iter().any(|ip| {
                                    cidr.contains(*ip) && !except.iter().any(|x| x.contains(*ip))
                                })
                            })
                            .map(|e| e.name.as_str())
                            .collect();
                        if !inside.is_empty() {
                            out.push(
                                Diagnostic::new(
                                    codes::CIDR_CONTAINS_PODS,
                                    format!(
                                        "{cidr} contains the addresses of {} pod(s) ({}), which it does not match",
                                        inside.len(),
                                        inside.iter().take(3).copied().collect::<Vec<_>>().join(", ")
                                    ),
                                )
                                .at(rule.span, "CIDR peer in this rule")
                                .help("pods are matched by identity: select them with podSelector/namespaceSelector"),
                            );
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    shadowed_rules(compilation, &mut out);
    if has_inventory {
        dns_blocked(bundle, compilation, &mut out);
    }
    if options.unisolated_pods {
        for (pod, ep) in bundle.pods.iter().filter_map(|p| {
            let name = format!("{}/{}", p.meta.namespace, p.meta.name.value);
            artifact.endpoint(&name).map(|e| (p, e))
        }) {
            let open: Vec<&str> = [("ingress", ep.ingress_table), ("egress", ep.egress_table)]
                .iter()
                .filter(|(_, t)| *t == 0)
                .map(|(d, _)| *d)
                .collect();
            if !open.is_empty() {
                out.push(
                    Diagnostic::new(
                        codes::POD_NOT_ISOLATED,
                        format!("pod {} is not isolated for {}", ep.name, open.join(" or ")),
                    )
                    .at(pod.meta.name.span, "every connection is allowed here")
                    .help("add a default-deny NetworkPolicy to its namespace"),
                );
            }
        }
    }
    out
}

/// A rule whose every flow, at every endpoint it applies to, another rule of the same
/// action and direction also covers, at all those endpoints. Of two identical rules,
/// the later one is reported.
fn shadowed_rules(compilation: &Compilation, out: &mut Vec<Diagnostic>) {
    let analysis = &compilation.analysis;
    // In policy order, then rule order: "later" below means later in this list.
    let rules: Vec<_> = analysis
        .policies
        .iter()
        .zip(&analysis.cookies)
        .flat_map(|(p, cookies)| p.rules.iter().zip(cookies).map(move |(r, c)| (p, r, *c)))
        .collect();
    for (position, &(policy, rule, cookie)) in rules.iter().enumerate() {
        let Some((flows, endpoints)) = analysis.rule_flows.get(&cookie) else { continue };
        if flows.is_empty() {
            continue;
        }
        let shadow =
            rules.iter().enumerate().find(|&(other_position, &(_, other, other_cookie))| {
                if other_cookie == cookie
                    || other.direction != rule.direction
                    || other.action != rule.action
                {
                    return false;
                }
                let Some((other_flows, other_endpoints)) = analysis.rule_flows.get(&other_cookie)
                else {
                    return false;
                };
                let covered = endpoints.is_subset(other_endpoints)
                    && flows.iter().all(|f| other_flows.iter().any(|o| covers(o, f)));
                let identical = covered
                    && other_endpoints.is_subset(endpoints)
                    && other_flows.iter().all(|o| flows.iter().any(|f| covers(f, o)));
                covered && (!identical || other_position < position)
            });
        if let Some((_, (other_policy, other, _))) = shadow {
            out.push(
                Diagnostic::new(
                    codes::RULE_SHADOWED,
                    format!(
                        "{} {} {} nothing that {} {} does not already {}",
                        policy.name,
                        rule.label,
                        verb(rule.action),
                        other_policy.name,
                        other.label,
                        infinitive(rule.action)
                    ),
                )
                .at(rule.span, "shadowed rule")
                .help("remove it, or narrow the rule that covers it"),
            );
        }
    }
}

fn infinitive(action: Action) -> &'static str {
    match action {
        Action::Allow => "allow",
        Action::Deny => "deny",
        Action::Pass => "pass",
    }
}

fn verb(action: Action) -> &'static str {
    match action {
        Action::Allow => "allows",
        Action::Deny => "denies",
        Action::Pass => "passes",
    }
}

/// Whether pattern `a` covers every flow of pattern `b`.
fn covers(a: &Pattern, b: &Pattern) -> bool {
    (a.identity == 0 || a.identity == b.identity)
        && (a.proto == 0 || a.proto == b.proto)
        && match (a.port, b.port) {
            (None, _) => true,
            (Some(a), Some(b)) => a.contains(&b),
            (Some(_), None) => false,
        }
}

/// An egress-isolated pod that cannot reach DNS: UDP/53 to the cluster DNS pods (pods
/// labelled `k8s-app=kube-dns`), or to the world when the inventory has none.
fn dns_blocked(bundle: &Bundle, compilation: &Compilation, out: &mut Vec<Diagnostic>) {
    let artifact = &compilation.artifact;
    let dns_servers: Vec<_> = bundle
        .pods
        .iter()
        .filter(|p| p.meta.labels.get("k8s-app").map(String::as_str) == Some("kube-dns"))
        .flat_map(|p| p.ips.iter().map(|ip| ip.value))
        .collect();
    // Without cluster DNS pods in the inputs, DNS is some server outside the cluster.
    let in_cluster = !dns_servers.is_empty();
    let targets = if in_cluster {
        dns_servers
    } else {
        vec!["192.0.2.53".parse().expect("a literal address")]
    };
    let help = if in_cluster {
        "allow UDP and TCP port 53 to the cluster DNS pods (k8s-app=kube-dns in kube-system)"
    } else {
        "allow UDP and TCP port 53 to your DNS servers (an ipBlock, or every peer on port 53)"
    };
    let mut reported = BTreeSet::new();
    for (index, ep) in artifact.endpoints.iter().enumerate() {
        // A node resolves names with its own configuration, not through cluster DNS.
        if ep.egress_table == 0 || ep.is_host() {
            continue;
        }
        let reaches = targets.iter().any(|ip| {
            matches!(decide(artifact, ep, false, *ip, 17, Some(53)), Decision::Allowed(_))
        });
        if reaches {
            continue;
        }
        // Blame the policies that isolate this pod's egress.
        for policy in &compilation.analysis.policies {
            if policy.isolates.contains(&Direction::Egress)
                && !policy.nodes
                && policy.subject.matches(&compilation.analysis.endpoint_labels[index])
                && reported.insert(policy.name.clone())
            {
                out.push(
                    Diagnostic::new(
                        codes::EGRESS_BLOCKS_DNS,
                        format!(
                            "{} isolates egress of {} without allowing DNS",
                            policy.name, ep.name
                        ),
                    )
                    .at(policy.subject.span, "the pods whose egress it isolates")
                    .help(help),
                );
            }
        }
    }
}
