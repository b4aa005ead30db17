//! The scenarios of fixtures/conformance (see its README), run through the kernel: every
//! probe of the expected matrix for every ordered pair of pods, an ICMP echo per pair, and
//! the probe between each pod and an address outside the cluster, both ways.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use compiler::Compilation;
use compiler::reference::{Options, Reference};
use policy_lang::{Bundle, Severity, Sources};

use super::judge::{Live, Tally, check_flow};
use super::kernel::Kernel;
use super::packet::{self, L4, Packet};

/// An address of no pod and no policy's block: the world.
const OUTSIDE: &str = "203.0.113.9";

/// One probe: a protocol and port, and the expected matrix of policyc's default mode.
#[derive(Clone, Debug)]
pub struct Probe {
    pub proto: u8,
    pub port: u16,
    pub pods: Vec<String>,
    /// Rows are sources, columns destinations: whether the connection passes.
    pub passes: Vec<Vec<bool>>,
}

/// Every scenario directory, sorted.
pub fn directories() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/conformance");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("reading {}: {e}", root.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.join("expected.txt").exists())
        .collect();
    dirs.sort();
    dirs
}

/// Which semantics of ipBlocks a scenario is compiled with and judged by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The compiler's default (as Cilium): an ipBlock never matches a pod address; held
    /// against expected-default.txt where the scenario has one.
    Default,
    /// `ipblock_matches_pods`, as upstream Kubernetes: held against expected.txt.
    Upstream,
}

/// One scenario directory, compiled in one [`Mode`].
#[derive(Debug)]
pub struct Scenario {
    pub name: String,
    pub bundle: Bundle,
    pub compilation: Compilation,
    pub probes: Vec<Probe>,
    mode: Mode,
}

impl Scenario {
    /// Reads and compiles a scenario: its own cluster.yaml or the shared one, its
    /// policy.yaml, and the matrix the mode must give.
    pub fn load(dir: &Path, mode: Mode) -> Result<Scenario, String> {
        let local = dir.join("cluster.yaml");
        let cluster = if local.exists() { local } else { dir.join("..").join("cluster.yaml") };
        let (sources, problems): (Sources, _) =
            policy_lang::manifest::read_inputs(&[cluster, dir.join("policy.yaml")])
                .map_err(|e| e.to_string())?;
        if !problems.is_empty() {
            return Err(format!("{problems:?}"));
        }
        let (bundle, mut compilation) = crate::support::compile(&sources)?;
        let mut name = dir.file_name().expect("a directory name").to_string_lossy().into_owned();
        let default = dir.join("expected-default.txt");
        let file = match mode {
            Mode::Default if default.exists() => default,
            Mode::Default => dir.join("expected.txt"),
            Mode::Upstream => {
                let options =
                    compiler::Options { ipblock_matches_pods: true, ..Default::default() };
                compilation = compiler::compile_with(&sources, &bundle, &options);
                let errors: Vec<String> = (compilation.diagnostics.iter())
                    .filter(|d| d.severity() == Severity::Error)
                    .map(|d| d.render(&sources))
                    .collect();
                if !errors.is_empty() {
                    return Err(errors.join("\n"));
                }
                name.push_str(" (ipBlocks match pods)");
                dir.join("expected.txt")
            }
        };
        let text =
            std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let probes = parse_probes(&text).map_err(|e| format!("{}: {e}", file.display()))?;
        Ok(Scenario { name, bundle, compilation, probes, mode })
    }

    /// The reference evaluator over the scenario, in its mode.
    pub fn reference(&self) -> Reference<'_> {
        let reference = Reference::new(&self.bundle, &self.compilation.analysis);
        match self.mode {
            Mode::Default => reference,
            Mode::Upstream => {
                reference.with_options(Options { ipblock_matches_pods: true, ..Options::default() })
            }
        }
    }
}

