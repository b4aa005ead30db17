//! `policyc connectivity`: every allowed connection between workloads, bare pods and
//! outside address ranges, rendered as text, JSON, CSV, Markdown or Graphviz dot.
//!
//! The computation is `compiler::connectivity`; this module compiles the inputs and
//! renders the result. Every format lists groups and connections in the order the
//! computation sorts them, so the same inputs give the same bytes. The JSON schema is
//! documented in docs/connectivity.md.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use compiler::Compilation;
use compiler::connectivity::{
    Allowed, Connection, Connectivity, Group, GroupInfo, Grouping, PortRanges,
};
use policy_lang::{Bundle, Severity};
use serde_json::{Value, json};

/// The `schema` field of the JSON output; bumped on any incompatible change.
pub const SCHEMA: &str = "policyc.connectivity/v1";

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum OutputFormat {
    Txt,
    Json,
    Csv,
    Md,
    Dot,
}

/// Runs `policyc connectivity`.
pub fn run(
    inputs: &[PathBuf],
    format: OutputFormat,
    output: Option<&Path>,
    options: &compiler::Options,
) -> anyhow::Result<ExitCode> {
    let (bundle, compilation) = compile(inputs, options)?;
    let connectivity = compiler::connectivity::connectivity(
        &compilation.artifact,
        &Grouping::from_bundle(&bundle),
    );
    let text = render(&connectivity, format)?;
    match output {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?
        }
        None => std::io::stdout().lock().write_all(text.as_bytes())?,
    }
    Ok(ExitCode::SUCCESS)
}

/// Reads and compiles manifests. Errors in them are printed with every other diagnostic
/// of the run and fail the command; without errors nothing is printed, as the result is
/// what the caller wants on stdout.
pub fn compile(
    inputs: &[PathBuf],
    options: &compiler::Options,
) -> anyhow::Result<(Bundle, Compilation)> {
    let (sources, bundle) = crate::front_end(inputs)?;
    let compilation = compiler::compile_with(&sources, &bundle, options);
    let mut diagnostics = bundle.diagnostics.clone();
    diagnostics.extend(compilation.diagnostics.iter().cloned());
    let errors = diagnostics.iter().filter(|d| d.severity() == Severity::Error).count();
    if errors > 0 {
        crate::report(&sources, &diagnostics);
        let names: Vec<String> = inputs.iter().map(|p| p.display().to_string()).collect();
        anyhow::bail!("{errors} error(s) compiling {}", names.join(" "));
    }
    Ok((bundle, compilation))
}

/// Renders `connectivity` in `format`.
pub fn render(connectivity: &Connectivity, format: OutputFormat) -> anyhow::Result<String> {
    Ok(match format {
        OutputFormat::Txt => txt(connectivity),
        OutputFormat::Json => serde_json::to_string_pretty(&json(connectivity))? + "\n",
        OutputFormat::Csv => csv(connectivity),
        OutputFormat::Md => md(connectivity),
        OutputFormat::Dot => dot(connectivity),
    })
}

/// `group: members`, with the members left out where they only repeat the name.
fn group_line(info: &GroupInfo) -> String {
    let mut line = info.group.to_string();
    if matches!(info.group, Group::Workload { .. } | Group::Nodes) {
        let _ = write!(line, ": {}", info.members.join(", "));
    }
    if !info.excludes.is_empty() {
        let excludes: Vec<String> = info.excludes.iter().map(ToString::to_string).collect();
        let _ = write!(line, " (except {})", excludes.join(", "));
    }
    line
}

/// What one connection allows, on one line: the ports for all pairs, then the ports
/// for only some, in brackets.
pub fn allowed_text(connection: &Connection) -> String {
    let mut text = connection.all.to_string();
    if !connection.some.is_empty() {
        let _ = write!(text, " [some pairs: {}]", connection.some);
    }
    text
}

fn txt(c: &Connectivity) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "groups ({}):", c.groups.len());
    for info in &c.groups {
        let _ = writeln!(out, "  {}", group_line(info));
    }
    let _ = writeln!(
        out,
        "\nconnections ({}), allowed for every pod pair of the two groups [or only some]:",
        c.connections.len()
    );
    for connection in &c.connections {
        let _ = writeln!(
            out,
            "  {} -> {}: {}",
            connection.from,
            connection.to,
            allowed_text(connection)
        );
    }
    if !c.unaddressed.is_empty() {
        let _ = writeln!(out, "\nnot judged, no address yet: {}", c.unaddressed.join(", "));
    }
    out
}

fn allowed_json(allowed: &Allowed) -> Value {
    let protocols: Vec<Value> = allowed
        .protocols
        .iter()
        .map(|(proto, ports)| {
            let ranges: Vec<Value> = match (ports, proto.max_port()) {
                (PortRanges::Every, Some(max)) => vec![json!([0, max])],
                (PortRanges::Every, None) => vec![],
                (PortRanges::Only(ranges), _) => {
                    ranges.iter().map(|(lo, hi)| json!([lo, hi])).collect()
                }
            };
            json!({
                "protocol": proto.to_string(),
                "number": proto.number(),
                "any": *ports == PortRanges::Every,
                "ports": ranges,
            })
        })
        .collect();
    json!({ "any": allowed.any, "text": allowed.to_string(), "protocols": protocols })
}

