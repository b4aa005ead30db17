//! Typed reads from the generic tree, each reporting a coded diagnostic on mismatch.

use crate::ast::Sp;
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::yaml::{Node, NodeKind};

/// Collects diagnostics while decoders walk one object.
pub(crate) struct Reader<'d> {
    pub diags: &'d mut Vec<Diagnostic>,
}

/// The entries of a mapping whose keys were checked against a schema.
pub(crate) struct Fields<'n> {
    pub node: &'n Node,
    entries: &'n [(Node, Node)],
}

impl<'n> Fields<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(&k.kind, NodeKind::Str(s) if s == key))
            .map(|(_, v)| v)
            .filter(|v| v.kind != NodeKind::Null)
    }

    /// The key node of `key`, for diagnostics about the field itself.
    pub fn key(&self, key: &str) -> Option<&'n Node> {
        self.entries
            .iter()
            .find(|(k, _)| matches!(&k.kind, NodeKind::Str(s) if s == key))
            .map(|(k, _)| k)
    }
}

impl Reader<'_> {
    pub fn push(&mut self, diag: Diagnostic) {
        self.diags.push(diag);
    }

    fn wrong_type(&mut self, node: &Node, what: &str, expected: &str) {
        self.push(
            Diagnostic::new(
                codes::WRONG_TYPE,
                format!("{what} must be {expected}, found {}", node.kind.describe()),
            )
            .at(node.span, format!("expected {expected}"))
            .help(format!("change the value to {expected}, as the API defines {what}")),
        );
    }

    /// A mapping with only the `known` keys; unknown keys are reported (with a
    /// suggestion when one is close) and otherwise ignored, so the rest still decodes.
    /// `null` reads as an empty mapping, as Kubernetes does.
    pub fn fields<'n>(&mut self, node: &'n Node, what: &str, known: &[&str]) -> Option<Fields<'n>> {
        let entries: &[(Node, Node)] = match &node.kind {
            NodeKind::Map(entries) => entries,
            NodeKind::Null => &[],
            _ => {
                self.wrong_type(node, what, "a mapping");
                return None;
            }
        };
        for (key, _) in entries {
            let Some(name) = key.as_str() else {
                self.wrong_type(key, &format!("a key in {what}"), "a string");
                continue;
            };
            if !known.contains(&name) {
                let mut diag = Diagnostic::new(
                    codes::UNKNOWN_FIELD,
                    format!("unknown field `{name}` in {what}"),
                )
                .at(key.span, "not a field of this object");
                diag = match closest(name, known) {
                    Some(best) => diag.help(format!("did you mean `{best}`?")),
                    None => diag.help(format!("the fields of {what} are: {}", known.join(", "))),
                };
                self.push(diag);
            }
        }
        Some(Fields { node, entries })
    }

    pub fn string(&mut self, node: &Node, what: &str) -> Option<Sp<String>> {
        match &node.kind {
            NodeKind::Str(s) => Some(Sp::new(s.clone(), node.span)),
            _ => {
                self.wrong_type(node, what, "a string");
                None
            }
        }
    }

    pub fn int(&mut self, node: &Node, what: &str) -> Option<Sp<i64>> {
        match &node.kind {
            NodeKind::Int(i) => Some(Sp::new(*i, node.span)),
            _ => {
                self.wrong_type(node, what, "an integer");
                None
            }
        }
    }

    /// A list; `null` reads as empty.
    pub fn list<'n>(&mut self, node: &'n Node, what: &str) -> &'n [Node] {
        match &node.kind {
            NodeKind::Seq(items) => items,
            NodeKind::Null => &[],
            _ => {
                self.wrong_type(node, what, "a list");
                &[]
            }
        }
    }

    /// A mapping of strings to strings, such as labels.
    pub fn string_map(&mut self, node: &Node, what: &str) -> Vec<(Sp<String>, Sp<String>)> {
        let entries: &[(Node, Node)] = match &node.kind {
            NodeKind::Map(entries) => entries,
            NodeKind::Null => &[],
            _ => {
                self.wrong_type(node, what, "a mapping of strings");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (key, value) in entries {
            let key = self.string(key, &format!("a key of {what}"));
            // Kubernetes label values are strings; `null` means the empty value.
            let value = match &value.kind {
                NodeKind::Null => Some(Sp::new(String::new(), value.span)),
                _ => self.string(value, &format!("a value of {what}")),
            };
            if let (Some(key), Some(value)) = (key, value) {
                out.push((key, value));
            }
        }
        out
    }
}

/// The known name closest to `name` by edit distance, if it is close enough to be a
/// likely typo.
fn closest<'k>(name: &str, known: &[&'k str]) -> Option<&'k str> {
    known
        .iter()
        .map(|k| (edit_distance(&name.to_ascii_lowercase(), &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(1))
        .min()
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_the_field_a_typo_meant() {
        assert_eq!(closest("podSelecter", &["podSelector", "ingress"]), Some("podSelector"));
        assert_eq!(closest("ingres", &["podSelector", "ingress"]), Some("ingress"));
        assert_eq!(closest("zzz", &["podSelector", "ingress"]), None);
    }
}
