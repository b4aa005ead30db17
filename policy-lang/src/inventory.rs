//! Decoders for the cluster inventory (Namespace, Node, Pod and the workloads with a pod
//! template) and for object metadata.
//!
//! Only the top-level fields of an object are checked against a schema. Inside `spec`
//! and `status` we read the fields policy needs and ignore the rest: a pod spec has
//! dozens of fields that change with every Kubernetes release, and real exports
//! (`kubectl get -o yaml`, Helm output) must read without complaint.

use std::net::IpAddr;

use crate::ast::{
    self, ContainerPort, LabelSelector, Labels, Namespace, NodeAddress, NodeAddressKind,
    ObjectMeta, OwnerRef, Pod, Protocol, Sp, Workload, WorkloadKind,
};
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::netpol::{parse_cidr, selector};
use crate::reader::{Fields, Reader};
use crate::selector::{
    validate_dns_label, validate_dns_subdomain, validate_label_key, validate_label_value,
};
use crate::yaml::{Node, NodeKind};

/// `metadata` fields we read. Everything else Kubernetes puts there (managedFields,
/// uid, resourceVersion, annotations...) is accepted and ignored: it cannot affect
/// policy, and kubectl exports carry it.
const META_FIELDS: &[&str] = &[
    "name",
    "namespace",
    "labels",
    "annotations",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "ownerReferences",
    "finalizers",
    "generateName",
    "selfLink",
];

/// Reads `metadata` of an object. `namespaced` objects default to namespace `default`.
pub(crate) fn object_meta(
    r: &mut Reader<'_>,
    object: &Fields<'_>,
    kind: &str,
    namespaced: bool,
) -> Option<ObjectMeta> {
    let Some(meta_node) = object.get("metadata") else {
        r.push(
            Diagnostic::new(codes::MISSING_FIELD, format!("{kind} has no metadata"))
                .at(object.node.span, "this object")
                .help("add `metadata:` with at least a `name`"),
        );
        return None;
    };
    let meta = r.fields(meta_node, &format!("{kind} metadata"), META_FIELDS)?;
    let name = match meta.get("name") {
        Some(node) => r.string(node, "metadata.name")?,
        None => {
            r.push(
                Diagnostic::new(codes::MISSING_FIELD, format!("{kind} has no metadata.name"))
                    .at(meta_node.span, "no name here")
                    .help("every object needs `metadata.name`"),
            );
            return None;
        }
    };
    // Namespace names are DNS labels (no dots), other names DNS subdomains.
    type Check = fn(&str) -> Result<(), String>;
    let (check, shape): (Check, &str) = if kind == "Namespace" {
        (validate_dns_label, "lowercase DNS labels, such as `shop`")
    } else {
        (validate_dns_subdomain, "lowercase DNS subdomains, such as `web-frontend`")
    };
    if let Err(e) = check(&name.value) {
        r.push(
            Diagnostic::new(
                codes::INVALID_NAME,
                format!("{kind} name `{}` is invalid", name.value),
            )
            .at(name.span, e)
            .help(format!("{kind} names are {shape}")),
        );
    }
    let mut namespace = String::from("default");
    if let Some(node) = meta.get("namespace")
        && let Some(ns) = r.string(node, "metadata.namespace")
    {
        if !namespaced {
            r.push(
                Diagnostic::new(
                    codes::EXCLUSIVE_FIELDS,
                    format!("{kind} is cluster-scoped and cannot have a namespace"),
                )
                .at(ns.span, "remove this")
                .help("delete `metadata.namespace` from this object"),
            );
        } else if let Err(e) = validate_dns_label(&ns.value) {
            r.push(
                Diagnostic::new(
                    codes::INVALID_NAME,
                    format!("namespace `{}` is invalid", ns.value),
                )
                .at(ns.span, e)
                .help("namespace names are lowercase DNS labels, such as `prod`"),
            );
        }
        namespace = ns.value;
    }
    let labels =
        meta.get("labels").map(|node| labels(r, node, "metadata.labels")).unwrap_or_default();
    Some(ObjectMeta { name, namespace, labels, span: object.node.span })
}

/// Reads and validates a label map.
pub(crate) fn labels(r: &mut Reader<'_>, node: &Node, what: &str) -> Labels {
    let mut out = Labels::new();
    for (key, value) in r.string_map(node, what) {
        check_label(r, &key, &value);
        out.insert(key.value, value.value);
    }
    out
}

pub(crate) fn check_label(r: &mut Reader<'_>, key: &Sp<String>, value: &Sp<String>) {
    check_label_key(r, key);
    check_label_value(r, value);
}

pub(crate) fn check_label_key(r: &mut Reader<'_>, key: &Sp<String>) {
    if let Err(e) = validate_label_key(&key.value) {
        r.push(
            Diagnostic::new(codes::INVALID_LABEL_KEY, format!("label key {:?} is invalid", key.value))
                .at(key.span, e)
                .help("a key is an optional DNS prefix and `/`, then up to 63 letters, digits, `-`, `_` or `.`"),
        );
    }
}

pub(crate) fn check_label_value(r: &mut Reader<'_>, value: &Sp<String>) {
    if let Err(e) = validate_label_value(&value.value) {
        r.push(
            Diagnostic::new(
                codes::INVALID_LABEL_VALUE,
                format!("label value {:?} is invalid", value.value),
            )
            .at(value.span, e)
            .help("a value is empty, or up to 63 letters, digits, `-`, `_` or `.`, alphanumeric at both ends"),
        );
    }
}

