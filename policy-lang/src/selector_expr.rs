//! Label selectors written as one string on the command line, in kubectl's syntax:
//! `app=web,tier in (a,b),!legacy`.
//!
//! A selector is a comma-separated list of requirements, all of which must hold:
//!
//! | form | meaning | [`LabelSelector`] |
//! |---|---|---|
//! | `key=v`, `key==v` | the label is `v` | `matchLabels` |
//! | `key!=v` | the label is not `v`, or absent | `NotIn [v]` |
//! | `key in (a,b)` | the label is one of the values | `In` |
//! | `key notin (a,b)` | the label is none of them, or absent | `NotIn` |
//! | `key` | the label is present | `Exists` |
//! | `!key` | the label is absent | `DoesNotExist` |
//!
//! Whitespace may surround every token. The empty string is the empty selector, which
//! selects everything, as it does for kubectl.
//!
//! Mistakes are [`Diagnostic`]s with the codes YAML selectors use, and their spans point
//! into the selector string, which the caller registers in [`Sources`] (see
//! [`parse_cli`]) so that rendering underlines the exact column. To report every
//! problem in one run, the string is first cut at the commas outside parentheses and
//! each requirement is parsed on its own: a syntax error stops only its requirement.

use std::collections::btree_map::Entry;

use nom::bytes::complete::{tag, take_while, take_while1};
use nom::combinator::{cut, not, opt};
use nom::error::{ContextError, ErrorKind, ParseError, context};
use nom::sequence::{preceded, terminated};
use nom::{IResult, Offset, Parser};

use crate::ast::{LabelSelector, Operator, Requirement};
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::selector::{validate_label_key, validate_label_value};
use crate::source::{FileId, Sources, Span};

/// The name under which [`parse_cli`] registers the selector string in [`Sources`].
pub const SOURCE_NAME: &str = "<selector>";

const SYNTAX_HELP: &str = "write requirements such as `app=web`, `tier in (a,b)` or `!legacy`, \
                           separated by commas";

/// Registers `text` in `sources` as [`SOURCE_NAME`] and parses it with [`parse`].
pub fn parse_cli(sources: &mut Sources, text: &str) -> Result<LabelSelector, Vec<Diagnostic>> {
    let file = sources.add(SOURCE_NAME, text);
    parse(text, file)
}

/// Parses a selector expression. `file` must hold exactly `text`: the spans of the
/// selector and of every diagnostic point into it. On error, every problem found is
/// returned, at least one.
pub fn parse(text: &str, file: FileId) -> Result<LabelSelector, Vec<Diagnostic>> {
    let mut diags = Vec::new();
    let mut out =
        LabelSelector { span: span(text, file, 0, text.len()), ..LabelSelector::default() };
    if text.trim().is_empty() {
        return Ok(out);
    }

    for chunk in split_requirements(text) {
        let Some(raw) = parse_requirement(text, chunk, file, &mut diags) else { continue };
        validate(text, file, &raw, &mut diags);
        add_requirement(&mut out, raw);
    }

    out.match_expressions.sort();
    out.match_expressions.dedup();
    if diags.is_empty() { Ok(out) } else { Err(diags) }
}

/// Prints a selector in the syntax [`parse`] reads; parsing the result gives the same
/// selector back (apart from spans) for any selector that passed validation.
pub fn to_expr(selector: &LabelSelector) -> String {
    let set = |values: &[String]| {
        // `()` is an empty set, which kubectl and this parser reject; `(,)` is the set
        // holding only the empty value.
        if values.len() == 1 && values[0].is_empty() { ",".to_owned() } else { values.join(",") }
    };
    let labels = selector.match_labels.iter().map(|(k, v)| format!("{k}={v}"));
    let expressions = selector.match_expressions.iter().map(|r| match r.operator {
        Operator::In => format!("{} in ({})", r.key, set(&r.values)),
        Operator::NotIn if r.values.len() == 1 => format!("{}!={}", r.key, r.values[0]),
        Operator::NotIn => format!("{} notin ({})", r.key, set(&r.values)),
        Operator::Exists => r.key.clone(),
        Operator::DoesNotExist => format!("!{}", r.key),
    });
    labels.chain(expressions).collect::<Vec<_>>().join(",")
}

/// The operator as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum RawOp {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    DoesNotExist,
}

/// One requirement as written; every `&str` is a slice of the whole selector string,
/// so its position gives the span.
#[derive(Debug)]
struct RawRequirement<'a> {
    key: &'a str,
    op: RawOp,
    /// The operator token, or the key for `Exists`.
    op_token: &'a str,
    values: Vec<&'a str>,
}

