//! Synthetic clusters for the compile benchmark, written as YAML text so that a run
//! measures the front end as well as the solver.
//!
//! The shapes follow the published anchors in the project's performance notes:
//!
//! - [`Shape::SelectAll`]: one namespace, N pods and N NetworkPolicies, each policy
//!   selecting every pod and allowing ingress from every pod (Antrea's "10k pods x 10k
//!   policies" controller test);
//! - [`Shape::SmallNamespaces`]: namespaces of 4 pods and 3 policies each, a default
//!   deny and two per-app allows (Antrea's "100k pods, 25k namespaces, 75k policies");
//! - [`Shape::Cidr`]: a few client pods egress-isolated by rules that each name one
//!   ipBlock, nested the way real allow lists are (Cilium's 1,000-CIDR-rule fixture
//!   is the anchor; its exact content is not reproduced here, only its size).
//!
//! Output is a function of the shape and the seed only: the same arguments give the
//! same bytes, so a number measured on one machine can be re-measured on another.

use std::fmt::Write as _;
use std::path::Path;

/// A cluster to generate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// `pods` pods and `policies` policies in one namespace, every policy selecting
    /// every pod.
    SelectAll { pods: usize, policies: usize },
    /// `namespaces` namespaces of 4 pods and 3 policies each. `changed` names one
    /// namespace whose `np-1` allows a different peer and port: the one-policy edit.
    SmallNamespaces { namespaces: usize, changed: Option<usize> },
    /// `rules` egress rules with one ipBlock each, 10 rules per policy, over `pods`
    /// pods that share one identity (so one table holds every entry).
    Cidr { rules: usize, pods: usize },
}

/// One generated file: a name relative to the cluster directory and its text.
#[derive(Clone, Debug)]
pub struct File {
    pub name: String,
    pub text: String,
}

/// A small deterministic generator (SplitMix64): good enough to scatter names and
/// addresses, and stable across platforms and Rust versions, unlike `RandomState`.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (n > 0); the modulo bias is irrelevant here.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Lowercase letters and digits, as Kubernetes' generated name suffixes.
    fn suffix(&mut self, len: usize) -> String {
        const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
        (0..len).map(|_| ALPHABET[self.below(ALPHABET.len() as u64) as usize] as char).collect()
    }
}

/// Generates the files of a shape.
pub fn generate(shape: Shape, seed: u64) -> Vec<File> {
    let mut rng = Rng::new(seed);
    match shape {
        Shape::SelectAll { pods, policies } => select_all(&mut rng, pods, policies),
        Shape::SmallNamespaces { namespaces, changed } => {
            small_namespaces(&mut rng, namespaces, changed)
        }
        Shape::Cidr { rules, pods } => cidr(&mut rng, rules, pods),
    }
}

/// Writes files under `dir`, creating it.
pub fn write(dir: &Path, files: &[File]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for file in files {
        std::fs::write(dir.join(&file.name), &file.text)?;
    }
    Ok(())
}

/// Distinct pod addresses in 10.0.0.0/8, in an order scattered by the seed (pods of a
/// namespace do not get neighbouring addresses in a real cluster either).
struct Addresses {
    offset: u32,
    stride: u32,
    next: u32,
}

impl Addresses {
    fn new(rng: &mut Rng) -> Addresses {
        // An odd stride is coprime with 2^24, so the walk visits every address once.
        Addresses {
            offset: rng.below(1 << 24) as u32,
            stride: (rng.below(1 << 23) as u32) * 2 + 1,
            next: 0,
        }
    }

    fn next(&mut self) -> String {
        let host = self.offset.wrapping_add(self.next.wrapping_mul(self.stride)) & 0x00ff_ffff;
        self.next += 1;
        format!("10.{}.{}.{}", host >> 16, (host >> 8) & 0xff, host & 0xff)
    }
}

fn namespace_doc(out: &mut String, name: &str) {
    let _ = write!(
        out,
        concat!(
            "---\n",
            "apiVersion: v1\n",
            "kind: Namespace\n",
            "metadata:\n",
            "  name: {name}\n",
            "  labels:\n",
            "    app: {name}\n",
        ),
        name = name,
    );
}

