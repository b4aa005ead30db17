//! Label selector semantics and the Kubernetes syntax rules for label keys and values.

use crate::ast::{LabelSelector, Labels, Operator, Requirement};

impl LabelSelector {
    /// Whether `labels` satisfy every `matchLabels` pair and every expression.
    pub fn matches(&self, labels: &Labels) -> bool {
        self.match_labels.iter().all(|(k, v)| labels.get(k) == Some(v))
            && self.match_expressions.iter().all(|r| r.matches(labels))
    }

    /// The empty selector, which selects everything.
    pub fn is_empty(&self) -> bool {
        self.match_labels.is_empty() && self.match_expressions.is_empty()
    }
}

impl Requirement {
    pub fn matches(&self, labels: &Labels) -> bool {
        let value = labels.get(&self.key);
        match self.operator {
            Operator::In => value.is_some_and(|v| self.values.contains(v)),
            // As in Kubernetes, NotIn also matches objects without the key.
            Operator::NotIn => value.is_none_or(|v| !self.values.contains(v)),
            Operator::Exists => value.is_some(),
            Operator::DoesNotExist => value.is_none(),
        }
    }
}

/// Checks a label key: an optional DNS-subdomain prefix and `/`, then a name of at most
/// 63 characters (Kubernetes API conventions, "Labels and Selectors").
pub fn validate_label_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, key),
    };
    if let Some(prefix) = prefix {
        validate_dns_subdomain(prefix).map_err(|e| format!("prefix `{prefix}` {e}"))?;
    }
    if name.is_empty() {
        return Err("name part must not be empty".into());
    }
    validate_label_name(name)
}

/// Checks a label value: empty, or at most 63 characters, alphanumeric at both ends,
/// with `-`, `_` and `.` inside.
pub fn validate_label_value(value: &str) -> Result<(), String> {
    if value.is_empty() {
        return Ok(());
    }
    validate_label_name(value)
}

fn validate_label_name(name: &str) -> Result<(), String> {
    if name.len() > 63 {
        return Err(format!("is {} characters long, at most 63 are allowed", name.len()));
    }
    let bytes = name.as_bytes();
    if !bytes[0].is_ascii_alphanumeric() || !bytes[bytes.len() - 1].is_ascii_alphanumeric() {
        return Err("must begin and end with a letter or digit".into());
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_.".contains(*c))) {
        return Err(format!(
            "contains `{bad}`; only letters, digits, `-`, `_` and `.` are allowed"
        ));
    }
    Ok(())
}

/// RFC 1123 subdomain: at most 253 characters of lowercase DNS labels joined by dots.
pub fn validate_dns_subdomain(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > 253 {
        return Err("must be 1-253 characters".into());
    }
    for label in s.split('.') {
        validate_dns_label(label)?;
    }
    Ok(())
}

/// RFC 1123 label: 1-63 lowercase letters, digits and `-`, alphanumeric at both ends.
/// Namespace names and most object names follow it.
pub fn validate_dns_label(s: &str) -> Result<(), String> {
    let ok_char = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 63 {
        return Err("must be 1-63 characters".into());
    }
    if !ok_char(b[0]) || !ok_char(b[b.len() - 1]) || !b.iter().all(|&c| ok_char(c) || c == b'-') {
        return Err("must consist of lowercase letters, digits and `-`, and begin and end with a letter or digit".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn not_in_matches_objects_without_the_key() {
        let r =
            Requirement { key: "ns".into(), operator: Operator::NotIn, values: vec!["x".into()] };
        assert!(r.matches(&labels(&[])));
        assert!(r.matches(&labels(&[("ns", "y")])));
        assert!(!r.matches(&labels(&[("ns", "x")])));
    }

    #[test]
    fn empty_selector_selects_everything() {
        assert!(LabelSelector::default().matches(&labels(&[("a", "b")])));
        assert!(LabelSelector::default().matches(&labels(&[])));
    }

    #[test]
    fn label_keys_follow_kubernetes_rules() {
        assert!(validate_label_key("app").is_ok());
        assert!(validate_label_key("kubernetes.io/metadata.name").is_ok());
        assert!(validate_label_key("Example.com/x").is_err());
        assert!(validate_label_key("-app").is_err());
        assert!(validate_label_key("a/b/c").is_err());
        assert!(validate_label_key(&"a".repeat(64)).is_err());
        assert!(validate_label_value("").is_ok());
        assert!(validate_label_value("v1.2_3-x").is_ok());
        assert!(validate_label_value("has space").is_err());
    }
}
