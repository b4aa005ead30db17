//! Every file in `fixtures/invalid` is read through the front end exactly as
//! `policyc lint` reads it (`read_inputs`, then `load_sources`), and must produce exactly
//! the codes its first line lists:
//!
//! ```text
//! # expect: PL0005,PL0007
//! ```
//!
//! The line is plain ASCII even in the non-UTF-8 fixture, which keeps its bad byte after
//! it. File names start with the code the file is about (`PL0013-port-out-of-range.yaml`).
//!
//! Some codes come from the compiler and its lints, which this crate cannot call. For
//! their fixtures this test checks only that the front end reports nothing else; the
//! compiler's tests check that the code itself appears. Those fixtures may have a second
//! line, `# options: --warn-unisolated` or `# options: --max-policy-entries 2`, with the
//! `policyc` flags the code needs.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::Duration;

use policy_lang::codes;
use policy_lang::manifest::read_inputs;
use policy_lang::{Diagnostic, Sources, load_sources};

mod support;

use support::COMPILER_CODES;

/// Far above what any fixture needs (the alias bomb, the slowest, takes about 3 s in a
/// debug build and 0.4 s in release); it only has to turn an expansion the parser
/// failed to stop into a failure rather than a stuck run.
const DEADLINE: Duration = Duration::from_secs(30);

struct Fixture {
    path: PathBuf,
    name: String,
    /// The codes of the `# expect:` line.
    expect: BTreeSet<String>,
}

impl Fixture {
    /// What the front end alone must report: the expectation without compiler codes.
    fn parser_expect(&self) -> BTreeSet<String> {
        self.expect.iter().filter(|c| !COMPILER_CODES.contains(&c.as_str())).cloned().collect()
    }
}

/// What one front-end run produced.
struct Run {
    sources: Sources,
    diagnostics: Vec<Diagnostic>,
}

impl Run {
    fn codes(&self) -> BTreeSet<String> {
        self.diagnostics.iter().map(|d| d.code.code.to_owned()).collect()
    }
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/invalid")
}

/// Every fixture, in name order. The inputs the front end reads are exactly the files
/// `read_inputs` would pick from a directory: `*.yaml`, `*.yml` and `*.json`.
fn fixtures() -> Vec<Fixture> {
    let dir = fixtures_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("listing fixtures").path())
        .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json")))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no fixtures in {}", dir.display());
    paths
        .into_iter()
        .map(|path| {
            let name = path.file_name().and_then(|n| n.to_str()).expect("ASCII name").to_owned();
            let expect = expected_codes(&path);
            Fixture { path, name, expect }
        })
        .collect()
}

/// Parses the `# expect:` first line. It is read as bytes so that a fixture whose later
/// bytes are not UTF-8 still has a readable expectation.
fn expected_codes(path: &Path) -> BTreeSet<String> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let first = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    let first = std::str::from_utf8(first)
        .unwrap_or_else(|_| panic!("{}: the `# expect:` line must be ASCII", path.display()));
    let list = first
        .strip_prefix("# expect:")
        .unwrap_or_else(|| panic!("{}: the first line must be `# expect: PLxxxx`", path.display()));
    let expect: BTreeSet<String> = list.split(',').map(|c| c.trim().to_owned()).collect();
    for code in &expect {
        assert!(
            codes::ALL.iter().any(|c| c.code == code),
            "{}: `{code}` in the `# expect:` line is not a registered code",
            path.display()
        );
    }
    expect
}

/// Stack for the front-end thread. The parser stops nesting at 32 levels
/// (`yaml::budget::MAX_DEPTH`), but in a debug build each level costs tens of KiB of
/// stack, parsing and decoding together, which brings a document at the limit close to
/// the 2 MiB a spawned thread gets by default; `policyc` parses on its 8 MiB main thread.
/// 16 MiB leaves room for growth without hiding an unbounded recursion, which would
/// still overflow it.
const STACK: usize = 16 << 20;

/// Runs the front end on one file on its own thread, so that a hang becomes a test
/// failure naming the file. A stack overflow aborts the whole test binary rather than
/// failing one test, but it still fails `cargo test`, with the file's name as the
/// thread's name in the message.
fn run(fixture: &Fixture) -> Run {
    let (tx, rx) = mpsc::channel();
    let path = fixture.path.clone();
    thread::Builder::new()
        .name(fixture.name.clone())
        .stack_size(STACK)
        .spawn(move || {
            let (sources, mut diagnostics) = read_inputs(&[path]).expect("reading a fixture");
            let bundle = load_sources(&sources);
            diagnostics.extend(bundle.diagnostics);
            let _ = tx.send(Run { sources, diagnostics });
        })
        .expect("spawning the front-end thread");
    match rx.recv_timeout(DEADLINE) {
        Ok(run) => run,
        Err(RecvTimeoutError::Timeout) => {
            panic!("{}: the front end took longer than {DEADLINE:?}", fixture.name)
        }
        Err(RecvTimeoutError::Disconnected) => {
            panic!("{}: the front end panicked (see the thread's message above)", fixture.name)
        }
    }
}