pub(crate) fn namespace(r: &mut Reader<'_>, object: &Fields<'_>) -> Option<Namespace> {
    let mut meta = object_meta(r, object, "Namespace", false)?;
    // A Namespace's own name is its namespace for selection purposes.
    meta.namespace = meta.name.value.clone();
    Some(Namespace { meta })
}

pub(crate) fn pod(r: &mut Reader<'_>, object: &Fields<'_>) -> Option<Pod> {
    let meta = object_meta(r, object, "Pod", true)?;
    let owner = controller_owner(r, object);
    let spec = object.get("spec").map(|n| pod_spec(r, n, "spec")).unwrap_or_default();

    let mut ips = Vec::new();
    if let Some(status) = object.get("status").filter(|n| is_mapping(r, n, "status")) {
        if let Some(list) = status.get("podIPs") {
            for entry in r.list(list, "status.podIPs").to_vec() {
                if let Some(ip) = entry.get("ip").and_then(|n| ip_address(r, n, "a pod IP")) {
                    ips.push(ip);
                }
            }
        }
        if ips.is_empty()
            && let Some(ip) = status.get("podIP").and_then(|n| ip_address(r, n, "a pod IP"))
        {
            ips.push(ip);
        }
    }
    ips.sort_by_key(|ip| ip.value);
    ips.dedup_by(|a, b| a.value == b.value);

    Some(Pod {
        meta,
        ips,
        ports: spec.ports,
        owner,
        service_account: spec.service_account,
        node_name: spec.node_name,
        host_network: spec.host_network,
    })
}

/// What policy needs from a pod spec, a pod's or a template's.
#[derive(Default)]
struct PodSpec {
    ports: Vec<ContainerPort>,
    service_account: Option<Sp<String>>,
    node_name: Option<Sp<String>>,
    host_network: bool,
}

/// Reads the fields of a pod spec at `path` (`spec`, `spec.template.spec`...) that
/// policy needs, ignoring all others.
fn pod_spec(r: &mut Reader<'_>, spec: &Node, path: &str) -> PodSpec {
    let mut out = PodSpec::default();
    if !is_mapping(r, spec, path) {
        return out;
    }

    // FIXME: only app containers are read. A sidecar (an init container with
    // `restartPolicy: Always`) keeps running and can serve a named port too, which a
    // policy naming that port would then miss on this pod. The cure is to read the ports
    // of restartable init containers as well, once it is checked that the network plugins
    // we compare with resolve named ports against them.
    if let Some(containers) = spec.get("containers") {
        let what = format!("{path}.containers");
        for container in r.list(containers, &what).to_vec() {
            if let Some(list) = container.get("ports") {
                for port in r.list(list, "container ports").to_vec() {
                    if let Some(p) = container_port(r, &port) {
                        out.ports.push(p);
                    }
                }
            }
        }
    }

    // `serviceAccount` is the deprecated alias the API server still fills in.
    let account = spec
        .get("serviceAccountName")
        .filter(|n| n.kind != NodeKind::Null)
        .or_else(|| spec.get("serviceAccount"))
        .filter(|n| n.kind != NodeKind::Null);
    out.service_account = account.and_then(|n| dns_subdomain(r, n, "service account"));
    out.node_name = spec
        .get("nodeName")
        .filter(|n| n.kind != NodeKind::Null)
        .and_then(|n| dns_subdomain(r, n, "node"));
    out.host_network = spec
        .get("hostNetwork")
        .and_then(|n| boolean(r, n, &format!("{path}.hostNetwork")))
        .unwrap_or(false);
    out
}

/// The reference of `metadata.ownerReferences` marked `controller: true`, if any.
/// Kubernetes allows at most one; a second one is reported.
fn controller_owner(r: &mut Reader<'_>, object: &Fields<'_>) -> Option<OwnerRef> {
    let list = object.get("metadata")?.get("ownerReferences")?;
    let mut controller: Option<OwnerRef> = None;
    for entry in r.list(list, "metadata.ownerReferences") {
        let Some(owner) = owner_ref(r, entry) else { continue };
        if !owner.controller {
            continue;
        }
        if let Some(first) = &controller {
            r.push(
                Diagnostic::new(
                    codes::MULTIPLE_CONTROLLERS,
                    format!(
                        "{} {} and {} {} are both marked as the controller",
                        first.kind, first.name, owner.kind, owner.name
                    ),
                )
                .at(entry.get("controller").map_or(entry.span, |n| n.span), "second controller")
                .help(format!(
                    "an object has at most one controller; keep `controller: true` only on the \
                     reference at line {}",
                    first.span.line
                )),
            );
            continue;
        }
        controller = Some(owner);
    }
    controller
}

