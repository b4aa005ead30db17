//! Solving: policies against the inventory, into identities, tables and an artifact.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use datapath::{IpcacheKey, IpcacheValue};
use policy_lang::ast::{
    Cidr, Direction, Labels, NetPeer, NetPort, NetRule, NetworkPolicy, Pod, PortRef,
};
use policy_lang::{Bundle, Diagnostic, Sources};
use sha2::{Digest, Sha256};

use crate::artifact::{Artifact, EndpointRecord, IdentityRecord, RuleRecord};
use crate::codes;
use crate::identity::{self, Allocator, FIRST_CIDR_IDENTITY, reserved};
use crate::tables::{self, Entry, Pattern, Verdict};

/// Port ranges are written as one exact key per port until the datapath has range
/// lookups; wider ranges are refused rather than silently truncated.
pub const MAX_EXPANDED_RANGE: u32 = 256;

/// What a compile produced.
#[derive(Debug)]
pub struct Compilation {
    pub artifact: Artifact,
    pub diagnostics: Vec<Diagnostic>,
    pub stats: Stats,
}

/// Sizes of what was produced, for `compile --stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub identities: usize,
    pub endpoints: usize,
    pub tables: usize,
    pub ipcache_entries: usize,
    pub policy_entries: usize,
}

/// One pod with what solving needs to know about it.
struct Endpoint<'a> {
    pod: &'a Pod,
    name: String,
    identity: u32,
}

