//! The kernel side of the datapath benchmark: the bench-only C programs built with clang,
//! a private pin directory, and the three objects loaded and filled with the fixture.
//!
//! Nothing here is left behind: the built objects are read into memory and their
//! directory removed at once, and the pin directory (our object pins its maps by name,
//! so without one they would land in /sys/fs/bpf itself, beside a real install's) is
//! removed when its [`PinDir`] is dropped, on error as well as on success.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;

use aya::maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, lpm_trie};
use aya::programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions};
use aya::{Ebpf, EbpfLoader, Pod};
use datapath::{
    Config, CtKey, CtValue, EndpointInfo, EndpointPolicy, HostKey, IpcacheKey, IpcacheValue,
    MetricsValue, PolicyValue, PolicyVerdict, Reason, VERDICT_ALLOW, VERDICT_DENY, capacity,
    map_names, metrics_index, program_names,
};

use crate::fixture::{self, Family};

pub type Result<T> = std::result::Result<T, String>;

/// Where the bench-only sources are, relative to this crate.
const BENCH_SOURCES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/bench");
const BPFFS: &str = "/sys/fs/bpf";
/// `BPF_FS_MAGIC` of `include/uapi/linux/magic.h`.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Flows of other endpoints kept in conntrack (and in the baselines' hash maps), so that
/// the lookups measured are not in a map of a handful of entries.
pub const BACKGROUND_FLOWS: u32 = 10_000;
/// The metrics row of the measured endpoint.
const METRICS_ROW: u32 = 1;
/// The runtime's default event budget (`runtime::DEFAULT_EVENT_RATE` and `_BURST`):
/// drops are measured with verdict events on, as a node runs them.
const EVENT_RATE: u32 = 1000;
const EVENT_BURST: u32 = 1000;

/// Why the benchmark cannot run on this machine (no clang, no privileges, no bpffs).
#[derive(Debug)]
pub struct Unavailable(pub String);

/// The compiled bench-only objects.
#[derive(Debug)]
pub struct BenchObjects {
    pub baseline: Vec<u8>,
    pub cilium: Vec<u8>,
}

/// Builds `bench/*.bpf.c` with clang into a temporary directory, reads the objects and
/// removes the directory.
pub fn build_bench_objects() -> std::result::Result<BenchObjects, Unavailable> {
    let clang = std::env::var("CLANG").unwrap_or_else(|_| "clang".into());
    if Command::new(&clang).arg("--version").output().is_err() {
        return Err(Unavailable(format!(
            "{clang} not found: the benchmark builds its baseline and Cilium-shaped programs \
             with it; install it with 'apt-get install -y clang libbpf-dev'"
        )));
    }
    if !Path::new("/usr/include/bpf/bpf_helpers.h").exists() {
        return Err(Unavailable(
            "libbpf headers not found: install them with 'apt-get install -y libbpf-dev'".into(),
        ));
    }
    // <linux/types.h> needs <asm/types.h> from the host's multiarch directory.
    let multiarch = ["clang", "gcc"]
        .iter()
        .filter_map(|cc| Command::new(cc).arg("-print-multiarch").output().ok())
        .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .find(|m| !m.is_empty())
        .unwrap_or_else(|| "x86_64-linux-gnu".into());

    let dir = std::env::temp_dir().join(format!("policyc-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| Unavailable(format!("creating {dir:?}: {e}")))?;
    let build = |name: &str| -> std::result::Result<Vec<u8>, Unavailable> {
        let out = dir.join(format!("{name}.o"));
        let status = Command::new(&clang)
            .args(["-O2", "-g", "-target", "bpf", "-mcpu=v3", "-Wall", "-Wextra", "-Werror"])
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg("-c")
            .arg(Path::new(BENCH_SOURCES).join(format!("{name}.bpf.c")))
            .arg("-o")
            .arg(&out)
            .status()
            .map_err(|e| Unavailable(format!("running {clang}: {e}")))?;
        if !status.success() {
            return Err(Unavailable(format!("{clang} failed on bench/{name}.bpf.c: {status}")));
        }
        std::fs::read(&out).map_err(|e| Unavailable(format!("reading {out:?}: {e}")))
    };
    let built = build("baseline")
        .and_then(|baseline| Ok(BenchObjects { baseline, cilium: build("cilium_shaped")? }));
    let _ = std::fs::remove_dir_all(&dir);
    built
}

/// Whether this process may load programs and pin maps: root, and bpffs mounted.
pub fn check_kernel() -> std::result::Result<(), Unavailable> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Err(Unavailable("it loads BPF programs and pins maps: run it as root".into()));
    }
    let bpffs = CString::new(BPFFS).expect("no NUL in a constant");
    // SAFETY: statfs only writes the struct it is given, which is plain data.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `bpffs` is a NUL-terminated path and `fs` a valid out-pointer.
    let mounted =
        unsafe { libc::statfs(bpffs.as_ptr(), &mut fs) } == 0 && fs.f_type as i64 == BPF_FS_MAGIC;
    if !mounted {
        return Err(Unavailable(format!(
            "no bpffs at {BPFFS}: mount it with 'mount -t bpf bpf {BPFFS}'"
        )));
    }
    Ok(())
}

