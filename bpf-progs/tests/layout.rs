//! The Rust mirrors in `src/layout.rs` against the datapath they mirror, without a kernel.
//!
//! Three sources are compared with the mirrors: the map definitions of the committed
//! object (through aya-obj, as the loader will read them), the struct layouts in the
//! object's BTF (as clang laid them out from `c/policyc_maps.h`), and the constants
//! `#define`d in the header text itself. A change on either side that is not made on the
//! other fails here.

mod btf;

use std::collections::BTreeMap;
use std::mem::{offset_of, size_of};

use aya_obj::generated::bpf_map_type;
use aya_obj::maps::PinningType;
use aya_obj::{Object, ProgramSection};
use datapath::*;
use object::{Object as _, ObjectSection as _};

use btf::Btf;

/// `BPF_F_NO_PREALLOC` and `BPF_F_MMAPABLE` from `include/uapi/linux/bpf.h`.
const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_F_MMAPABLE: u32 = 1 << 10;

fn parsed_object() -> Object {
    Object::parse(datapath::OBJECT).expect("the committed object parses")
}

fn object_btf() -> Btf {
    let elf = object::File::parse(datapath::OBJECT).expect("the committed object is ELF");
    let section = elf.section_by_name(".BTF").expect("the object has a .BTF section");
    Btf::parse(section.data().expect(".BTF has data")).expect(".BTF parses")
}

// ---------------------------------------------------------------------------------------
// Map definitions

/// What the runtime assumes of one map.
#[derive(Debug, PartialEq, Eq)]
struct MapShape {
    map_type: u32,
    key_size: usize,
    value_size: usize,
    max_entries: u32,
    flags: u32,
    pinning: PinningType,
}

fn expected_maps() -> BTreeMap<&'static str, MapShape> {
    use bpf_map_type::*;
    let shape = |map_type: bpf_map_type, key_size, value_size, max_entries, flags| MapShape {
        map_type: map_type as u32,
        key_size,
        value_size,
        max_entries,
        flags,
        pinning: PinningType::ByName,
    };
    let u32_size = size_of::<u32>();
    BTreeMap::from([
        (
            map_names::CONFIG,
            shape(BPF_MAP_TYPE_ARRAY, u32_size, size_of::<Config>(), 1, BPF_F_MMAPABLE),
        ),
        (
            map_names::ENDPOINTS,
            shape(BPF_MAP_TYPE_HASH, u32_size, size_of::<EndpointInfo>(), capacity::ENDPOINTS, 0),
        ),
        (
            map_names::HOSTS,
            shape(
                BPF_MAP_TYPE_HASH,
                size_of::<HostKey>(),
                size_of::<IpcacheValue>(),
                capacity::HOSTS,
                BPF_F_NO_PREALLOC,
            ),
        ),
        (
            map_names::IPCACHE,
            shape(
                BPF_MAP_TYPE_LPM_TRIE,
                size_of::<IpcacheKey>(),
                size_of::<IpcacheValue>(),
                capacity::IPCACHE,
                BPF_F_NO_PREALLOC,
            ),
        ),
        (
            map_names::POLICY,
            shape(
                BPF_MAP_TYPE_HASH,
                size_of::<PolicyKey>(),
                size_of::<PolicyValue>(),
                capacity::POLICY,
                0,
            ),
        ),
        (
            map_names::CONNTRACK,
            shape(
                BPF_MAP_TYPE_LRU_HASH,
                size_of::<CtKey>(),
                size_of::<CtValue>(),
                capacity::CONNTRACK,
                0,
            ),
        ),
        (
            map_names::FRAGS,
            shape(
                BPF_MAP_TYPE_LRU_HASH,
                size_of::<FragKey>(),
                size_of::<FragValue>(),
                capacity::FRAGS,
                0,
            ),
        ),
        (
            map_names::METRICS,
            shape(
                BPF_MAP_TYPE_PERCPU_ARRAY,
                u32_size,
                size_of::<MetricsValue>(),
                capacity::METRICS,
                0,
            ),
        ),
        (map_names::EVENTS, shape(BPF_MAP_TYPE_RINGBUF, 0, 0, capacity::EVENTS, 0)),
        (
            map_names::EVENTS_STATE,
            shape(BPF_MAP_TYPE_PERCPU_ARRAY, u32_size, size_of::<EventState>(), 1, 0),
        ),
    ])
}

#[test]
fn object_defines_exactly_the_mirrored_maps() {
    let object = parsed_object();

    let found: Vec<&str> = {
        let mut names: Vec<&str> = object.maps.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    };
    let expected: Vec<&str> = expected_maps().into_keys().collect();
    assert_eq!(found, expected);
}

