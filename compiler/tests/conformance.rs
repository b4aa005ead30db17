//! The Kubernetes network-policy conformance scenarios of fixtures/conformance, each
//! compiled and judged three ways for every probe and every ordered pair of pods: the
//! hand-written expected matrix, the reference evaluator (from the IR) and the table
//! simulator (from the artifact). See fixtures/conformance/README.md for the layout.
//!
//! - `expected.txt` follows upstream Kubernetes, so it is held against the reference
//!   with `ipblock_matches_pods = true`, and by tables compiled with that option;
//! - `expected-default.txt`, where present (the ipBlock scenarios), or else
//!   `expected.txt`, is held against the reference in its default mode;
//! - the simulator is held against the default reference, decision and rule included.
//!
//! Every scenario runs; the test fails at the end with a report of each mismatch.

mod support;

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use compiler::reference::{Address, Flow, Options, Reference};
use policy_lang::ast::Direction;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/conformance")
}

/// One probe of an expected file: a protocol and port, and a cell per ordered pair.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Probe {
    protocol: String,
    port: u16,
    matrix: Matrix,
}

/// Rows are sources, columns destinations; `.` connected, `X` blocked, `-` diagonal.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Matrix {
    pods: Vec<String>,
    cells: Vec<Vec<char>>,
}

impl Matrix {
    fn build(pods: &[String], mut passes: impl FnMut(usize, usize) -> bool) -> Matrix {
        let cells = (0..pods.len())
            .map(|s| {
                (0..pods.len())
                    .map(|d| match (s == d, s != d && passes(s, d)) {
                        (true, _) => '-',
                        (false, true) => '.',
                        (false, false) => 'X',
                    })
                    .collect()
            })
            .collect();
        Matrix { pods: pods.to_vec(), cells }
    }

    fn lines(&self) -> Vec<String> {
        let mut out =
            vec![format!("    {}", self.pods.iter().map(|p| format!(" {p}")).collect::<String>())];
        for (pod, row) in self.pods.iter().zip(&self.cells) {
            out.push(format!("{pod}{}", row.iter().map(|c| format!("   {c}")).collect::<String>()));
        }
        out
    }
}

fn protocol_number(name: &str) -> Option<u8> {
    match name {
        "TCP" => Some(6),
        "UDP" => Some(17),
        "SCTP" => Some(132),
        _ => None,
    }
}

/// Parses an expected file: `probe <PROTOCOL> <port>`, a header row of pod names, then
/// one row per source pod. `#` starts a comment line.
fn parse_expected(path: &Path) -> Result<Vec<Probe>, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    parse_probes(&text, &path.display().to_string())
}

fn parse_probes(text: &str, file: &str) -> Result<Vec<Probe>, String> {
    let mut lines =
        text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty() && !l.starts_with('#'));
    let mut probes = Vec::new();
    while let Some((n, line)) = lines.next() {
        let at = |why: &str| format!("{file}:{}: {why}", n + 1);
        let words: Vec<&str> = line.split_whitespace().collect();
        let (protocol, port) = match words.as_slice() {
            ["probe", protocol, port] if protocol_number(protocol).is_some() => {
                (protocol.to_string(), port.parse::<u16>().map_err(|_| at("bad port"))?)
            }
            _ => return Err(at("expected `probe <TCP|UDP|SCTP> <port>`")),
        };
        let pods: Vec<String> = match lines.next() {
            Some((_, header)) => header.split_whitespace().map(String::from).collect(),
            None => return Err(at("no header row after the probe")),
        };
        let mut cells = Vec::new();
        for pod in &pods {
            let Some((m, row)) = lines.next() else { return Err(at("matrix ends early")) };
            let mut words = row.split_whitespace();
            if words.next() != Some(pod.as_str()) {
                return Err(format!("{file}:{}: row should start with {pod}", m + 1));
            }
            let row: Vec<char> = words.flat_map(|w| w.chars()).collect();
            if row.len() != pods.len() || row.iter().any(|c| !".X-".contains(*c)) {
                return Err(format!("{file}:{}: need {} cells of . X -", m + 1, pods.len()));
            }
            cells.push(row);
        }
        probes.push(Probe { protocol, port, matrix: Matrix { pods, cells } });
    }
    if probes.is_empty() {
        return Err(format!("{file}: no probe"));
    }
    Ok(probes)
}

