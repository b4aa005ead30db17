//! `policyc diff OLD NEW`: what changes between two policy states, in two views.
//!
//! - Semantically: the connectivity of each side (`compiler::connectivity`) compared
//!   group pair by group pair, as connections added, removed and changed.
//! - On the node: the endpoint records whose identity or tables change, and the ordered
//!   map operations the runtime's planner (`runtime::Plan`) would perform to take maps
//!   that hold OLD (settled, generation 0) to NEW: the writes that prepare the idle
//!   generation slot, the flip, the writes that level the retired slot and the deletes.
//!   Endpoint map entries are keyed by interface, which an artifact does not know, so
//!   the plan is made with no interface bound and endpoint changes are listed by name.
//!
//! Each side is an artifact file (recognised by its magic) or manifests, compiled here.
//! When OLD is manifests, NEW is compiled with OLD's identity numbers as its lock, as a
//! repository that commits its lock file would compile it; otherwise every renumbered
//! identity would show up as map operations that no real update performs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use compiler::artifact::{Artifact, EndpointRecord, MAGIC};
use compiler::connectivity::{Connection, Connectivity, Group, Grouping};
use runtime::{LiveMaps, MapEntry, MapKey, MapName, MapOp, MapState, Plan};
use serde_json::{Value, json};

use crate::connectivity::{allowed_text, connection_json};

/// The `schema` field of the JSON output.
pub const SCHEMA: &str = "policyc.diff/v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum DiffFormat {
    Txt,
    Json,
}

/// One input, as an artifact.
struct Side {
    artifact: Artifact,
    /// Workload grouping, for manifests; an artifact does not record owners.
    grouping: Option<Grouping>,
    /// The identity numbers of the compile, for manifests.
    lock: Option<compiler::lock::Lock>,
}

fn load(
    path: &Path,
    lock: Option<&compiler::lock::Lock>,
    options: &compiler::Options,
) -> anyhow::Result<Side> {
    if path.is_file() {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if bytes.starts_with(&MAGIC) {
            let artifact = Artifact::decode(&bytes)
                .with_context(|| format!("decoding artifact {}", path.display()))?;
            return Ok(Side { artifact, grouping: None, lock: None });
        }
    }
    let options = compiler::Options { lock: lock.cloned().unwrap_or_default(), ..options.clone() };
    let (bundle, compilation) = crate::connectivity::compile(&[path.to_path_buf()], &options)?;
    Ok(Side {
        artifact: compilation.artifact,
        grouping: Some(Grouping::from_bundle(&bundle)),
        lock: Some(compilation.lock),
    })
}

/// A connection present on both sides whose allowed ports differ.
struct Changed<'a> {
    old: &'a Connection,
    new: &'a Connection,
}

/// How one endpoint record differs; `None` on the side that lacks it.
struct EndpointChange<'a> {
    name: &'a str,
    old: Option<&'a EndpointRecord>,
    new: Option<&'a EndpointRecord>,
}

/// Everything `diff` reports.
struct Diff<'a> {
    added: Vec<&'a Connection>,
    removed: Vec<&'a Connection>,
    changed: Vec<Changed<'a>>,
    endpoints: Vec<EndpointChange<'a>>,
    plan: Plan,
}

impl Diff<'_> {
    fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.changed.is_empty()
            && self.endpoints.is_empty()
            && self.plan.is_empty()
    }
}

