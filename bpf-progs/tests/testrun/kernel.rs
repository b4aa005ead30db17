//! The committed datapath object loaded into the kernel for test runs: its maps pinned in a
//! directory of this process, both programs loaded (never attached), and the map contents
//! written from compiled artifacts the way the node runtime is meant to write them.
//!
//! `BPF_PROG_TEST_RUN` gives a tc program's skb the loopback device (ifindex 1) unless the
//! context names another existing device, so the endpoint under test is always bound at
//! key [`LOOPBACK`] of the endpoints map and rebound before each packet that needs another.

use std::collections::{BTreeMap, BTreeSet};

use super::pins::PinDir;
use aya::maps::lpm_trie::Key;
use aya::maps::{Array, HashMap, LpmTrie, MapData, PerCpuArray, RingBuf};
use aya::programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions};
use aya::{Ebpf, EbpfLoader};
use compiler::artifact::Artifact;
use datapath::{
    Config, CtKey, CtValue, EndpointInfo, EndpointPolicy, Event, FragKey, FragValue, HostKey,
    IDENTITY_WORLD, IpcacheKey, IpcacheValue, MetricsValue, PolicyKey, PolicyValue, PolicyVerdict,
    Reason, VERDICT_NONE, map_names, metrics_index, program_names,
};

/// The ifindex of the skb of a test run whose context names no device: loopback.
pub const LOOPBACK: u32 = 1;
/// The metrics row the harness gives bound endpoints; row 0 counts unbound interfaces.
pub const ROW: u32 = 1;
/// tc's verdicts (`<linux/pkt_cls.h>`).
pub const TC_ACT_OK: u32 = 0;
pub const TC_ACT_SHOT: u32 = 2;

/// A map key or value as aya wants it. The layout mirrors cannot implement `aya::Pod`
/// here: that impl lives behind the crate's `aya` feature, which a dev-dependency cannot
/// turn on for the crate's own tests.
#[derive(Clone, Copy, Debug)]
#[repr(transparent)]
pub struct Plain<T>(pub T);

// SAFETY (all impls below): the wrapped types are `repr(C)` mirrors of the header made only
// of integers and byte arrays with every padding byte spelled out as a field, so any bit
// pattern is a valid value and no uninitialised byte reaches the kernel; `Plain` is
// `repr(transparent)`, so it has the same layout.
// SAFETY: see above.
unsafe impl aya::Pod for Plain<Config> {}
// SAFETY: see above.
unsafe impl aya::Pod for Plain<EndpointInfo> {}
// SAFETY: see above.
unsafe impl aya::Pod for Plain<HostKey> {}
// SAFETY: see above.
unsafe impl aya::Pod for Plain<IpcacheValue> {}
// SAFETY: see above.
unsafe impl aya::Pod for Plain<PolicyKey> {}
// SAFETY: see above.
unsafe impl aya::Pod for Plain<PolicyValue> {}
// SAFETY: see above.
unsafe impl aya::Pod for Plain<CtKey> {}
// SAFETY: see above.
unsafe impl aya::Pod for Plain<CtValue> {}
// SAFETY: see above.
unsafe impl aya::Pod for Plain<FragKey> {}
// SAFETY: see above.
unsafe impl aya::Pod for Plain<FragValue> {}
// SAFETY: see above.
unsafe impl aya::Pod for Plain<MetricsValue> {}

/// Which program a packet goes through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// `policyc_from_ep`: what the endpoint sends, judged by its egress table.
    FromEndpoint,
    /// `policyc_to_ep`: what the endpoint receives, judged by its ingress table.
    ToEndpoint,
}

impl Hook {
    fn program(self) -> &'static str {
        match self {
            Hook::FromEndpoint => program_names::FROM_ENDPOINT,
            Hook::ToEndpoint => program_names::TO_ENDPOINT,
        }
    }
}

/// What one test run did: the program's return code, the reason counter that moved, and
/// the verdict events it sent.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub action: u32,
    /// The reason whose counter in the metrics row moved, or why that is not one reason.
    pub reason: Result<Reason, String>,
    pub events: Vec<Event>,
}

