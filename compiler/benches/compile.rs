//! Compile-time benchmark on synthetic clusters shaped like the published anchors.
//!
//! Plain `std::time` with repetitions; each configuration is run `--reps` times and the
//! median of each phase is reported. Every run also times two baselines on the same
//! data, so results can be given as ratios that survive a noisy, shared machine:
//!
//! - `tree`: parsing the same YAML into the generic spanned tree
//!   (`policy_lang::yaml::parse_documents`), the floor any front end reading this input
//!   pays. A compiler whose work is linear in its input stays within a small constant
//!   factor of it however large the cluster grows.
//! - `sort`: sorting as many (key, value) policy and ipcache entries as the artifact
//!   holds, shuffled; the floor for producing the output.
//!
//! Sizes climb a ladder of halvings up to `--scale` times the anchor sizes. A shape stops
//! climbing when the next step's compile is predicted (from the growth measured so far)
//! to exceed `--budget` seconds; the full-size time is then extrapolated and reported as
//! such. This keeps a quadratic or cubic blow-up measurable instead of hanging the run.
//!
//! Usage (see BENCHMARKS.md):
//!   cargo bench -p policyc-compiler --bench compile -- [--scale F] [--reps N] [--budget S]
//!       [--shapes abcd]
//!   cargo bench -p policyc-compiler --bench compile -- --write-shapes DIR [--scale F]
//!   cargo bench -p policyc-compiler --bench compile -- --parse-only PATH...
//! `POLICYC_BENCH_SCALE`, `POLICYC_BENCH_REPS` and `POLICYC_BENCH_BUDGET` set the same
//! defaults; `--smoke` is `--scale 0.01 --reps 1` for CI.

#![expect(clippy::print_stdout, reason = "a benchmark's report is its output")]

mod probe;
mod synth;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use compiler::artifact::Artifact;
use policy_lang::Sources;
use probe::{Diff, cpu_time, load_average, peak_rss_mb, reset_peak_rss};
use synth::{File, Shape};

/// Anchor sizes (Antrea's controller tests, Cilium's CIDR fixture).
const SELECT_ALL_PODS: usize = 10_000;
const SMALL_NAMESPACES: usize = 25_000;
const CIDR_RULES: usize = 1_000;
const CIDR_PODS: usize = 4;
/// The smallest rung of every ladder, as a fraction of the anchor size.
const LADDER_FLOOR: f64 = 1.0 / 64.0;
const SEED: u64 = 0x706f_6c69_6379_6321;

