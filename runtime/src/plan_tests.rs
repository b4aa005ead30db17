use std::net::Ipv4Addr;

use datapath::{
    DIR_EGRESS, DIR_INGRESS, EndpointInfo, FAMILY_IPV4, IDENTITY_ANY, IDENTITY_WORLD, IpcacheValue,
    PolicyValue, VERDICT_ALLOW, VERDICT_DENY,
};

use super::*;
use crate::testing::{FakeMaps, Flow, Rng, Verdict, judge, resolve};

fn policy_key(table: u32, identity: u32, proto: u8, port: Option<u16>) -> PolicyKey {
    PolicyKey {
        table,
        identity,
        proto,
        port_bits: if port.is_some() { datapath::PORT_BITS } else { 0 },
        port: port.unwrap_or(0),
    }
}

fn allow(rule: u32) -> PolicyValue {
    PolicyValue { verdict: VERDICT_ALLOW, pad: [0; 3], rule }
}

fn prefix(addr: [u8; 4], bits: u32) -> IpcacheKey {
    let mut full = [0u8; 16];
    full[..4].copy_from_slice(&addr);
    IpcacheKey::new(FAMILY_IPV4, full, bits)
}

fn identity(id: u32) -> IpcacheValue {
    IpcacheValue { identity: id, flags: 0 }
}

