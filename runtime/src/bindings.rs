//! Interface bindings: which host-side interface carries which endpoint of the artifact.
//!
//! A binding is written `NAME=NAMESPACE/POD`, or `NAME=node/NODE` for the host endpoint
//! of node `NODE` (the artifact has one when a host policy selects the node; `NAME` is
//! then the node's uplink). It is resolved against the artifact and against the current
//! network namespace (the interface must exist there), before anything in the kernel is
//! touched. A node binds at most one host endpoint, its own, on any number of uplinks.
//!
//! A pod the artifact does not list (a new replica scheduled after the compile) can be
//! bound with its addresses and labels ([`UnlistedPod`]): it gets the identity the
//! artifact gives that label set, and the tables of the endpoints with that identity.
//! Pods with one identity are alike to every policy (identity labels include every key
//! a selector reads), so the tables are exactly the ones a recompile would give it. A
//! label set the artifact has no identity for needs a recompile, and says so.

use std::{
    collections::{BTreeMap, BTreeSet},
    ffi::CString,
    fmt, io,
    net::IpAddr,
    str::FromStr,
};

use compiler::{
    artifact::{Artifact, endpoint_number},
    identity::{NAMESPACE_LABEL, NAMESPACE_LABELS_PREFIX, SERVICE_ACCOUNT_LABEL, is_reserved_key},
};
use datapath::EndpointPolicy;

use crate::error::{Result, RuntimeError};

/// Longest interface name the kernel accepts (`IFNAMSIZ` - 1).
const MAX_INTERFACE_NAME: usize = 15;

/// How many similar endpoint names an unknown-endpoint error lists at most.
const MAX_SUGGESTIONS: usize = 5;

/// `NAME=NAMESPACE/POD`: interface `NAME` carries the traffic of endpoint
/// `NAMESPACE/POD`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binding {
    /// The host-side interface, e.g. the node end of a pod's veth pair.
    pub interface: String,
    /// The endpoint's `namespace/pod` name.
    pub endpoint: String,
    /// What the node knows of a pod the artifact may not list.
    pub pod: Option<UnlistedPod>,
}

/// A pod bound without a recompile: what its identity and its address entries need.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnlistedPod {
    pub addresses: Vec<IpAddr>,
    /// The pod's own labels, as in its manifest.
    pub labels: BTreeMap<String, String>,
    /// `default` when not given, as Kubernetes defaults it.
    pub service_account: Option<String>,
}

impl FromStr for Binding {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<Self> {
        let invalid = |reason| RuntimeError::InvalidBinding { binding: s.to_owned(), reason };
        let (interface, endpoint) =
            s.split_once('=').ok_or_else(|| invalid("expected NAME=NAMESPACE/POD"))?;
        check_interface_name(interface).map_err(invalid)?;
        match endpoint.split_once('/') {
            Some((ns, pod)) if !ns.is_empty() && !pod.is_empty() && !pod.contains('/') => {}
            _ => return Err(invalid("the endpoint must be NAMESPACE/POD")),
        }
        Ok(Binding { interface: interface.to_owned(), endpoint: endpoint.to_owned(), pod: None })
    }
}

impl fmt::Display for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}", self.interface, self.endpoint)
    }
}

/// The interface name also names link pins, so besides the kernel's rules (at most 15
/// bytes, no `/`, no white space) it may not be `.` or `..`.
pub(crate) fn check_interface_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("the interface name is empty");
    }
    if name.len() > MAX_INTERFACE_NAME {
        return Err("interface names have at most 15 bytes");
    }
    if name == "." || name == ".." || name.contains(['/', ':', '\0']) {
        return Err("the interface name contains '/', ':' or NUL, or is '.' or '..'");
    }
    if name.chars().any(char::is_whitespace) {
        return Err("the interface name contains white space");
    }
    Ok(())
}

/// A binding resolved against the artifact and the network namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BoundInterface {
    pub interface: String,
    pub ifindex: u32,
    /// `namespace/pod`.
    pub endpoint: String,
    /// What the endpoints map says for this interface in the artifact's generation.
    pub policy: EndpointPolicy,
    /// Addresses the artifact does not map to the endpoint's identity (an unlisted pod's,
    /// or a host endpoint's: its node's own): the hosts map gets them.
    pub addresses: Vec<IpAddr>,
    /// A node's host endpoint (`node/NAME`): the interface is the node's uplink, its
    /// programs are attached the other way round and its entry carries
    /// [`datapath::EP_F_HOST`].
    pub host: bool,
}

