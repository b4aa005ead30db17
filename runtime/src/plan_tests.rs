use std::net::Ipv4Addr;

use datapath::{
    DIR_EGRESS, DIR_INGRESS, FAMILY_IPV4, HostKey, IDENTITY_ANY, IDENTITY_WORLD, PolicyKey,
    VERDICT_ALLOW, VERDICT_DENY,
};

use super::*;
use crate::testing::{FakeMaps, Flow, Rng, Verdict, judge};

fn policy_key(table: u32, identity: u32, proto: u8, port: Option<u16>) -> PolicyKey {
    PolicyKey {
        table,
        identity,
        proto,
        port_bits: if port.is_some() { datapath::PORT_BITS } else { 0 },
        port: port.unwrap_or(0),
    }
}

fn allow(rule: u32) -> PolicyVerdict {
    PolicyVerdict { verdict: VERDICT_ALLOW, pad: [0; 3], rule }
}

fn addr(a: [u8; 4]) -> [u8; 16] {
    let mut full = [0u8; 16];
    full[..4].copy_from_slice(&a);
    full
}

fn prefix(a: [u8; 4], bits: u32) -> IpcacheKey {
    IpcacheKey::new(FAMILY_IPV4, addr(a), bits)
}

fn host(a: [u8; 4]) -> HostKey {
    HostKey { family: FAMILY_IPV4, pad: [0; 3], addr: addr(a) }
}

fn endpoint(id: u32, ingress_table: u32, egress_table: u32) -> EndpointPolicy {
    // Every port key these tests write names one port (16 bits).
    let exact_ports = 1 << datapath::PORT_BITS;
    EndpointPolicy {
        endpoint_id: id,
        identity: 300 + id,
        ingress_table,
        egress_table,
        ingress_port_bits: if ingress_table == 0 { 0 } else { exact_ports },
        egress_port_bits: if egress_table == 0 { 0 } else { exact_ports },
    }
}

/// What `apply` does to the maps, without the interface links.
fn sync(maps: &mut FakeMaps, desired: &MapState) -> Result<Plan> {
    let plan = Plan::new(&LiveMaps::read(maps)?, desired)?;
    let config = Config { generation: plan.next_generation(), ..Config::default() };
    plan.switch(maps, &config)?;
    plan.settle(maps)?;
    Ok(plan)
}

/// A small node: web (ifindex 1) accepts TCP 8080 from client identity 257, UDP from it,
/// and anything from anyone; client (ifindex 2) is not isolated.
fn small_node() -> MapState {
    let mut s = MapState::default();
    s.endpoints.insert(1, endpoint(1, 10, 0));
    s.endpoints.insert(2, endpoint(2, 0, 0));
    s.hosts.insert(host([198, 18, 0, 10]), 256);
    s.hosts.insert(host([198, 18, 0, 11]), 257);
    s.ipcache.insert(prefix([198, 18, 0, 0], 16), 258);
    s.policy.insert(policy_key(10, 257, 6, Some(8080)), allow(1));
    s.policy.insert(policy_key(10, 257, 17, None), allow(2));
    s.policy.insert(policy_key(10, IDENTITY_ANY, 0, None), allow(3));
    s
}

fn settled(state: &MapState) -> FakeMaps {
    FakeMaps { live: LiveMaps::settled(state, 0), ..FakeMaps::default() }
}

