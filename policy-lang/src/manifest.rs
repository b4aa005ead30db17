//! Reading inputs and dispatching documents by `apiVersion` and `kind`.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};

use crate::ast::{Namespace, NetworkPolicy, Node as K8sNode, Pod, Workload, WorkloadKind};
use crate::ast_cilium::CiliumPolicy;
use crate::codes;
use crate::diagnostic::{Diagnostic, Severity};
use crate::reader::Reader;
use crate::source::Sources;
use crate::yaml::{Node, NodeKind, parse_documents};
use crate::{cilium, inventory, netpol};

/// Everything read from the inputs: the inventory, the policies and the diagnostics.
#[derive(Debug, Default)]
pub struct Bundle {
    pub namespaces: Vec<Namespace>,
    pub pods: Vec<Pod>,
    pub nodes: Vec<K8sNode>,
    /// Deployments, StatefulSets, Jobs and the other controllers with a pod template.
    pub workloads: Vec<Workload>,
    pub network_policies: Vec<NetworkPolicy>,
    /// CiliumNetworkPolicies and CiliumClusterwideNetworkPolicies (`cilium.io/v2`).
    pub cilium_policies: Vec<CiliumPolicy>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Bundle {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.severity() == Severity::Error)
    }
}

/// Reads the given files and directories (recursively: `*.yaml`, `*.yml`, `*.json`, in
/// path order so that the result does not depend on the file system's listing order).
/// `-` reads standard input. Non-UTF-8 files are reported, not fatal.
pub fn read_inputs(paths: &[PathBuf]) -> io::Result<(Sources, Vec<Diagnostic>)> {
    let mut files = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            files.push(path.clone());
        } else if path.is_dir() {
            collect_dir(path, &mut files)?;
        } else {
            files.push(path.clone());
        }
    }
    let mut sources = Sources::default();
    let mut diagnostics = Vec::new();
    for path in files {
        let bytes = if path.as_os_str() == "-" {
            let mut buf = Vec::new();
            io::Read::read_to_end(&mut io::stdin(), &mut buf)?;
            buf
        } else {
            std::fs::read(&path)
                .map_err(|e| io::Error::new(e.kind(), format!("reading {}: {e}", path.display())))?
        };
        let name =
            if path.as_os_str() == "-" { "<stdin>".into() } else { path.display().to_string() };
        match String::from_utf8(bytes) {
            Ok(text) => {
                sources.add(name, text);
            }
            Err(e) => {
                let valid = e.utf8_error().valid_up_to();
                let text = String::from_utf8_lossy(&e.into_bytes()[..valid]).into_owned();
                let line = text.matches('\n').count() as u32 + 1;
                let col = text.rsplit('\n').next().map_or(0, |l| l.chars().count()) as u32 + 1;
                let file = sources.add_unreadable(name, text);
                diagnostics.push(
                    Diagnostic::new(codes::NOT_UTF8, "the file is not UTF-8")
                        .at(crate::Span { file, line, col, len: 1 }, "invalid byte here")
                        .help("save the file as UTF-8; the file was not read"),
                );
            }
        }
    }
    Ok((sources, diagnostics))
}

/// Lists a directory tree. Symbolic links are followed, but each directory is read once
/// (by its canonical path), so a link back up the tree cannot make a loop.
fn collect_dir(dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    collect_dir_once(dir, out, &mut std::collections::BTreeSet::new())
}

