//! The generated cluster as YAML documents, as `kubectl get -o yaml` or Helm would write
//! them.

use std::fmt::Write as _;
use std::net::IpAddr;

use super::*;

impl Cluster {
    /// Namespace indexes folded into the namespaces that exist.
    pub fn fitted(mut self) -> Cluster {
        let n = self.namespaces.len();
        self.pods.iter_mut().for_each(|p| p.namespace %= n);
        self.policies.iter_mut().for_each(|p| p.namespace %= n);
        for p in &mut self.cilium {
            p.namespace = p.namespace.map(|i| i % n);
            p.nodes &= p.namespace.is_none();
        }
        self
    }

    pub fn pod_address(&self, i: usize) -> IpAddr {
        format!("10.0.{}.{}", self.pods[i].namespace, 10 + i).parse().unwrap()
    }

    pub fn node_address(&self, i: usize) -> IpAddr {
        format!("10.1.0.{}", 10 + i).parse().unwrap()
    }

    /// Every document with the file name it gets when each goes in a file of its own:
    /// namespaces, pods, NetworkPolicies, Cilium policies. Names are stable: a pod or
    /// policy keeps its name (`p<i>`, `np<i>`, `cnp<i>`) when others are added after it.
    pub fn documents(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, labels) in self.namespaces.iter().enumerate() {
            let mut doc =
                format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {}\n", NAMESPACES[i]);
            write_labels(&mut doc, "  ", labels);
            out.push((format!("ns-{i}.yaml"), doc));
        }
        for (i, labels) in self.nodes.iter().enumerate() {
            let mut doc = format!("apiVersion: v1\nkind: Node\nmetadata:\n  name: n{i}\n");
            write_labels(&mut doc, "  ", labels);
            writeln!(
                doc,
                "status:\n  addresses:\n    - {{type: InternalIP, address: {}}}",
                self.node_address(i)
            )
            .unwrap();
            out.push((format!("node-{i}.yaml"), doc));
        }
        for i in 0..self.pods.len() {
            out.push((format!("pod-{i}.yaml"), self.pod_document(i)));
        }
        for (i, policy) in self.policies.iter().enumerate() {
            out.push((format!("np-{i}.yaml"), network_policy(i, policy)));
        }
        for (i, policy) in self.cilium.iter().enumerate() {
            out.push((format!("cnp-{i}.yaml"), cilium_document(i, policy)));
        }
        out
    }

    fn pod_document(&self, i: usize) -> String {
        let pod = &self.pods[i];
        let mut out = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p{i}\n  namespace: {}\n",
            NAMESPACES[pod.namespace]
        );
        write_labels(&mut out, "  ", &pod.labels);
        out.push_str("spec:\n  containers:\n    - name: main\n");
        if !pod.ports.is_empty() {
            out.push_str("      ports:\n");
        }
        for (name, number, protocol) in &pod.ports {
            writeln!(
                out,
                "        - {{name: {name}, containerPort: {number}, protocol: {protocol}}}"
            )
            .unwrap();
        }
        writeln!(out, "status:\n  podIP: {}", self.pod_address(i)).unwrap();
        out
    }

    /// The cluster as one multi-document YAML text, documents in the given order.
    pub fn render(&self) -> String {
        join(self.documents().iter().map(|(_, text)| text.as_str()))
    }
}

