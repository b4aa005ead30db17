//! Security identities: one number per distinct set of identity-relevant labels.
//!
//! A pod's identity labels are its own labels minus well-known noise, plus its
//! namespace (`io.kubernetes.pod.namespace`) and its namespace's labels under
//! `io.cilium.k8s.namespace.labels.`, the same shape Cilium uses so that selectors
//! written for it read the same here. Numbers are allocated in the order of the sorted
//! label sets, so the same inventory always gets the same numbers.

use std::collections::{BTreeMap, BTreeSet};

use policy_lang::ast::Labels;

/// Reserved identities, as Cilium numbers them.
pub mod reserved {
    pub const ANY: u32 = 0;
    pub const HOST: u32 = 1;
    pub const WORLD: u32 = 2;
    pub const UNMANAGED: u32 = 3;
    pub const HEALTH: u32 = 4;
    pub const INIT: u32 = 5;
    pub const REMOTE_NODE: u32 = 6;
    pub const KUBE_APISERVER: u32 = 7;
    pub const INGRESS: u32 = 8;
}

/// First number of cluster-local (pod) identities.
pub const FIRST_POD_IDENTITY: u32 = 256;
/// CIDR identities have the top byte 0x01; the first is 0x0100_0001.
pub const FIRST_CIDR_IDENTITY: u32 = 0x0100_0001;
/// The last CIDR identity.
pub const LAST_CIDR_IDENTITY: u32 = 0x01ff_ffff;

pub const NAMESPACE_LABEL: &str = "io.kubernetes.pod.namespace";
pub const NAMESPACE_LABELS_PREFIX: &str = "io.cilium.k8s.namespace.labels.";
/// The pod's service account, as Cilium labels endpoints with it.
pub const SERVICE_ACCOUNT_LABEL: &str = "io.cilium.k8s.policy.serviceaccount";

/// Label keys that change per pod or per rollout and would split one workload into many
/// identities without ever being useful in a policy.
const NOISE_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/controller-uid",
    "batch.kubernetes.io/job-name",
    "controller-uid",
    "job-name",
];

/// Whether a label counts for identity by default.
pub fn is_identity_label(key: &str) -> bool {
    if NOISE_LABELS.contains(&key) {
        return false;
    }
    // Keys under exactly kubernetes.io and k8s.io (and the old beta prefixes) are set
    // by the platform (topology, node roles...). Prefixes that merely end in them, such
    // as app.kubernetes.io, are the recommended application labels and count.
    match key.split_once('/') {
        Some((prefix, _)) => {
            !(prefix == "kubernetes.io"
                || prefix == "k8s.io"
                || prefix.ends_with("beta.kubernetes.io"))
        }
        None => true,
    }
}

/// Label keys that carry namespace identity. On a pod they would let it pass selectors
/// written for other namespaces, so they are never taken from pod labels.
pub fn is_reserved_key(key: &str) -> bool {
    key == NAMESPACE_LABEL
        || key == SERVICE_ACCOUNT_LABEL
        || key.starts_with(NAMESPACE_LABELS_PREFIX)
}