/// Runs `policyc diff`: exit 0 when the two sides are the same, 1 when they differ.
pub fn run(
    old: &Path,
    new: &Path,
    format: DiffFormat,
    options: &compiler::Options,
) -> anyhow::Result<ExitCode> {
    let old_side =
        load(old, None, options).with_context(|| format!("loading {}", old.display()))?;
    let new_side = load(new, old_side.lock.as_ref(), options)
        .with_context(|| format!("loading {}", new.display()))?;

    // Both sides are grouped alike, or a pod's group would differ only because one side
    // is an artifact. NEW's owners win where the two disagree.
    let mut grouping = Grouping::default();
    for side in [&new_side, &old_side] {
        if let Some(g) = &side.grouping {
            grouping.extend(g);
        }
    }
    let old_conn = compiler::connectivity::connectivity(&old_side.artifact, &grouping);
    let new_conn = compiler::connectivity::connectivity(&new_side.artifact, &grouping);

    let state = |side: &Side, path: &Path| {
        MapState::desired(&side.artifact, &[])
            .with_context(|| format!("building the map content of {}", path.display()))
    };
    let (old_state, new_state) = (state(&old_side, old)?, state(&new_side, new)?);
    let plan = Plan::new(&LiveMaps::settled(&old_state, 0), &new_state)
        .context("planning the map update")?;

    let diff = compare(&old_conn, &new_conn, &old_side.artifact, &new_side.artifact, plan);
    let text = match format {
        DiffFormat::Txt => txt(&diff),
        DiffFormat::Json => serde_json::to_string_pretty(&json(&diff))? + "\n",
    };
    std::io::stdout().lock().write_all(text.as_bytes())?;
    Ok(if diff.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn compare<'a>(
    old: &'a Connectivity,
    new: &'a Connectivity,
    old_artifact: &'a Artifact,
    new_artifact: &'a Artifact,
    plan: Plan,
) -> Diff<'a> {
    let by_pair = |c: &'a Connectivity| -> BTreeMap<(&'a Group, &'a Group), &'a Connection> {
        c.connections.iter().map(|conn| ((&conn.from, &conn.to), conn)).collect()
    };
    let (old_pairs, new_pairs) = (by_pair(old), by_pair(new));
    let mut diff =
        Diff { added: vec![], removed: vec![], changed: vec![], endpoints: vec![], plan };
    for (pair, conn) in &new_pairs {
        match old_pairs.get(pair) {
            None => diff.added.push(conn),
            // The number of pod pairs alone is a scale change, not a policy change.
            Some(before) if before.all != conn.all || before.some != conn.some => {
                diff.changed.push(Changed { old: before, new: conn });
            }
            Some(_) => {}
        }
    }
    diff.removed = old_pairs
        .iter()
        .filter(|(pair, _)| !new_pairs.contains_key(*pair))
        .map(|(_, c)| *c)
        .collect();

    let by_name = |a: &'a Artifact| -> BTreeMap<&'a str, &'a EndpointRecord> {
        a.endpoints.iter().map(|e| (e.name.as_str(), e)).collect()
    };
    let (old_eps, new_eps) = (by_name(old_artifact), by_name(new_artifact));
    let mut names: Vec<&str> = old_eps.keys().chain(new_eps.keys()).copied().collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        let (old, new) = (old_eps.get(name).copied(), new_eps.get(name).copied());
        let same = match (old, new) {
            (Some(a), Some(b)) => {
                (a.endpoint_id, a.identity, a.ingress_table, a.egress_table)
                    == (b.endpoint_id, b.identity, b.ingress_table, b.egress_table)
            }
            _ => false,
        };
        if !same {
            diff.endpoints.push(EndpointChange { name, old, new });
        }
    }
    diff
}

fn endpoint_text(ep: &EndpointRecord) -> String {
    let table = |t: u32| if t == 0 { "open".to_string() } else { format!("table {t}") };
    format!(
        "identity {}, ingress {}, egress {}",
        ep.identity,
        table(ep.ingress_table),
        table(ep.egress_table)
    )
}

fn prefix_text(key: &datapath::IpcacheKey) -> String {
    let addr = if key.family == datapath::FAMILY_IPV4 {
        IpAddr::V4(Ipv4Addr::new(key.addr[0], key.addr[1], key.addr[2], key.addr[3]))
    } else {
        IpAddr::V6(Ipv6Addr::from(key.addr))
    };
    format!("{addr}/{}", key.prefix_bits())
}

fn policy_key_text(key: &datapath::PolicyKey) -> String {
    let proto = match key.proto {
        0 => "any".to_string(),
        1 => "ICMP".into(),
        6 => "TCP".into(),
        17 => "UDP".into(),
        58 => "ICMPv6".into(),
        132 => "SCTP".into(),
        n => n.to_string(),
    };
    let port = key.port_text();
    let identity = if key.identity == 0 { "any".into() } else { key.identity.to_string() };
    format!("table {} from {identity} {proto}/{port}", key.table)
}

fn verdict_text(value: &datapath::PolicyVerdict) -> String {
    match value.verdict {
        datapath::VERDICT_ALLOW => format!("allow (rule {})", value.rule),
        datapath::VERDICT_DENY => format!("deny (rule {})", value.rule),
        _ => "none".to_owned(),
    }
}