fn owner_ref(r: &mut Reader<'_>, node: &Node) -> Option<OwnerRef> {
    if !is_mapping(r, node, "an owner reference") {
        return None;
    }
    let field = |r: &mut Reader<'_>, name: &str| {
        let value = node.get(name).filter(|n| n.kind != NodeKind::Null);
        if value.is_none() {
            r.push(
                Diagnostic::new(
                    codes::MISSING_FIELD,
                    format!("an owner reference has no `{name}`"),
                )
                .at(node.span, format!("`{name}` missing"))
                .help("an owner reference names its owner's apiVersion, kind, name and uid"),
            );
        }
        value.and_then(|n| r.string(n, &format!("ownerReferences {name}")))
    };
    let kind = field(r, "kind");
    let name = field(r, "name");
    let controller =
        node.get("controller").and_then(|n| boolean(r, n, "ownerReferences controller"));
    Some(OwnerRef {
        kind: kind?.value,
        name: name?.value,
        controller: controller.unwrap_or(false),
        span: node.span,
    })
}

pub(crate) fn node(r: &mut Reader<'_>, object: &Fields<'_>) -> Option<ast::Node> {
    let mut meta = object_meta(r, object, "Node", false)?;
    meta.namespace = String::new();

    // `podCIDRs` supersedes `podCIDR`, which the API server keeps equal to its first
    // entry for older clients.
    let mut pod_cidrs = Vec::new();
    if let Some(spec) = object.get("spec").filter(|n| is_mapping(r, n, "spec")) {
        let list = spec.get("podCIDRs").filter(|n| n.kind != NodeKind::Null);
        let items: Vec<Node> = match list {
            Some(list) => r.list(list, "spec.podCIDRs").to_vec(),
            None => spec
                .get("podCIDR")
                .filter(|n| n.kind != NodeKind::Null)
                .cloned()
                .into_iter()
                .collect(),
        };
        for item in &items {
            if let Some(cidr) = parse_cidr(r, item) {
                pod_cidrs.push(Sp::new(cidr, item.span));
            }
        }
    }

    let mut addresses: Vec<NodeAddress> = Vec::new();
    if let Some(status) = object.get("status").filter(|n| is_mapping(r, n, "status"))
        && let Some(list) = status.get("addresses")
    {
        for entry in r.list(list, "status.addresses") {
            if let Some(address) = node_address(r, entry)
                && !addresses.contains(&address)
            {
                addresses.push(address);
            }
        }
    }

    Some(ast::Node { meta, addresses, pod_cidrs })
}

/// One `status.addresses` entry; `None` for the name kinds (`Hostname`, `InternalDNS`,
/// `ExternalDNS`) and for entries already reported.
fn node_address(r: &mut Reader<'_>, entry: &Node) -> Option<NodeAddress> {
    if !is_mapping(r, entry, "a node address") {
        return None;
    }
    let Some(kind) = entry.get("type").and_then(|n| r.string(n, "address type")) else {
        r.push(
            Diagnostic::new(codes::MISSING_FIELD, "a node address has no `type`")
                .at(entry.span, "`type` missing")
                .help("node addresses have a `type` (InternalIP, ExternalIP, Hostname...)"),
        );
        return None;
    };
    let kind = match kind.value.as_str() {
        "InternalIP" => NodeAddressKind::InternalIp,
        "ExternalIP" => NodeAddressKind::ExternalIp,
        // Names, not addresses, and any type a newer release may add.
        _ => return None,
    };
    let Some(address) = entry.get("address") else {
        r.push(
            Diagnostic::new(
                codes::MISSING_FIELD,
                format!("a {} entry has no `address`", kind.name()),
            )
            .at(entry.span, "`address` missing")
            .help("add the node's IP address as `address:`"),
        );
        return None;
    };
    let ip = ip_address(r, address, "a node address")?;
    Some(NodeAddress { kind, ip })
}

/// A Deployment, StatefulSet, Job or other controller with a pod template.
pub(crate) fn workload(
    r: &mut Reader<'_>,
    object: &Fields<'_>,
    kind: WorkloadKind,
) -> Option<Workload> {
    let name = kind.name();
    let meta = object_meta(r, object, name, true)?;
    let owner = controller_owner(r, object);
    let Some(spec) = object.get("spec") else {
        r.push(
            Diagnostic::new(codes::MISSING_FIELD, format!("{name} has no spec"))
                .at(object.node.span, "this object")
                .help("add `spec:` with a `selector` and a pod `template`"),
        );
        return None;
    };
    if !is_mapping(r, spec, "spec") {
        return None;
    }

    // A CronJob's pods come from the template of the Job it creates.
    let (owner_spec, path) = if kind == WorkloadKind::CronJob {
        let job_spec = spec.get("jobTemplate").and_then(|t| t.get("spec"));
        let Some(job_spec) = job_spec.filter(|n| n.kind != NodeKind::Null) else {
            r.push(
                Diagnostic::new(codes::MISSING_FIELD, "CronJob has no spec.jobTemplate.spec")
                    .at(spec.span, "no job template here")
                    .help("add `jobTemplate:` with the `spec` of the Job to run"),
            );
            return None;
        };
        if !is_mapping(r, job_spec, "spec.jobTemplate.spec") {
            return None;
        }
        (job_spec, "spec.jobTemplate.spec")
    } else {
        (spec, "spec")
    };

    let Some(template) = owner_spec.get("template").filter(|n| n.kind != NodeKind::Null) else {
        r.push(
            Diagnostic::new(codes::MISSING_FIELD, format!("{name} has no {path}.template"))
                .at(owner_spec.span, "no pod template here")
                .help("add `template:` with the `metadata.labels` and `spec` of the pods to run"),
        );
        return None;
    };
    if !is_mapping(r, template, &format!("{path}.template")) {
        return None;
    }
    let template_meta = template.get("metadata");
    let template_labels = template_meta
        .and_then(|m| m.get("labels"))
        .map(|n| labels(r, n, &format!("{path}.template.metadata.labels")))
        .unwrap_or_default();
    if let Some(ns) = template_meta.and_then(|m| m.get("namespace")) {
        template_namespace(r, ns, &meta);
    }
    let pod = template
        .get("spec")
        .map(|n| pod_spec(r, n, &format!("{path}.template.spec")))
        .unwrap_or_default();

    let selector = workload_selector(r, kind, owner_spec, path, &template_labels)?;
    if let Some(selector) = &selector {
        let node = owner_spec.get("selector");
        check_selects_template(r, selector, node, &template_labels, &meta, kind);
    }

    Some(Workload {
        kind,
        meta,
        owner,
        selector,
        template_labels,
        ports: pod.ports,
        service_account: pod.service_account,
        host_network: pod.host_network,
    })
}

