//! Per-packet cost of the datapath, measured with `BPF_PROG_TEST_RUN`.
//!
//! The kernel runs a program `--repeat` times (1,000,000 by default) on one packet and
//! reports the average time per run, so the syscall is paid once per million runs. Beside
//! ours, the same process measures, on the same machine at the same time:
//!
//! - the floor: an empty tc program (`bench/baseline.bpf.c`), i.e. what the test run
//!   itself costs per packet, and the floor plus one hash lookup with a conntrack-sized
//!   key (plain and LRU hash), the goal's yardstick for established flows; and, to take
//!   an established flow's cost apart, the floor plus a clock read and plus an
//!   endpoint-shaped lookup;
//! - a Cilium-shaped reference (`bench/cilium_shaped.bpf.c`): an ipcache LPM lookup and
//!   two policy LPM lookups with the precedence compared at run time.
//!
//! Both bench-only programs are built with clang when the benchmark runs. Ours is
//! `datapath::OBJECT`, loaded as policyc loads it, with its maps pinned in a private
//! directory under /sys/fs/bpf that is removed afterwards. The maps hold the synthetic
//! cluster of `fixture` at 1k, 10k, 100k and 1M policy entries; 1M is more than the
//! policy map holds as compiled (524,288), so that size runs in a second load of the
//! object with a larger policy map (`EbpfLoader::map_max_entries`, the benchmark only),
//! which is measured at 100k as well to show what the larger map alone changes.
//!
//! Every configuration runs `--reps` times (5), interleaved with all the others of its
//! size, and the median and the range are reported, with ratios taken rep by rep against
//! the baselines measured in the same round. Each run is checked, not timed, against
//! what it must have done: our program's metrics counter of the expected reason grows by
//! exactly `--repeat`, the others return the expected verdict. See BENCHMARKS.md
//! ("Datapath per packet") for the method and the results.
//!
//! Usage: `sudo cargo bench -p policyc-datapath --bench datapath -- [--reps N]
//! [--repeat N] [--sizes 1000,10000,100000,1000000] [--object PATH] [--quick]`.

#![expect(
    clippy::print_stdout,
    clippy::print_stderr,
    reason = "a benchmark's report is its output"
)]

mod fixture;
mod objects;

use std::path::PathBuf;
use std::time::Instant;

use datapath::{Reason, program_names};
use fixture::{Direction, Family};
use objects::{Baselines, BenchObjects, Cilium, Ours, Unavailable};

const SIZES: [u32; 4] = [1_000, 10_000, 100_000, 1_000_000];
/// The policy map's capacity for sizes beyond the compiled one (2^20).
const LARGE_POLICY_CAPACITY: u32 = 1 << 20;
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

struct Args {
    reps: usize,
    repeat: u32,
    sizes: Vec<u32>,
    /// Another build of the datapath to measure instead of `datapath::OBJECT`, such as a
    /// candidate change, against the same baselines.
    object: Option<PathBuf>,
}

fn parse_args() -> Args {
    let mut args = Args { reps: 5, repeat: 1_000_000, sizes: SIZES.to_vec(), object: None };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--reps" => args.reps = value().parse().expect("--reps takes a count"),
            "--repeat" => args.repeat = value().parse().expect("--repeat takes a count"),
            "--sizes" => {
                args.sizes = value()
                    .split(',')
                    .map(|s| s.trim().parse().expect("--sizes takes entry counts"))
                    .collect();
                args.sizes.sort_unstable();
            }
            // A smoke run: one size, one rep, runs short enough to be dominated by noise.
            "--object" => args.object = Some(value().into()),
            "--quick" => (args.reps, args.repeat, args.sizes) = (1, 100_000, vec![1_000]),
            // cargo passes `--bench` to every bench binary.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    let objects = match objects::check_kernel().and_then(|()| objects::build_bench_objects()) {
        Ok(objects) => objects,
        Err(Unavailable(why)) => {
            eprintln!("datapath benchmark not run: {why}");
            std::process::exit(2);
        }
    };
    if let Err(why) = run(&args, &objects) {
        eprintln!("datapath benchmark failed: {why}");
        std::process::exit(1);
    }
}

/// What one measured configuration runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Empty,
    Hash,
    LruHash,
    Ktime,
    EndpointHash,
    /// Ours, with the packet's direction.
    Ours(Direction),
    Cilium,
}