/// Checks every flow of `scenario` in the kernel's current generation, which must hold
/// the scenario's artifact. `next_port` numbers source ports and echo ids, so that no two
/// flows share a conntrack tuple.
pub fn check_scenario(
    kernel: &mut Kernel,
    scenario: &Scenario,
    next_port: &mut u16,
    tally: &mut Tally,
) {
    let reference = scenario.reference();
    if let Err(e) = crate::support::same_endpoints(&reference, &scenario.compilation) {
        tally.fail(format!("{}: {e}", scenario.name));
        return;
    }
    let live = Live {
        name: &scenario.name,
        artifact: &scenario.compilation.artifact,
        reference: &reference,
    };
    let address = |name: &String| {
        reference.endpoints().iter().find(|e| &e.name == name).and_then(|e| e.addresses.first())
    };
    let mut port = || {
        *next_port = next_port.checked_add(1).unwrap_or(1024);
        *next_port
    };
    let outside: IpAddr = OUTSIDE.parse().expect("an address");

    for probe in &scenario.probes {
        let l4 = |sport: u16| match probe.proto {
            packet::TCP => L4::Tcp { sport, dport: probe.port, flags: packet::SYN },
            packet::UDP => L4::Udp { sport, dport: probe.port },
            _ => L4::Sctp { sport, dport: probe.port },
        };
        for (s, src) in probe.pods.iter().enumerate() {
            let Some(&src_ip) = address(src) else {
                tally.fail(format!("{}: no pod {src} with an address", scenario.name));
                continue;
            };
            for (d, dst) in probe.pods.iter().enumerate().filter(|(d, _)| *d != s) {
                let Some(&dst_ip) = address(dst) else { continue };
                let packet = Packet { src: src_ip, dst: dst_ip, l4: l4(port()) };
                let passes = check_flow(kernel, &live, &packet, true, tally);
                if passes != probe.passes[s][d] {
                    tally.fail(format!(
                        "{}: {}: the kernel {} what the expected matrix {}",
                        scenario.name,
                        packet.describe(),
                        if passes { "passes" } else { "blocks" },
                        if probe.passes[s][d] { "passes" } else { "blocks" },
                    ));
                }
            }
            let to_world = Packet { src: src_ip, dst: outside, l4: l4(port()) };
            check_flow(kernel, &live, &to_world, true, tally);
            let from_world = Packet { src: outside, dst: src_ip, l4: l4(port()) };
            check_flow(kernel, &live, &from_world, true, tally);
        }
    }

    // Pings: NetworkPolicy ports never name ICMP, so only rules without ports allow them.
    let pods = scenario.probes.first().map(|p| p.pods.clone()).unwrap_or_default();
    for src in pods.iter().filter_map(address) {
        for dst in pods.iter().filter_map(address).filter(|d| *d != src) {
            let l4 = L4::Icmp { kind: packet::ECHO_REQUEST, id: port() };
            check_flow(kernel, &live, &Packet { src: *src, dst: *dst, l4 }, true, tally);
        }
    }
}

/// Parses an expected file: `probe <PROTOCOL> <port>`, a header row of pod names, then
/// one row per source pod of `.` (connected), `X` (blocked) or `-` (itself). `#` starts
/// a comment line.
fn parse_probes(text: &str) -> Result<Vec<Probe>, String> {
    let mut lines =
        text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let mut probes = Vec::new();
    while let Some((n, line)) = lines.next() {
        let at = |why: &str| format!("line {}: {why}", n + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        let (proto, port) = match words.as_slice() {
            ["probe", "TCP", port] => (packet::TCP, port),
            ["probe", "UDP", port] => (packet::UDP, port),
            ["probe", "SCTP", port] => (packet::SCTP, port),
            _ => return Err(at("expected `probe <TCP|UDP|SCTP> <port>`")),
        };
        let port = port.parse().map_err(|_| at("bad port"))?;
        let pods: Vec<String> = match lines.next() {
            Some((_, header)) => header.split_whitespace().map(String::from).collect(),
            None => return Err(at("no header row")),
        };
        let mut passes = Vec::new();
        for pod in &pods {
            let (_, row) = lines.next().ok_or_else(|| at("the matrix ends early"))?;
            let cells: Vec<char> = row.split_whitespace().skip(1).flat_map(str::chars).collect();
            if !row.starts_with(pod.as_str()) || cells.len() != pods.len() {
                return Err(at(&format!("bad row for {pod}")));
            }
            passes.push(cells.iter().map(|c| *c == '.').collect());
        }
        probes.push(Probe { proto, port, pods, passes });
    }
    if probes.is_empty() {
        return Err("no probe".into());
    }
    Ok(probes)
}
