//! Property tests of the front end as a whole: valid policies of every kind survive
//! printing and parsing unchanged, and no input, however broken, makes the front end
//! panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policy_lang::ast::{
    Cidr, Direction, LabelSelector, Labels, NetPeer, NetPort, NetRule, NetworkPolicy, ObjectMeta,
    Operator, PortRef, Protocol, Requirement, Sp,
};
use policy_lang::ast_cilium::{
    CiliumL4, CiliumPeer, CiliumPeerRule, CiliumPolicy, CiliumPort, CiliumPortSpec, CiliumRule,
    Entity, IcmpFamily, IcmpMatch,
};
use policy_lang::{Severity, Sources, Span, fuzzing, load_sources, print, selector_expr};
use proptest::collection::{btree_map, vec};
use proptest::option;
use proptest::prelude::*;
use proptest::sample::Index;

/// Enough cases to meet every shape several times while keeping `cargo test` quick.
const CASES: u32 = 256;

const DEMO_POLICIES: &str = include_str!("../../fixtures/demo/policies.yaml");

fn dns_label() -> impl Strategy<Value = String> {
    "[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?"
}

fn dns_subdomain() -> impl Strategy<Value = String> {
    vec(dns_label(), 1..3).prop_map(|labels| labels.join("."))
}

/// The name part of a label key, and a non-empty label value.
fn label_name() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]([A-Za-z0-9._-]{0,10}[A-Za-z0-9])?"
}

fn label_key() -> impl Strategy<Value = String> {
    (option::of(dns_subdomain()), label_name()).prop_map(|(prefix, name)| match prefix {
        Some(prefix) => format!("{prefix}/{name}"),
        None => name,
    })
}

fn label_value() -> impl Strategy<Value = String> {
    prop_oneof![1 => Just(String::new()), 4 => label_name()]
}

fn labels() -> impl Strategy<Value = Labels> {
    btree_map(label_key(), label_value(), 0..3)
}

fn requirement() -> impl Strategy<Value = Requirement> {
    let operator = prop_oneof![
        Just(Operator::In),
        Just(Operator::NotIn),
        Just(Operator::Exists),
        Just(Operator::DoesNotExist),
    ];
    (label_key(), operator, vec(label_value(), 1..4)).prop_map(|(key, operator, mut values)| {
        if matches!(operator, Operator::Exists | Operator::DoesNotExist) {
            values.clear();
        }
        values.sort();
        values.dedup();
        Requirement { key, operator, values }
    })
}

/// A selector in the canonical form the front end produces: expressions sorted and
/// deduplicated, no span.
fn selector() -> impl Strategy<Value = LabelSelector> {
    (labels(), vec(requirement(), 0..3)).prop_map(|(match_labels, mut match_expressions)| {
        match_expressions.sort();
        match_expressions.dedup();
        LabelSelector { match_labels, match_expressions, span: Span::default() }
    })
}

fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(v4) & mask))
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
}

fn cidr() -> impl Strategy<Value = Cidr> {
    prop_oneof![
        (any::<u32>(), 0u8..=32).prop_map(|(a, prefix)| (IpAddr::V4(a.into()), prefix)),
        (any::<u128>(), 0u8..=128).prop_map(|(a, prefix)| (IpAddr::V6(a.into()), prefix)),
    ]
    .prop_map(|(addr, prefix)| Cidr { addr: masked(addr, prefix), prefix })
}

/// The prefix of length `prefix` inside `cidr` that holds the cidr's network bits and
/// `bits` as host bits.
fn inside(cidr: Cidr, bits: u128, prefix: u8) -> Cidr {
    let addr = match cidr.addr {
        IpAddr::V4(net) => {
            let host = u32::MAX.checked_shr(u32::from(cidr.prefix)).unwrap_or(0);
            IpAddr::V4(Ipv4Addr::from(u32::from(net) | (bits as u32 & host)))
        }
        IpAddr::V6(net) => {
            let host = u128::MAX.checked_shr(u32::from(cidr.prefix)).unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(net) | (bits & host)))
        }
    };
    Cidr { addr: masked(addr, prefix), prefix }
}

