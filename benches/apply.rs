//! Apply cost on the real kernel maps: wall time and map operations to take the node from
//! one state to another that differs in 1, 100 or 10,000 policy entries, by the
//! runtime's generation switch, beside a floor measured in the same run on the same
//! maps: the same changed entries written with one plain update (or delete) each, no
//! reading, no planning, no second slot, no flip: what an unordered in-place writer
//! costs, and the least any update of those entries can cost.
//!
//!   sudo cargo bench --bench apply            # needs root and bpffs; prints a table
//!   POLICYC_BENCH_REPS=9 sudo cargo bench --bench apply
//!
//! Not a test and never run by CI: timings on a shared 2-core machine are noisy, so only
//! the ratios measured side by side are meaningful (BENCHMARKS.md).
#![expect(clippy::print_stdout, clippy::print_stderr, reason = "a benchmark prints its results")]

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use aya::EbpfLoader;
use datapath::{
    Config, EndpointPolicy, FAMILY_IPV4, HostKey, PolicyKey, PolicyVerdict, VERDICT_ALLOW,
    VERDICT_DENY,
};
use runtime::{
    LiveMaps, MapBackend, MapEntry, MapKey, MapState, Plan, kernel::KernelMaps, pins::PinDir,
    plan::run, spec::ObjectSpec,
};

/// Policy entries of the base state, spread over tables as a cluster's would be.
const BASE_ENTRIES: u32 = 50_000;
const TABLES: u32 = 200;
/// Pod addresses in the hosts map.
const HOSTS: u32 = 5_000;
const CHANGES: [u32; 3] = [1, 100, 10_000];

fn main() {
    if let Err(reason) = preflight() {
        eprintln!("skipping the apply benchmark: {reason}");
        return;
    }
    let reps: usize =
        std::env::var("POLICYC_BENCH_REPS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
    let dir = PathBuf::from(format!("/sys/fs/bpf/policyc-bench-apply-{}", std::process::id()));
    let _cleanup = Cleanup(dir.clone());
    std::fs::create_dir_all(&dir).expect("creating the pin directory");
    // Loading the object creates and pins its maps; the programs are not needed.
    let _ebpf = EbpfLoader::new()
        .default_map_pin_directory(&dir)
        .load(datapath::OBJECT)
        .expect("loading the datapath object");
    let mut maps = KernelMaps::open(&PinDir::new(&dir), &ObjectSpec::embedded().unwrap())
        .expect("opening the pinned maps");

    let base = base_state();
    apply(&mut maps, &base);
    println!(
        "base: {} policy entries in {TABLES} tables, {} hosts, {} endpoints; {reps} runs",
        base.policy.len(),
        base.hosts.len(),
        base.endpoints.len()
    );
    println!(
        "| changed entries | map operations | read (ms) | plan (ms) | write (ms) | apply total (ms) \
         | floor: plain writes (ms) | apply / floor |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|");
    for change in CHANGES {
        let changed = changed_state(&base, change);
        let (mut reading, mut planning, mut writing) = (vec![], vec![], vec![]);
        let (mut totals, mut floors) = (vec![], vec![]);
        let mut operations = 0;
        for _ in 0..reps {
            // There and back: each rep measures the change in both directions.
            for (from, to) in [(&base, &changed), (&changed, &base)] {
                let started = Instant::now();
                let live = LiveMaps::read(&maps).unwrap();
                let read = started.elapsed();
                let plan = Plan::new(&live, to).unwrap();
                let planned = started.elapsed();
                run_plan(&mut maps, &plan);
                let total = started.elapsed();
                operations = plan.op_count();
                reading.push(read);
                planning.push(planned - read);
                writing.push(total - planned);
                totals.push(total);
                floors.push(plain_writes(&mut maps, from, to));
            }
        }
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let (total, floor) = (median(&mut totals), median(&mut floors));
        println!(
            "| {change} | {operations} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1}x |",
            ms(median(&mut reading)),
            ms(median(&mut planning)),
            ms(median(&mut writing)),
            ms(total),
            ms(floor),
            total.as_secs_f64() / floor.as_secs_f64().max(1e-9)
        );
    }
}

/// Whether this process can create BPF maps in bpffs.
fn preflight() -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("not running as root".into());
    }
    runtime::pins::check_bpffs(std::path::Path::new("/sys/fs/bpf")).map_err(|e| e.to_string())
}