#[test]
fn object_maps_have_the_mirrored_types_sizes_capacities_and_pinning() {
    let object = parsed_object();

    for (name, expected) in expected_maps() {
        let map = &object.maps[name];
        let found = MapShape {
            map_type: map.map_type(),
            key_size: map.key_size() as usize,
            value_size: map.value_size() as usize,
            max_entries: map.max_entries(),
            flags: map.map_flags(),
            pinning: map.pinning(),
        };
        assert_eq!(found, expected, "map {name}");
    }
}

#[test]
fn object_has_both_programs_as_tc_classifiers() {
    let object = parsed_object();

    for name in [program_names::FROM_ENDPOINT, program_names::TO_ENDPOINT] {
        let program = object.programs.get(name).unwrap_or_else(|| panic!("no program {name}"));
        assert!(
            matches!(program.section, ProgramSection::SchedClassifier),
            "program {name} is in {:?}, not SEC(\"classifier\")",
            program.section
        );
    }
    assert_eq!(object.programs.len(), 2, "programs: {:?}", object.programs.keys());
}

#[test]
fn object_license_allows_gpl_only_helpers() {
    // The kernel reads the license section; "Dual BSD/GPL" counts as GPL-compatible.
    assert_eq!(parsed_object().license.to_str(), Ok("Dual BSD/GPL"));
}

// ---------------------------------------------------------------------------------------
// Struct layouts in BTF

/// A struct layout: its size and, for each member in order, name, byte offset and size.
#[derive(Debug, PartialEq, Eq)]
struct Layout {
    size: u64,
    members: Vec<(String, u64, u64)>,
}

/// The size of the field `field` projects to, without needing a value of `T`.
fn field_size<T, F>(_field: fn(&T) -> &F) -> u64 {
    size_of::<F>() as u64
}

/// The layout of a Rust mirror. Fields must be listed in declaration order; the
/// destructuring pattern, which has no `..`, fails to compile if one is missing.
macro_rules! rust_layout {
    ($ty:ident { $($field:ident),+ $(,)? }) => {{
        #[expect(unused_variables, reason = "the pattern only proves the list is complete")]
        let $ty { $($field),+ } = $ty::default();
        Layout {
            size: size_of::<$ty>() as u64,
            members: vec![$((
                stringify!($field).to_owned(),
                offset_of!($ty, $field) as u64,
                field_size(|v: &$ty| &v.$field),
            )),+],
        }
    }};
}

fn btf_layout(btf: &Btf, name: &str) -> Layout {
    let structs = btf.structs_named(name);
    assert_eq!(structs.len(), 1, "struct {name} must be in BTF exactly once (used by a map)");
    let ty = structs[0];
    let members = ty
        .members
        .iter()
        .map(|m| {
            assert_eq!(m.bitfield_size, 0, "{name}.{} is a bitfield", m.name);
            assert_eq!(m.bit_offset % 8, 0, "{name}.{} is not byte aligned", m.name);
            let size = btf.size_of(m.type_id).expect("member type has a size");
            (m.name.clone(), u64::from(m.bit_offset / 8), size)
        })
        .collect();
    Layout { size: u64::from(ty.size_or_type), members }
}

macro_rules! layout_test {
    ($test:ident, $c_name:literal, $ty:ident { $($field:ident),+ $(,)? }) => {
        #[test]
        fn $test() {
            let btf = object_btf();

            let expected = rust_layout!($ty { $($field),+ });
            assert_eq!(btf_layout(&btf, $c_name), expected, "struct {}", $c_name);
        }
    };
}

