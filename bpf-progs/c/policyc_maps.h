/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map layouts of the policyc datapath.
 *
 * This header is the only definition of what the kernel maps hold. The Rust mirrors in
 * bpf-progs/src/layout.rs are checked against the BTF of the compiled object by a unit
 * test, so a change here that is not mirrored fails `cargo test` without a kernel.
 * Every struct spells out its padding so that the compiler never inserts any, and so
 * that a zeroed key is a well-defined key.
 */
#ifndef POLICYC_MAPS_H
#define POLICYC_MAPS_H

#include <linux/types.h>

/* Capacities. Changing one changes the datapath ABI. */
#define POLICYC_ENDPOINTS_MAX 4096
#define POLICYC_IPCACHE_MAX 131072
#define POLICYC_POLICY_MAX 524288
#define POLICYC_CT_MAX 262144
#define POLICYC_METRICS_MAX 64

/* Address families as stored in keys (not AF_*: these are stable on disk). */
#define POLICYC_FAMILY_IPV4 4
#define POLICYC_FAMILY_IPV6 6

/* Rule cookie meaning "no rule": conntrack entries opened because a direction is not
 * enforced. The compiler numbers rules from 1. */
#define POLICYC_RULE_NONE 0

/* Verdicts stored in policy values. Zero is never stored: it means "no entry". */
#define POLICYC_VERDICT_ALLOW 1
#define POLICYC_VERDICT_DENY 2

/* Directions, as seen from the endpoint. */
#define POLICYC_DIR_INGRESS 0
#define POLICYC_DIR_EGRESS 1

/* Identities the datapath itself needs to know about. */
#define POLICYC_IDENTITY_ANY 0
#define POLICYC_IDENTITY_WORLD 2

/*
 * endpoints: which endpoint an interface belongs to. Key: the ifindex of the
 * host-side interface the programs are attached to (u32).
 */
struct endpoint_info {
	__u32 endpoint_id;       /* the artifact's endpoint number, scopes conntrack */
	__u32 identity;          /* security identity of the endpoint itself */
	__u32 ingress_table;     /* policy table for traffic to the endpoint; 0: not enforced */
	__u32 egress_table;      /* policy table for traffic from the endpoint; 0: not enforced */
	__u32 ingress_port_bits; /* bit n set: ingress_table has keys with port_bits n */
	__u32 egress_port_bits;  /* bit n set: egress_table has keys with port_bits n */
};

/*
 * ipcache: longest-prefix match from a peer address to its security identity.
 * Addresses not found belong to the world identity.
 */
struct ipcache_key {
	__u32 prefixlen; /* LPM length over the bytes below: 32 + address prefix bits */
	__u8 family;     /* POLICYC_FAMILY_IPV4 or POLICYC_FAMILY_IPV6 */
	__u8 pad[3];     /* zero */
	__u8 addr[16];   /* network order; IPv4 uses the first 4 bytes, the rest zero */
};

struct ipcache_value {
	__u32 identity; /* security identity of the prefix */
	__u32 flags;    /* reserved, zero */
};

/*
 * policy: hash map of verdicts. A packet is decided by the first entry present in
 * this fixed order of rank (most specific first):
 *   (table, identity, proto, port/16) ... (table, identity, proto, port/1),
 *   (table, identity, proto, *), (table, identity, *, *),
 *   then the same with identity POLICYC_IDENTITY_ANY.
 * port/n is the block of 2^(16-n) ports that share the top n bits of the packet's
 * port: a port range is stored as the fewest such aligned blocks, and only the block
 * sizes a table uses are looked up (endpoint_info.*_port_bits).
 * No entry present means drop. The compiler folds every precedence (deny over allow)
 * into the values, so the datapath never compares values; see
 * ARCHITECTURE.md ("Policy lookup and update ordering").
 */
struct policy_key {
	__u32 table;    /* policy table number, from endpoint_info */
	__u32 identity; /* peer identity; POLICYC_IDENTITY_ANY for every peer */
	__u8 proto;     /* IP protocol number; 0 for every protocol */
	__u8 port_bits; /* 0: every port; 1-16: the top port_bits bits of port count */
	__u16 port;     /* host order: destination port or ICMP type, low bits zero */
};

/* Most significant bits a policy key's port can have: one port, or one ICMP type. */
#define POLICYC_PORT_BITS 16

struct policy_value {
	__u8 verdict; /* POLICYC_VERDICT_ALLOW or POLICYC_VERDICT_DENY */
	__u8 pad[3];  /* zero */
	__u32 rule;   /* the artifact's rule cookie that decided, for events and trace */
};

/*
 * conntrack: flows this endpoint allowed, scoped by endpoint so that one endpoint's
 * allow never lets traffic through another endpoint's policy. The key is the tuple of
 * the packet that created the entry. For ICMP echo both ports hold the echo id, so the
 * reply's reversed tuple finds the request.
 */
struct ct_key {
	__u32 endpoint_id; /* endpoint_info.endpoint_id */
	__u8 family;       /* POLICYC_FAMILY_IPV4 or POLICYC_FAMILY_IPV6 */
	__u8 proto;        /* IP protocol number */
	__u16 pad;         /* zero */
	__u8 saddr[16];    /* network order */
	__u8 daddr[16];    /* network order */
	__u16 sport;       /* network order */
	__u16 dport;       /* network order */
};

struct ct_value {
	__u64 last_seen_ns; /* bpf_ktime_get_ns() of the last packet */
	__u32 rule;         /* rule cookie that allowed the flow */
	__u8 direction;     /* POLICYC_DIR_* the flow was opened in */
	__u8 pad[3];        /* zero */
};

/*
 * Drop and pass reasons: stable numbers, never reused, mirrored in Rust
 * (datapath::Reason). Drops are negative. metrics is indexed by -reason for drops and
 * by the positive value for passes.
 */
#define POLICYC_PASS_POLICY 1             /* allowed by a policy entry */
#define POLICYC_PASS_REPLY 2              /* reply of a tracked flow */
#define POLICYC_PASS_NOT_ENFORCED 3       /* direction not isolated for this endpoint */
#define POLICYC_PASS_NOT_IP 4             /* ARP and other non-IP frames */
#define POLICYC_DROP_POLICY_DENY (-10)    /* a deny entry decided */
#define POLICYC_DROP_NO_POLICY (-11)      /* no entry matched: default deny */
#define POLICYC_DROP_NO_ENDPOINT (-12)    /* interface is not bound to an endpoint */
#define POLICYC_DROP_MALFORMED (-13)      /* truncated or malformed header */
#define POLICYC_DROP_UNSUPPORTED_L3 (-14) /* IP version the datapath does not enforce yet */
#define POLICYC_DROP_FRAGMENT (-15)       /* IP fragment (not reassembled yet) */

struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

#endif /* POLICYC_MAPS_H */
