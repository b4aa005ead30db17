//! A stable, readable text dump of an artifact, for `policyc inspect` and snapshots.

use std::fmt::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr};

use crate::artifact::Artifact;

fn identity_name(artifact: &Artifact, id: u32) -> String {
    if id == 0 {
        return "any".into();
    }
    match artifact.identities.iter().find(|i| i.id == id) {
        Some(record) => {
            let app: Vec<String> = record
                .labels
                .iter()
                .filter(|(k, _)| !k.starts_with("k8s:io.cilium.k8s.namespace.labels."))
                .map(|(k, v)| if v.is_empty() { k.clone() } else { format!("{k}={v}") })
                .collect();
            format!("{id} ({})", app.join(","))
        }
        None => id.to_string(),
    }
}

fn protocol_name(proto: u8) -> String {
    match proto {
        0 => "any".into(),
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "ICMPv6".into(),
        132 => "SCTP".into(),
        n => n.to_string(),
    }
}

/// Renders every section of the artifact, one line per entry.
pub fn render(artifact: &Artifact) -> String {
    let mut out = String::new();
    let digest: String = artifact.source_digest.iter().map(|b| format!("{b:02x}")).collect();
    let _ = writeln!(out, "source digest {digest}");
    let _ = writeln!(out, "datapath abi {:016x}", datapath::abi_hash());
    let _ = writeln!(out, "\nidentities ({}):", artifact.identities.len());
    for identity in &artifact.identities {
        let _ = writeln!(out, "  {}", identity_name(artifact, identity.id));
    }
    let _ = writeln!(out, "\nendpoints ({}):", artifact.endpoints.len());
    for ep in &artifact.endpoints {
        let addresses: Vec<String> = ep.addresses.iter().map(ToString::to_string).collect();
        let table = |t: u32| if t == 0 { "open".to_string() } else { format!("table {t}") };
        let _ = writeln!(
            out,
            "  #{} {} identity {} [{}] ingress: {}, egress: {}",
            ep.endpoint_id,
            ep.name,
            ep.identity,
            addresses.join(", "),
            table(ep.ingress_table),
            table(ep.egress_table)
        );
    }
    let _ = writeln!(out, "\nipcache ({}):", artifact.ipcache.len());
    for (key, identity) in &artifact.ipcache {
        let addr = if key.family == datapath::FAMILY_IPV4 {
            Ipv4Addr::new(key.addr[0], key.addr[1], key.addr[2], key.addr[3]).to_string()
        } else {
            Ipv6Addr::from(key.addr).to_string()
        };
        let _ = writeln!(
            out,
            "  {addr}/{} -> {}",
            key.prefix_bits(),
            identity_name(artifact, *identity)
        );
    }
    let _ = writeln!(out, "\npolicy ({}):", artifact.policy.len());
    for (key, value) in &artifact.policy {
        let port = key.port_text();
        let verdict = if value.verdict == datapath::VERDICT_ALLOW { "allow" } else { "deny" };
        let rule = artifact
            .rule(value.rule)
            .map_or(String::from("?"), |r| format!("{} {}", r.policy, r.rule));
        let _ = writeln!(
            out,
            "  table {} from {} {}/{} -> {verdict} ({rule})",
            key.table,
            identity_name(artifact, key.identity),
            protocol_name(key.proto),
            port
        );
    }
    let _ = writeln!(out, "\nrules ({}):", artifact.rules.len());
    for rule in &artifact.rules {
        let _ = writeln!(out, "  #{} {} {} {}", rule.cookie, rule.policy, rule.rule, rule.location);
    }
    out
}