/// Resolves every binding; `ifindex_of` looks an interface up (see
/// [`ifindex_in_current_netns`]). Fails on the first unknown endpoint or interface, or
/// on an interface bound twice.
pub fn resolve(
    artifact: &Artifact,
    bindings: &[Binding],
    mut ifindex_of: impl FnMut(&str) -> io::Result<u32>,
) -> Result<Vec<BoundInterface>> {
    let mut seen = BTreeSet::new();
    let mut bound = Vec::with_capacity(bindings.len());
    for binding in bindings {
        if !seen.insert(binding.interface.as_str()) {
            return Err(RuntimeError::DuplicateInterface { interface: binding.interface.clone() });
        }
        let ifindex = ifindex_of(&binding.interface).map_err(|source| {
            RuntimeError::UnknownInterface { interface: binding.interface.clone(), source }
        })?;
        let host = artifact.endpoint(&binding.endpoint).is_some_and(|r| r.is_host());
        let (endpoint_id, identity, tables, addresses) =
            match (artifact.endpoint(&binding.endpoint), &binding.pod) {
                // The node's own addresses: the artifact gives every node's the
                // remote-node identity, this node gives its own the host identity.
                (Some(record), _) if record.is_host() => (
                    record.endpoint_id,
                    record.identity,
                    [record.ingress_table, record.egress_table],
                    record.addresses.clone(),
                ),
                (Some(record), _) => (
                    record.endpoint_id,
                    record.identity,
                    [record.ingress_table, record.egress_table],
                    vec![],
                ),
                (None, Some(pod)) => {
                    let (identity, tables) = unlisted(artifact, &binding.endpoint, pod)?;
                    (0, identity, tables, pod.addresses.clone())
                }
                (None, None) => {
                    return Err(RuntimeError::UnknownEndpoint {
                        endpoint: binding.endpoint.clone(),
                        suggestions: similar_endpoints(artifact, &binding.endpoint),
                        known: artifact.endpoints.len(),
                    });
                }
            };
        tracing::debug!(interface = %binding.interface, ifindex, endpoint = %binding.endpoint, "bound");
        bound.push(BoundInterface {
            interface: binding.interface.clone(),
            ifindex,
            endpoint: binding.endpoint.clone(),
            policy: EndpointPolicy {
                endpoint_id,
                identity,
                ingress_table: tables[0],
                egress_table: tables[1],
                ingress_port_bits: artifact.port_bits(tables[0]),
                egress_port_bits: artifact.port_bits(tables[1]),
            },
            addresses,
            host,
        });
    }
    // Several uplinks may carry the node's host endpoint; two nodes' cannot be here.
    let hosts: BTreeSet<&str> =
        bound.iter().filter(|b| b.host).map(|b| b.endpoint.as_str()).collect();
    if hosts.len() > 1 {
        let endpoints = hosts.into_iter().map(str::to_owned).collect();
        return Err(RuntimeError::SeveralHostEndpoints { endpoints });
    }
    number_unlisted(artifact, &mut bound);
    Ok(bound)
}

/// Endpoint numbers for unlisted pods: the hash of the name, moved on past any number
/// the artifact or another binding already uses (as the compiler does), never 0.
fn number_unlisted(artifact: &Artifact, bound: &mut [BoundInterface]) {
    let mut used: BTreeSet<u32> = artifact.endpoints.iter().map(|e| e.endpoint_id).collect();
    for interface in bound.iter_mut().filter(|b| b.policy.endpoint_id == 0) {
        let mut id = endpoint_number(&interface.endpoint);
        while id == 0 || !used.insert(id) {
            id = id.wrapping_add(1);
        }
        interface.policy.endpoint_id = id;
    }
}