/// What a run must have done, checked after every run.
#[derive(Clone, Copy, Debug)]
enum Expect {
    /// Ours: every run counted under this reason in the endpoint's metrics row.
    Counted(Reason),
    /// The baselines and the reference: every run returned this tc action.
    Returns(u32),
}

struct Case {
    name: &'static str,
    family: Option<Family>,
    target: Target,
    packet: Vec<u8>,
    expect: Expect,
}

/// The configurations measured at every size, in the order they run within a rep. The
/// allowed SYN of each flow runs before its established packets, so it opens the entry
/// they find.
fn cases() -> Vec<Case> {
    use fixture::{PORT_ALLOW, PORT_DENY, PORT_MISS, TCP_ACK, TCP_SYN};
    use {Direction::*, Expect::*, Target::*};

    let case = |name, family, target, packet, expect| Case { name, family, target, packet, expect };
    // The baselines ignore the packet, but a test run needs an Ethernet header's worth.
    let any = || fixture::flow_packet(Family::V4, ToEndpoint, PORT_DENY, TCP_SYN);
    let mut cases = vec![
        case("floor", None, Empty, any(), Returns(TC_ACT_OK)),
        case("floor+hash", None, Hash, any(), Returns(TC_ACT_OK)),
        case("floor+lru", None, LruHash, any(), Returns(TC_ACT_OK)),
        case("floor+ktime", None, Ktime, any(), Returns(TC_ACT_OK)),
        case("floor+endpoint hash", None, EndpointHash, any(), Returns(TC_ACT_OK)),
    ];
    for family in Family::BOTH {
        let packet = |direction, port, flags| fixture::flow_packet(family, direction, port, flags);
        let ours = |name, direction, port, flags, reason| {
            let target = Ours(direction);
            case(name, Some(family), target, packet(direction, port, flags), Counted(reason))
        };
        let cilium = |name, port, action| {
            case(name, Some(family), Cilium, packet(ToEndpoint, port, TCP_SYN), Returns(action))
        };
        cases.extend([
            ours("new allow", ToEndpoint, PORT_ALLOW, TCP_SYN, Reason::PassPolicy),
            ours("established", ToEndpoint, PORT_ALLOW, TCP_ACK, Reason::PassEstablished),
            ours("new deny", ToEndpoint, PORT_DENY, TCP_SYN, Reason::DropPolicyDeny),
            ours("new miss", ToEndpoint, PORT_MISS, TCP_SYN, Reason::DropNoPolicy),
            ours("from_ep new allow", FromEndpoint, PORT_ALLOW, TCP_SYN, Reason::PassPolicy),
            ours("from_ep established", FromEndpoint, PORT_ALLOW, TCP_ACK, Reason::PassEstablished),
            cilium("cilium hit", PORT_ALLOW, TC_ACT_OK),
            cilium("cilium miss", PORT_MISS, TC_ACT_SHOT),
        ]);
    }
    cases
}

/// One size's measurements: `samples[case][rep]` in nanoseconds per packet.
struct Block {
    label: String,
    entries: u32,
    samples: Vec<Vec<u64>>,
}

fn run(args: &Args, objects: &BenchObjects) -> Result<(), String> {
    let started = Instant::now();
    print_machine(args);
    println!(
        "# maps pinned under /sys/fs/bpf/policyc-bench-{}-*, removed at the end",
        std::process::id()
    );
    let cases = cases();
    let ours_object = match &args.object {
        Some(path) => std::fs::read(path).map_err(|e| format!("reading {path:?}: {e}"))?,
        None => datapath::OBJECT.to_vec(),
    };
    let mut baselines = Baselines::load(&objects.baseline)?;
    let mut cilium = Cilium::load(&objects.cilium)?;
    let mut blocks = Vec::new();

    let (small, large): (Vec<u32>, Vec<u32>) =
        args.sizes.iter().partition(|&&n| n <= datapath::capacity::POLICY);
    if !small.is_empty() {
        let mut ours = Ours::load(&ours_object, "compiled", None)?;
        for &entries in &small {
            blocks.push(measure(args, &cases, &mut ours, &mut baselines, &mut cilium, entries)?);
        }
    }
    if !large.is_empty() {
        let mut ours = Ours::load(&ours_object, "large", Some(LARGE_POLICY_CAPACITY))?;
        // The largest size the compiled map holds, again in the larger map: what the
        // map's size changes, apart from its content.
        if let Some(&again) = small.last() {
            blocks.push(measure(args, &cases, &mut ours, &mut baselines, &mut cilium, again)?);
        }
        for &entries in &large {
            blocks.push(measure(args, &cases, &mut ours, &mut baselines, &mut cilium, entries)?);
        }
    }

    report(&cases, &blocks);
    println!("\n# load average at end: {}", load_average());
    println!("# {:.0} s in all", started.elapsed().as_secs_f64());
    Ok(())
}

