//! The generated clusters as manifests: namespaces, pods, NetworkPolicies, then Cilium
//! policies, in the YAML shapes users write.

use std::fmt::Write as _;

use super::{
    BLOCKS, CiliumL4, CiliumPeer, CiliumPolicy, Cluster, NAMESPACES, Peer, Policy, PortValue,
    Selector,
};

impl Cluster {
    /// The cluster as manifests: namespaces, pods, NetworkPolicies, Cilium policies.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (i, labels) in self.namespaces.iter().enumerate() {
            let _ = writeln!(
                out,
                "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}",
                NAMESPACES[i]
            );
            yaml_labels(&mut out, labels);
        }
        for (i, pod) in self.pods.iter().enumerate() {
            let ns = NAMESPACES[pod.namespace];
            let _ = writeln!(
                out,
                "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\n  namespace: {ns}"
            );
            yaml_labels(&mut out, &pod.labels);
            out.push_str("spec:\n  containers:\n    - name: main\n");
            if !pod.ports.is_empty() {
                out.push_str("      ports:\n");
            }
            for (name, number, protocol) in &pod.ports {
                let _ = writeln!(
                    out,
                    "        - {{name: {name}, containerPort: {number}, protocol: {protocol}}}"
                );
            }
            let ips: Vec<String> =
                self.addresses(i).iter().map(|ip| format!("{{ip: '{ip}'}}")).collect();
            let _ = writeln!(
                out,
                "status:\n  podIP: '{}'\n  podIPs: [{}]",
                self.addresses(i)[0],
                ips.join(", ")
            );
        }
        for (i, policy) in self.policies.iter().enumerate() {
            render_policy(&mut out, i, policy);
        }
        for (i, policy) in self.cilium.iter().enumerate() {
            render_cilium(&mut out, i, policy);
        }
        out
    }
}

fn yaml_labels(out: &mut String, labels: &[(&str, &str)]) {
    if !labels.is_empty() {
        out.push_str("  labels:\n");
        for (k, v) in labels {
            let _ = writeln!(out, "    {k}: {v}");
        }
    }
}

fn yaml_selector(out: &mut String, indent: usize, s: &Selector) {
    let pad = " ".repeat(indent);
    if s.labels.is_empty() && s.expressions.is_empty() {
        out.push_str(" {}\n");
        return;
    }
    out.push('\n');
    if !s.labels.is_empty() {
        let _ = writeln!(out, "{pad}matchLabels:");
        for (k, v) in &s.labels {
            let _ = writeln!(out, "{pad}  {k}: {v}");
        }
    }
    if !s.expressions.is_empty() {
        let _ = writeln!(out, "{pad}matchExpressions:");
        for (k, op, values) in &s.expressions {
            let _ = writeln!(out, "{pad}  - key: {k}\n{pad}    operator: {op}");
            if !values.is_empty() {
                let _ = writeln!(out, "{pad}    values: [{}]", values.join(", "));
            }
        }
    }
}

/// A block's fields: the first line after `first`, the others at `rest`.
fn yaml_block(out: &mut String, first: &str, rest: &str, block: usize) {
    let (cidr, except) = BLOCKS[block];
    let _ = writeln!(out, "{first}cidr: '{cidr}'");
    if !except.is_empty() {
        let quoted: Vec<String> = except.iter().map(|e| format!("'{e}'")).collect();
        let _ = writeln!(out, "{rest}except: [{}]", quoted.join(", "));
    }
}

fn port_fields(protocol: Option<&str>, port: Option<&PortValue>, quote: bool) -> String {
    let mut fields = Vec::new();
    if let Some(protocol) = protocol {
        fields.push(format!("protocol: {protocol}"));
    }
    match port {
        Some(PortValue::Number(p, _)) if quote => fields.push(format!("port: '{p}'")),
        Some(PortValue::Number(p, _)) => fields.push(format!("port: {p}")),
        Some(PortValue::Name(name)) => fields.push(format!("port: {name}")),
        None => {}
    }
    if let Some(PortValue::Number(_, Some(end))) = port {
        fields.push(format!("endPort: {end}"));
    }
    format!("{{{}}}", fields.join(", "))
}