/// Matrices side by side under their titles, then the cells where they differ.
fn side_by_side(matrices: &[(&str, &Matrix)]) -> String {
    let columns: Vec<Vec<String>> = matrices.iter().map(|(_, m)| m.lines()).collect();
    let width = columns.iter().flatten().map(String::len).max().unwrap_or(0);
    let mut out = String::new();
    let titles: Vec<String> = matrices.iter().map(|(t, _)| format!("{t:width$}")).collect();
    writeln!(out, "  {}", titles.join(" | ")).unwrap();
    for i in 0..columns[0].len() {
        let row: Vec<String> = columns.iter().map(|c| format!("{:width$}", c[i])).collect();
        writeln!(out, "  {}", row.join(" | ").trim_end()).unwrap();
    }
    let (_, first) = matrices[0];
    for (s, src) in first.pods.iter().enumerate() {
        for (d, dst) in first.pods.iter().enumerate() {
            let cells: Vec<char> = matrices.iter().map(|(_, m)| m.cells[s][d]).collect();
            if cells.iter().any(|c| *c != cells[0]) {
                let says: Vec<String> =
                    matrices.iter().zip(&cells).map(|((t, _), c)| format!("{t} {c}")).collect();
                writeln!(out, "  {src} -> {dst}: {}", says.join(", ")).unwrap();
            }
        }
    }
    out
}

