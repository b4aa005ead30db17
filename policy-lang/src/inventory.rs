//! Decoders for the cluster inventory (Namespace, Pod) and for object metadata.

use std::net::IpAddr;

use crate::ast::{ContainerPort, Labels, Namespace, ObjectMeta, Pod, Protocol, Sp};
use crate::codes;
use crate::diagnostic::Diagnostic;
use crate::reader::{Fields, Reader};
use crate::selector::{validate_dns_label, validate_dns_subdomain, validate_label_key, validate_label_value};
use crate::yaml::Node;

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
    if let Err(e) = validate_dns_subdomain(&name.value) {
        r.push(
            Diagnostic::new(codes::INVALID_NAME, format!("{kind} name `{}` is invalid", name.value))
                .at(name.span, e)
                .help("names are lowercase DNS subdomains, such as `web-frontend`"),
        );
    }
    let mut namespace = String::from("default");
    if let Some(node) = meta.get("namespace") {
        if let Some(ns) = r.string(node, "metadata.namespace") {
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
                    Diagnostic::new(codes::INVALID_NAME, format!("namespace `{}` is invalid", ns.value))
                        .at(ns.span, e)
                        .help("namespace names are lowercase DNS labels, such as `prod`"),
                );
            }
            namespace = ns.value;
        }
    }
    let labels = meta.get("labels").map(|node| labels(r, node, "metadata.labels")).unwrap_or_default();
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
    if let Err(e) = validate_label_key(&key.value) {
        r.push(
            Diagnostic::new(codes::INVALID_LABEL_KEY, format!("label key `{}` is invalid", key.value))
                .at(key.span, e)
                .help("a key is an optional DNS prefix and `/`, then up to 63 letters, digits, `-`, `_` or `.`"),
        );
    }
    if let Err(e) = validate_label_value(&value.value) {
        r.push(
            Diagnostic::new(
                codes::INVALID_LABEL_VALUE,
                format!("label value `{}` is invalid", value.value),
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
    let mut ports = Vec::new();
    if let Some(spec) = object.get("spec") {
        // A pod spec has dozens of fields; only containers matter to policy. Reading it
        // without a schema check keeps real exports working.
        if let Some(containers) = spec.get("containers") {
            for container in r.list(containers, "spec.containers").to_vec() {
                if let Some(list) = container.get("ports") {
                    for port in r.list(list, "container ports").to_vec() {
                        if let Some(p) = container_port(r, &port) {
                            ports.push(p);
                        }
                    }
                }
            }
        }
    }
    let mut ips = Vec::new();
    if let Some(status) = object.get("status") {
        if let Some(list) = status.get("podIPs") {
            for entry in r.list(list, "status.podIPs").to_vec() {
                if let Some(ip) = entry.get("ip").and_then(|n| ip_address(r, n)) {
                    ips.push(ip);
                }
            }
        }
        if ips.is_empty() {
            if let Some(ip) = status.get("podIP").and_then(|n| ip_address(r, n)) {
                ips.push(ip);
            }
        }
    }
    ips.sort_by(|a, b| a.value.cmp(&b.value));
    ips.dedup_by(|a, b| a.value == b.value);
    Some(Pod { meta, ips, ports })
}

fn container_port(r: &mut Reader<'_>, node: &Node) -> Option<ContainerPort> {
    let name = node.get("name").and_then(|n| r.string(n, "container port name")).map(|s| s.value);
    let number = node.get("containerPort").and_then(|n| r.int(n, "containerPort"))?;
    let port = match u16::try_from(number.value) {
        Ok(p) if p > 0 => p,
        _ => {
            r.push(
                Diagnostic::new(codes::INVALID_PORT, format!("containerPort {} is out of range", number.value))
                    .at(number.span, "must be 1-65535"),
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
            Diagnostic::new(codes::INVALID_PROTOCOL, format!("protocol `{}` is not supported", p.value))
                .at(p.span, "not TCP, UDP or SCTP")
                .help("use TCP, UDP or SCTP (upper case), or leave it out for TCP"),
        );
    }
    parsed
}

fn ip_address(r: &mut Reader<'_>, node: &Node) -> Option<Sp<IpAddr>> {
    let s = r.string(node, "a pod IP")?;
    match s.value.parse::<IpAddr>() {
        Ok(ip) => Some(Sp::new(ip, s.span)),
        Err(_) => {
            r.push(
                Diagnostic::new(codes::INVALID_IP, format!("`{}` is not an IP address", s.value))
                    .at(s.span, "not an IPv4 or IPv6 address"),
            );
            None
        }
    }
}
