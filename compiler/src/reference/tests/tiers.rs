//! Tiers, priorities and Pass, on hand-built IR: no front end lowers to the Admin or
//! Baseline tier yet, so these tests are the only specification of them.

use super::*;
use crate::ir::Tier;

fn tiered(
    name: &str,
    tier: Tier,
    priority: u32,
    subject: &str,
    isolates: &[Direction],
    rules: Vec<Rule>,
) -> Policy {
    Policy { tier, priority, ..policy(name, subject, isolates, rules) }
}

fn from(app: &str) -> Option<Vec<Peer>> {
    Some(vec![Peer::Endpoints(select(&[("app", app)]))])
}

fn tcp(p: u16) -> Vec<PortMatch> {
    vec![port(Some(TCP), PortSpec::Range(p, p))]
}

fn ingress(action: Action, peers: Option<Vec<Peer>>, ports: Vec<PortMatch>) -> Rule {
    rule(Direction::Ingress, action, peers, ports)
}

fn denied(policy: &str, rule: &str) -> Verdict {
    Verdict::Denied { policy: policy.into(), rule: rule.into() }
}

fn at_web(r: &Reference<'_>, src: &str, port: u16) -> Verdict {
    r.evaluate(&flow(src, WEB, TCP, port)).ingress.unwrap()
}

#[test]
fn the_admin_tier_decides_first_by_priority_then_rule_order() {
    let policies = [
        // Listed first but of a later priority: decides only what `early` leaves.
        tiered(
            "late",
            Tier::Admin,
            20,
            "web",
            &[],
            vec![ingress(Action::Allow, from("client"), vec![])],
        ),
        tiered(
            "early",
            Tier::Admin,
            10,
            "web",
            &[],
            vec![
                ingress(Action::Allow, from("client"), tcp(80)),
                ingress(Action::Deny, from("client"), tcp(81)),
                ingress(Action::Allow, from("client"), tcp(81)),
            ],
        ),
        // A NetworkPolicy-like deny of everything: the Admin tier decided before it.
        policy(
            "np",
            "web",
            &[Direction::Ingress],
            vec![ingress(Action::Deny, from("client"), vec![])],
        ),
    ];
    let r = Reference::from_parts(&policies, endpoints());
    assert_eq!(at_web(&r, CLIENT, 80), allowed("early", "rule[0]"));
    assert_eq!(at_web(&r, CLIENT, 81), denied("early", "rule[1]"), "rule order, not allow-first");
    assert_eq!(at_web(&r, CLIENT, 82), allowed("late", "rule[0]"));
    assert_eq!(at_web(&r, DB, 82), Verdict::DefaultDeny { isolating: vec!["np".into()] });
}

#[test]
fn equal_priorities_keep_the_given_order() {
    let deny = || vec![ingress(Action::Deny, None, vec![])];
    let allow = || vec![ingress(Action::Allow, None, vec![])];
    let policies = [
        tiered("b-deny", Tier::Admin, 5, "web", &[], deny()),
        tiered("a-allow", Tier::Admin, 5, "web", &[], allow()),
    ];
    let r = Reference::from_parts(&policies, endpoints());
    assert_eq!(at_web(&r, CLIENT, 80), denied("b-deny", "rule[0]"));
}

#[test]
fn pass_skips_the_rest_of_the_admin_tier_to_the_default_tier() {
    let policies = [
        tiered(
            "pass-client",
            Tier::Admin,
            1,
            "web",
            &[],
            vec![ingress(Action::Pass, from("client"), vec![])],
        ),
        tiered("deny-all", Tier::Admin, 2, "web", &[], vec![ingress(Action::Deny, None, vec![])]),
        policy(
            "np",
            "web",
            &[Direction::Ingress],
            vec![ingress(Action::Allow, from("client"), tcp(80))],
        ),
    ];
    let r = Reference::from_parts(&policies, endpoints());
    // Passed: the NetworkPolicy decides, allowing 80 and isolating the rest.
    assert_eq!(at_web(&r, CLIENT, 80), allowed("np", "rule[0]"));
    assert_eq!(at_web(&r, CLIENT, 81), Verdict::DefaultDeny { isolating: vec!["np".into()] });
    // Not passed: the lower-priority Admin deny decides before the NetworkPolicy.
    assert_eq!(at_web(&r, DB, 80), denied("deny-all", "rule[0]"));
    // The Pass is reported among the matches, in evaluation order.
    let web = &r.endpoints()[2];
    assert_eq!(web.name, "ns/web");
    let actions: Vec<(Tier, Action)> = r
        .matching_rules(web, Direction::Ingress, Address::Ip(ip(CLIENT)), TCP, Some(80))
        .into_iter()
        .map(|m| (m.tier, m.action))
        .collect();
    assert_eq!(
        actions,
        [(Tier::Admin, Action::Pass), (Tier::Admin, Action::Deny), (Tier::Default, Action::Allow)]
    );
}