/// The identity and tables of a pod the artifact does not list: the identity whose
/// labels are exactly the pod's identity labels, derived as the compiler derived them
/// (the artifact's identity label rules), and the tables of an endpoint that has it.
fn unlisted(artifact: &Artifact, name: &str, pod: &UnlistedPod) -> Result<(u32, [u32; 2])> {
    let labels = unlisted_identity_labels(artifact, name, pod);
    let unknown = || RuntimeError::UnknownIdentity {
        endpoint: name.to_owned(),
        labels: labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
    };
    let identity = artifact
        .identities
        .iter()
        .find(|i| i.labels.iter().cloned().collect::<BTreeMap<_, _>>() == labels)
        .ok_or_else(unknown)?;
    let like = artifact.endpoints.iter().find(|e| e.identity == identity.id).ok_or_else(unknown)?;
    Ok((identity.id, [like.ingress_table, like.egress_table]))
}

/// `k8s:`-prefixed identity labels of an unlisted pod of namespace `name`'s first part:
/// its own labels that count by the artifact's rules, its namespace and service account,
/// and its namespace's labels as the artifact's identities of that namespace carry them.
fn unlisted_identity_labels(
    artifact: &Artifact,
    name: &str,
    pod: &UnlistedPod,
) -> BTreeMap<String, String> {
    let namespace = name.split_once('/').map_or(name, |(ns, _)| ns);
    let k8s = |key: &str| format!("k8s:{key}");
    let mut labels: BTreeMap<String, String> = pod
        .labels
        .iter()
        .filter(|(k, _)| !is_reserved_key(k) && artifact.identity_labels.counts(k))
        .map(|(k, v)| (k8s(k), v.clone()))
        .collect();
    labels.insert(k8s(NAMESPACE_LABEL), namespace.to_owned());
    labels.insert(
        k8s(SERVICE_ACCOUNT_LABEL),
        pod.service_account.clone().unwrap_or_else(|| "default".to_owned()),
    );
    let ns_key = (k8s(NAMESPACE_LABEL), namespace.to_owned());
    let of_namespace = artifact.identities.iter().find(|i| i.labels.contains(&ns_key));
    let prefix = k8s(NAMESPACE_LABELS_PREFIX);
    for (k, v) in of_namespace.map(|i| i.labels.as_slice()).unwrap_or_default() {
        if k.starts_with(&prefix) {
            labels.insert(k.clone(), v.clone());
        }
    }
    labels
}

/// The ifindex of `name` in the calling thread's network namespace.
pub fn ifindex_in_current_netns(name: &str) -> io::Result<u32> {
    let c_name = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `c_name` is a valid NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c_name.as_ptr()) };
    if index == 0 { Err(io::Error::last_os_error()) } else { Ok(index) }
}

/// Every address of an interface of the current network namespace but the loopback ones:
/// the addresses the kernel takes as the node's own (any of them, whatever interface a
/// packet arrives on), besides those its Node object lists.
pub fn local_addresses_in_current_netns() -> io::Result<Vec<IpAddr>> {
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs writes a list head into `list`, which is freed below.
    if unsafe { libc::getifaddrs(&mut list) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let mut out = Vec::new();
    let mut entry = list;
    while !entry.is_null() {
        // SAFETY: `entry` is a node of the list getifaddrs returned, not yet freed.
        let ifa = unsafe { &*entry };
        entry = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: a non-null ifa_addr points to a sockaddr whose family says its type.
        let address = match i32::from(unsafe { (*ifa.ifa_addr).sa_family }) {
            libc::AF_INET => {
                // SAFETY: the family is AF_INET, so this is a sockaddr_in.
                let sin = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in>() };
                IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
            }
            libc::AF_INET6 => {
                // SAFETY: the family is AF_INET6, so this is a sockaddr_in6.
                let sin6 = unsafe { &*ifa.ifa_addr.cast::<libc::sockaddr_in6>() };
                IpAddr::from(sin6.sin6_addr.s6_addr)
            }
            _ => continue,
        };
        if !address.is_loopback() && !out.contains(&address) {
            out.push(address);
        }
    }
    // SAFETY: `list` came from getifaddrs and is freed once, after its last use.
    unsafe { libc::freeifaddrs(list) };
    Ok(out)
}

/// Adds `local` to the addresses of every host endpoint of `bound`: a node's own
/// addresses are those its Node object lists and those its interfaces have, so that no
/// traffic to an address the Node object leaves out passes a host policy as forwarded.
pub fn add_local_addresses(bound: &mut [BoundInterface], local: &[IpAddr]) {
    for interface in bound.iter_mut().filter(|b| b.host) {
        for address in local {
            if !interface.addresses.contains(address) {
                interface.addresses.push(*address);
            }
        }
    }
}

