//! Property tests of the front end as a whole: valid policies survive printing and
//! parsing unchanged, and no input, however broken, makes the front end panic.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use policy_lang::ast::{
    Cidr, Direction, LabelSelector, Labels, NetPeer, NetPort, NetRule, NetworkPolicy, ObjectMeta,
    Operator, PortRef, Protocol, Requirement, Sp,
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