fn collect_dir_once(
    dir: &Path,
    out: &mut Vec<PathBuf>,
    seen: &mut std::collections::BTreeSet<PathBuf>,
) -> io::Result<()> {
    if !seen.insert(std::fs::canonicalize(dir)?) {
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("reading directory {}: {e}", dir.display())))?
        .map(|e| e.map(|e| e.path()))
        .collect::<io::Result<_>>()?;
    entries.sort();
    for path in entries {
        if path.is_dir() {
            collect_dir_once(&path, out, seen)?;
        } else if matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
        {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses and decodes every file of `sources`, except those [`read_inputs`] already
/// reported as unreadable.
pub fn load_sources(sources: &Sources) -> Bundle {
    let _span = tracing::info_span!("parse").entered();
    let mut bundle = Bundle::default();
    for (id, file) in sources.iter().filter(|(_, f)| !f.unreadable) {
        match parse_documents(&file.text, id) {
            Ok(docs) => {
                for doc in &docs {
                    decode_object(doc, &mut bundle);
                }
            }
            Err(diag) => bundle.diagnostics.push(diag),
        }
    }
    check_duplicates(&mut bundle, sources);
    tracing::debug!(
        namespaces = bundle.namespaces.len(),
        pods = bundle.pods.len(),
        nodes = bundle.nodes.len(),
        workloads = bundle.workloads.len(),
        policies = bundle.network_policies.len(),
        cilium_policies = bundle.cilium_policies.len(),
        diagnostics = bundle.diagnostics.len(),
        "parsed inputs"
    );
    bundle
}

fn decode_object(doc: &Node, bundle: &mut Bundle) {
    let mut r = Reader { diags: &mut bundle.diagnostics };
    if doc.kind == NodeKind::Null {
        return;
    }
    if !matches!(doc.kind, NodeKind::Map(_)) {
        r.push(
            Diagnostic::new(
                codes::NOT_AN_OBJECT,
                format!("a document is {}, not a Kubernetes object", doc.kind.describe()),
            )
            .at(doc.span, "expected a mapping with apiVersion and kind")
            .help("each document must be one object (`apiVersion`, `kind`, `metadata`...); put several in a `kind: List`"),
        );
        return;
    }
    let api_version = doc.get("apiVersion").and_then(|n| r.string(n, "apiVersion"));
    let kind = doc.get("kind").and_then(|n| r.string(n, "kind"));
    let (Some(api_version), Some(kind)) = (api_version, kind) else {
        // A field of the wrong type was reported as such; "lacks" is for absent ones.
        if doc.get("apiVersion").is_some() && doc.get("kind").is_some() {
            return;
        }
        r.push(
            Diagnostic::new(codes::MISSING_TYPE_META, "an object lacks apiVersion or kind")
                .at(doc.span, "this object")
                .help("every manifest needs `apiVersion:` and `kind:`"),
        );
        return;
    };
    let group = api_version.value.rsplit_once('/').map_or("", |(g, _)| g);
    match (group, kind.value.as_str()) {
        (_, "List") => {
            let items: &[Node] = match doc.get("items") {
                Some(items) => r.list(items, "items"),
                None => &[],
            };
            for item in items {
                decode_object(item, bundle);
            }
        }
        (_, list) if TYPED_LISTS.contains(&list) => {
            // The API server leaves apiVersion and kind out of the items of a typed list
            // (kubectl fills them in), so items without them take the list's.
            let item_kind = Node {
                kind: NodeKind::Str(list.strip_suffix("List").unwrap_or(list).into()),
                span: kind.span,
            };
            let item_version =
                Node { kind: NodeKind::Str(api_version.value.clone()), span: api_version.span };
            let items: &[Node] = match doc.get("items") {
                Some(items) => r.list(items, "items"),
                None => &[],
            };
            for item in items {
                if item.get("apiVersion").is_some() && item.get("kind").is_some() {
                    decode_object(item, bundle);
                } else {
                    decode_object(&with_type_meta(item.clone(), &item_version, &item_kind), bundle);
                }
            }
        }
        ("", "Namespace") => {
            if let Some(f) = r.fields(doc, "Namespace", &OBJECT_FIELDS)
                && let Some(ns) = inventory::namespace(&mut r, &f)
            {
                bundle.namespaces.push(ns);
            }
        }
        ("", "Pod") => {
            if let Some(f) = r.fields(doc, "Pod", &OBJECT_FIELDS)
                && let Some(pod) = inventory::pod(&mut r, &f)
            {
                bundle.pods.push(pod);
            }
        }
        ("", "Node") => {
            if let Some(f) = r.fields(doc, "Node", &OBJECT_FIELDS)
                && let Some(node) = inventory::node(&mut r, &f)
            {
                bundle.nodes.push(node);
            }
        }
        ("", "ReplicationController")
        | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
        | ("batch", "Job" | "CronJob") => {
            let workload_kind = WorkloadKind::parse(&kind.value).expect("matched a workload kind");
            if let Some(f) = r.fields(doc, workload_kind.name(), &OBJECT_FIELDS)
                && let Some(workload) = inventory::workload(&mut r, &f, workload_kind)
            {
                bundle.workloads.push(workload);
            }
        }
        ("networking.k8s.io", "NetworkPolicy") if api_version.value == "networking.k8s.io/v1" => {
            if let Some(f) = r.fields(doc, "NetworkPolicy", &OBJECT_FIELDS)
                && let Some(np) = netpol::network_policy(&mut r, &f)
            {
                bundle.network_policies.push(np);
            }
        }
        // Any other group or version (extensions/v1beta1...) is refused, not skipped: a
        // skipped policy would leave its pods open.
        (_, "NetworkPolicy") => r.push(
            Diagnostic::new(
                codes::UNSUPPORTED_API,
                format!("NetworkPolicy apiVersion `{}` is not supported", api_version.value),
            )
            .at(api_version.span, "unsupported version")
            .help("use `apiVersion: networking.k8s.io/v1`"),
        ),
        ("cilium.io", "CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy")
            if api_version.value == "cilium.io/v2" =>
        {
            let clusterwide = kind.value == "CiliumClusterwideNetworkPolicy";
            if let Some(f) = r.fields(doc, &kind.value, &cilium::OBJECT_FIELDS)
                && let Some(policy) = cilium::cilium_policy(&mut r, &f, clusterwide)
            {
                bundle.cilium_policies.push(policy);
            }
        }
        ("cilium.io", "CiliumNetworkPolicy" | "CiliumClusterwideNetworkPolicy") => r.push(
            Diagnostic::new(
                codes::UNSUPPORTED_API,
                format!("{} apiVersion `{}` is not supported", kind.value, api_version.value),
            )
            .at(api_version.span, "unsupported version")
            .help("use `apiVersion: cilium.io/v2`"),
        ),
        ("policy.networking.k8s.io", "AdminNetworkPolicy" | "BaselineAdminNetworkPolicy") => {
            // A policy we cannot compile must stop the compile: skipping it would
            // leave its pods less isolated than their owners wrote.
            r.push(
                Diagnostic::new(
                    codes::UNSUPPORTED_API,
                    format!("{} is not supported yet", kind.value),
                )
                .at(kind.span, "this policy would not be enforced")
                .help("remove it from the inputs, or compile it with a policyc that supports it"),
            );
        }
        _ => r.push(
            Diagnostic::new(
                codes::SKIPPED_KIND,
                format!(
                    "{} {} does not affect network policy and is skipped",
                    api_version.value, kind.value
                ),
            )
            .at(kind.span, "skipped")
            .help("nothing to do: only namespaces, nodes, pods, workloads and network policies matter to policy"),
        ),
    }
}

const OBJECT_FIELDS: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];

/// The typed lists the API server returns for the kinds we read. Other typed lists,
/// such as a ServiceList, are skipped as a whole.
const TYPED_LISTS: &[&str] = &[
    "NamespaceList",
    "NodeList",
    "PodList",
    "NetworkPolicyList",
    "CiliumNetworkPolicyList",
    "CiliumClusterwideNetworkPolicyList",
    "DeploymentList",
    "ReplicaSetList",
    "StatefulSetList",
    "DaemonSetList",
    "JobList",
    "CronJobList",
    "ReplicationControllerList",
];

/// `item` with `apiVersion` and `kind` added where it lacks them.
fn with_type_meta(mut item: Node, api_version: &Node, kind: &Node) -> Node {
    if let NodeKind::Map(entries) = &mut item.kind {
        for (field, value) in [("apiVersion", api_version), ("kind", kind)] {
            if !entries.iter().any(|(k, _)| k.as_str() == Some(field)) {
                let key = Node { kind: NodeKind::Str(field.into()), span: value.span };
                entries.push((key, value.clone()));
            }
        }
    }
    item
}

/// Two objects of one kind with the same namespace and name: a kubectl apply would
/// keep only one of them, so which one we compile would be a guess.
fn check_duplicates(bundle: &mut Bundle, sources: &Sources) {
    let mut seen: BTreeMap<(&str, String, String), crate::Span> = BTreeMap::new();
    let mut found = Vec::new();
    let metas = bundle
        .namespaces
        .iter()
        .map(|o| ("Namespace", &o.meta))
        .chain(bundle.nodes.iter().map(|o| ("Node", &o.meta)))
        .chain(bundle.pods.iter().map(|o| ("Pod", &o.meta)))
        .chain(bundle.workloads.iter().map(|o| (o.kind.name(), &o.meta)))
        .chain(bundle.network_policies.iter().map(|o| ("NetworkPolicy", &o.meta)))
        .chain(bundle.cilium_policies.iter().map(|o| (o.kind(), &o.meta)));
    for (kind, meta) in metas {
        let key = (kind, meta.namespace.clone(), meta.name.value.clone());
        if let Some(first) = seen.get(&key) {
            // Cluster-scoped objects (nodes) have no namespace to show.
            let name = if meta.namespace.is_empty() {
                meta.name.value.clone()
            } else {
                format!("{}/{}", meta.namespace, meta.name.value)
            };
            found.push(
                Diagnostic::new(codes::DUPLICATE_OBJECT, format!("{kind} {name} is defined twice"))
                    .at(meta.name.span, "second definition")
                    .help(format!(
                        "the first is at {}; rename or remove one of them",
                        sources.location(*first)
                    )),
            );
        } else {
            seen.insert(key, meta.name.span);
        }
    }
    bundle.diagnostics.extend(found);
}
