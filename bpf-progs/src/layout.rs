//! Mirrors of `c/policyc_maps.h`. Field comments are in the header; keep the two equal.

/// Names of the maps in the object, as pinned in bpffs.
pub mod map_names {
    /// One [`super::Config`]: the live generation and event settings (mmapable array).
    pub const CONFIG: &str = "policyc_config";
    /// ifindex -> [`super::EndpointInfo`].
    pub const ENDPOINTS: &str = "policyc_endpoints";
    /// [`super::HostKey`] -> [`super::IpcacheValue`]: exact addresses.
    pub const HOSTS: &str = "policyc_hosts";
    /// [`super::IpcacheKey`] -> [`super::IpcacheValue`] (LPM trie): shorter prefixes.
    pub const IPCACHE: &str = "policyc_ipcache";
    /// [`super::PolicyKey`] -> [`super::PolicyValue`].
    pub const POLICY: &str = "policyc_policy";
    /// [`super::CtKey`] -> [`super::CtValue`] (LRU hash).
    pub const CONNTRACK: &str = "policyc_ct";
    /// [`super::FragKey`] -> [`super::FragValue`] (LRU hash).
    pub const FRAGS: &str = "policyc_frags";
    /// Per-CPU array of [`super::MetricsValue`]: a row of [`super::capacity::REASONS`]
    /// slots per endpoint slot, indexed by [`super::metrics_index`].
    pub const METRICS: &str = "policyc_metrics";
    /// Ring buffer of [`super::Event`] records.
    pub const EVENTS: &str = "policyc_events";
    /// Per-CPU array of one [`super::EventState`].
    pub const EVENTS_STATE: &str = "policyc_events_state";
}

/// Names of the programs in the object.
pub mod program_names {
    /// Attached at tc ingress of the host-side interface: traffic leaving the endpoint,
    /// judged by the endpoint's egress policy.
    pub const FROM_ENDPOINT: &str = "policyc_from_ep";
    /// Attached at tc egress of the host-side interface: traffic to the endpoint, judged
    /// by the endpoint's ingress policy.
    pub const TO_ENDPOINT: &str = "policyc_to_ep";
}

/// Map capacities (`POLICYC_*_MAX`).
pub mod capacity {
    pub const ENDPOINTS: u32 = 1024;
    pub const HOSTS: u32 = 131_072;
    pub const IPCACHE: u32 = 65_536;
    pub const POLICY: u32 = 524_288;
    pub const CONNTRACK: u32 = 262_144;
    pub const FRAGS: u32 = 8192;
    /// Counter slots per metrics row.
    pub const REASONS: u32 = 32;
    pub const METRICS: u32 = 32_768;
    /// Bytes of the event ring buffer.
    pub const EVENTS: u32 = 1_048_576;
}

/// `POLICYC_SLOTS`: copies of every value the runtime updates, one per generation slot.
pub const SLOTS: usize = 2;

pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;
pub const VERDICT_NONE: u8 = 0;
pub const VERDICT_ALLOW: u8 = 1;
pub const VERDICT_DENY: u8 = 2;
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;
pub const IDENTITY_ANY: u32 = 0;
/// The node itself: the identity of a host endpoint and, in a node's hosts map, of its
/// own addresses.
pub const IDENTITY_HOST: u32 = 1;
pub const IDENTITY_WORLD: u32 = 2;
/// Rule cookie of conntrack entries opened because a direction is not enforced.
pub const RULE_NONE: u32 = 0;

/// `config.flags`: also report every flow that policy newly allows.
pub const CONFIG_EVENTS_ALLOWED: u32 = 1;

