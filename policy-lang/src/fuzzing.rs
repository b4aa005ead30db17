//! The bodies of the fuzz targets in `fuzz/`, kept in the library so that the fuzzer
//! and the corpus replay in `tests/fuzz_corpus.rs` run the same code.
//!
//! Each function accepts any bytes and panics only when an invariant breaks: beyond
//! "no panic", the front end must read back what [`crate::print`] writes, and the
//! selector parser what [`selector_expr::to_expr`] writes.

use crate::ast::{LabelSelector, NetPeer, NetworkPolicy};
use crate::manifest::load_sources;
use crate::source::{Sources, Span};
use crate::{print, selector_expr};

/// Parses `data` as a manifest file and renders every diagnostic. Every policy it
/// yields must print to YAML that parses back to the same policy, without errors when
/// the input had none.
pub fn front_end(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut sources = Sources::default();
    sources.add("fuzz.yaml", text);
    let bundle = load_sources(&sources);
    for diag in &bundle.diagnostics {
        diag.render(&sources);
    }
    if bundle.network_policies.is_empty() {
        return;
    }

    let printed = print::network_policies(&bundle.network_policies);
    let mut again = Sources::default();
    again.add("printed.yaml", printed.as_str());
    let reread = load_sources(&again);
    let before: Vec<_> = bundle.network_policies.iter().map(without_spans).collect();
    let after: Vec<_> = reread.network_policies.iter().map(without_spans).collect();
    assert_eq!(before, after, "the printed policies read back differently:\n{printed}");
    if !bundle.has_errors() {
        let rendered: Vec<_> = reread.diagnostics.iter().map(|d| d.render(&again)).collect();
        assert!(!reread.has_errors(), "printed policies have errors:\n{printed}\n{rendered:#?}");
    }
}

/// Parses `data` as a command-line selector. A rejected selector has at least one
/// diagnostic, each with a span that renders; an accepted one prints to an expression
/// that parses back to it.
pub fn selector_expr(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut sources = Sources::default();
    match selector_expr::parse_cli(&mut sources, text) {
        Ok(selector) => {
            let printed = selector_expr::to_expr(&selector);
            let mut again = Sources::default();
            let reread = selector_expr::parse_cli(&mut again, &printed).unwrap_or_else(|d| {
                panic!("`{printed}` (printed from `{text}`) is rejected: {d:#?}")
            });
            assert_eq!(
                selector_without_span(&reread),
                selector_without_span(&selector),
                "`{printed}` (printed from `{text}`) reads back differently"
            );
        }
        Err(diags) => {
            assert!(!diags.is_empty(), "`{text}` rejected without a diagnostic");
            for diag in &diags {
                assert!(diag.span.is_some(), "diagnostic without a span for `{text}`: {diag:?}");
                diag.render(&sources);
            }
        }
    }
}

/// A copy of `policy` with every span cleared, for comparing ASTs of different texts.
pub fn without_spans(policy: &NetworkPolicy) -> NetworkPolicy {
    let mut p = policy.clone();
    p.meta.span = Span::default();
    p.meta.name.span = Span::default();
    p.pod_selector.span = Span::default();
    for rule in p.ingress.iter_mut().chain(p.egress.iter_mut()) {
        rule.span = Span::default();
        for port in &mut rule.ports {
            port.span = Span::default();
        }
        for peer in &mut rule.peers {
            match peer {
                NetPeer::Pods { namespace_selector, pod_selector, span } => {
                    *span = Span::default();
                    for s in [namespace_selector, pod_selector].into_iter().flatten() {
                        s.span = Span::default();
                    }
                }
                NetPeer::IpBlock { span, .. } => *span = Span::default(),
            }
        }
    }
    p
}

/// A copy of `selector` with its span cleared.
pub fn selector_without_span(selector: &LabelSelector) -> LabelSelector {
    LabelSelector { span: Span::default(), ..selector.clone() }
}
