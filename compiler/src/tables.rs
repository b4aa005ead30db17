//! Policy tables: from (peer, protocol, port) patterns with verdicts to the exact keys
//! the datapath looks up.
//!
//! The datapath takes the first present key in a fixed order of rank (see
//! `PolicyKey::rank`) and never compares values. For that to give the right verdict the
//! compiler must store, at every key a flow can stop at, the verdict of *all* rules that
//! cover that key. This module does that fold:
//!
//! - every rule's own pattern becomes a key whose value is "deny if any deny rule covers
//!   it, else allow";
//! - for every allow pattern A and deny pattern D that overlap, the intersection A∩D is
//!   added too. Without it a flow in A∩D could stop at A (ranked before D) and be
//!   allowed. With it, the flow's first present key is at least as specific as A∩D,
//!   and every key inside D carries deny.
//!
//! Patterns are closed under intersection (each dimension is "one value" or "any"), so
//! the added keys are ordinary keys. Kubernetes NetworkPolicy only allows, and then no
//! key is added.

use std::collections::BTreeMap;

use datapath::{PolicyKey, PolicyValue, VERDICT_ALLOW, VERDICT_DENY};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Allow,
    Deny,
}

/// A set of flows of one direction: peer identity (0: any), IP protocol (0: any), and a
/// destination port or ICMP type (`None`: any; only with a protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pattern {
    pub identity: u32,
    pub proto: u8,
    pub port: Option<u16>,
}

impl Pattern {
    fn intersect(&self, other: &Pattern) -> Option<Pattern> {
        fn meet<T: PartialEq + Copy>(a: T, b: T, any: T) -> Option<T> {
            if a == any {
                Some(b)
            } else if b == any || a == b {
                Some(a)
            } else {
                None
            }
        }
        let port = match (self.port, other.port) {
            (None, p) | (p, None) => p,
            (Some(a), Some(b)) if a == b => Some(a),
            _ => return None,
        };
        Some(Pattern {
            identity: meet(self.identity, other.identity, 0)?,
            proto: meet(self.proto, other.proto, 0)?,
            port,
        })
    }

    #[cfg(test)]
    fn covers(&self, other: &Pattern) -> bool {
        self.intersect(other).as_ref() == Some(other)
    }

    pub fn key(&self, table: u32) -> PolicyKey {
        PolicyKey {
            table,
            identity: self.identity,
            proto: self.proto,
            has_port: u8::from(self.port.is_some()),
            port: self.port.unwrap_or(0),
        }
    }
}

/// A rule's contribution: its flows, its verdict and its provenance cookie.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub pattern: Pattern,
    pub verdict: Verdict,
    pub cookie: u32,
}

/// The keys and values of one table, ready for the datapath.
pub type Table = BTreeMap<Pattern, PolicyValue>;

/// Folds rule entries into a table; see the module documentation.
///
/// Cost: the rules covering a key are among its at most eight generalisations (each of
/// identity, protocol and port either kept or made "any"), so each key is decided by
/// eight map lookups rather than a scan of every entry.
pub fn fold(entries: &[Entry]) -> Table {
    // Per pattern: the lowest allow cookie and the lowest deny cookie naming it.
    let mut own: BTreeMap<Pattern, (Option<u32>, Option<u32>)> = BTreeMap::new();
    for e in entries {
        let slot = own.entry(e.pattern).or_default();
        let cookie = match e.verdict {
            Verdict::Allow => &mut slot.0,
            Verdict::Deny => &mut slot.1,
        };
        *cookie = Some(cookie.map_or(e.cookie, |c| c.min(e.cookie)));
    }
    let denies: Vec<Pattern> = own.iter().filter(|(_, v)| v.1.is_some()).map(|(p, _)| *p).collect();
    let mut keys: Vec<Pattern> = own.keys().copied().collect();
    if !denies.is_empty() {
        for allow in own.iter().filter(|(_, v)| v.0.is_some()).map(|(p, _)| *p) {
            keys.extend(denies.iter().filter_map(|deny| allow.intersect(deny)));
        }
        keys.sort();
        keys.dedup();
    }

    keys.into_iter()
        .map(|key| {
            let (mut allow, mut deny) = (None::<u32>, None::<u32>);
            for general in generalisations(&key) {
                if let Some((a, d)) = own.get(&general) {
                    allow = min_some(allow, *a);
                    deny = min_some(deny, *d);
                }
            }
            // Deny wins; among equals the lowest cookie is named, deterministically.
            let (verdict, rule) = match (deny, allow) {
                (Some(d), _) => (VERDICT_DENY, d),
                (None, Some(a)) => (VERDICT_ALLOW, a),
                (None, None) => unreachable!("every key comes from, or lies inside, some entry"),
            };
            (key, PolicyValue { verdict, pad: [0; 3], rule })
        })
        .collect()
}