fn pod_doc(
    out: &mut String,
    rng: &mut Rng,
    namespace: &str,
    name: &str,
    app: (&str, &str),
    ip: &str,
) {
    let (key, value) = app;
    let _ = write!(
        out,
        concat!(
            "---\n",
            "apiVersion: v1\n",
            "kind: Pod\n",
            "metadata:\n",
            "  name: {name}\n",
            "  namespace: {namespace}\n",
            "  labels:\n",
            "    {key}: {value}\n",
            "    pod-template-hash: {hash}\n",
            "spec:\n",
            "  nodeName: node-{node}\n",
            "  containers:\n",
            "    - name: app\n",
            "      image: registry.example/app:1.0\n",
            "      ports:\n",
            "        - name: http\n",
            "          containerPort: 8080\n",
            "status:\n",
            "  podIP: {ip}\n",
            "  podIPs:\n",
            "    - ip: {ip}\n",
        ),
        name = name,
        namespace = namespace,
        key = key,
        value = value,
        hash = rng.suffix(10),
        node = rng.below(1000),
        ip = ip,
    );
}

/// A policy isolating both directions, selecting `subject` (`None`: every pod) and
/// allowing ingress from the pods `peer` selects (`None`: no ingress rule).
fn policy_doc(
    out: &mut String,
    namespace: &str,
    name: &str,
    subject: Option<(&str, &str)>,
    peer: Option<(&str, &str)>,
    port: Option<u16>,
) {
    policy_header(out, namespace, name);
    match subject {
        Some((k, v)) => {
            let _ = write!(out, "  podSelector:\n    matchLabels:\n      {k}: {v}\n");
        }
        None => out.push_str("  podSelector: {}\n"),
    }
    out.push_str("  policyTypes: [Ingress, Egress]\n");
    if let Some((k, v)) = peer {
        let _ = write!(
            out,
            concat!(
                "  ingress:\n",
                "    - from:\n",
                "        - podSelector:\n",
                "            matchLabels:\n",
                "              {k}: {v}\n",
            ),
            k = k,
            v = v,
        );
        if let Some(port) = port {
            let _ = write!(out, "      ports:\n        - protocol: TCP\n          port: {port}\n");
        }
    }
}

fn policy_header(out: &mut String, namespace: &str, name: &str) {
    let _ = write!(
        out,
        concat!(
            "---\n",
            "apiVersion: networking.k8s.io/v1\n",
            "kind: NetworkPolicy\n",
            "metadata:\n",
            "  name: {name}\n",
            "  namespace: {namespace}\n",
            "spec:\n",
        ),
        name = name,
        namespace = namespace,
    );
}

fn select_all(rng: &mut Rng, pods: usize, policies: usize) -> Vec<File> {
    let ns = format!("scale-{}", rng.suffix(8));
    let mut namespaces = String::new();
    namespace_doc(&mut namespaces, &ns);

    let mut addresses = Addresses::new(rng);
    let mut pod_text = String::with_capacity(pods * 400);
    for i in 0..pods {
        let name = format!("pod-{i:06}-{}", rng.suffix(5));
        pod_doc(&mut pod_text, rng, &ns, &name, ("app-1", "scale-1"), &addresses.next());
    }

    let mut policy_text = String::with_capacity(policies * 300);
    let app = Some(("app-1", "scale-1"));
    for i in 0..policies {
        let name = format!("np-{i:06}-{}", rng.suffix(8));
        policy_doc(&mut policy_text, &ns, &name, app, app, None);
    }
    files(namespaces, pod_text, policy_text)
}

fn small_namespaces(rng: &mut Rng, count: usize, changed: Option<usize>) -> Vec<File> {
    let mut namespaces = String::with_capacity(count * 100);
    let mut pods = String::with_capacity(count * 4 * 400);
    let mut policies = String::with_capacity(count * 3 * 300);
    let mut addresses = Addresses::new(rng);
    for n in 0..count {
        let ns = format!("ns-{n:05}-{}", rng.suffix(8));
        namespace_doc(&mut namespaces, &ns);
        for (i, app) in
            [("app-1", "scale-1"), ("app-1", "scale-1"), ("app-2", "scale-2"), ("app-2", "scale-2")]
                .into_iter()
                .enumerate()
        {
            pod_doc(&mut pods, rng, &ns, &format!("pod{}", i + 1), app, &addresses.next());
        }

        policy_doc(&mut policies, &ns, "default-deny-all", None, None, None);
        let (one, two) = (("app-1", "scale-1"), ("app-2", "scale-2"));
        if changed == Some(n) {
            // The edit: np-1 now admits app-2 on one port instead of app-1 on all.
            policy_doc(&mut policies, &ns, "np-1", Some(one), Some(two), Some(8080));
        } else {
            policy_doc(&mut policies, &ns, "np-1", Some(one), Some(one), None);
        }
        policy_doc(&mut policies, &ns, "np-2", Some(two), Some(two), None);
    }
    files(namespaces, pods, policies)
}