/// An ipBlock whose except entries lie strictly inside its cidr.
fn ip_block() -> impl Strategy<Value = NetPeer> {
    (cidr(), vec((any::<u128>(), any::<Index>()), 0..3)).prop_map(|(cidr, subnets)| {
        let max = if cidr.addr.is_ipv4() { 32 } else { 128 };
        let mut except: Vec<Cidr> = Vec::new();
        if cidr.prefix < max {
            for (bits, len) in subnets {
                let prefix = cidr.prefix + 1 + len.index(usize::from(max - cidr.prefix)) as u8;
                except.push(inside(cidr, bits, prefix));
            }
        }
        except.sort();
        except.dedup();
        NetPeer::IpBlock { cidr, except, span: Span::default() }
    })
}

fn peer() -> impl Strategy<Value = NetPeer> {
    let pods = (0..3u8, selector(), selector()).prop_map(|(shape, ns, pod)| NetPeer::Pods {
        namespace_selector: (shape != 0).then_some(ns),
        pod_selector: (shape != 1).then_some(pod),
        span: Span::default(),
    });
    prop_oneof![2 => pods, 1 => ip_block()]
}

/// IANA service names: lowercase letters and digits, single inner dashes, a letter
/// first, at most 15 characters.
fn port_name() -> impl Strategy<Value = String> {
    "[a-z]([a-z0-9]|-[a-z0-9]){0,6}"
}

fn port() -> impl Strategy<Value = NetPort> {
    let protocol = prop_oneof![Just(Protocol::Tcp), Just(Protocol::Udp), Just(Protocol::Sctp)];
    let numeric = (1u16..=65535)
        .prop_flat_map(|start| (Just(start), option::of(start..=65535)))
        .prop_map(|(start, end)| (Some(PortRef::Number(start)), end));
    let target = prop_oneof![
        1 => Just((None, None)),
        3 => numeric,
        1 => port_name().prop_map(|name| (Some(PortRef::Name(name)), None)),
    ];
    (protocol, target).prop_map(|(protocol, (port, end_port))| NetPort {
        protocol,
        port,
        end_port,
        span: Span::default(),
    })
}

fn rule() -> impl Strategy<Value = NetRule> {
    (vec(peer(), 0..3), vec(port(), 0..3)).prop_map(|(peers, ports)| NetRule {
        peers,
        ports,
        span: Span::default(),
    })
}

fn policy() -> impl Strategy<Value = NetworkPolicy> {
    // Never empty: the front end defaults an empty list as the API server does.
    let types = prop_oneof![
        Just(vec![Direction::Ingress]),
        Just(vec![Direction::Egress]),
        Just(vec![Direction::Ingress, Direction::Egress]),
    ];
    let meta =
        (dns_subdomain(), dns_label(), labels()).prop_map(|(name, namespace, labels)| ObjectMeta {
            name: Sp::new(name, Span::default()),
            namespace,
            labels,
            span: Span::default(),
        });
    (meta, selector(), types, vec(rule(), 0..3), vec(rule(), 0..3)).prop_map(
        |(meta, pod_selector, policy_types, ingress, egress)| NetworkPolicy {
            meta,
            pod_selector,
            policy_types,
            ingress,
            egress,
        },
    )
}

/// One to three policies with distinct names, so none is a duplicate of another.
fn policies() -> impl Strategy<Value = Vec<NetworkPolicy>> {
    vec(policy(), 1..4).prop_map(|mut policies| {
        for (i, p) in policies.iter_mut().enumerate() {
            p.meta.name.value = format!("{}-{i}", p.meta.name.value);
        }
        policies
    })
}

