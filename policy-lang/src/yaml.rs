//! YAML (and JSON, which is YAML) to a generic tree whose every node carries its span.
//!
//! Decoding manifests from a generic tree, rather than deserialising straight into
//! typed structs, is what lets one run report every problem: a wrong type in one field
//! becomes one diagnostic and the rest of the object is still checked. serde-saphyr
//! gives each node its line, column and length through `Spanned`, and guards against
//! alias-expansion bombs with its parse budget.

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::source::{FileId, Span};

/// A YAML node and where it stands.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum NodeKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Node>),
    /// Entries in source order. Duplicate keys are rejected by the parser.
    Map(Vec<(Node, Node)>),
}

impl NodeKind {
    /// How a diagnostic names this kind of value.
    pub fn describe(&self) -> &'static str {
        match self {
            NodeKind::Null => "null",
            NodeKind::Bool(_) => "a boolean",
            NodeKind::Int(_) => "an integer",
            NodeKind::Float(_) => "a number",
            NodeKind::Str(_) => "a string",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The value of `key` if this is a mapping that has it.
    pub fn get(&self, key: &str) -> Option<&Node> {
        match &self.kind {
            NodeKind::Map(entries) => entries
                .iter()
                .find(|(k, _)| matches!(&k.kind, NodeKind::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The node type as serde-saphyr fills it; converted to [`Node`] with the file id.
#[derive(Debug)]
enum RawKind {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Seq(Vec<Spanned<RawKind>>),
    Map(Vec<(Spanned<RawKind>, Spanned<RawKind>)>),
}

impl<'de> Deserialize<'de> for RawKind {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct RawVisitor;

        impl<'de> Visitor<'de> for RawVisitor {
            type Value = RawKind;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_unit<E>(self) -> Result<RawKind, E> {
                Ok(RawKind::Null)
            }
            fn visit_none<E>(self) -> Result<RawKind, E> {
                Ok(RawKind::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<RawKind, E> {
                Ok(RawKind::Bool(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawKind, E> {
                Ok(RawKind::Int(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawKind, E> {
                // Integers beyond i64 are out of range for every field we read; keeping
                // them as a float still lets range checks report them.
                Ok(i64::try_from(v).map_or(RawKind::Float(v as f64), RawKind::Int))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawKind, E> {
                Ok(RawKind::Float(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawKind, E> {
                Ok(RawKind::Str(v.to_owned()))
            }
            fn visit_string<E>(self, v: String) -> Result<RawKind, E> {
                Ok(RawKind::Str(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawKind, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(RawKind::Seq(items))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKind, A::Error> {
                let mut entries = Vec::new();
                while let Some(key) = map.next_key()? {
                    entries.push((key, map.next_value()?));
                }
                Ok(RawKind::Map(entries))
            }
        }

        deserializer.deserialize_any(RawVisitor)
    }
}

fn convert(raw: Spanned<RawKind>, file: FileId) -> Node {
    let span = span_of(&raw.referenced, file);
    let kind = match raw.value {
        RawKind::Null => NodeKind::Null,
        RawKind::Bool(b) => NodeKind::Bool(b),
        RawKind::Int(i) => NodeKind::Int(i),
        RawKind::Float(f) => NodeKind::Float(f),
        RawKind::Str(s) => NodeKind::Str(s),
        RawKind::Seq(items) => NodeKind::Seq(items.into_iter().map(|n| convert(n, file)).collect()),
        RawKind::Map(entries) => NodeKind::Map(
            entries.into_iter().map(|(k, v)| (convert(k, file), convert(v, file))).collect(),
        ),
    };
    Node { kind, span }
}

fn span_of(location: &serde_saphyr::Location, file: FileId) -> Span {
    Span {
        file,
        line: u32::try_from(location.line()).unwrap_or(u32::MAX),
        col: u32::try_from(location.column()).unwrap_or(u32::MAX),
        len: u32::try_from(location.span().len()).unwrap_or(0),
    }
}

/// Parses every document of a file. A syntax error anywhere fails the whole file with
/// one diagnostic at the parser's position: the YAML parser cannot resynchronise, and a
/// half-read file would silently lose objects.
#[expect(
    clippy::result_large_err,
    reason = "at most one error per file, moved once; boxing would only add noise"
)]
pub fn parse_documents(text: &str, file: FileId) -> Result<Vec<Node>, Diagnostic> {
    let options = serde_saphyr::options! {
        // `yes`, `on` and `y` stay strings, as in YAML 1.2 and JSON: a label value
        // `on` must not turn into `true`.
        strict_booleans: true,
        // Real manifests nest about 15 deep (a CronJob's container ports) and never
        // need aliases to expand much, while a kubectl export of a large cluster has
        // millions of nodes. So: a shallow depth limit, which also bounds the stack the
        // recursive decoder uses, a small alias-replay budget against "billion laughs"
        // files, and node and event counts sized for big exports.
        budget: serde_saphyr::budget! {
            max_depth: 32,
            max_nodes: 50_000_000,
            max_events: 100_000_000,
            // Helm and kustomize render whole charts into one multi-document stream.
            max_documents: 1_000_000,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: 100_000,
        },
    };
    match serde_saphyr::from_multiple_with_options::<Spanned<RawKind>>(text, options) {
        Ok(docs) => Ok(docs.into_iter().map(|d| convert(d, file)).collect()),
        Err(err) => {
            let span = err.location().map(|l| span_of(&l, file));
            let message = describe(&err);
            // Limits such as the alias-expansion budget are reported without a position;
            // the start of the file is then the most precise place we have.
            let (span, label) = match span.filter(|s| s.line > 0) {
                Some(span) => (span, "the parser stopped here"),
                None => (crate::Span { file, line: 1, col: 1, len: 0 }, "in this file"),
            };
            Err(Diagnostic::new(codes::YAML_SYNTAX, format!("cannot parse: {message}"))
                .at(span, label)
                .help("fix the YAML here; no object of this file was read"))
        }
    }
}

/// The parser's message, with its budget breaches said in words.
fn describe(err: &serde_saphyr::Error) -> String {
    let message = first_line(&err.to_string());
    if !message.contains("budget") {
        return message;
    }
    let limit = if message.contains("Depth") {
        "the document nests deeper than 32 levels"
    } else if message.contains("Documents") {
        "the file has too many documents"
    } else if message.contains("Nodes") || message.contains("Events") {
        "the document has too many nodes"
    } else if message.contains("lias") || message.contains("eplay") {
        "aliases expand to too much data (an alias bomb?)"
    } else {
        "the document exceeds a parser limit"
    };
    format!("{limit} ({message})")
}

/// serde-saphyr's messages may carry a source excerpt after the first line; the
/// renderer shows its own excerpt, so keep only the sentence.
fn first_line(message: &str) -> String {
    let mut line = message.lines().next().unwrap_or(message).trim();
    line = line.strip_prefix("error:").unwrap_or(line).trim_start();
    // "line 2 column 2: illegal ..." repeats what the span already says.
    if let Some(rest) = line.strip_prefix("line ")
        && let Some((_, after)) = rest.split_once(": ")
    {
        line = after;
    }
    line.trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rendered_chart_of_thousands_of_documents_is_read_whole() {
        let text: String =
            (0..3000).map(|i| format!("---\nkind: Pod\nmetadata:\n  name: p{i}\n")).collect();
        let docs = parse_documents(&text, FileId(0)).expect("many documents parse");
        assert_eq!(docs.len(), 3000);
        assert_eq!(
            docs[2999].get("metadata").and_then(|m| m.get("name")).unwrap().span.line,
            12000
        );
    }

    #[test]
    fn nesting_beyond_the_depth_budget_is_a_diagnostic() {
        let text = format!("a: {}1{}\n", "[".repeat(40), "]".repeat(40));
        let diag = parse_documents(&text, FileId(0)).unwrap_err();
        assert_eq!(diag.code.code, "PL0001");
        assert!(diag.message.contains("deeper than 32"), "{}", diag.message);
    }
}