/// Controllers create their pods in their own namespace (the pod template's
/// `metadata.namespace` is not used), so a different one there is misleading.
fn template_namespace(r: &mut Reader<'_>, node: &Node, meta: &ObjectMeta) {
    let Some(ns) = r.string(node, "template metadata.namespace") else { return };
    if !ns.value.is_empty() && ns.value != meta.namespace {
        r.push(
            Diagnostic::new(
                codes::TEMPLATE_NAMESPACE,
                format!(
                    "the pod template names namespace `{}`, but its pods run in `{}`",
                    ns.value, meta.namespace
                ),
            )
            .at(ns.span, "ignored by Kubernetes")
            .help("remove the template's `namespace`, or move the workload to that namespace"),
        );
    }
}

/// The selector of a workload, as the API server validates it. The outer `None` means
/// the selector had errors (already reported); the inner one, that the API server
/// generates it (Jobs).
fn workload_selector(
    r: &mut Reader<'_>,
    kind: WorkloadKind,
    owner_spec: &Node,
    path: &str,
    template_labels: &Labels,
) -> Option<Option<LabelSelector>> {
    let what = format!("{path}.selector");
    let node = owner_spec.get("selector").filter(|n| n.kind != NodeKind::Null);
    let selector = match (kind, node) {
        // A ReplicationController's selector is a plain label map, defaulted to the
        // template's labels when left out or empty.
        (WorkloadKind::ReplicationController, node) => {
            let match_labels = node.map(|n| labels(r, n, &what)).unwrap_or_default();
            let span = node.map_or(owner_spec.span, |n| n.span);
            if match_labels.is_empty() {
                LabelSelector {
                    match_labels: template_labels.clone(),
                    span,
                    ..LabelSelector::default()
                }
            } else {
                LabelSelector { match_labels, span, ..LabelSelector::default() }
            }
        }
        // A Job's selector is normally generated from its uid (manualSelector unset).
        (WorkloadKind::Job | WorkloadKind::CronJob, None) => return Some(None),
        (WorkloadKind::Job | WorkloadKind::CronJob, Some(node)) => selector(r, node, &what)?,
        (_, None) => {
            r.push(
                Diagnostic::new(codes::MISSING_FIELD, format!("{} has no {what}", kind.name()))
                    .at(owner_spec.span, "no selector here")
                    .help("add `selector: {matchLabels: ...}` with labels of the pod template"),
            );
            return None;
        }
        (_, Some(node)) => selector(r, node, &what)?,
    };
    let jobs = matches!(kind, WorkloadKind::Job | WorkloadKind::CronJob);
    if selector.is_empty() && !jobs {
        r.push(
            Diagnostic::new(
                codes::EMPTY_WORKLOAD_SELECTOR,
                format!("the selector of a {} must not be empty", kind.name()),
            )
            .at(selector.span, "selects every pod of the namespace")
            .help("select the pod template's labels, such as `matchLabels: {app: web}`"),
        );
        return None;
    }
    Some(Some(selector))
}

/// The API server rejects a workload whose selector does not select its own template:
/// its pods would be created and then never counted as its own.
fn check_selects_template(
    r: &mut Reader<'_>,
    selector: &LabelSelector,
    node: Option<&Node>,
    template_labels: &Labels,
    meta: &ObjectMeta,
    kind: WorkloadKind,
) {
    // Point at the first requirement the template fails, found again in the source
    // (the decoded selector keeps only the span of the whole).
    let unmet_label =
        selector.match_labels.iter().find(|(k, v)| template_labels.get(*k) != Some(v));
    let unmet_expression = selector.match_expressions.iter().find(|e| !e.matches(template_labels));
    let (span, unmet) = if let Some((k, v)) = unmet_label {
        let labels = match kind {
            // A ReplicationController's selector is the label map itself.
            WorkloadKind::ReplicationController => node,
            _ => node.and_then(|n| n.get("matchLabels")),
        };
        let span = labels.and_then(|n| entry_key(n, k)).map_or(selector.span, |key| key.span);
        let unmet = match template_labels.get(k) {
            Some(actual) => format!("wants `{k}: {v}`, the template has `{k}: {actual}`"),
            None => format!("wants `{k}: {v}`, the template has no `{k}` label"),
        };
        (span, unmet)
    } else if let Some(req) = unmet_expression {
        let items =
            node.and_then(|n| n.get("matchExpressions")).map_or(&[][..], |n| match &n.kind {
                NodeKind::Seq(items) => items.as_slice(),
                _ => &[],
            });
        let item = items.iter().find(|i| i.get("key").and_then(Node::as_str) == Some(&req.key));
        let unmet = format!("the template's labels fail this `{}` expression", req.key);
        (item.map_or(selector.span, |i| i.span), unmet)
    } else {
        return;
    };
    r.push(
        Diagnostic::new(
            codes::SELECTOR_MISMATCH,
            format!(
                "the selector of {} {}/{} does not match its pod template's labels",
                kind.name(),
                meta.namespace,
                meta.name.value
            ),
        )
        .at(span, unmet)
        .help("give the template (`template.metadata.labels`) every label the selector requires"),
    );
}