/// The labels selectors match a pod by: its own labels, its namespace, and its
/// namespace's labels under [`NAMESPACE_LABELS_PREFIX`].
pub fn endpoint_labels(
    pod_labels: &Labels,
    namespace: &str,
    ns_labels: &Labels,
    service_account: &str,
) -> Labels {
    // A pod cannot claim its namespace's labels: keys reserved for them are dropped
    // (and reported by the compiler, see `is_reserved_key`).
    let mut out: Labels = pod_labels
        .iter()
        .filter(|(k, _)| !is_reserved_key(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    out.insert(NAMESPACE_LABEL.to_owned(), namespace.to_owned());
    out.insert(SERVICE_ACCOUNT_LABEL.to_owned(), service_account.to_owned());
    for (k, v) in ns_labels {
        out.insert(format!("{NAMESPACE_LABELS_PREFIX}{k}"), v.clone());
    }
    out
}

/// The endpoint labels of a pod, given every namespace's labels. A pod without a
/// service account runs as `default`, as Kubernetes defaults it.
pub fn pod_endpoint_labels(
    pod: &policy_lang::ast::Pod,
    namespaces: &BTreeMap<String, Labels>,
) -> Labels {
    let namespace = &pod.meta.namespace;
    let no_labels = Labels::new();
    endpoint_labels(
        &pod.meta.labels,
        namespace,
        namespaces.get(namespace).unwrap_or(&no_labels),
        pod.service_account.as_ref().map_or("default", |sa| sa.value.as_str()),
    )
}

/// The identity labels of an endpoint: the labels that count by default, plus every
/// key some selector reads. Keeping the selected keys makes selection by identity exact:
/// two pods that differ in a label a policy reads never share an identity, even when
/// the label is one that normally does not count.
pub fn identity_labels(
    endpoint_labels: &Labels,
    selected_keys: &BTreeSet<String>,
    filter: &LabelFilter,
) -> Labels {
    endpoint_labels
        .iter()
        .filter(|(k, _)| {
            k.as_str() == NAMESPACE_LABEL
                || k.as_str() == SERVICE_ACCOUNT_LABEL
                || k.starts_with(NAMESPACE_LABELS_PREFIX)
                || selected_keys.contains(k.as_str())
                || filter.counts(k)
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Every label key some selector of `policies` reads. These keys always count for
/// identity (see [`identity_labels`]).
pub fn selected_keys(policies: &[crate::ir::Policy]) -> BTreeSet<String> {
    policies
        .iter()
        .flat_map(crate::ir::Policy::selectors)
        .flat_map(|s| s.match_labels.keys().chain(s.match_expressions.iter().map(|r| &r.key)))
        .cloned()
        .collect()
}

/// Numbers for the CIDR identities of `prefixes`. Each is derived from its prefix alone
/// (FNV-1a over the address and the length, folded into the low 24 bits), not from its
/// rank among the others: numbered in order, a prefix added or removed would renumber
/// every prefix after it, rewriting their address entries and every policy entry keyed
/// by them. A collision moves on to the next free number, in prefix order, so only then
/// can another prefix's arrival move a number (rare: two prefixes in a 24-bit space).
pub fn cidr_identities(
    prefixes: &BTreeSet<policy_lang::ast::Cidr>,
) -> BTreeMap<policy_lang::ast::Cidr, u32> {
    let span = LAST_CIDR_IDENTITY - FIRST_CIDR_IDENTITY + 1;
    let mut used = BTreeSet::new();
    prefixes
        .iter()
        .map(|cidr| {
            let bytes = match cidr.addr {
                std::net::IpAddr::V4(v4) => v4.octets().to_vec(),
                std::net::IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            let hash = bytes
                .iter()
                .chain([&cidr.prefix])
                .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(*b)).wrapping_mul(0x0100_0193));
            let mut offset = hash % span;
            while !used.insert(offset) {
                offset = (offset + 1) % span;
            }
            (*cidr, FIRST_CIDR_IDENTITY + offset)
        })
        .collect()
}

/// Which pod labels count for identity, beyond the ones selectors read (those always
/// count, or selection by identity would not be exact). Patterns are exact keys, or
/// prefixes ending in `*` (`example.com/*`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelFilter {
    /// Keys that count although the default filter drops them.
    pub include: Vec<String>,
    /// Keys that do not count although the default filter keeps them (for example a
    /// per-rollout version label that would split identities on every deploy).
    pub exclude: Vec<String>,
}

impl LabelFilter {
    /// Whether `key` counts: an exclusion wins over an inclusion, which wins over the
    /// default.
    pub fn counts(&self, key: &str) -> bool {
        filter_counts(&self.include, &self.exclude, key)
    }
}

/// [`LabelFilter::counts`] over borrowed pattern lists (the artifact keeps them apart).
pub fn filter_counts(include: &[String], exclude: &[String], key: &str) -> bool {
    let hit = |patterns: &[String]| {
        patterns.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => key.starts_with(prefix),
            None => key == p,
        })
    };
    if hit(exclude) { false } else { hit(include) || is_identity_label(key) }
}

/// Allocates numbers to label sets.
#[derive(Debug, Default)]
pub struct Allocator {
    by_labels: BTreeMap<Labels, u32>,
}

impl Allocator {
    /// Numbers every distinct label set, in sorted order, from [`FIRST_POD_IDENTITY`].
    pub fn allocate<'a>(label_sets: impl IntoIterator<Item = &'a Labels>) -> Allocator {
        Allocator::with_lock(label_sets, &crate::lock::Lock::default()).0
    }

    /// Numbers label sets keeping the numbers `lock` gives them; returns the updated
    /// lock too. See [`crate::lock`].
    pub fn with_lock<'a>(
        label_sets: impl IntoIterator<Item = &'a Labels>,
        lock: &crate::lock::Lock,
    ) -> (Allocator, crate::lock::Lock) {
        let (by_labels, updated) = lock.allocate(label_sets);
        (Allocator { by_labels }, updated)
    }

    pub fn get(&self, labels: &Labels) -> Option<u32> {
        self.by_labels.get(labels).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Labels, u32)> {
        self.by_labels.iter().map(|(l, id)| (l, *id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn noise_labels_do_not_split_identities_unless_selected() {
        let ns = labels(&[("team", "a")]);
        let a = endpoint_labels(
            &labels(&[("app", "web"), ("pod-template-hash", "1")]),
            "x",
            &ns,
            "default",
        );
        let b = endpoint_labels(
            &labels(&[("app", "web"), ("pod-template-hash", "2")]),
            "x",
            &ns,
            "default",
        );
        let none = BTreeSet::new();
        let filter = LabelFilter::default();
        assert_eq!(identity_labels(&a, &none, &filter), identity_labels(&b, &none, &filter));
        let id = identity_labels(&a, &none, &filter);
        assert_eq!(id.get(NAMESPACE_LABEL).map(String::as_str), Some("x"));
        assert_eq!(id.get("io.cilium.k8s.namespace.labels.team").map(String::as_str), Some("a"));
        let selected = BTreeSet::from(["pod-template-hash".to_string()]);
        assert_ne!(
            identity_labels(&a, &selected, &filter),
            identity_labels(&b, &selected, &filter)
        );
    }

    #[test]
    fn a_pod_cannot_claim_namespace_labels() {
        let pod =
            labels(&[("io.cilium.k8s.namespace.labels.team", "blue"), (NAMESPACE_LABEL, "y")]);
        let ep = endpoint_labels(&pod, "x", &labels(&[]), "default");
        assert_eq!(ep.get(NAMESPACE_LABEL).map(String::as_str), Some("x"));
        assert!(!ep.contains_key("io.cilium.k8s.namespace.labels.team"));
    }

    #[test]
    fn the_label_filter_is_configurable() {
        let filter = LabelFilter {
            include: vec!["pod-template-hash".into()],
            exclude: vec!["app.kubernetes.io/version".into(), "example.com/*".into()],
        };
        assert!(filter.counts("pod-template-hash"));
        assert!(!filter.counts("app.kubernetes.io/version"));
        assert!(!filter.counts("example.com/build"));
        assert!(filter.counts("app.kubernetes.io/name"));
        // A key a selector reads counts whatever the filter says.
        let ep = labels(&[("example.com/build", "7"), ("app", "web")]);
        let selected = BTreeSet::from(["example.com/build".to_string()]);
        assert!(identity_labels(&ep, &selected, &filter).contains_key("example.com/build"));
        assert!(!identity_labels(&ep, &BTreeSet::new(), &filter).contains_key("example.com/build"));
    }

    #[test]
    fn platform_labels_do_not_count_but_app_labels_do() {
        assert!(!is_identity_label("kubernetes.io/hostname"));
        assert!(!is_identity_label("failure-domain.beta.kubernetes.io/zone"));
        assert!(is_identity_label("app.kubernetes.io/name"));
        assert!(is_identity_label("example.com/tier"));
    }

    #[test]
    fn cidr_identities_do_not_move_when_other_prefixes_come_and_go() {
        let cidr = |s: &str| {
            let (addr, prefix) = s.split_once('/').unwrap();
            policy_lang::ast::Cidr { addr: addr.parse().unwrap(), prefix: prefix.parse().unwrap() }
        };
        let some: BTreeSet<_> = ["10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32"].map(cidr).into();
        let mut more = some.clone();
        // Sorts before every other prefix: numbered by rank, it would shift them all.
        more.insert(cidr("0.0.0.0/0"));
        let (a, b) = (cidr_identities(&some), cidr_identities(&more));
        for prefix in &some {
            assert_eq!(a[prefix], b[prefix], "{prefix:?}");
        }
        let numbers: BTreeSet<u32> = b.values().copied().collect();
        assert_eq!(numbers.len(), 4);
        assert!(numbers.iter().all(|n| (FIRST_CIDR_IDENTITY..=LAST_CIDR_IDENTITY).contains(n)));
        assert_ne!(
            a[&cidr("10.0.0.0/8")],
            cidr_identities(&[cidr("10.0.0.0/9")].into())[&cidr("10.0.0.0/9")]
        );
    }

    #[test]
    fn allocation_is_independent_of_input_order() {
        let sets = [labels(&[("a", "1")]), labels(&[("b", "2")]), labels(&[("c", "3")])];
        let forward = Allocator::allocate(sets.iter());
        let backward = Allocator::allocate(sets.iter().rev());
        for set in &sets {
            assert_eq!(forward.get(set), backward.get(set));
        }
        assert_eq!(forward.get(&sets[0]), Some(FIRST_POD_IDENTITY));
    }
}