fn min_some(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// Every pattern that covers `key`, `key` itself included.
fn generalisations(key: &Pattern) -> impl Iterator<Item = Pattern> + '_ {
    let identities = [Some(key.identity), (key.identity != 0).then_some(0)];
    identities.into_iter().flatten().flat_map(move |identity| {
        let mut shapes = vec![(key.proto, key.port)];
        if key.port.is_some() {
            shapes.push((key.proto, None));
        }
        if key.proto != 0 {
            shapes.push((0, None));
        }
        shapes.into_iter().map(move |(proto, port)| Pattern { identity, proto, port })
    })
}

/// How the datapath decides a flow against the keys of one table: the first present key
/// in rank order. Used by the simulator and by tests of [`fold`].
pub fn lookup(table: &Table, identity: u32, proto: u8, port: Option<u16>) -> Option<PolicyValue> {
    let mut candidates = Vec::with_capacity(6);
    for id in [identity, 0] {
        if let Some(port) = port {
            candidates.push(Pattern { identity: id, proto, port: Some(port) });
        }
        candidates.push(Pattern { identity: id, proto, port: None });
        candidates.push(Pattern { identity: id, proto: 0, port: None });
    }
    candidates.iter().find_map(|c| table.get(c).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(identity: u32, proto: u8, port: Option<u16>) -> Pattern {
        Pattern { identity, proto, port }
    }

    fn e(pattern: Pattern, verdict: Verdict, cookie: u32) -> Entry {
        Entry { pattern, verdict, cookie }
    }

    /// The verdict the rules mean, computed without tables.
    fn meaning(entries: &[Entry], flow: Pattern) -> Option<Verdict> {
        let matching: Vec<_> = entries.iter().filter(|e| e.pattern.covers(&flow)).collect();
        if matching.iter().any(|e| e.verdict == Verdict::Deny) {
            Some(Verdict::Deny)
        } else if matching.is_empty() {
            None
        } else {
            Some(Verdict::Allow)
        }
    }

    fn check_all_flows(entries: &[Entry]) {
        let table = fold(entries);
        for identity in [5, 6, 7] {
            for proto in [6, 17, 1] {
                for port in [80, 81, 443] {
                    let flow = p(identity, proto, Some(port));
                    let got = lookup(&table, identity, proto, Some(port)).map(|v| {
                        if v.verdict == VERDICT_DENY { Verdict::Deny } else { Verdict::Allow }
                    });
                    assert_eq!(got, meaning(entries, flow), "flow {flow:?} with {entries:?}");
                }
            }
        }
    }

    #[test]
    fn deny_of_a_port_beats_an_allow_of_the_whole_identity() {
        // allow everything from 5; deny TCP/80 from anyone.
        let entries = [e(p(5, 0, None), Verdict::Allow, 1), e(p(0, 6, Some(80)), Verdict::Deny, 2)];
        let table = fold(&entries);
        assert_eq!(lookup(&table, 5, 6, Some(80)).unwrap().verdict, VERDICT_DENY);
        assert_eq!(lookup(&table, 5, 6, Some(81)).unwrap().verdict, VERDICT_ALLOW);
        check_all_flows(&entries);
    }

    #[test]
    fn allow_only_tables_add_no_keys() {
        let entries =
            [e(p(5, 0, None), Verdict::Allow, 1), e(p(0, 6, Some(80)), Verdict::Allow, 2)];
        assert_eq!(fold(&entries).len(), 2);
        check_all_flows(&entries);
    }

    #[test]
    fn mixed_rules_agree_with_their_meaning_on_every_flow() {
        let entries = [
            e(p(5, 6, None), Verdict::Allow, 1),
            e(p(0, 0, None), Verdict::Allow, 2),
            e(p(6, 0, None), Verdict::Deny, 3),
            e(p(0, 17, Some(81)), Verdict::Deny, 4),
            e(p(7, 6, Some(443)), Verdict::Allow, 5),
            e(p(0, 6, Some(443)), Verdict::Deny, 6),
        ];
        check_all_flows(&entries);
    }

    #[test]
    fn the_deciding_cookie_is_a_deny_when_a_deny_covers_the_key() {
        let entries = [e(p(5, 6, Some(80)), Verdict::Allow, 1), e(p(5, 0, None), Verdict::Deny, 9)];
        let table = fold(&entries);
        assert_eq!(table[&p(5, 6, Some(80))].rule, 9);
    }
}
