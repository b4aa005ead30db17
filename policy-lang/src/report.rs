//! Machine-readable reports of diagnostics: JSON lines for scripts and SARIF 2.1.0 for
//! code-scanning UIs. Both are deterministic: diagnostics keep their order and every
//! object's keys are written in a fixed order.

use serde_json::{Value, json};

use crate::codes::{self, Code};
use crate::diagnostic::{Diagnostic, Severity};
use crate::source::Sources;

/// Where the documentation of every code lives, relative to the repository root.
pub const DOCS_PATH: &str = "docs/diagnostics.md";

fn level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
        Severity::Note => "note",
    }
}

/// One JSON object per diagnostic, with the file, 1-based line and column, and the
/// length of the underlined token.
pub fn json(diagnostics: &[Diagnostic], sources: &Sources) -> Value {
    let items: Vec<Value> = diagnostics
        .iter()
        .map(|d| {
            let span = d.span.map(|s| {
                json!({
                    "file": sources.get(s.file).name,
                    "line": s.line,
                    "column": s.col,
                    "length": s.len,
                })
            });
            json!({
                "code": d.code.code,
                "severity": level(d.severity()),
                "message": d.message,
                "span": span,
                "label": d.label,
                "help": d.help,
            })
        })
        .collect();
    json!({
        "diagnostics": items,
        "errors": diagnostics.iter().filter(|d| d.severity() == Severity::Error).count(),
        "warnings": diagnostics.iter().filter(|d| d.severity() == Severity::Warning).count(),
    })
}

/// A SARIF 2.1.0 log with one run. Every registered code is a rule with its title and a
/// link to its documentation, so a code-scanning UI can explain a result it has never
/// seen; results point at exact regions (SARIF columns are 1-based like ours).
pub fn sarif(diagnostics: &[Diagnostic], sources: &Sources, tool_version: &str) -> Value {
    let rules: Vec<Value> = codes::ALL.iter().map(rule).collect();
    let results: Vec<Value> = diagnostics
        .iter()
        .map(|d| {
            let index = codes::ALL.iter().position(|c| c.code == d.code.code);
            let mut message = d.message.clone();
            if let Some(help) = &d.help {
                message.push_str(". Help: ");
                message.push_str(help);
            }
            let locations: Vec<Value> = d
                .span
                .map(|s| {
                    json!({
                        "physicalLocation": {
                            "artifactLocation": { "uri": uri(&sources.get(s.file).name) },
                            "region": {
                                "startLine": s.line,
                                "startColumn": s.col,
                                "endLine": s.line,
                                "endColumn": s.col + s.len.max(1),
                            }
                        },
                        "message": { "text": d.label },
                    })
                })
                .into_iter()
                .collect();
            json!({
                "ruleId": d.code.code,
                "ruleIndex": index,
                "level": level(d.severity()),
                "message": { "text": message },
                "locations": locations,
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "policyc",
                    "version": tool_version,
                    "informationUri": "https://example.invalid/policyc",
                    "rules": rules,
                }
            },
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    })
}

fn rule(code: &Code) -> Value {
    json!({
        "id": code.code,
        "shortDescription": { "text": code.title },
        "helpUri": format!("{DOCS_PATH}#{}", code.code.to_ascii_lowercase()),
        "defaultConfiguration": { "level": level(code.severity) },
    })
}

/// SARIF wants URIs: relative paths with forward slashes, percent-encoding what a URI
/// cannot hold.
fn uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.trim_start_matches("./").bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::Span;

    fn sample() -> (Vec<Diagnostic>, Sources) {
        let mut sources = Sources::default();
        let file = sources.add("policies/web policy.yaml", "a: 1\n");
        let d = Diagnostic::new(codes::INVALID_PORT, "port 70000 is out of range")
            .at(Span { file, line: 12, col: 17, len: 5 }, "must be 1-65535")
            .help("use a port between 1 and 65535");
        (vec![d], sources)
    }

    #[test]
    fn sarif_results_point_at_registered_rules_and_exact_regions() {
        let (diags, sources) = sample();
        let log = sarif(&diags, &sources, "0.1.0");
        let run = &log["runs"][0];
        let result = &run["results"][0];
        let index = result["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(run["tool"]["driver"]["rules"][index]["id"], "PL0013");
        let location = &result["locations"][0]["physicalLocation"];
        assert_eq!(location["artifactLocation"]["uri"], "policies/web%20policy.yaml");
        assert_eq!(location["region"]["startLine"], 12);
        assert_eq!(location["region"]["startColumn"], 17);
        assert_eq!(location["region"]["endColumn"], 22);
        assert_eq!(result["level"], "error");
        assert_eq!(log["version"], "2.1.0");
    }

    #[test]
    fn json_report_counts_errors() {
        let (diags, sources) = sample();
        let report = json(&diags, &sources);
        assert_eq!(report["errors"], 1);
        assert_eq!(report["diagnostics"][0]["span"]["line"], 12);
        assert_eq!(report["diagnostics"][0]["code"], "PL0013");
    }
}