/// A value's two generation slots as text: one value when both hold it, else the live
/// slot's (slot 0: the plan starts at generation 0) and the next generation's.
fn slots_text<T: PartialEq>(slots: &[T; 2], text: impl Fn(&T) -> String) -> String {
    if slots[0] == slots[1] {
        text(&slots[0])
    } else {
        format!("{} until the flip, then {}", text(&slots[0]), text(&slots[1]))
    }
}

fn host_text(key: &datapath::HostKey) -> String {
    prefix_text(&key.prefix())
}

/// One operation on one line, as `policyc inspect` names keys.
fn op_text(op: &MapOp) -> String {
    let identity = |id: &u32| format!("identity {id}");
    match op {
        MapOp::Write(MapEntry::Policy(k, v)) => format!(
            "write {} {} -> {}",
            MapName::Policy,
            policy_key_text(k),
            slots_text(&v.slot, verdict_text)
        ),
        MapOp::Write(MapEntry::Ipcache(k, v)) => format!(
            "write {} {} -> {}",
            MapName::Ipcache,
            prefix_text(k),
            slots_text(&v.identity, identity)
        ),
        MapOp::Write(MapEntry::Host(k, v)) => format!(
            "write {} {} -> {}",
            MapName::Hosts,
            host_text(k),
            slots_text(&v.identity, identity)
        ),
        MapOp::Delete(MapKey::Policy(k)) => {
            format!("delete {} {}", MapName::Policy, policy_key_text(k))
        }
        MapOp::Delete(MapKey::Ipcache(k)) => {
            format!("delete {} {}", MapName::Ipcache, prefix_text(k))
        }
        MapOp::Delete(MapKey::Host(k)) => format!("delete {} {}", MapName::Hosts, host_text(k)),
        MapOp::Flip(generation) => format!("flip to generation {generation}"),
        MapOp::Wait => "wait for the packets of the previous generation".to_owned(),
        // No interface is bound and conntrack is not planned: none of these occurs.
        MapOp::ResetMetrics(row) => format!("reset metrics row {row}"),
        MapOp::Write(entry) => format!("write {} {entry:?}", entry.map()),
        MapOp::Delete(key) => format!("delete {} {key:?}", key.map()),
    }
}

fn txt(diff: &Diff<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "connections: {} added, {} removed, {} changed",
        diff.added.len(),
        diff.removed.len(),
        diff.changed.len()
    );
    for conn in &diff.added {
        let _ = writeln!(out, "  + {} -> {}: {}", conn.from, conn.to, allowed_text(conn));
    }
    for conn in &diff.removed {
        let _ = writeln!(out, "  - {} -> {}: {}", conn.from, conn.to, allowed_text(conn));
    }
    for c in &diff.changed {
        let (old, new) = (allowed_text(c.old), allowed_text(c.new));
        let _ = writeln!(out, "  ~ {} -> {}: {old} => {new}", c.new.from, c.new.to);
    }

    let _ = writeln!(out, "endpoints: {} changed", diff.endpoints.len());
    for change in &diff.endpoints {
        let line = match (change.old, change.new) {
            (None, Some(new)) => format!("+ {}: {}", change.name, endpoint_text(new)),
            (Some(old), None) => format!("- {}: {}", change.name, endpoint_text(old)),
            (Some(old), Some(new)) => {
                format!("~ {}: {} => {}", change.name, endpoint_text(old), endpoint_text(new))
            }
            (None, None) => continue,
        };
        let _ = writeln!(out, "  {line}");
    }

    let _ = writeln!(
        out,
        "map operations: {} write(s), {} delete(s){}",
        diff.plan.prepare.len() + diff.plan.level.len(),
        diff.plan.deletes.len(),
        if diff.plan.flip { ", 1 generation flip" } else { "" }
    );
    for map in [MapName::Policy, MapName::Hosts, MapName::Ipcache] {
        let changes = diff.plan.changes(map);
        let _ = writeln!(out, "  {map}: {} written, {} deleted", changes.written, changes.deleted);
    }
    for (i, op) in diff.plan.ops().enumerate() {
        let _ = writeln!(out, "  {}. {}", i + 1, op_text(&op));
    }
    out
}

fn endpoint_json(ep: Option<&EndpointRecord>) -> Value {
    ep.map_or(Value::Null, |ep| {
        json!({
            "endpoint_id": ep.endpoint_id,
            "identity": ep.identity,
            "ingress_table": ep.ingress_table,
            "egress_table": ep.egress_table,
        })
    })
}