/// `ct_value.flags`: a TCP FIN or RST was seen.
pub const CT_F_CLOSING: u8 = 1;
/// Conntrack counts time in ticks of `2^CT_TICK_SHIFT` ns of the coarse clock.
pub const CT_TICK_SHIFT: u32 = 30;
/// Conntrack lifetimes after the last packet, in nanoseconds (`POLICYC_CT_*_NS`), counted
/// in whole ticks.
pub const CT_TCP_NS: u64 = 21_600_000_000_000;
pub const CT_CLOSING_NS: u64 = 10_000_000_000;
pub const CT_OTHER_NS: u64 = 60_000_000_000;
/// How long later fragments may follow their first, in nanoseconds.
pub const FRAG_NS: u64 = 30_000_000_000;

/// The slot of generation `generation` (`config.generation & 1`).
pub fn slot_of(generation: u32) -> usize {
    (generation & 1) as usize
}

/// Value of the `policyc_config` array (one entry, key 0).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Config {
    /// Lowest bit: the live slot; all of it: the conntrack verdict epoch.
    pub generation: u32,
    pub flags: u32,
    pub event_rate: u32,
    pub event_burst: u32,
    pub source_digest: [u8; 32],
    pub artifact_checksum: [u8; 32],
}

/// What one generation says about an endpoint interface.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointPolicy {
    /// 0: the interface is not bound in this generation.
    pub endpoint_id: u32,
    pub identity: u32,
    pub ingress_table: u32,
    pub egress_table: u32,
    /// Bit n set: `ingress_table` has keys with `port_bits` n (see [`port_bits_of`]).
    pub ingress_port_bits: u32,
    /// Bit n set: `egress_table` has keys with `port_bits` n.
    pub egress_port_bits: u32,
}

/// Value of the `policyc_endpoints` map, keyed by the host-side ifindex (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointInfo {
    /// Indexed by [`slot_of`] of the generation.
    pub slot: [EndpointPolicy; SLOTS],
    /// The interface's row of `policyc_metrics`; 0 counts unbound interfaces.
    pub metrics_row: u32,
    /// `EP_F_*`; 0 for a pod's interface.
    pub flags: u32,
}

/// [`EndpointInfo::flags`]: the interface is a node's uplink bound to its host endpoint
/// (programs attached the other way round; traffic that is not the node's own passes
/// with [`Reason::PassForwarded`]).
pub const EP_F_HOST: u32 = 1;

/// The `policyc_endpoints` key at which the runtime copies the node's host endpoint, for
/// the programs of the pods' interfaces: traffic between the node and its own pods is
/// judged there by the host policy too. No interface has ifindex 0.
pub const HOST_ENDPOINT_KEY: u32 = 0;

/// Key of the `policyc_hosts` map: one full-length address.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostKey {
    pub family: u8,
    pub pad: [u8; 3],
    pub addr: [u8; 16],
}

impl HostKey {
    /// The key of a full-length ipcache prefix (a /32 or /128), or `None` for a shorter
    /// one, which belongs in the LPM trie.
    pub fn of_prefix(prefix: &IpcacheKey) -> Option<HostKey> {
        let full = if prefix.family == FAMILY_IPV4 { 32 } else { 128 };
        (prefix.prefix_bits() == full).then_some(HostKey {
            family: prefix.family,
            pad: [0; 3],
            addr: prefix.addr,
        })
    }

