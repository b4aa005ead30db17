//! Mirrors of `c/policyc_maps.h`. Field comments are in the header; keep the two equal.

/// Names of the maps in the object, as pinned in bpffs.
pub mod map_names {
    /// ifindex -> [`super::EndpointInfo`].
    pub const ENDPOINTS: &str = "policyc_endpoints";
    /// [`super::IpcacheKey`] -> [`super::IpcacheValue`] (LPM trie).
    pub const IPCACHE: &str = "policyc_ipcache";
    /// [`super::PolicyKey`] -> [`super::PolicyValue`].
    pub const POLICY: &str = "policyc_policy";
    /// [`super::CtKey`] -> [`super::CtValue`] (LRU hash).
    pub const CONNTRACK: &str = "policyc_ct";
    /// Per-CPU array of [`super::MetricsValue`], indexed by [`super::Reason::metrics_index`].
    pub const METRICS: &str = "policyc_metrics";
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
    pub const ENDPOINTS: u32 = 4096;
    pub const IPCACHE: u32 = 131_072;
    pub const POLICY: u32 = 524_288;
    pub const CONNTRACK: u32 = 262_144;
    pub const METRICS: u32 = 64;
}

pub const FAMILY_IPV4: u8 = 4;
pub const FAMILY_IPV6: u8 = 6;
pub const VERDICT_ALLOW: u8 = 1;
pub const VERDICT_DENY: u8 = 2;
pub const DIR_INGRESS: u8 = 0;
pub const DIR_EGRESS: u8 = 1;
pub const IDENTITY_ANY: u32 = 0;
pub const IDENTITY_WORLD: u32 = 2;
/// Rule cookie of conntrack entries opened because a direction is not enforced.
pub const RULE_NONE: u32 = 0;

/// Value of the `policyc_endpoints` map, keyed by the host-side ifindex (`u32`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointInfo {
    pub endpoint_id: u32,
    pub identity: u32,
    pub ingress_table: u32,
    pub egress_table: u32,
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

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpcacheValue {
    pub identity: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyKey {
    pub table: u32,
    pub identity: u32,
    pub proto: u8,
    pub has_port: u8,
    pub port: u16,
}

impl PolicyKey {
    /// Position of this key in the datapath's lookup order: 0 is tried first. The
    /// update planner writes in this order and deletes in the reverse one.
    pub fn rank(&self) -> u8 {
        let any_identity = u8::from(self.identity == IDENTITY_ANY);
        let shape = match (self.proto != 0, self.has_port != 0) {
            (true, true) => 0,
            (true, false) => 1,
            _ => 2,
        };
        any_identity * 3 + shape
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PolicyValue {
    pub verdict: u8,
    pub pad: [u8; 3],
    pub rule: u32,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtKey {
    pub endpoint_id: u32,
    pub family: u8,
    pub proto: u8,
    pub pad: u16,
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CtValue {
    pub last_seen_ns: u64,
    pub rule: u32,
    pub direction: u8,
    pub pad: [u8; 3],
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MetricsValue {
    pub packets: u64,
    pub bytes: u64,
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
    DropPolicyDeny = -10,
    DropNoPolicy = -11,
    DropNoEndpoint = -12,
    DropMalformed = -13,
    DropUnsupportedL3 = -14,
    DropFragment = -15,
}

impl Reason {
    /// Every reason, in code order.
    pub const ALL: [Reason; 10] = [
        Reason::PassPolicy,
        Reason::PassReply,
        Reason::PassNotEnforced,
        Reason::PassNotIp,
        Reason::DropPolicyDeny,
        Reason::DropNoPolicy,
        Reason::DropNoEndpoint,
        Reason::DropMalformed,
        Reason::DropUnsupportedL3,
        Reason::DropFragment,
    ];

    /// The C macro that defines this reason.
    pub fn c_name(self) -> &'static str {
        match self {
            Reason::PassPolicy => "POLICYC_PASS_POLICY",
            Reason::PassReply => "POLICYC_PASS_REPLY",
            Reason::PassNotEnforced => "POLICYC_PASS_NOT_ENFORCED",
            Reason::PassNotIp => "POLICYC_PASS_NOT_IP",
            Reason::DropPolicyDeny => "POLICYC_DROP_POLICY_DENY",
            Reason::DropNoPolicy => "POLICYC_DROP_NO_POLICY",
            Reason::DropNoEndpoint => "POLICYC_DROP_NO_ENDPOINT",
            Reason::DropMalformed => "POLICYC_DROP_MALFORMED",
            Reason::DropUnsupportedL3 => "POLICYC_DROP_UNSUPPORTED_L3",
            Reason::DropFragment => "POLICYC_DROP_FRAGMENT",
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

    // SAFETY: every type here is `repr(C)`, made only of integers and byte arrays, with
    // all padding spelled out as fields, so any bit pattern is a valid value and no
    // uninitialised byte is ever copied to the kernel.
    unsafe impl aya::Pod for EndpointInfo {}
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
    unsafe impl aya::Pod for MetricsValue {}
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
        // identity 300.
        let key = |identity, proto, has_port, port| PolicyKey {
            table: 1,
            identity,
            proto,
            has_port,
            port,
        };
        let lookup_order = [
            key(300, 6, 1, 80),
            key(300, 6, 0, 0),
            key(300, 0, 0, 0),
            key(IDENTITY_ANY, 6, 1, 80),
            key(IDENTITY_ANY, 6, 0, 0),
            key(IDENTITY_ANY, 0, 0, 0),
        ];

        let ranks: Vec<u8> = lookup_order.iter().map(PolicyKey::rank).collect();
        assert_eq!(ranks, [0, 1, 2, 3, 4, 5]);
    }
}