struct Args {
    scale: f64,
    reps: usize,
    budget: f64,
    shapes: String,
    write_shapes: Option<PathBuf>,
    parse_only: Vec<PathBuf>,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn parse_args() -> Args {
    let mut args = Args {
        scale: env_or("POLICYC_BENCH_SCALE", 1.0),
        reps: env_or("POLICYC_BENCH_REPS", 3),
        budget: env_or("POLICYC_BENCH_BUDGET", 30.0),
        shapes: "abcd".into(),
        write_shapes: None,
        parse_only: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--scale" => args.scale = value().parse().expect("--scale takes a number"),
            "--reps" => args.reps = value().parse().expect("--reps takes a count"),
            "--budget" => args.budget = value().parse().expect("--budget takes seconds"),
            "--shapes" => args.shapes = value(),
            "--smoke" => (args.scale, args.reps) = (0.01, 1),
            "--write-shapes" => args.write_shapes = Some(value().into()),
            "--parse-only" => args.parse_only.extend(it.by_ref().map(PathBuf::from)),
            // cargo passes `--bench` to every bench binary.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    args
}

fn main() {
    let args = parse_args();
    if !args.parse_only.is_empty() {
        return parse_only(&args.parse_only);
    }
    if let Some(dir) = &args.write_shapes {
        return write_shapes(dir, args.scale);
    }
    // Freed memory stays in the allocator, so the peak-RSS figures are only fair in a
    // process of its own: each group of shapes runs in a child (b and d share one, as d
    // needs b's largest size).
    let groups = groups(&args.shapes);
    if groups.len() > 1 {
        return spawn_groups(&groups);
    }
    println!(
        "# policyc compile benchmark: scale {}, {} rep(s), budget {} s per compile",
        args.scale, args.reps, args.budget
    );
    println!("# load average at start: {}", load_average());
    let mut largest_b = None;
    for shape in args.shapes.chars() {
        match shape {
            'a' => {
                let make = |f: f64| {
                    let n = scaled(SELECT_ALL_PODS, f);
                    Shape::SelectAll { pods: n, policies: n }
                };
                ladder(
                    "a: N pods x N policies, all select all",
                    make,
                    &args,
                    Some((10.66, 1157.0)),
                );
            }
            'b' => {
                let make = |f: f64| Shape::SmallNamespaces {
                    namespaces: scaled(SMALL_NAMESPACES, f),
                    changed: None,
                };
                largest_b = ladder(
                    "b: 4N pods, N namespaces, 3N policies",
                    make,
                    &args,
                    Some((6.1, 1626.0)),
                );
            }
            'c' => {
                let make = |f: f64| Shape::Cidr { rules: scaled(CIDR_RULES, f), pods: CIDR_PODS };
                ladder("c: N CIDR rules, one endpoint identity", make, &args, None);
            }
            'd' => one_policy_change(largest_b, &args),
            other => panic!("unknown shape {other}"),
        }
    }
    println!("# load average at end: {}", load_average());
}

/// Splits a `--shapes` list into the groups that run in one process each.
fn groups(shapes: &str) -> Vec<String> {
    let mut groups: Vec<String> = Vec::new();
    for shape in shapes.chars() {
        match groups.iter_mut().find(|g| shape == 'd' && g.contains('b')) {
            Some(group) => group.push(shape),
            None => groups.push(shape.to_string()),
        }
    }
    groups
}

/// Runs this binary once per group, with the same arguments otherwise.
fn spawn_groups(groups: &[String]) {
    let exe = std::env::current_exe().expect("the benchmark's own path");
    let mut rest: Vec<String> = Vec::new();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg == "--shapes" {
            it.next();
        } else {
            rest.push(arg);
        }
    }
    for group in groups {
        let status = std::process::Command::new(&exe)
            .args(&rest)
            .args(["--shapes", group])
            .status()
            .expect("running a group of shapes");
        assert!(status.success(), "shapes {group} failed: {status}");
    }
}

fn scaled(anchor: usize, fraction: f64) -> usize {
    ((anchor as f64 * fraction).round() as usize).max(1)
}

/// Runs one shape up its ladder; returns the largest fraction measured.
fn ladder(
    title: &str,
    make: impl Fn(f64) -> Shape,
    args: &Args,
    anchor: Option<(f64, f64)>,
) -> Option<f64> {
    println!("\n## {title}");
    println!("{}", Sample::HEADER);
    let mut fractions = vec![args.scale];
    while fractions[0] / 2.0 >= LADDER_FLOOR * args.scale.min(1.0) - 1e-12 {
        fractions.insert(0, fractions[0] / 2.0);
    }
    let mut done: Vec<(f64, f64)> = Vec::new();
    let mut previous = None;
    for &fraction in &fractions {
        // At small scales several rungs round to the same size; measure it once.
        if previous == Some(make(fraction)) {
            continue;
        }
        previous = Some(make(fraction));
        if let Some(predicted) = predict(&done, fraction)
            && predicted > args.budget
        {
            println!("| stop: next size predicted {predicted:.1} s > budget {} s |", args.budget);
            break;
        }
        let files = synth::generate(make(fraction), SEED);
        let sample = measure_median(&files, args.reps, Some(args.budget));
        println!("{}", sample.row(&format!("{:?}", make(fraction))));
        done.push((fraction, sample.compile.as_secs_f64()));
    }
    let &(last, seconds) = done.last()?;
    let exponent = growth(&done);
    if let Some(exponent) = exponent {
        println!("growth of compile time: about size^{exponent:.2}");
    }
    if last < 1.0 && seconds < 1.0 {
        println!("largest size compiled in under a second: too small to extrapolate from");
    } else if last < 1.0 {
        let full = seconds * (1.0 / last).powf(exponent.unwrap_or(1.0));
        let vs = anchor
            .map(|(s, _)| format!(" ({:.1}x the anchor's {s} s)", full / s))
            .unwrap_or_default();
        println!("extrapolated compile at anchor size: {full:.1} s{vs}");
    } else if let Some((s, mb)) = anchor {
        println!("anchor: {s} s, {mb} MB (compile here: {:.3}x the anchor's time)", seconds / s);
    }
    Some(last)
}

/// The exponent k in time ~ size^k from the two largest rungs, if they are long enough
/// to be more than noise.
fn growth(done: &[(f64, f64)]) -> Option<f64> {
    let [.., (f1, t1), (f2, t2)] = done else { return None };
    (*t1 > 0.005).then(|| (t2 / t1).ln() / (f2 / f1).ln())
}

fn predict(done: &[(f64, f64)], fraction: f64) -> Option<f64> {
    let &(last, seconds) = done.last()?;
    Some(seconds * (fraction / last).powf(growth(done).unwrap_or(2.0).max(1.0)))
}

/// Phase times and sizes of one run (or the medians of several).
#[derive(Clone, Debug, Default)]
struct Sample {
    input_bytes: usize,
    tree: Duration,
    parse: Duration,
    compile: Duration,
    /// CPU time (user + system) of the compile: less sensitive than wall time to other
    /// processes competing for the cores.
    compile_cpu: Duration,
    encode: Duration,
    sort: Duration,
    /// Peak resident set while compiling (VmHWM after a reset), in MB.
    compile_rss_mb: f64,
    stats: compiler::Stats,
    max_table: usize,
    artifact_bytes: usize,
    runs: usize,
}

impl Sample {
    const HEADER: &str = concat!(
        "| shape | input MB | tree s | parse s | compile s | compile CPU s | encode s | sort s ",
        "| compile/tree | compile/sort | RSS MB | endpoints | identities | tables | max/table ",
        "| policy entries | hosts | ipcache | artifact MB | runs |\n",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    );