/// Removes the pin directory at the end, also on panic.
struct Cleanup(PathBuf);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn base_state() -> MapState {
    let mut state = MapState::default();
    for i in 0..BASE_ENTRIES {
        let key = PolicyKey {
            table: 1 + i % TABLES,
            identity: 256 + (i / TABLES) % 2000,
            proto: 6,
            port_bits: 16,
            port: 1000 + (i / (TABLES * 2000)) as u16,
        };
        state.policy.insert(key, PolicyVerdict { verdict: VERDICT_ALLOW, pad: [0; 3], rule: i });
    }
    for i in 0..HOSTS {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[10, 0, (i / 250) as u8, (i % 250) as u8 + 1]);
        state.hosts.insert(HostKey { family: FAMILY_IPV4, pad: [0; 3], addr }, 256 + i % 2000);
    }
    for ifindex in 1..=20 {
        let table = ifindex;
        let policy = EndpointPolicy {
            endpoint_id: ifindex,
            identity: 256 + ifindex,
            ingress_table: table,
            egress_table: 0,
            ingress_port_bits: 1 << 16,
            egress_port_bits: 0,
        };
        state.endpoints.insert(1000 + ifindex, policy);
    }
    state
}

/// `base` with `n` policy entries changed: half of them turned into denies, half new keys
/// (and as many old keys gone), as a policy edit does.
fn changed_state(base: &MapState, n: u32) -> MapState {
    let mut state = base.clone();
    let keys: Vec<PolicyKey> = state.policy.keys().copied().take(n as usize).collect();
    for (i, key) in keys.into_iter().enumerate() {
        if i % 2 == 0 {
            state.policy.insert(key, PolicyVerdict { verdict: VERDICT_DENY, pad: [0; 3], rule: 7 });
        } else {
            state.policy.remove(&key);
            let new = PolicyKey { port: key.port.wrapping_add(20_000), ..key };
            state
                .policy
                .insert(new, PolicyVerdict { verdict: VERDICT_ALLOW, pad: [0; 3], rule: 8 });
        }
    }
    state
}

fn apply(maps: &mut KernelMaps, state: &MapState) {
    let plan = Plan::new(&LiveMaps::read(maps).unwrap(), state).unwrap();
    run_plan(maps, &plan);
}

fn run_plan(maps: &mut KernelMaps, plan: &Plan) {
    let config = Config { generation: plan.next_generation(), ..maps.config().unwrap() };
    for op in plan.ops() {
        run(maps, op, &config).unwrap();
    }
}

/// The floor: the policy entries that differ between `from` and `to`, written (both
/// slots at once) or deleted with one syscall each, then put back so the maps hold `to`
/// as the runtime left them. Only the first half is timed.
fn plain_writes(maps: &mut KernelMaps, from: &MapState, to: &MapState) -> Duration {
    let live = LiveMaps::settled(to, maps.config().unwrap().generation);
    let mut ops = Vec::new();
    for (key, value) in &to.policy {
        if from.policy.get(key) != Some(value) {
            ops.push(MapEntry::Policy(*key, live.policy[key]));
        }
    }
    let gone: Vec<MapKey> = from
        .policy
        .keys()
        .filter(|k| !to.policy.contains_key(k))
        .map(|k| MapKey::Policy(*k))
        .collect();
    // Undo first (untimed) so the timed writes really write: the maps hold `to` now.
    let before = LiveMaps::settled(from, 0);
    for entry in &ops {
        let MapEntry::Policy(key, _) = entry else { unreachable!() };
        match before.policy.get(key) {
            Some(old) => maps.update(&MapEntry::Policy(*key, *old)).unwrap(),
            None => maps.delete(&MapKey::Policy(*key)).unwrap(),
        }
    }
    for key in &gone {
        let MapKey::Policy(k) = key else { unreachable!() };
        maps.update(&MapEntry::Policy(*k, before.policy[k])).unwrap();
    }

    let started = Instant::now();
    for entry in &ops {
        maps.update(entry).unwrap();
    }
    for key in &gone {
        maps.delete(key).unwrap();
    }
    started.elapsed()
}

fn median(values: &mut [Duration]) -> Duration {
    values.sort();
    values[values.len() / 2]
}
