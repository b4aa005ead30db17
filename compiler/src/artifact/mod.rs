//! The map-image artifact: what `policyc compile` writes and the node runtime applies.
//!
//! An artifact is the complete desired content of the datapath maps for a cluster
//! snapshot, plus what observability needs to explain it (identity labels, rule
//! provenance). Its byte encoding is deterministic: every list is kept sorted, and no
//! timestamp, path or host detail enters it, so the same input gives the same bytes on
//! any machine. The layout is documented in docs/artifact-format.md.

mod codec;
#[cfg(test)]
mod tests;

use std::net::IpAddr;

use datapath::{IpcacheKey, PolicyKey, PolicyVerdict};

pub use codec::{ArtifactError, FORMAT_VERSION, MAGIC};

/// A decoded artifact. Lists are sorted as documented on each field; [`Artifact::encode`]
/// sorts them again, so constructing one in any order still encodes deterministically.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Artifact {
    /// SHA-256 over the compiler's inputs, for `status` and `diff` to name what was built.
    pub source_digest: [u8; 32],
    /// Every identity the tables mention, by number.
    pub identities: Vec<IdentityRecord>,
    /// Every endpoint (pod) of the snapshot, by name.
    pub endpoints: Vec<EndpointRecord>,
    /// The address -> identity table, by key.
    pub ipcache: Vec<(IpcacheKey, u32)>,
    /// The policy table, by key.
    pub policy: Vec<(PolicyKey, PolicyVerdict)>,
    /// Rule provenance, by cookie. Policy values refer to rules by cookie.
    pub rules: Vec<RuleRecord>,
    /// Which pod labels counted for identity, so that the node runtime derives the
    /// identity of a pod the artifact does not list exactly as the compiler would have.
    pub identity_labels: IdentityLabelRules,
}

/// The identity label rules of a compile (see `identity::identity_labels`): a pod label
/// counts if some selector reads its key, or if the compile's filter keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IdentityLabelRules {
    /// Keys some selector reads: they always count.
    pub selected: Vec<String>,
    /// `--identity-include` patterns (exact keys, or prefixes ending in `*`).
    pub include: Vec<String>,
    /// `--identity-exclude` patterns.
    pub exclude: Vec<String>,
}

impl IdentityLabelRules {
    /// Whether a pod label with this key counts for identity.
    pub fn counts(&self, key: &str) -> bool {
        self.selected.iter().any(|k| k == key)
            || crate::identity::filter_counts(&self.include, &self.exclude, key)
    }
}

/// A security identity and the labels it stands for.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct IdentityRecord {
    pub id: u32,
    /// `key=value` label pairs, sorted by key.
    pub labels: Vec<(String, String)>,
}

/// An endpoint the node runtime can bind to an interface: a pod, or the host endpoint
/// of a node that host policies select (bound to the node's uplink).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct EndpointRecord {
    /// `namespace/pod`, or `node/<node>` for a host endpoint.
    pub name: String,
    /// Names the endpoint that opened a conntrack entry, so that an interface rebound to
    /// another endpoint does not inherit its flows; unique in the artifact.
    pub endpoint_id: u32,
    pub identity: u32,
    /// Policy table for traffic to the endpoint; 0 when ingress is not enforced.
    pub ingress_table: u32,
    /// Policy table for traffic from the endpoint; 0 when egress is not enforced.
    pub egress_table: u32,
    /// The endpoint's addresses, sorted (a host endpoint's: its node's).
    pub addresses: Vec<IpAddr>,
}

impl EndpointRecord {
    /// Whether this is a node's host endpoint: the only endpoints with the host identity
    /// (no pod ever has it).
    pub fn is_host(&self) -> bool {
        self.identity == crate::identity::reserved::HOST
    }
}

/// Where a policy value came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct RuleRecord {
    /// The number policy values carry. Cookie 0 is never used.
    pub cookie: u32,
    /// `kind namespace/name` of the policy, or a built-in default's name.
    pub policy: String,
    /// Human description of the rule, e.g. `ingress[0]`.
    pub rule: String,
    /// `file:line:col` of the rule in the source.
    pub location: String,
}

/// The number an endpoint named `name` (`namespace/pod`) starts from: a 32-bit FNV-1a
/// hash, so it does not change when other pods come and go. The compiler moves on to the
/// next free number on a collision; the node runtime does the same for pods it binds
/// without a recompile.
pub fn endpoint_number(name: &str) -> u32 {
    name.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

impl Artifact {
    /// The endpoint named `namespace/pod`.
    pub fn endpoint(&self, name: &str) -> Option<&EndpointRecord> {
        self.endpoints.iter().find(|e| e.name == name)
    }

    /// The rule with this cookie. Rules are kept sorted by cookie (see [`Self::normalize`]),
    /// so this is a binary search; an artifact built by hand in another order is still
    /// answered, by a scan.
    pub fn rule(&self, cookie: u32) -> Option<&RuleRecord> {
        match self.rules.binary_search_by_key(&cookie, |r| r.cookie) {
            Ok(i) => Some(&self.rules[i]),
            Err(_) => self.rules.iter().find(|r| r.cookie == cookie),
        }
    }

    /// The `*_port_bits` mask of the endpoints map for `table`: which port block sizes
    /// its keys use, so that the datapath looks up only those (see
    /// [`datapath::port_bits_of`]). Policy keys sort by table first, so the table's keys
    /// are one run found by binary search; 0 for table 0 (not enforced).
    pub fn port_bits(&self, table: u32) -> u32 {
        if table == 0 {
            return 0;
        }
        let start = self.policy.partition_point(|(k, _)| k.table < table);
        let end = self.policy.partition_point(|(k, _)| k.table <= table);
        datapath::port_bits_of(self.policy[start..end].iter().map(|(k, _)| k))
    }

    /// Sorts every list into its canonical order.
    pub fn normalize(&mut self) {
        // Inner lists first: the outer order compares them.
        for identity in &mut self.identities {
            identity.labels.sort();
        }
        self.identities.sort();
        for endpoint in &mut self.endpoints {
            endpoint.addresses.sort();
        }
        // Names are unique in a compiled artifact; sorting on every field keeps the
        // encoding canonical even for one built by hand.
        self.endpoints.sort();
        self.ipcache.sort();
        self.policy.sort();
        self.rules.sort();
        for keys in [
            &mut self.identity_labels.selected,
            &mut self.identity_labels.include,
            &mut self.identity_labels.exclude,
        ] {
            keys.sort();
            keys.dedup();
        }
    }
}