/// A syntax error: where, and what the parser expected there.
#[derive(Debug)]
struct SyntaxError<'a> {
    at: &'a str,
    expected: Option<&'static str>,
}

impl<'a> ParseError<&'a str> for SyntaxError<'a> {
    fn from_error_kind(input: &'a str, _kind: ErrorKind) -> Self {
        SyntaxError { at: input, expected: None }
    }

    fn append(_input: &'a str, _kind: ErrorKind, other: Self) -> Self {
        other
    }
}

impl<'a> ContextError<&'a str> for SyntaxError<'a> {
    /// The innermost context names the expectation best; the position stays where the
    /// failing parser stood.
    fn add_context(_input: &'a str, ctx: &'static str, other: Self) -> Self {
        SyntaxError { expected: other.expected.or(Some(ctx)), ..other }
    }
}

type PResult<'a, T> = IResult<&'a str, T, SyntaxError<'a>>;

/// Characters of keys and values: everything but whitespace and the punctuation of the
/// syntax. Anything else a key or value may not hold is left to validation, which
/// names the offending character.
fn is_word_char(c: char) -> bool {
    !c.is_whitespace() && !matches!(c, ',' | '=' | '!' | '(' | ')')
}

fn ws(i: &str) -> PResult<'_, &str> {
    take_while(char::is_whitespace)(i)
}

fn label_key(i: &str) -> PResult<'_, &str> {
    take_while1(is_word_char)(i)
}

/// A value may be empty: `key=` selects the empty label value, as in kubectl.
fn value(i: &str) -> PResult<'_, &str> {
    take_while(is_word_char)(i)
}

fn requirement(i: &str) -> PResult<'_, RawRequirement<'_>> {
    if let (i, Some(bang)) = opt(bang).parse(i)? {
        let (i, key) = preceded(ws, cut(context("a label key after `!`", label_key))).parse(i)?;
        let raw = RawRequirement { key, op: RawOp::DoesNotExist, op_token: bang, values: vec![] };
        return Ok((i, raw));
    }

    let (i, key) = context("a label key or `!`", label_key).parse(i)?;
    let (after_ws, _) = ws(i)?;

    if let (i, Some(op)) = opt(equality_op).parse(after_ws)? {
        let (i, value) = preceded(ws, value).parse(i)?;
        let raw_op = if op == "!=" { RawOp::NotEquals } else { RawOp::Equals };
        return Ok((i, RawRequirement { key, op: raw_op, op_token: op, values: vec![value] }));
    }

    if let (i, Some(op)) = opt(terminated(set_op, not(label_key))).parse(after_ws)? {
        let (i, values) = preceded(ws, cut(context("`(` after the operator", set))).parse(i)?;
        let raw_op = if op == "in" { RawOp::In } else { RawOp::NotIn };
        return Ok((i, RawRequirement { key, op: raw_op, op_token: op, values }));
    }

    Ok((i, RawRequirement { key, op: RawOp::Exists, op_token: key, values: vec![] }))
}

fn bang(i: &str) -> PResult<'_, &str> {
    tag("!")(i)
}

fn equality_op(i: &str) -> PResult<'_, &str> {
    tag_any(i, &["==", "!=", "="])
}

/// `in` or `notin`; the caller checks that the word ends there.
fn set_op(i: &str) -> PResult<'_, &str> {
    tag_any(i, &["notin", "in"])
}

fn set_separator(i: &str) -> PResult<'_, &str> {
    tag_any(i, &[",", ")"])
}

/// The first of `tags` that `i` starts with.
fn tag_any<'a>(i: &'a str, tags: &[&'static str]) -> PResult<'a, &'a str> {
    for t in tags {
        if let Ok(done) = tag::<_, _, SyntaxError<'_>>(*t)(i) {
            return Ok(done);
        }
    }
    Err(nom::Err::Error(SyntaxError::from_error_kind(i, ErrorKind::Tag)))
}

/// `( v1, v2 )`. The empty set `()` parses to no values, which validation reports with
/// the operator; `(,)` is the set of the empty value, as in kubectl.
fn set(i: &str) -> PResult<'_, Vec<&str>> {
    let (i, _) = tag("(")(i)?;
    let (i, _) = ws(i)?;
    if let (i, Some(_)) = opt(tag(")")).parse(i)? {
        return Ok((i, Vec::new()));
    }
    let mut values = Vec::new();
    let mut i = i;
    loop {
        let (rest, v) = terminated(value, ws).parse(i)?;
        values.push(v);
        let (rest, sep) =
            cut(context("`,` or `)` in the value list", set_separator)).parse(rest)?;
        if sep == ")" {
            return Ok((rest, values));
        }
        i = ws(rest)?.0;
    }
}