    /// The same address as a full-length ipcache prefix.
    pub fn prefix(&self) -> IpcacheKey {
        let full = if self.family == FAMILY_IPV4 { 32 } else { 128 };
        IpcacheKey::new(self.family, self.addr, full)
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpcacheKey {
    pub prefixlen: u32,
    pub family: u8,
    pub pad: [u8; 3],
    pub addr: [u8; 16],
}

impl IpcacheKey {
    /// Bits of `family` and `pad` that every prefix length counts before the address.
    pub const HEADER_BITS: u32 = 32;

    /// The key for `addr/prefix_bits`, with host bits cleared so equal prefixes compare
    /// equal byte for byte.
    pub fn new(family: u8, addr: [u8; 16], prefix_bits: u32) -> Self {
        let mut masked = [0u8; 16];
        for (i, byte) in addr.iter().enumerate() {
            let bit = (i as u32) * 8;
            if bit + 8 <= prefix_bits {
                masked[i] = *byte;
            } else if bit < prefix_bits {
                masked[i] = byte & (0xffu8 << (8 - (prefix_bits - bit)));
            }
        }
        Self { prefixlen: Self::HEADER_BITS + prefix_bits, family, pad: [0; 3], addr: masked }
    }

    /// The address prefix length, without the header bits.
    pub fn prefix_bits(&self) -> u32 {
        self.prefixlen.saturating_sub(Self::HEADER_BITS)
    }
}

/// Value of `policyc_hosts` and `policyc_ipcache`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpcacheValue {
    /// Security identity of the prefix, indexed by [`slot_of`] of the generation.
    pub identity: [u32; SLOTS],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub table: u32,
    pub identity: u32,
    pub proto: u8,
    /// 0: every port; 1 to [`PORT_BITS`]: the top `port_bits` bits of `port` count.
    pub port_bits: u8,
    /// Host order; the bits below `port_bits` are zero.
    pub port: u16,
}

/// `POLICYC_PORT_BITS`: a key of this many port bits names one port (or ICMP type).
pub const PORT_BITS: u8 = 16;

impl PolicyKey {
    /// Position of this key in the datapath's lookup order: 0 is tried first. The
    /// update planner writes in this order and deletes in the reverse one.
    ///
    /// Per identity (the peer's, then any) the order is: port blocks from 16 bits down
    /// to 1, then every port of the protocol, then every protocol.
    pub fn rank(&self) -> u8 {
        const SHAPES: u8 = PORT_BITS + 2;
        let any_identity = u8::from(self.identity == IDENTITY_ANY);
        let shape = match (self.proto != 0, self.port_bits) {
            (true, 0) => PORT_BITS,
            (true, bits) => PORT_BITS - bits.min(PORT_BITS),
            (false, _) => PORT_BITS + 1,
        };
        any_identity * SHAPES + shape
    }
}

impl PolicyKey {
    /// The ports (or ICMP types) the key stands for, first and last; `None` for every port.
    pub fn port_range(&self) -> Option<(u16, u16)> {
        if self.port_bits == 0 {
            return None;
        }
        let host_bits = PORT_BITS - self.port_bits.min(PORT_BITS);
        let span = ((1u32 << host_bits) - 1) as u16;
        Some((self.port, self.port | span))
    }

    /// Whether the datapath can ever look this key up: at most [`PORT_BITS`] port
    /// bits, the port's bits below them zero, and no port without a protocol.
    pub fn is_well_formed(&self) -> bool {
        if self.port_bits == 0 {
            return self.port == 0;
        }
        let host_bits = u32::from(PORT_BITS.saturating_sub(self.port_bits));
        self.port_bits <= PORT_BITS
            && self.proto != 0
            && u32::from(self.port) & ((1 << host_bits) - 1) == 0
    }

    /// `80`, `1024-2047` or `any`.
    pub fn port_text(&self) -> String {
        match self.port_range() {
            None => "any".into(),
            Some((first, last)) if first == last => first.to_string(),
            Some((first, last)) => format!("{first}-{last}"),
        }
    }
}

/// The `*_port_bits` mask of [`EndpointInfo`] for a table holding these keys: bit n for
/// every `port_bits` n among them, so the datapath looks up only block sizes that exist.
pub fn port_bits_of<'a>(keys: impl IntoIterator<Item = &'a PolicyKey>) -> u32 {
    keys.into_iter()
        .filter(|k| k.port_bits != 0 && k.port_bits <= PORT_BITS)
        .fold(0, |mask, k| mask | 1 << k.port_bits)
}

/// One generation's verdict for a policy key: what an artifact holds per key.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyVerdict {
    /// [`VERDICT_ALLOW`], [`VERDICT_DENY`], or [`VERDICT_NONE`]: no entry in this
    /// generation (the datapath goes on to the next key).
    pub verdict: u8,
    pub pad: [u8; 3],
    pub rule: u32,
}