impl Outcome {
    /// The reason, checked against everything else the run shows: the return code has the
    /// reason's sign, and exactly drops and policy passes sent one event, of that reason.
    pub fn checked_reason(&self) -> Result<Reason, String> {
        let reason = self.reason.clone()?;
        let action = if reason.is_drop() { TC_ACT_SHOT } else { TC_ACT_OK };
        if self.action != action {
            return Err(format!("returned {} with reason {}", self.action, reason.c_name()));
        }
        let evented = reason.is_drop() || reason == Reason::PassPolicy;
        match (evented, self.events.as_slice()) {
            (false, []) => Ok(reason),
            (true, [event]) if event.reason == reason.code() => Ok(reason),
            (_, events) => Err(format!(
                "{} with events of reasons {:?}",
                reason.c_name(),
                events.iter().map(|e| e.reason).collect::<Vec<_>>()
            )),
        }
    }

    /// The rule cookie of the run's one event.
    pub fn rule(&self) -> Option<u32> {
        self.events.first().map(|e| e.rule)
    }
}

/// The loaded datapath and the state the harness keeps about it.
pub struct Kernel {
    ebpf: Ebpf,
    config: Array<MapData, Plain<Config>>,
    endpoints: HashMap<MapData, u32, Plain<EndpointInfo>>,
    hosts: HashMap<MapData, Plain<HostKey>, Plain<IpcacheValue>>,
    ipcache: LpmTrie<MapData, [u8; 20], Plain<IpcacheValue>>,
    policy: HashMap<MapData, Plain<PolicyKey>, Plain<PolicyValue>>,
    ct: HashMap<MapData, Plain<CtKey>, Plain<CtValue>>,
    frags: HashMap<MapData, Plain<FragKey>, Plain<FragValue>>,
    metrics: PerCpuArray<MapData, Plain<MetricsValue>>,
    events: RingBuf<MapData>,
    /// The last value read of each metrics counter, summed over CPUs.
    counters: BTreeMap<u32, MetricsValue>,
    generation: u32,
    /// Per generation slot: each endpoint of the artifact loaded in it, by name.
    slots: [BTreeMap<String, EndpointPolicy>; 2],
    /// The endpoint bound at [`LOOPBACK`], as `bind` last wrote it.
    bound: Option<Option<String>>,
    written_endpoints: BTreeSet<u32>,
    written_hosts: BTreeSet<HostKey>,
    written_prefixes: BTreeSet<IpcacheKey>,
    written_policy: BTreeSet<PolicyKey>,
    // Last, so that the maps are closed before their pins go (either order works).
    _pins: PinDir,
}

