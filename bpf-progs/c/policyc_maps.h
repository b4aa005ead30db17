/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Map layouts of the policyc datapath.
 *
 * This header is the only definition of what the kernel maps hold. The Rust mirrors in
 * bpf-progs/src/layout.rs are checked against the BTF of the compiled object by a unit
 * test, so a change here that is not mirrored fails `cargo test` without a kernel.
 * Every struct spells out its padding so that the compiler never inserts any, and so
 * that a zeroed key is a well-defined key.
 *
 * Generations. Every value the runtime rewrites on an update (endpoints, hosts, ipcache,
 * policy) holds two copies, one per generation slot, and policyc_config.generation selects
 * the live one (its lowest bit). An update writes the idle slot of every entry it changes,
 * flips the generation with one aligned store, waits for the programs running at that
 * moment to finish, then brings the retired slot level with the live one. A packet reads
 * the generation once and then sees one complete state throughout, so every flow is judged
 * by the old artifact or by the new one, never by a mix of the two (see ARCHITECTURE.md,
 * "Updates").
 */
#ifndef POLICYC_MAPS_H
#define POLICYC_MAPS_H

#include <linux/types.h>

/* Capacities. Changing one changes the datapath ABI. */
#define POLICYC_ENDPOINTS_MAX 1024
#define POLICYC_HOSTS_MAX 131072
#define POLICYC_IPCACHE_MAX 65536
#define POLICYC_POLICY_MAX 524288
#define POLICYC_CT_MAX 262144
#define POLICYC_FRAGS_MAX 8192
/* Counter slots per metrics row: room for every reason's absolute value. */
#define POLICYC_REASONS_MAX 32
/* One metrics row per endpoint slot: POLICYC_ENDPOINTS_MAX * POLICYC_REASONS_MAX. */
#define POLICYC_METRICS_MAX 32768
/* Bytes of the verdict event ring buffer (a power of two, a multiple of the page size). */
#define POLICYC_EVENTS_MAX 1048576

/* Copies of every updated value: one live, one being prepared or retired. */
#define POLICYC_SLOTS 2

/* Address families as stored in keys (not AF_*: these are stable on disk). */
#define POLICYC_FAMILY_IPV4 4
#define POLICYC_FAMILY_IPV6 6

/* Rule cookie meaning "no rule": conntrack entries opened because a direction is not
 * enforced. The compiler numbers rules from 1. */
#define POLICYC_RULE_NONE 0

/* Verdicts stored in policy values. Zero means "no entry in this generation": the
 * lookup goes on to the next key, as if the key were absent. */
#define POLICYC_VERDICT_NONE 0
#define POLICYC_VERDICT_ALLOW 1
#define POLICYC_VERDICT_DENY 2

/* Directions, as seen from the endpoint. */
#define POLICYC_DIR_INGRESS 0
#define POLICYC_DIR_EGRESS 1

/* Identities the datapath itself needs to know about. */
#define POLICYC_IDENTITY_ANY 0
#define POLICYC_IDENTITY_HOST 1
#define POLICYC_IDENTITY_WORLD 2

/* Most significant bits a policy key's port can have: one port, or one ICMP type. */
#define POLICYC_PORT_BITS 16

/*
 * config: one entry (key 0), mapped into the runtime's memory (BPF_F_MMAPABLE) so that the
 * generation flips with a single aligned 32-bit store that no reader can see torn.
 */
struct config {
	__u32 generation;           /* lowest bit: the live slot; all of it: conntrack epoch */
	__u32 flags;                /* POLICYC_CONFIG_* */
	__u32 event_rate;           /* verdict events per second and CPU; 0: no events */
	__u32 event_burst;          /* events a CPU may send at once after a quiet spell */
	__u8 source_digest[32];     /* the live artifact's source digest, for status */
	__u8 artifact_checksum[32]; /* the live artifact's checksum, for status */
};

/* config.flags: also send an event for every flow that policy newly allows. */
#define POLICYC_CONFIG_EVENTS_ALLOWED 1

/*
 * endpoints: which endpoint an interface belongs to. Key: the ifindex of the
 * host-side interface the programs are attached to (u32).
 */