fn write_labels(out: &mut String, pad: &str, labels: &[(&str, &str)]) {
    if !labels.is_empty() {
        writeln!(out, "{pad}labels:").unwrap();
        for (k, v) in labels {
            writeln!(out, "{pad}  {k}: {v}").unwrap();
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
        writeln!(out, "{pad}matchLabels:").unwrap();
        for (k, v) in &s.labels {
            writeln!(out, "{pad}  {k}: {v}").unwrap();
        }
    }
    if !s.expressions.is_empty() {
        writeln!(out, "{pad}matchExpressions:").unwrap();
        for (k, op, values) in &s.expressions {
            writeln!(out, "{pad}  - key: {k}\n{pad}    operator: {op}").unwrap();
            if !values.is_empty() {
                writeln!(out, "{pad}    values: [{}]", values.join(", ")).unwrap();
            }
        }
    }
}

fn yaml_rules(out: &mut String, key: &str, peers_key: &str, rules: &[Rule]) {
    if rules.is_empty() {
        writeln!(out, "  {key}: []").unwrap();
        return;
    }
    writeln!(out, "  {key}:").unwrap();
    for rule in rules {
        if rule.peers.is_empty() && rule.ports.is_empty() {
            out.push_str("    - {}\n");
            continue;
        }
        let mut first = true;
        let mut item = |out: &mut String, field: &str| {
            let lead = if std::mem::take(&mut first) { "    - " } else { "      " };
            writeln!(out, "{lead}{field}:").unwrap();
        };
        if !rule.peers.is_empty() {
            item(out, peers_key);
            for peer in &rule.peers {
                match peer {
                    Peer::Pods { namespaces, pods } => {
                        let mut lead = "        - ";
                        if let Some(ns) = namespaces {
                            write!(out, "{lead}namespaceSelector:").unwrap();
                            yaml_selector(out, 12, ns);
                            lead = "          ";
                        }
                        if let Some(pods) = pods {
                            write!(out, "{lead}podSelector:").unwrap();
                            yaml_selector(out, 12, pods);
                        }
                    }
                    Peer::Block(i) => {
                        let (cidr, except) = BLOCKS[*i];
                        writeln!(out, "        - ipBlock:\n            cidr: {cidr}").unwrap();
                        if !except.is_empty() {
                            writeln!(out, "            except: [{}]", except.join(", ")).unwrap();
                        }
                    }
                }
            }
        }
        if !rule.ports.is_empty() {
            item(out, "ports");
            for port in &rule.ports {
                let mut fields = Vec::new();
                if let Some(protocol) = port.protocol {
                    fields.push(format!("protocol: {protocol}"));
                }
                match &port.port {
                    Some(PortValue::Number(p, end)) => {
                        fields.push(format!("port: {p}"));
                        if let Some(end) = end {
                            fields.push(format!("endPort: {end}"));
                        }
                    }
                    Some(PortValue::Name(name)) => fields.push(format!("port: {name}")),
                    None => {}
                }
                writeln!(out, "        - {{{}}}", fields.join(", ")).unwrap();
            }
        }
    }
}

fn network_policy(i: usize, policy: &Policy) -> String {
    let mut out = format!(
        "apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata:\n  name: np{i}\n  namespace: {}\nspec:\n",
        NAMESPACES[policy.namespace]
    );
    out.push_str("  podSelector:");
    yaml_selector(&mut out, 4, &policy.selector);
    if let Some(types) = &policy.types {
        writeln!(out, "  policyTypes: [{}]", types.join(", ")).unwrap();
    }
    if let Some(rules) = &policy.ingress {
        yaml_rules(&mut out, "ingress", "from", rules);
    }
    if let Some(rules) = &policy.egress {
        yaml_rules(&mut out, "egress", "to", rules);
    }
    out
}

fn cilium_document(i: usize, policy: &CiliumPolicy) -> String {
    let mut out = match policy.namespace {
        Some(ns) => format!(
            "apiVersion: cilium.io/v2\nkind: CiliumNetworkPolicy\nmetadata:\n  name: cnp{i}\n  namespace: {}\n",
            NAMESPACES[ns]
        ),
        None => format!(
            "apiVersion: cilium.io/v2\nkind: CiliumClusterwideNetworkPolicy\nmetadata:\n  name: ccnp{i}\n"
        ),
    };
    out.push_str(if policy.nodes {
        "spec:\n  nodeSelector:"
    } else {
        "spec:\n  endpointSelector:"
    });
    yaml_selector(&mut out, 4, &policy.subject);
    if let Some((ingress, egress)) = policy.default_deny {
        out.push_str("  enableDefaultDeny:");
        if ingress.is_none() && egress.is_none() {
            out.push_str(" {}\n");
        } else {
            out.push('\n');
        }
        for (key, value) in [("ingress", ingress), ("egress", egress)] {
            if let Some(value) = value {
                writeln!(out, "    {key}: {value}").unwrap();
            }
        }
    }
    for (key, rules) in CILIUM_LISTS.iter().zip(&policy.lists) {
        let Some(rules) = rules else { continue };
        if rules.is_empty() {
            writeln!(out, "  {key}: []").unwrap();
            continue;
        }
        writeln!(out, "  {key}:").unwrap();
        let prefix = if key.starts_with("ingress") { "from" } else { "to" };
        for rule in rules {
            cilium_rule_yaml(&mut out, prefix, rule);
        }
    }
    out
}

fn cilium_rule_yaml(out: &mut String, prefix: &str, rule: &CiliumRule) {
    if rule.peers.is_none() && rule.l4.is_none() {
        out.push_str("    - {}\n");
        return;
    }
    let mut first = true;
    let mut item = |out: &mut String, field: &str| {
        let lead = if std::mem::take(&mut first) { "    - " } else { "      " };
        write!(out, "{lead}{field}:").unwrap();
    };
    match &rule.peers {
        None => {}
        Some(CiliumPeers::Endpoints(selectors)) => {
            item(out, &format!("{prefix}Endpoints"));
            if selectors.is_empty() {
                out.push_str(" []\n");
            } else {
                out.push('\n');
            }
            for s in selectors {
                if s.labels.is_empty() && s.expressions.is_empty() {
                    out.push_str("        - {}\n");
                } else {
                    // The selector's first field goes on the list item's own line.
                    let mut text = String::new();
                    yaml_selector(&mut text, 10, s);
                    out.push_str("        - ");
                    out.push_str(&text[1 + 10..]);
                }
            }
        }
        Some(CiliumPeers::Entities(entities)) => {
            item(out, &format!("{prefix}Entities"));
            writeln!(out, " [{}]", entities.join(", ")).unwrap();
        }
        Some(CiliumPeers::Cidr(blocks)) => {
            item(out, &format!("{prefix}CIDR"));
            let cidrs: Vec<&str> = blocks.iter().map(|b| BLOCKS[*b].0).collect();
            writeln!(out, " [{}]", cidrs.join(", ")).unwrap();
        }
        Some(CiliumPeers::CidrSet(blocks)) => {
            item(out, &format!("{prefix}CIDRSet"));
            out.push('\n');
            for b in blocks {
                let (cidr, except) = BLOCKS[*b];
                writeln!(out, "        - cidr: {cidr}").unwrap();
                if !except.is_empty() {
                    writeln!(out, "          except: [{}]", except.join(", ")).unwrap();
                }
            }
        }
    }
    match &rule.l4 {
        None => {}
        Some(CiliumL4::Ports(ports)) => {
            item(out, "toPorts");
            out.push_str("\n        - ports:\n");
            for (value, end, protocol) in ports {
                let mut fields = vec![match value {
                    CiliumPortValue::Number(p) => format!("port: \"{p}\""),
                    CiliumPortValue::Name(n) => format!("port: {n}"),
                }];
                if let Some(end) = end {
                    fields.push(format!("endPort: {end}"));
                }
                if let Some(protocol) = protocol {
                    fields.push(format!("protocol: {protocol}"));
                }
                writeln!(out, "            - {{{}}}", fields.join(", ")).unwrap();
            }
        }
        Some(CiliumL4::Icmps(fields)) => {
            item(out, "icmps");
            out.push_str("\n        - fields:\n");
            for (family, icmp_type) in fields {
                match family {
                    Some(family) => {
                        writeln!(out, "            - {{family: {family}, type: {icmp_type}}}")
                            .unwrap()
                    }
                    None => writeln!(out, "            - {{type: {icmp_type}}}").unwrap(),
                }
            }
        }
    }
}
