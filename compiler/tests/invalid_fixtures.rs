//! The fixtures of `fixtures/invalid` run through the whole pipeline of `policyc lint`:
//! front end, compiler, then lints when the front end found no error. Each must produce exactly the codes of its first line,
//! `# expect: PL0022`. policy-lang's own test checks the front end alone; this one is
//! where the compiler's codes (PL0022, PL0031, PL02xx, PL0300) are checked.
//!
//! An optional second line `# options: ...` gives the `policyc` flags a fixture needs:
//! `--warn-unisolated` (lint), `--max-policy-entries N`, `--max-ipcache-entries N` or
//! `--max-host-entries N` (compile).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use compiler::lint::{LintOptions, lint};
use compiler::{Options, compile_with};
use policy_lang::load_sources;
use policy_lang::manifest::read_inputs;

/// The decoder recurses per nesting level, and a debug build's frames are large: more
/// than the 2 MiB of a test thread for the deepest documents the parser accepts.
const STACK: usize = 16 << 20;

fn fixtures() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/invalid");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("listing fixtures").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")))
        .collect();
    paths.sort();
    paths
}

/// What a fixture's first two lines ask for.
struct Header {
    expect: BTreeSet<String>,
    options: Options,
    lint_options: LintOptions,
}

fn header(path: &Path) -> Header {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut lines = bytes.split(|&b| b == b'\n').map(String::from_utf8_lossy);
    let first = lines.next().unwrap_or_default();
    let expect = first
        .strip_prefix("# expect:")
        .unwrap_or_else(|| panic!("{}: no `# expect:` line", path.display()))
        .split(',')
        .map(|c| c.trim().to_owned())
        .collect();
    let mut header =
        Header { expect, options: Options::default(), lint_options: LintOptions::default() };
    let second = lines.next().unwrap_or_default();
    let mut flags = second.strip_prefix("# options:").unwrap_or_default().split_whitespace();
    while let Some(flag) = flags.next() {
        let mut number = || -> usize {
            let n = flags.next().and_then(|n| n.parse().ok());
            n.unwrap_or_else(|| panic!("{}: `{flag}` needs a number", path.display()))
        };
        match flag {
            "--warn-unisolated" => header.lint_options.unisolated_pods = true,
            "--max-policy-entries" => header.options.capacity.policy = number(),
            "--max-ipcache-entries" => header.options.capacity.ipcache = number(),
            "--max-host-entries" => header.options.capacity.hosts = number(),
            other => panic!("{}: unknown option `{other}`", path.display()),
        }
    }
    header
}

/// Every diagnostic the fixture produces (front end, compiler and lints together), and
/// their rendering as `policyc lint` prints it, with the fixture named as from the
/// repository root.
fn run(path: &Path, header: &Header) -> (BTreeSet<String>, String) {
    let (sources, mut diagnostics) = read_inputs(&[path.to_path_buf()]).expect("reading a fixture");
    let bundle = load_sources(&sources);
    diagnostics.extend(bundle.diagnostics.iter().cloned());
    let compilation = compile_with(&sources, &bundle, &header.options);
    diagnostics.extend(compilation.diagnostics.iter().cloned());
    if !bundle.has_errors() {
        diagnostics.extend(lint(&sources, &bundle, &compilation, header.lint_options));
    }
    // Every diagnostic says what to do, and every one but a capacity overflow (which
    // is about the whole input) says where.
    for d in &diagnostics {
        assert!(d.help.is_some(), "{}: {} has no help line", path.display(), d.code.code);
        assert!(
            d.span.is_some() || d.code.code == "PL0300",
            "{}: {} has no span",
            path.display(),
            d.code.code
        );
    }
    let codes = diagnostics.iter().map(|d| d.code.code.to_owned()).collect();
    let dir = path.parent().expect("a fixture is in a folder").display().to_string();
    let rendered: String = diagnostics
        .iter()
        .map(|d| d.render(&sources).replace(&dir, "fixtures/invalid") + "\n")
        .collect();
    (codes, rendered)
}

/// Also snapshots each fixture's rendered diagnostics (no colour) under
/// snapshots/diagnostics/, one readable file per fixture.
#[test]
fn every_invalid_fixture_produces_exactly_its_expected_codes_through_the_compiler() {
    let failures = std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(|| {
            let mut failures = Vec::new();
            for path in fixtures() {
                let header = header(&path);
                let (got, rendered) = run(&path, &header);
                let name = path.file_stem().expect("a file name").to_string_lossy().into_owned();
                insta::with_settings!({
                    snapshot_path => "../../snapshots/diagnostics",
                    prepend_module_to_snapshot => false,
                    omit_expression => true,
                }, {
                    insta::assert_snapshot!(name, rendered);
                });
                if got != header.expect {
                    let want = &header.expect;
                    failures.push(format!("{}: expected {want:?}, got {got:?}", path.display()));
                }
            }
            failures
        })
        .expect("spawning the test thread")
        .join()
        .expect("the pipeline panicked");
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}
