//! Solving: the IR against the inventory, into identities, tables and an artifact.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use datapath::{HostKey, IpcacheKey};
use policy_lang::ast::{Cidr, ContainerPort, Direction, Labels, Node, Pod};
use policy_lang::{Bundle, Diagnostic, Sources};
use sha2::{Digest, Sha256};

use crate::artifact::{Artifact, EndpointRecord, IdentityRecord, RuleRecord};
use crate::codes;
use crate::identity::{self, Allocator, reserved};
use crate::ir::{Action, Enforcement, Entity, Peer, Policy, PortSpec, Rule};
use crate::tables::{self, Entry, Pattern, PortBlock, Verdict};
use crate::{lower, lower_cilium};

/// How a host endpoint's name starts: `node/<node name>`.
pub const HOST_ENDPOINT_PREFIX: &str = "node/";

/// Identity labels that record how a pod resolves a port name egress rules use.
const PORT_LABEL_PREFIX: &str = "policyc.port.";

/// Protocols a port (or a port name) without a protocol stands for.
const PORT_PROTOCOLS: [u8; 3] = [6, 17, 132];

/// What a compile produced.
#[derive(Debug)]
pub struct Compilation {
    pub artifact: Artifact,
    pub diagnostics: Vec<Diagnostic>,
    pub stats: Stats,
    /// The identity lock after this compile, to write back.
    pub lock: crate::lock::Lock,
    /// What lints need to reason about policies beyond the tables.
    pub analysis: Analysis,
}

/// The solved model behind an artifact, for lints and traces.
#[derive(Debug, Default)]
pub struct Analysis {
    /// Lowered policies, in cookie order.
    pub policies: Vec<Policy>,
    /// Rule cookies of each policy's rules, parallel to `policies[i].rules`.
    pub cookies: Vec<Vec<u32>>,
    /// Per rule cookie: the flow patterns it contributed, and the classes of endpoints
    /// it applied to. A class is a set of endpoints that every policy selects alike
    /// (one identity, the same container ports), so comparing two rules' class sets
    /// compares the endpoints they apply to.
    pub rule_flows: BTreeMap<u32, (BTreeSet<Pattern>, BTreeSet<usize>)>,
    /// Endpoint labels (pod labels plus namespace labels; a host endpoint's are its
    /// node's labels), by artifact endpoint index.
    pub endpoint_labels: Vec<Labels>,
}

/// Sizes of what was produced, for `compile --stats`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub identities: usize,
    pub endpoints: usize,
    pub tables: usize,
    /// Full-length addresses (pods, nodes, /32 and /128 CIDRs): the datapath's hosts hash
    /// map, see [`datapath::HostKey::of_prefix`].
    pub host_entries: usize,
    /// Shorter prefixes: the datapath's ipcache trie.
    pub ipcache_entries: usize,
    pub policy_entries: usize,
}

/// One pod with what solving needs to know about it.
struct Endpoint<'a> {
    pod: &'a Pod,
    name: String,
    labels: Labels,
    identity: u32,
}

/// How to compile.
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Identity numbers to keep (see [`crate::lock`]); empty for a fresh numbering.
    pub lock: crate::lock::Lock,
    /// Entry limits per table; exceeding one is an error, never a truncation.
    pub capacity: Capacity,
    /// When directions are enforced.
    pub enforcement: crate::ir::Enforcement,
    /// Which labels count for identity beyond the default filter.
    pub labels: identity::LabelFilter,
    /// Whether an ipBlock also matches pod addresses, as upstream Kubernetes specifies.
    /// Off by default, as in Cilium: pods are matched by their labels, and a CIDR peer
    /// means addresses outside the cluster.
    pub ipblock_matches_pods: bool,
}

/// How many entries each datapath map may hold. The defaults are the capacities the
/// datapath object is built with; lower limits leave headroom for growth. The endpoints
/// map is not checked here: it holds a node's own endpoints only, a subset of the
/// artifact's, and the node runtime checks it when it binds them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capacity {
    /// Full-length addresses (pods, nodes, /32 and /128 CIDRs): the hosts map.
    pub hosts: usize,
    /// Shorter prefixes: the ipcache trie.
    pub ipcache: usize,
    pub policy: usize,
}

impl Default for Capacity {
    fn default() -> Self {
        Capacity {
            hosts: datapath::capacity::HOSTS as usize,
            ipcache: datapath::capacity::IPCACHE as usize,
            policy: datapath::capacity::POLICY as usize,
        }
    }
}

/// Compiles a parsed bundle with default options.
pub fn compile(sources: &Sources, bundle: &Bundle) -> Compilation {
    compile_with(sources, bundle, &Options::default())
}

