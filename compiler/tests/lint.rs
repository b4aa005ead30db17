//! Each lint on fixtures/lint, where every policy trips exactly one warning.

use std::path::PathBuf;

use compiler::lint::{LintOptions, lint};

fn lint_fixture(options: LintOptions) -> Vec<(String, u32, String)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/lint");
    let (sources, read) = policy_lang::manifest::read_inputs(&[dir]).unwrap();
    assert!(read.is_empty());
    let bundle = policy_lang::load_sources(&sources);
    assert!(!bundle.has_errors(), "{:?}", bundle.diagnostics);
    let compilation = compiler::compile(&sources, &bundle);
    assert!(compilation.diagnostics.is_empty(), "{:?}", compilation.diagnostics);
    let mut found: Vec<_> = lint(&sources, &bundle, &compilation, options)
        .into_iter()
        .map(|d| {
            let span = d.span.expect("every lint points somewhere");
            let file = sources.get(span.file).name.rsplit('/').next().unwrap().to_string();
            (d.code.code.to_string(), span.line, file)
        })
        .collect();
    found.sort();
    found
}

fn has(found: &[(String, u32, String)], code: &str, line: u32, file: &str) -> bool {
    found.iter().any(|(c, l, f)| c == code && *l == line && f == file)
}

#[test]
fn each_lint_fires_where_its_problem_is() {
    let found = lint_fixture(LintOptions::default());
    // The selector typo `wbe` selects nothing.
    assert!(has(&found, "PL0200", 8, "policies.yaml"), "{found:?}");
    // The second rule (web on 8080) is inside the first (everything from web).
    assert!(has(&found, "PL0204", 22, "policies.yaml"), "{found:?}");
    // `app: frontend` matches no pod.
    assert!(has(&found, "PL0201", 28, "policies.yaml"), "{found:?}");
    // 10.1.0.0/16 holds both pods' addresses, which an ipBlock does not match.
    assert!(has(&found, "PL0205", 30, "policies.yaml"), "{found:?}");
    // web's egress is isolated and there is no DNS rule.
    assert!(found.iter().any(|(c, _, _)| c == "PL0203"), "{found:?}");
    // The host policy's nodeSelector matches no node.
    assert!(has(&found, "PL0200", 19, "hosts.yaml"), "{found:?}");
    // Nothing else: the first rule is not reported as shadowed by the second.
    assert_eq!(found.len(), 6, "{found:?}");
    assert!(!found.iter().any(|(c, _, _)| c == "PL0202"), "opt-in lint ran by default");
}

#[test]
fn unisolated_pods_are_reported_only_when_asked() {
    let found = lint_fixture(LintOptions { unisolated_pods: true });
    // web is isolated for egress only; api for ingress only.
    assert_eq!(found.iter().filter(|(c, _, _)| c == "PL0202").count(), 2, "{found:?}");
}