/// The name of the interface with this ifindex in the current network namespace.
pub fn interface_name(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes if_indextoname may write, NUL included.
    let name = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if name.is_null() {
        return None;
    }
    // SAFETY: on success if_indextoname wrote a NUL-terminated string into `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(name.to_string_lossy().into_owned())
}

/// Endpoint names close to `wanted`: the same pod in another namespace, or a name a
/// few typing mistakes away. Closest first.
fn similar_endpoints(artifact: &Artifact, wanted: &str) -> Vec<String> {
    let wanted_pod = wanted.rsplit('/').next().unwrap_or(wanted);
    let budget = (wanted.chars().count() / 3).max(2);
    let mut scored: Vec<(usize, &str)> = artifact
        .endpoints
        .iter()
        .filter_map(|e| {
            let distance = edit_distance(wanted, &e.name);
            let same_pod = e.name.rsplit('/').next() == Some(wanted_pod);
            (distance <= budget || same_pod).then_some((distance, e.name.as_str()))
        })
        .collect();
    scored.sort();
    scored.into_iter().take(MAX_SUGGESTIONS).map(|(_, name)| name.to_owned()).collect()
}

/// Levenshtein distance over characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = diagonal + usize::from(ca != *cb);
            diagonal = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(diagonal + 1);
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use compiler::artifact::EndpointRecord;

    use super::*;

    fn artifact(names: &[&str]) -> Artifact {
        let endpoints = names
            .iter()
            .enumerate()
            .map(|(i, name)| EndpointRecord {
                name: (*name).to_owned(),
                endpoint_id: i as u32 + 1,
                identity: 256 + i as u32,
                ingress_table: 1,
                egress_table: 0,
                addresses: vec![],
            })
            .collect();
        Artifact { endpoints, ..Artifact::default() }
    }

    #[test]
    fn parses_a_binding() {
        let b: Binding = "veth1=prod/web".parse().unwrap();
        assert_eq!(
            b,
            Binding { interface: "veth1".into(), endpoint: "prod/web".into(), pod: None }
        );
        assert_eq!(b.to_string(), "veth1=prod/web");
    }

    #[test]
    fn rejects_malformed_bindings() {
        for bad in ["veth1", "=prod/web", "veth1=web", "veth1=/web", "veth1=prod/", "a/b=prod/web"]
        {
            assert!(
                matches!(bad.parse::<Binding>(), Err(RuntimeError::InvalidBinding { .. })),
                "{bad} was accepted"
            );
        }
        let long = "a-very-long-interface=prod/web";
        assert!(long.parse::<Binding>().is_err());
    }

    #[test]
    fn resolves_endpoint_tables_and_ifindex() {
        let artifact = artifact(&["prod/web", "prod/client"]);
        let bindings = ["pw=prod/web".parse().unwrap(), "pc=prod/client".parse().unwrap()];
        let bound =
            resolve(&artifact, &bindings, |name| Ok(if name == "pw" { 7 } else { 9 })).unwrap();
        assert_eq!(bound[0].ifindex, 7);
        assert_eq!(bound[0].policy.endpoint_id, 1);
        assert_eq!(
            bound[1].policy,
            EndpointPolicy {
                endpoint_id: 2,
                identity: 257,
                ingress_table: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn unknown_endpoint_lists_close_names() {
        let artifact = artifact(&["prod/web", "dev/web", "prod/client", "kube-system/dns"]);
        let err = resolve(&artifact, &["pw=prod/wbe".parse().unwrap()], |_| Ok(1)).unwrap_err();
        let RuntimeError::UnknownEndpoint { suggestions, .. } = &err else {
            panic!("unexpected error {err}")
        };
        assert_eq!(suggestions.first().map(String::as_str), Some("prod/web"));
        assert!(!suggestions.contains(&"kube-system/dns".to_owned()));
        assert!(err.to_string().contains("similar names: prod/web"), "{err}");

        let err = resolve(&artifact, &["pw=staging/web".parse().unwrap()], |_| Ok(1)).unwrap_err();
        assert!(err.to_string().contains("prod/web"), "same pod elsewhere is close: {err}");

        let err = resolve(&artifact, &["pw=x/zzzzzzzz".parse().unwrap()], |_| Ok(1)).unwrap_err();
        assert!(err.to_string().contains("4 endpoints, none with a similar name"), "{err}");
    }

    #[test]
    fn unknown_interface_and_double_binding_are_errors() {
        let artifact = artifact(&["prod/web"]);
        let err = resolve(&artifact, &["nope=prod/web".parse().unwrap()], |_| {
            Err(io::Error::from_raw_os_error(libc::ENODEV))
        })
        .unwrap_err();
        assert!(matches!(err, RuntimeError::UnknownInterface { .. }), "{err}");

        let twice = ["pw=prod/web".parse().unwrap(), "pw=prod/web".parse().unwrap()];
        let err = resolve(&artifact, &twice, |_| Ok(3)).unwrap_err();
        assert!(matches!(err, RuntimeError::DuplicateInterface { .. }), "{err}");
    }

    /// Two nodes' host endpoints beside a pod, as the compiler writes them.
    fn with_host_endpoints() -> Artifact {
        let mut artifact = artifact(&["prod/web"]);
        for (i, name) in ["node/edge-1", "node/edge-2"].into_iter().enumerate() {
            artifact.endpoints.push(EndpointRecord {
                name: name.to_owned(),
                endpoint_id: 10 + i as u32,
                identity: datapath::IDENTITY_HOST,
                ingress_table: 4,
                egress_table: 0,
                addresses: vec![format!("10.0.9.{}", i + 1).parse().unwrap()],
            });
        }
        artifact
    }

    #[test]
    fn a_host_endpoint_binds_an_uplink_with_the_nodes_own_addresses() {
        let artifact = with_host_endpoints();
        let bindings = ["eth0=node/edge-1".parse().unwrap(), "pw=prod/web".parse().unwrap()];
        let bound = resolve(&artifact, &bindings, |_| Ok(2)).unwrap();
        assert!(bound[0].host && !bound[1].host);
        assert_eq!(bound[0].policy.identity, datapath::IDENTITY_HOST);
        assert_eq!(bound[0].addresses, ["10.0.9.1".parse::<IpAddr>().unwrap()]);
        assert!(bound[1].addresses.is_empty());
        // Two uplinks of one node carry the same host endpoint.
        let uplinks = ["eth0=node/edge-1".parse().unwrap(), "eth1=node/edge-1".parse().unwrap()];
        assert!(resolve(&artifact, &uplinks, |_| Ok(2)).is_ok());
    }

    #[test]
    fn a_host_endpoint_takes_the_nodes_interface_addresses_too() {
        let artifact = with_host_endpoints();
        let bindings = ["eth0=node/edge-1".parse().unwrap(), "pw=prod/web".parse().unwrap()];
        let mut bound = resolve(&artifact, &bindings, |_| Ok(2)).unwrap();
        let local: Vec<IpAddr> =
            ["10.0.9.1", "192.0.2.77", "fe80::1"].into_iter().map(|a| a.parse().unwrap()).collect();
        add_local_addresses(&mut bound, &local);
        assert_eq!(bound[0].addresses, local, "listed once each, the Node's first");
        assert!(bound[1].addresses.is_empty(), "a pod's interface takes none");
        // The test's own namespace has addresses to list, loopback left out.
        let here = local_addresses_in_current_netns().unwrap();
        assert!(here.iter().all(|a| !a.is_loopback()), "{here:?}");
    }

    #[test]
    fn another_nodes_host_endpoint_cannot_be_bound_beside_this_ones() {
        let artifact = with_host_endpoints();
        let both = ["eth0=node/edge-1".parse().unwrap(), "eth1=node/edge-2".parse().unwrap()];
        let err = resolve(&artifact, &both, |_| Ok(2)).unwrap_err();
        assert!(matches!(err, RuntimeError::SeveralHostEndpoints { .. }), "{err}");
        assert!(err.to_string().contains("node/edge-1, node/edge-2"), "{err}");
    }

    /// prod/web (identity 258, ingress table 5) as the compiler would describe it.
    fn with_web_identity() -> Artifact {
        let mut artifact = artifact(&["prod/web"]);
        artifact.endpoints[0].identity = 258;
        artifact.endpoints[0].ingress_table = 5;
        let label = |k: &str, v: &str| (format!("k8s:{k}"), v.to_owned());
        artifact.identities = vec![compiler::artifact::IdentityRecord {
            id: 258,
            labels: vec![
                label("app", "web"),
                label("io.cilium.k8s.namespace.labels.team", "shop"),
                label("io.cilium.k8s.policy.serviceaccount", "default"),
                label("io.kubernetes.pod.namespace", "prod"),
            ],
        }];
        artifact
    }

    fn unlisted_binding(labels: &[(&str, &str)]) -> Binding {
        Binding {
            interface: "pw2".into(),
            endpoint: "prod/web-2".into(),
            pod: Some(UnlistedPod {
                addresses: vec!["198.18.0.13".parse().unwrap()],
                labels: labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
                service_account: None,
            }),
        }
    }

    #[test]
    fn an_unlisted_pod_gets_the_identity_and_tables_of_its_label_set() {
        let artifact = with_web_identity();
        // pod-template-hash is noise: a new replica differs from the old only there.
        let binding = unlisted_binding(&[("app", "web"), ("pod-template-hash", "7d9f8c")]);

        let bound = resolve(&artifact, &[binding], |_| Ok(12)).unwrap();

        assert_eq!(bound[0].policy.identity, 258);
        assert_eq!((bound[0].policy.ingress_table, bound[0].policy.egress_table), (5, 0));
        assert_eq!(bound[0].policy.endpoint_id, endpoint_number("prod/web-2"));
        assert_eq!(bound[0].addresses, ["198.18.0.13".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn an_unlisted_pod_counts_its_labels_by_the_artifacts_rules() {
        // Compiled with --identity-include example.com/* and --identity-exclude app: the
        // identity carries example.com/team and not app.
        let mut artifact = with_web_identity();
        let rules = &mut artifact.identity_labels;
        rules.include = vec!["example.com/*".into()];
        rules.exclude = vec!["app".into()];
        artifact.identities[0].labels[0] = ("k8s:example.com/team".into(), "shop".into());
        let binding = unlisted_binding(&[("app", "web-2"), ("example.com/team", "shop")]);
        let bound = resolve(&artifact, &[binding], |_| Ok(12)).unwrap();
        assert_eq!(bound[0].policy.identity, 258);

        // A key some selector reads counts although the default filter drops it.
        let mut artifact = with_web_identity();
        artifact.identity_labels.selected = vec!["pod-template-hash".into()];
        artifact.identities[0].labels.push(("k8s:pod-template-hash".into(), "7d9f8c".into()));
        let same = unlisted_binding(&[("app", "web"), ("pod-template-hash", "7d9f8c")]);
        assert_eq!(resolve(&artifact, &[same], |_| Ok(12)).unwrap()[0].policy.identity, 258);
        let other = unlisted_binding(&[("app", "web"), ("pod-template-hash", "000000")]);
        let err = resolve(&artifact, &[other], |_| Ok(12)).unwrap_err();
        assert!(matches!(err, RuntimeError::UnknownIdentity { .. }), "{err}");
    }

    #[test]
    fn an_unlisted_pod_with_an_unknown_label_set_asks_for_a_recompile() {
        let artifact = with_web_identity();
        let err =
            resolve(&artifact, &[unlisted_binding(&[("app", "cache")])], |_| Ok(12)).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, RuntimeError::UnknownIdentity { .. }), "{message}");
        assert!(message.contains("k8s:app=cache") && message.contains("recompile"), "{message}");
        // Without labels at all, it is simply an endpoint the artifact does not have.
        let bare = Binding { pod: None, ..unlisted_binding(&[]) };
        let err = resolve(&artifact, &[bare], |_| Ok(12)).unwrap_err();
        assert!(matches!(err, RuntimeError::UnknownEndpoint { .. }), "{err}");
    }

    #[test]
    fn edit_distance_counts_single_edits() {
        assert_eq!(edit_distance("web", "web"), 0);
        assert_eq!(edit_distance("web", "wbe"), 2);
        assert_eq!(edit_distance("web", "webs"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }
}