/// Compiles a parsed bundle. Diagnostics of the bundle are not repeated here; the
/// caller decides whether errors in it stop the compile.
pub fn compile_with(sources: &Sources, bundle: &Bundle, options: &Options) -> Compilation {
    let _span = tracing::info_span!("compile").entered();
    let mut diagnostics = Vec::new();
    let namespaces = namespace_labels(bundle, &mut diagnostics);

    // Lower every policy, in a deterministic order.
    let mut policies: Vec<Policy> = {
        let _span = tracing::info_span!("lower").entered();
        bundle
            .network_policies
            .iter()
            .map(lower::network_policy)
            .chain(bundle.cilium_policies.iter().flat_map(lower_cilium::cilium_policy))
            .collect()
    };
    policies.sort_by(|a, b| (a.tier, a.priority, &a.name).cmp(&(b.tier, b.priority, &b.name)));

    // Identities: every key a selector reads counts, so selection by identity is exact.
    let selected_keys = identity::selected_keys(&policies);
    // Pods on the host network are the node as far as the network sees them: they have
    // the node's address and no interface of their own, so they are not endpoints.
    let mut endpoints: Vec<Endpoint<'_>> = bundle
        .pods
        .iter()
        .filter(|pod| !pod.host_network)
        .map(|pod| Endpoint {
            pod,
            name: format!("{}/{}", pod.meta.namespace, pod.meta.name.value),
            labels: identity::pod_endpoint_labels(pod, &namespaces),
            identity: 0,
        })
        .collect();
    endpoints.sort_by(|a, b| a.name.cmp(&b.name));
    // A port name that egress rules use must resolve alike on every pod of an identity,
    // since egress entries are keyed by the peer's identity: the resolution joins the
    // identity labels, so pods that give the name different numbers (or none) get
    // different identities.
    let egress_names: BTreeSet<(String, u8)> = policies
        .iter()
        .flat_map(|p| &p.rules)
        .filter(|r| r.direction == Direction::Egress)
        .flat_map(|r| &r.ports)
        .filter_map(|p| match &p.port {
            PortSpec::Named(name) => Some((name.clone(), p.proto)),
            _ => None,
        })
        .flat_map(|(name, proto)| match proto {
            Some(proto) => vec![(name, proto)],
            None => PORT_PROTOCOLS.iter().map(|p| (name.clone(), *p)).collect(),
        })
        .collect();
    let ip_blocks: BTreeSet<(Cidr, Vec<Cidr>)> = if options.ipblock_matches_pods {
        policies
            .iter()
            .flat_map(|p| &p.rules)
            .flat_map(|r| r.peers.iter().flatten())
            .filter_map(|peer| match peer {
                Peer::Cidr { cidr, except } => Some((*cidr, except.clone())),
                _ => None,
            })
            .collect()
    } else {
        BTreeSet::new()
    };
    let identity_labels: Vec<Labels> = endpoints
        .iter()
        .map(|e| {
            let mut labels = identity::identity_labels(&e.labels, &selected_keys, &options.labels);
            for (name, proto) in &egress_names {
                let numbers: Vec<String> = e
                    .pod
                    .ports
                    .iter()
                    .filter(|p| p.name.as_deref() == Some(name) && p.protocol.number() == *proto)
                    .map(|p| p.port.to_string())
                    .collect();
                if !numbers.is_empty() {
                    labels.insert(format!("{PORT_LABEL_PREFIX}{name}.{proto}"), numbers.join("_"));
                }
            }
            // With ipBlocks matching pods, membership in each ipBlock joins the identity
            // labels too, so that "the pods inside this block" is a set of identities.
            for (cidr, except) in &ip_blocks {
                if e.pod.ips.iter().any(|ip| in_block(ip.value, cidr, except)) {
                    labels.insert(ip_block_label(cidr, except), String::new());
                }
            }
            labels
        })
        .collect();
    let (allocator, lock) = {
        let _span = tracing::info_span!("identities").entered();
        Allocator::with_lock(identity_labels.iter(), &options.lock)
    };
    for (ep, labels) in endpoints.iter_mut().zip(&identity_labels) {
        ep.identity = allocator.get(labels).expect("every endpoint's labels were allocated");
    }

    // Rule cookies, numbered from 1 in policy order.
    let mut rules: Vec<RuleRecord> = Vec::new();
    let mut cookie_jar = CookieJar::default();
    let mut cookies: Vec<Vec<u32>> = Vec::new();
    for policy in &policies {
        let mut ids = Vec::new();
        for rule in &policy.rules {
            let cookie = cookie_jar.take(&policy.name, &rule.label);
            ids.push(cookie);
            rules.push(RuleRecord {
                cookie,
                policy: policy.name.clone(),
                rule: rule.label.clone(),
                location: sources.location(rule.span),
            });
        }
        cookies.push(ids);
    }
    let host_cookie = cookie_jar.take("built-in", "host");
    rules.push(RuleRecord {
        cookie: host_cookie,
        policy: "built-in".into(),
        rule: "allow traffic from the endpoint's own node".into(),
        location: String::new(),
    });
    let open_cookie = cookie_jar.take("built-in", "not isolated");
    rules.push(RuleRecord {
        cookie: open_cookie,
        policy: "built-in".into(),
        rule: "direction not isolated: allow what no deny rule denies".into(),
        location: String::new(),
    });

    // CIDR identities: one per distinct prefix any CIDR peer names (cidr or except).
    let prefixes: BTreeSet<Cidr> = policies
        .iter()
        .flat_map(|p| &p.rules)
        .flat_map(|r| r.peers.iter().flatten())
        .flat_map(|peer| match peer {
            Peer::Cidr { cidr, except } => {
                std::iter::once(*cidr).chain(except.iter().copied()).collect()
            }
            _ => Vec::new(),
        })
        .collect();
    let cidr_identities: BTreeMap<Cidr, u32> = identity::cidr_identities(&prefixes);

    let mut by_namespace: BTreeMap<&str, Vec<&Endpoint<'_>>> = BTreeMap::new();
    let mut seen_identities = BTreeSet::new();
    for ep in &endpoints {
        if seen_identities.insert(ep.identity) {
            by_namespace.entry(ep.pod.meta.namespace.as_str()).or_default().push(ep);
        }
    }
    let cx = Context {
        endpoints: &endpoints,
        cidr_identities: &cidr_identities,
        ipblock_matches_pods: options.ipblock_matches_pods,
        by_namespace,
    };

    // Peer identity sets, once per rule: they do not depend on the subject. A set that
    // holds every identity there is (each pod's, each reserved one's, each CIDR's) is
    // the wildcard: one entry instead of one per identity.
    let universe: BTreeSet<u32> = endpoints
        .iter()
        .map(|e| e.identity)
        .chain(cx.entity_identities(Entity::Cluster))
        .chain([reserved::WORLD])
        .chain(cidr_identities.values().copied())
        .collect();
    let peer_sets: Vec<Vec<Option<BTreeSet<u32>>>> = {
        let _span = tracing::info_span!("peers").entered();
        policies
            .iter()
            .map(|p| {
                p.rules
                    .iter()
                    .map(|r| {
                        let set: Option<BTreeSet<u32>> = r.peers.as_ref().map(|peers| {
                            peers.iter().flat_map(|peer| cx.peer_identities(peer)).collect()
                        });
                        match set {
                            Some(set)
                                if set.contains(&reserved::ANY) || set.is_superset(&universe) =>
                            {
                                Some(BTreeSet::from([reserved::ANY]))
                            }
                            other => other,
                        }
                    })
                    .collect()
            })
            .collect()
    };
    // Policies by the namespace their subject is pinned to (namespaced kinds), so each
    // endpoint only tests the policies of its namespace and the cluster-wide ones.
    let mut by_namespace: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut cluster_wide = Vec::new();
    for (i, policy) in policies.iter().enumerate() {
        match policy.subject.match_labels.get(identity::NAMESPACE_LABEL) {
            Some(ns) => by_namespace.entry(ns.as_str()).or_default().push(i),
            None => cluster_wide.push(i),
        }
    }

    // Tables: one per distinct content. Endpoints of one identity and the same container
    // ports get the same tables (selection is by identity, and only an ingress rule's
    // named port looks at the subject's own ports), so each such class is solved once.
    let tables_span = tracing::info_span!("tables").entered();
    let solver = TableSolver {
        enforcement: options.enforcement,
        policies: &policies,
        cookies: &cookies,
        peer_sets: &peer_sets,
        cx: &cx,
        open_cookie,
        host_cookie,
    };
    let mut out = TableOutput::default();
    // (identity, container ports as (name, number, protocol)) -> (ingress, egress) tables
    type Class = (u32, Vec<(Option<String>, u16, u8)>);
    let mut classes: BTreeMap<Class, [u32; 2]> = BTreeMap::new();
    let mut artifact = Artifact::default();
    let mut endpoint_labels: Vec<(String, Labels)> =
        endpoints.iter().map(|e| (e.name.clone(), e.labels.clone())).collect();
    let mut used_ids = BTreeSet::new();
    let pod_ids = endpoint_ids(endpoints.iter().map(|e| e.name.as_str()), &mut used_ids);
    for (index, ep) in endpoints.iter().enumerate() {
        let ports: Vec<(Option<String>, u16, u8)> =
            ep.pod.ports.iter().map(|p| (p.name.clone(), p.port, p.protocol.number())).collect();
        let class = (ep.identity, ports);
        // An endpoint like one already solved has its tables, and nothing to add to
        // what lints know: no selector is evaluated again for it.
        if let Some(ids) = classes.get(&class) {
            let ids = *ids;
            push_endpoint(&mut artifact, ep, pod_ids[index], ids);
            continue;
        }
        let class_index = classes.len();
        let mut selecting: Vec<usize> = by_namespace
            .get(ep.pod.meta.namespace.as_str())
            .into_iter()
            .flatten()
            .chain(&cluster_wide)
            .copied()
            .filter(|&i| !policies[i].nodes && policies[i].subject.matches(&ep.labels))
            .collect();
        selecting.sort_unstable();
        let table_ids = solver.tables(&selecting, &ep.pod.ports, &class.1, class_index, &mut out);
        classes.insert(class, table_ids);
        push_endpoint(&mut artifact, ep, pod_ids[index], table_ids);
    }
    // Host endpoints: one per node that a host policy selects, solved like a pod with no
    // container port, from the host policies alone.
    let mut hosts = host_endpoints(bundle, &policies);
    // `node/<name>` is also what a pod `<name>` of a namespace `node` is called: such a
    // host endpoint could not be told apart when bound, so it is refused.
    hosts.retain(|host| {
        let taken = endpoints.iter().any(|e| e.name == host.name);
        if taken {
            diagnostics.push(
                Diagnostic::new(
                    codes::HOST_ENDPOINT_NAME_TAKEN,
                    format!("the host endpoint of node {} would be named {}, as a pod is", host.node.meta.name.value, host.name),
                )
                .at(host.node.meta.name.span, "a host policy selects this node")
                .help("rename the namespace `node` (its pods' endpoint names collide with host endpoints), or do not select this node"),
            );
        }
        !taken
    });
    let host_ids = endpoint_ids(hosts.iter().map(|h| h.name.as_str()), &mut used_ids);
    for (i, (host, endpoint_id)) in hosts.iter().zip(host_ids).enumerate() {
        let table_ids = solver.tables(&host.selecting, &[], &[], classes.len() + i, &mut out);
        artifact.endpoints.push(EndpointRecord {
            name: host.name.clone(),
            endpoint_id,
            identity: reserved::HOST,
            ingress_table: table_ids[0],
            egress_table: table_ids[1],
            addresses: host.node.addresses.iter().map(|a| a.ip.value).collect(),
        });
        endpoint_labels.push((host.name.clone(), host.node.meta.labels.clone()));
    }
    // The artifact sorts its endpoints by name; the labels follow the same order.
    endpoint_labels.sort_by(|a, b| a.0.cmp(&b.0));
    let TableOutput { tables, rule_flows } = out;
    let table_ids = table_ids(&tables);
    for ep in &mut artifact.endpoints {
        for table in [&mut ep.ingress_table, &mut ep.egress_table] {
            if *table != 0 {
                *table = table_ids[table];
            }
        }
    }
    for ((_, table), interned) in &tables {
        for (pattern, value) in table {
            artifact.policy.push((pattern.key(table_ids[interned]), *value));
        }
    }
    drop(tables_span);

    // The address table: pod addresses, then CIDR prefixes. A pod address is a host
    // prefix, so it is more specific than any CIDR containing it: by default a CIDR peer
    // never matches a pod, as in Cilium.
    for ep in &endpoints {
        for ip in &ep.pod.ips {
            let (family, addr, bits) = address_bytes(ip.value);
            artifact.ipcache.push((IpcacheKey::new(family, addr, bits), ep.identity));
        }
    }
    for (cidr, id) in &cidr_identities {
        let (family, addr, _) = address_bytes(cidr.addr);
        artifact.ipcache.push((IpcacheKey::new(family, addr, u32::from(cidr.prefix)), *id));
    }
    // Node addresses are remote nodes. The artifact serves every node alike, so a node's
    // own address is not told apart here: the node runtime gives the addresses of the
    // node it runs on the host identity in its own hosts map when it binds that node's
    // host endpoint (`runtime::state`), which the built-in host rule and host policies'
    // "local address" test key on.
    let mut has_nodes = false;
    for node in &bundle.nodes {
        for address in &node.addresses {
            let (family, addr, bits) = address_bytes(address.ip.value);
            artifact.ipcache.push((IpcacheKey::new(family, addr, bits), reserved::REMOTE_NODE));
            has_nodes = true;
        }
    }
    artifact.ipcache.sort();
    artifact.ipcache.dedup_by(|a, b| a.0 == b.0);

    // Identities, with labels for observability.
    for (id, name) in [(reserved::HOST, "reserved:host"), (reserved::WORLD, "reserved:world")] {
        artifact.identities.push(IdentityRecord { id, labels: vec![(name.into(), String::new())] });
    }
    if has_nodes {
        let labels = vec![("reserved:remote-node".into(), String::new())];
        artifact.identities.push(IdentityRecord { id: reserved::REMOTE_NODE, labels });
    }
    for (labels, id) in allocator.iter() {
        let labels = labels.iter().map(|(k, v)| (format!("k8s:{k}"), v.clone())).collect();
        artifact.identities.push(IdentityRecord { id, labels });
    }
    for (cidr, id) in &cidr_identities {
        artifact.identities.push(IdentityRecord {
            id: *id,
            labels: vec![(format!("cidr:{cidr}"), String::new())],
        });
    }
    artifact.rules = rules;
    artifact.identity_labels = crate::artifact::IdentityLabelRules {
        selected: selected_keys.iter().cloned().collect(),
        include: options.labels.include.clone(),
        exclude: options.labels.exclude.clone(),
    };
    artifact.source_digest = source_digest(sources);
    artifact.normalize();

    let host_entries =
        artifact.ipcache.iter().filter(|(k, _)| HostKey::of_prefix(k).is_some()).count();
    let stats = Stats {
        identities: artifact.identities.len(),
        endpoints: artifact.endpoints.len(),
        tables: tables.len(),
        host_entries,
        ipcache_entries: artifact.ipcache.len() - host_entries,
        policy_entries: artifact.policy.len(),
    };
    tracing::debug!(?stats, "compiled");
    check_capacity(&artifact, &options.capacity, &mut diagnostics);
    let analysis = Analysis {
        endpoint_labels: endpoint_labels.into_iter().map(|(_, labels)| labels).collect(),
        policies,
        cookies,
        rule_flows,
    };
    Compilation { artifact, diagnostics, stats, lock, analysis }
}