/// The key node of `key` in a mapping.
fn entry_key<'n>(map: &'n Node, key: &str) -> Option<&'n Node> {
    match &map.kind {
        NodeKind::Map(entries) => entries.iter().map(|(k, _)| k).find(|k| k.as_str() == Some(key)),
        _ => None,
    }
}

/// Whether `node` is a mapping (or `null`, which reads as an empty one); reports it
/// otherwise. Unlike [`Reader::fields`] it checks no keys.
fn is_mapping(r: &mut Reader<'_>, node: &Node, what: &str) -> bool {
    if matches!(node.kind, NodeKind::Map(_) | NodeKind::Null) {
        return true;
    }
    r.push(
        Diagnostic::new(
            codes::WRONG_TYPE,
            format!("{what} must be a mapping, found {}", node.kind.describe()),
        )
        .at(node.span, "expected a mapping")
        .help(format!("write {what} as `key: value` lines, or `{{}}` when empty")),
    );
    false
}

fn boolean(r: &mut Reader<'_>, node: &Node, what: &str) -> Option<bool> {
    match node.kind {
        NodeKind::Bool(b) => Some(b),
        NodeKind::Null => None,
        _ => {
            r.push(
                Diagnostic::new(
                    codes::WRONG_TYPE,
                    format!("{what} must be true or false, found {}", node.kind.describe()),
                )
                .at(node.span, "expected true or false")
                .help("write `true` or `false`, unquoted"),
            );
            None
        }
    }
}

/// A reference by name to a service account or node, which are DNS subdomains.
fn dns_subdomain(r: &mut Reader<'_>, node: &Node, what: &str) -> Option<Sp<String>> {
    let name = r.string(node, &format!("a {what} name"))?;
    if let Err(e) = validate_dns_subdomain(&name.value) {
        r.push(
            Diagnostic::new(
                codes::INVALID_NAME,
                format!("{what} name `{}` is invalid", name.value),
            )
            .at(name.span, e)
            .help("names are lowercase DNS subdomains, such as `web-frontend`"),
        );
        return None;
    }
    Some(name)
}

fn container_port(r: &mut Reader<'_>, node: &Node) -> Option<ContainerPort> {
    let name = node.get("name").and_then(|n| r.string(n, "container port name")).map(|s| s.value);
    let number = node.get("containerPort").and_then(|n| r.int(n, "containerPort"))?;
    let port = match u16::try_from(number.value) {
        Ok(p) if p > 0 => p,
        _ => {
            r.push(
                Diagnostic::new(
                    codes::INVALID_PORT,
                    format!("containerPort {} is out of range", number.value),
                )
                .at(number.span, "must be 1-65535")
                .help("a container port is a number between 1 and 65535"),
            );
            return None;
        }
    };
    let protocol = match node.get("protocol").and_then(|n| r.string(n, "protocol")) {
        None => Protocol::Tcp,
        Some(p) => protocol(r, &p)?,
    };
    Some(ContainerPort { name, port, protocol })
}

pub(crate) fn protocol(r: &mut Reader<'_>, p: &Sp<String>) -> Option<Protocol> {
    let parsed = Protocol::parse(&p.value);
    if parsed.is_none() {
        r.push(
            Diagnostic::new(
                codes::INVALID_PROTOCOL,
                format!("protocol `{}` is not supported", p.value),
            )
            .at(p.span, "not TCP, UDP or SCTP")
            .help("use TCP, UDP or SCTP (upper case), or leave it out for TCP"),
        );
    }
    parsed
}

