//! `policyc lint --format sarif` must be accepted by code-scanning UIs. No SARIF schema
//! ships with any crate or package this workspace may use, so the requirements of SARIF
//! 2.1.0 (OASIS standard, sections 3.13-3.33) that GitHub code scanning enforces on
//! upload are checked by hand here: the log's version and schema, a named driver with
//! uniquely identified and documented rules, and results with a rule, a level, a message
//! and a physical location with a region whose line and column count from 1. Absent is
//! allowed where the standard makes a property optional; `null` never is, since the
//! schema types no property as nullable.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use policy_lang::manifest::read_inputs;
use policy_lang::{Diagnostic, Sources, codes, load_sources, report};
use serde_json::Value;

/// Every problem that makes `log` unacceptable, as `path: what`.
fn problems(log: &Value) -> Vec<String> {
    let mut out = Vec::new();
    nulls(log, "$", &mut out);
    if log["version"] != "2.1.0" {
        out.push(format!("$.version: {} is not \"2.1.0\"", log["version"]));
    }
    absolute_uri(&log["$schema"], "$.$schema", &mut out);
    let Some(runs) = log["runs"].as_array().filter(|r| !r.is_empty()) else {
        out.push("$.runs: not a non-empty array".into());
        return out;
    };
    for (r, run) in runs.iter().enumerate() {
        let at = format!("$.runs[{r}]");
        let driver = &run["tool"]["driver"];
        text(&driver["name"], &format!("{at}.tool.driver.name"), &mut out);
        if !driver["informationUri"].is_null() {
            absolute_uri(
                &driver["informationUri"],
                &format!("{at}.tool.driver.informationUri"),
                &mut out,
            );
        }
        let rules = driver["rules"].as_array().cloned().unwrap_or_default();
        let mut ids = BTreeSet::new();
        for (i, rule) in rules.iter().enumerate() {
            let at = format!("{at}.tool.driver.rules[{i}]");
            text(&rule["id"], &format!("{at}.id"), &mut out);
            if !ids.insert(rule["id"].as_str().unwrap_or_default().to_owned()) {
                out.push(format!("{at}.id: {} is not unique", rule["id"]));
            }
            for field in ["shortDescription", "fullDescription", "help"] {
                text(&rule[field]["text"], &format!("{at}.{field}.text"), &mut out);
            }
            if rule.get("helpUri").is_some() {
                absolute_uri(&rule["helpUri"], &format!("{at}.helpUri"), &mut out);
            }
            level(
                &rule["defaultConfiguration"]["level"],
                &format!("{at}.defaultConfiguration"),
                &mut out,
            );
        }
        let Some(results) = run["results"].as_array() else {
            out.push(format!("{at}.results: not an array"));
            continue;
        };
        for (i, result) in results.iter().enumerate() {
            let at = format!("{at}.results[{i}]");
            let id = result["ruleId"].as_str().unwrap_or_default();
            if !ids.contains(id) {
                out.push(format!("{at}.ruleId: {} names no rule of the driver", result["ruleId"]));
            }
            if let Some(index) = result.get("ruleIndex") {
                let named = index.as_u64().and_then(|i| rules.get(i as usize)).map(|r| &r["id"]);
                if named.and_then(Value::as_str) != Some(id) {
                    out.push(format!("{at}.ruleIndex: {index} is not the index of rule {id}"));
                }
            }
            level(&result["level"], &at, &mut out);
            text(&result["message"]["text"], &format!("{at}.message.text"), &mut out);
            let locations = result["locations"].as_array().cloned().unwrap_or_default();
            if locations.is_empty() || locations.len() > 10 {
                out.push(format!("{at}.locations: {} locations, not 1 to 10", locations.len()));
            }
            for (l, location) in locations.iter().enumerate() {
                physical_location(
                    &location["physicalLocation"],
                    &format!("{at}.locations[{l}]"),
                    &mut out,
                );
            }
        }
    }
    out
}