fn in_block(ip: std::net::IpAddr, cidr: &Cidr, except: &[Cidr]) -> bool {
    cidr.contains(ip) && !except.iter().any(|e| e.contains(ip))
}

/// The identity label that marks membership of an ipBlock.
fn ip_block_label(cidr: &Cidr, except: &[Cidr]) -> String {
    let mut label = format!("policyc.ipblock.{cidr}");
    for e in except {
        label.push('!');
        label.push_str(&e.to_string());
    }
    label
}

/// Refuses tables that do not fit their maps, naming the policies that cost most: a
/// datapath map that is full drops writes, and Cilium users know what random missing
/// entries do to traffic.
fn check_capacity(artifact: &Artifact, capacity: &Capacity, diagnostics: &mut Vec<Diagnostic>) {
    let mut by_policy: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, value) in &artifact.policy {
        if let Some(rule) = artifact.rule(value.rule) {
            *by_policy.entry(rule.policy.as_str()).or_default() += 1;
        }
    }
    let mut costly: Vec<(usize, &str)> = by_policy.into_iter().map(|(p, n)| (n, p)).collect();
    costly.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
    let top: Vec<String> = costly.iter().take(5).map(|(n, p)| format!("{p} ({n})")).collect();
    let hosts = artifact.ipcache.iter().filter(|(k, _)| HostKey::of_prefix(k).is_some()).count();
    let checks = [
        ("policy", artifact.policy.len(), capacity.policy, top.join(", ")),
        ("hosts", hosts, capacity.hosts, "pod and node addresses, /32 and /128 CIDRs".into()),
        (
            "ipcache",
            artifact.ipcache.len() - hosts,
            capacity.ipcache,
            "CIDR prefixes shorter than an address".into(),
        ),
    ];
    for (map, used, limit, cost) in checks {
        if used > limit {
            diagnostics.push(
                Diagnostic::new(
                    codes::CAPACITY_EXCEEDED,
                    format!("the {map} table needs {used} entries, its limit is {limit}"),
                )
                .help(format!(
                    "most entries come from: {cost}; raise the limit or narrow those policies"
                )),
            );
        }
    }
}