/// Entities a `reserved:` label may name among endpoint selectors: all but `all` and
/// `cluster`, which are not reserved labels.
fn reserved_entity() -> impl Strategy<Value = Entity> {
    prop::sample::select(
        Entity::ALL
            .iter()
            .copied()
            .filter(|e| !matches!(e, Entity::All | Entity::Cluster))
            .collect::<Vec<_>>(),
    )
}

/// The peers of one rule, of one kind, as Cilium requires: endpoint selectors (with
/// reserved identities among them), entities, or CIDRs with their exceptions.
fn cilium_peers() -> impl Strategy<Value = Vec<CiliumPeer>> {
    let endpoint = prop_oneof![
        3 => selector().prop_map(CiliumPeer::Endpoints),
        1 => reserved_entity().prop_map(|e| CiliumPeer::Entity(Sp::new(e, Span::default()))),
    ];
    let entity = prop::sample::select(Entity::ALL.to_vec())
        .prop_map(|e| CiliumPeer::Entity(Sp::new(e, Span::default())));
    let cidr = ip_block().prop_map(|peer| match peer {
        NetPeer::IpBlock { cidr, except, span } => CiliumPeer::Cidr { cidr, except, span },
        NetPeer::Pods { .. } => unreachable!("ip_block makes ipBlocks"),
    });
    prop_oneof![vec(endpoint, 0..3), vec(entity, 1..3), vec(cidr, 1..3)]
}

fn cilium_port() -> impl Strategy<Value = CiliumPort> {
    let protocol = prop_oneof![
        Just(None),
        Just(Some(Protocol::Tcp)),
        Just(Some(Protocol::Udp)),
        Just(Some(Protocol::Sctp)),
    ];
    let range = (1u16..=65535)
        .prop_flat_map(|start| (Just(start), start..=65535))
        .prop_map(|(start, end)| CiliumPortSpec::Range(start, end));
    let spec = prop_oneof![
        1 => Just(CiliumPortSpec::All),
        2 => (1u16..=65535).prop_map(|p| CiliumPortSpec::Range(p, p)),
        2 => range,
        1 => port_name().prop_map(CiliumPortSpec::Named),
    ];
    (protocol, spec).prop_map(|(protocol, port)| CiliumPort {
        protocol,
        port,
        span: Span::default(),
    })
}

fn icmp() -> impl Strategy<Value = IcmpMatch> {
    let family = prop_oneof![Just(IcmpFamily::V4), Just(IcmpFamily::V6)];
    (family, any::<u8>()).prop_map(|(family, icmp_type)| IcmpMatch {
        family,
        icmp_type,
        span: Span::default(),
    })
}

/// No L4 part, ports (some entries list more than Cilium's 40 per entry, which printing
/// must split), ICMP types, or an L4 part that lists nothing.
fn cilium_l4() -> impl Strategy<Value = Option<CiliumL4>> {
    prop_oneof![
        2 => Just(None),
        3 => vec(cilium_port(), 1..4).prop_map(|ports| Some(CiliumL4 { ports, icmps: vec![] })),
        1 => vec(cilium_port(), 41..45).prop_map(|ports| Some(CiliumL4 { ports, icmps: vec![] })),
        1 => vec(icmp(), 1..4).prop_map(|icmps| Some(CiliumL4 { ports: vec![], icmps })),
        1 => Just(Some(CiliumL4 { ports: vec![], icmps: vec![] })),
    ]
}

fn cilium_entries() -> impl Strategy<Value = Vec<CiliumPeerRule>> {
    let entry = (option::of(cilium_peers()), cilium_l4());
    vec(entry, 0..3).prop_map(|entries| {
        entries
            .into_iter()
            .enumerate()
            .map(|(index, (peers, l4))| CiliumPeerRule { peers, l4, index, span: Span::default() })
            .collect()
    })
}