    fn row(&self, shape: &str) -> String {
        let s = &self.stats;
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(1e-9);
        format!(
            concat!(
                "| {} | {:.1} | {:.3} | {:.3} | {:.3} | {:.2} | {:.4} | {:.5} | {:.1} | {:.0} ",
                "| {:.0} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} |",
            ),
            shape,
            self.input_bytes as f64 / 1e6,
            self.tree.as_secs_f64(),
            self.parse.as_secs_f64(),
            self.compile.as_secs_f64(),
            self.compile_cpu.as_secs_f64(),
            self.encode.as_secs_f64(),
            self.sort.as_secs_f64(),
            ratio(self.compile, self.tree),
            ratio(self.compile, self.sort),
            self.compile_rss_mb,
            s.endpoints,
            s.identities,
            s.tables,
            self.max_table,
            s.policy_entries,
            s.host_entries,
            s.ipcache_entries,
            self.artifact_bytes as f64 / 1e6,
            self.runs,
        )
    }
}

fn sources_of(files: &[File]) -> Sources {
    let mut sources = Sources::default();
    for file in files {
        sources.add(file.name.clone(), file.text.clone());
    }
    sources
}

/// One run of every phase; also returns the artifact for diffing.
fn measure(files: &[File]) -> (Sample, Artifact) {
    let sources = sources_of(files);
    let mut sample = Sample { runs: 1, ..Sample::default() };
    sample.input_bytes = files.iter().map(|f| f.text.len()).sum();

    let start = Instant::now();
    for (id, file) in sources.iter() {
        let tree =
            policy_lang::yaml::parse_documents(&file.text, id).expect("generated YAML parses");
        std::hint::black_box(tree);
    }
    sample.tree = start.elapsed();

    let start = Instant::now();
    let bundle = policy_lang::load_sources(&sources);
    sample.parse = start.elapsed();
    assert!(!bundle.has_errors(), "generated input has errors: {:?}", &bundle.diagnostics[..1]);

    reset_peak_rss();
    let (start, cpu) = (Instant::now(), cpu_time());
    let compilation = compiler::compile(&sources, &bundle);
    sample.compile = start.elapsed();
    sample.compile_cpu = cpu_time().saturating_sub(cpu);
    sample.compile_rss_mb = peak_rss_mb();

    let start = Instant::now();
    let bytes = compilation.artifact.encode();
    sample.encode = start.elapsed();
    sample.artifact_bytes = bytes.len();

    sample.sort = sort_baseline(&compilation.artifact);
    sample.stats = compilation.stats.clone();
    let mut per_table = std::collections::BTreeMap::<u32, usize>::new();
    for (key, _) in &compilation.artifact.policy {
        *per_table.entry(key.table).or_default() += 1;
    }
    sample.max_table = per_table.values().copied().max().unwrap_or(0);
    (sample, compilation.artifact)
}

/// Sorts a shuffled copy of the artifact's entries: the cost of merely putting that many
/// entries in order, which any compiler producing them pays.
fn sort_baseline(artifact: &Artifact) -> Duration {
    let mut rng = synth::Rng::new(SEED);
    let mut policy = artifact.policy.clone();
    let mut ipcache = artifact.ipcache.clone();
    for i in (1..policy.len()).rev() {
        policy.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for i in (1..ipcache.len()).rev() {
        ipcache.swap(i, rng.below(i as u64 + 1) as usize);
    }
    let start = Instant::now();
    policy.sort();
    ipcache.sort();
    let elapsed = start.elapsed();
    std::hint::black_box((policy, ipcache));
    elapsed
}

/// Medians of `reps` runs, phase by phase. A first run longer than `budget` is not
/// repeated: one sample of a slow configuration says what it needs to.
fn measure_median(files: &[File], reps: usize, budget: Option<f64>) -> Sample {
    let mut samples = Vec::new();
    for _ in 0..reps.max(1) {
        let (sample, _) = measure(files);
        let slow = budget.is_some_and(|b| sample.compile.as_secs_f64() > b / 3.0);
        samples.push(sample);
        if slow {
            break;
        }
    }
    let median = |f: fn(&Sample) -> Duration| {
        let mut v: Vec<Duration> = samples.iter().map(f).collect();
        v.sort();
        v[v.len() / 2]
    };
    let mut out = samples[0].clone();
    out.tree = median(|s| s.tree);
    out.parse = median(|s| s.parse);
    out.compile = median(|s| s.compile);
    out.compile_cpu = median(|s| s.compile_cpu);
    out.encode = median(|s| s.encode);
    out.sort = median(|s| s.sort);
    out.compile_rss_mb = samples.iter().map(|s| s.compile_rss_mb).fold(0.0, f64::max);
    out.runs = samples.len();
    out
}

/// Shape (d): the largest (b) measured, then the same cluster with one policy edited:
/// the full recompile time and how many entries of the artifact changed.
fn one_policy_change(fraction: Option<f64>, args: &Args) {
    let fraction = fraction.unwrap_or(args.scale.min(1.0 / 16.0));
    let namespaces = scaled(SMALL_NAMESPACES, fraction);
    let before = synth::generate(Shape::SmallNamespaces { namespaces, changed: None }, SEED);
    let after =
        synth::generate(Shape::SmallNamespaces { namespaces, changed: Some(namespaces / 2) }, SEED);
    println!("\n## d: one policy of b edited ({namespaces} namespaces; np-1 of one namespace)");
    println!("{}", Sample::HEADER);

    let mut times = Vec::new();
    let mut diff = Diff::default();
    let (_, old) = measure(&before);
    for _ in 0..args.reps.max(1) {
        let (sample, new) = measure(&after);
        let start = Instant::now();
        diff = Diff::between(&old, &new);
        let slow = sample.compile.as_secs_f64() > args.budget / 3.0;
        times.push((sample, start.elapsed()));
        if slow {
            break;
        }
    }
    times.sort_by_key(|(s, _)| s.parse + s.compile + s.encode);
    let (sample, diff_time) = times[times.len() / 2].clone();
    println!("{}", sample.row("after the edit"));
    let recompile = sample.parse + sample.compile + sample.encode + diff_time;
    println!(
        "recompile (parse + compile + encode + diff): {:.3} s, of which diff {:.4} s",
        recompile.as_secs_f64(),
        diff_time.as_secs_f64()
    );
    println!(
        concat!(
            "artifact diff: policy +{} -{} ~{}, ipcache +{} -{} ~{}, endpoints changed {}, ",
            "identities changed {}; {} of {} policy entries touched",
        ),
        diff.policy.0,
        diff.policy.1,
        diff.policy.2,
        diff.ipcache.0,
        diff.ipcache.1,
        diff.ipcache.2,
        diff.endpoints,
        diff.identities,
        diff.policy.0 + diff.policy.1 + diff.policy.2,
        sample.stats.policy_entries,
    );
}

/// Writes every shape at `scale` (and the edited variant of b) for `benches/run.sh`.
fn write_shapes(dir: &std::path::Path, scale: f64) {
    let n = scaled(SMALL_NAMESPACES, scale);
    let shapes = [
        (
            "a-select-all",
            Shape::SelectAll {
                pods: scaled(SELECT_ALL_PODS, scale),
                policies: scaled(SELECT_ALL_PODS, scale),
            },
        ),
        ("b-small-namespaces", Shape::SmallNamespaces { namespaces: n, changed: None }),
        // The CIDR shape is cheap and meant at its anchor size; smaller scales keep it.
        ("c-cidr", Shape::Cidr { rules: scaled(CIDR_RULES, scale.max(1.0)), pods: CIDR_PODS }),
        ("d-one-policy-changed", Shape::SmallNamespaces { namespaces: n, changed: Some(n / 2) }),
    ];
    for (name, shape) in shapes {
        synth::write(&dir.join(name), &synth::generate(shape, SEED)).expect("writing shapes");
        println!("{name}\t{shape:?}");
    }
}

/// The baseline for `benches/run.sh`: read the files and build the generic YAML tree of
/// each in turn, as the front end does, and nothing more; so `/usr/bin/time` shows what
/// holding the input and one file's tree costs.
fn parse_only(paths: &[PathBuf]) {
    let (sources, _) = policy_lang::manifest::read_inputs(paths).expect("reading inputs");
    let mut documents = 0usize;
    for (id, file) in sources.iter() {
        let tree = policy_lang::yaml::parse_documents(&file.text, id).expect("YAML parses");
        documents += tree.len();
    }
    println!("parsed {documents} documents");
}