fn render_policy(out: &mut String, i: usize, policy: &Policy) {
    let ns = NAMESPACES[policy.namespace];
    out.push_str("---\napiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\n");
    let _ = writeln!(out, "metadata:\n  name: np{i}\n  namespace: {ns}\nspec:");
    out.push_str("  podSelector:");
    yaml_selector(out, 4, &policy.selector);
    if let Some(types) = &policy.types {
        let _ = writeln!(out, "  policyTypes: [{}]", types.join(", "));
    }
    for (key, peers_key, rules) in
        [("ingress", "from", &policy.ingress), ("egress", "to", &policy.egress)]
    {
        let Some(rules) = rules else { continue };
        if rules.is_empty() {
            let _ = writeln!(out, "  {key}: []");
            continue;
        }
        let _ = writeln!(out, "  {key}:");
        for rule in rules {
            if rule.peers.is_empty() && rule.ports.is_empty() {
                out.push_str("    - {}\n");
                continue;
            }
            let mut lead = "    - ";
            if !rule.peers.is_empty() {
                let _ = writeln!(out, "{lead}{peers_key}:");
                lead = "      ";
                for peer in &rule.peers {
                    match peer {
                        Peer::Pods { namespaces, pods } => {
                            let mut item = "        - ";
                            if let Some(ns) = namespaces {
                                let _ = write!(out, "{item}namespaceSelector:");
                                yaml_selector(out, 12, ns);
                                item = "          ";
                            }
                            if let Some(pods) = pods {
                                let _ = write!(out, "{item}podSelector:");
                                yaml_selector(out, 12, pods);
                            }
                        }
                        Peer::Block(b) => {
                            out.push_str("        - ipBlock:\n");
                            yaml_block(out, "            ", "            ", *b);
                        }
                    }
                }
            }
            if !rule.ports.is_empty() {
                let _ = writeln!(out, "{lead}ports:");
                for p in &rule.ports {
                    let _ = writeln!(
                        out,
                        "        - {}",
                        port_fields(p.protocol, p.port.as_ref(), false)
                    );
                }
            }
        }
    }
}

fn render_cilium(out: &mut String, i: usize, policy: &CiliumPolicy) {
    let ns = NAMESPACES[policy.namespace];
    out.push_str("---\napiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\n");
    let _ = writeln!(out, "metadata:\n  name: cnp{i}\n  namespace: {ns}\nspec:");
    out.push_str("  endpointSelector:");
    yaml_selector(out, 4, &policy.selector);
    let names = ["ingress", "ingressDeny", "egress", "egressDeny"];
    for (list, rules) in names.iter().zip(&policy.lists) {
        if rules.is_empty() {
            continue;
        }
        let p = if list.starts_with("ingress") { "from" } else { "to" };
        let _ = writeln!(out, "  {list}:");
        for (peer, l4) in rules {
            if matches!((peer, l4), (CiliumPeer::Any, CiliumL4::Any)) {
                out.push_str("    - {}\n");
                continue;
            }
            let mut lead = "    - ";
            match peer {
                CiliumPeer::Any => {}
                CiliumPeer::Endpoints(selector) => {
                    let _ = write!(out, "{lead}{p}Endpoints:\n        -");
                    yaml_selector(out, 10, selector);
                    lead = "      ";
                }
                CiliumPeer::CidrSet(b) => {
                    let _ = writeln!(out, "{lead}{p}CIDRSet:");
                    yaml_block(out, "        - ", "          ", *b);
                    lead = "      ";
                }
                CiliumPeer::Entity(entity) => {
                    let _ = writeln!(out, "{lead}{p}Entities: [{entity}]");
                    lead = "      ";
                }
            }
            match l4 {
                CiliumL4::Any => {}
                CiliumL4::Ports(ports) => {
                    let _ = writeln!(out, "{lead}toPorts:\n        - ports:");
                    for (protocol, port) in ports {
                        let _ = writeln!(
                            out,
                            "            - {}",
                            port_fields(*protocol, Some(port), true)
                        );
                    }
                }
                CiliumL4::Icmps(fields) => {
                    let _ = writeln!(out, "{lead}icmps:\n        - fields:");
                    for (family, icmp_type) in fields {
                        let _ =
                            writeln!(out, "            - {{family: {family}, type: {icmp_type}}}");
                    }
                }
            }
        }
    }
}