/// Runs one scenario directory; returns what failed, empty when all agree.
fn run(dir: &Path) -> Result<Vec<String>, String> {
    let local = dir.join("cluster.yaml");
    let cluster = if local.exists() { local } else { root().join("cluster.yaml") };
    let (sources, read) = policy_lang::manifest::read_inputs(&[cluster, dir.join("policy.yaml")])
        .map_err(|e| e.to_string())?;
    if !read.is_empty() {
        return Err(format!("{read:?}"));
    }
    let (bundle, compilation) = support::compile(&sources)?;
    // The same inputs compiled with ipBlocks matching pods, as upstream Kubernetes wants.
    let upstream_tables = compiler::compile_with(
        &sources,
        &bundle,
        &compiler::Options { ipblock_matches_pods: true, ..compiler::Options::default() },
    );
    let default = Reference::new(&bundle, &compilation.analysis);
    let upstream = Reference::new(&bundle, &compilation.analysis)
        .with_options(Options { ipblock_matches_pods: true, ..Options::default() });
    support::same_endpoints(&default, &compilation)?;

    let expected = parse_expected(&dir.join("expected.txt"))?;
    let default_file = dir.join("expected-default.txt");
    let expected_default =
        if default_file.exists() { parse_expected(&default_file)? } else { expected.clone() };
    if expected_default
        .iter()
        .map(|p| (&p.protocol, p.port))
        .ne(expected.iter().map(|p| (&p.protocol, p.port)))
    {
        return Err("expected-default.txt must probe what expected.txt probes".into());
    }

    let mut failures = Vec::new();
    for (probe, probe_default) in expected.iter().zip(&expected_default) {
        let pods = &probe.matrix.pods;
        let address = |name: &String| -> Result<IpAddr, String> {
            let ep = default.endpoints().iter().find(|e| &e.name == name);
            ep.and_then(|e| e.addresses.first().copied())
                .ok_or(format!("no pod {name} with an address"))
        };
        let ips = pods.iter().map(address).collect::<Result<Vec<_>, _>>()?;
        let proto = protocol_number(&probe.protocol).expect("checked by the parser");
        let flow = |s: usize, d: usize| Flow {
            src: Address::Ip(ips[s]),
            dst: Address::Ip(ips[d]),
            proto,
            port: Some(probe.port),
        };
        let reference_upstream =
            Matrix::build(pods, |s, d| upstream.evaluate(&flow(s, d)).passes());
        let reference_default = Matrix::build(pods, |s, d| default.evaluate(&flow(s, d)).passes());
        let mut provenance = Vec::new();
        let simulator = Matrix::build(pods, |s, d| {
            let (egress, ingress) = support::simulate(&compilation.artifact, &flow(s, d));
            for (direction, decision) in
                [(Direction::Egress, egress), (Direction::Ingress, ingress)]
            {
                if let Err(e) = support::same_decision(
                    &compilation.artifact,
                    &default,
                    &flow(s, d),
                    direction,
                    decision,
                ) {
                    provenance.push(format!("  {} -> {}: {e}", pods[s], pods[d]));
                }
            }
            egress.passes() && ingress.passes()
        });

        let simulator_upstream = Matrix::build(pods, |s, d| {
            let (egress, ingress) = support::simulate(&upstream_tables.artifact, &flow(s, d));
            egress.passes() && ingress.passes()
        });

        let name = format!(
            "{} probe {} {}",
            dir.file_name().unwrap().to_string_lossy(),
            probe.protocol,
            probe.port
        );
        if probe.matrix != reference_upstream {
            failures.push(format!(
                "{name}: expected.txt disagrees with the reference (ipblock_matches_pods = true)\n{}",
                side_by_side(&[("expected.txt", &probe.matrix), ("reference", &reference_upstream)])
            ));
        }
        if probe.matrix != simulator_upstream {
            failures.push(format!(
                "{name}: tables compiled with ipblock_matches_pods disagree with expected.txt\n{}",
                side_by_side(&[
                    ("expected.txt", &probe.matrix),
                    ("simulator", &simulator_upstream)
                ])
            ));
        }
        // Without expected-default.txt both modes answer to expected.txt; report a
        // difference in default mode only when it is not the one already reported.
        let own_default = default_file.exists() || reference_default != reference_upstream;
        if own_default && probe_default.matrix != reference_default {
            failures.push(format!(
                "{name}: the expected default matrix disagrees with the reference (default mode)\n{}",
                side_by_side(&[("expected", &probe_default.matrix), ("reference", &reference_default)])
            ));
        }
        if reference_default != simulator || !provenance.is_empty() {
            failures.push(format!(
                "{name}: the table simulator disagrees with the reference (default mode)\n{}{}",
                side_by_side(&[
                    ("expected", &probe_default.matrix),
                    ("reference", &reference_default),
                    ("simulator", &simulator)
                ]),
                provenance.join("\n")
            ));
        }
    }
    Ok(failures)
}

#[test]
fn every_conformance_scenario_agrees_three_ways() {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.join("expected.txt").exists())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 54, "scenario directories are missing: found {}", dirs.len());

    let mut report = Vec::new();
    for dir in &dirs {
        match run(dir) {
            Ok(failures) => report.extend(failures),
            Err(e) => report.push(format!("{}: {e}", dir.display())),
        }
    }
    assert!(
        report.is_empty(),
        "{} failures over {} scenarios:\n\n{}",
        report.len(),
        dirs.len(),
        report.join("\n\n")
    );
}

#[test]
fn the_expected_file_parser_rejects_a_short_matrix() {
    let err = parse_probes("probe TCP 80\n     x/a x/b\nx/a   -   .\n", "t").unwrap_err();
    assert_eq!(err, "t:1: matrix ends early");
    let err = parse_probes("probe ICMP 8\n", "t").unwrap_err();
    assert_eq!(err, "t:1: expected `probe <TCP|UDP|SCTP> <port>`");
}
