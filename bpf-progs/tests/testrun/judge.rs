//! The differential check of one flow. At each end that is an endpoint, the packet goes
//! through the program of that direction with the endpoint bound, and the kernel's
//! decision is held against the reference evaluator (decision and deciding rule, by name)
//! and the table simulator (the exact rule cookie). Where the packet passed, its reply
//! goes through the other program of the same endpoint and its next packet through the
//! same one, and the conntrack entries it opened are checked and removed, so that no flow
//! ever sees another's state.

use std::collections::BTreeMap;

use compiler::artifact::Artifact;
use compiler::reference::{Address, Flow, Reference};
use compiler::simulate::{self, Decision};
use datapath::{DIR_EGRESS, DIR_INGRESS, EndpointPolicy, Event, RULE_NONE, Reason};
use policy_lang::ast::Direction;

use super::kernel::{Hook, Kernel, LOOPBACK, Outcome, ROW};
use super::packet::{self, Packet};

/// The artifact live in the kernel's current generation, and the reference evaluator
/// over the same inputs.
#[derive(Debug)]
pub struct Live<'a> {
    /// Names the scenario in reports.
    pub name: &'a str,
    pub artifact: &'a Artifact,
    pub reference: &'a Reference<'a>,
}

/// Runs counted by kind, and every mismatch found, one line each.
#[derive(Debug, Default)]
pub struct Tally {
    counts: BTreeMap<String, usize>,
    mismatches: Vec<String>,
}

impl Tally {
    pub fn count(&mut self, kind: impl Into<String>) {
        *self.counts.entry(kind.into()).or_default() += 1;
    }

    pub fn fail(&mut self, line: String) {
        self.mismatches.push(line);
    }

    /// Test runs made, over every kind of packet.
    pub fn runs(&self) -> usize {
        self.counts.iter().filter(|(k, _)| !k.starts_with('(')).map(|(_, n)| n).sum()
    }

    /// One line per kind: `IPv4 TCP egress: 1234`.
    pub fn summary(&self) -> String {
        self.counts.iter().map(|(k, n)| format!("  {k}: {n}\n")).collect()
    }

    /// Adds the runs counted in `other` to these.
    pub fn add_counts(&mut self, other: &Tally) {
        for (kind, n) in &other.counts {
            *self.counts.entry(kind.clone()).or_default() += n;
        }
    }

    /// Every mismatch (the first 200) and what ran, or `Ok` when there is none.
    pub fn check(&self, what: &str) -> Result<(), String> {
        if self.mismatches.is_empty() {
            return Ok(());
        }
        Err(format!(
            "{what}: {} mismatches in {} test runs:\n{}\n\nruns:\n{}",
            self.mismatches.len(),
            self.runs(),
            self.mismatches.iter().take(200).cloned().collect::<Vec<_>>().join("\n"),
            self.summary()
        ))
    }

    /// Fails the test with [`Tally::check`]'s report.
    pub fn assert_clean(&self, what: &str) {
        if let Err(report) = self.check(what) {
            panic!("{report}");
        }
    }
}

/// Checks `packet`, the first packet of a new flow, at both of its ends; `follow` also
/// checks its reply and next packet where it passed. Returns whether the kernel lets the
/// flow through both ends (an end that is no endpoint lets everything through).
pub fn check_flow(
    kernel: &mut Kernel,
    live: &Live<'_>,
    packet: &Packet,
    follow: bool,
    tally: &mut Tally,
) -> bool {
    // Both ends run, whatever the first says: each is a check of its own.
    let egress = check_end(kernel, live, packet, Direction::Egress, follow, tally);
    let ingress = check_end(kernel, live, packet, Direction::Ingress, follow, tally);
    egress.unwrap_or(true) && ingress.unwrap_or(true)
}