/// Cuts `text` at the commas outside parentheses. Each piece keeps its surrounding
/// whitespace, and an unclosed `(` runs to the end of the string.
fn split_requirements(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut depth = 0usize;
    let mut start = 0;
    for (at, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                pieces.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    pieces.push(&text[start..]);
    pieces
}

/// Parses one comma-separated piece, reporting a syntax error at its exact position.
fn parse_requirement<'a>(
    text: &'a str,
    chunk: &'a str,
    file: FileId,
    diags: &mut Vec<Diagnostic>,
) -> Option<RawRequirement<'a>> {
    let (rest, _) = ws(chunk).ok()?;
    let error = match requirement(rest) {
        Ok((rest, raw)) => {
            let (rest, _) = ws(rest).ok()?;
            if rest.is_empty() {
                return Some(raw);
            }
            let expected = if raw.op == RawOp::Exists {
                "an operator (`=`, `==`, `!=`, `in`, `notin`), `,` or the end"
            } else {
                "`,` or the end of the selector"
            };
            SyntaxError { at: rest, expected: Some(expected) }
        }
        Err(nom::Err::Error(e) | nom::Err::Failure(e)) => e,
        // Complete parsers do not ask for more input; this arm only satisfies the type.
        Err(nom::Err::Incomplete(_)) => SyntaxError { at: &chunk[chunk.len()..], expected: None },
    };
    diags.push(syntax_error(text, file, &error));
    None
}

fn syntax_error(text: &str, file: FileId, error: &SyntaxError<'_>) -> Diagnostic {
    let start = text.offset(error.at);
    let expected = error.expected.unwrap_or("a requirement");
    let found = token_at(&text[start..]);
    let (message, len) = if !found.is_empty() {
        (format!("expected {expected}, found `{found}`"), found.len())
    } else if start < text.len() {
        (format!("expected {expected}, found `,`"), 1)
    } else {
        (format!("expected {expected}, found the end of the selector"), 0)
    };
    Diagnostic::new(codes::INVALID_SELECTOR, message)
        .at(span(text, file, start, start + len), format!("expected {expected}"))
        .help(SYNTAX_HELP)
}

/// The token starting `rest`, for "found ...": a word, or one other character.
fn token_at(rest: &str) -> &str {
    let word = rest.find(|c: char| !is_word_char(c)).unwrap_or(rest.len());
    if word > 0 {
        return &rest[..word];
    }
    match rest.chars().next() {
        Some(c) if c != ',' => &rest[..c.len_utf8()],
        _ => "",
    }
}

/// The help lines of the YAML front end for the same mistakes.
const KEY_HELP: &str =
    "a key is an optional DNS prefix and `/`, then up to 63 letters, digits, `-`, `_` or `.`";
const VALUE_HELP: &str =
    "a value is empty, or up to 63 letters, digits, `-`, `_` or `.`, alphanumeric at both ends";

fn validate(text: &str, file: FileId, raw: &RawRequirement<'_>, diags: &mut Vec<Diagnostic>) {
    let at = |token: &str| {
        let start = text.offset(token);
        span(text, file, start, start + token.len())
    };
    if let Err(e) = validate_label_key(raw.key) {
        let message = format!("label key `{}` is invalid", raw.key);
        diags.push(
            Diagnostic::new(codes::INVALID_LABEL_KEY, message).at(at(raw.key), e).help(KEY_HELP),
        );
    }
    for value in &raw.values {
        if let Err(e) = validate_label_value(value) {
            let message = format!("label value `{value}` is invalid");
            diags.push(
                Diagnostic::new(codes::INVALID_LABEL_VALUE, message)
                    .at(at(value), e)
                    .help(VALUE_HELP),
            );
        }
    }
    if matches!(raw.op, RawOp::In | RawOp::NotIn) && raw.values.is_empty() {
        diags.push(
            Diagnostic::new(
                codes::INVALID_SELECTOR,
                format!("operator {} needs at least one value", raw.op_token),
            )
            .at(at(raw.op_token), "the set `()` is empty")
            .help("list the values inside the parentheses, such as `in (a,b)`"),
        );
    }
}