layout_test!(
    config_mirror_matches_btf,
    "config",
    Config { generation, flags, event_rate, event_burst, source_digest, artifact_checksum }
);
layout_test!(
    endpoint_policy_mirror_matches_btf,
    "endpoint_policy",
    EndpointPolicy {
        endpoint_id,
        identity,
        ingress_table,
        egress_table,
        ingress_port_bits,
        egress_port_bits
    }
);
layout_test!(
    endpoint_info_mirror_matches_btf,
    "endpoint_info",
    EndpointInfo { slot, metrics_row, flags }
);
layout_test!(host_key_mirror_matches_btf, "host_key", HostKey { family, pad, addr });
layout_test!(
    ipcache_key_mirror_matches_btf,
    "ipcache_key",
    IpcacheKey { prefixlen, family, pad, addr }
);
layout_test!(ipcache_value_mirror_matches_btf, "ipcache_value", IpcacheValue { identity });
layout_test!(
    policy_key_mirror_matches_btf,
    "policy_key",
    PolicyKey { table, identity, proto, port_bits, port }
);
layout_test!(
    policy_verdict_mirror_matches_btf,
    "policy_verdict",
    PolicyVerdict { verdict, pad, rule }
);
layout_test!(policy_value_mirror_matches_btf, "policy_value", PolicyValue { slot });
layout_test!(
    ct_key_mirror_matches_btf,
    "ct_key",
    CtKey { ifindex, family, proto, pad, ep_addr, peer_addr, ep_port, peer_port }
);
layout_test!(
    ct_value_mirror_matches_btf,
    "ct_value",
    CtValue { last_seen, rule, generation, checked, endpoint_id, metrics_row, direction, flags }
);
layout_test!(
    frag_key_mirror_matches_btf,
    "frag_key",
    FragKey { endpoint_id, family, proto, direction, pad, id, saddr, daddr }
);
layout_test!(
    frag_value_mirror_matches_btf,
    "frag_value",
    FragValue { first_seen_ns, rule, reason }
);
layout_test!(metrics_value_mirror_matches_btf, "metrics_value", MetricsValue { packets, bytes });
layout_test!(
    event_mirror_matches_btf,
    "event",
    Event {
        timestamp_ns,
        ifindex,
        endpoint_id,
        identity,
        peer_identity,
        reason,
        generation,
        entry,
        rule,
        length,
        direction,
        family,
        proto,
        pad,
        sport,
        dport,
        saddr,
        daddr,
        pad2
    }
);
layout_test!(
    event_state_mirror_matches_btf,
    "event_state",
    EventState { refilled_ns, tokens, sent, suppressed, lost }
);

#[test]
fn mirrors_have_no_implicit_padding() {
    // Every byte of a key is hashed by the kernel, so a padding byte the compiler
    // inserted (and nobody zeroed) would make equal keys differ.
    let btf = object_btf();

    for name in [
        "config",
        "endpoint_policy",
        "endpoint_info",
        "host_key",
        "ipcache_key",
        "ipcache_value",
        "policy_key",
        "policy_verdict",
        "policy_value",
        "ct_key",
        "ct_value",
        "frag_key",
        "frag_value",
        "metrics_value",
        "event",
        "event_state",
    ] {
        let layout = btf_layout(&btf, name);
        let mut end = 0;
        for (member, offset, size) in &layout.members {
            assert_eq!(*offset, end, "hole before {name}.{member}");
            end = offset + size;
        }
        assert_eq!(end, layout.size, "hole at the end of {name}");
    }
}

// ---------------------------------------------------------------------------------------
// Constants in the header text

/// Every `#define NAME VALUE` of the header whose value is an integer, possibly negative
/// or parenthesised, with any trailing comment dropped. The include guard has no value
/// and is left out.
fn header_defines() -> BTreeMap<String, i64> {
    let mut defines = BTreeMap::new();
    for line in datapath::MAPS_HEADER.lines() {
        let Some(rest) = line.trim_start().strip_prefix("#define") else { continue };
        let rest = rest.split("/*").next().unwrap_or_default();
        let mut words = rest.split_whitespace();
        let (Some(name), Some(value)) = (words.next(), words.next()) else { continue };
        let value = value.trim_start_matches('(').trim_end_matches(')');
        let value = value.parse::<i64>().unwrap_or_else(|_| {
            panic!("#define {name} has a value the test cannot read: {value:?}")
        });
        assert!(words.next().is_none(), "#define {name} has more than one token");
        assert!(defines.insert(name.to_owned(), value).is_none(), "{name} defined twice");
    }
    defines
}

fn rust_reasons() -> BTreeMap<String, i64> {
    Reason::ALL.iter().map(|r| (r.c_name().to_owned(), i64::from(r.code()))).collect()
}

fn rust_capacities() -> BTreeMap<String, i64> {
    [
        ("POLICYC_ENDPOINTS_MAX", capacity::ENDPOINTS),
        ("POLICYC_HOSTS_MAX", capacity::HOSTS),
        ("POLICYC_IPCACHE_MAX", capacity::IPCACHE),
        ("POLICYC_POLICY_MAX", capacity::POLICY),
        ("POLICYC_CT_MAX", capacity::CONNTRACK),
        ("POLICYC_FRAGS_MAX", capacity::FRAGS),
        ("POLICYC_REASONS_MAX", capacity::REASONS),
        ("POLICYC_METRICS_MAX", capacity::METRICS),
        ("POLICYC_EVENTS_MAX", capacity::EVENTS),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), i64::from(value)))
    .collect()
}

