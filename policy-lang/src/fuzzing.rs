//! The bodies of the fuzz targets in `fuzz/`, kept in the library so that the fuzzer
//! and the corpus replay in `tests/fuzz_corpus.rs` run the same code.
//!
//! Each function accepts any bytes and panics only when an invariant breaks: beyond
//! "no panic", the front end must read back what [`crate::print`] writes, for every
//! policy kind, and the selector parser what [`selector_expr::to_expr`] writes.

use crate::ast::{LabelSelector, NetPeer, NetworkPolicy};
use crate::ast_cilium::{CiliumPeer, CiliumPolicy};
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
    cilium_round_trip(&bundle);
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

/// Every Cilium policy of `bundle` must print to YAML that reads back to the same
/// policy, and without errors when the input had none. A rule or an entry the decoder
/// left out after reporting it leaves a gap in the numbering (`specs[1]` alone), which
/// printing closes, so the comparison renumbers; a policy left with no rule at all has
/// nothing to print.
fn cilium_round_trip(bundle: &crate::Bundle) {
    let policies: Vec<CiliumPolicy> =
        bundle.cilium_policies.iter().filter(|p| !p.rules.is_empty()).cloned().collect();
    if policies.is_empty() {
        return;
    }
    let printed = print::cilium_policies(&policies);
    let mut again = Sources::default();
    again.add("printed.yaml", printed.as_str());
    let reread = load_sources(&again);
    let before: Vec<_> = policies.iter().map(|p| renumbered(cilium_without_spans(p))).collect();
    let after: Vec<_> =
        reread.cilium_policies.iter().map(|p| renumbered(cilium_without_spans(p))).collect();
    assert_eq!(before, after, "the printed Cilium policies read back differently:\n{printed}");
    if !bundle.has_errors() {
        let rendered: Vec<_> = reread.diagnostics.iter().map(|d| d.render(&again)).collect();
        assert!(!reread.has_errors(), "printed policies have errors:\n{printed}\n{rendered:#?}");
    }
}

/// `policy` with its rules numbered as printing numbers them: the first rule without an
/// index stays `spec`, the others are `specs` from 0 in order, and each list's entries
/// count from 0.
fn renumbered(mut policy: CiliumPolicy) -> CiliumPolicy {
    let mut next = 0;
    for rule in &mut policy.rules {
        if rule.index.is_some() {
            rule.index = Some(next);
            next += 1;
        }
        for list in
            [&mut rule.ingress, &mut rule.ingress_deny, &mut rule.egress, &mut rule.egress_deny]
        {
            for (i, entry) in list.iter_mut().enumerate() {
                entry.index = i;
            }
        }
    }
    policy
}

/// A copy of a Cilium policy with every span cleared.
pub fn cilium_without_spans(policy: &CiliumPolicy) -> CiliumPolicy {
    let mut p = policy.clone();
    p.meta.span = Span::default();
    p.meta.name.span = Span::default();
    for rule in &mut p.rules {
        rule.span = Span::default();
        rule.subject.span = Span::default();
        for entry in rule
            .ingress
            .iter_mut()
            .chain(&mut rule.ingress_deny)
            .chain(&mut rule.egress)
            .chain(&mut rule.egress_deny)
        {
            entry.span = Span::default();
            for peer in entry.peers.iter_mut().flatten() {
                match peer {
                    CiliumPeer::Endpoints(selector) => selector.span = Span::default(),
                    CiliumPeer::Entity(entity) => entity.span = Span::default(),
                    CiliumPeer::Cidr { span, .. } => *span = Span::default(),
                }
            }
            if let Some(l4) = &mut entry.l4 {
                l4.ports.iter_mut().for_each(|p| p.span = Span::default());
                l4.icmps.iter_mut().for_each(|m| m.span = Span::default());
            }
        }
    }
    p
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