fn cilium_rule() -> impl Strategy<Value = CiliumRule> {
    let lists = (cilium_entries(), cilium_entries(), cilium_entries(), cilium_entries());
    (selector(), any::<(bool, bool, bool)>(), lists).prop_map(
        |(subject, (nodes, default_deny_ingress, default_deny_egress), lists)| CiliumRule {
            index: None,
            subject,
            // Made `false` again below for a namespaced policy, which cannot select nodes.
            nodes,
            default_deny_ingress,
            default_deny_egress,
            ingress: lists.0,
            ingress_deny: lists.1,
            egress: lists.2,
            egress_deny: lists.3,
            span: Span::default(),
        },
    )
}

fn cilium_policy() -> impl Strategy<Value = CiliumPolicy> {
    // 0: `spec` alone, 1: `specs` alone, 2: both.
    let rules = (0..3u8, vec(cilium_rule(), 1..3)).prop_map(|(shape, mut rules)| {
        let first_is_spec = shape != 1;
        if shape == 2 && rules.len() == 1 {
            rules.push(rules[0].clone());
        }
        let offset = usize::from(first_is_spec);
        for (i, rule) in rules.iter_mut().enumerate() {
            rule.index = if i == 0 && first_is_spec { None } else { Some(i - offset) };
        }
        if shape == 0 {
            rules.truncate(1);
        }
        rules
    });
    (any::<bool>(), dns_subdomain(), dns_label(), labels(), rules).prop_map(
        |(clusterwide, name, namespace, labels, mut rules)| CiliumPolicy {
            rules: {
                for rule in &mut rules {
                    rule.nodes &= clusterwide;
                }
                rules
            },
            meta: ObjectMeta {
                name: Sp::new(name, Span::default()),
                namespace: if clusterwide { String::new() } else { namespace },
                labels,
                span: Span::default(),
            },
            clusterwide,
        },
    )
}

/// One to three Cilium policies with distinct names.
fn cilium_policies() -> impl Strategy<Value = Vec<CiliumPolicy>> {
    vec(cilium_policy(), 1..4).prop_map(|mut policies| {
        for (i, p) in policies.iter_mut().enumerate() {
            p.meta.name.value = format!("{}-{i}", p.meta.name.value);
        }
        policies
    })
}