fn endpoint(id: u32, ingress_table: u32, egress_table: u32) -> EndpointInfo {
    // Every port key these tests write names one port (16 bits).
    let exact_ports = 1 << datapath::PORT_BITS;
    EndpointInfo {
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
    let plan = Plan::new(&MapState::read(maps)?, desired)?;
    plan.write(maps)?;
    plan.delete(maps)?;
    Ok(plan)
}

/// A small node: web (ifindex 1) accepts TCP 8080 from client identity 257 and denies
/// everything else; client (ifindex 2) is not isolated.
fn small_node() -> MapState {
    let mut s = MapState::default();
    s.endpoints.insert(1, endpoint(1, 10, 0));
    s.endpoints.insert(2, endpoint(2, 0, 0));
    s.ipcache.insert(prefix([198, 18, 0, 10], 32), identity(256));
    s.ipcache.insert(prefix([198, 18, 0, 11], 32), identity(257));
    s.ipcache.insert(prefix([198, 18, 0, 0], 16), identity(258));
    s.policy.insert(policy_key(10, 257, 6, Some(8080)), allow(1));
    s.policy.insert(policy_key(10, 257, 17, None), allow(2));
    s.policy.insert(policy_key(10, IDENTITY_ANY, 0, None), allow(3));
    s
}

fn rank_of(entry: &MapEntry) -> Option<u8> {
    match entry {
        MapEntry::Policy(k, _) => Some(k.rank()),
        _ => None,
    }
}

#[test]
fn writes_referenced_maps_first_most_specific_first() {
    let current = MapState::default();
    let desired = small_node();
    let plan = Plan::new(&current, &desired).unwrap();

    let maps: Vec<MapName> = plan.writes.iter().map(MapEntry::map).collect();
    let mut grouped = maps.clone();
    grouped.dedup();
    assert_eq!(grouped, [MapName::Policy, MapName::Ipcache, MapName::Endpoints], "{maps:?}");

    let ranks: Vec<u8> = plan.writes.iter().filter_map(rank_of).collect();
    assert!(ranks.is_sorted(), "policy writes must go most specific first: {ranks:?}");
    let prefixes: Vec<u32> = plan
        .writes
        .iter()
        .filter_map(|e| match e {
            MapEntry::Ipcache(k, _) => Some(k.prefixlen),
            _ => None,
        })
        .collect();
    assert!(prefixes.is_sorted_by(|a, b| a >= b), "longest prefix first: {prefixes:?}");
    assert!(plan.deletes.is_empty());
}

#[test]
fn deletes_referring_maps_first_least_specific_first() {
    let plan = Plan::new(&small_node(), &MapState::default()).unwrap();

    assert!(plan.writes.is_empty());
    let maps: Vec<MapName> = plan.deletes.iter().map(MapKey::map).collect();
    let mut grouped = maps.clone();
    grouped.dedup();
    assert_eq!(grouped, [MapName::Endpoints, MapName::Ipcache, MapName::Policy], "{maps:?}");

    let ranks: Vec<u8> = plan
        .deletes
        .iter()
        .filter_map(|k| match k {
            MapKey::Policy(k) => Some(k.rank()),
            _ => None,
        })
        .collect();
    assert!(ranks.is_sorted_by(|a, b| a >= b), "least specific first: {ranks:?}");
    let prefixes: Vec<u32> = plan
        .deletes
        .iter()
        .filter_map(|k| match k {
            MapKey::Ipcache(k) => Some(k.prefixlen),
            _ => None,
        })
        .collect();
    assert!(prefixes.is_sorted(), "shortest prefix first: {prefixes:?}");
}

#[test]
fn second_apply_performs_no_operation() {
    let mut maps = FakeMaps::default();
    let first = sync(&mut maps, &small_node()).unwrap();
    assert_eq!(first.writes.len(), 8);
    assert_eq!(maps.state, small_node());

    let ops_before = maps.log.len();
    let second = sync(&mut maps, &small_node()).unwrap();
    assert!(second.is_empty(), "{second:?}");
    assert_eq!(maps.log.len(), ops_before, "an apply with no change must not write");
}

#[test]
fn only_entries_that_differ_are_written() {
    let mut maps = FakeMaps::with_state(small_node());
    let mut desired = small_node();
    desired.policy.insert(policy_key(10, 257, 6, Some(9090)), allow(4));

    let plan = sync(&mut maps, &desired).unwrap();

    assert_eq!(
        maps.log,
        [MapOp::Write(MapEntry::Policy(policy_key(10, 257, 6, Some(9090)), allow(4)))]
    );
    assert_eq!(plan.changes(MapName::Policy), MapChanges { written: 1, deleted: 0 });
    assert_eq!(plan.changes(MapName::Ipcache), MapChanges::default());
}

#[test]
fn repairs_drift_in_the_live_maps() {
    let mut drifted = small_node();
    let stray = policy_key(10, 999, 6, Some(22));
    drifted.policy.insert(stray, allow(99));
    drifted.ipcache.insert(prefix([198, 18, 0, 11], 32), identity(666));
    drifted.endpoints.insert(1, endpoint(1, 0, 0));
    drifted.endpoints.insert(42, endpoint(42, 10, 10));
    let mut maps = FakeMaps::with_state(drifted);

    let plan = sync(&mut maps, &small_node()).unwrap();

    assert_eq!(maps.state, small_node());
    assert_eq!(plan.changes(MapName::Policy), MapChanges { written: 0, deleted: 1 });
    assert_eq!(plan.changes(MapName::Ipcache), MapChanges { written: 1, deleted: 0 });
    assert_eq!(plan.changes(MapName::Endpoints), MapChanges { written: 1, deleted: 1 });
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
    let capacity = datapath::capacity::ENDPOINTS;
    let mut current = MapState::default();
    let mut desired = MapState::default();
    for ifindex in 0..capacity {
        current.endpoints.insert(ifindex, endpoint(ifindex, 1, 1));
        desired.endpoints.insert(ifindex + 1, endpoint(ifindex, 1, 1));
    }
    // One new key while all old ones are still there: capacity + 1 at the peak.
    let err = Plan::new(&current, &desired).unwrap_err();
    assert!(
        matches!(err, RuntimeError::Capacity { needed, .. } if needed == capacity as usize + 1)
    );
}

// ---------------------------------------------------------------------------------------
// Property tests: random before/after states, applied one operation at a time, with the
// datapath's lookup simulated after every operation.

const TABLES: [u32; 3] = [1, 2, 3];
const IDENTITIES: [u32; 5] = [IDENTITY_WORLD, 256, 257, 258, 259];
const PORTS: [(u8, Option<u16>); 7] =
    [(6, Some(80)), (6, Some(443)), (17, Some(53)), (1, Some(8)), (6, None), (17, None), (0, None)];
const PREFIXES: [([u8; 4], u32); 8] = [
    ([198, 18, 0, 0], 15),
    ([198, 18, 0, 0], 16),
    ([198, 18, 1, 0], 24),
    ([198, 18, 1, 0], 25),
    ([198, 18, 1, 1], 32),
    ([198, 18, 1, 2], 32),
    ([198, 18, 1, 129], 32),
    ([198, 19, 0, 1], 32),
];
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

fn random_policy(rng: &mut Rng) -> BTreeMap<PolicyKey, PolicyValue> {
    let mut policy = BTreeMap::new();
    for table in TABLES {
        for id in IDENTITIES.into_iter().chain([IDENTITY_ANY]) {
            for (proto, port) in PORTS {
                if rng.chance(25) {
                    let verdict = if rng.chance(75) { VERDICT_ALLOW } else { VERDICT_DENY };
                    let value =
                        PolicyValue { verdict, pad: [0; 3], rule: rng.below(50) as u32 + 1 };
                    policy.insert(policy_key(table, id, proto, port), value);
                }
            }
        }
    }
    policy
}

fn random_ipcache(rng: &mut Rng) -> BTreeMap<IpcacheKey, IpcacheValue> {
    let mut ipcache = BTreeMap::new();
    for (addr, bits) in PREFIXES {
        if rng.chance(50) {
            ipcache.insert(prefix(addr, bits), identity(rng.pick(&IDENTITIES[1..])));
        }
    }
    ipcache
}

fn random_endpoints(rng: &mut Rng) -> BTreeMap<u32, EndpointInfo> {
    let mut endpoints = BTreeMap::new();
    for ifindex in 1..=3 {
        if rng.chance(80) {
            let (ingress, egress) = (rng.pick(&[0, 1, 2, 3]), rng.pick(&[0, 1, 2, 3]));
            endpoints.insert(ifindex, endpoint(ifindex, ingress, egress));
        }
    }
    endpoints
}

fn random_state(rng: &mut Rng) -> MapState {
    MapState {
        endpoints: random_endpoints(rng),
        ipcache: random_ipcache(rng),
        policy: random_policy(rng),
    }
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

/// Which maps a scenario lets differ between the old and the new state.
#[derive(Clone, Copy, Debug)]
enum Change {
    Policy,
    Ipcache,
    Endpoints,
    Everything,
}

fn scenario(seed: u64, change: Change) -> (MapState, MapState, Vec<Flow>) {
    let mut rng = Rng::new(seed);
    let old = random_state(&mut rng);
    let mut new = random_state(&mut rng);
    match change {
        Change::Policy => new = MapState { policy: new.policy, ..old.clone() },
        Change::Ipcache => new = MapState { ipcache: new.ipcache, ..old.clone() },
        Change::Endpoints => new = MapState { endpoints: new.endpoints, ..old.clone() },
        Change::Everything => {}
    }
    let flows = random_flows(&mut rng, 64);
    (old, new, flows)
}

/// Every flow the argument of the module documentation covers: all of them when only
/// one map changes, otherwise those judged with the same table and peer identity before
/// and after.
fn covered(change: Change, old: &MapState, new: &MapState, flow: &Flow) -> bool {
    match change {
        Change::Everything => resolve(old, flow) == resolve(new, flow),
        _ => true,
    }
}

/// Applies the plan from `start` to `new` one operation at a time and checks, after each,
/// that every covered flow is judged as in `old` or as in `new`, and that whatever an
/// endpoint or ipcache entry newly points to is complete.
fn check_each_step(
    seed: u64,
    change: Change,
    start: &MapState,
    old: &MapState,
    new: &MapState,
    flows: &[Flow],
) {
    let plan = Plan::new(start, new).unwrap();
    let mut maps = FakeMaps::with_state(start.clone());
    for (step, op) in plan.ops().enumerate() {
        match op {
            MapOp::Write(entry) => maps.update(&entry).unwrap(),
            MapOp::Delete(key) => maps.delete(&key).unwrap(),
        }
        for flow in flows.iter().filter(|f| covered(change, old, new, f)) {
            let now = judge(&maps.state, flow);
            let (before, after) = (judge(old, flow), judge(new, flow));
            assert!(
                now == before || now == after,
                "seed {seed} {change:?}, after step {step} ({op:?}): {flow:?} judged {now:?}, \
                 old {before:?}, new {after:?}"
            );
        }
        check_references_complete(&maps.state, new, old)
            .unwrap_or_else(|why| panic!("seed {seed} {change:?}, after step {step}: {why}"));
    }
    assert_eq!(&maps.state, new, "seed {seed}: the plan must end at the new state");
}

/// An endpoint or ipcache entry that holds its new value refers to tables and identities
/// whose new policy entries are all present.
fn check_references_complete(now: &MapState, new: &MapState, old: &MapState) -> Result<(), String> {
    let complete = |pred: &dyn Fn(&PolicyKey) -> bool| {
        new.policy.iter().filter(|(k, _)| pred(k)).all(|(k, v)| now.policy.get(k) == Some(v))
    };
    for (ifindex, info) in &now.endpoints {
        let switched =
            new.endpoints.get(ifindex) == Some(info) && old.endpoints.get(ifindex) != Some(info);
        let tables = [info.ingress_table, info.egress_table];
        if switched && !complete(&|k| tables.contains(&k.table)) {
            return Err(format!("endpoint {ifindex} points at incomplete tables {tables:?}"));
        }
    }
    for (key, value) in &now.ipcache {
        let switched = new.ipcache.get(key) == Some(value) && old.ipcache.get(key) != Some(value);
        if switched && !complete(&|k| k.identity == value.identity) {
            return Err(format!(
                "ipcache {key:?} points at incomplete identity {}",
                value.identity
            ));
        }
    }
    Ok(())
}

#[test]
fn every_step_of_a_policy_change_keeps_old_or_new_verdicts() {
    for seed in 0..60 {
        let (old, new, flows) = scenario(seed, Change::Policy);
        check_each_step(seed, Change::Policy, &old, &old, &new, &flows);
    }
}

#[test]
fn every_step_of_an_ipcache_change_keeps_old_or_new_verdicts() {
    for seed in 100..160 {
        let (old, new, flows) = scenario(seed, Change::Ipcache);
        check_each_step(seed, Change::Ipcache, &old, &old, &new, &flows);
    }
}

#[test]
fn every_step_of_an_endpoint_change_keeps_old_or_new_verdicts() {
    for seed in 200..260 {
        let (old, new, flows) = scenario(seed, Change::Endpoints);
        check_each_step(seed, Change::Endpoints, &old, &old, &new, &flows);
    }
}

#[test]
fn every_step_of_a_mixed_change_keeps_covered_verdicts_and_complete_references() {
    for seed in 300..360 {
        let (old, new, flows) = scenario(seed, Change::Everything);
        check_each_step(seed, Change::Everything, &old, &old, &new, &flows);
    }
}

#[test]
fn an_interrupted_apply_resumes_and_still_keeps_verdicts() {
    // Every crash point of every seed replays the rest of the plan: keep this small.
    for seed in 400..410 {
        let (old, new, flows) = scenario(seed, Change::Policy);
        let flows = &flows[..32];
        let total = Plan::new(&old, &new).unwrap().ops().count();
        for crash_after in 0..total {
            let mut maps = FakeMaps::with_state(old.clone());
            maps.fail_after = Some(crash_after);
            assert!(sync(&mut maps, &new).is_err(), "seed {seed}: no failure injected");

            // The resumed run plans from wherever the first one stopped.
            let stopped = maps.state.clone();
            check_each_step(seed, Change::Policy, &stopped, &old, &new, flows);
        }
    }
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
    assert_eq!(resolve(&node, &flow([198, 18, 0, 99], 6, None)), Ok((10, 1 << 16, 258)));
    assert_eq!(resolve(&node, &flow([203, 0, 113, 1], 6, None)), Ok((10, 1 << 16, IDENTITY_WORLD)));
}
