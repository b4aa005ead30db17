use std::collections::BTreeSet;

use policy_lang::Span;
use policy_lang::ast::{Cidr, LabelSelector, Operator, Protocol, Requirement};

use super::*;

const TCP: u8 = 6;
const UDP: u8 = 17;
const SCTP: u8 = 132;
const ICMP: u8 = 1;

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn select(pairs: &[(&str, &str)]) -> LabelSelector {
    LabelSelector { match_labels: labels(pairs), ..LabelSelector::default() }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn cidr(s: &str) -> Cidr {
    let (addr, prefix) = s.split_once('/').unwrap();
    Cidr { addr: ip(addr), prefix: prefix.parse().unwrap() }
}

fn endpoint(name: &str, app: &str, address: &str, ports: &[(&str, u16, Protocol)]) -> Endpoint {
    Endpoint {
        name: name.into(),
        labels: labels(&[("app", app), (identity::NAMESPACE_LABEL, "ns")]),
        addresses: vec![ip(address)],
        ports: ports
            .iter()
            .map(|(n, port, protocol)| ContainerPort {
                name: Some(n.to_string()),
                port: *port,
                protocol: *protocol,
            })
            .collect(),
        host: false,
    }
}

fn endpoints() -> Vec<Endpoint> {
    vec![
        endpoint("ns/web", "web", "10.0.0.1", &[("http", 8080, Protocol::Tcp)]),
        endpoint("ns/client", "client", "10.0.0.2", &[("http", 9090, Protocol::Tcp)]),
        endpoint("ns/db", "db", "10.0.0.3", &[("dns", 53, Protocol::Udp)]),
    ]
}

fn rule(
    direction: Direction,
    action: Action,
    peers: Option<Vec<Peer>>,
    ports: Vec<PortMatch>,
) -> Rule {
    Rule { direction, action, peers, ports, label: String::new(), span: Span::default() }
}

fn port(proto: Option<u8>, port: PortSpec) -> PortMatch {
    PortMatch { proto, port, span: Span::default() }
}

/// A policy on `app=<subject>` isolating `isolates`, rules labelled `rule[i]`.
fn policy(name: &str, subject: &str, isolates: &[Direction], rules: Vec<Rule>) -> Policy {
    let rules = rules
        .into_iter()
        .enumerate()
        .map(|(i, r)| Rule { label: format!("rule[{i}]"), ..r })
        .collect();
    Policy {
        name: name.into(),
        tier: crate::ir::Tier::Default,
        priority: 0,
        subject: select(&[("app", subject)]),
        nodes: false,
        isolates: isolates.iter().copied().collect::<BTreeSet<_>>(),
        rules,
        span: Span::default(),
    }
}

fn flow(src: &str, dst: &str, proto: u8, port: u16) -> Flow {
    Flow { src: Address::Ip(ip(src)), dst: Address::Ip(ip(dst)), proto, port: Some(port) }
}

fn allowed(policy: &str, rule: &str) -> Verdict {
    Verdict::Allowed { policy: policy.into(), rule: rule.into() }
}

const WEB: &str = "10.0.0.1";
const CLIENT: &str = "10.0.0.2";
const DB: &str = "10.0.0.3";
const OUTSIDE: &str = "192.0.2.7";

#[test]
fn unselected_endpoints_are_not_isolated() {
    let policies = [policy("p", "web", &[Direction::Ingress], vec![])];
    let r = Reference::from_parts(&policies, endpoints());
    let v = r.evaluate(&flow(WEB, CLIENT, TCP, 80));
    assert_eq!(v.egress, Some(Verdict::NotIsolated));
    assert_eq!(v.ingress, Some(Verdict::NotIsolated));
    assert!(v.passes());
}

#[test]
fn isolation_without_allows_is_default_deny_naming_the_policy() {
    let policies = [policy("p", "web", &[Direction::Ingress], vec![])];
    let r = Reference::from_parts(&policies, endpoints());
    let v = r.evaluate(&flow(CLIENT, WEB, TCP, 80));
    assert_eq!(v.ingress, Some(Verdict::DefaultDeny { isolating: vec!["p".into()] }));
    assert!(!v.passes());
}

#[test]
fn a_side_that_is_no_endpoint_is_not_judged() {
    let policies = [policy("p", "web", &[Direction::Egress], vec![])];
    let r = Reference::from_parts(&policies, endpoints());
    let v = r.evaluate(&flow(OUTSIDE, WEB, TCP, 80));
    assert_eq!(v.egress, None);
    assert_eq!(v.ingress, Some(Verdict::NotIsolated));
    let v = r.evaluate(&flow(WEB, OUTSIDE, TCP, 80));
    assert!(matches!(v.egress, Some(Verdict::DefaultDeny { .. })));
    assert_eq!(v.ingress, None);
}

#[test]
fn allows_add_up_and_name_the_first_rule_in_policy_order() {
    let from_client = || Some(vec![Peer::Endpoints(select(&[("app", "client")]))]);
    let policies = [
        policy(
            "a",
            "web",
            &[Direction::Ingress],
            vec![rule(
                Direction::Ingress,
                Action::Allow,
                from_client(),
                vec![port(Some(TCP), PortSpec::Range(80, 80))],
            )],
        ),
        policy(
            "b",
            "web",
            &[Direction::Ingress],
            vec![rule(Direction::Ingress, Action::Allow, from_client(), vec![])],
        ),
    ];
    let r = Reference::from_parts(&policies, endpoints());
    assert_eq!(r.evaluate(&flow(CLIENT, WEB, TCP, 80)).ingress, Some(allowed("a", "rule[0]")));
    assert_eq!(r.evaluate(&flow(CLIENT, WEB, UDP, 53)).ingress, Some(allowed("b", "rule[0]")));
    assert!(!r.evaluate(&flow(DB, WEB, TCP, 80)).passes());
}

#[test]
fn deny_beats_allow_even_where_the_direction_is_not_isolated() {
    let policies = [policy(
        "p",
        "web",
        &[],
        vec![
            rule(Direction::Ingress, Action::Allow, None, vec![]),
            rule(
                Direction::Ingress,
                Action::Deny,
                None,
                vec![port(Some(TCP), PortSpec::Range(80, 80))],
            ),
        ],
    )];
    let r = Reference::from_parts(&policies, endpoints());
    let denied = Verdict::Denied { policy: "p".into(), rule: "rule[1]".into() };
    assert_eq!(r.evaluate(&flow(CLIENT, WEB, TCP, 80)).ingress, Some(denied));
    assert_eq!(r.evaluate(&flow(CLIENT, WEB, TCP, 81)).ingress, Some(Verdict::NotIsolated));
}

#[test]
fn ingress_from_the_host_is_allowed_by_the_built_in_rule() {
    let policies = [policy("p", "web", &[Direction::Ingress], vec![])];
    let r = Reference::from_parts(&policies, endpoints());
    let from_host =
        Flow { src: Address::Host, dst: Address::Ip(ip(WEB)), proto: TCP, port: Some(80) };
    assert_eq!(r.evaluate(&from_host).ingress, Some(allowed(BUILT_IN, HOST_RULE)));
    // A deny still wins over it.
    let policies = [policy(
        "p",
        "web",
        &[Direction::Ingress],
        vec![rule(
            Direction::Ingress,
            Action::Deny,
            Some(vec![Peer::Entity(Entity::Host)]),
            vec![],
        )],
    )];
    let r = Reference::from_parts(&policies, endpoints());
    assert!(matches!(r.evaluate(&from_host).ingress, Some(Verdict::Denied { .. })));
}

#[test]
fn ipblocks_skip_pod_addresses_unless_switched_to_upstream_semantics() {
    let block = Peer::Cidr { cidr: cidr("10.0.0.0/8"), except: vec![cidr("10.0.0.3/32")] };
    let policies = [policy(
        "p",
        "web",
        &[Direction::Egress],
        vec![rule(Direction::Egress, Action::Allow, Some(vec![block]), vec![])],
    )];
    let cilium = Reference::from_parts(&policies, endpoints());
    assert!(cilium.evaluate(&flow(WEB, "10.9.9.9", TCP, 80)).passes());
    assert!(!cilium.evaluate(&flow(WEB, CLIENT, TCP, 80)).passes());
    assert!(!cilium.evaluate(&flow(WEB, "11.0.0.1", TCP, 80)).passes());

    let upstream = Reference::from_parts(&policies, endpoints())
        .with_options(Options { ipblock_matches_pods: true, ..Options::default() });
    assert!(upstream.evaluate(&flow(WEB, CLIENT, TCP, 80)).passes());
    assert!(!upstream.evaluate(&flow(WEB, DB, TCP, 80)).passes(), "in except");
}

#[test]
fn entities_match_by_what_the_address_is() {
    let to = |entity| {
        [policy(
            "p",
            "web",
            &[Direction::Egress],
            vec![rule(Direction::Egress, Action::Allow, Some(vec![Peer::Entity(entity)]), vec![])],
        )]
    };
    let cases = [
        (Entity::World, [false, true, false]),
        (Entity::Cluster, [true, false, true]),
        (Entity::All, [true, true, true]),
        (Entity::Host, [false, false, true]),
        (Entity::RemoteNode, [false, false, false]),
    ];
    for (entity, expect) in cases {
        let policies = to(entity);
        let r = Reference::from_parts(&policies, endpoints());
        let dsts = [Address::Ip(ip(CLIENT)), Address::Ip(ip(OUTSIDE)), Address::Host];
        for (dst, want) in dsts.into_iter().zip(expect) {
            let f = Flow { src: Address::Ip(ip(WEB)), dst, proto: TCP, port: Some(80) };
            assert_eq!(r.evaluate(&f).passes(), want, "{entity:?} to {dst:?}");
        }
    }
}

#[test]
fn named_ports_resolve_against_the_destination_pod() {
    let named = || vec![port(Some(TCP), PortSpec::Named("http".into()))];
    let policies = [
        policy(
            "in",
            "web",
            &[Direction::Ingress],
            vec![rule(Direction::Ingress, Action::Allow, None, named())],
        ),
        policy(
            "out",
            "db",
            &[Direction::Egress],
            vec![rule(Direction::Egress, Action::Allow, None, named())],
        ),
    ];
    let r = Reference::from_parts(&policies, endpoints());
    // web names 8080 `http`; client names 9090 `http`.
    assert!(r.evaluate(&flow(CLIENT, WEB, TCP, 8080)).passes());
    assert!(!r.evaluate(&flow(CLIENT, WEB, TCP, 9090)).passes());
    assert!(!r.evaluate(&flow(CLIENT, WEB, UDP, 8080)).passes(), "the name is TCP's");
    assert!(r.evaluate(&flow(DB, CLIENT, TCP, 9090)).passes());
    assert!(!r.evaluate(&flow(DB, CLIENT, TCP, 8080)).passes());
    assert!(!r.evaluate(&flow(DB, OUTSIDE, TCP, 8080)).passes(), "no pod, no names");
}

#[test]
fn ports_without_protocol_mean_tcp_udp_and_sctp_and_icmp_types_use_the_port_slot() {
    let policies = [policy(
        "p",
        "web",
        &[Direction::Ingress],
        vec![rule(
            Direction::Ingress,
            Action::Allow,
            None,
            vec![port(None, PortSpec::Range(80, 81)), port(Some(ICMP), PortSpec::IcmpType(8))],
        )],
    )];
    let r = Reference::from_parts(&policies, endpoints());
    for proto in [TCP, UDP, SCTP] {
        assert!(r.evaluate(&flow(CLIENT, WEB, proto, 81)).passes());
        assert!(!r.evaluate(&flow(CLIENT, WEB, proto, 82)).passes());
    }
    assert!(r.evaluate(&flow(CLIENT, WEB, ICMP, 8)).passes());
    assert!(!r.evaluate(&flow(CLIENT, WEB, ICMP, 0)).passes());
    assert!(!r.evaluate(&flow(CLIENT, WEB, ICMP, 80)).passes(), "ICMP is not a port protocol");

    let any = [policy(
        "p",
        "web",
        &[Direction::Ingress],
        vec![rule(Direction::Ingress, Action::Allow, None, vec![port(None, PortSpec::Any)])],
    )];
    let r = Reference::from_parts(&any, endpoints());
    assert!(r.evaluate(&flow(CLIENT, WEB, ICMP, 8)).passes());
}

#[test]
fn selectors_match_endpoint_labels_with_every_operator() {
    let selector = LabelSelector {
        match_expressions: vec![Requirement {
            key: "app".into(),
            operator: Operator::NotIn,
            values: vec!["db".into()],
        }],
        ..LabelSelector::default()
    };
    let policies = [policy(
        "p",
        "web",
        &[Direction::Ingress],
        vec![rule(
            Direction::Ingress,
            Action::Allow,
            Some(vec![Peer::Endpoints(selector)]),
            vec![],
        )],
    )];
    let r = Reference::from_parts(&policies, endpoints());
    assert!(r.evaluate(&flow(CLIENT, WEB, TCP, 1)).passes());
    assert!(!r.evaluate(&flow(DB, WEB, TCP, 1)).passes());
    assert!(!r.evaluate(&flow(OUTSIDE, WEB, TCP, 1)).passes(), "a non-pod never matches");
}

mod tiers;

#[test]
fn replies_pass_at_each_endpoint_that_let_the_connection_through() {
    // web accepts client on TCP 80; client is isolated both ways and may only call web.
    let policies = [
        policy(
            "web-in",
            "web",
            &[Direction::Ingress],
            vec![rule(
                Direction::Ingress,
                Action::Allow,
                Some(vec![Peer::Endpoints(select(&[("app", "client")]))]),
                vec![port(Some(TCP), PortSpec::Range(80, 80))],
            )],
        ),
        policy(
            "client-out",
            "client",
            &[Direction::Ingress, Direction::Egress],
            vec![rule(
                Direction::Egress,
                Action::Allow,
                Some(vec![Peer::Endpoints(select(&[("app", "web")]))]),
                vec![],
            )],
        ),
    ];
    let r = Reference::from_parts(&policies, endpoints());
    let call = flow(CLIENT, WEB, TCP, 80);
    assert!(r.evaluate(&call).passes());
    // The replies go web -> client, a connection client's ingress would refuse as new
    // (from web's port 80 to client's ephemeral port), and pass as replies at both ends,
    // each naming the rule that allowed the original flow there.
    assert!(!r.evaluate(&flow(WEB, CLIENT, TCP, 40000)).passes());
    let reply = r.reply(&call);
    assert_eq!(reply.egress, Some(allowed("web-in", "rule[0]")), "at web, where replies leave");
    assert_eq!(reply.ingress, Some(allowed("client-out", "rule[0]")), "at client");
    assert!(reply.passes());

    // Where no policy isolates a direction, the forward packet passes unchecked, and its
    // replies pass as well.
    let reply = r.reply(&flow(WEB, DB, TCP, 5432));
    assert_eq!(reply.ingress, Some(Verdict::NotIsolated));
    assert_eq!(reply.egress, Some(Verdict::NotIsolated));

    // Refused at web's ingress: web holds no entry, so nothing passes there as a reply,
    // while client, whose egress let the packet out, holds one.
    let refused = flow(CLIENT, WEB, TCP, 81);
    let reply = r.reply(&refused);
    assert_eq!(reply.egress, Some(Verdict::DefaultDeny { isolating: vec!["web-in".into()] }));
    assert_eq!(reply.ingress, Some(allowed("client-out", "rule[0]")));
    assert!(!reply.passes());

    // An end that is no endpoint tracks nothing and enforces nothing.
    let reply = r.reply(&flow(OUTSIDE, WEB, TCP, 80));
    assert_eq!(reply.ingress, None);
    assert_eq!(reply.egress, Some(Verdict::DefaultDeny { isolating: vec!["web-in".into()] }));
}

#[test]
fn a_pod_without_an_address_is_judged_by_its_labels_and_matches_no_ipblock() {
    let block = Peer::Cidr { cidr: cidr("0.0.0.0/0"), except: vec![] };
    let policies = [policy(
        "p",
        "web",
        &[Direction::Ingress, Direction::Egress],
        vec![
            rule(
                Direction::Ingress,
                Action::Allow,
                Some(vec![Peer::Endpoints(select(&[("app", "client")]))]),
                vec![],
            ),
            rule(Direction::Egress, Action::Allow, Some(vec![block]), vec![]),
            rule(
                Direction::Egress,
                Action::Allow,
                Some(vec![Peer::Entity(Entity::Cluster)]),
                tcp_81(),
            ),
        ],
    )];
    for ipblock_matches_pods in [false, true] {
        let mut r = Reference::from_parts(&policies, endpoints())
            .with_options(Options { ipblock_matches_pods, ..Options::default() });
        let mut client = endpoint("ns/client-2", "client", "10.9.9.9", &[]);
        client.addresses.clear();
        let client = r.add_unaddressed(client);
        let new_web = r.add_unaddressed(Endpoint {
            addresses: vec![],
            ..endpoint("ns/web-2", "web", "10.9.9.8", &[])
        });
        let to = |src, dst, port| Flow { src, dst, proto: TCP, port: Some(port) };
        let web = Address::Ip(ip(WEB));
        assert_eq!(r.evaluate(&to(client, web, 80)).ingress, Some(allowed("p", "rule[0]")));
        // As the subject: selected by its labels. 0.0.0.0/0 holds no pod without an
        // address, in either ipBlock mode; the cluster entity does.
        let v = r.evaluate(&to(new_web, client, 80));
        assert!(matches!(v.egress, Some(Verdict::DefaultDeny { .. })), "{ipblock_matches_pods}");
        assert_eq!(r.evaluate(&to(new_web, client, 81)).egress, Some(allowed("p", "rule[2]")));
        assert_eq!(r.evaluate(&to(client, new_web, 80)).ingress, Some(allowed("p", "rule[0]")));
    }
}

fn tcp_81() -> Vec<PortMatch> {
    vec![port(Some(TCP), PortSpec::Range(81, 81))]
}