/// One connection as the JSON output (and `policyc diff`) writes it.
pub fn connection_json(connection: &Connection) -> Value {
    json!({
        "from": connection.from.to_string(),
        "to": connection.to.to_string(),
        "pairs": connection.pairs,
        "all": allowed_json(&connection.all),
        "some": allowed_json(&connection.some),
    })
}

fn group_json(info: &GroupInfo) -> Value {
    let (namespace, workload_kind, cidr) = match &info.group {
        Group::Workload { namespace, kind, .. } => (Some(namespace), Some(kind.clone()), None),
        Group::Pod { namespace, .. } => (Some(namespace), None, None),
        Group::Cidr(cidr) => (None, None, Some(cidr.to_string())),
        Group::Host { .. } | Group::Nodes | Group::World => (None, None, None),
    };
    let excludes: Vec<String> = info.excludes.iter().map(ToString::to_string).collect();
    json!({
        "name": info.group.to_string(),
        "kind": info.group.kind(),
        "namespace": namespace,
        "workload_kind": workload_kind,
        "cidr": cidr,
        "members": info.members,
        "excludes": excludes,
    })
}

/// The JSON document; see docs/connectivity.md.
pub fn json(c: &Connectivity) -> Value {
    json!({
        "schema": SCHEMA,
        "groups": c.groups.iter().map(group_json).collect::<Vec<_>>(),
        "connections": c.connections.iter().map(connection_json).collect::<Vec<_>>(),
        "unaddressed": c.unaddressed,
    })
}

/// A CSV field, quoted when it must be (RFC 4180).
fn csv_field(field: &str) -> String {
    if field.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", field.replace('"', "\"\""))
    } else {
        field.to_owned()
    }
}

/// One row per connection, scope (`all` or `some`) and protocol; `any` in the protocol
/// column when every protocol is allowed on every port.
fn csv(c: &Connectivity) -> String {
    let mut out = String::from("from,to,scope,protocol,ports,pairs\n");
    for connection in &c.connections {
        for (scope, allowed) in [("all", &connection.all), ("some", &connection.some)] {
            let mut rows: Vec<(String, String)> = Vec::new();
            if allowed.any {
                rows.push(("any".into(), "any".into()));
            } else {
                for (proto, ports) in &allowed.protocols {
                    rows.push((proto.to_string(), ports.to_string().replace(", ", ";")));
                }
            }
            for (proto, ports) in rows {
                let fields = [
                    csv_field(&connection.from.to_string()),
                    csv_field(&connection.to.to_string()),
                    scope.to_owned(),
                    csv_field(&proto),
                    csv_field(&ports),
                    connection.pairs.to_string(),
                ];
                let _ = writeln!(out, "{}", fields.join(","));
            }
        }
    }
    out
}

fn md_cell(text: &str) -> String {
    text.replace('|', "\\|")
}

fn md(c: &Connectivity) -> String {
    let mut out = String::from("# Connectivity\n\n");
    out.push_str("| From | To | Allowed for every pod pair | Allowed for some pod pairs only |\n");
    out.push_str("|---|---|---|---|\n");
    for connection in &c.connections {
        let some =
            if connection.some.is_empty() { String::new() } else { connection.some.to_string() };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            md_cell(&connection.from.to_string()),
            md_cell(&connection.to.to_string()),
            md_cell(&connection.all.to_string()),
            md_cell(&some)
        );
    }
    out.push_str("\n## Groups\n\n| Group | Kind | Members | Except |\n|---|---|---|---|\n");
    for info in &c.groups {
        let excludes: Vec<String> = info.excludes.iter().map(ToString::to_string).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            md_cell(&info.group.to_string()),
            info.group.kind(),
            md_cell(&info.members.join(", ")),
            md_cell(&excludes.join(", "))
        );
    }
    if !c.unaddressed.is_empty() {
        let _ =
            writeln!(out, "\nNot judged, no address yet: {}", md_cell(&c.unaddressed.join(", ")));
    }
    out
}

/// `text` escaped for the inside of a double-quoted dot ID.
fn dot_escape(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"")
}

/// A double-quoted dot ID.
fn dot_id(text: &str) -> String {
    format!("\"{}\"", dot_escape(text))
}

/// Groups are nodes (boxes for pods, ellipses for address ranges); a connection is one
/// edge, solid when something is allowed for every pod pair and dashed when only for
/// some.
fn dot(c: &Connectivity) -> String {
    let mut out = String::from("digraph connectivity {\n  rankdir=LR;\n");
    out.push_str("  node [fontname=\"monospace\"];\n  edge [fontname=\"monospace\"];\n");
    for info in &c.groups {
        let shape = if info.group.is_pods() { "box" } else { "ellipse" };
        let _ = writeln!(out, "  {} [shape={shape}];", dot_id(&info.group.to_string()));
    }
    for connection in &c.connections {
        let mut lines = Vec::new();
        if !connection.all.is_empty() {
            lines.push(dot_escape(&connection.all.to_string()));
        }
        if !connection.some.is_empty() {
            lines.push(dot_escape(&format!("some: {}", connection.some)));
        }
        // `\n` inside a quoted ID is Graphviz's centred line break.
        let label = lines.join("\\n");
        let style = if connection.all.is_empty() { ", style=dashed" } else { "" };
        let _ = writeln!(
            out,
            "  {} -> {} [label=\"{label}\"{style}];",
            dot_id(&connection.from.to_string()),
            dot_id(&connection.to.to_string()),
        );
    }
    out.push_str("}\n");
    out
}
