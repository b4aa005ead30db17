//! docs/diagnostics.md documents every registered code, and only registered codes.
//!
//! Each code has a section headed exactly `## PLxxxx: <title>`, with the title of
//! `policy_lang::codes`, stating the registered severity. The section's examples are
//! checked too: a block fenced as ```` ```yaml bad ```` must make the front end report
//! exactly that code, and one fenced as ```` ```yaml fixed ```` must make it report
//! nothing, so the documentation cannot drift from what the code does. A retired code
//! (`codes::RETIRED`) keeps its section, which says `**Retired.**` and has no bad example,
//! since nothing reports it any more.

use std::collections::BTreeSet;
use std::path::Path;

use policy_lang::codes::{self, Code};
use policy_lang::{Sources, load_sources};

mod support;

use support::COMPILER_CODES;

/// A code whose trigger cannot be written in a Markdown file, which is UTF-8 itself.
const NOT_WRITABLE_AS_AN_EXAMPLE: &[&str] = &["PL0002"];

fn doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/diagnostics.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One `## ` section of the document.
struct Section {
    heading: String,
    /// 1-based line of the heading, for messages.
    line: usize,
    body: String,
}

impl Section {
    /// `(code, title)` if the heading is `PLxxxx: title`; `(code, "")` for a heading that
    /// starts with a code but has no title.
    fn code_and_title(&self) -> Option<(&str, &str)> {
        let code_len =
            self.heading.find(|c: char| !c.is_ascii_alphanumeric()).unwrap_or(self.heading.len());
        let code = &self.heading[..code_len];
        let looks_like_code = code.len() == 6
            && code.starts_with("PL")
            && code[2..].bytes().all(|b| b.is_ascii_digit());
        if !looks_like_code {
            return None;
        }
        let title = self.heading[code_len..].strip_prefix(": ").unwrap_or("");
        Some((code, title))
    }

    /// Fenced blocks whose info string is `<language> <role>`, e.g. `yaml bad`.
    fn examples(&self, role: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut current: Option<String> = None;
        for line in self.body.lines() {
            match current.as_mut() {
                Some(block) if line.trim_start().starts_with("```") => {
                    out.push(std::mem::take(block));
                    current = None;
                }
                Some(block) => {
                    block.push_str(line);
                    block.push('\n');
                }
                None => {
                    if let Some(info) = line.trim_start().strip_prefix("```") {
                        let mut words = info.split_whitespace();
                        let language = words.next().unwrap_or("");
                        if matches!(language, "yaml" | "json") && words.next() == Some(role) {
                            current = Some(String::new());
                        }
                    }
                }
            }
        }
        out
    }
}

/// The `## ` sections, skipping fenced blocks so that a `## ` line inside an example is
/// not taken for a heading.
fn sections(doc: &str) -> Vec<Section> {
    let mut out: Vec<Section> = Vec::new();
    let mut in_fence = false;
    for (i, line) in doc.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            in_fence = !in_fence;
        }
        if !in_fence && let Some(heading) = line.strip_prefix("## ") {
            let heading = heading.trim_end().to_owned();
            out.push(Section { heading, line: i + 1, body: String::new() });
            continue;
        }
        if let Some(section) = out.last_mut() {
            section.body.push_str(line);
            section.body.push('\n');
        }
    }
    out
}

fn code_sections(doc: &str) -> Vec<(Section, String, String)> {
    sections(doc)
        .into_iter()
        .filter_map(|s| {
            let (code, title) = s.code_and_title()?;
            let (code, title) = (code.to_owned(), title.to_owned());
            Some((s, code, title))
        })
        .collect()
}

/// Every code, reported or retired, in code order.
fn registry() -> Vec<&'static Code> {
    let mut all: Vec<&'static Code> = codes::ALL.iter().chain(codes::RETIRED).collect();
    all.sort_by_key(|c| c.code);
    all
}

fn registered(code: &str) -> Option<&'static Code> {
    registry().into_iter().find(|c| c.code == code)
}

fn is_retired(code: &str) -> bool {
    codes::RETIRED.iter().any(|c| c.code == code)
}

/// The codes the front end reports for one example.
fn front_end_codes(code: &str, text: &str) -> BTreeSet<&'static str> {
    let mut sources = Sources::default();
    sources.add(format!("docs/diagnostics.md ({code} example)"), text);
    load_sources(&sources).diagnostics.iter().map(|d| d.code.code).collect()
}