fn measure(
    args: &Args,
    cases: &[Case],
    ours: &mut Ours,
    baselines: &mut Baselines,
    cilium: &mut Cilium,
    entries: u32,
) -> Result<Block, String> {
    let fill = Instant::now();
    ours.grow_policy(entries)?;
    cilium.grow_policy(entries)?;
    let label = if ours.capacity == datapath::capacity::POLICY {
        human(entries)
    } else {
        format!("{} (map of {})", human(entries), human(ours.capacity))
    };
    println!(
        "\n## {label} policy entries: filled in {:.1} s, load average {}",
        fill.elapsed().as_secs_f64(),
        load_average()
    );

    // A short warm-up: JIT images and map entries into the caches, and the flows' SYNs
    // open the conntrack entries their established packets find.
    for case in cases {
        run_case(case, ours, baselines, cilium, args.repeat.min(10_000))?;
    }
    let mut samples = vec![Vec::with_capacity(args.reps); cases.len()];
    for _ in 0..args.reps {
        for (case, samples) in cases.iter().zip(&mut samples) {
            samples.push(run_case(case, ours, baselines, cilium, args.repeat)?);
        }
    }
    let block = Block { label, entries, samples };
    print_block(cases, &block);
    Ok(block)
}

/// Runs one case and checks that it did what it measures; returns ns per packet.
fn run_case(
    case: &Case,
    ours: &mut Ours,
    baselines: &mut Baselines,
    cilium: &mut Cilium,
    repeat: u32,
) -> Result<u64, String> {
    let reason = match case.expect {
        Expect::Counted(reason) => Some((reason, ours.count(reason)?)),
        Expect::Returns(_) => None,
    };
    let program = match case.target {
        Target::Empty => baselines.program(Baselines::EMPTY)?,
        Target::Hash => baselines.program(Baselines::HASH)?,
        Target::LruHash => baselines.program(Baselines::LRU_HASH)?,
        Target::Ktime => baselines.program(Baselines::KTIME)?,
        Target::EndpointHash => baselines.program(Baselines::ENDPOINT_HASH)?,
        Target::Ours(Direction::ToEndpoint) => ours.program(program_names::TO_ENDPOINT)?,
        Target::Ours(Direction::FromEndpoint) => ours.program(program_names::FROM_ENDPOINT)?,
        Target::Cilium => cilium.program()?,
    };
    let (ns, returned) = objects::test_run(program, &case.packet, repeat)?;
    let what = || format!("{} {}", case.name, case.family.map_or("", Family::name));
    match (case.expect, reason) {
        (Expect::Returns(expected), _) if returned != expected => {
            return Err(format!("{}: returned {returned}, expected {expected}", what()));
        }
        (Expect::Counted(expected), Some((_, before))) => {
            let counted = ours.count(expected)? - before;
            if counted != u64::from(repeat) {
                return Err(format!(
                    "{}: {counted} of {repeat} runs counted as {expected:?} (returned {returned})",
                    what()
                ));
            }
        }
        _ => {}
    }
    Ok(ns)
}

// ---------------------------------------------------------------------------------------
// Report

/// Median and range of a few samples.
#[derive(Clone, Copy, Debug)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
}

impl Spread {
    fn of(values: impl IntoIterator<Item = f64>) -> Spread {
        let mut v: Vec<f64> = values.into_iter().collect();
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 };
        Spread { median, min: v[0], max: v[n - 1] }
    }

    fn ns(self) -> String {
        format!("{:.0} ({:.0}-{:.0})", self.median, self.min, self.max)
    }

    fn ratio(self) -> String {
        format!("{:.2}x ({:.2}-{:.2})", self.median, self.min, self.max)
    }
}

/// A case by name and family.
type CaseId<'a> = (&'a str, Option<Family>);

fn index(cases: &[Case], name: &str, family: Option<Family>) -> usize {
    cases.iter().position(|c| c.name == name && c.family == family).expect("a known case")
}

impl Block {
    fn spread(&self, cases: &[Case], name: &str, family: Option<Family>) -> Spread {
        Spread::of(self.samples[index(cases, name, family)].iter().map(|&ns| ns as f64))
    }