fn physical_location(location: &Value, at: &str, out: &mut Vec<String>) {
    let uri = location["artifactLocation"]["uri"].as_str().unwrap_or_default();
    // RFC 3986: unreserved and reserved characters, and `%` with two hex digits.
    let bytes = uri.as_bytes();
    let valid = !uri.is_empty()
        && bytes.iter().enumerate().all(|(i, &b)| match b {
            b'%' => bytes.get(i + 1..i + 3).is_some_and(|h| h.iter().all(u8::is_ascii_hexdigit)),
            _ => b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=".contains(&b),
        });
    if !valid {
        out.push(format!("{at}.physicalLocation.artifactLocation.uri: {uri:?} is not a URI"));
    }
    let region = &location["region"];
    let number = |name: &str| region[name].as_u64();
    match number("startLine") {
        Some(line) if line >= 1 => {
            if number("endLine").is_some_and(|end| end < line) {
                out.push(format!("{at}.region: endLine before startLine"));
            }
        }
        _ => out.push(format!("{at}.region.startLine: {} is not >= 1", region["startLine"])),
    }
    match (region.get("startColumn"), number("startColumn")) {
        (None, _) => {}
        (Some(_), Some(col)) if col >= 1 => {
            let same_line = number("endLine").is_none_or(|end| Some(end) == number("startLine"));
            if same_line && number("endColumn").is_some_and(|end| end < col) {
                out.push(format!("{at}.region: endColumn before startColumn"));
            }
        }
        (Some(col), _) => out.push(format!("{at}.region.startColumn: {col} is not >= 1")),
    }
}

fn text(value: &Value, at: &str, out: &mut Vec<String>) {
    if value.as_str().is_none_or(|s| s.trim().is_empty()) {
        out.push(format!("{at}: {value} is not a non-empty string"));
    }
}

fn level(value: &Value, at: &str, out: &mut Vec<String>) {
    if !matches!(value.as_str(), Some("none" | "note" | "warning" | "error")) {
        out.push(format!("{at}.level: {value} is not none, note, warning or error"));
    }
}

/// RFC 3986 section 3: an absolute URI has a scheme (a letter, then letters, digits, `+`,
/// `-` or `.`), a colon and more.
fn absolute_uri(value: &Value, at: &str, out: &mut Vec<String>) {
    let ok = value.as_str().and_then(|s| s.split_once(':')).is_some_and(|(scheme, rest)| {
        scheme.starts_with(|c: char| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            && !rest.is_empty()
            && !rest.contains(char::is_whitespace)
    });
    if !ok {
        out.push(format!("{at}: {value} is not an absolute URI"));
    }
}

fn nulls(value: &Value, at: &str, out: &mut Vec<String>) {
    match value {
        Value::Null => out.push(format!("{at}: null")),
        Value::Array(items) => {
            items.iter().enumerate().for_each(|(i, v)| nulls(v, &format!("{at}[{i}]"), out))
        }
        Value::Object(fields) => {
            fields.iter().for_each(|(k, v)| nulls(v, &format!("{at}.{k}"), out))
        }
        _ => {}
    }
}

fn invalid_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/invalid")
}

/// Every front-end diagnostic of every invalid fixture.
fn fixture_diagnostics() -> (Sources, Vec<Diagnostic>) {
    let (sources, mut diagnostics) = read_inputs(&[invalid_fixtures()]).expect("reading fixtures");
    diagnostics.extend(load_sources(&sources).diagnostics);
    (sources, diagnostics)
}

/// A diagnostic about the inputs as a whole, as the compiler reports a table overflow.
fn capacity_error() -> Diagnostic {
    Diagnostic::new(codes::CAPACITY_EXCEEDED, "the policy table needs 4 entries, its limit is 2")
        .help("most entries come from: NetworkPolicy shop/web (3); raise the limit or narrow those policies")
}