#[test]
fn first_apply_prepares_flips_waits_then_levels() {
    let mut maps = FakeMaps::default();
    let plan = sync(&mut maps, &small_node()).unwrap();

    let flip = maps.log.iter().position(|op| *op == MapOp::Flip(1)).expect("a flip");
    assert_eq!(maps.log[flip + 1], MapOp::Wait, "the wait follows the flip");
    assert!(
        maps.log[..flip].iter().all(|op| matches!(op, MapOp::Write(_) | MapOp::ResetMetrics(_)))
    );
    assert!(maps.log[flip + 2..].iter().all(|op| matches!(op, MapOp::Write(_))));
    assert_eq!(plan.changes(MapName::Policy), MapChanges { written: 3, deleted: 0 });
    assert_eq!(plan.changes(MapName::Hosts), MapChanges { written: 2, deleted: 0 });
    assert_eq!(maps.live.live_view(), small_node());
    assert_eq!(maps.live.view(0), small_node(), "the retired slot is levelled");
    let rows: Vec<u32> = maps.live.endpoints.values().map(|e| e.metrics_row).collect();
    assert_eq!(rows, [1, 2], "each interface gets its own metrics row, never row 0");
    assert_eq!(
        maps.log.iter().filter(|op| matches!(op, MapOp::ResetMetrics(_))).count(),
        2,
        "a new interface's row is zeroed before use"
    );
}

#[test]
fn second_apply_performs_no_operation() {
    let mut maps = FakeMaps::default();
    sync(&mut maps, &small_node()).unwrap();

    let ops_before = maps.log.len();
    let second = sync(&mut maps, &small_node()).unwrap();
    assert!(second.is_empty(), "{second:?}");
    assert_eq!(maps.log.len(), ops_before, "an apply with no change must not write");
    assert_eq!(maps.live.generation, 1, "and must not flip");
}

#[test]
fn a_new_key_starts_with_the_answer_of_the_state_without_it() {
    let old = small_node();
    let mut new = small_node();
    // A /24 inside the /16 and a host inside the /24, both new; a deleted host.
    new.ipcache.insert(prefix([198, 18, 0, 0], 24), 259);
    new.hosts.insert(host([198, 18, 0, 77]), 260);
    new.hosts.remove(&host([198, 18, 0, 11]));
    let live = LiveMaps::settled(&old, 4);

    let plan = Plan::new(&live, &new).unwrap();

    let prepared =
        |key: MapKey| plan.prepare.iter().find(|e| e.key() == key).copied().expect("prepared");
    // Generation 4: slot 0 is live, slot 1 is being prepared.
    let MapEntry::Ipcache(_, v) = prepared(MapKey::Ipcache(prefix([198, 18, 0, 0], 24))) else {
        unreachable!()
    };
    assert_eq!(v.identity, [258, 259], "the /16 answers for the new /24 until the flip");
    let MapEntry::Host(_, v) = prepared(MapKey::Host(host([198, 18, 0, 77]))) else {
        unreachable!()
    };
    assert_eq!(v.identity, [258, 260]);
    let MapEntry::Host(_, v) = prepared(MapKey::Host(host([198, 18, 0, 11]))) else {
        unreachable!()
    };
    assert_eq!(v.identity, [257, 259], "a deleted host answers as the new /24 after the flip");
    assert_eq!(plan.deletes, [MapKey::Host(host([198, 18, 0, 11]))]);
    assert!(plan.flip);
}

#[test]
fn repairs_drift_in_the_live_maps() {
    let mut maps = settled(&small_node());
    let stray = policy_key(10, 999, 6, Some(22));
    maps.live.policy.insert(stray, PolicyValue { slot: [allow(99); 2] });
    maps.live.hosts.insert(host([198, 18, 0, 11]), IpcacheValue { identity: [666, 666] });
    maps.live.endpoints.get_mut(&1).unwrap().slot = [endpoint(1, 0, 0); 2];

    let plan = sync(&mut maps, &small_node()).unwrap();

    assert_eq!(maps.live.live_view(), small_node());
    assert_eq!(maps.live.view(0), maps.live.view(1));
    assert_eq!(plan.changes(MapName::Policy), MapChanges { written: 0, deleted: 1 });
    assert_eq!(plan.changes(MapName::Hosts), MapChanges { written: 1, deleted: 0 });
    assert_eq!(plan.changes(MapName::Endpoints), MapChanges { written: 1, deleted: 0 });
}

