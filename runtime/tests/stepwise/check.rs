//! The check of one case: what the kernel decides for each probe with the maps settled at
//! the old state and at the new one, then the plan from old to new run one operation at
//! a time with the probes run after every operation. The generation design promises
//! more than "old or new": every probe gets exactly the old state's verdict until the
//! flip and exactly the new state's from the flip on, so that is what is checked.
//!
//! The expected verdicts are the kernel's own, recorded with the maps settled (the
//! runtime's model of the datapath is private to its unit tests); where the states are
//! compiled, the caller holds those recordings against the compiler's reference and
//! table simulator.

use std::collections::BTreeMap;

use datapath::{CtKey, CtValue, Reason};
use runtime::plan::{MapOp, Plan};
use runtime::{LiveMaps, MapState};

use super::Rng;
use super::harness::{Harness, Hook, LOOPBACK, Verdict};
use super::packet::{L4, Packet};

/// One packet and the program it goes through at the endpoint under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probe {
    pub hook: Hook,
    pub packet: Packet,
}

impl Probe {
    /// `10.0.0.1:40000 -> 10.0.0.2:80 TCP SYN at egress`, for reports.
    pub fn describe(&self) -> String {
        let at = match self.hook {
            Hook::FromEndpoint => "egress",
            Hook::ToEndpoint => "ingress",
        };
        format!("{} at {at}", self.packet.describe())
    }

    /// The address the policy looks up: the destination of what the endpoint sends, the
    /// source of what it receives.
    pub fn peer(&self) -> std::net::IpAddr {
        match self.hook {
            Hook::FromEndpoint => self.packet.dst,
            Hook::ToEndpoint => self.packet.src,
        }
    }

    /// The address on the endpoint's side.
    pub fn local(&self) -> std::net::IpAddr {
        match self.hook {
            Hook::FromEndpoint => self.packet.src,
            Hook::ToEndpoint => self.packet.dst,
        }
    }
}

/// Two states of the maps and the packets that probe the update between them.
#[derive(Clone, Debug)]
pub struct Case {
    /// Names the case in reports, with what replays it.
    pub name: String,
    pub old: MapState,
    pub new: MapState,
    pub probes: Vec<Probe>,
}

/// How much of a case is checked.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Probes run after every operation (chosen from those recorded, most of them among
    /// the probes the two states judge differently).
    pub per_step: usize,
    /// Whether the plan back from new to old (which settles the maps at the old state
    /// before the checked update) is checked step by step too, the states' roles
    /// swapped.
    pub way_back: bool,
    /// Whether the update is interrupted at a random operation and planned again from
    /// the live maps.
    pub interrupt: bool,
}

/// What a case checked, summed over cases.
#[derive(Debug, Default)]
pub struct Stats {
    pub cases: usize,
    /// Plan operations after which the probes were run.
    pub ops: usize,
    /// Runs compared with an expected verdict after an operation.
    pub compared: usize,
    /// Of those, runs of a probe the two states judge differently.
    pub compared_differing: usize,
    /// Flips crossed while checking.
    pub flips: usize,
    /// Updates stopped part way and planned again from the live maps.
    pub interrupted: usize,
    /// Of those, stopped after the flip.
    pub interrupted_after_flip: usize,
    /// Cases with a flow established under the old state, checked after every step.
    pub established: usize,
    /// Of those, flows whose later packets the new state drops.
    pub established_dropped: usize,
    /// Of those, flows whose replies the new state judges by policy (another endpoint at
    /// the interface), not by the reply entry.
    pub established_rebound: usize,
    /// Recorded verdicts, by reason, both states.
    pub recorded: BTreeMap<&'static str, usize>,
    /// Runs compared after an operation, by family and protocol.
    pub kinds: BTreeMap<String, usize>,
}

impl Stats {
    /// One line per count, for the test's report.
    pub fn summary(&self) -> String {
        let mut out = format!(
            "  {} cases, {} operations checked ({} flips, {} interrupted updates, {} of them \
             after the flip)\n  {} verdicts compared after an operation, {} of probes the \
             states judge differently\n  {} established flows followed ({} then dropped by \
             the new state, {} replies judged by policy after a rebind)\n  recorded:",
            self.cases,
            self.ops,
            self.flips,
            self.interrupted,
            self.interrupted_after_flip,
            self.compared,
            self.compared_differing,
            self.established,
            self.established_dropped,
            self.established_rebound,
        );
        for (reason, n) in &self.recorded {
            out.push_str(&format!(" {reason} {n},"));
        }
        out.pop();
        out.push_str("\n  compared:");
        for (kind, n) in &self.kinds {
            out.push_str(&format!(" {kind} {n},"));
        }
        out.pop();
        out
    }
}