/// One end of a flow; `None` when that end is no endpoint.
fn check_end(
    kernel: &mut Kernel,
    live: &Live<'_>,
    packet: &Packet,
    direction: Direction,
    follow: bool,
    tally: &mut Tally,
) -> Option<bool> {
    let (at, peer, hook, other_hook) = match direction {
        Direction::Egress => (packet.src, packet.dst, Hook::FromEndpoint, Hook::ToEndpoint),
        Direction::Ingress => (packet.dst, packet.src, Hook::ToEndpoint, Hook::FromEndpoint),
    };
    let subject = live.reference.endpoint_at(Address::Ip(at))?;
    let place = place(live, packet, direction, &subject.name);
    let Some((eps, decision)) =
        judge_frame(kernel, live, packet, &packet.frame(), direction, tally)
    else {
        // Reported; what the run left in conntrack must not reach the next flow.
        if let Some(eps) = kernel.bind(Some(&subject.name)) {
            let _ = take_flow(kernel, packet, &eps, direction, None);
        }
        return Some(false);
    };

    // A flow is tracked where policy allowed it, and where this direction is open but the
    // other is isolated, so that the replies get through that one.
    let other_table =
        if direction == Direction::Ingress { eps.egress_table } else { eps.ingress_table };
    let tracked = matches!(decision, Decision::Allowed(_))
        || (decision == Decision::NotEnforced && other_table != 0);
    let untracked = Reason::PassNotEnforced;
    if follow && decision.passes() {
        let reply = packet.reply();
        let expected = if tracked { Reason::PassReply } else { untracked };
        let outcome = kernel.run(other_hook, &reply.frame());
        expect(&outcome, expected, &format!("{place}: reply"), tally);
        tally.count(kind(packet, "reply"));
        let against = live.reference.decide(
            subject,
            opposite(direction),
            Address::Ip(peer),
            reply.proto(),
            reply.port(),
        );
        if tracked && !against.passes() {
            tally.count("(replies that the reverse direction's policy refuses)");
        }

        let expected = if tracked { Reason::PassEstablished } else { untracked };
        let outcome = kernel.run(hook, &packet.next().frame());
        expect(&outcome, expected, &format!("{place}: next packet"), tally);
        tally.count(kind(packet, "established"));
    }

    let rule = match decision {
        Decision::Allowed(cookie) => cookie,
        _ => RULE_NONE,
    };
    if let Err(e) = take_flow(kernel, packet, &eps, direction, tracked.then_some(rule)) {
        tally.fail(format!("{place}: conntrack: {e}"));
    }
    Some(decision.passes())
}

/// Runs `frame`, one rendering of `packet`, at the end of `direction` with its endpoint
/// bound, and checks the kernel's decision against the reference and the simulator, and
/// its event against the packet. `None` when that end is no endpoint or the run did not
/// reach a policy decision (reported).
pub fn judge_frame(
    kernel: &mut Kernel,
    live: &Live<'_>,
    packet: &Packet,
    frame: &[u8],
    direction: Direction,
    tally: &mut Tally,
) -> Option<(EndpointPolicy, Decision)> {
    let (at, peer, hook) = match direction {
        Direction::Egress => (packet.src, packet.dst, Hook::FromEndpoint),
        Direction::Ingress => (packet.dst, packet.src, Hook::ToEndpoint),
    };
    let subject = live.reference.endpoint_at(Address::Ip(at))?;
    let place = place(live, packet, direction, &subject.name);
    let (Some(record), Some(eps)) =
        (live.artifact.endpoint(&subject.name), kernel.bind(Some(&subject.name)))
    else {
        tally.fail(format!("{place}: the artifact has no such endpoint"));
        return None;
    };

    let outcome = kernel.run(hook, frame);
    tally.count(kind(packet, direction_name(direction)));
    let decision = match decision_of(&outcome) {
        Ok(decision) => decision,
        Err(e) => {
            tally.fail(format!("{place}: {e}"));
            return None;
        }
    };
    tally.count(match decision {
        Decision::NotEnforced => "(decided: not enforced)",
        Decision::Allowed(_) => "(decided: allowed by a policy entry)",
        Decision::Denied(_) => "(decided: denied by a policy entry)",
        Decision::NoMatch => "(decided: no entry, default deny)",
    });
    if matches!(decision, Decision::Allowed(_)) && is_icmp(packet) {
        tally.count("(decided: ICMP allowed by a policy entry)");
    }
    let flow = Flow {
        src: Address::Ip(packet.src),
        dst: Address::Ip(packet.dst),
        proto: packet.proto(),
        port: packet.port(),
    };
    if let Err(e) =
        crate::support::same_decision(live.artifact, live.reference, &flow, direction, decision)
    {
        tally.fail(format!("{place}: kernel and reference differ: {e}"));
    }
    let ingress = direction == Direction::Ingress;
    let simulated =
        simulate::decide(live.artifact, record, ingress, peer, packet.proto(), packet.port());
    if simulated != decision {
        tally.fail(format!("{place}: kernel {decision:?}, simulator {simulated:?}"));
    }
    if let Some(event) = outcome.events.first() {
        let identity = simulate::identity_of(live.artifact, peer);
        let expected = EventFacts { eps, direction, generation: kernel.generation(), identity };
        if let Err(e) = check_event(event, packet, frame.len(), &expected) {
            tally.fail(format!("{place}: event: {e}"));
        }
        // The key the event names as deciding holds the verdict that decided.
        if let Decision::Allowed(rule) | Decision::Denied(rule) = decision {
            let found = live.artifact.policy.iter().find(|(k, _)| *k == event.entry);
            if found.is_none_or(|(_, v)| v.rule != rule) {
                tally.fail(format!(
                    "{place}: event names key {:?}, not one of rule {rule}",
                    event.entry
                ));
            }
        }
    }
    Some((eps, decision))
}

