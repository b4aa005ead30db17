//! The committed datapath object loaded into the running kernel: its maps pinned in a
//! directory of this process and opened again through the runtime's
//! [`KernelMaps`], the map seam every plan operation goes through; both programs loaded
//! (never attached) and run on frames with `BPF_PROG_TEST_RUN`.
//!
//! A test run's skb carries the loopback device (ifindex 1) when its context names no
//! device, so the endpoint under test is the one the states bind at [`LOOPBACK`].

use std::collections::BTreeMap;

use aya::maps::{MapData, RingBuf};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use aya::{Ebpf, EbpfLoader};
use datapath::{
    CONFIG_EVENTS_ALLOWED, Config, CtKey, CtValue, Event, MetricsValue, Reason, capacity,
    map_names, program_names,
};
use runtime::kernel::KernelMaps;
use runtime::pins::PinDir;
use runtime::plan::{self, MapOp, Plan};
use runtime::spec::ObjectSpec;
use runtime::{LiveMaps, MapBackend, MapEntry, MapKey, MapName, MapState};

use super::packet::Packet;

/// The ifindex of the skb of a test run whose context names no device: loopback.
pub const LOOPBACK: u32 = 1;
/// tc's verdicts (`<linux/pkt_cls.h>`).
const TC_ACT_OK: u32 = 0;
const TC_ACT_SHOT: u32 = 2;

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

    /// The direction of the packets the program sees (`DIR_*`), as conntrack keys them.
    pub fn direction(self) -> u8 {
        match self {
            Hook::FromEndpoint => datapath::DIR_EGRESS,
            Hook::ToEndpoint => datapath::DIR_INGRESS,
        }
    }

    pub fn opposite(self) -> Hook {
        match self {
            Hook::FromEndpoint => Hook::ToEndpoint,
            Hook::ToEndpoint => Hook::FromEndpoint,
        }
    }
}

/// What one test run decided, as the checks compare it: the return code, the reason whose
/// counter moved, and the verdict event with its timestamp and generation zeroed (the
/// generation is checked against the live one when the event is read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub action: u32,
    pub reason: Reason,
    pub event: Option<Event>,
}

impl Verdict {
    /// A pass that sends no event: conntrack's, or an unenforced direction's.
    pub fn quiet(reason: Reason) -> Verdict {
        Verdict { action: TC_ACT_OK, reason, event: None }
    }

    /// `POLICYC_PASS_POLICY rule 7`, for reports.
    pub fn describe(&self) -> String {
        match self.event {
            Some(e) if e.rule != 0 => format!("{} rule {}", self.reason.c_name(), e.rule),
            _ => self.reason.c_name().to_owned(),
        }
    }
}

/// The loaded datapath and what the test keeps about it.
pub struct Harness {
    ebpf: Ebpf,
    events: RingBuf<MapData>,
    /// The maps as the runtime opens them: every plan operation goes through here.
    pub maps: KernelMaps,
    /// What a flip writes besides the generation: events for drops and new flows, at a
    /// rate no test reaches.
    config: Config,
    /// Per metrics row, its counters as last read.
    counters: BTreeMap<u32, Vec<(Reason, MetricsValue)>>,
    /// Test runs made.
    pub runs: usize,
    // Last: the maps are closed before their pins go (either order works).
    _pins: super::pins::PinDir,
}

impl std::fmt::Debug for Harness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Harness").field("runs", &self.runs).finish_non_exhaustive()
    }
}

impl Harness {
    /// Loads the object with its maps pinned under a directory named by the process id
    /// and `tag` (one per test: tests run in parallel), loads both programs, and opens
    /// the pinned maps with the runtime's layout checks.
    pub fn load(tag: &str) -> Harness {
        let pins = super::pins::PinDir::create("policyc-kernel-plan", tag);
        let mut ebpf = EbpfLoader::default()
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
        let events = ebpf
            .take_map(map_names::EVENTS)
            .and_then(|m| m.try_into().ok())
            .expect("the events map is a ring buffer");
        let spec = ObjectSpec::embedded().expect("the embedded object's map declarations");
        let maps = KernelMaps::open(&PinDir::new(&pins.0), &spec)
            .unwrap_or_else(|e| panic!("opening the pinned maps: {e}"));
        let config = Config {
            flags: CONFIG_EVENTS_ALLOWED,
            event_rate: 1_000_000,
            event_burst: 1_000_000,
            ..Config::default()
        };
        let mut harness =
            Harness { ebpf, events, maps, config, counters: BTreeMap::new(), runs: 0, _pins: pins };
        harness.maps.set_config(&config).expect("writing the config");
        harness
    }

    /// The live generation.
    pub fn generation(&self) -> u32 {
        self.maps.config().expect("reading the config").generation
    }

    /// What the maps hold now.
    pub fn live(&self) -> LiveMaps {
        LiveMaps::read(&self.maps).unwrap_or_else(|e| panic!("reading the live maps: {e}"))
    }

    /// The plan from the live maps to `state`.
    pub fn plan(&self, state: &MapState) -> Plan {
        Plan::new(&self.live(), state).unwrap_or_else(|e| panic!("planning: {e}"))
    }

