//! The identity lock file: identity numbers a GitOps repository commits, so that a
//! recompile after a small change keeps every existing number and the artifact diff
//! stays small.
//!
//! The format is line based, sorted and diff friendly:
//!
//! ```text
//! # policyc identity lock (format 1): commit this file with your policies.
//! 256 io.kubernetes.pod.namespace=shop,app=cart
//! retired 257 io.kubernetes.pod.namespace=shop,app=old
//! ```
//!
//! A live line keeps its number as long as a pod has exactly those identity labels. When
//! no pod has them any more, the line becomes `retired`: its number is not handed out
//! again while the line exists, so a peer still holding the old number (a conntrack
//! entry, a node that has not applied the new artifact) is never mistaken for a new
//! workload. New label sets take numbers above every number the file mentions.
//! Deleting retired lines by hand (or `--prune-retired`) releases their numbers.

use std::collections::BTreeMap;

use policy_lang::ast::Labels;

use crate::identity::FIRST_POD_IDENTITY;

const HEADER: &str = "# policyc identity lock (format 1): commit this file with your policies.";

/// A parsed lock file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Lock {
    pub live: BTreeMap<Labels, u32>,
    pub retired: BTreeMap<u32, Labels>,
}

/// A lock file line that cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("identity lock line {line}: {message}")]
pub struct LockError {
    pub line: usize,
    pub message: String,
}

impl Lock {
    pub fn parse(text: &str) -> Result<Lock, LockError> {
        let mut lock = Lock::default();
        let mut seen = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String| LockError { line: i + 1, message };
            let (retired, rest) = match line.strip_prefix("retired ") {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let (number, labels) = rest.split_once(' ').unwrap_or((rest, ""));
            let id: u32 =
                number.parse().map_err(|_| err(format!("`{number}` is not an identity number")))?;
            if !(FIRST_POD_IDENTITY..=0x00ff_ffff).contains(&id) {
                return Err(err(format!("{id} is outside the cluster identity range")));
            }
            if let Some(first) = seen.insert(id, i + 1) {
                return Err(err(format!("{id} is listed twice (first on line {first})")));
            }
            let mut set = Labels::new();
            for pair in labels.split(',').filter(|p| !p.is_empty()) {
                let (k, v) = pair
                    .split_once('=')
                    .ok_or_else(|| err(format!("`{pair}` is not key=value")))?;
                set.insert(k.to_owned(), v.to_owned());
            }
            if retired {
                lock.retired.insert(id, set);
            } else if lock.live.insert(set, id).is_some() {
                return Err(err("the same labels are listed twice".into()));
            }
        }
        Ok(lock)
    }

    /// The file text; the same lock always renders to the same bytes.
    pub fn render(&self) -> String {
        let mut lines: Vec<(u32, String)> = self
            .live
            .iter()
            .map(|(labels, id)| (*id, format!("{id} {}", join(labels))))
            .chain(
                self.retired
                    .iter()
                    .map(|(id, labels)| (*id, format!("retired {id} {}", join(labels)))),
            )
            .collect();
        lines.sort();
        let mut out = String::from(HEADER);
        out.push('\n');
        for (_, line) in lines {
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }

    /// Numbers for `label_sets`: kept from the lock where listed, new ones above every
    /// listed number otherwise (in sorted label order, so the result is deterministic).
    /// Returns the numbering and the updated lock.
    pub fn allocate<'a>(
        &self,
        label_sets: impl IntoIterator<Item = &'a Labels>,
    ) -> (BTreeMap<Labels, u32>, Lock) {
        let wanted: std::collections::BTreeSet<&Labels> = label_sets.into_iter().collect();
        let mut next = self
            .live
            .values()
            .chain(self.retired.keys())
            .max()
            .map_or(FIRST_POD_IDENTITY, |max| max + 1);
        let mut numbering = BTreeMap::new();
        for labels in &wanted {
            let id = match self.live.get(*labels) {
                Some(id) => *id,
                None => {
                    next += 1;
                    next - 1
                }
            };
            numbering.insert((*labels).clone(), id);
        }
        let mut updated = Lock { live: numbering.clone(), retired: self.retired.clone() };
        for (labels, id) in &self.live {
            if !wanted.contains(labels) {
                updated.retired.insert(*id, labels.clone());
            }
        }
        (numbering, updated)
    }
}

fn join(labels: &Labels) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn keeps_numbers_and_retires_without_reuse() {
        let (a, b, c) = (labels(&[("app", "a")]), labels(&[("app", "b")]), labels(&[("app", "c")]));
        let (first, lock) = Lock::default().allocate([&a, &b]);
        assert_eq!((first[&a], first[&b]), (256, 257));

        // b goes away, c arrives: a keeps 256, b's number is retired, c gets a new one.
        let (second, lock) = lock.allocate([&a, &c]);
        assert_eq!(second[&a], 256);
        assert_eq!(second[&c], 258);
        assert_eq!(lock.retired.get(&257), Some(&b));

        // The lock survives a render/parse round trip byte for byte.
        let text = lock.render();
        assert_eq!(Lock::parse(&text).unwrap(), lock);
        assert_eq!(Lock::parse(&text).unwrap().render(), text);

        // b coming back gets a new number; 257 stays retired.
        let (third, _) = lock.allocate([&a, &b, &c]);
        assert_eq!(third[&b], 259);
    }

    #[test]
    fn reports_bad_lines_with_their_number() {
        let err = Lock::parse("# x\n256 app=a\n256 app=b\n").unwrap_err();
        assert_eq!(err.line, 3);
        assert!(Lock::parse("12 app=a").is_err());
        assert!(Lock::parse("300 app").is_err());
    }
}