#[test]
fn an_interface_that_becomes_a_host_uplink_takes_the_host_flag_and_keeps_it() {
    let mut maps = settled(&small_node());
    let mut desired = small_node();
    desired.endpoint_flags.insert(2, datapath::EP_F_HOST);

    let plan = sync(&mut maps, &desired).unwrap();

    assert!(!plan.is_empty());
    assert_eq!(maps.live.endpoints[&2].flags, datapath::EP_F_HOST);
    assert_eq!(maps.live.endpoints[&1].flags, 0);
    assert_eq!(maps.live.live_view(), desired);
    let again = sync(&mut maps, &desired).unwrap();
    assert!(again.is_empty(), "{again:?}");
    // Back to a pod's interface, and a new uplink bound as a host at once.
    desired.endpoint_flags.clear();
    desired.endpoints.insert(3, endpoint(3, 10, 0));
    desired.endpoint_flags.insert(3, datapath::EP_F_HOST);
    sync(&mut maps, &desired).unwrap();
    assert_eq!(maps.live.endpoints[&2].flags, 0);
    assert_eq!(maps.live.endpoints[&3].flags, datapath::EP_F_HOST);
    assert_eq!(maps.live.live_view(), desired);
}

#[test]
fn an_interface_keeps_its_metrics_row_and_a_new_one_takes_the_lowest_free_row() {
    let mut maps = FakeMaps::default();
    sync(&mut maps, &small_node()).unwrap();
    let mut next = small_node();
    next.endpoints.remove(&1);
    next.endpoints.insert(5, endpoint(5, 10, 10));

    sync(&mut maps, &next).unwrap();

    let row = |ifindex| maps.live.endpoints[&ifindex].metrics_row;
    assert_eq!(row(2), 2, "kept");
    assert_eq!(row(5), 3, "row 1 was still held while interface 1 was being removed");
    assert!(!maps.live.endpoints.contains_key(&1));
}

#[test]
fn refuses_an_update_that_overflows_a_map_before_writing() {
    let mut desired = MapState::default();
    for ifindex in 0..=datapath::capacity::ENDPOINTS {
        desired.endpoints.insert(ifindex, endpoint(ifindex, 1, 1));
    }
    let mut maps = FakeMaps::default();

    let err = sync(&mut maps, &desired).unwrap_err();

    assert!(matches!(err, RuntimeError::Capacity { map: "policyc_endpoints", .. }), "{err}");
    assert!(maps.log.is_empty());
}

