//! The examples of docs/diagnostics.md for the codes the compiler reports (PL0022,
//! PL0031, PL0033, the lints PL02xx and PL0300) run through the whole of `policyc lint`: front
//! end, compile, then lints when the front end found no error. A ```` ```yaml bad ````
//! block must produce exactly its section's code, a ```` ```yaml fixed ```` block
//! nothing. policy-lang's test of the same file can only check that the front end is
//! silent on these; this one checks what they are written to show.
//!
//! As the page's "About the examples" says, the examples of PL02xx and PL0300 need a
//! pod to select: the first YAML block of that section (a Namespace and a Pod) is added
//! to them. Words after the role in a fence's info string are `policyc` flags:
//! `--warn-unisolated`, `--max-policy-entries=N`.

use std::collections::BTreeSet;
use std::path::Path;

use compiler::lint::{LintOptions, lint};
use compiler::{Options, compile_with};
use policy_lang::{Sources, codes, load_sources};

fn doc() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/diagnostics.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// One fenced YAML block: the heading of its `## ` section, its info-string words
/// after the language, and its text.
struct Block {
    section: String,
    words: Vec<String>,
    text: String,
}

fn blocks(doc: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut current: Option<Block> = None;
    for line in doc.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (current.as_mut(), fence) {
            (Some(_), Some(_)) => out.extend(current.take()),
            (Some(block), None) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (None, Some(info)) => {
                let mut words = info.split_whitespace();
                if words.next() == Some("yaml") {
                    let words = words.map(str::to_owned).collect();
                    current = Some(Block { section: section.clone(), words, text: String::new() });
                }
            }
            (None, None) => {
                if let Some(heading) = line.strip_prefix("## ") {
                    section = heading.trim().to_owned();
                }
            }
        }
    }
    out
}

/// Every code `policyc lint` reports for `text` with the flags `words`.
fn lint_codes(name: &str, text: &str, words: &[String]) -> BTreeSet<&'static str> {
    let mut options = Options::default();
    let mut lint_options = LintOptions::default();
    for word in words {
        match word.split_once('=') {
            None if word == "--warn-unisolated" => lint_options.unisolated_pods = true,
            Some(("--max-policy-entries", n)) => {
                options.capacity.policy = n.parse().expect("a number of entries");
            }
            _ => panic!("{name}: unknown flag `{word}` in a fence's info string"),
        }
    }
    let mut sources = Sources::default();
    sources.add(name.to_owned(), text.to_owned());
    let bundle = load_sources(&sources);
    let compilation = compile_with(&sources, &bundle, &options);
    let mut out: Vec<&'static str> = bundle.diagnostics.iter().map(|d| d.code.code).collect();
    out.extend(compilation.diagnostics.iter().map(|d| d.code.code));
    if !bundle.has_errors() {
        out.extend(lint(&sources, &bundle, &compilation, lint_options).iter().map(|d| d.code.code));
    }
    out.into_iter().collect()
}

#[test]
fn compiler_code_examples_produce_exactly_their_code_and_fixed_ones_nothing() {
    let doc = doc();
    let blocks = blocks(&doc);
    let preamble = &blocks
        .iter()
        .find(|b| b.section == "About the examples")
        .expect("the \"About the examples\" section has a YAML block")
        .text;
    let compiler_codes: BTreeSet<&str> = ["PL0022", "PL0031", "PL0033", "PL0300"]
        .into_iter()
        .chain(codes::ALL.iter().map(|c| c.code).filter(|c| c.starts_with("PL02")))
        .collect();

    let mut failures = Vec::new();
    let mut checked = BTreeSet::new();
    for block in &blocks {
        let code = block.section.split(':').next().unwrap_or_default();
        let Some(role) = block.words.first().map(String::as_str) else { continue };
        if !compiler_codes.contains(code) || !matches!(role, "bad" | "fixed") {
            continue;
        }
        let needs_pod = code.starts_with("PL02") || code.starts_with("PL03");
        let text =
            if needs_pod { format!("{preamble}---\n{}", block.text) } else { block.text.clone() };
        let name = format!("docs/diagnostics.md ({code} {role} example)");
        let got = lint_codes(&name, &text, &block.words[1..]);
        let want: BTreeSet<&str> =
            if role == "bad" { BTreeSet::from([code]) } else { BTreeSet::new() };
        if got != want {
            failures.push(format!("{code}: a {role} example gives {got:?}, want {want:?}"));
        }
        checked.insert((code, role));
    }
    for code in &compiler_codes {
        for role in ["bad", "fixed"] {
            if !checked.contains(&(*code, role)) {
                failures.push(format!("{code}: no ```yaml {role} example"));
            }
        }
    }
    assert!(failures.is_empty(), "docs/diagnostics.md:\n{}", failures.join("\n"));
}