/// What the kernel decides for each probe with the maps settled at one state.
pub fn record(h: &mut Harness, state: &MapState, probes: &[Probe]) -> Result<Vec<Verdict>, String> {
    h.settle(state);
    h.clear_conntrack();
    probes.iter().map(|p| judge(h, p).map_err(|e| format!("{}: {e}", p.describe()))).collect()
}

/// Runs `probe` and deletes the entries it opened, so that the next one is judged by
/// policy too.
fn judge(h: &mut Harness, probe: &Probe) -> Result<Verdict, String> {
    let verdict = h.run(probe.hook, &probe.packet.frame());
    h.forget(probe.hook, &probe.packet);
    verdict
}

/// A flow the old state allowed, with the conntrack entry its first packet opened: a
/// later packet of it passes on the cached verdict until the flip, and is judged by the
/// new state's policy from the flip on; its reply passes on the entry throughout
/// (unless the interface is bound to another endpoint, whose entry this is not).
struct Established {
    next: Probe,
    reply: Probe,
    entries: Vec<(CtKey, CtValue)>,
    /// The new state's verdicts for `next` and `reply` judged by policy.
    new_next: Verdict,
    new_reply: Verdict,
    /// Whether the new state binds the same endpoint at the interface.
    same_endpoint: bool,
}

/// What the probes must get at each step.
struct Expected<'a> {
    /// Indices into `probes` of the probes run after every operation.
    selected: &'a [usize],
    probes: &'a [Probe],
    /// The verdicts of the state live before the flip, and after it.
    before: &'a [Verdict],
    after: &'a [Verdict],
    established: Option<&'a Established>,
}

/// Holds the recorded verdicts of the old state and of the new one against something
/// else than the kernel.
pub type Validate<'a> = dyn FnMut(&[Verdict], &[Verdict]) -> Result<(), String> + 'a;

/// Checks one case: records both states' verdicts, hands them to `validate` (the
/// reference check of compiled cases), then runs the update step by step.
pub fn run_case(
    h: &mut Harness,
    case: &Case,
    options: Options,
    rng: &mut Rng,
    stats: &mut Stats,
    validate: &mut Validate<'_>,
) -> Result<(), String> {
    let name = &case.name;
    let old = record(h, &case.old, &case.probes).map_err(|e| format!("{name}: old: {e}"))?;
    let new = record(h, &case.new, &case.probes).map_err(|e| format!("{name}: new: {e}"))?;
    for v in old.iter().chain(&new) {
        *stats.recorded.entry(v.reason.label()).or_default() += 1;
    }
    validate(&old, &new).map_err(|e| format!("{name}: {e}"))?;
    let selected = select(&old, &new, options.per_step, rng);

    // Settled at the new state: what it answers to the established flow's packets.
    let flow = pick_established(&case.probes, &old, &new, rng);
    let established = match flow {
        Some(i) => Some(establish_new(h, case, i, &new[i])?),
        None => None,
    };

    // Back to the old state, which is where the checked update starts.
    if options.way_back {
        let expected = Expected {
            selected: &selected,
            probes: &case.probes,
            before: &new,
            after: &old,
            established: None,
        };
        let plan = h.plan(&case.old);
        let ops: Vec<MapOp> = plan.ops().collect();
        step_through(h, &ops, false, &expected, stats)
            .map_err(|e| format!("{name}, on the way back from new to old: {e}"))?;
        settled_at(h, &case.old).map_err(|e| format!("{name}, back at old: {e}"))?;
    } else {
        h.settle(&case.old);
    }
    let established = match (established, flow) {
        (Some(mut e), Some(i)) => {
            establish_old(h, case, i, &old[i], &mut e).map_err(|e| format!("{name}: {e}"))?;
            stats.established += 1;
            stats.established_dropped += usize::from(e.new_next.reason.is_drop());
            stats.established_rebound += usize::from(!e.same_endpoint);
            Some(e)
        }
        _ => None,
    };

    let expected = Expected {
        selected: &selected,
        probes: &case.probes,
        before: &old,
        after: &new,
        established: established.as_ref(),
    };
    let plan = h.plan(&case.new);
    let ops: Vec<MapOp> = plan.ops().collect();
    let stop = (options.interrupt && !ops.is_empty()).then(|| rng.below(ops.len()));
    let Some(stop) = stop else {
        step_through(h, &ops, false, &expected, stats).map_err(|e| format!("{name}: {e}"))?;
        stats.cases += 1;
        return settled_at(h, &case.new).map_err(|e| format!("{name}: {e}"));
    };

    // Interrupted after operation `stop`: the next apply plans from what the maps hold.
    let flipped = step_through(h, &ops[..=stop], false, &expected, stats)
        .map_err(|e| format!("{name}, before the interruption: {e}"))?;
    let resumed =
        Plan::new(&h.live(), &case.new).map_err(|e| format!("{name}: replanning: {e}"))?;
    if flipped && (resumed.flip || !resumed.prepare.is_empty()) {
        return Err(format!(
            "{name}: interrupted after the flip (operation {} of {}), the resumed plan \
             prepares {} entries and flips: {}",
            stop + 1,
            ops.len(),
            resumed.prepare.len(),
            resumed.flip
        ));
    }
    let rest: Vec<MapOp> = resumed.ops().collect();
    step_through(h, &rest, flipped, &expected, stats).map_err(|e| {
        let at = stop + 1;
        format!("{name}, resumed after operation {at} of {} (flipped: {flipped}): {e}", ops.len())
    })?;
    stats.interrupted += 1;
    stats.interrupted_after_flip += usize::from(flipped);
    stats.cases += 1;
    settled_at(h, &case.new).map_err(|e| format!("{name}: {e}"))
}