#[test]
fn every_registered_code_has_a_heading_with_its_title() {
    let sections = code_sections(&doc());
    let mut failures = Vec::new();
    for code in registry() {
        match sections.iter().find(|(_, c, _)| c == code.code) {
            None => failures.push(format!("{0}: no `## {0}: {1}` heading", code.code, code.title)),
            Some((section, _, title)) if title != code.title => failures.push(format!(
                "{}: heading at line {} has title `{title}`, the registry says `{}`",
                code.code, section.line, code.title
            )),
            Some(_) => {}
        }
    }
    assert!(failures.is_empty(), "docs/diagnostics.md:\n{}", failures.join("\n"));
}

#[test]
fn every_code_heading_names_a_registered_code_once() {
    let mut seen = BTreeSet::new();
    let mut failures = Vec::new();
    for (section, code, _) in code_sections(&doc()) {
        if registered(&code).is_none() {
            failures.push(format!("{code}: heading at line {} is not registered", section.line));
        }
        if !seen.insert(code.clone()) {
            failures.push(format!("{code}: second heading at line {}", section.line));
        }
    }
    assert!(failures.is_empty(), "docs/diagnostics.md:\n{}", failures.join("\n"));
}

#[test]
fn code_sections_follow_the_registry_order() {
    let documented: Vec<String> = code_sections(&doc()).into_iter().map(|(_, c, _)| c).collect();
    let registry: Vec<String> =
        registry().iter().map(|c| c.code.to_owned()).filter(|c| documented.contains(c)).collect();
    assert_eq!(documented, registry, "docs/diagnostics.md lists codes out of registry order");
}

#[test]
fn every_section_states_the_registered_severity() {
    let mut failures = Vec::new();
    for (section, code, _) in code_sections(&doc()) {
        let Some(registered) = registered(&code) else { continue };
        let line = format!("**Severity:** {}", registered.severity.as_str());
        if !section.body.contains(&line) {
            failures.push(format!("{code}: the section does not say `{line}`"));
        }
    }
    assert!(failures.is_empty(), "docs/diagnostics.md:\n{}", failures.join("\n"));
}

#[test]
fn bad_examples_produce_exactly_their_code_and_fixed_ones_nothing() {
    let mut failures = Vec::new();
    for (section, code, _) in code_sections(&doc()) {
        let bad = section.examples("bad");
        if is_retired(&code) {
            if !bad.is_empty() || !section.body.contains("**Retired.**") {
                failures.push(format!(
                    "{code}: a retired code says `**Retired.**` and has no bad example"
                ));
            }
            continue;
        }
        if bad.is_empty() && !NOT_WRITABLE_AS_AN_EXAMPLE.contains(&code.as_str()) {
            failures.push(format!("{code}: no ```yaml bad example"));
        }
        let want: BTreeSet<&str> = if COMPILER_CODES.contains(&code.as_str()) {
            BTreeSet::new()
        } else {
            BTreeSet::from([code.as_str()])
        };
        for (i, example) in bad.iter().enumerate() {
            let got = front_end_codes(&code, example);
            if got != want {
                let n = i + 1;
                failures.push(format!("{code}: bad example {n} gives {got:?}, want {want:?}"));
            }
        }
        for (i, example) in section.examples("fixed").iter().enumerate() {
            let got = front_end_codes(&code, example);
            if !got.is_empty() {
                failures.push(format!("{code}: fixed example {} still gives {got:?}", i + 1));
            }
        }
    }
    assert!(failures.is_empty(), "docs/diagnostics.md:\n{}", failures.join("\n"));
}

/// The PL0001 section states the parser's budget; it went stale once, so each number is
/// checked against the constants the parser is configured with.
#[test]
fn the_syntax_section_states_the_parser_budget() {
    use policy_lang::yaml::{budget, grouped};
    let sections = code_sections(&doc());
    let (section, _, _) =
        sections.iter().find(|(_, c, _)| c == "PL0001").expect("a PL0001 section");
    let text = section.body.split_whitespace().collect::<Vec<_>>().join(" ");
    let stated = [
        format!("nested more than {} deep", budget::MAX_DEPTH),
        format!("more than {} documents", grouped(budget::MAX_DOCUMENTS)),
        format!("than {} nodes", grouped(budget::MAX_NODES)),
        format!("{} parser events", grouped(budget::MAX_EVENTS)),
        format!("more than {} aliases", grouped(budget::MAX_ALIASES)),
        format!("replay more than {} events", grouped(budget::MAX_REPLAYED_EVENTS)),
    ];
    let missing: Vec<&String> = stated.iter().filter(|s| !text.contains(s.as_str())).collect();
    assert!(missing.is_empty(), "docs/diagnostics.md PL0001 does not say {missing:?}");
}