fn op_json(op: &MapOp) -> Value {
    let slots = |values: Vec<Value>| json!({"live": values[0], "next": values[1]});
    let verdict = |v: &datapath::PolicyVerdict| match v.verdict {
        datapath::VERDICT_ALLOW | datapath::VERDICT_DENY => {
            json!({"verdict": if v.verdict == datapath::VERDICT_ALLOW { "allow" } else { "deny" },
                   "rule": v.rule})
        }
        _ => Value::Null,
    };
    let (kind, map, key, value) = match op {
        MapOp::Write(MapEntry::Policy(k, v)) => (
            "write",
            Some(MapName::Policy),
            policy_key_json(k),
            slots(v.slot.iter().map(verdict).collect()),
        ),
        MapOp::Write(MapEntry::Ipcache(k, v)) => (
            "write",
            Some(MapName::Ipcache),
            json!({"prefix": prefix_text(k)}),
            slots(v.identity.iter().map(|id| json!({"identity": id})).collect()),
        ),
        MapOp::Write(MapEntry::Host(k, v)) => (
            "write",
            Some(MapName::Hosts),
            json!({"prefix": host_text(k)}),
            slots(v.identity.iter().map(|id| json!({"identity": id})).collect()),
        ),
        MapOp::Delete(MapKey::Policy(k)) => {
            ("delete", Some(MapName::Policy), policy_key_json(k), Value::Null)
        }
        MapOp::Delete(MapKey::Ipcache(k)) => {
            ("delete", Some(MapName::Ipcache), json!({"prefix": prefix_text(k)}), Value::Null)
        }
        MapOp::Delete(MapKey::Host(k)) => {
            ("delete", Some(MapName::Hosts), json!({"prefix": host_text(k)}), Value::Null)
        }
        MapOp::Flip(generation) => ("flip", None, Value::Null, json!({"generation": generation})),
        MapOp::Wait => ("wait", None, Value::Null, Value::Null),
        MapOp::ResetMetrics(row) => ("reset_metrics", None, json!({"row": row}), Value::Null),
        MapOp::Write(entry) => {
            ("write", Some(entry.map()), json!(format!("{entry:?}")), Value::Null)
        }
        MapOp::Delete(key) => ("delete", Some(key.map()), json!(format!("{key:?}")), Value::Null),
    };
    let map = map.map_or(Value::Null, |m| json!(m.pin_name()));
    json!({"op": kind, "map": map, "key": key, "value": value, "text": op_text(op)})
}

fn policy_key_json(key: &datapath::PolicyKey) -> Value {
    json!({
        "table": key.table,
        "identity": key.identity,
        "proto": key.proto,
        "port": key.port_range().map(|r| r.0),
        "end_port": key.port_range().map(|r| r.1),
    })
}

/// The JSON document; see docs/connectivity.md.
fn json(diff: &Diff<'_>) -> Value {
    let changed: Vec<Value> = diff
        .changed
        .iter()
        .map(|c| {
            json!({
                "from": c.new.from.to_string(),
                "to": c.new.to.to_string(),
                "old": connection_json(c.old),
                "new": connection_json(c.new),
            })
        })
        .collect();
    let endpoints: Vec<Value> = diff
        .endpoints
        .iter()
        .map(|e| {
            let change = match (e.old, e.new) {
                (None, _) => "added",
                (_, None) => "removed",
                _ => "changed",
            };
            json!({
                "name": e.name,
                "change": change,
                "old": endpoint_json(e.old),
                "new": endpoint_json(e.new),
            })
        })
        .collect();
    let mut maps = serde_json::Map::new();
    for map in [MapName::Policy, MapName::Hosts, MapName::Ipcache] {
        let changes = diff.plan.changes(map);
        maps.insert(
            map.pin_name().into(),
            json!({"written": changes.written, "deleted": changes.deleted}),
        );
    }
    json!({
        "schema": SCHEMA,
        "equal": diff.is_empty(),
        "connections": {
            "added": diff.added.iter().map(|c| connection_json(c)).collect::<Vec<_>>(),
            "removed": diff.removed.iter().map(|c| connection_json(c)).collect::<Vec<_>>(),
            "changed": changed,
        },
        "endpoints": endpoints,
        "maps": maps,
        "operations": diff.plan.ops().map(|op| op_json(&op)).collect::<Vec<_>>(),
    })
}
