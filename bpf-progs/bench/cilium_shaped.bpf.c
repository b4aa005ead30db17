// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * A Cilium-shaped reference for the datapath benchmark (bpf-progs/benches/datapath.rs);
 * never loaded by policyc itself, built by the benchmark when it runs. Written for the
 * benchmark from the published description of Cilium's maps, not from its code.
 *
 * Per packet it does what Cilium's policy decision costs in lookups: one ipcache LPM trie
 * lookup (peer address -> security identity), then two policy LPM trie lookups, one with
 * the peer's identity and one with identity 0 ("any"), and it picks the winner at run
 * time: the higher precedence, then the longer prefix, then the specific identity. A
 * deny bit or no entry drops.
 *
 * It is a lower bound of Cilium's per-packet work, on purpose: it parses only the fixed
 * Ethernet, IP and TCP/UDP headers, has no conntrack, no tail calls, no metrics and no
 * events, so a ratio against it understates what a real Cilium datapath costs.
 *
 * bench_cilium_to_ep judges ingress (the peer is the source, as policyc_to_ep does).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

#define FAMILY_IPV4 1
#define FAMILY_IPV6 2
#define IDENTITY_WORLD 2
#define DIR_INGRESS 0

/* The ipcache: one trie for both families. prefixlen counts the 32 bits of cluster_id,
 * pad and family before the address. */
struct ipcache_key {
	__u32 prefixlen;
	__u16 cluster_id;
	__u8 pad;
	__u8 family;
	__u8 addr[16]; /* network order; IPv4 uses the first 4 bytes */
};

struct ipcache_value {
	__u32 identity;
	__u32 tunnel_endpoint;
	__u16 pad;
	__u8 key;
	__u8 flags;
};

/* The policy key, 12 bytes: a stored entry's prefix length is 40, plus 8 when the
 * protocol is set, plus the port bits. */
struct policy_key {
	__u32 prefixlen;
	__u32 identity; /* 0: any identity */
	__u8 egress;    /* bit 0: egress */
	__u8 proto;     /* 0: any protocol */
	__be16 dport;
};

#define POLICY_FULL_PREFIX 64 /* identity, direction, protocol and port: all 64 bits */

struct policy_value {
	__be16 proxy_port;
	__u8 flags;       /* bit 0: deny */
	__u8 prefixlen;   /* the entry's own prefix length: a trie lookup does not return it */
	__u32 precedence; /* higher wins; low byte 255 deny, 1 allow */
	__u32 cookie;
};

#define POLICY_F_DENY 1

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, 524288);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} bench_cilium_ipcache SEC(".maps");

/* Sized for the benchmark's largest run (1M entries); a trie allocates per entry, so
 * the capacity costs nothing until used. */
struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, 1100000);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} bench_cilium_policy SEC(".maps");

static __always_inline const struct policy_value *policy_lookup(__u32 identity, __u8 proto,
                                                                __be16 dport)
{
	struct policy_key key = {
		.prefixlen = POLICY_FULL_PREFIX,
		.identity = identity,
		.egress = DIR_INGRESS,
		.proto = proto,
		.dport = dport,
	};

	return bpf_map_lookup_elem(&bench_cilium_policy, &key);
}

SEC("classifier")
int bench_cilium_to_ep(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	const struct policy_value *l4, *any, *winner;
	struct ipcache_value *peer;
	struct ipcache_key ip_key;
	struct tcphdr *l4hdr;
	__u32 identity;
	__u8 proto;

	if ((void *)(eth + 1) > data_end)
		return TC_ACT_SHOT;
	__builtin_memset(&ip_key, 0, sizeof(ip_key));
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end || ip->ihl != 5)
			return TC_ACT_SHOT;
		ip_key.prefixlen = 32 + 32;
		ip_key.family = FAMILY_IPV4;
		__builtin_memcpy(ip_key.addr, &ip->saddr, 4);
		proto = ip->protocol;
		l4hdr = (void *)(ip + 1);
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > data_end)
			return TC_ACT_SHOT;
		ip_key.prefixlen = 32 + 128;
		ip_key.family = FAMILY_IPV6;
		__builtin_memcpy(ip_key.addr, &ip6->saddr, 16);
		proto = ip6->nexthdr;
		l4hdr = (void *)(ip6 + 1);
	} else {
		return TC_ACT_OK;
	}
	/* The ports of TCP and UDP are at the same place. */
	if ((void *)l4hdr + 4 > data_end)
		return TC_ACT_SHOT;

	peer = bpf_map_lookup_elem(&bench_cilium_ipcache, &ip_key);
	identity = peer ? peer->identity : IDENTITY_WORLD;

	l4 = policy_lookup(identity, proto, l4hdr->dest);
	any = policy_lookup(0, proto, l4hdr->dest);
	if (l4 && any) {
		if (any->precedence > l4->precedence ||
		    (any->precedence == l4->precedence && any->prefixlen > l4->prefixlen))
			winner = any;
		else
			winner = l4;
	} else {
		winner = l4 ? l4 : any;
	}
	if (!winner || winner->flags & POLICY_F_DENY)
		return TC_ACT_SHOT;
	return TC_ACT_OK;
}