/// Value of the `policyc_policy` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyValue {
    /// Indexed by [`slot_of`] of the generation.
    pub slot: [PolicyVerdict; SLOTS],
}

/// Key of the `policyc_ct` map: one entry per flow, the endpoint's side first, so that a
/// packet and its reply share it (see `policyc_maps.h`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtKey {
    /// The host-side interface the flow crosses.
    pub ifindex: u32,
    pub family: u8,
    pub proto: u8,
    pub pad: u16,
    pub ep_addr: [u8; 16],
    pub peer_addr: [u8; 16],
    /// Network order.
    pub ep_port: u16,
    /// Network order.
    pub peer_port: u16,
}

/// Value of the `policyc_ct` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtValue {
    /// The conntrack tick ([`CT_TICK_SHIFT`]) of a recent packet.
    pub last_seen: u32,
    pub rule: u32,
    /// `config.generation` whose policy allowed the flow.
    pub generation: u32,
    /// `config.generation` in which the entry was last found to belong to the interface's
    /// endpoint.
    pub checked: u32,
    /// The endpoint that opened the flow.
    pub endpoint_id: u32,
    /// The interface's metrics row.
    pub metrics_row: u16,
    /// The direction of the packet that opened the flow ([`DIR_INGRESS`] or [`DIR_EGRESS`]).
    pub direction: u8,
    /// [`CT_F_CLOSING`].
    pub flags: u8,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FragKey {
    pub endpoint_id: u32,
    pub family: u8,
    pub proto: u8,
    pub direction: u8,
    pub pad: u8,
    pub id: u32,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FragValue {
    pub first_seen_ns: u64,
    pub rule: u32,
    pub reason: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricsValue {
    pub packets: u64,
    pub bytes: u64,
}

/// The index in `policyc_metrics` of `reason`'s counter in metrics row `row`.
pub fn metrics_index(row: u32, reason: Reason) -> u32 {
    row * capacity::REASONS + reason.metrics_index()
}

/// A record of the `policyc_events` ring buffer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Event {
    pub timestamp_ns: u64,
    pub ifindex: u32,
    pub endpoint_id: u32,
    pub identity: u32,
    pub peer_identity: u32,
    pub reason: i32,
    pub generation: u32,
    /// The deciding policy key; `table` 0 when no entry decided.
    pub entry: PolicyKey,
    pub rule: u32,
    pub length: u32,
    pub direction: u8,
    pub family: u8,
    pub proto: u8,
    pub pad: u8,
    pub sport: u16,
    pub dport: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub pad2: u32,
}

impl Event {
    /// Reads a record as the ring buffer holds it; `None` if `bytes` is too short.
    pub fn from_bytes(bytes: &[u8]) -> Option<Event> {
        if bytes.len() < size_of::<Event>() {
            return None;
        }
        // SAFETY: `Event` is repr(C) plain data (integers and byte arrays, padding spelled
        // out), so every bit pattern of its size is a valid value; the read is unaligned
        // because the ring buffer only promises 8-byte alignment of what it hands out.
        Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<Event>()) })
    }
}

/// Value of the one-entry per-CPU `policyc_events_state` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct EventState {
    pub refilled_ns: u64,
    pub tokens: u64,
    pub sent: u64,
    pub suppressed: u64,
    pub lost: u64,
}

/// Why the datapath passed or dropped a packet (`POLICYC_PASS_*`, `POLICYC_DROP_*`).
/// The numbers are stable and never reused; drops are negative.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(i32)]
pub enum Reason {
    PassPolicy = 1,
    PassReply = 2,
    PassNotEnforced = 3,
    PassNotIp = 4,
    PassEstablished = 5,
    PassRelated = 6,
    PassFragment = 7,
    PassIcmpv6Link = 8,
    PassForwarded = 9,
    DropPolicyDeny = -10,
    DropNoPolicy = -11,
    DropNoEndpoint = -12,
    DropMalformed = -13,
    DropUnsupportedL3 = -14,
    DropFragment = -15,
}