impl Kernel {
    /// Loads the object with its maps pinned under a directory named by the process id and
    /// `tag` (one per test, as tests run in parallel), and loads both programs.
    pub fn load(tag: &str) -> Kernel {
        let pins = PinDir::create("policyc-testrun", tag);
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&pins.0)
            .load(datapath::OBJECT)
            .unwrap_or_else(|e| panic!("loading the datapath object: {e}"));
        for name in [program_names::FROM_ENDPOINT, program_names::TO_ENDPOINT] {
            let program: &mut SchedClassifier = ebpf
                .program_mut(name)
                .and_then(|p| p.try_into().ok())
                .unwrap_or_else(|| panic!("no tc program {name} in the object"));
            program.load().unwrap_or_else(|e| panic!("loading program {name}: {e:?}"));
        }
        let mut take = |name: &str| {
            ebpf.take_map(name).unwrap_or_else(|| panic!("no map {name} in the object"))
        };
        let config = take(map_names::CONFIG).try_into().expect("config is an array");
        let endpoints = take(map_names::ENDPOINTS).try_into().expect("endpoints is a hash");
        let hosts = take(map_names::HOSTS).try_into().expect("hosts is a hash");
        let ipcache = take(map_names::IPCACHE).try_into().expect("ipcache is an LPM trie");
        let policy = take(map_names::POLICY).try_into().expect("policy is a hash");
        let ct = take(map_names::CONNTRACK).try_into().expect("conntrack is an LRU hash");
        let frags = take(map_names::FRAGS).try_into().expect("frags is an LRU hash");
        let metrics = take(map_names::METRICS).try_into().expect("metrics is a per-CPU array");
        let events = take(map_names::EVENTS).try_into().expect("events is a ring buffer");
        let mut kernel = Kernel {
            ebpf,
            config,
            endpoints,
            hosts,
            ipcache,
            policy,
            ct,
            frags,
            metrics,
            events,
            counters: BTreeMap::new(),
            generation: 0,
            slots: Default::default(),
            bound: None,
            written_endpoints: BTreeSet::new(),
            written_hosts: BTreeSet::new(),
            written_prefixes: BTreeSet::new(),
            written_policy: BTreeSet::new(),
            _pins: pins,
        };
        kernel.set_generation(0);
        kernel
    }

    pub fn generation(&self) -> u32 {
        self.generation
    }

    /// Writes the config: `generation`, and events for every drop and every flow policy
    /// newly allows, at a rate no test reaches.
    pub fn set_generation(&mut self, generation: u32) {
        let config = Config {
            generation,
            flags: datapath::CONFIG_EVENTS_ALLOWED,
            event_rate: 1_000_000,
            event_burst: 1_000_000,
            ..Config::default()
        };
        self.config.set(0, Plain(config), 0).expect("writing the config");
        self.generation = generation;
    }

    /// Replaces the maps' content with `slots[0]` in generation slot 0 and `slots[1]` in
    /// slot 1, as the runtime lays out an update: every address prefix and policy key of
    /// either artifact, each slot holding its own artifact's answer for it. Conntrack and
    /// fragment state is cleared and no endpoint stays bound.
    pub fn load_artifacts(&mut self, slots: [&Artifact; 2]) {
        self.clear_artifacts();
        self.clear_flows();

        let prefixes: BTreeSet<IpcacheKey> =
            slots.iter().flat_map(|a| a.ipcache.iter().map(|(k, _)| *k)).collect();
        for prefix in prefixes {
            let value = Plain(IpcacheValue { identity: slots.map(|a| identity_of(a, &prefix)) });
            if let Some(host) = HostKey::of_prefix(&prefix) {
                self.hosts.insert(Plain(host), value, 0).expect("writing hosts");
                self.written_hosts.insert(host);
            } else {
                self.ipcache.insert(&lpm_key(&prefix), value, 0).expect("writing the ipcache");
                self.written_prefixes.insert(prefix);
            }
        }

        let keys: BTreeSet<PolicyKey> =
            slots.iter().flat_map(|a| a.policy.iter().map(|(k, _)| *k)).collect();
        for key in keys {
            let value = PolicyValue { slot: slots.map(|a| verdict_of(a, &key)) };
            self.policy.insert(Plain(key), Plain(value), 0).expect("writing policy");
            self.written_policy.insert(key);
        }

        self.slots = slots.map(|a| {
            a.endpoints
                .iter()
                .map(|e| {
                    let policy = EndpointPolicy {
                        endpoint_id: e.endpoint_id,
                        identity: e.identity,
                        ingress_table: e.ingress_table,
                        egress_table: e.egress_table,
                        ingress_port_bits: a.port_bits(e.ingress_table),
                        egress_port_bits: a.port_bits(e.egress_table),
                    };
                    (e.name.clone(), policy)
                })
                .collect()
        });
    }

    fn clear_artifacts(&mut self) {
        for host in std::mem::take(&mut self.written_hosts) {
            self.hosts.remove(&Plain(host)).expect("deleting a host");
        }
        for prefix in std::mem::take(&mut self.written_prefixes) {
            self.ipcache.remove(&lpm_key(&prefix)).expect("deleting a prefix");
        }
        for key in std::mem::take(&mut self.written_policy) {
            self.policy.remove(&Plain(key)).expect("deleting a policy key");
        }
        for ifindex in std::mem::take(&mut self.written_endpoints) {
            self.set_endpoint(ifindex, None);
        }
    }

    /// Deletes every conntrack and fragment entry.
    pub fn clear_flows(&mut self) {
        let keys: Vec<Plain<CtKey>> =
            self.ct.keys().map(|k| k.expect("listing conntrack")).collect();
        for key in keys {
            let _ = self.ct.remove(&key);
        }
        let keys: Vec<Plain<FragKey>> =
            self.frags.keys().map(|k| k.expect("listing frags")).collect();
        for key in keys {
            let _ = self.frags.remove(&key);
        }
    }

    /// Binds the endpoint named `name` in the loaded artifacts to [`LOOPBACK`], each slot
    /// from its own artifact (unbound where that one has no such endpoint), and returns
    /// the live slot's policy. `None` removes the binding.
    pub fn bind(&mut self, name: Option<&str>) -> Option<EndpointPolicy> {
        let live = |slots: &[BTreeMap<String, EndpointPolicy>; 2], generation: u32| {
            name.and_then(|n| slots[datapath::slot_of(generation)].get(n).copied())
        };
        if self.bound.as_ref().is_none_or(|b| b.as_deref() != name) {
            let slots =
                name.map(|n| self.slots.each_ref().map(|s| s.get(n).copied().unwrap_or_default()));
            self.bind_slots(slots);
            self.bound = Some(name.map(str::to_owned));
        }
        live(&self.slots, self.generation)
    }

    /// Writes the endpoint entry at [`LOOPBACK`] as given, both slots; `None` deletes it.
    pub fn bind_slots(&mut self, slots: Option<[EndpointPolicy; 2]>) {
        let info = slots.map(|slot| EndpointInfo { slot, metrics_row: ROW, flags: 0 });
        self.set_endpoint(LOOPBACK, info);
    }

    /// Writes the hosts entry of `ip` with `identity` per generation slot, as the node
    /// runtime writes its own node's addresses (the host identity) over the artifact's.
    pub fn set_host(&mut self, ip: std::net::IpAddr, identity: [u32; 2]) {
        let (family, addr) = super::packet::address(ip);
        let host = HostKey { family, pad: [0; 3], addr };
        self.hosts.insert(Plain(host), Plain(IpcacheValue { identity }), 0).expect("writing hosts");
        self.written_hosts.insert(host);
    }

    /// Writes the endpoint entry of interface `ifindex`; `None` deletes it.
    pub fn set_endpoint(&mut self, ifindex: u32, info: Option<EndpointInfo>) {
        self.bound = None;
        match info {
            Some(info) => {
                self.endpoints.insert(ifindex, Plain(info), 0).expect("writing an endpoint");
                self.written_endpoints.insert(ifindex);
            }
            None => {
                let _ = self.endpoints.remove(&ifindex);
            }
        }
    }

    /// Runs one frame through `hook` on the loopback device.
    pub fn run(&mut self, hook: Hook, frame: &[u8]) -> Outcome {
        self.run_with(hook, frame, None, ROW).unwrap_or_else(|e| panic!("test run failed: {e:?}"))
    }

    /// Runs one frame with an explicit `struct __sk_buff` context; `row` is the metrics
    /// row where the decision must be counted.
    pub fn run_with(
        &mut self,
        hook: Hook,
        frame: &[u8],
        ctx: Option<&[u8]>,
        row: u32,
    ) -> Result<Outcome, ProgramError> {
        let program: &SchedClassifier =
            self.ebpf.program(hook.program()).and_then(|p| p.try_into().ok()).expect("loaded");
        let options = TestRunOptions { data_in: Some(frame), ctx_in: ctx, ..Default::default() };
        let result = program.test_run(options)?;

        let mut events = Vec::new();
        while let Some(item) = self.events.next() {
            events.push(Event::from_bytes(&item).expect("an event record"));
        }
        let reason = self.moved_reason(row, frame.len());
        Ok(Outcome { action: result.return_value, reason, events })
    }

    /// The one reason counter of `row` that moved since the last read, by one packet of
    /// `len` bytes.
    fn moved_reason(&mut self, row: u32, len: usize) -> Result<Reason, String> {
        let mut moved = Vec::new();
        for reason in Reason::ALL {
            let index = metrics_index(row, reason);
            let values = self.metrics.get(&index, 0).expect("reading a metrics counter");
            let now = values.iter().fold(MetricsValue::default(), |sum, v| MetricsValue {
                packets: sum.packets + v.0.packets,
                bytes: sum.bytes + v.0.bytes,
            });
            let before = self.counters.insert(index, now).unwrap_or_default();
            if now != before {
                moved.push((reason, now.packets - before.packets, now.bytes - before.bytes));
            }
        }
        match moved.as_slice() {
            [(reason, 1, bytes)] if *bytes == len as u64 => Ok(*reason),
            _ => Err(format!("metrics row {row} moved by {moved:?}")),
        }
    }

    /// Removes the conntrack entry at `key` and returns it, if there was one.
    pub fn take_ct(&mut self, key: &CtKey) -> Option<CtValue> {
        let value = self.ct.get(&Plain(*key), 0).ok()?.0;
        self.ct.remove(&Plain(*key)).expect("deleting a conntrack entry");
        Some(value)
    }

    /// The conntrack entry at `key`, left in place.
    pub fn ct_entry(&self, key: &CtKey) -> Option<CtValue> {
        self.ct.get(&Plain(*key), 0).ok().map(|v| v.0)
    }

    /// Every fragment entry.
    pub fn frag_entries(&self) -> Vec<(FragKey, FragValue)> {
        self.frags.iter().map(|e| e.map(|(k, v)| (k.0, v.0)).expect("listing frags")).collect()
    }
}

