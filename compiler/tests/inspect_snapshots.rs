//! Snapshots of `policyc inspect` for the shipped fixtures: every identity, endpoint,
//! address and policy entry with its provenance, in one readable file per fixture
//! (snapshots/inspect/). A change to the solver shows up here as a reviewable diff.

use std::path::{Path, PathBuf};

/// Fixture inputs, named relative to the repository root so that rule locations (and
/// the source digest) do not depend on where the checkout is.
fn compile(inputs: &[&str]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let previous = std::env::current_dir().unwrap();
    // read_inputs names files as given; run it from the root with relative paths.
    std::env::set_current_dir(&root).unwrap();
    let paths: Vec<PathBuf> = inputs.iter().map(PathBuf::from).collect();
    let (sources, read) = policy_lang::manifest::read_inputs(&paths).unwrap();
    std::env::set_current_dir(previous).unwrap();
    assert!(read.is_empty(), "{read:?}");
    let bundle = policy_lang::load_sources(&sources);
    assert!(!bundle.has_errors(), "{inputs:?}: {:?}", bundle.diagnostics);
    let compilation = compiler::compile(&sources, &bundle);
    assert!(
        compilation.diagnostics.iter().all(|d| d.severity() != policy_lang::Severity::Error),
        "{:?}",
        compilation.diagnostics
    );
    compiler::render::render(&compilation.artifact)
}

#[test]
fn inspect_dumps_of_the_fixtures() {
    // One test, so the working-directory switch above never races another test.
    let cases: &[(&str, &[&str])] = &[
        ("demo", &["fixtures/demo"]),
        ("e2e", &["fixtures/e2e"]),
        ("valid", &["fixtures/valid"]),
        ("lint", &["fixtures/lint"]),
        ("cilium-entities", &["fixtures/cilium/cluster.yaml", "fixtures/cilium/entities.yaml"]),
        ("cilium-icmp", &["fixtures/cilium/cluster.yaml", "fixtures/cilium/icmp.yaml"]),
        ("cilium-cidr", &["fixtures/cilium/cluster.yaml", "fixtures/cilium/cidr.yaml"]),
    ];
    for (name, inputs) in cases {
        let dump = compile(inputs);
        insta::with_settings!({
            snapshot_path => "../../snapshots/inspect",
            prepend_module_to_snapshot => false,
            omit_expression => true,
            description => inputs.join(" "),
        }, {
            insta::assert_snapshot!(*name, dump);
        });
    }
}
