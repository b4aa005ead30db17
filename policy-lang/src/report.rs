//! Machine-readable reports of diagnostics: JSON lines for scripts and SARIF 2.1.0 for
//! code-scanning UIs. Both are deterministic: diagnostics keep their order and every
//! object's keys are written in a fixed order.

use serde_json::{Value, json};

use crate::codes::{self, Code};
use crate::diagnostic::{Diagnostic, Severity};
use crate::source::Sources;

/// Where the documentation of every code lives, relative to the repository root.
pub const DOCS_PATH: &str = "docs/diagnostics.md";

/// The workspace's `repository` (the root Cargo.toml). SARIF wants absolute URIs for the
/// tool and its rules, so every link of a report starts here.
pub const REPOSITORY: &str = env!("CARGO_PKG_REPOSITORY");

/// The documentation itself, so that a SARIF rule carries its description and help: a
/// code-scanning UI shows them beside a result even where the link cannot be followed.
const DOCS: &str = include_str!("../../docs/diagnostics.md");

/// The absolute URL of a code's section in the documentation, as the repository's web
/// view serves files of the main branch (`<repository>/blob/main/<path>`, GitHub's
/// layout, where code scanning shows these links).
pub fn docs_url(code: &str) -> String {
    format!("{REPOSITORY}/blob/main/{DOCS_PATH}#{}", code.to_ascii_lowercase())
}

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

/// A SARIF 2.1.0 log with one run. Every registered code is a rule with its title, its
/// trigger and fix from docs/diagnostics.md and a link there, so a code-scanning UI can
/// explain a result it has never seen; results point at exact regions (SARIF columns
/// are 1-based like ours). GitHub code scanning drops a result without a physical
/// location, so a diagnostic about the inputs as a whole (such as PL0300) is placed at
/// the start of the first input file.
pub fn sarif(diagnostics: &[Diagnostic], sources: &Sources, tool_version: &str) -> Value {
    let rules: Vec<Value> = codes::ALL.iter().map(rule).collect();
    let first_file = sources.iter().map(|(_, f)| f.name.as_str()).min();
    let files = sources.iter().count();
    let results: Vec<Value> = diagnostics
        .iter()
        .map(|d| {
            let mut message = d.message.clone();
            if let Some(help) = &d.help {
                message.push_str(". Help: ");
                message.push_str(help);
            }
            let location = match (d.span, first_file) {
                (Some(s), _) => {
                    let mut location = json!({
                        "physicalLocation": {
                            "artifactLocation": { "uri": uri(&sources.get(s.file).name) },
                            "region": {
                                "startLine": s.line.max(1),
                                "startColumn": s.col.max(1),
                                "endLine": s.line.max(1),
                                "endColumn": s.col.max(1) + s.len.max(1),
                            }
                        },
                    });
                    if !d.label.is_empty() {
                        location["message"] = json!({ "text": d.label });
                    }
                    location
                }
                (None, Some(name)) => json!({
                    "physicalLocation": {
                        "artifactLocation": { "uri": uri(name) },
                        "region": { "startLine": 1, "startColumn": 1 },
                    },
                    "message": {
                        "text": format!("about all {files} input file(s), not this one alone")
                    },
                }),
                (None, None) => json!({
                    "logicalLocations": [{ "name": "policyc inputs", "kind": "module" }],
                }),
            };
            let mut result = json!({
                "ruleId": d.code.code,
                "level": level(d.severity()),
                "message": { "text": message },
                "locations": [location],
            });
            if let Some(index) = codes::ALL.iter().position(|c| c.code == d.code.code) {
                result["ruleIndex"] = json!(index);
            }
            result
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
                    "informationUri": REPOSITORY,
                    "rules": rules,
                }
            },
            "columnKind": "unicodeCodePoints",
            "results": results,
        }]
    })
}

fn rule(code: &Code) -> Value {
    let url = docs_url(code.code);
    let doc = RuleDoc::of(code.code);
    let full = doc.as_ref().map_or_else(|| code.title.to_owned(), |d| d.trigger.clone());
    // A fix sentence that ends in a colon introduces the example, which is not here.
    let fix = doc.as_ref().map(|d| d.fix.trim_end_matches(':')).filter(|f| !f.is_empty());
    let help = match fix {
        Some(fix) if fix.ends_with('.') => format!("{fix} Documentation, with examples: {url}"),
        Some(fix) => format!("{fix}. Documentation, with examples: {url}"),
        None => format!("See the fixed example in the documentation: {url}"),
    };
    let mut rule = json!({
        "id": code.code,
        "name": rule_name(code.title),
        "shortDescription": { "text": code.title },
        "fullDescription": { "text": full },
        "help": { "text": help },
        "helpUri": url,
        "defaultConfiguration": { "level": level(code.severity) },
    });
    if let Some(doc) = doc {
        rule["help"]["markdown"] = json!(doc.markdown);
    }
    rule
}

/// SARIF's `name` of a rule is an identifier-like word: the title in PascalCase.
fn rule_name(title: &str) -> String {
    title
        .replace('\'', "")
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(|w| {
            let mut chars = w.chars();
            chars
                .next()
                .map(|c| c.to_ascii_uppercase())
                .into_iter()
                .chain(chars)
                .collect::<String>()
        })
        .collect()
}

/// What docs/diagnostics.md says about one code.
struct RuleDoc {
    /// The **Trigger.** part, as plain paragraphs.
    trigger: String,
    /// The prose of the **Fix.** part, without its example; may be empty.
    fix: String,
    /// The whole section below its heading, as Markdown.
    markdown: String,
}

impl RuleDoc {
    fn of(code: &str) -> Option<RuleDoc> {
        let heading = format!("\n## {code}: ");
        let start = DOCS.find(&heading)? + heading.len();
        let body_start = start + DOCS[start..].find('\n')? + 1;
        let body = &DOCS[body_start..];
        let end = body.find("\n<a id=").or_else(|| body.find("\n## ")).unwrap_or(body.len());
        let body = body[..end].trim();
        let part = |marker: &str, until: &str| -> String {
            let Some(at) = body.find(marker) else { return String::new() };
            let rest = &body[at + marker.len()..];
            let rest = &rest[..rest.find(until).unwrap_or(rest.len())];
            plain(rest)
        };
        Some(RuleDoc {
            trigger: part("**Trigger.**", "**Why it matters.**"),
            fix: part("**Fix.**", "```"),
            markdown: body.to_owned(),
        })
    }
}

/// Markdown prose as plain text: paragraphs and list items on lines of their own, the
/// lines of each joined, emphasis markers removed.
fn plain(markdown: &str) -> String {
    let mut out = String::new();
    for line in markdown.lines().map(str::trim) {
        if line.is_empty() {
            if !out.is_empty() && !out.ends_with("\n\n") {
                out.push_str("\n\n");
            }
        } else if line.starts_with("- ") {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push('\n');
            }
            out.push_str(line);
        } else {
            if !out.is_empty() && !out.ends_with('\n') {
                out.push(' ');
            }
            out.push_str(line);
        }
    }
    out.replace("**", "").trim().to_owned()
}

/// SARIF wants URIs: relative paths with forward slashes, percent-encoding what a URI
/// cannot hold, and `file://` URIs for absolute paths, which a relative reference would
/// otherwise resolve against the repository root.
fn uri(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    if path.starts_with('/') {
        out.push_str("file://");
    }
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