#[test]
fn the_log_of_every_invalid_fixture_meets_code_scanning_requirements() {
    let (sources, mut diagnostics) = fixture_diagnostics();
    assert!(diagnostics.len() > 50, "only {} diagnostics", diagnostics.len());
    diagnostics.push(capacity_error());
    let log = report::sarif(&diagnostics, &sources, "0.1.0");
    let found = problems(&log);
    assert!(found.is_empty(), "{}", found.join("\n"));
    assert_eq!(log["runs"][0]["results"].as_array().map(Vec::len), Some(diagnostics.len()));
}

#[test]
fn a_result_without_a_span_is_placed_at_the_start_of_an_input() {
    let (sources, _) = fixture_diagnostics();
    let log = report::sarif(&[capacity_error()], &sources, "0.1.0");
    let location = &log["runs"][0]["results"][0]["locations"][0];
    let uri = location["physicalLocation"]["artifactLocation"]["uri"].as_str().unwrap();
    assert!(uri.ends_with("fixtures/invalid/PL0001-alias-bomb.yaml"), "{uri}");
    assert_eq!(location["physicalLocation"]["region"]["startLine"], 1);
    assert!(location["message"]["text"].as_str().unwrap().contains("input file(s)"));

    // With no input at all there is only a logical place to name.
    let log = report::sarif(&[capacity_error()], &Sources::default(), "0.1.0");
    let location = &log["runs"][0]["results"][0]["locations"][0];
    assert_eq!(location["logicalLocations"][0]["name"], "policyc inputs");
}

#[test]
fn rules_link_to_their_section_and_carry_its_text() {
    let log = report::sarif(&[], &Sources::default(), "0.1.0");
    let rules = log["runs"][0]["tool"]["driver"]["rules"].as_array().unwrap();
    assert_eq!(rules.len(), codes::ALL.len());
    let rule = rules.iter().find(|r| r["id"] == "PL0013").unwrap();
    assert_eq!(
        rule["helpUri"],
        format!("{}/blob/main/docs/diagnostics.md#pl0013", env!("CARGO_PKG_REPOSITORY"))
    );
    assert_eq!(rule["shortDescription"]["text"], codes::INVALID_PORT.title);
    let full = rule["fullDescription"]["text"].as_str().unwrap();
    assert!(full.contains("port") && !full.contains("**"), "{full}");
    let markdown = rule["help"]["markdown"].as_str().unwrap();
    assert!(markdown.starts_with("**Severity:** error"), "{markdown}");
    assert!(markdown.contains("```yaml bad"), "{markdown}");
    // Every rule's description is its own section's trigger, not a neighbour's.
    for rule in rules {
        let id = rule["id"].as_str().unwrap();
        let markdown = rule["help"]["markdown"].as_str().unwrap_or_default();
        assert!(!markdown.contains("\n## "), "{id}: the help runs into the next section");
        assert!(!rule["fullDescription"]["text"].as_str().unwrap().is_empty(), "{id}");
    }
}

#[test]
fn the_checker_rejects_what_code_scanning_rejects() {
    let (sources, diagnostics) = fixture_diagnostics();
    let good = report::sarif(&diagnostics[..1], &sources, "0.1.0");
    assert_eq!(problems(&good), Vec::<String>::new());
    /// What is broken, and how.
    type Breakage = (&'static str, fn(&mut Value));
    let broken: [Breakage; 6] = [
        ("version", |log| log["version"] = "2.0.0".into()),
        ("helpUri", |log| {
            log["runs"][0]["tool"]["driver"]["rules"][0]["helpUri"] = "docs/x.md".into()
        }),
        ("locations", |log| log["runs"][0]["results"][0]["locations"] = Value::Array(vec![])),
        ("startLine", |log| {
            log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["region"]["startLine"] =
                0.into()
        }),
        ("uri", |log| {
            log["runs"][0]["results"][0]["locations"][0]["physicalLocation"]["artifactLocation"]["uri"] =
                "a b.yaml".into()
        }),
        ("null", |log| log["runs"][0]["results"][0]["ruleIndex"] = Value::Null),
    ];
    for (what, breaks) in broken {
        let mut log = good.clone();
        breaks(&mut log);
        assert!(!problems(&log).is_empty(), "a broken {what} passed the checker");
    }
}