/// Checks `frame`, a rendering of `packet` other than [`Packet::frame`], at one end: the
/// decision as [`judge_frame`] does, and the conntrack entries it opened, which it removes.
pub fn check_frame(
    kernel: &mut Kernel,
    live: &Live<'_>,
    packet: &Packet,
    frame: &[u8],
    direction: Direction,
    tally: &mut Tally,
) -> Option<Decision> {
    let (eps, decision) = judge_frame(kernel, live, packet, frame, direction, tally)?;
    let other_table =
        if direction == Direction::Ingress { eps.egress_table } else { eps.ingress_table };
    let rule = match decision {
        Decision::Allowed(cookie) => Some(cookie),
        Decision::NotEnforced if other_table != 0 => Some(RULE_NONE),
        _ => None,
    };
    if let Err(e) = take_flow(kernel, packet, &eps, direction, rule) {
        tally.fail(format!("{}: conntrack: {e}", place(live, packet, direction, "it")));
    }
    Some(decision)
}

fn place(live: &Live<'_>, packet: &Packet, direction: Direction, subject: &str) -> String {
    format!("{}: {} at {} of {subject}", live.name, packet.describe(), direction_name(direction))
}

/// What the datapath's policy step decided, in the simulator's terms; an error for a run
/// that did not reach policy or whose reason, return code and events disagree.
pub fn decision_of(outcome: &Outcome) -> Result<Decision, String> {
    let reason = outcome.checked_reason()?;
    let rule = outcome.rule().unwrap_or(RULE_NONE);
    match reason {
        Reason::PassNotEnforced => Ok(Decision::NotEnforced),
        Reason::PassPolicy => Ok(Decision::Allowed(rule)),
        Reason::DropPolicyDeny => Ok(Decision::Denied(rule)),
        Reason::DropNoPolicy => Ok(Decision::NoMatch),
        other => Err(format!("{} where policy should decide", other.c_name())),
    }
}

/// Records a mismatch unless `outcome` has the reason `expected`.
/// Binds `pod` at the test interface, runs `frame` at its `hook` and records a mismatch
/// unless it gets `expected`; counts and reports it under `area`.
#[expect(clippy::too_many_arguments, reason = "one call per checked packet reads best flat")]
pub fn step(
    kernel: &mut Kernel,
    area: &str,
    pod: &str,
    hook: Hook,
    frame: &[u8],
    expected: Reason,
    what: &str,
    tally: &mut Tally,
) {
    kernel.bind(Some(pod));
    let outcome = kernel.run(hook, frame);
    tally.count(format!("{area}: {}", expected.label()));
    let place = format!("{area}: {what} at {pod} (generation {})", kernel.generation());
    expect(&outcome, expected, &place, tally);
}