/// Rule cookies are a hash of the policy's and the rule's names, so adding or removing a
/// policy does not renumber the rules of the others (which would rewrite their table
/// entries). Collisions move on to the next free number, in policy order. Never 0
/// (`RULE_NONE`).
#[derive(Default)]
struct CookieJar {
    used: BTreeSet<u32>,
}

impl CookieJar {
    fn take(&mut self, policy: &str, rule: &str) -> u32 {
        let mut id = policy
            .bytes()
            .chain([0])
            .chain(rule.bytes())
            .fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193));
        while id == datapath::RULE_NONE || !self.used.insert(id) {
            id = id.wrapping_add(1);
        }
        id
    }
}

/// Table numbers come from where a table comes from, not from its content nor from the
/// order tables are met in: a hash of the direction, whether it is isolated, the names of
/// the policies that select its endpoints and, for ingress, the endpoints' container
/// ports (the only thing besides policy its entries depend on). Endpoints under the same
/// policies share one table. Editing a policy's rules keeps the number of every table it
/// feeds, so an update writes only the entries that changed (the generation switch makes
/// the whole change visible at once: a table need not be renumbered to change
/// atomically), and a pod or policy added elsewhere leaves other tables alone. Two
/// origins of equal content are not merged, since either could change alone. Collisions
/// move on to the next free number, in origin then content order. Never 0 (0 means "not
/// enforced").
fn table_ids(tables: &BTreeMap<(u64, tables::Table), u32>) -> BTreeMap<u32, u32> {
    let mut used = BTreeSet::new();
    tables
        .iter()
        .map(|((origin, _), interned)| {
            let mut id = (origin ^ (origin >> 32)) as u32;
            while id == 0 || !used.insert(id) {
                id = id.wrapping_add(1);
            }
            (*interned, id)
        })
        .collect()
}