#[derive(Clone, Debug)]
enum Mutation {
    Replace(Index, u8),
    Insert(Index, u8),
    Delete(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Bytes that matter to YAML are more likely than random ones.
    let byte = prop_oneof![
        3 => any::<u8>(),
        2 => prop::sample::select(b":-{}[],'\"\n #&*!|>?%@`\t\\".to_vec()),
    ];
    prop_oneof![
        (any::<Index>(), byte.clone()).prop_map(|(i, b)| Mutation::Replace(i, b)),
        (any::<Index>(), byte).prop_map(|(i, b)| Mutation::Insert(i, b)),
        any::<Index>().prop_map(Mutation::Delete),
    ]
}

fn mutate(text: &str, mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = text.as_bytes().to_vec();
    for m in mutations {
        match *m {
            Mutation::Replace(i, b) if !bytes.is_empty() => {
                let at = i.index(bytes.len());
                bytes[at] = b;
            }
            Mutation::Insert(i, b) => {
                let at = i.index(bytes.len() + 1);
                bytes.insert(at, b);
            }
            Mutation::Delete(i) if !bytes.is_empty() => {
                bytes.remove(i.index(bytes.len()));
            }
            _ => {}
        }
    }
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn printed_policies_parse_back_to_the_same_ast(policies in policies()) {
        let text = print::network_policies(&policies);
        let mut sources = Sources::default();
        sources.add("printed.yaml", text.as_str());
        let bundle = load_sources(&sources);

        let errors: Vec<String> = bundle
            .diagnostics
            .iter()
            .filter(|d| d.severity() == Severity::Error)
            .map(|d| d.render(&sources))
            .collect();
        prop_assert!(errors.is_empty(), "{text}\n{}", errors.concat());
        let parsed: Vec<_> = bundle.network_policies.iter().map(fuzzing::without_spans).collect();
        prop_assert_eq!(parsed, policies, "{}", text);
    }

    #[test]
    fn printed_cilium_policies_parse_back_to_the_same_ast(policies in cilium_policies()) {
        let text = print::cilium_policies(&policies);
        let mut sources = Sources::default();
        sources.add("printed.yaml", text.as_str());
        let bundle = load_sources(&sources);

        let errors: Vec<String> = bundle
            .diagnostics
            .iter()
            .filter(|d| d.severity() == Severity::Error)
            .map(|d| d.render(&sources))
            .collect();
        prop_assert!(errors.is_empty(), "{text}\n{}", errors.concat());
        let parsed: Vec<_> =
            bundle.cilium_policies.iter().map(fuzzing::cilium_without_spans).collect();
        prop_assert_eq!(parsed, policies, "{}", text);
    }

    #[test]
    fn front_end_survives_cilium_like_strings(
        text in "([a-zA-Z0-9:{}\\[\\],'\" \n/.-]|apiVersion: cilium.io/v2\n|kind: CiliumNetworkPolicy\n|kind: CiliumClusterwideNetworkPolicy\n|specs?:|endpointSelector|nodeSelector|ingress|egressDeny|fromEndpoints|toEntities|fromCIDRSet|except|toPorts|port|endPort|protocol: ANY|icmps|fields|type|family|enableDefaultDeny|matchLabels|k8s:|reserved:host|  - ){0,120}"
    ) {
        fuzzing::front_end(text.as_bytes());
    }

    #[test]
    fn front_end_survives_mutated_printed_cilium_policies(
        policies in cilium_policies(),
        mutations in vec(mutation(), 1..8),
    ) {
        let bytes = mutate(&print::cilium_policies(&policies), &mutations);
        fuzzing::front_end(String::from_utf8_lossy(&bytes).as_bytes());
    }

    #[test]
    fn printed_selector_expressions_parse_back(selector in selector()) {
        let text = selector_expr::to_expr(&selector);
        let mut sources = Sources::default();
        let parsed = selector_expr::parse_cli(&mut sources, &text);
        prop_assert!(parsed.is_ok(), "`{}`: {:?}", text, parsed);
        prop_assert_eq!(fuzzing::selector_without_span(&parsed.unwrap()), selector, "{}", text);
    }

    #[test]
    fn front_end_survives_any_string(text in any::<String>()) {
        fuzzing::front_end(text.as_bytes());
    }

    #[test]
    fn front_end_survives_yaml_like_strings(
        text in "([a-zA-Z0-9:{}\\[\\],'\" \n#&*!|>.-]|apiVersion|kind|spec|podSelector){0,120}"
    ) {
        fuzzing::front_end(text.as_bytes());
    }

    #[test]
    fn front_end_survives_mutated_demo_policies(mutations in vec(mutation(), 1..8)) {
        let bytes = mutate(DEMO_POLICIES, &mutations);
        fuzzing::front_end(String::from_utf8_lossy(&bytes).as_bytes());
    }

    #[test]
    fn front_end_survives_mutated_printed_policies(
        policies in policies(),
        mutations in vec(mutation(), 1..8),
    ) {
        let bytes = mutate(&print::network_policies(&policies), &mutations);
        fuzzing::front_end(String::from_utf8_lossy(&bytes).as_bytes());
    }

    #[test]
    fn selector_parser_survives_any_string(text in any::<String>()) {
        fuzzing::selector_expr(text.as_bytes());
    }

    #[test]
    fn selector_parser_survives_selector_like_strings(
        text in "([a-z./_-]|[!=(), \t]|in|notin){0,40}"
    ) {
        fuzzing::selector_expr(text.as_bytes());
    }
}