/// Supernets the CIDR rules draw from: private ranges and a few public blocks, so that
/// short prefixes contain many of the longer ones, as in real egress allow lists.
const SUPERNETS: [([u8; 4], u8); 6] = [
    ([10, 0, 0, 0], 8),
    ([172, 16, 0, 0], 12),
    ([192, 168, 0, 0], 16),
    ([100, 64, 0, 0], 10),
    ([52, 0, 0, 0], 8),
    ([34, 64, 0, 0], 10),
];

/// A random IPv4 prefix inside one of [`SUPERNETS`], with a length drawn to resemble
/// allow lists: mostly hosts and /24s, some /16s-/22s, a few very broad blocks.
fn random_prefix(rng: &mut Rng) -> ([u8; 4], u8) {
    let (base, base_len) = SUPERNETS[rng.below(SUPERNETS.len() as u64) as usize];
    let len = match rng.below(100) {
        0..40 => 32,
        40..65 => 24,
        65..80 => 16 + rng.below(7) as u8,
        80..95 => 25 + rng.below(7) as u8,
        _ => base_len + rng.below(4) as u8,
    }
    .max(base_len);
    let host_bits = u32::from_be_bytes(base) | (rng.next_u64() as u32 & (u32::MAX >> base_len));
    (mask(host_bits, len).to_be_bytes(), len)
}

fn mask(addr: u32, len: u8) -> u32 {
    if len == 0 { 0 } else { addr & (u32::MAX << (32 - u32::from(len))) }
}

fn cidr(rng: &mut Rng, rules: usize, pods: usize) -> Vec<File> {
    let ns = "egress-lists";
    let mut namespaces = String::new();
    namespace_doc(&mut namespaces, ns);
    let mut addresses = Addresses::new(rng);
    let mut pod_text = String::new();
    for i in 0..pods {
        pod_doc(
            &mut pod_text,
            rng,
            ns,
            &format!("client-{i}"),
            ("app", "client"),
            &addresses.next(),
        );
    }

    let mut policies = String::with_capacity(rules * 200);
    for (p, chunk) in (0..rules).collect::<Vec<_>>().chunks(10).enumerate() {
        policy_header(&mut policies, ns, &format!("egress-{p:04}"));
        policies.push_str("  podSelector:\n    matchLabels:\n      app: client\n");
        policies.push_str("  policyTypes: [Egress]\n  egress:\n");
        for _ in chunk {
            let (addr, len) = random_prefix(rng);
            let [a, b, c, d] = addr;
            let _ = write!(
                policies,
                "    - to:\n        - ipBlock:\n            cidr: {a}.{b}.{c}.{d}/{len}\n"
            );
            // One rule in five carves a hole out of a prefix of /28 or shorter.
            if len <= 28 && rng.below(5) == 0 {
                let sub = len + 1 + rng.below(u64::from(32 - len).min(8)) as u8;
                let inner = u32::from_be_bytes(addr) | (rng.next_u64() as u32 & (u32::MAX >> len));
                let [a, b, c, d] = mask(inner, sub).to_be_bytes();
                let _ = writeln!(policies, "            except: [{a}.{b}.{c}.{d}/{sub}]");
            }
            // Ports as allow lists carry them: one or two of a handful of services.
            let ports: &[u16] = match rng.below(4) {
                0 => &[443],
                1 => &[80, 443],
                2 => &[53],
                _ => &[5432, 6379],
            };
            policies.push_str("      ports:\n");
            for port in ports {
                let proto = if *port == 53 { "UDP" } else { "TCP" };
                let _ = write!(policies, "        - protocol: {proto}\n          port: {port}\n");
            }
        }
    }
    files(namespaces, pod_text, policies)
}

/// Each kind in one file, wrapped in a `List` as `kubectl get -A -o yaml` writes it. (It
/// also kept the inputs readable by front ends before c42573a, which refused a file of
/// more than 1,024 `---` documents.)
fn files(namespaces: String, pods: String, policies: String) -> Vec<File> {
    vec![
        File { name: "namespaces.yaml".into(), text: as_list(&namespaces) },
        File { name: "pods.yaml".into(), text: as_list(&pods) },
        File { name: "policies.yaml".into(), text: as_list(&policies) },
    ]
}

/// Turns `---`-separated documents into the items of one `List` document.
fn as_list(documents: &str) -> String {
    let mut out = String::with_capacity(documents.len() * 5 / 4);
    out.push_str("apiVersion: v1\nkind: List\nitems:\n");
    for document in documents.split("---\n").filter(|d| !d.is_empty()) {
        for (i, line) in document.lines().enumerate() {
            out.push_str(if i == 0 { "  - " } else { "    " });
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}