/// The origin hash of a table: see [`table_ids`]. FNV-1a over length-prefixed fields, so
/// that no two field lists hash the same text.
fn table_origin(
    policies: &[Policy],
    selecting: &[usize],
    direction: Direction,
    isolated: bool,
    ports: &[(Option<String>, u16, u8)],
) -> u64 {
    let mut hash = 0xcbf2_9ce4_8422_2325_u64;
    let mut feed = |bytes: &[u8]| {
        for b in (bytes.len() as u64).to_le_bytes().iter().chain(bytes) {
            hash = (hash ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(&[u8::from(direction == Direction::Ingress), u8::from(isolated)]);
    let mut names: Vec<&str> = selecting
        .iter()
        .map(|&i| &policies[i])
        .filter(|p| {
            p.isolates.contains(&direction) || p.rules.iter().any(|r| r.direction == direction)
        })
        .map(|p| p.name.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    for name in names {
        feed(name.as_bytes());
    }
    if direction == Direction::Ingress {
        for (name, port, proto) in ports {
            feed(name.as_deref().unwrap_or("").as_bytes());
            feed(&port.to_le_bytes());
            feed(&[*proto]);
        }
    }
    hash
}

/// Endpoint numbers name the owner of each conntrack entry in the datapath, so they must
/// not change when other pods come and go: a renumbered endpoint would lose its tracked
/// connections (their replies would be judged by policy again).
/// Each is a hash of the endpoint's name, moved on to the next free number on the rare
/// collision (in name order, pods before host endpoints, so the result is
/// deterministic). Never 0.
fn endpoint_ids<'n>(names: impl Iterator<Item = &'n str>, used: &mut BTreeSet<u32>) -> Vec<u32> {
    names
        .map(|name| {
            let mut id = crate::artifact::endpoint_number(name);
            while id == 0 || !used.insert(id) {
                id = id.wrapping_add(1);
            }
            id
        })
        .collect()
}

fn push_endpoint(artifact: &mut Artifact, ep: &Endpoint<'_>, endpoint_id: u32, tables: [u32; 2]) {
    artifact.endpoints.push(EndpointRecord {
        name: ep.name.clone(),
        endpoint_id,
        identity: ep.identity,
        ingress_table: tables[0],
        egress_table: tables[1],
        addresses: ep.pod.ips.iter().map(|ip| ip.value).collect(),
    });
}

/// What building one endpoint's tables reads.
struct TableSolver<'a> {
    enforcement: Enforcement,
    policies: &'a [Policy],
    cookies: &'a [Vec<u32>],
    /// Peer identity sets per policy and rule (`None`: every peer).
    peer_sets: &'a [Vec<Option<BTreeSet<u32>>>],
    cx: &'a Context<'a>,
    open_cookie: u32,
    host_cookie: u32,
}

/// What building tables produces.
#[derive(Default)]
struct TableOutput {
    /// (origin, content) -> interned number; see `table_ids` for the origin.
    tables: BTreeMap<(u64, tables::Table), u32>,
    /// See [`Analysis::rule_flows`].
    rule_flows: BTreeMap<u32, (BTreeSet<Pattern>, BTreeSet<usize>)>,
}

impl TableSolver<'_> {
    /// The (ingress, egress) tables, as interned numbers (0: not enforced), of an endpoint
    /// that the policies `selecting` select, whose container ports are `ports` (`key`:
    /// the same, for the table's origin), in lint class `class_index`.
    fn tables(
        &self,
        selecting: &[usize],
        ports: &[ContainerPort],
        key: &[(Option<String>, u16, u8)],
        class_index: usize,
        out: &mut TableOutput,
    ) -> [u32; 2] {
        let policies = self.policies;
        let mut table_ids = [0u32; 2];
        for (slot, direction) in [Direction::Ingress, Direction::Egress].into_iter().enumerate() {
            let isolated = match self.enforcement {
                Enforcement::Default => {
                    selecting.iter().any(|&i| policies[i].isolates.contains(&direction))
                }
                Enforcement::Always => true,
                Enforcement::Never => continue,
            };
            let mut entries = Vec::new();
            for &pi in selecting {
                for (ri, rule) in policies[pi].rules.iter().enumerate() {
                    if rule.direction == direction {
                        let cookie = self.cookies[pi][ri];
                        let before = entries.len();
                        self.cx.rule_entries(
                            rule,
                            self.peer_sets[pi][ri].as_ref(),
                            direction,
                            ports,
                            cookie,
                            &mut entries,
                        );
                        let flows = out.rule_flows.entry(cookie).or_default();
                        flows.0.extend(entries[before..].iter().map(|e| e.pattern));
                        flows.1.insert(class_index);
                    }
                }
            }
            let has_deny = entries.iter().any(|e| e.verdict == Verdict::Deny);
            if !isolated && !has_deny {
                continue; // Not isolated in this direction: table 0, everything passes.
            }
            if !isolated {
                // Only denies apply: what they do not deny passes. An allow decides
                // nothing here, so its entries go: left in, they would name a rule that did
                // not decide the flow (the open rule below says why it passes).
                entries.retain(|e| e.verdict == Verdict::Deny);
                entries.push(Entry {
                    pattern: ANY_FLOW,
                    verdict: Verdict::Allow,
                    cookie: self.open_cookie,
                });
            }
            if direction == Direction::Ingress {
                entries.push(Entry {
                    pattern: Pattern { identity: reserved::HOST, ..ANY_FLOW },
                    verdict: Verdict::Allow,
                    cookie: self.host_cookie,
                });
            }
            let table = tables::fold(&entries);
            let origin = table_origin(policies, selecting, direction, isolated, key);
            let next = out.tables.len() as u32 + 1;
            table_ids[slot] = *out.tables.entry((origin, table)).or_insert(next);
        }
        table_ids
    }
}

/// A node that host policies select.
struct HostEndpoint<'a> {
    node: &'a Node,
    /// `node/<name>`.
    name: String,
    /// Indexes of the host policies selecting it, in policy order.
    selecting: Vec<usize>,
}