struct endpoint_policy {
	__u32 endpoint_id;       /* the artifact's endpoint number, owns flows; 0: unbound */
	__u32 identity;          /* security identity of the endpoint itself */
	__u32 ingress_table;     /* policy table for traffic to the endpoint; 0: not enforced */
	__u32 egress_table;      /* policy table for traffic from the endpoint; 0: not enforced */
	__u32 ingress_port_bits; /* bit n set: ingress_table has keys with port_bits n */
	__u32 egress_port_bits;  /* bit n set: egress_table has keys with port_bits n */
};

struct endpoint_info {
	struct endpoint_policy slot[POLICYC_SLOTS]; /* indexed by config.generation & 1 */
	__u32 metrics_row;                          /* this interface's row of policyc_metrics */
	__u32 flags;                                /* POLICYC_EP_F_*; zero for a pod */
};

/*
 * The interface is a node's uplink bound to the node's host endpoint. Its programs are
 * attached the other way round from a pod's (policyc_to_ep at tc ingress), so that dir
 * still means "to" or "from" the endpoint, and a packet whose local address (the
 * destination going in, the source going out) is not one of the node's own (identity
 * POLICYC_IDENTITY_HOST in the hosts map) is forwarded pod traffic: it passes here with
 * POLICYC_PASS_FORWARDED and is judged at the pod's own interface.
 */
#define POLICYC_EP_F_HOST 1

/*
 * The endpoints map's key of the node's host endpoint as the pods' interfaces see it (no
 * interface has ifindex 0): a copy of the uplink's entry, which the runtime writes with
 * it, so that traffic between the node and its own pods, which crosses a pod's interface
 * and never the uplink, is judged by the host policy too (ARCHITECTURE.md).
 */
#define POLICYC_HOST_ENDPOINT_KEY 0

/*
 * hosts: exact addresses (a /32 or /128, such as a pod's) to security identities. Looked
 * up before the ipcache: a full-length prefix is the longest match whenever it exists,
 * and a hash lookup is several times cheaper than a trie walk at scale.
 */
struct host_key {
	__u8 family;   /* POLICYC_FAMILY_IPV4 or POLICYC_FAMILY_IPV6 */
	__u8 pad[3];   /* zero */
	__u8 addr[16]; /* network order; IPv4 uses the first 4 bytes, the rest zero */
};

/*
 * ipcache: longest-prefix match from a peer address to its security identity, for the
 * prefixes shorter than an address. Addresses found in neither map belong to the world.
 */
struct ipcache_key {
	__u32 prefixlen; /* LPM length over the bytes below: 32 + address prefix bits */
	__u8 family;     /* POLICYC_FAMILY_IPV4 or POLICYC_FAMILY_IPV6 */
	__u8 pad[3];     /* zero */
	__u8 addr[16];   /* network order; IPv4 uses the first 4 bytes, the rest zero */
};

/* The value of both hosts and ipcache. A prefix present in one generation only holds, in
 * the other, the identity that generation's longest match gives its addresses, so the
 * union of both generations' prefixes answers each generation exactly. */
struct ipcache_value {
	__u32 identity[POLICYC_SLOTS]; /* security identity of the prefix, per generation */
};

/*
 * policy: hash map of verdicts. A packet is decided by the first entry present in
 * this fixed order of rank (most specific first):
 *   (table, identity, proto, port/16) ... (table, identity, proto, port/1),
 *   (table, identity, proto, *), (table, identity, *, *),
 *   then the same with identity POLICYC_IDENTITY_ANY.
 * port/n is the block of 2^(16-n) ports that share the top n bits of the packet's
 * port: a port range is stored as the fewest such aligned blocks, and only the block
 * sizes a table uses are looked up (endpoint_policy.*_port_bits).
 * No entry present means drop. The compiler folds every precedence (deny over allow)
 * into the values, so the datapath never compares values; see
 * ARCHITECTURE.md ("Policy lookup").
 */
struct policy_key {
	__u32 table;    /* policy table number, from endpoint_policy */
	__u32 identity; /* peer identity; POLICYC_IDENTITY_ANY for every peer */
	__u8 proto;     /* IP protocol number; 0 for every protocol */
	__u8 port_bits; /* 0: every port; 1-16: the top port_bits bits of port count */
	__u16 port;     /* host order: destination port or ICMP type, low bits zero */
};

