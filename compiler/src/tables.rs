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
//! Patterns are closed under intersection (identity and protocol are "one value" or
//! "any"; two aligned port blocks are nested or disjoint), so the added keys are ordinary
//! keys. Kubernetes NetworkPolicy only allows, and then no key is added.
//!
//! Port ranges become the fewest aligned power-of-two blocks that cover them exactly
//! ([`PortBlock::cover`]: at most 30, for 1-65535), not one key per port. The datapath
//! looks a packet's port up in each block size its table uses, longest first, so blocks
//! are just more ranks in the same fixed order and the fold above holds unchanged.

use std::collections::BTreeMap;

use datapath::{PORT_BITS, PolicyKey, PolicyVerdict, VERDICT_ALLOW, VERDICT_DENY};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Allow,
    Deny,
}

/// An aligned block of ports: the 2^(16-bits) ports whose top `bits` bits are those of
/// `base`. Sixteen bits is one port (or one ICMP type).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortBlock {
    /// The first port of the block; its low `16 - bits` bits are zero.
    pub base: u16,
    /// 1 to 16.
    pub bits: u8,
}

impl PortBlock {
    /// The block of one port.
    pub const fn single(port: u16) -> Self {
        PortBlock { base: port, bits: PORT_BITS }
    }

    /// The block of `bits` bits that holds `port`.
    pub fn containing(port: u16, bits: u8) -> Self {
        PortBlock { base: port & mask(bits), bits }
    }

    pub fn first(&self) -> u16 {
        self.base
    }

    pub fn last(&self) -> u16 {
        self.base | !mask(self.bits)
    }

    /// Whether every port of `other` is in this block.
    pub fn contains(&self, other: &PortBlock) -> bool {
        self.bits <= other.bits && other.base & mask(self.bits) == self.base
    }

    /// The fewest aligned blocks whose union is exactly `start..=end`, in port order;
    /// `None` for 0-65535, which is every port (a key without a port). Every block is the
    /// largest aligned one that starts where the previous ended and stays inside the
    /// range, which is what makes the cover minimal.
    pub fn cover(start: u16, end: u16) -> Option<Vec<PortBlock>> {
        let mut out = Vec::new();
        let (mut at, end) = (u32::from(start), u32::from(end));
        while at <= end {
            // Largest size allowed by the alignment of `at`, then by what is left.
            let mut size_log = if at == 0 { 16 } else { at.trailing_zeros().min(16) };
            while at + (1 << size_log) - 1 > end {
                size_log -= 1;
            }
            let bits = PORT_BITS - size_log as u8;
            if bits == 0 {
                return None;
            }
            out.push(PortBlock { base: at as u16, bits });
            at += 1 << size_log;
        }
        Some(out)
    }
}

/// The mask of the top `bits` bits of a port.
fn mask(bits: u8) -> u16 {
    if bits == 0 { 0 } else { u16::MAX << (PORT_BITS - bits.min(PORT_BITS)) }
}

/// A set of flows of one direction: peer identity (0: any), IP protocol (0: any), and a
/// block of destination ports or one ICMP type (`None`: any; only with a protocol).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Pattern {
    pub identity: u32,
    pub proto: u8,
    pub port: Option<PortBlock>,
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
            (Some(a), Some(b)) if a.contains(&b) => Some(b),
            (Some(a), Some(b)) if b.contains(&a) => Some(a),
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
            port_bits: self.port.map_or(0, |b| b.bits),
            port: self.port.map_or(0, |b| b.base),
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
pub type Table = BTreeMap<Pattern, PolicyVerdict>;

/// Folds rule entries into a table; see the module documentation.
///
/// Cost: the rules covering a key are among its generalisations (identity kept or made
/// "any"; the port block kept, widened bit by bit, or made "any"; the protocol kept or
/// made "any"), at most 36, so each key is decided by that many map lookups rather than
/// a scan of every entry.
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
            (key, PolicyVerdict { verdict, pad: [0; 3], rule })
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
        if let Some(block) = key.port {
            let base = block.base;
            shapes.extend(
                (1..block.bits)
                    .rev()
                    .map(|bits| (key.proto, Some(PortBlock::containing(base, bits)))),
            );
            shapes.push((key.proto, None));
        }
        if key.proto != 0 {
            shapes.push((0, None));
        }
        shapes.into_iter().map(move |(proto, port)| Pattern { identity, proto, port })
    })
}