#[test]
fn baseline_applies_only_to_what_no_earlier_tier_decided() {
    let policies = [
        tiered(
            "baseline",
            Tier::Baseline,
            0,
            "",
            &[],
            vec![
                ingress(Action::Allow, from("client"), tcp(80)),
                ingress(Action::Deny, None, vec![]),
            ],
        ),
        policy(
            "np-web",
            "web",
            &[Direction::Ingress],
            vec![ingress(Action::Allow, from("db"), vec![])],
        ),
        // A deny where the direction is not isolated decides in the Default tier too.
        policy("np-db", "db", &[], vec![ingress(Action::Deny, from("web"), tcp(22))]),
    ];
    // The baseline selects every endpoint (`app` exists on all of them).
    let mut policies = policies;
    policies[0].subject = LabelSelector {
        match_expressions: vec![Requirement {
            key: "app".into(),
            operator: Operator::Exists,
            values: vec![],
        }],
        ..LabelSelector::default()
    };
    let r = Reference::from_parts(&policies, endpoints());
    // web is isolated by a NetworkPolicy: the Default tier decides everything there.
    assert_eq!(at_web(&r, DB, 5432), allowed("np-web", "rule[0]"));
    assert_eq!(at_web(&r, CLIENT, 80), Verdict::DefaultDeny { isolating: vec!["np-web".into()] });
    // db is not isolated: its Default-tier deny decides, the baseline the rest.
    let at_db = |src: &str, port: u16| r.evaluate(&flow(src, DB, TCP, port)).ingress.unwrap();
    assert_eq!(at_db(WEB, 22), denied("np-db", "rule[0]"));
    assert_eq!(at_db(CLIENT, 80), allowed("baseline", "rule[0]"));
    assert_eq!(at_db(CLIENT, 81), denied("baseline", "rule[1]"));
    // A baseline deny names the host too, so the built-in host allow does not apply.
    let from_host =
        Flow { src: Address::Host, dst: Address::Ip(ip(DB)), proto: TCP, port: Some(1) };
    assert_eq!(r.evaluate(&from_host).ingress, Some(denied("baseline", "rule[1]")));
    // Egress has no baseline rule: nothing decides, so it passes.
    assert_eq!(r.evaluate(&flow(DB, CLIENT, TCP, 1)).egress, Some(Verdict::NotIsolated));
}

#[test]
fn a_baseline_pass_decides_nothing_and_enforcement_always_denies_after_the_baseline() {
    let policies = [
        tiered(
            "baseline",
            Tier::Baseline,
            0,
            "web",
            &[],
            vec![
                ingress(Action::Pass, from("client"), vec![]),
                ingress(Action::Allow, None, tcp(80)),
            ],
        ),
        policy("np", "web", &[], vec![ingress(Action::Allow, from("db"), tcp(5432))]),
    ];
    let r = Reference::from_parts(&policies, endpoints());
    assert_eq!(at_web(&r, CLIENT, 80), Verdict::NotIsolated, "passed, then nothing decides");
    assert_eq!(at_web(&r, DB, 80), allowed("baseline", "rule[1]"));

    let always = Reference::from_parts(&policies, endpoints())
        .with_options(Options { enforcement: Enforcement::Always, ..Options::default() });
    // With `always`, a Default-tier allow decides although nothing isolates...
    assert_eq!(at_web(&always, DB, 5432), allowed("np", "rule[0]"));
    // ...the baseline still decides what the Default tier left...
    assert_eq!(at_web(&always, DB, 80), allowed("baseline", "rule[1]"));
    // ...and what nothing decided is denied, except from the host.
    assert_eq!(at_web(&always, CLIENT, 80), Verdict::DefaultDeny { isolating: vec![] });
    let from_host =
        Flow { src: Address::Host, dst: Address::Ip(ip(WEB)), proto: TCP, port: Some(1) };
    assert_eq!(always.evaluate(&from_host).ingress, Some(allowed(BUILT_IN, HOST_RULE)));

    let never = Reference::from_parts(&policies, endpoints())
        .with_options(Options { enforcement: Enforcement::Never, ..Options::default() });
    assert_eq!(at_web(&never, DB, 81), Verdict::NotIsolated);
}

#[test]
fn an_admin_allow_beats_a_default_tier_deny_and_an_admin_deny_beats_the_host_rule() {
    let policies = [
        tiered(
            "admin",
            Tier::Admin,
            0,
            "web",
            &[],
            vec![
                ingress(Action::Allow, from("client"), tcp(22)),
                ingress(Action::Deny, Some(vec![Peer::Entity(Entity::Host)]), vec![]),
            ],
        ),
        policy(
            "cnp",
            "web",
            &[Direction::Ingress],
            vec![ingress(Action::Deny, from("client"), vec![])],
        ),
    ];
    let r = Reference::from_parts(&policies, endpoints());
    assert_eq!(at_web(&r, CLIENT, 22), allowed("admin", "rule[0]"));
    assert_eq!(at_web(&r, CLIENT, 23), denied("cnp", "rule[0]"));
    let from_host =
        Flow { src: Address::Host, dst: Address::Ip(ip(WEB)), proto: TCP, port: Some(1) };
    assert_eq!(r.evaluate(&from_host).ingress, Some(denied("admin", "rule[1]")));
}