/// Runs `ops` one at a time and, after each, every selected probe (and the established
/// flow's packets); `flipped` says whether the new state is live already. Returns whether
/// it is at the end.
fn step_through(
    h: &mut Harness,
    ops: &[MapOp],
    mut flipped: bool,
    expected: &Expected<'_>,
    stats: &mut Stats,
) -> Result<bool, String> {
    for (n, op) in ops.iter().enumerate() {
        h.op(*op);
        if matches!(op, MapOp::Flip(_)) {
            flipped = true;
            stats.flips += 1;
        }
        stats.ops += 1;
        let mut wrong = Vec::new();
        for &i in expected.selected {
            let probe = &expected.probes[i];
            let (before, after) = (&expected.before[i], &expected.after[i]);
            let want = if flipped { after } else { before };
            let got = judge(h, probe);
            stats.compared += 1;
            stats.compared_differing += usize::from(before != after);
            *stats.kinds.entry(kind(&probe.packet)).or_default() += 1;
            if got.as_ref() != Ok(want) {
                wrong.push(format!(
                    "  {}: kernel {}, expected {} (before the flip {}, after it {}){}",
                    probe.describe(),
                    got.as_ref().map_or_else(|e| e.clone(), Verdict::describe),
                    want.describe(),
                    before.describe(),
                    after.describe(),
                    event_difference(&got, want),
                ));
            }
        }
        if let Some(e) = expected.established {
            check_established(h, e, flipped, &mut wrong);
        }
        if !wrong.is_empty() {
            return Err(format!(
                "after operation {} of {} ({op:?}; {} the flip), in generation {}:\n{}",
                n + 1,
                ops.len(),
                if flipped { "after" } else { "before" },
                h.generation(),
                wrong.join("\n")
            ));
        }
    }
    if !h.conntrack_is_empty() {
        return Err("the probes left conntrack entries behind".into());
    }
    Ok(flipped)
}

/// The established flow's next packet and reply, each with the entry as opened.
fn check_established(h: &mut Harness, e: &Established, flipped: bool, wrong: &mut Vec<String>) {
    let next = if flipped { e.new_next } else { Verdict::quiet(Reason::PassEstablished) };
    let reply =
        if flipped && !e.same_endpoint { e.new_reply } else { Verdict::quiet(Reason::PassReply) };
    for (probe, want, what) in [(&e.next, next, "established"), (&e.reply, reply, "reply")] {
        h.put_conntrack(&e.entries);
        let got = judge(h, probe);
        h.delete_conntrack(&e.entries);
        if got.as_ref() != Ok(&want) {
            wrong.push(format!(
                "  {what} {}: kernel {}, expected {}{}",
                probe.describe(),
                got.as_ref().map_or_else(|e| e.clone(), Verdict::describe),
                want.describe(),
                event_difference(&got, &want),
            ));
        }
    }
}

/// `IPv6 UDP`: how compared runs are counted.
fn kind(packet: &Packet) -> String {
    let family = if packet.src.is_ipv4() { "IPv4" } else { "IPv6" };
    let proto = match packet.l4 {
        L4::Tcp { .. } => "TCP",
        L4::Udp { .. } => "UDP",
        L4::Sctp { .. } => "SCTP",
        L4::Icmp { .. } => "ICMP",
        L4::Other(_) => "no ports",
    };
    format!("{family} {proto}")
}