    /// Runs one operation of a plan, as `Plan::switch` and `Plan::settle` do.
    pub fn op(&mut self, op: MapOp) {
        plan::run(&mut self.maps, op, &self.config)
            .unwrap_or_else(|e| panic!("running {op:?}: {e}"));
        if let MapOp::ResetMetrics(row) = op {
            // Zeroed: its counters are read afresh before the next run counted there.
            self.counters.remove(&row);
        }
    }

    /// Applies `state` completely, without looking at packets on the way.
    pub fn settle(&mut self, state: &MapState) {
        let plan = self.plan(state);
        for op in plan.ops() {
            self.op(op);
        }
    }

    /// Runs one frame through `hook` on the loopback device. An error describes a run
    /// whose return code, counters and events do not tell one consistent reason.
    pub fn run(&mut self, hook: Hook, frame: &[u8]) -> Result<Verdict, String> {
        let generation = self.generation();
        // The datapath counts in the row of the interface's entry, whatever its live slot
        // says (row 0 when there is no entry).
        let row = match self.maps.get(&MapKey::Endpoint(LOOPBACK)) {
            Ok(Some(MapEntry::Endpoint(_, info))) if info.metrics_row < capacity::ENDPOINTS => {
                info.metrics_row
            }
            Ok(_) => 0,
            Err(e) => return Err(format!("reading the endpoint entry: {e}")),
        };
        let before = match self.counters.remove(&row) {
            Some(counters) => counters,
            None => self.maps.metrics(row).map_err(|e| e.to_string())?,
        };

        let program: &SchedClassifier =
            self.ebpf.program(hook.program()).and_then(|p| p.try_into().ok()).expect("loaded");
        let options = TestRunOptions { data_in: Some(frame), ..Default::default() };
        let result = program.test_run(options).map_err(|e| format!("test run: {e:?}"))?;
        self.runs += 1;
        let mut events = Vec::new();
        while let Some(item) = self.events.next() {
            events.push(Event::from_bytes(&item).ok_or("a short event record")?);
        }
        let after = self.maps.metrics(row).map_err(|e| e.to_string())?;
        let moved: Vec<(Reason, u64, u64)> = before
            .iter()
            .zip(&after)
            .filter(|(b, a)| b != a)
            .map(|((reason, b), (_, a))| {
                (*reason, a.packets.wrapping_sub(b.packets), a.bytes.wrapping_sub(b.bytes))
            })
            .collect();
        self.counters.insert(row, after);

        let reason = match moved.as_slice() {
            [(reason, 1, bytes)] if *bytes == frame.len() as u64 => *reason,
            _ => return Err(format!("metrics row {row} moved by {moved:?}")),
        };
        let action = if reason.is_drop() { TC_ACT_SHOT } else { TC_ACT_OK };
        if result.return_value != action {
            return Err(format!(
                "returned {} with reason {}",
                result.return_value,
                reason.c_name()
            ));
        }
        let evented = reason.is_drop() || reason == Reason::PassPolicy;
        let event = match (evented, events.as_slice()) {
            (false, []) => None,
            (true, [e]) if e.reason == reason.code() && e.generation == generation => {
                Some(Event { timestamp_ns: 0, generation: 0, ..*e })
            }
            (_, events) => {
                return Err(format!(
                    "{} in generation {generation} with events {events:?}",
                    reason.c_name()
                ));
            }
        };
        Ok(Verdict { action, reason, event })
    }

    /// Deletes every conntrack entry. Listing the map walks all of its buckets, so the
    /// checks forget each packet's own entries instead ([`Harness::forget`]).
    pub fn clear_conntrack(&mut self) {
        let keys = self.maps.keys(MapName::Conntrack).expect("listing conntrack");
        for key in keys {
            self.maps.delete(&key).expect("deleting a conntrack entry");
        }
    }

    /// Whether conntrack holds no entry.
    pub fn conntrack_is_empty(&self) -> bool {
        self.maps.len(MapName::Conntrack).expect("counting conntrack") == 0
    }

    /// Deletes the entry `packet`, run through `hook`, can have opened, so that the next
    /// packet is judged by policy.
    pub fn forget(&mut self, hook: Hook, packet: &Packet) {
        let key = MapKey::Conntrack(packet.ct_key(LOOPBACK, hook.direction()));
        self.maps.delete(&key).expect("deleting a conntrack entry");
    }

    /// The conntrack entry at `key`.
    pub fn conntrack(&self, key: CtKey) -> Option<CtValue> {
        match self.maps.get(&MapKey::Conntrack(key)).expect("reading conntrack") {
            Some(MapEntry::Conntrack(_, value)) => Some(value),
            _ => None,
        }
    }

    /// Writes conntrack entries.
    pub fn put_conntrack(&mut self, entries: &[(CtKey, CtValue)]) {
        for (key, value) in entries {
            self.maps.update(&MapEntry::Conntrack(*key, *value)).expect("writing conntrack");
        }
    }

    /// Deletes conntrack entries.
    pub fn delete_conntrack(&mut self, entries: &[(CtKey, CtValue)]) {
        for (key, _) in entries {
            self.maps.delete(&MapKey::Conntrack(*key)).expect("deleting conntrack");
        }
    }
}