pub fn expect(outcome: &Outcome, expected: Reason, place: &str, tally: &mut Tally) {
    match outcome.checked_reason() {
        Ok(reason) if reason == expected => {}
        Ok(reason) => tally.fail(format!(
            "{place}: kernel {} (rule {:?}), expected {}",
            reason.c_name(),
            outcome.rule(),
            expected.c_name()
        )),
        Err(e) => tally.fail(format!("{place}: {e}, expected {}", expected.c_name())),
    }
}

/// What an event of a policy decision must say besides the packet itself.
struct EventFacts {
    eps: EndpointPolicy,
    direction: Direction,
    generation: u32,
    /// The peer's identity, as the simulator finds it in the artifact.
    identity: u32,
}

/// Whether an event describes `packet` (a frame of `length` bytes) as judged at the bound
/// endpoint.
fn check_event(
    event: &Event,
    packet: &Packet,
    length: usize,
    facts: &EventFacts,
) -> Result<(), String> {
    let (family, saddr) = packet::address(packet.src);
    let (_, daddr) = packet::address(packet.dst);
    let (sport, dport) = match packet.l4 {
        packet::L4::Tcp { sport, dport, .. }
        | packet::L4::Udp { sport, dport }
        | packet::L4::Sctp { sport, dport } => (sport, dport),
        packet::L4::Icmp { kind, .. } => (0, u16::from(kind)),
        packet::L4::Other(_) => (0, 0),
    };
    let expected = Event {
        ifindex: LOOPBACK,
        endpoint_id: facts.eps.endpoint_id,
        identity: facts.eps.identity,
        peer_identity: facts.identity,
        generation: facts.generation,
        direction: dir_code(facts.direction),
        family,
        proto: packet.proto(),
        sport,
        dport,
        saddr,
        daddr,
        length: length as u32,
        // Not predicted: when, why and by which key.
        timestamp_ns: event.timestamp_ns,
        reason: event.reason,
        entry: event.entry,
        rule: event.rule,
        ..Event::default()
    };
    if *event == expected { Ok(()) } else { Err(format!("{event:?}, expected {expected:?}")) }
}

/// Removes the conntrack entry a packet can open at `eps` and checks it: present, of
/// `eps`'s endpoint and the packet's direction, with `rule` and stamped with the live
/// generation, exactly when `rule` is `Some`.
pub fn take_flow(
    kernel: &mut Kernel,
    packet: &Packet,
    eps: &EndpointPolicy,
    direction: Direction,
    rule: Option<u32>,
) -> Result<(), String> {
    let dir = dir_code(direction);
    let entry = kernel.take_ct(&packet.ct_key(LOOPBACK, dir));
    let generation = kernel.generation();
    match (rule, entry) {
        (None, None) => Ok(()),
        (Some(rule), Some(e))
            if (e.direction, e.rule, e.endpoint_id, e.generation, e.checked, e.metrics_row)
                == (dir, rule, eps.endpoint_id, generation, generation, ROW as u16) =>
        {
            Ok(())
        }
        (rule, entry) => Err(format!("expected an entry of rule {rule:?}, found {entry:?}")),
    }
}

pub fn dir_code(direction: Direction) -> u8 {
    match direction {
        Direction::Ingress => DIR_INGRESS,
        Direction::Egress => DIR_EGRESS,
    }
}

fn opposite(direction: Direction) -> Direction {
    match direction {
        Direction::Ingress => Direction::Egress,
        Direction::Egress => Direction::Ingress,
    }
}

fn direction_name(direction: Direction) -> &'static str {
    match direction {
        Direction::Ingress => "ingress",
        Direction::Egress => "egress",
    }
}

fn is_icmp(packet: &Packet) -> bool {
    matches!(packet.l4, packet::L4::Icmp { .. })
}

/// `IPv6 UDP reply`: how runs are counted.
fn kind(packet: &Packet, what: &str) -> String {
    let family = if packet.src.is_ipv4() { "IPv4" } else { "IPv6" };
    let proto = match packet.proto() {
        packet::TCP => "TCP".to_owned(),
        packet::UDP => "UDP".to_owned(),
        packet::SCTP => "SCTP".to_owned(),
        packet::ICMP => "ICMP".to_owned(),
        packet::ICMPV6 => "ICMPv6".to_owned(),
        other => format!("protocol {other}"),
    };
    format!("{family} {proto} {what}")
}