fn add_requirement(out: &mut LabelSelector, raw: RawRequirement<'_>) {
    let key = raw.key.to_owned();
    let mut values: Vec<String> = raw.values.iter().map(|v| (*v).to_owned()).collect();
    values.sort();
    values.dedup();
    let operator = match raw.op {
        RawOp::Equals => {
            let value = values.pop().unwrap_or_default();
            match out.match_labels.entry(key) {
                Entry::Vacant(slot) => {
                    slot.insert(value);
                }
                Entry::Occupied(slot) if *slot.get() == value => {}
                // `a=b,a=c` asks for both, which matchLabels cannot hold; as an
                // expression the selector keeps its meaning (it selects nothing).
                Entry::Occupied(slot) => out.match_expressions.push(Requirement {
                    key: slot.key().clone(),
                    operator: Operator::In,
                    values: vec![value],
                }),
            }
            return;
        }
        RawOp::NotEquals | RawOp::NotIn => Operator::NotIn,
        RawOp::In => Operator::In,
        RawOp::Exists => Operator::Exists,
        RawOp::DoesNotExist => Operator::DoesNotExist,
    };
    out.match_expressions.push(Requirement { key, operator, values });
}

/// The span of `text[start..end]`: line and column of the start, and the length in
/// characters up to the end or the end of the line, whichever comes first.
fn span(text: &str, file: FileId, start: usize, end: usize) -> Span {
    let before = &text[..start];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |p| p + 1);
    let col = text[line_start..start].chars().count() + 1;
    let len = text[start..end].chars().take_while(|&c| c != '\n').count();
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    Span { file, line: n(line), col: n(col), len: n(len) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ast::Labels;

    fn parsed(text: &str) -> LabelSelector {
        let mut selector = parse(text, FileId(0))
            .unwrap_or_else(|diags| panic!("`{text}` was rejected: {diags:#?}"));
        selector.span = Span::default();
        selector
    }

    /// Code, column and length of every diagnostic.
    fn errors(text: &str) -> Vec<(&'static str, u32, u32)> {
        let diags = parse(text, FileId(0)).expect_err(text);
        diags.iter().map(|d| (d.code.code, d.span.unwrap().col, d.span.unwrap().len)).collect()
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn req(key: &str, operator: Operator, values: &[&str]) -> Requirement {
        Requirement {
            key: key.into(),
            operator,
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn reads_the_kubectl_example_with_any_spacing() {
        let expected = LabelSelector {
            match_labels: labels(&[("app", "web")]),
            match_expressions: vec![
                req("legacy", Operator::DoesNotExist, &[]),
                req("tier", Operator::In, &["a", "b"]),
            ],
            span: Span::default(),
        };
        assert_eq!(parsed("app=web,tier in (a,b),!legacy"), expected);
        assert_eq!(parsed("  app = web ,\ttier in( b , a ,b ) , ! legacy  "), expected);
    }

    #[test]
    fn reads_every_operator() {
        assert_eq!(parsed("app==web").match_labels, labels(&[("app", "web")]));
        assert_eq!(parsed("env!=prod").match_expressions, [req("env", Operator::NotIn, &["prod"])]);
        assert_eq!(
            parsed("env notin (b,a)").match_expressions,
            [req("env", Operator::NotIn, &["a", "b"])]
        );
        assert_eq!(parsed("gpu").match_expressions, [req("gpu", Operator::Exists, &[])]);
        assert_eq!(parsed("!gpu").match_expressions, [req("gpu", Operator::DoesNotExist, &[])]);
        assert_eq!(
            parsed("kubernetes.io/metadata.name=kube-system").match_labels,
            labels(&[("kubernetes.io/metadata.name", "kube-system")])
        );
    }

    #[test]
    fn accepts_empty_values_and_the_empty_selector() {
        assert_eq!(parsed(""), LabelSelector::default());
        assert_eq!(parsed("   "), LabelSelector::default());
        assert_eq!(parsed("app=").match_labels, labels(&[("app", "")]));
        assert_eq!(parsed("app in (,)").match_expressions, [req("app", Operator::In, &[""])]);
        assert_eq!(parsed("app in (,x)").match_expressions, [req("app", Operator::In, &["", "x"])]);
    }

    #[test]
    fn operator_words_are_keys_where_a_key_stands() {
        assert_eq!(parsed("in").match_expressions, [req("in", Operator::Exists, &[])]);
        assert_eq!(parsed("in in (in)").match_expressions, [req("in", Operator::In, &["in"])]);
        assert_eq!(parsed("notin=in").match_labels, labels(&[("notin", "in")]));
        assert_eq!(parsed("a in(x)").match_expressions, [req("a", Operator::In, &["x"])]);
    }

    #[test]
    fn keeps_conflicting_equalities_as_an_expression() {
        let s = parsed("a=b,a=c,a=b");
        assert_eq!(s.match_labels, labels(&[("a", "b")]));
        assert_eq!(s.match_expressions, [req("a", Operator::In, &["c"])]);
    }

    #[test]
    fn spans_the_whole_string() {
        let s = parse("app=web", FileId(3)).unwrap();
        assert_eq!(s.span, Span { file: FileId(3), line: 1, col: 1, len: 7 });
    }

    #[test]
    fn rejects_a_missing_operator_at_the_word_after_the_key() {
        assert_eq!(errors("app web"), [("PL0011", 5, 3)]);
    }

    #[test]
    fn rejects_a_value_list_without_a_comma() {
        assert_eq!(errors("app=web,tier in (a b)"), [("PL0011", 20, 1)]);
    }

    #[test]
    fn rejects_a_set_operator_without_parentheses() {
        assert_eq!(errors("tier in a"), [("PL0011", 9, 1)]);
        assert_eq!(errors("tier in (a"), [("PL0011", 11, 0)]);
    }

    #[test]
    fn rejects_an_empty_set_at_its_operator() {
        assert_eq!(errors("tier notin ( )"), [("PL0011", 6, 5)]);
    }

    #[test]
    fn rejects_a_bang_without_a_key() {
        let diags = parse("!", FileId(0)).unwrap_err();
        assert_eq!(
            diags[0].message,
            "expected a label key after `!`, found the end of the selector"
        );
        assert_eq!(diags[0].span.unwrap().col, 2);
        assert_eq!(errors("! =x"), [("PL0011", 3, 1)]);
    }

    #[test]
    fn rejects_empty_requirements_between_commas() {
        assert_eq!(errors(",a=b"), [("PL0011", 1, 1)]);
        assert_eq!(errors("a=b,"), [("PL0011", 5, 0)]);
        assert_eq!(errors("a=b, ,c"), [("PL0011", 6, 1)]);
    }

    #[test]
    fn rejects_stray_characters_after_a_requirement() {
        assert_eq!(errors("a=b)"), [("PL0011", 4, 1)]);
        assert_eq!(errors("a!b"), [("PL0011", 2, 1)]);
        assert_eq!(errors("a = b c"), [("PL0011", 7, 1)]);
    }

    #[test]
    fn rejects_invalid_keys_and_values_at_their_columns() {
        assert_eq!(errors("-app=x"), [("PL0009", 1, 4)]);
        assert_eq!(errors("app=-web"), [("PL0010", 5, 4)]);
        assert_eq!(errors("app in (ok, b@d)"), [("PL0010", 13, 3)]);
        assert_eq!(errors("Example.com/x"), [("PL0009", 1, 13)]);
    }

    #[test]
    fn reports_every_problem_in_one_run() {
        assert_eq!(
            errors("-a=b, c=-d, e f, g in ()"),
            [("PL0009", 1, 2), ("PL0010", 9, 2), ("PL0011", 15, 1), ("PL0011", 20, 2)]
        );
    }

    #[test]
    fn renders_under_the_exact_column() {
        let mut sources = Sources::default();
        let diags = parse_cli(&mut sources, "app=web,tier in (a b)").unwrap_err();
        let rendered = diags[0].render(&sources);
        assert_eq!(
            rendered,
            "error[PL0011]: expected `,` or `)` in the value list, found `b`\n \
             --> <selector>:1:20\n  \
             |\n\
             1 | app=web,tier in (a b)\n  \
             |                    ^ expected `,` or `)` in the value list\n  \
             = help: write requirements such as `app=web`, `tier in (a,b)` or `!legacy`, \
             separated by commas\n"
        );
    }

    #[test]
    fn prints_what_it_parses() {
        assert_eq!(
            to_expr(&parsed(" !legacy, tier in (b,a), app = web ")),
            "app=web,!legacy,tier in (a,b)"
        );
        assert_eq!(to_expr(&parsed("env != prod")), "env!=prod");
        for text in [
            "",
            "app=web,tier in (a,b),!legacy",
            "a=,b in (,),c in (,x),d notin (x,y),e!=,f",
            "a=b,a=c",
            "k8s.io/x=y,in in (in),notin",
        ] {
            let selector = parsed(text);
            assert_eq!(parsed(&to_expr(&selector)), selector, "{text}");
        }
    }
}