#[test]
fn counts_the_peak_of_old_and_new_entries() {
    let capacity = datapath::capacity::POLICY;
    let mut current = MapState::default();
    let mut desired = MapState::default();
    for i in 0..capacity {
        let key = |i: u32| policy_key(1, 256 + i, 6, Some(80));
        current.policy.insert(key(i), allow(1));
        desired.policy.insert(key(i + 1), allow(1));
    }
    // One new key while all old ones are still there: capacity + 1 at the peak.
    let err = Plan::new(&LiveMaps::settled(&current, 0), &desired).unwrap_err();
    assert!(
        matches!(err, RuntimeError::Capacity { needed, .. } if needed == capacity as usize + 1),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Property tests: random before/after states, applied one operation at a time, with the
// datapath's lookup simulated after every operation.

const TABLES: [u32; 3] = [1, 2, 3];
const IDENTITIES: [u32; 5] = [IDENTITY_WORLD, 256, 257, 258, 259];
const PORTS: [(u8, Option<u16>); 7] =
    [(6, Some(80)), (6, Some(443)), (17, Some(53)), (1, Some(8)), (6, None), (17, None), (0, None)];
const PREFIXES: [([u8; 4], u32); 5] = [
    ([198, 18, 0, 0], 15),
    ([198, 18, 0, 0], 16),
    ([198, 18, 1, 0], 24),
    ([198, 18, 1, 0], 25),
    ([198, 19, 0, 0], 31),
];
const HOSTS: [[u8; 4]; 4] = [[198, 18, 1, 1], [198, 18, 1, 2], [198, 18, 1, 129], [198, 19, 0, 1]];
const PEERS: [[u8; 4]; 8] = [
    [198, 18, 1, 1],
    [198, 18, 1, 2],
    [198, 18, 1, 3],
    [198, 18, 1, 129],
    [198, 18, 2, 5],
    [198, 19, 0, 1],
    [198, 19, 7, 7],
    [203, 0, 113, 9],
];
const FLOW_PORTS: [(u8, Option<u16>); 8] = [
    (6, Some(80)),
    (6, Some(443)),
    (6, Some(22)),
    (17, Some(53)),
    (17, Some(99)),
    (1, Some(8)),
    (1, Some(0)),
    (47, None),
];

fn random_state(rng: &mut Rng) -> MapState {
    let mut state = MapState::default();
    for table in TABLES {
        for id in IDENTITIES.into_iter().chain([IDENTITY_ANY]) {
            for (proto, port) in PORTS {
                if rng.chance(25) {
                    let verdict = if rng.chance(75) { VERDICT_ALLOW } else { VERDICT_DENY };
                    let value =
                        PolicyVerdict { verdict, pad: [0; 3], rule: rng.below(50) as u32 + 1 };
                    state.policy.insert(policy_key(table, id, proto, port), value);
                }
            }
        }
    }
    for (a, bits) in PREFIXES {
        if rng.chance(50) {
            state.ipcache.insert(prefix(a, bits), rng.pick(&IDENTITIES[1..]));
        }
    }
    for a in HOSTS {
        if rng.chance(50) {
            state.hosts.insert(host(a), rng.pick(&IDENTITIES[1..]));
        }
    }
    for ifindex in 1..=3 {
        if rng.chance(80) {
            let (ingress, egress) = (rng.pick(&[0, 1, 2, 3]), rng.pick(&[0, 1, 2, 3]));
            state.endpoints.insert(ifindex, endpoint(ifindex, ingress, egress));
        }
    }
    state
}

fn random_flows(rng: &mut Rng, n: usize) -> Vec<Flow> {
    (0..n)
        .map(|_| {
            let (proto, port) = rng.pick(&FLOW_PORTS);
            Flow {
                ifindex: rng.below(4) as u32 + 1,
                dir: rng.pick(&[DIR_INGRESS, DIR_EGRESS]),
                peer: Ipv4Addr::from(rng.pick(&PEERS)),
                proto,
                port,
            }
        })
        .collect()
}

fn scenario(seed: u64) -> (MapState, MapState, Vec<Flow>) {
    let mut rng = Rng::new(seed);
    let old = random_state(&mut rng);
    let new = random_state(&mut rng);
    let flows = random_flows(&mut rng, 64);
    (old, new, flows)
}

/// Runs `plan` on `maps` one operation at a time and checks, after each, that every flow
/// is judged exactly as in `before` until the flip and exactly as in `new` from then on.
fn check_each_step(
    seed: u64,
    maps: &mut FakeMaps,
    before: &MapState,
    new: &MapState,
    flows: &[Flow],
) {
    let plan = Plan::new(&maps.live, new).unwrap();
    let mut expected = before;
    for (step, op) in plan.ops().enumerate() {
        run(maps, op, &Config::default()).unwrap();
        if matches!(op, MapOp::Flip(_)) {
            expected = new;
        }
        let view = maps.live.live_view();
        for flow in flows {
            let now = judge(&view, flow);
            let want = judge(expected, flow);
            assert_eq!(
                now,
                want,
                "seed {seed}, after step {step} ({op:?}): {flow:?} judged {now:?}, expected {want:?} \
                 (old {:?}, new {:?})",
                judge(before, flow),
                judge(new, flow)
            );
        }
    }
    assert_eq!(maps.live.live_view(), *new, "seed {seed}: the plan must end at the new state");
    assert_eq!(maps.live.view(0), maps.live.view(1), "seed {seed}: both slots level at the end");
}

#[test]
fn every_flow_is_judged_by_the_old_state_until_the_flip_and_by_the_new_one_after() {
    for seed in 0..120 {
        let (old, new, flows) = scenario(seed);
        let mut maps = settled(&old);
        maps.live.generation = seed as u32; // either slot may be the live one
        check_each_step(seed, &mut maps, &old, &new, &flows);
    }
}

#[test]
fn an_interrupted_apply_resumes_and_every_flow_keeps_an_old_or_new_verdict() {
    // Every crash point of every seed replays the rest: keep this small.
    for seed in 400..408 {
        let (old, new, flows) = scenario(seed);
        let flows = &flows[..24];
        let total = Plan::new(&LiveMaps::settled(&old, 0), &new).unwrap().ops().count();
        for crash_after in 0..total {
            let mut maps = settled(&old);
            maps.fail_after = Some(crash_after);
            assert!(sync(&mut maps, &new).is_err(), "seed {seed}: no failure injected");
            maps.fail_after = None;

            // Stopped before the flip: the old state is live; after it, the new one.
            let flipped = maps.log.iter().any(|op| matches!(op, MapOp::Flip(_)));
            let live = if flipped { &new } else { &old };
            let view = maps.live.live_view();
            for flow in flows {
                assert_eq!(judge(&view, flow), judge(live, flow), "seed {seed}");
            }
            // The resumed run plans from wherever the first one stopped.
            check_each_step(seed, &mut maps, live, &new, flows);
        }
    }
}

#[test]
fn a_resumed_apply_after_the_flip_levels_without_flipping_again() {
    let (old, new, _) = scenario(7);
    let mut maps = settled(&old);
    let plan = Plan::new(&maps.live, &new).unwrap();
    let wait = plan.ops().position(|op| op == MapOp::Wait).unwrap();
    maps.fail_after = Some(wait + 1);
    assert!(sync(&mut maps, &new).is_err());
    maps.fail_after = None;

    let resumed = Plan::new(&LiveMaps::read(&maps).unwrap(), &new).unwrap();
    assert!(!resumed.flip, "the live slot already answers as the new state");
    assert!(resumed.prepare.is_empty());
    assert_eq!(
        resumed.ops().next(),
        Some(MapOp::Wait),
        "the killed run may have died before its wait: readers of the old slot may remain"
    );
    sync(&mut maps, &new).unwrap();
    assert_eq!(maps.live.generation, 1);
    assert_eq!(maps.live.view(0), maps.live.view(1));
}

#[test]
fn simulator_follows_the_datapath_lookup_order() {
    let node = small_node();
    let flow = |peer: [u8; 4], proto, port| Flow {
        ifindex: 1,
        dir: DIR_INGRESS,
        peer: Ipv4Addr::from(peer),
        proto,
        port,
    };
    let client = [198, 18, 0, 11];
    assert_eq!(judge(&node, &flow(client, 6, Some(8080))), Verdict::Allow { rule: 1 });
    assert_eq!(judge(&node, &flow(client, 17, Some(9))), Verdict::Allow { rule: 2 });
    // Identity 257 has no entry for TCP 22, so the identity-any wildcard decides.
    assert_eq!(judge(&node, &flow(client, 6, Some(22))), Verdict::Allow { rule: 3 });
    let egress = Flow { dir: DIR_EGRESS, ..flow(client, 6, Some(22)) };
    assert_eq!(judge(&node, &egress), Verdict::NotEnforced);
    let unbound = Flow { ifindex: 9, ..flow(client, 6, Some(22)) };
    assert_eq!(judge(&node, &unbound), Verdict::NoEndpoint);

    let mut strict = node.clone();
    strict.policy.remove(&policy_key(10, IDENTITY_ANY, 0, None));
    assert_eq!(judge(&strict, &flow(client, 6, Some(22))), Verdict::NoPolicy);
    // 198.18.0.99 falls in the /16 (identity 258), 203.0.113.1 in no prefix (world).
    assert_eq!(node.identity_of(FAMILY_IPV4, addr([198, 18, 0, 99])), 258);
    assert_eq!(node.identity_of(FAMILY_IPV4, addr([198, 18, 0, 11])), 257);
    assert_eq!(node.identity_of(FAMILY_IPV4, addr([203, 0, 113, 1])), IDENTITY_WORLD);
}