fn ip_address(r: &mut Reader<'_>, node: &Node, what: &str) -> Option<Sp<IpAddr>> {
    let s = r.string(node, what)?;
    match s.value.parse::<IpAddr>() {
        Ok(ip) => Some(Sp::new(ip, s.span)),
        Err(_) => {
            r.push(
                Diagnostic::new(codes::INVALID_IP, format!("`{}` is not an IP address", s.value))
                    .at(s.span, "not an IPv4 or IPv6 address")
                    .help(
                        "write one address, such as 10.244.1.7 or fd00::7, without a prefix length",
                    ),
            );
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use crate::ast::{NodeAddressKind, WorkloadKind};
    use crate::codes::{self, Code};
    use crate::manifest::{Bundle, load_sources};
    use crate::source::Sources;

    fn load(text: &str) -> Bundle {
        let mut sources = Sources::default();
        sources.add("test.yaml", text);
        load_sources(&sources)
    }

    /// The codes of the diagnostics, with the line and column each points at.
    fn found(bundle: &Bundle) -> Vec<(&'static str, u32, u32)> {
        bundle
            .diagnostics
            .iter()
            .map(|d| (d.code.code, d.span.map_or(0, |s| s.line), d.span.map_or(0, |s| s.col)))
            .collect()
    }

    fn only(bundle: &Bundle, code: Code) -> (u32, u32) {
        match found(bundle).as_slice() {
            [(c, line, col)] if *c == code.code => (*line, *col),
            other => panic!("expected one {}, found {other:?}", code.code),
        }
    }

    const POD: &str = "\
apiVersion: v1
kind: Pod
metadata:
  name: web-7d9f8c6b5-abcde
  namespace: shop
  labels: {app: web}
  managedFields:
    - manager: kube-controller-manager
      operation: Update
      fieldsV1: {f:metadata: {f:labels: {}}}
  ownerReferences:
    - apiVersion: apps/v1
      kind: ReplicaSet
      name: web-7d9f8c6b5
      uid: 1b7c2a3e-0000-4000-8000-000000000001
      controller: true
      blockOwnerDeletion: true
spec:
  serviceAccountName: web
  serviceAccount: web
  nodeName: node-a
  dnsPolicy: ClusterFirst
  containers:
    - name: web
      image: web:1
      ports:
        - {name: http, containerPort: 8080}
        - {containerPort: 9090, protocol: UDP}
      resources: {limits: {cpu: 100m}}
status:
  phase: Running
  conditions: [{type: Ready, status: 'True'}]
  podIP: 10.244.1.10
  podIPs: [{ip: 10.244.1.10}, {ip: 'fd00::10'}]
";

    #[test]
    fn decodes_pod_owner_account_node_and_ports() {
        let bundle = load(POD);
        assert_eq!(found(&bundle), []);
        let pod = &bundle.pods[0];
        let owner = pod.owner.as_ref().expect("controller reference");
        assert_eq!(
            (owner.kind.as_str(), owner.name.as_str(), owner.controller),
            ("ReplicaSet", "web-7d9f8c6b5", true)
        );
        assert_eq!(owner.span.line, 12);
        assert_eq!(pod.service_account.as_ref().map(|s| s.value.as_str()), Some("web"));
        assert_eq!(pod.node_name.as_ref().map(|s| s.value.as_str()), Some("node-a"));
        assert!(!pod.host_network);
        assert_eq!(pod.ports[0].name.as_deref(), Some("http"));
        assert_eq!(pod.ports[1].protocol, crate::ast::Protocol::Udp);
        let ips: Vec<IpAddr> = pod.ips.iter().map(|ip| ip.value).collect();
        assert_eq!(ips, ["10.244.1.10".parse::<IpAddr>().unwrap(), "fd00::10".parse().unwrap()]);
    }

    #[test]
    fn keeps_host_network_and_ignores_non_controller_owners() {
        let bundle = load(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: agent\n  namespace: kube-system\n  \
             ownerReferences:\n    - {apiVersion: v1, kind: Node, name: node-a, uid: x}\n\
             spec:\n  hostNetwork: true\n  containers: []\n",
        );
        assert_eq!(found(&bundle), []);
        assert!(bundle.pods[0].host_network);
        assert_eq!(bundle.pods[0].owner, None);
    }

    #[test]
    fn rejects_two_controller_owner_references() {
        let bundle = load(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  ownerReferences:\n    \
             - {apiVersion: apps/v1, kind: ReplicaSet, name: a, uid: x, controller: true}\n    \
             - {apiVersion: apps/v1, kind: ReplicaSet, name: b, uid: y, controller: true}\n",
        );
        assert_eq!(only(&bundle, codes::MULTIPLE_CONTROLLERS), (7, 76));
        assert_eq!(bundle.pods[0].owner.as_ref().map(|o| o.name.as_str()), Some("a"));
    }

    #[test]
    fn rejects_owner_reference_without_name() {
        let bundle = load(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  ownerReferences:\n    \
             - {apiVersion: apps/v1, kind: ReplicaSet, uid: x, controller: true}\n",
        );
        assert_eq!(only(&bundle, codes::MISSING_FIELD), (6, 7));
        assert_eq!(bundle.pods[0].owner, None);
    }

    #[test]
    fn rejects_invalid_node_name_and_host_network_type() {
        let bundle = load(
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  nodeName: Node_A\n  \
             hostNetwork: 'yes'\n",
        );
        assert_eq!(found(&bundle), [("PL0008", 5, 13), ("PL0006", 6, 16)]);
        assert_eq!(bundle.pods[0].node_name, None);
    }

    const NODE: &str = "\
apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels: {kubernetes.io/hostname: node-a, topology.kubernetes.io/zone: eu-1a}
spec:
  podCIDR: 10.244.1.0/24
  podCIDRs: [10.244.1.0/24, 'fd00:10:244:1::/64']
  providerID: aws:///eu-1a/i-0abc
status:
  addresses:
    - {type: InternalIP, address: 10.0.0.11}
    - {type: ExternalIP, address: 203.0.113.11}
    - {type: Hostname, address: node-a}
    - {type: InternalDNS, address: node-a.eu-1.compute.internal}
  capacity: {cpu: '4'}
";

    #[test]
    fn decodes_node_addresses_and_pod_cidrs() {
        let bundle = load(NODE);
        assert_eq!(found(&bundle), []);
        let node = &bundle.nodes[0];
        assert_eq!(node.meta.namespace, "");
        assert_eq!(node.meta.labels["topology.kubernetes.io/zone"], "eu-1a");
        let kinds: Vec<_> =
            node.addresses.iter().map(|a| (a.kind, a.ip.value.to_string())).collect();
        assert_eq!(
            kinds,
            [
                (NodeAddressKind::InternalIp, "10.0.0.11".to_owned()),
                (NodeAddressKind::ExternalIp, "203.0.113.11".to_owned())
            ]
        );
        let cidrs: Vec<String> = node.pod_cidrs.iter().map(|c| c.value.to_string()).collect();
        assert_eq!(cidrs, ["10.244.1.0/24", "fd00:10:244:1::/64"]);
    }

    #[test]
    fn rejects_node_with_namespace_or_bad_address() {
        let text = NODE
            .replace("  name: node-a\n", "  name: node-a\n  namespace: default\n")
            .replace("address: 10.0.0.11", "address: 10.0.0.300");
        let bundle = load(&text);
        assert_eq!(found(&bundle), [("PL0021", 5, 14), ("PL0016", 13, 35)]);
        assert_eq!(bundle.nodes[0].addresses.len(), 1);
    }

    #[test]
    fn rejects_duplicate_nodes() {
        let bundle = load(&format!("{NODE}---\n{NODE}"));
        assert_eq!(only(&bundle, codes::DUPLICATE_OBJECT), (21, 9));
        assert_eq!(bundle.diagnostics[0].message, "Node node-a is defined twice");
    }

    const DEPLOYMENT: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 3
  selector:
    matchLabels: {app: web}
    matchExpressions: [{key: tier, operator: In, values: [front]}]
  strategy: {type: RollingUpdate}
  template:
    metadata:
      labels: {app: web, tier: front}
    spec:
      serviceAccountName: web
      containers:
        - name: web
          image: web:1
          ports: [{name: http, containerPort: 8080}]
          livenessProbe: {httpGet: {path: /healthz, port: http}}
status:
  readyReplicas: 3
";

    #[test]
    fn decodes_deployment_template() {
        let bundle = load(DEPLOYMENT);
        assert_eq!(found(&bundle), []);
        let w = &bundle.workloads[0];
        assert_eq!(w.kind, WorkloadKind::Deployment);
        assert_eq!(w.meta.namespace, "shop");
        assert_eq!(w.template_labels["tier"], "front");
        assert_eq!(w.ports[0].name.as_deref(), Some("http"));
        assert_eq!(w.service_account.as_ref().map(|s| s.value.as_str()), Some("web"));
        let selector = w.selector.as_ref().expect("selector");
        assert_eq!(selector.match_labels["app"], "web");
        assert_eq!(selector.match_expressions.len(), 1);
    }

    #[test]
    fn rejects_selector_that_misses_the_template() {
        let bundle = load(
            &DEPLOYMENT
                .replace("labels: {app: web, tier: front}", "labels: {app: webb, tier: front}"),
        );
        assert_eq!(only(&bundle, codes::SELECTOR_MISMATCH), (9, 19));
        assert_eq!(bundle.diagnostics[0].label, "wants `app: web`, the template has `app: webb`");

        let bundle = load(&DEPLOYMENT.replace("values: [front]", "values: [back]"));
        assert_eq!(only(&bundle, codes::SELECTOR_MISMATCH), (10, 24));
        assert_eq!(
            bundle.diagnostics[0].label,
            "the template's labels fail this `tier` expression"
        );
    }

    #[test]
    fn rejects_missing_or_empty_deployment_selector() {
        let without = DEPLOYMENT
            .replace("    matchLabels: {app: web}\n", "")
            .replace("    matchExpressions: [{key: tier, operator: In, values: [front]}]\n", "");
        let bundle = load(&without.replace("  selector:\n", "  selector: {}\n"));
        assert_eq!(only(&bundle, codes::EMPTY_WORKLOAD_SELECTOR), (8, 13));
        assert!(bundle.workloads.is_empty());

        let bundle = load(&without.replace("  selector:\n", ""));
        assert_eq!(only(&bundle, codes::MISSING_FIELD), (7, 3));
    }

    #[test]
    fn rejects_workload_without_template() {
        let bundle = load(
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: d}\nspec:\n  selector: {matchLabels: {a: b}}\n",
        );
        assert_eq!(only(&bundle, codes::MISSING_FIELD), (5, 3));

        // A spec of the wrong type is one problem, not also a missing spec.
        let bundle = load("apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: d}\nspec: 3\n");
        assert_eq!(only(&bundle, codes::WRONG_TYPE), (4, 7));
    }

    #[test]
    fn warns_when_template_names_another_namespace() {
        let text = DEPLOYMENT.replace(
            "    metadata:\n      labels:",
            "    metadata:\n      namespace: other\n      labels:",
        );
        let bundle = load(&text);
        assert_eq!(only(&bundle, codes::TEMPLATE_NAMESPACE), (14, 18));
        assert_eq!(bundle.workloads[0].meta.namespace, "shop");
        assert_eq!(codes::TEMPLATE_NAMESPACE.severity, crate::Severity::Warning);
    }

    #[test]
    fn decodes_every_apps_kind() {
        let text = ["ReplicaSet", "StatefulSet", "DaemonSet"]
            .iter()
            .map(|k| DEPLOYMENT.replace("kind: Deployment", &format!("kind: {k}")))
            .collect::<Vec<_>>()
            .join("---\n");
        let bundle = load(&text);
        assert_eq!(found(&bundle), []);
        let kinds: Vec<WorkloadKind> = bundle.workloads.iter().map(|w| w.kind).collect();
        assert_eq!(
            kinds,
            [WorkloadKind::ReplicaSet, WorkloadKind::StatefulSet, WorkloadKind::DaemonSet]
        );
    }

    #[test]
    fn duplicate_workloads_are_per_kind() {
        let sts = DEPLOYMENT.replace("kind: Deployment", "kind: StatefulSet");
        let bundle = load(&format!("{DEPLOYMENT}---\n{sts}"));
        assert_eq!(found(&bundle), []);
        let bundle = load(&format!("{DEPLOYMENT}---\n{DEPLOYMENT}"));
        assert_eq!(only(&bundle, codes::DUPLICATE_OBJECT), (28, 9));
        assert_eq!(bundle.diagnostics[0].message, "Deployment shop/web is defined twice");
    }

    #[test]
    fn reads_cronjob_template_from_its_job_template() {
        let bundle = load(
            "\
apiVersion: batch/v1
kind: CronJob
metadata: {name: report, namespace: shop}
spec:
  schedule: '0 3 * * *'
  jobTemplate:
    spec:
      backoffLimit: 2
      template:
        metadata: {labels: {app: report}}
        spec:
          restartPolicy: OnFailure
          containers: [{name: report, image: report:1, ports: [{name: metrics, containerPort: 9102}]}]
",
        );
        assert_eq!(found(&bundle), []);
        let w = &bundle.workloads[0];
        assert_eq!((w.kind, w.selector.is_none()), (WorkloadKind::CronJob, true));
        assert_eq!(w.template_labels["app"], "report");
        assert_eq!(w.ports[0].name.as_deref(), Some("metrics"));

        let bundle = load(
            "apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: r}\nspec:\n  schedule: x\n",
        );
        assert_eq!(only(&bundle, codes::MISSING_FIELD), (5, 3));
    }

    #[test]
    fn checks_a_job_selector_only_when_given() {
        let job = "\
apiVersion: batch/v1
kind: Job
metadata: {name: migrate, namespace: shop}
spec:
  selector: {matchLabels: {batch.kubernetes.io/controller-uid: 5f1c}}
  template:
    metadata: {labels: {batch.kubernetes.io/controller-uid: 5f1c, app: migrate}}
    spec: {containers: [{name: m, image: m:1}]}
";
        let bundle = load(job);
        assert_eq!(found(&bundle), []);
        assert!(bundle.workloads[0].selector.is_some());

        let bundle = load(&job.replace(
            "  selector: {matchLabels: {batch.kubernetes.io/controller-uid: 5f1c}}\n",
            "",
        ));
        assert_eq!(found(&bundle), []);
        assert!(bundle.workloads[0].selector.is_none());

        let bundle = load(&job.replace("controller-uid: 5f1c, app", "controller-uid: a1b2, app"));
        assert_eq!(only(&bundle, codes::SELECTOR_MISMATCH), (5, 28));
    }

    #[test]
    fn replication_controller_selector_defaults_to_template_labels() {
        let rc = "\
apiVersion: v1
kind: ReplicationController
metadata: {name: legacy, namespace: shop}
spec:
  template:
    metadata: {labels: {app: legacy}}
    spec: {containers: [{name: l, image: l:1}]}
";
        let bundle = load(rc);
        assert_eq!(found(&bundle), []);
        let selector = bundle.workloads[0].selector.as_ref().expect("defaulted");
        assert_eq!(selector.match_labels["app"], "legacy");

        let bundle =
            load(&rc.replace("spec:\n  template:", "spec:\n  selector: {app: old}\n  template:"));
        assert_eq!(only(&bundle, codes::SELECTOR_MISMATCH), (5, 14));

        let bundle = load(&rc.replace("{labels: {app: legacy}}", "{}"));
        assert_eq!(only(&bundle, codes::EMPTY_WORKLOAD_SELECTOR), (5, 3));
    }

    #[test]
    fn typed_lists_lend_their_kind_to_bare_items() {
        let bundle = load(
            "\
apiVersion: v1
kind: PodList
metadata: {resourceVersion: '123'}
items:
  - metadata: {name: a, namespace: shop}
  - apiVersion: v1
    kind: Pod
    metadata: {name: b, namespace: shop}
---
apiVersion: apps/v1
kind: DeploymentList
items:
  - metadata: {name: web, namespace: shop}
    spec:
      selector: {matchLabels: {app: web}}
      template: {metadata: {labels: {app: web}}}
",
        );
        assert_eq!(found(&bundle), []);
        assert_eq!(bundle.pods.len(), 2);
        assert_eq!(bundle.workloads[0].kind, WorkloadKind::Deployment);
    }

    #[test]
    fn skips_other_kinds_and_their_lists_with_a_note() {
        let bundle = load(
            "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n---\n\
             apiVersion: v1\nkind: ServiceList\nitems: []\n---\n\
             apiVersion: apps/v1\nkind: ControllerRevision\nmetadata: {name: web-1}\n",
        );
        assert_eq!(found(&bundle), [("PL0100", 2, 7), ("PL0100", 6, 7), ("PL0100", 10, 7)]);
    }
}