impl Reason {
    /// Every reason, in code order.
    pub const ALL: [Reason; 15] = [
        Reason::PassPolicy,
        Reason::PassReply,
        Reason::PassNotEnforced,
        Reason::PassNotIp,
        Reason::PassEstablished,
        Reason::PassRelated,
        Reason::PassFragment,
        Reason::PassIcmpv6Link,
        Reason::PassForwarded,
        Reason::DropPolicyDeny,
        Reason::DropNoPolicy,
        Reason::DropNoEndpoint,
        Reason::DropMalformed,
        Reason::DropUnsupportedL3,
        Reason::DropFragment,
    ];

    /// The reason of a code, as events carry it.
    pub fn from_code(code: i32) -> Option<Reason> {
        Reason::ALL.into_iter().find(|r| r.code() == code)
    }

    /// The C macro that defines this reason.
    pub fn c_name(self) -> &'static str {
        match self {
            Reason::PassPolicy => "POLICYC_PASS_POLICY",
            Reason::PassReply => "POLICYC_PASS_REPLY",
            Reason::PassNotEnforced => "POLICYC_PASS_NOT_ENFORCED",
            Reason::PassNotIp => "POLICYC_PASS_NOT_IP",
            Reason::PassEstablished => "POLICYC_PASS_ESTABLISHED",
            Reason::PassRelated => "POLICYC_PASS_RELATED",
            Reason::PassFragment => "POLICYC_PASS_FRAGMENT",
            Reason::PassIcmpv6Link => "POLICYC_PASS_ICMPV6_LINK",
            Reason::PassForwarded => "POLICYC_PASS_FORWARDED",
            Reason::DropPolicyDeny => "POLICYC_DROP_POLICY_DENY",
            Reason::DropNoPolicy => "POLICYC_DROP_NO_POLICY",
            Reason::DropNoEndpoint => "POLICYC_DROP_NO_ENDPOINT",
            Reason::DropMalformed => "POLICYC_DROP_MALFORMED",
            Reason::DropUnsupportedL3 => "POLICYC_DROP_UNSUPPORTED_L3",
            Reason::DropFragment => "POLICYC_DROP_FRAGMENT",
        }
    }

    /// Lowercase words for logs and metrics labels, without the pass or drop prefix
    /// (`Reason::is_drop` says which): `policy_deny`, `reply`.
    pub fn label(self) -> &'static str {
        match self {
            Reason::PassPolicy => "policy",
            Reason::PassReply => "reply",
            Reason::PassNotEnforced => "not_enforced",
            Reason::PassNotIp => "not_ip",
            Reason::PassEstablished => "established",
            Reason::PassRelated => "related",
            Reason::PassFragment => "fragment",
            Reason::PassIcmpv6Link => "icmpv6_link",
            Reason::PassForwarded => "forwarded",
            Reason::DropPolicyDeny => "policy_deny",
            Reason::DropNoPolicy => "no_policy",
            Reason::DropNoEndpoint => "no_endpoint",
            Reason::DropMalformed => "malformed",
            Reason::DropUnsupportedL3 => "unsupported_l3",
            Reason::DropFragment => "fragment",
        }
    }

    pub fn code(self) -> i32 {
        self as i32
    }

    pub fn is_drop(self) -> bool {
        self.code() < 0
    }

    /// Index of this reason's counter in the metrics map.
    pub fn metrics_index(self) -> u32 {
        self.code().unsigned_abs()
    }
}

#[cfg(feature = "aya")]
mod pod {
    use super::*;

