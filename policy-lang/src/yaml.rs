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

/// The parser's safety budget. Real manifests nest about 15 deep (a CronJob's container
/// ports) and never need aliases to expand much, while a kubectl export of a large
/// cluster has millions of nodes and Helm renders whole charts into one multi-document
/// stream. So: a shallow depth limit, which also bounds the stack the recursive decoder
/// uses, a small alias-replay budget against "billion laughs" files, and node, event
/// and document counts sized for big exports. docs/diagnostics.md (PL0001) states these
/// numbers, and its test checks that it states these.
pub mod budget {
    /// Collections nested inside each other.
    pub const MAX_DEPTH: usize = 32;
    /// Documents in one file.
    pub const MAX_DOCUMENTS: usize = 1_000_000;
    /// Nodes (mappings, sequences and scalars) in one file.
    pub const MAX_NODES: usize = 50_000_000;
    /// Parser events in one file: about one per node, plus one at each collection's end.
    pub const MAX_EVENTS: usize = 100_000_000;
    /// Alias uses (`*name`) in one file, serde-saphyr's default, kept as it is.
    pub const MAX_ALIASES: usize = 50_000;
    /// Events that alias uses may replay in all: what an alias bomb multiplies.
    pub const MAX_REPLAYED_EVENTS: usize = 100_000;
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
        // See [`budget`] for the reasons of each number.
        budget: serde_saphyr::budget! {
            max_depth: budget::MAX_DEPTH,
            max_nodes: budget::MAX_NODES,
            max_events: budget::MAX_EVENTS,
            max_documents: budget::MAX_DOCUMENTS,
            max_aliases: budget::MAX_ALIASES,
            // serde-saphyr also refuses a file once it has 100 aliases and more than ten
            // per anchor. Replays are bounded by MAX_REPLAYED_EVENTS whatever the ratio,
            // so that heuristic adds no safety, and it refused plain files that reuse
            // one anchor for the labels of many objects.
            enforce_alias_anchor_ratio: false,
        },
        alias_limits: serde_saphyr::alias_limits! {
            max_total_replayed_events: budget::MAX_REPLAYED_EVENTS,
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
    // serde-saphyr names the breach by its `BudgetBreach` variant.
    let limit = if message.contains("Depth") {
        format!("the document nests deeper than {} levels", budget::MAX_DEPTH)
    } else if message.contains("Documents") {
        format!("the file has more than {} documents", grouped(budget::MAX_DOCUMENTS))
    } else if message.contains("Nodes") {
        format!("the file has more than {} nodes", grouped(budget::MAX_NODES))
    } else if message.contains("Events") {
        format!("the file has more than {} parser events", grouped(budget::MAX_EVENTS))
    } else if message.contains("Aliases") {
        format!("the file uses more than {} aliases", grouped(budget::MAX_ALIASES))
    } else {
        "the file exceeds a parser limit".to_owned()
    };
    format!("{limit} ({message})")
}

/// `1000000` as `1,000,000`, as docs/diagnostics.md writes numbers.
pub fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
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

    #[test]
    fn one_anchor_may_be_reused_for_many_objects() {
        let mut text = String::from("common: &labels {app: web}\npods:\n");
        for i in 0..500 {
            text.push_str(&format!("  - name: p{i}\n    labels: *labels\n"));
        }
        let docs = parse_documents(&text, FileId(0)).expect("500 uses of one anchor parse");
        let NodeKind::Seq(pods) = &docs[0].get("pods").unwrap().kind else { panic!("a list") };
        assert_eq!(
            pods[499].get("labels").and_then(|l| l.get("app")).unwrap().as_str(),
            Some("web")
        );
    }

    #[test]
    fn more_aliases_than_the_budget_is_a_diagnostic() {
        let aliases = vec!["*a"; budget::MAX_ALIASES + 1].join(",");
        let text = format!("a: &a x\nb: [{aliases}]\n");
        let diag = parse_documents(&text, FileId(0)).unwrap_err();
        assert!(diag.message.contains("more than 50,000 aliases"), "{}", diag.message);
    }

    #[test]
    fn budget_numbers_are_written_with_thousands_separators() {
        assert_eq!(grouped(32), "32");
        assert_eq!(grouped(50_000), "50,000");
        assert_eq!(grouped(1_000_000), "1,000,000");
        assert_eq!(grouped(100_000_000), "100,000,000");
    }
}