/// The keys the datapath looks up for a flow, in its order: for the peer's identity then
/// for any identity, the port blocks holding `port` from 16 bits down to 1, every port
/// of the protocol, every protocol. The datapath skips block sizes its table lacks,
/// which never changes the first key present.
pub fn candidates(identity: u32, proto: u8, port: Option<u16>) -> impl Iterator<Item = Pattern> {
    [identity, datapath::IDENTITY_ANY].into_iter().flat_map(move |id| {
        let blocks = port.into_iter().flat_map(|port| {
            (1..=PORT_BITS).rev().map(move |bits| Some(PortBlock::containing(port, bits)))
        });
        blocks
            .chain([None])
            .map(move |port| Pattern { identity: id, proto, port })
            .chain([Pattern { identity: id, proto: 0, port: None }])
    })
}

/// How the datapath decides a flow against the keys of one table: the first present key
/// in rank order. Used by tests of [`fold`].
pub fn lookup(table: &Table, identity: u32, proto: u8, port: Option<u16>) -> Option<PolicyVerdict> {
    candidates(identity, proto, port).find_map(|c| table.get(&c).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(identity: u32, proto: u8, port: Option<u16>) -> Pattern {
        Pattern { identity, proto, port: port.map(PortBlock::single) }
    }

    fn block(identity: u32, proto: u8, base: u16, bits: u8) -> Pattern {
        Pattern { identity, proto, port: Some(PortBlock { base, bits }) }
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
                for port in [80, 81, 443, 1023, 1024, 1500, 2047, 2048, 65535] {
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
    fn a_range_is_its_fewest_aligned_blocks() {
        let cover = |a, b| {
            PortBlock::cover(a, b)
                .unwrap()
                .iter()
                .map(|b| (b.first(), b.last()))
                .collect::<Vec<_>>()
        };
        assert_eq!(cover(80, 80), [(80, 80)]);
        assert_eq!(cover(1024, 2047), [(1024, 2047)]);
        assert_eq!(
            cover(30000, 32767),
            [(30000, 30015), (30016, 30079), (30080, 30207), (30208, 30719), (30720, 32767)]
        );
        assert_eq!(PortBlock::cover(1, 65535).unwrap().len(), 16);
        assert_eq!(PortBlock::cover(1, 65534).unwrap().len(), 30);
        assert_eq!(PortBlock::cover(0, 65535), None, "every port is written as any port");
    }

    #[test]
    fn every_cover_is_exact_and_ordered() {
        for (start, end) in [(0, 0), (1, 2), (7, 9), (100, 1000), (65535, 65535), (2, 65535)] {
            let blocks = PortBlock::cover(start, end).unwrap();
            let mut next = u32::from(start);
            for b in &blocks {
                assert_eq!(u32::from(b.first()), next, "{start}-{end}: {blocks:?}");
                assert_eq!(b.first(), b.base & mask(b.bits), "aligned");
                next = u32::from(b.last()) + 1;
            }
            assert_eq!(next, u32::from(end) + 1, "{start}-{end}: {blocks:?}");
        }
    }

    #[test]
    fn a_deny_of_one_port_inside_an_allowed_range_wins_for_that_port_only() {
        let mut entries: Vec<Entry> = PortBlock::cover(1000, 2000)
            .unwrap()
            .into_iter()
            .map(|b| e(Pattern { identity: 0, proto: 6, port: Some(b) }, Verdict::Allow, 1))
            .collect();
        entries.push(e(p(5, 6, Some(1500)), Verdict::Deny, 2));
        entries.push(e(block(6, 6, 1024, 6), Verdict::Deny, 3));
        let table = fold(&entries);

        assert_eq!(lookup(&table, 5, 6, Some(1500)).unwrap().verdict, VERDICT_DENY);
        assert_eq!(lookup(&table, 5, 6, Some(1501)).unwrap().verdict, VERDICT_ALLOW);
        assert_eq!(lookup(&table, 6, 6, Some(2000)).unwrap().verdict, VERDICT_DENY);
        assert_eq!(lookup(&table, 6, 6, Some(1000)).unwrap().verdict, VERDICT_ALLOW);
        assert!(lookup(&table, 5, 6, Some(2001)).is_none());
        check_all_flows(&entries);
    }

    #[test]
    fn nested_blocks_of_allows_and_denies_agree_with_their_meaning() {
        let entries = [
            e(block(0, 6, 0, 1), Verdict::Allow, 1),
            e(block(5, 6, 1024, 6), Verdict::Deny, 2),
            e(block(0, 6, 1024, 5), Verdict::Allow, 3),
            e(p(0, 6, Some(1500)), Verdict::Allow, 4),
            e(p(7, 0, None), Verdict::Deny, 5),
            e(block(0, 17, 0, 2), Verdict::Deny, 6),
            e(p(6, 0, None), Verdict::Allow, 7),
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