/// The host endpoint of every node of the bundle that some host policy selects, by
/// name. A node no host policy selects gets none: like Cilium's host firewall, policyc
/// leaves a node alone until a policy selects it, whatever the enforcement mode.
fn host_endpoints<'a>(bundle: &'a Bundle, policies: &[Policy]) -> Vec<HostEndpoint<'a>> {
    let mut hosts: Vec<HostEndpoint<'a>> = bundle
        .nodes
        .iter()
        .map(|node| HostEndpoint {
            node,
            name: format!("{HOST_ENDPOINT_PREFIX}{}", node.meta.name.value),
            selecting: (0..policies.len())
                .filter(|&i| policies[i].nodes && policies[i].subject.matches(&node.meta.labels))
                .collect(),
        })
        .filter(|h| !h.selecting.is_empty())
        .collect();
    hosts.sort_by(|a, b| a.name.cmp(&b.name));
    hosts
}

const ANY_FLOW: Pattern = Pattern { identity: reserved::ANY, proto: 0, port: None };

/// Labels of every namespace: declared ones, plus any a pod or policy lives in (with a
/// warning). Kubernetes labels every namespace with its name
/// (`kubernetes.io/metadata.name`), so we do too.
pub(crate) fn namespace_labels(
    bundle: &Bundle,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<String, Labels> {
    let mut namespaces: BTreeMap<String, Labels> = BTreeMap::new();
    for ns in &bundle.namespaces {
        let mut labels = ns.meta.labels.clone();
        labels.insert("kubernetes.io/metadata.name".into(), ns.meta.name.value.clone());
        namespaces.insert(ns.meta.name.value.clone(), labels);
    }
    let metas = bundle
        .pods
        .iter()
        .map(|p| &p.meta)
        .chain(bundle.network_policies.iter().map(|p| &p.meta))
        .chain(bundle.cilium_policies.iter().filter(|p| !p.clusterwide).map(|p| &p.meta));
    for meta in metas {
        if !namespaces.contains_key(&meta.namespace) {
            diagnostics.push(
                Diagnostic::new(
                    codes::UNKNOWN_NAMESPACE,
                    format!("namespace `{}` is not in the inventory", meta.namespace),
                )
                .at(meta.name.span, "its namespace has no Namespace object")
                .help("add the Namespace manifest so namespace selectors see its labels"),
            );
            let labels =
                Labels::from([("kubernetes.io/metadata.name".into(), meta.namespace.clone())]);
            namespaces.insert(meta.namespace.clone(), labels);
        }
    }
    for pod in &bundle.pods {
        for key in pod.meta.labels.keys().filter(|k| identity::is_reserved_key(k)) {
            diagnostics.push(
                Diagnostic::new(
                    codes::RESERVED_LABEL,
                    format!("pod {}/{} has the reserved label key `{key}`", pod.meta.namespace, pod.meta.name.value),
                )
                .at(pod.meta.name.span, "this pod's label is ignored")
                .help("namespace identity comes from the Namespace object; rename or remove the pod label"),
            );
        }
    }
    namespaces
}

struct Context<'a> {
    endpoints: &'a [Endpoint<'a>],
    cidr_identities: &'a BTreeMap<Cidr, u32>,
    ipblock_matches_pods: bool,
    /// One endpoint per identity (selection by identity is exact, so one stands for
    /// all), by namespace: a selector pinned to a namespace only looks there.
    by_namespace: BTreeMap<&'a str, Vec<&'a Endpoint<'a>>>,
}