struct policy_verdict {
	__u8 verdict; /* POLICYC_VERDICT_*; NONE: no entry in this generation */
	__u8 pad[3];  /* zero */
	__u32 rule;   /* the artifact's rule cookie that decided, for events and trace */
};

struct policy_value {
	struct policy_verdict slot[POLICYC_SLOTS]; /* indexed by config.generation & 1 */
};

/*
 * conntrack: flows an endpoint allowed, one entry per flow, keyed by the interface the
 * flow crosses and its tuple as the endpoint sees it (its own address and port first,
 * the peer's second), so that a packet and its reply, whichever way they travel, find the
 * same entry with one lookup, and opening a flow is a single write. The entry remembers
 * the direction of the packet that opened it: a packet in that direction is a forward
 * packet, one in the other a reply. For ICMP echo the id is the port on the side that
 * sent the request and the other port is zero, so that a request from the peer reusing
 * the id of the endpoint's own echo is never taken for its reply.
 *
 * The interface, not the endpoint, scopes the key, so that a packet of an established
 * flow is decided by this one lookup without resolving its endpoint first. That is sound
 * because a binding changes only with the generation: an entry stamped with the live
 * generation was written or checked under the binding still in force. An entry stamped
 * with an older one is trusted only once the interface's endpoint is looked up and found
 * to be the one that opened the flow.
 */
struct ct_key {
	__u32 ifindex;      /* host-side interface the programs run on */
	__u8 family;        /* POLICYC_FAMILY_IPV4 or POLICYC_FAMILY_IPV6 */
	__u8 proto;         /* IP protocol number */
	__u16 pad;          /* zero */
	__u8 ep_addr[16];   /* the endpoint's address, network order */
	__u8 peer_addr[16]; /* the peer's address, network order */
	__u16 ep_port;      /* network order; ICMP echo: the id if the endpoint asked */
	__u16 peer_port;    /* network order; ICMP echo: the id if the peer asked */
};

struct ct_value {
	__u32 last_seen;   /* the tick of a recent packet (POLICYC_CT_TICK_SHIFT) */
	__u32 rule;        /* rule cookie that allowed the flow */
	__u32 generation;  /* config.generation whose policy allowed the flow: forward packets
	                    * pass on it while it is the live one */
	__u32 checked;     /* config.generation in which the entry was last found to belong to
	                    * the interface's endpoint: replies pass on it while it is live */
	__u32 endpoint_id; /* endpoint_policy.endpoint_id of the endpoint that opened it */
	__u16 metrics_row; /* endpoint_info.metrics_row of the interface, for the counters */
	__u8 direction;    /* POLICYC_DIR_* of the packet that opened the flow */
	__u8 flags;        /* POLICYC_CT_F_* */
};

/* ct_value.flags: a TCP FIN or RST was seen; the entry lives POLICYC_CT_CLOSING_NS. */
#define POLICYC_CT_F_CLOSING 1

/*
 * Conntrack keeps time in ticks of 2^POLICYC_CT_TICK_SHIFT ns (about 1.07 s) of the coarse
 * monotonic clock, in 32 bits: a tick is fine enough for lifetimes of ten seconds to six
 * hours, 32 bits of ticks wrap after a century, and the value stays small. An entry's
 * last_seen is rewritten only when the tick changes, to spare a cache line write per
 * packet.
 */
#define POLICYC_CT_TICK_SHIFT 30

/* How long an entry outlives its last packet (ns; counted in whole ticks). As Cilium's
 * defaults: TCP six hours, a closing TCP flow ten seconds, every other protocol a minute. */
#define POLICYC_CT_TCP_NS 21600000000000
#define POLICYC_CT_CLOSING_NS 10000000000
#define POLICYC_CT_OTHER_NS 60000000000

/*
 * frags: the first fragments of IP packets this endpoint let through, so that the later
 * fragments, which carry no ports, follow their verdict. Later fragments without a
 * first one here (dropped, not seen yet, or expired) are dropped.
 */