/// A pin directory of this process under /sys/fs/bpf, removed with everything in it
/// when dropped.
#[derive(Debug)]
pub struct PinDir(PathBuf);

impl PinDir {
    pub fn create(tag: &str) -> Result<PinDir> {
        let path = Path::new(BPFFS).join(format!("policyc-bench-{}-{tag}", std::process::id()));
        std::fs::create_dir(&path)
            .map_err(|e| format!("creating the pin directory {path:?}: {e}"))?;
        Ok(PinDir(path))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0) {
            eprintln!("warning: could not remove the pin directory {:?}: {e}", self.0);
        }
    }
}

fn program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    let program = ebpf.program_mut(name).ok_or_else(|| format!("no program {name}"))?;
    program.try_into().map_err(|e| format!("program {name}: {e}"))
}

fn load_programs(ebpf: &mut Ebpf, names: &[&str]) -> Result<()> {
    for name in names {
        program(ebpf, name)?.load().map_err(|e| format!("loading program {name}: {e}"))?;
    }
    Ok(())
}

fn take<M>(ebpf: &mut Ebpf, name: &str) -> Result<M>
where
    M: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or_else(|| format!("no map {name}"))?;
    M::try_from(map).map_err(|e| format!("map {name}: {e}"))
}

fn insert_err(name: &str) -> impl Fn(aya::maps::MapError) -> String + '_ {
    move |e| format!("writing map {name}: {e}")
}

/// One `BPF_PROG_TEST_RUN` of `packet`, `repeat` times: the kernel's average time per run
/// and the program's return value.
pub fn test_run(prog: &SchedClassifier, packet: &[u8], repeat: u32) -> Result<(u64, u32)> {
    let opts = TestRunOptions { data_in: Some(packet), repeat, ..TestRunOptions::default() };
    let result = prog.test_run(opts).map_err(|e: ProgramError| format!("test run: {e}"))?;
    Ok((result.duration.as_nanos() as u64, result.return_value))
}

/// The flows of other endpoints kept in every conntrack-shaped map.
fn background_flows() -> impl Iterator<Item = CtKey> {
    (0..BACKGROUND_FLOWS).map(|i| {
        let family = if i % 2 == 0 { Family::V4 } else { Family::V6 };
        CtKey {
            ifindex: 2 + i % 64,
            family: family.code(),
            proto: fixture::IPPROTO_TCP,
            pad: 0,
            ep_addr: fixture::pod_addr(family, i % fixture::PODS),
            peer_addr: fixture::pod_addr(family, (i * 7 + 1) % fixture::PODS),
            ep_port: (30_000 + (i % 20_000) as u16).to_be(),
            peer_port: 443u16.to_be(),
        }
    })
}