/// The events of two verdicts of one reason, when only they differ.
fn event_difference(got: &Result<Verdict, String>, want: &Verdict) -> String {
    match got {
        Ok(got) if got.reason == want.reason && got.event != want.event => {
            format!("\n    event {:?}\n    expected {:?}", got.event, want.event)
        }
        _ => String::new(),
    }
}

/// Up to `n` probe indices: two thirds among those the states judge differently (they
/// are the ones a misordered write shows in), the rest among those judged alike (which
/// must never change), in random order.
fn select(old: &[Verdict], new: &[Verdict], n: usize, rng: &mut Rng) -> Vec<usize> {
    let (mut differ, mut alike): (Vec<usize>, Vec<usize>) =
        (0..old.len()).partition(|&i| old[i] != new[i]);
    rng.shuffle(&mut differ);
    rng.shuffle(&mut alike);
    let mut selected: Vec<usize> = differ.iter().copied().take(n * 2 / 3).collect();
    let room = n - selected.len();
    selected.extend(alike.iter().copied().take(room));
    let room = n - selected.len();
    selected.extend(differ.iter().copied().skip(n * 2 / 3).take(room));
    selected.sort_unstable();
    selected
}

/// A probe with ports the old state allows by policy, preferably one the new state drops,
/// else one it judges otherwise, and TCP before the others (whose entries expire after a
/// minute, not hours: still far longer than a case takes).
fn pick_established(
    probes: &[Probe],
    old: &[Verdict],
    new: &[Verdict],
    rng: &mut Rng,
) -> Option<usize> {
    let mut allowed: Vec<usize> = (0..probes.len())
        .filter(|&i| old[i].reason == Reason::PassPolicy)
        .filter(|&i| !matches!(probes[i].packet.l4, L4::Icmp { .. } | L4::Other(_)))
        .collect();
    rng.shuffle(&mut allowed);
    let tcp = |i: usize| matches!(probes[i].packet.l4, L4::Tcp { .. });
    allowed.sort_by_key(|&i| (!new[i].reason.is_drop(), new[i] == old[i], !tcp(i)));
    allowed.first().copied()
}

/// Settled at the new state: records what it answers to the flow's reply judged by
/// policy. The entries are filled in by [`establish_old`].
fn establish_new(
    h: &mut Harness,
    case: &Case,
    i: usize,
    new_verdict: &Verdict,
) -> Result<Established, String> {
    let probe = case.probes[i];
    let next = Probe { packet: probe.packet.next(), ..probe };
    let reply = Probe { hook: probe.hook.opposite(), packet: probe.packet.reply() };
    let new_reply = judge(h, &reply).map_err(|e| format!("{}: new: {e}", case.name))?;
    let id = |state: &MapState| state.endpoints.get(&LOOPBACK).map(|e| e.endpoint_id);
    Ok(Established {
        next,
        reply,
        entries: Vec::new(),
        new_next: *new_verdict,
        new_reply,
        same_endpoint: id(&case.old) == id(&case.new),
    })
}

/// Settled at the old state: opens the flow and keeps the entry its packet opened.
fn establish_old(
    h: &mut Harness,
    case: &Case,
    i: usize,
    old_verdict: &Verdict,
    e: &mut Established,
) -> Result<(), String> {
    let probe = case.probes[i];
    let got = h.run(probe.hook, &probe.packet.frame())?;
    if got != *old_verdict {
        return Err(format!(
            "opening {}: kernel {}, recorded {}",
            probe.describe(),
            got.describe(),
            old_verdict.describe()
        ));
    }
    let id = case.old.endpoints.get(&LOOPBACK).map_or(0, |e| e.endpoint_id);
    let key = probe.packet.ct_key(LOOPBACK, probe.hook.direction());
    let value = h.conntrack(key).ok_or_else(|| format!("{} opened no entry", probe.describe()))?;
    if (value.endpoint_id, value.direction) != (id, probe.hook.direction()) {
        return Err(format!("{} opened {value:?}, not endpoint {id}'s", probe.describe()));
    }
    e.entries.push((key, value));
    h.delete_conntrack(&e.entries);
    Ok(())
}

/// The maps hold `state` in both slots and a new plan to it does nothing.
fn settled_at(h: &Harness, state: &MapState) -> Result<(), String> {
    let live: LiveMaps = h.live();
    if live.live_view() != *state {
        return Err("the plan did not end at its state".into());
    }
    if live.view(0) != live.view(1) {
        return Err("the plan left the two slots different".into());
    }
    let again = h.plan(state);
    if !again.is_empty() {
        return Err(format!("a second plan to the same state is not empty: {again:?}"));
    }
    Ok(())
}