struct frag_key {
	__u32 endpoint_id; /* endpoint_policy.endpoint_id */
	__u8 family;       /* POLICYC_FAMILY_IPV4 or POLICYC_FAMILY_IPV6 */
	__u8 proto;        /* IPv4 protocol; IPv6: the fragment header's next header */
	__u8 direction;    /* POLICYC_DIR_* */
	__u8 pad;          /* zero */
	__u32 id;          /* IPv4 identification or IPv6 fragment identification, host order */
	__u8 saddr[16];    /* network order */
	__u8 daddr[16];    /* network order */
};

struct frag_value {
	__u64 first_seen_ns; /* bpf_ktime_get_coarse_ns() of the first fragment */
	__u32 rule;          /* rule cookie that allowed the first fragment, or 0 */
	__s32 reason;        /* the pass reason of the first fragment */
};

/* How long later fragments may follow their first (ns); Linux's ipfrag_time. */
#define POLICYC_FRAG_NS 30000000000

/*
 * Drop and pass reasons: stable numbers, never reused, mirrored in Rust
 * (datapath::Reason). Drops are negative. A metrics row holds a counter per absolute
 * value of a reason.
 */
#define POLICYC_PASS_POLICY 1             /* allowed by a policy entry */
#define POLICYC_PASS_REPLY 2              /* reply of a tracked flow */
#define POLICYC_PASS_NOT_ENFORCED 3       /* direction not isolated for this endpoint */
#define POLICYC_PASS_NOT_IP 4             /* ARP and other non-IP frames */
#define POLICYC_PASS_ESTABLISHED 5        /* flow allowed earlier in this generation */
#define POLICYC_PASS_RELATED 6            /* ICMP error about a tracked flow */
#define POLICYC_PASS_FRAGMENT 7           /* later fragment of a first fragment let through */
#define POLICYC_PASS_ICMPV6_LINK 8        /* IPv6 neighbour discovery or MLD */
#define POLICYC_PASS_FORWARDED 9          /* host endpoint: not the node's own traffic */
#define POLICYC_DROP_POLICY_DENY (-10)    /* a deny entry decided */
#define POLICYC_DROP_NO_POLICY (-11)      /* no entry matched: default deny */
#define POLICYC_DROP_NO_ENDPOINT (-12)    /* interface is not bound to an endpoint */
#define POLICYC_DROP_MALFORMED (-13)      /* truncated or malformed header */
#define POLICYC_DROP_UNSUPPORTED_L3 (-14) /* IP header the datapath cannot follow */
#define POLICYC_DROP_FRAGMENT (-15)       /* later fragment without a first one let through */

/* One counter slot of a metrics row. */
struct metrics_value {
	__u64 packets;
	__u64 bytes;
};

/*
 * events: verdict events, sent for drops, and for newly allowed flows with
 * POLICYC_CONFIG_EVENTS_ALLOWED, at most config.event_rate a second per CPU.
 */
struct event {
	__u64 timestamp_ns;      /* bpf_ktime_get_coarse_ns() */
	__u32 ifindex;           /* host-side interface */
	__u32 endpoint_id;       /* 0 when the interface is not bound */
	__u32 identity;          /* the endpoint's security identity */
	__u32 peer_identity;     /* the peer's, when policy looked it up; else 0 */
	__s32 reason;            /* POLICYC_PASS_* or POLICYC_DROP_* */
	__u32 generation;        /* config.generation the packet was judged in */
	struct policy_key entry; /* the deciding policy key; table 0 when none decided */
	__u32 rule;              /* the deciding rule cookie, 0 when none */
	__u32 length;            /* packet length in bytes */
	__u8 direction;          /* POLICYC_DIR_* */
	__u8 family;             /* POLICYC_FAMILY_*, 0 before the IP header was read */
	__u8 proto;              /* IP protocol number */
	__u8 pad;                /* zero */
	__u16 sport;             /* host order; ICMP: 0 */
	__u16 dport;             /* host order; ICMP: type */
	__u8 saddr[16];          /* network order */
	__u8 daddr[16];          /* network order */
	__u32 pad2;              /* zero */
};

/* Per CPU: the event rate limiter's state and what became of the events. */
struct event_state {
	__u64 refilled_ns; /* when tokens were last topped up */
	__u64 tokens;      /* events this CPU may still send now */
	__u64 sent;        /* events written to the ring buffer */
	__u64 suppressed;  /* events over the rate */
	__u64 lost;        /* events the ring buffer had no room for */
};

#endif /* POLICYC_MAPS_H */