    /// `a / b`, rep by rep: both were measured in the same round.
    fn ratio(
        &self,
        cases: &[Case],
        a: (&str, Option<Family>),
        b: (&str, Option<Family>),
    ) -> Spread {
        let (a, b) = (&self.samples[index(cases, a.0, a.1)], &self.samples[index(cases, b.0, b.1)]);
        Spread::of(a.iter().zip(b).map(|(&a, &b)| a as f64 / (b as f64).max(1.0)))
    }
}

fn print_block(cases: &[Case], block: &Block) {
    println!("{:<22} {:>18} {:>18}", "ns per packet", "IPv4", "IPv6");
    let mut names: Vec<&str> = Vec::new();
    for case in cases {
        if !names.contains(&case.name) {
            names.push(case.name);
        }
    }
    for name in names {
        let cell = |family| {
            cases
                .iter()
                .any(|c| c.name == name && c.family == family)
                .then(|| block.spread(cases, name, family).ns())
        };
        match cell(None) {
            Some(both) => println!("{name:<22} {both:>18}"),
            None => println!(
                "{name:<22} {:>18} {:>18}",
                cell(Some(Family::V4)).unwrap_or_default(),
                cell(Some(Family::V6)).unwrap_or_default()
            ),
        }
    }
}

fn report(cases: &[Case], blocks: &[Block]) {
    let Some(first) = blocks.first() else { return };
    let header = |title: &str| {
        println!("\n{title}\n");
        let labels: Vec<&str> = blocks.iter().map(|b| b.label.as_str()).collect();
        println!("| | {} |", labels.join(" | "));
        println!("|---|{}", "---|".repeat(blocks.len()));
    };

    header("### ns per packet, median (min-max)");
    for case in cases {
        let name = match case.family {
            Some(family) => format!("{} {}", case.name, family.name()),
            None => case.name.to_owned(),
        };
        let cells: Vec<String> =
            blocks.iter().map(|b| b.spread(cases, case.name, case.family).ns()).collect();
        println!("| {name} | {} |", cells.join(" | "));
    }

    header("### Ratios, rep by rep: median (min-max)");
    let hash = ("floor+hash", None);
    for family in Family::BOTH {
        let f = Some(family);
        let rows: [(&str, CaseId<'_>, CaseId<'_>); 6] = [
            ("established / (floor+hash)", ("established", f), hash),
            ("from_ep established / (floor+hash)", ("from_ep established", f), hash),
            ("cilium hit / new allow", ("cilium hit", f), ("new allow", f)),
            ("cilium hit / new deny", ("cilium hit", f), ("new deny", f)),
            ("cilium miss / new miss", ("cilium miss", f), ("new miss", f)),
            ("established / floor", ("established", f), ("floor", None)),
        ];
        for (title, a, b) in rows {
            let cells: Vec<String> =
                blocks.iter().map(|bl| bl.ratio(cases, a, b).ratio()).collect();
            println!("| {title} {} | {} |", family.name(), cells.join(" | "));
        }
    }

    let last = blocks.last().expect("at least one block");
    println!(
        "\n### Flatness: median at {} / median at {}\n",
        human(last.entries),
        human(first.entries)
    );
    for case in cases.iter().filter(|c| c.family.is_some()) {
        let at = |b: &Block| b.spread(cases, case.name, case.family).median;
        let family = case.family.map_or("", Family::name);
        println!("- {} {family}: {:.2}", case.name, at(last) / at(first));
    }
}

fn human(n: u32) -> String {
    match n {
        n if n >= 1_000_000 && n % 1_000_000 == 0 => format!("{}M", n / 1_000_000),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}Mi", n >> 20),
        n if n >= 1_000 && n % 1_000 == 0 => format!("{}k", n / 1_000),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}Ki", n >> 10),
        n => n.to_string(),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn print_machine(args: &Args) {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split_once(':').map_or(l, |(_, v)| v).trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".into());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("# policyc datapath benchmark (BPF_PROG_TEST_RUN)");
    println!("# {cpus} CPUs, {cpu}, Linux {kernel}");
    println!(
        "# {} runs per measurement, {} rep(s), sizes {:?}; load average at start: {}",
        args.repeat,
        args.reps,
        args.sizes,
        load_average()
    );
    if args.repeat < 1_000_000 {
        println!("# note: fewer than 1,000,000 runs per measurement: the syscall weighs in");
    }
}