    // SAFETY: every type here is `repr(C)`, made only of integers and byte arrays (or
    // arrays of such structs), with all padding spelled out as fields, so any bit pattern
    // is a valid value and no uninitialised byte is ever copied to the kernel.
    unsafe impl aya::Pod for Config {}
    // SAFETY: as above.
    unsafe impl aya::Pod for EndpointInfo {}
    // SAFETY: as above.
    unsafe impl aya::Pod for HostKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for IpcacheKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for IpcacheValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PolicyValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CtKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for CtValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FragKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FragValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for MetricsValue {}
    // SAFETY: as above.
    unsafe impl aya::Pod for EventState {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4(a: u8, b: u8, c: u8, d: u8) -> [u8; 16] {
        let mut addr = [0xee; 16]; // bytes past the IPv4 address must be cleared too
        addr[..4].copy_from_slice(&[a, b, c, d]);
        addr
    }

    #[test]
    fn ipcache_key_keeps_prefix_bits_and_clears_host_bits() {
        let key = IpcacheKey::new(FAMILY_IPV4, v4(10, 0xff, 7, 9), 12);

        assert_eq!(key.addr[..4], [10, 0xf0, 0, 0]);
        assert_eq!(key.addr[4..], [0; 12]);
        assert_eq!(key.prefixlen, 32 + 12);
        assert_eq!(key.prefix_bits(), 12);
        assert_eq!((key.family, key.pad), (FAMILY_IPV4, [0; 3]));
    }

    #[test]
    fn ipcache_key_of_a_full_ipv4_address_keeps_only_its_four_bytes() {
        let key = IpcacheKey::new(FAMILY_IPV4, v4(192, 168, 1, 77), 32);

        assert_eq!(key.addr[..4], [192, 168, 1, 77]);
        assert_eq!(key.addr[4..], [0; 12]);
        assert_eq!(key.prefixlen, 64);
    }

    #[test]
    fn ipcache_keys_of_one_prefix_are_equal_whatever_the_host_bits() {
        let a = IpcacheKey::new(FAMILY_IPV4, v4(10, 1, 2, 3), 16);
        let b = IpcacheKey::new(FAMILY_IPV4, v4(10, 1, 200, 99), 16);

        assert_eq!(a, b);
        assert_eq!(IpcacheKey::new(FAMILY_IPV4, v4(1, 2, 3, 4), 0).addr, [0; 16]);
    }

    #[test]
    fn policy_key_rank_follows_the_datapath_lookup_order() {
        // The order in which policyc.bpf.c looks keys up for a TCP packet to port 80 from
        // identity 300: port blocks of 16 bits down to 1, every port, every protocol.
        let key = |identity, proto, port_bits: u8, port: u16| PolicyKey {
            table: 1,
            identity,
            proto,
            port_bits,
            port,
        };
        let mut lookup_order = Vec::new();
        for identity in [300, IDENTITY_ANY] {
            for bits in (1..=PORT_BITS).rev() {
                lookup_order.push(key(identity, 6, bits, 80 & (0xffff << (16 - bits))));
            }
            lookup_order.push(key(identity, 6, 0, 0));
            lookup_order.push(key(identity, 0, 0, 0));
        }

        let ranks: Vec<u8> = lookup_order.iter().map(PolicyKey::rank).collect();
        assert_eq!(ranks, (0..36).collect::<Vec<u8>>());
    }

    #[test]
    fn port_bits_mask_names_each_block_size_once() {
        let key = |port_bits, port| PolicyKey { table: 1, identity: 0, proto: 6, port_bits, port };
        let keys = [key(16, 80), key(16, 443), key(6, 1024), key(0, 0)];

        assert_eq!(port_bits_of(&keys), 1 << 16 | 1 << 6);
        assert_eq!(port_bits_of(&[]), 0);
        assert_eq!(keys.map(|k| k.port_text()), ["80", "443", "1024-2047", "any"]);
        assert!(keys.iter().all(PolicyKey::is_well_formed));
        assert!(!key(6, 1025).is_well_formed(), "bits below the block");
        assert!(!key(17, 0).is_well_formed(), "more bits than a port has");
        assert!(!key(0, 80).is_well_formed(), "a port in an every-port key");
        assert_eq!(port_bits_of(&[key(17, 0)]), 0, "ignored, not shifted out of range");
    }
}