/// `bpf_ktime_get_ns()` as user space reads it (CLOCK_MONOTONIC).
fn monotonic_ns() -> u64 {
    // SAFETY: clock_gettime only writes the timespec it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: a valid clock id and out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---------------------------------------------------------------------------------------
// Baselines

/// The floor (an empty tc program) and the floor plus one hash lookup.
pub struct Baselines {
    ebpf: Ebpf,
}

impl Baselines {
    pub const EMPTY: &str = "bench_empty";
    pub const HASH: &str = "bench_hash";
    pub const LRU_HASH: &str = "bench_lru_hash";
    pub const KTIME: &str = "bench_ktime";
    pub const ENDPOINT_HASH: &str = "bench_ep_hash";

    pub fn load(object: &[u8]) -> Result<Baselines> {
        let mut ebpf = Ebpf::load(object).map_err(|e| format!("loading the baselines: {e}"))?;
        let all = [Self::EMPTY, Self::HASH, Self::LRU_HASH, Self::KTIME, Self::ENDPOINT_HASH];
        load_programs(&mut ebpf, &all)?;
        let probe = CtKey { ifindex: 1, ..CtKey::default() };
        for name in ["bench_ct_hash", "bench_ct_lru"] {
            let mut map: HashMap<MapData, CtKey, CtValue> = take(&mut ebpf, name)?;
            for key in background_flows().chain([probe]) {
                map.insert(key, CtValue::default(), 0).map_err(insert_err(name))?;
            }
        }
        // As many interfaces as a busy node binds; the probe is ifindex 1.
        let name = "bench_endpoints";
        let mut endpoints: HashMap<MapData, u32, EndpointInfo> = take(&mut ebpf, name)?;
        for ifindex in 1..=64 {
            endpoints.insert(ifindex, EndpointInfo::default(), 0).map_err(insert_err(name))?;
        }
        Ok(Baselines { ebpf })
    }

    pub fn program(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        program(&mut self.ebpf, name)
    }
}

// ---------------------------------------------------------------------------------------
// Ours

/// The datapath object as policyc loads it, with maps pinned in a private directory.
pub struct Ours {
    ebpf: Ebpf,
    policy: HashMap<MapData, datapath::PolicyKey, PolicyValue>,
    metrics: PerCpuArray<MapData, MetricsValue>,
    /// Rules in the policy map: rules `0..filled` of the fixture.
    filled: u32,
    pub capacity: u32,
    _pins: PinDir,
}

impl Ours {
    /// Loads `object` (`datapath::OBJECT` unless told otherwise); `policy_capacity`
    /// overrides the policy map's size, for the benchmark only.
    pub fn load(object: &[u8], tag: &str, policy_capacity: Option<u32>) -> Result<Ours> {
        let pins = PinDir::create(tag)?;
        let mut loader = EbpfLoader::new();
        loader.default_map_pin_directory(pins.path());
        if let Some(entries) = policy_capacity {
            loader.map_max_entries(map_names::POLICY, entries);
        }
        let mut ebpf = loader.load(object).map_err(|e| format!("loading the datapath: {e}"))?;
        load_programs(&mut ebpf, &[program_names::FROM_ENDPOINT, program_names::TO_ENDPOINT])?;

        let mut config: Array<MapData, Config> = take(&mut ebpf, map_names::CONFIG)?;
        let live = Config {
            generation: fixture::GENERATION,
            event_rate: EVENT_RATE,
            event_burst: EVENT_BURST,
            ..Config::default()
        };
        config.set(0, live, 0).map_err(insert_err(map_names::CONFIG))?;

        // The test run's skb belongs to the loopback device of the caller's network
        // namespace unless ctx_in names another interface (net/bpf/test_run.c).
        let lo = CString::new("lo").expect("no NUL in a constant");
        // SAFETY: a NUL-terminated interface name.
        let ifindex = unsafe { libc::if_nametoindex(lo.as_ptr()) };
        if ifindex == 0 {
            return Err("no loopback interface in this network namespace".into());
        }
        let policy = EndpointPolicy {
            endpoint_id: fixture::ENDPOINT_ID,
            identity: fixture::ENDPOINT_IDENTITY,
            ingress_table: fixture::TABLE,
            egress_table: fixture::TABLE,
            ingress_port_bits: 1 << datapath::PORT_BITS,
            egress_port_bits: 1 << datapath::PORT_BITS,
        };
        let endpoint = EndpointInfo { slot: [policy; 2], metrics_row: METRICS_ROW, flags: 0 };
        let mut endpoints: HashMap<MapData, u32, EndpointInfo> =
            take(&mut ebpf, map_names::ENDPOINTS)?;
        endpoints.insert(ifindex, endpoint, 0).map_err(insert_err(map_names::ENDPOINTS))?;

        let mut hosts: HashMap<MapData, HostKey, IpcacheValue> = take(&mut ebpf, map_names::HOSTS)?;
        let mut ipcache: LpmTrie<MapData, [u8; 20], IpcacheValue> =
            take(&mut ebpf, map_names::IPCACHE)?;
        for family in Family::BOTH {
            for i in 0..fixture::PODS {
                let key = HostKey {
                    family: family.code(),
                    pad: [0; 3],
                    addr: fixture::pod_addr(family, i),
                };
                let identity = fixture::pod_identity(i);
                let value = IpcacheValue { identity: [identity; 2] };
                hosts.insert(key, value, 0).map_err(insert_err(map_names::HOSTS))?;
            }
            for j in 0..fixture::CIDRS {
                let (addr, bits, identity) = fixture::cidr(family, j);
                let key = IpcacheKey::new(family.code(), addr, bits);
                let mut data = [0u8; 20];
                data[0] = key.family;
                data[4..].copy_from_slice(&key.addr);
                let value = IpcacheValue { identity: [identity; 2] };
                ipcache
                    .insert(&lpm_trie::Key::new(key.prefixlen, data), value, 0)
                    .map_err(insert_err(map_names::IPCACHE))?;
            }
        }

        let mut conntrack: HashMap<MapData, CtKey, CtValue> =
            take(&mut ebpf, map_names::CONNTRACK)?;
        let now = (monotonic_ns() >> datapath::CT_TICK_SHIFT) as u32;
        for key in background_flows() {
            let value = CtValue {
                last_seen: now,
                rule: 1,
                generation: fixture::GENERATION,
                checked: fixture::GENERATION,
                endpoint_id: fixture::ENDPOINT_ID + 1 + key.ifindex,
                direction: datapath::DIR_EGRESS,
                ..CtValue::default()
            };
            conntrack.insert(key, value, 0).map_err(insert_err(map_names::CONNTRACK))?;
        }

        let policy = take(&mut ebpf, map_names::POLICY)?;
        let metrics = take(&mut ebpf, map_names::METRICS)?;
        let capacity = policy_capacity.unwrap_or(capacity::POLICY);
        Ok(Ours { ebpf, policy, metrics, filled: 0, capacity, _pins: pins })
    }

    /// Adds fixture rules until the policy map holds `entries`.
    pub fn grow_policy(&mut self, entries: u32) -> Result<()> {
        for i in self.filled..entries {
            let rule = fixture::rule(i);
            let verdict = PolicyVerdict {
                verdict: if rule.deny { VERDICT_DENY } else { VERDICT_ALLOW },
                pad: [0; 3],
                rule: rule.cookie,
            };
            let value = PolicyValue { slot: [verdict; 2] };
            self.policy
                .insert(rule.policy_key(), value, 0)
                .map_err(insert_err(map_names::POLICY))?;
        }
        self.filled = self.filled.max(entries);
        Ok(())
    }

    pub fn program(&mut self, name: &str) -> Result<&mut SchedClassifier> {
        program(&mut self.ebpf, name)
    }

    /// Packets counted for `reason` on the measured endpoint, over every CPU.
    pub fn count(&self, reason: Reason) -> Result<u64> {
        let index = metrics_index(METRICS_ROW, reason);
        let per_cpu = self
            .metrics
            .get(&index, 0)
            .map_err(|e| format!("reading map {}: {e}", map_names::METRICS))?;
        Ok(per_cpu.iter().map(|v| v.packets).sum())
    }
}

// ---------------------------------------------------------------------------------------
// Cilium-shaped reference

/// `struct ipcache_value` of bench/cilium_shaped.bpf.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct CiliumIpcacheValue {
    identity: u32,
    tunnel_endpoint: u32,
    pad: u16,
    key: u8,
    flags: u8,
}

