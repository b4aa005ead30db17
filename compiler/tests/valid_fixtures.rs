//! `fixtures/valid` lints clean: read, compiled and linted as `policyc lint
//! --deny-warnings fixtures/valid` does it, the directory produces no error and no
//! warning (notes, such as for the Services a Helm chart renders, are allowed).
//! policy-lang's own test checks the front end alone; this one adds what only the
//! compiler sees (namespaces missing from the inventory, reserved pod labels, table
//! capacity) and every lint.

use compiler::lint::{LintOptions, lint};
use compiler::{Options, compile_with};
use policy_lang::manifest::read_inputs;
use policy_lang::{Diagnostic, Severity, load_sources};

fn fixtures_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/valid")
}

#[test]
fn the_valid_fixtures_lint_clean_with_warnings_denied() {
    let (sources, mut diagnostics) = read_inputs(&[fixtures_dir()]).expect("reading fixtures");
    let bundle = load_sources(&sources);
    diagnostics.extend(bundle.diagnostics.iter().cloned());
    let compilation = compile_with(&sources, &bundle, &Options::default());
    diagnostics.extend(compilation.diagnostics.iter().cloned());
    diagnostics.extend(lint(&sources, &bundle, &compilation, LintOptions::default()));

    let denied: Vec<String> = diagnostics
        .iter()
        .filter(|d| d.severity() != Severity::Note)
        .map(|d: &Diagnostic| d.render(&sources))
        .collect();
    assert!(denied.is_empty(), "fixtures/valid does not lint clean:\n{}", denied.join("\n"));

    // Lints that judge selection run only with pods in the inputs, and the Cilium kinds
    // must be among what was checked: a clean run over nothing would prove nothing.
    assert!(bundle.pods.len() >= 8, "{} pods", bundle.pods.len());
    assert!(!bundle.network_policies.is_empty());
    let namespaced = bundle.cilium_policies.iter().filter(|p| !p.clusterwide).count();
    let clusterwide = bundle.cilium_policies.iter().filter(|p| p.clusterwide).count();
    assert!(namespaced >= 2 && clusterwide >= 1, "{namespaced} CNPs, {clusterwide} CCNPs");
    assert!(compilation.artifact.policy.len() > 10);
    // A host policy among them, compiled to a host endpoint.
    assert!(compilation.artifact.endpoints.iter().any(|e| e.is_host()));
}