/// Compiles a parsed bundle. Diagnostics of the bundle are not repeated here; the
/// caller decides whether errors in it stop the compile.
pub fn compile(sources: &Sources, bundle: &Bundle) -> Compilation {
    let _span = tracing::info_span!("compile").entered();
    let mut diagnostics = Vec::new();

    // Namespaces: declared ones, plus any a pod or policy lives in. Kubernetes labels
    // every namespace with its name (kubernetes.io/metadata.name), so we do too.
    let mut namespaces: BTreeMap<String, Labels> = BTreeMap::new();
    for ns in &bundle.namespaces {
        let mut labels = ns.meta.labels.clone();
        labels.insert("kubernetes.io/metadata.name".into(), ns.meta.name.value.clone());
        namespaces.insert(ns.meta.name.value.clone(), labels);
    }
    for meta in bundle.pods.iter().map(|p| &p.meta).chain(bundle.network_policies.iter().map(|p| &p.meta)) {
        if !namespaces.contains_key(&meta.namespace) {
            diagnostics.push(
                Diagnostic::new(
                    codes::UNKNOWN_NAMESPACE,
                    format!("namespace `{}` is not in the inventory", meta.namespace),
                )
                .at(meta.name.span, "its namespace has no Namespace object")
                .help("add the Namespace manifest so namespace selectors see its labels"),
            );
            let labels = Labels::from([("kubernetes.io/metadata.name".into(), meta.namespace.clone())]);
            namespaces.insert(meta.namespace.clone(), labels);
        }
    }

    // Identities.
    let pod_labels: Vec<Labels> = bundle
        .pods
        .iter()
        .map(|p| identity::pod_identity_labels(&p.meta.labels, &p.meta.namespace, &namespaces[&p.meta.namespace]))
        .collect();
    let allocator = {
        let _span = tracing::info_span!("identities").entered();
        Allocator::allocate(pod_labels.iter())
    };
    let mut endpoints: Vec<Endpoint<'_>> = bundle
        .pods
        .iter()
        .zip(&pod_labels)
        .map(|(pod, labels)| Endpoint {
            pod,
            name: format!("{}/{}", pod.meta.namespace, pod.meta.name.value),
            identity: allocator.get(labels).expect("every pod's labels were allocated"),
        })
        .collect();
    endpoints.sort_by(|a, b| a.name.cmp(&b.name));

    // Rule cookies, in a deterministic order: policies by namespace and name.
    let mut policies: Vec<&NetworkPolicy> = bundle.network_policies.iter().collect();
    policies.sort_by(|a, b| (&a.meta.namespace, &a.meta.name.value).cmp(&(&b.meta.namespace, &b.meta.name.value)));
    let mut rules = Vec::new();
    let mut cookies: BTreeMap<(usize, Direction, usize), u32> = BTreeMap::new();
    for (pi, policy) in policies.iter().enumerate() {
        for direction in [Direction::Ingress, Direction::Egress] {
            for (ri, rule) in policy.rules(direction).iter().enumerate() {
                let cookie = rules.len() as u32 + 1;
                cookies.insert((pi, direction, ri), cookie);
                rules.push(RuleRecord {
                    cookie,
                    policy: format!("NetworkPolicy {}/{}", policy.meta.namespace, policy.meta.name.value),
                    rule: format!("{}[{ri}]", direction.name()),
                    location: sources.location(rule.span),
                });
            }
        }
    }
    let host_cookie = rules.len() as u32 + 1;
    rules.push(RuleRecord {
        cookie: host_cookie,
        policy: "built-in".into(),
        rule: "allow traffic from the endpoint's own node".into(),
        location: String::new(),
    });

    // CIDR identities: one per distinct prefix any ipBlock names (cidr or except).
    let mut prefixes: BTreeSet<Cidr> = BTreeSet::new();
    for policy in &policies {
        for rule in policy.ingress.iter().chain(&policy.egress) {
            for peer in &rule.peers {
                if let NetPeer::IpBlock { cidr, except, .. } = peer {
                    prefixes.insert(*cidr);
                    prefixes.extend(except.iter().copied());
                }
            }
        }
    }
    let cidr_identities: BTreeMap<Cidr, u32> =
        prefixes.iter().enumerate().map(|(i, c)| (*c, FIRST_CIDR_IDENTITY + i as u32)).collect();

    let cx = Context { namespaces: &namespaces, endpoints: &endpoints, cidr_identities: &cidr_identities };

    // Tables: one per distinct content, numbered from 1 in order of first use.
    let _tables_span = tracing::info_span!("tables").entered();
    let mut tables: BTreeMap<tables::Table, u32> = BTreeMap::new();
    let mut artifact = Artifact::default();
    for (endpoint_id, ep) in endpoints.iter().enumerate() {
        let mut table_ids = [0u32; 2];
        for (slot, direction) in [Direction::Ingress, Direction::Egress].into_iter().enumerate() {
            let selecting: Vec<(usize, &&NetworkPolicy)> = policies
                .iter()
                .enumerate()
                .filter(|(_, p)| {
                    p.meta.namespace == ep.pod.meta.namespace
                        && p.policy_types.contains(&direction)
                        && p.pod_selector.matches(&ep.pod.meta.labels)
                })
                .collect();
            if selecting.is_empty() {
                continue; // Not isolated in this direction: table 0.
            }
            let mut entries = Vec::new();
            for (pi, policy) in selecting {
                for (ri, rule) in policy.rules(direction).iter().enumerate() {
                    let cookie = cookies[&(pi, direction, ri)];
                    cx.rule_entries(policy, rule, direction, ep, cookie, &mut entries, &mut diagnostics);
                }
            }
            if direction == Direction::Ingress {
                entries.push(Entry {
                    pattern: Pattern { identity: reserved::HOST, proto: 0, port: None },
                    verdict: Verdict::Allow,
                    cookie: host_cookie,
                });
            }
            let table = tables::fold(&entries);
            let next = tables.len() as u32 + 1;
            table_ids[slot] = *tables.entry(table).or_insert(next);
        }
        artifact.endpoints.push(EndpointRecord {
            name: ep.name.clone(),
            endpoint_id: endpoint_id as u32 + 1,
            identity: ep.identity,
            ingress_table: table_ids[0],
            egress_table: table_ids[1],
            addresses: ep.pod.ips.iter().map(|ip| ip.value).collect(),
        });
    }
    for (table, id) in &tables {
        for (pattern, value) in table {
            artifact.policy.push((pattern.key(*id), *value));
        }
    }
    drop(_tables_span);

    // The address table: pod addresses, then CIDR prefixes. A pod address is a host
    // prefix, so it is more specific than any CIDR containing it: by default an ipBlock
    // never matches a pod, as in Cilium.
    for ep in &endpoints {
        for ip in &ep.pod.ips {
            let (family, addr, bits) = address_bytes(ip.value);
            artifact.ipcache.push((
                IpcacheKey::new(family, addr, bits),
                IpcacheValue { identity: ep.identity, flags: 0 },
            ));
        }
    }
    for (cidr, id) in &cidr_identities {
        let (family, addr, _) = address_bytes(cidr.addr);
        artifact.ipcache.push((
            IpcacheKey::new(family, addr, u32::from(cidr.prefix)),
            IpcacheValue { identity: *id, flags: 0 },
        ));
    }
    artifact.ipcache.sort();
    artifact.ipcache.dedup_by(|a, b| a.0 == b.0);

    // Identities, with labels for observability.
    artifact.identities.push(IdentityRecord { id: reserved::HOST, labels: vec![("reserved:host".into(), String::new())] });
    artifact.identities.push(IdentityRecord { id: reserved::WORLD, labels: vec![("reserved:world".into(), String::new())] });
    for (labels, id) in allocator.iter() {
        let labels = labels.iter().map(|(k, v)| (format!("k8s:{k}"), v.clone())).collect();
        artifact.identities.push(IdentityRecord { id, labels });
    }
    for (cidr, id) in &cidr_identities {
        artifact.identities.push(IdentityRecord { id: *id, labels: vec![(format!("cidr:{cidr}"), String::new())] });
    }
    artifact.rules = rules;
    artifact.source_digest = source_digest(sources);
    artifact.normalize();

    let stats = Stats {
        identities: artifact.identities.len(),
        endpoints: artifact.endpoints.len(),
        tables: tables.len(),
        ipcache_entries: artifact.ipcache.len(),
        policy_entries: artifact.policy.len(),
    };
    tracing::debug!(?stats, "compiled");
    Compilation { artifact, diagnostics, stats }
}