/// A `struct __sk_buff` for the context of a test run, with the two fields the tests set
/// (offsets from `<linux/bpf.h>`); the kernel refuses any other nonzero field.
pub fn skb_context(ifindex: u32, gso_size: u32) -> [u8; 192] {
    const IFINDEX: usize = 40;
    const GSO_SIZE: usize = 176;
    let mut ctx = [0u8; 192];
    ctx[IFINDEX..IFINDEX + 4].copy_from_slice(&ifindex.to_ne_bytes());
    ctx[GSO_SIZE..GSO_SIZE + 4].copy_from_slice(&gso_size.to_ne_bytes());
    ctx
}

/// The identity `artifact` gives the addresses of `prefix`: its longest prefix that covers
/// all of `prefix` (`prefix` itself when the artifact has it), else the world.
fn identity_of(artifact: &Artifact, prefix: &IpcacheKey) -> u32 {
    artifact
        .ipcache
        .iter()
        .filter(|(k, _)| {
            k.family == prefix.family
                && k.prefix_bits() <= prefix.prefix_bits()
                && IpcacheKey::new(k.family, prefix.addr, k.prefix_bits()).addr == k.addr
        })
        .max_by_key(|(k, _)| k.prefixlen)
        .map_or(IDENTITY_WORLD, |(_, identity)| *identity)
}

fn verdict_of(artifact: &Artifact, key: &PolicyKey) -> PolicyVerdict {
    match artifact.policy.binary_search_by(|(k, _)| k.cmp(key)) {
        Ok(i) => artifact.policy[i].1,
        Err(_) => PolicyVerdict { verdict: VERDICT_NONE, ..PolicyVerdict::default() },
    }
}

/// aya's LPM key: the prefix length, then the bytes it counts (family, padding, address).
fn lpm_key(prefix: &IpcacheKey) -> Key<[u8; 20]> {
    let mut data = [0u8; 20];
    data[0] = prefix.family;
    data[4..].copy_from_slice(&prefix.addr);
    Key::new(prefix.prefixlen, data)
}