impl Context<'_> {
    /// The entries one rule contributes to the table of `subject`.
    fn rule_entries(
        &self,
        rule: &Rule,
        peers: Option<&BTreeSet<u32>>,
        direction: Direction,
        subject_ports: &[ContainerPort],
        cookie: u32,
        out: &mut Vec<Entry>,
    ) {
        let verdict = match rule.action {
            Action::Allow => Verdict::Allow,
            Action::Deny => Verdict::Deny,
            // Pass only exists in tiers the solver does not produce yet; lowering never
            // emits it for the default tier.
            Action::Pass => return,
        };
        // Peers as identity sets; `None` stands for every identity, world included.
        let identities: Vec<u32> = match peers {
            Some(set) => set.iter().copied().collect(),
            None => vec![reserved::ANY],
        };
        let mut push = |identity: u32, proto: u8, port: Option<PortBlock>| {
            out.push(Entry { pattern: Pattern { identity, proto, port }, verdict, cookie });
        };
        if rule.ports.is_empty() {
            for &identity in &identities {
                push(identity, 0, None);
            }
            return;
        }
        for port in &rule.ports {
            let protos: Vec<u8> = match (port.proto, &port.port) {
                (Some(p), _) => vec![p],
                (None, PortSpec::Any) => vec![0],
                (None, _) => PORT_PROTOCOLS.to_vec(),
            };
            for &identity in &identities {
                for &proto in &protos {
                    match &port.port {
                        PortSpec::Any => push(identity, proto, None),
                        PortSpec::IcmpType(t) => {
                            push(identity, proto, Some(PortBlock::single(u16::from(*t))))
                        }
                        PortSpec::Range(start, end) => match PortBlock::cover(*start, *end) {
                            Some(blocks) => {
                                for block in blocks {
                                    push(identity, proto, Some(block));
                                }
                            }
                            None => push(identity, proto, None),
                        },
                        PortSpec::Named(name) => {
                            for (identity, number) in
                                self.resolve_name(name, proto, direction, subject_ports, identity)
                            {
                                push(identity, proto, Some(PortBlock::single(number)));
                            }
                        }
                    }
                }
            }
        }
    }

    /// A named port means the number the *destination* pod gives that name: the subject
    /// for ingress, the peer for egress. Only pods have named ports, so a rule open to
    /// every peer expands to the identities of the pods that define the name, and a host
    /// endpoint (no container ports) resolves none on ingress.
    fn resolve_name(
        &self,
        name: &str,
        proto: u8,
        direction: Direction,
        subject_ports: &[ContainerPort],
        identity: u32,
    ) -> BTreeSet<(u32, u16)> {
        let defines = |ports: &[ContainerPort]| -> Vec<u16> {
            ports
                .iter()
                .filter(|p| p.name.as_deref() == Some(name) && p.protocol.number() == proto)
                .map(|p| p.port)
                .collect()
        };
        match direction {
            Direction::Ingress => {
                defines(subject_ports).into_iter().map(|n| (identity, n)).collect()
            }
            // Every pod of an identity resolves the name alike (the resolution is part
            // of the identity labels), so one pod per identity answers.
            Direction::Egress => self
                .by_namespace
                .values()
                .flatten()
                .filter(|e| identity == reserved::ANY || e.identity == identity)
                .flat_map(|e| defines(&e.pod.ports).into_iter().map(|n| (e.identity, n)))
                .collect(),
        }
    }

    fn peer_identities(&self, peer: &Peer) -> Vec<u32> {
        match peer {
            Peer::Endpoints(selector) => {
                let candidates: Vec<&Endpoint<'_>> =
                    match selector.match_labels.get(identity::NAMESPACE_LABEL) {
                        Some(ns) => self.by_namespace.get(ns.as_str()).cloned().unwrap_or_default(),
                        None => self.by_namespace.values().flatten().copied().collect(),
                    };
                candidates
                    .into_iter()
                    .filter(|e| selector.matches(&e.labels))
                    .map(|e| e.identity)
                    .collect()
            }
            Peer::Cidr { cidr, except } => {
                let prefixes = self
                    .cidr_identities
                    .iter()
                    .filter(|(prefix, _)| {
                        cidr.contains_cidr(prefix)
                            && !except.iter().any(|e| e.contains_cidr(prefix))
                    })
                    .map(|(_, id)| *id);
                // Pods inside the block, when ipBlocks match pods: exact per identity,
                // since block membership is part of the identity labels.
                let pods = self
                    .endpoints
                    .iter()
                    .filter(|_| self.ipblock_matches_pods)
                    .filter(|e| e.pod.ips.iter().any(|ip| in_block(ip.value, cidr, except)))
                    .map(|e| e.identity);
                prefixes.chain(pods).collect()
            }
            Peer::Entity(entity) => self.entity_identities(*entity),
        }
    }

    fn entity_identities(&self, entity: Entity) -> Vec<u32> {
        let pods = || self.endpoints.iter().map(|e| e.identity);
        match entity {
            Entity::Host => vec![reserved::HOST],
            Entity::RemoteNode => vec![reserved::REMOTE_NODE],
            Entity::KubeApiserver => vec![reserved::KUBE_APISERVER],
            Entity::Ingress => vec![reserved::INGRESS],
            Entity::Init => vec![reserved::INIT],
            Entity::Health => vec![reserved::HEALTH],
            Entity::Unmanaged => vec![reserved::UNMANAGED],
            Entity::World => std::iter::once(reserved::WORLD)
                .chain(self.cidr_identities.values().copied())
                .collect(),
            Entity::Cluster => [
                reserved::HOST,
                reserved::REMOTE_NODE,
                reserved::KUBE_APISERVER,
                reserved::INIT,
                reserved::HEALTH,
                reserved::UNMANAGED,
                reserved::INGRESS,
            ]
            .into_iter()
            .chain(pods())
            .collect(),
            Entity::All => vec![reserved::ANY],
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