struct Context<'a> {
    namespaces: &'a BTreeMap<String, Labels>,
    endpoints: &'a [Endpoint<'a>],
    cidr_identities: &'a BTreeMap<Cidr, u32>,
}

impl Context<'_> {
    /// The entries one rule contributes to the table of `subject`.
    #[expect(clippy::too_many_arguments, reason = "one call site; a struct would only rename them")]
    fn rule_entries(
        &self,
        policy: &NetworkPolicy,
        rule: &NetRule,
        direction: Direction,
        subject: &Endpoint<'_>,
        cookie: u32,
        out: &mut Vec<Entry>,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        // Peers as identity sets; `None` stands for every identity, world included.
        let peers: Option<BTreeSet<u32>> = if rule.peers.is_empty() {
            None
        } else {
            Some(rule.peers.iter().flat_map(|peer| self.peer_identities(policy, peer)).collect())
        };
        let any_port = [None];
        let ports: &[Option<&NetPort>] = &if rule.ports.is_empty() {
            any_port.to_vec()
        } else {
            rule.ports.iter().map(Some).collect::<Vec<_>>()
        };
        for port in ports {
            // Resolve the port per peer identity: a named port means the number that
            // the destination pod gives that name, and the destination is the subject
            // for ingress and the peer for egress.
            let peer_list: Vec<u32> = match &peers {
                Some(set) => set.iter().copied().collect(),
                None => vec![reserved::ANY],
            };
            for identity in peer_list {
                let Some(port) = port else {
                    out.push(Entry { pattern: Pattern { identity, proto: 0, port: None }, verdict: Verdict::Allow, cookie });
                    continue;
                };
                let proto = port.protocol.number();
                let numbers: Vec<(u16, u16)> = match &port.port {
                    None => {
                        out.push(Entry { pattern: Pattern { identity, proto, port: None }, verdict: Verdict::Allow, cookie });
                        continue;
                    }
                    Some(PortRef::Number(start)) => vec![(*start, port.end_port.unwrap_or(*start))],
                    Some(PortRef::Name(name)) => {
                        let destinations: Vec<&Pod> = match direction {
                            Direction::Ingress => vec![subject.pod],
                            Direction::Egress => self
                                .endpoints
                                .iter()
                                .filter(|e| identity == reserved::ANY || e.identity == identity)
                                .map(|e| e.pod)
                                .collect(),
                        };
                        let mut found: BTreeSet<u16> = BTreeSet::new();
                        for pod in destinations {
                            found.extend(
                                pod.ports
                                    .iter()
                                    .filter(|p| p.name.as_deref() == Some(name) && p.protocol == port.protocol)
                                    .map(|p| p.port),
                            );
                        }
                        if identity == reserved::ANY && direction == Direction::Egress {
                            // Only pods have named ports: expand to the identities that
                            // define the name, instead of opening the port to everyone.
                            for e in self.endpoints {
                                for p in e.pod.ports.iter().filter(|p| p.name.as_deref() == Some(name) && p.protocol == port.protocol) {
                                    out.push(Entry { pattern: Pattern { identity: e.identity, proto, port: Some(p.port) }, verdict: Verdict::Allow, cookie });
                                }
                            }
                            continue;
                        }
                        found.into_iter().map(|p| (p, p)).collect()
                    }
                };
                for (start, end) in numbers {
                    let width = u32::from(end) - u32::from(start) + 1;
                    if width > MAX_EXPANDED_RANGE {
                        diagnostics.push(
                            Diagnostic::new(
                                codes::RANGE_TOO_WIDE,
                                format!("port range {start}-{end} spans {width} ports"),
                            )
                            .at(port.span, "range not compiled")
                            .help(format!("ranges of more than {MAX_EXPANDED_RANGE} ports are not supported yet; split the rule or list the ports")),
                        );
                        continue;
                    }
                    for number in start..=end {
                        out.push(Entry { pattern: Pattern { identity, proto, port: Some(number) }, verdict: Verdict::Allow, cookie });
                    }
                }
            }
        }
    }

    fn peer_identities(&self, policy: &NetworkPolicy, peer: &NetPeer) -> Vec<u32> {
        match peer {
            NetPeer::Pods { namespace_selector, pod_selector, .. } => self
                .endpoints
                .iter()
                .filter(|e| {
                    let ns = &e.pod.meta.namespace;
                    let ns_ok = match namespace_selector {
                        None => *ns == policy.meta.namespace,
                        Some(sel) => sel.matches(&self.namespaces[ns]),
                    };
                    ns_ok && pod_selector.as_ref().is_none_or(|s| s.matches(&e.pod.meta.labels))
                })
                .map(|e| e.identity)
                .collect(),
            NetPeer::IpBlock { cidr, except, .. } => self
                .cidr_identities
                .iter()
                .filter(|(prefix, _)| {
                    cidr.contains_cidr(prefix) && !except.iter().any(|e| e.contains_cidr(prefix))
                })
                .map(|(_, id)| *id)
                .collect(),
        }
    }
}

fn address_bytes(ip: IpAddr) -> (u8, [u8; 16], u32) {
    let mut addr = [0u8; 16];
    match ip {
        IpAddr::V4(v4) => {
            addr[..4].copy_from_slice(&v4.octets());
            (datapath::FAMILY_IPV4, addr, 32)
        }
        IpAddr::V6(v6) => (datapath::FAMILY_IPV6, v6.octets(), 128),
    }
}

/// SHA-256 over every input file's name and text, in name order.
fn source_digest(sources: &Sources) -> [u8; 32] {
    let mut files: Vec<_> = sources.iter().map(|(_, f)| f).collect();
    files.sort_by(|a, b| a.name.cmp(&b.name));
    let mut hasher = Sha256::new();
    for file in files {
        hasher.update((file.name.len() as u64).to_le_bytes());
        hasher.update(file.name.as_bytes());
        hasher.update((file.text.len() as u64).to_le_bytes());
        hasher.update(file.text.as_bytes());
    }
    hasher.finalize().into()
}