fn codes_list(codes: &BTreeSet<String>) -> String {
    if codes.is_empty() {
        return "nothing".to_owned();
    }
    codes.iter().map(String::as_str).collect::<Vec<_>>().join(",")
}

/// Every fixture with its front-end run, computed once for all the tests of this file:
/// the alias bomb alone takes seconds in a debug build.
fn runs() -> &'static [(Fixture, Run)] {
    static RUNS: OnceLock<Vec<(Fixture, Run)>> = OnceLock::new();
    RUNS.get_or_init(|| {
        fixtures()
            .into_iter()
            .map(|fixture| {
                let run = run(&fixture);
                (fixture, run)
            })
            .collect()
    })
}

#[test]
fn every_fixture_produces_exactly_its_expected_codes() {
    let mut failures = Vec::new();
    for (fixture, run) in runs() {
        let want = fixture.parser_expect();
        let got = run.codes();
        if got != want {
            let rendered: String = run.diagnostics.iter().map(|d| d.render(&run.sources)).collect();
            failures.push(format!(
                "{}: expected {}, the front end reported {}\n{rendered}",
                fixture.name,
                codes_list(&want),
                codes_list(&got)
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn every_diagnostic_renders_and_points_into_its_file() {
    let mut failures = Vec::new();
    for (fixture, run) in runs() {
        for diag in &run.diagnostics {
            let rendered = diag.render(&run.sources);
            let head = format!("{}[{}]: ", diag.severity().as_str(), diag.code.code);
            if !rendered.starts_with(&head) {
                failures.push(format!("{}: rendering does not start with `{head}`", fixture.name));
            }
            let Some(span) = diag.span else {
                failures.push(format!("{}: {} has no span", fixture.name, diag.code.code));
                continue;
            };
            // A position one line past the last newline is still a place in the file
            // (the end of input), so it is allowed.
            let lines = run.sources.get(span.file).text.lines().count() as u32;
            if span.line < 1 || span.col < 1 || span.line > lines + 1 {
                failures.push(format!(
                    "{}: {} points at {}:{}, outside the file's {lines} lines",
                    fixture.name, diag.code.code, span.line, span.col
                ));
            }
            if diag.label.is_empty() {
                let (name, code) = (&fixture.name, diag.code.code);
                failures.push(format!("{name}: {code} has a span but no label"));
            }
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn hostile_inputs_end_in_a_syntax_diagnostic() {
    let hostile = ["alias-bomb", "deep-block-nesting", "deep-flow-nesting"];
    for name in hostile {
        let (_, run) = runs()
            .iter()
            .find(|(f, _)| f.name.contains(name))
            .unwrap_or_else(|| panic!("no fixture named *{name}*"));
        assert_eq!(run.codes(), BTreeSet::from([codes::YAML_SYNTAX.code.to_owned()]), "{name}");
    }
}

#[test]
fn every_registered_code_has_a_fixture() {
    let covered: BTreeSet<&str> =
        runs().iter().flat_map(|(f, _)| f.expect.iter().map(String::as_str)).collect();
    let missing: Vec<&str> =
        codes::ALL.iter().map(|c| c.code).filter(|c| !covered.contains(*c)).collect();
    assert!(missing.is_empty(), "codes without a fixture in fixtures/invalid: {missing:?}");
}

#[test]
fn fixture_names_start_with_an_expected_code() {
    for (fixture, _) in runs() {
        let code = fixture.name.split('-').next().unwrap_or_default();
        assert!(
            fixture.expect.contains(code),
            "{}: the name's code `{code}` is not in its `# expect:` line {:?}",
            fixture.name,
            fixture.expect
        );
    }
}

/// The issue's floor: at least 60 distinct bad inputs that are refused with an error
/// (warnings and notes do not count). Every fixture produces exactly its expected codes
/// (here for the front end, in the compiler's test for the whole pipeline), so the
/// expectation tells which fixtures end in an error.
const MIN_ERROR_FIXTURES: usize = 60;

#[test]
fn at_least_sixty_distinct_fixtures_end_in_an_error() {
    let is_error = |code: &String| {
        codes::ALL.iter().any(|c| c.code == code && c.severity == policy_lang::Severity::Error)
    };
    let mut contents = BTreeSet::new();
    let mut errors = 0;
    for (fixture, _) in runs() {
        let bytes = std::fs::read(&fixture.path).expect("reading a fixture");
        assert!(contents.insert(bytes), "{} repeats another fixture", fixture.name);
        if fixture.expect.iter().any(is_error) {
            errors += 1;
        }
    }
    assert!(errors >= MIN_ERROR_FIXTURES, "only {errors} fixtures end in an error");
}