fn rust_constants() -> BTreeMap<String, i64> {
    [
        ("POLICYC_FAMILY_IPV4", i64::from(FAMILY_IPV4)),
        ("POLICYC_FAMILY_IPV6", i64::from(FAMILY_IPV6)),
        ("POLICYC_VERDICT_ALLOW", i64::from(VERDICT_ALLOW)),
        ("POLICYC_VERDICT_DENY", i64::from(VERDICT_DENY)),
        ("POLICYC_DIR_INGRESS", i64::from(DIR_INGRESS)),
        ("POLICYC_DIR_EGRESS", i64::from(DIR_EGRESS)),
        ("POLICYC_IDENTITY_ANY", i64::from(IDENTITY_ANY)),
        ("POLICYC_IDENTITY_HOST", i64::from(IDENTITY_HOST)),
        ("POLICYC_IDENTITY_WORLD", i64::from(IDENTITY_WORLD)),
        ("POLICYC_EP_F_HOST", i64::from(EP_F_HOST)),
        ("POLICYC_HOST_ENDPOINT_KEY", i64::from(HOST_ENDPOINT_KEY)),
        ("POLICYC_RULE_NONE", i64::from(RULE_NONE)),
        ("POLICYC_PORT_BITS", i64::from(PORT_BITS)),
        ("POLICYC_SLOTS", SLOTS as i64),
        ("POLICYC_VERDICT_NONE", i64::from(VERDICT_NONE)),
        ("POLICYC_CONFIG_EVENTS_ALLOWED", i64::from(CONFIG_EVENTS_ALLOWED)),
        ("POLICYC_CT_F_CLOSING", i64::from(CT_F_CLOSING)),
        ("POLICYC_CT_TCP_NS", CT_TCP_NS as i64),
        ("POLICYC_CT_CLOSING_NS", CT_CLOSING_NS as i64),
        ("POLICYC_CT_OTHER_NS", CT_OTHER_NS as i64),
        ("POLICYC_CT_TICK_SHIFT", i64::from(CT_TICK_SHIFT)),
        ("POLICYC_FRAG_NS", FRAG_NS as i64),
    ]
    .into_iter()
    .map(|(name, value)| (name.to_owned(), value))
    .collect()
}

/// The header's defines whose names start with one of `prefixes`.
fn header_defines_starting_with(prefixes: &[&str]) -> BTreeMap<String, i64> {
    header_defines()
        .into_iter()
        .filter(|(name, _)| prefixes.iter().any(|p| name.starts_with(p)))
        .collect()
}

#[test]
fn header_reasons_equal_rust_reasons() {
    let header = header_defines_starting_with(&["POLICYC_PASS_", "POLICYC_DROP_"]);

    assert_eq!(header, rust_reasons());
}

#[test]
fn header_capacities_equal_rust_capacities() {
    let header: BTreeMap<String, i64> =
        header_defines().into_iter().filter(|(name, _)| name.ends_with("_MAX")).collect();

    assert_eq!(header, rust_capacities());
}

#[test]
fn header_families_verdicts_directions_and_identities_equal_rust_constants() {
    let header = header_defines_starting_with(&[
        "POLICYC_FAMILY_",
        "POLICYC_VERDICT_",
        "POLICYC_DIR_",
        "POLICYC_IDENTITY_",
        "POLICYC_RULE_",
        "POLICYC_PORT_",
        "POLICYC_SLOTS",
        "POLICYC_CONFIG_",
        "POLICYC_EP_F_",
        "POLICYC_HOST_ENDPOINT_KEY",
        "POLICYC_CT_F_",
        "POLICYC_CT_TCP_NS",
        "POLICYC_CT_CLOSING_NS",
        "POLICYC_CT_OTHER_NS",
        "POLICYC_CT_TICK_SHIFT",
        "POLICYC_FRAG_NS",
    ]);

    assert_eq!(header, rust_constants());
}

#[test]
fn every_header_define_has_a_rust_mirror() {
    // Catches a new kind of constant that none of the tests above looks for.
    let mut mirrored = rust_reasons();
    mirrored.extend(rust_capacities());
    mirrored.extend(rust_constants());

    assert_eq!(header_defines(), mirrored);
}

#[test]
fn pass_reasons_are_positive_and_drop_reasons_negative() {
    for reason in Reason::ALL {
        let is_drop_name = reason.c_name().starts_with("POLICYC_DROP_");
        assert_eq!(reason.is_drop(), is_drop_name, "{reason:?}");
        assert_ne!(reason.code(), 0, "{reason:?}: zero means 'continue' in the datapath");
    }
}

#[test]
fn every_reason_has_its_own_metrics_slot() {
    // The datapath counts under the absolute value of a reason, so a pass and a drop of
    // the same magnitude would share a counter, and a reason past the array is not counted.
    assert_eq!(capacity::METRICS, capacity::ENDPOINTS * capacity::REASONS, "a row per slot");
    let mut slots = BTreeMap::new();
    for reason in Reason::ALL {
        let index = reason.metrics_index();
        assert!(index < capacity::REASONS, "{reason:?} is past the metrics row");
        if let Some(other) = slots.insert(index, reason) {
            panic!("{reason:?} and {other:?} share metrics slot {index}");
        }
    }
}