/// `struct policy_value` of bench/cilium_shaped.bpf.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct CiliumPolicyValue {
    proxy_port: u16,
    flags: u8,
    prefixlen: u8,
    precedence: u32,
    cookie: u32,
}

// SAFETY: repr(C) structs of integers whose fields leave no padding (12 bytes each), so
// every bit pattern is a valid value and no uninitialised byte reaches the kernel.
unsafe impl Pod for CiliumIpcacheValue {}
// SAFETY: as above.
unsafe impl Pod for CiliumPolicyValue {}

/// The Cilium-shaped reference program and its two tries.
pub struct Cilium {
    ebpf: Ebpf,
    policy: LpmTrie<MapData, [u8; 8], CiliumPolicyValue>,
    filled: u32,
}

impl Cilium {
    pub const PROGRAM: &str = "bench_cilium_to_ep";
    /// Identity, direction, protocol and port: every bit of a one-port entry.
    const FULL_PREFIX: u32 = 64;
    /// `FAMILY_IPV4` and `FAMILY_IPV6` of bench/cilium_shaped.bpf.c.
    fn family(family: Family) -> u8 {
        match family {
            Family::V4 => 1,
            Family::V6 => 2,
        }
    }

    pub fn load(object: &[u8]) -> Result<Cilium> {
        let mut ebpf = Ebpf::load(object).map_err(|e| format!("loading the reference: {e}"))?;
        load_programs(&mut ebpf, &[Self::PROGRAM])?;

        let name = "bench_cilium_ipcache";
        let mut ipcache: LpmTrie<MapData, [u8; 20], CiliumIpcacheValue> = take(&mut ebpf, name)?;
        for family in Family::BOTH {
            let mut insert = |addr: [u8; 16], bits: u32, identity: u32| {
                let mut data = [0u8; 20];
                data[3] = Self::family(family);
                data[4..].copy_from_slice(&addr);
                let value = CiliumIpcacheValue { identity, ..CiliumIpcacheValue::default() };
                ipcache
                    .insert(&lpm_trie::Key::new(32 + bits, data), value, 0)
                    .map_err(insert_err(name))
            };
            for i in 0..fixture::PODS {
                insert(fixture::pod_addr(family, i), family.bits(), fixture::pod_identity(i))?;
            }
            for j in 0..fixture::CIDRS {
                let (addr, bits, identity) = fixture::cidr(family, j);
                insert(addr, bits, identity)?;
            }
        }
        let policy = take(&mut ebpf, "bench_cilium_policy")?;
        Ok(Cilium { ebpf, policy, filled: 0 })
    }

    /// Adds fixture rules until the policy trie holds `entries`.
    pub fn grow_policy(&mut self, entries: u32) -> Result<()> {
        for i in self.filled..entries {
            let rule = fixture::rule(i);
            let mut data = [0u8; 8];
            data[..4].copy_from_slice(&rule.identity.to_ne_bytes());
            data[4] = 0; // ingress
            data[5] = rule.proto;
            data[6..].copy_from_slice(&rule.port.to_be_bytes());
            let value = CiliumPolicyValue {
                proxy_port: 0,
                flags: u8::from(rule.deny),
                prefixlen: Self::FULL_PREFIX as u8,
                precedence: if rule.deny { 255 } else { 1 },
                cookie: rule.cookie,
            };
            let key = lpm_trie::Key::new(Self::FULL_PREFIX, data);
            self.policy.insert(&key, value, 0).map_err(insert_err("bench_cilium_policy"))?;
        }
        self.filled = self.filled.max(entries);
        Ok(())
    }

    pub fn program(&mut self) -> Result<&mut SchedClassifier> {
        program(&mut self.ebpf, Self::PROGRAM)
    }
}
