// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The policyc tc datapath.
 *
 * Two programs sit on the host-side interface of every endpoint: policyc_from_ep at tc
 * ingress sees what the endpoint sends and judges it by the endpoint's egress table, and
 * policyc_to_ep at tc egress sees what the endpoint receives and judges it by its ingress
 * table. Both run the same steps, in this order:
 *
 *   1. Ethernet: frames that are neither IPv4 nor IPv6 (ARP, LLDP) pass untouched.
 *   2. Endpoint: the interface must be bound to an endpoint, or the frame is dropped.
 *   3. IPv4 and its first L4 bytes are parsed; IPv6 and fragments are dropped for now.
 *   4. Conntrack: a reply to a flow this endpoint allowed in the other direction passes.
 *   5. Policy: the peer's identity comes from the ipcache, then the first policy entry
 *      present in a fixed order of keys decides (policyc_maps.h). An allowed packet
 *      opens a flow.
 *
 * Every step returns either POLICYC_CONTINUE or a reason from policyc_maps.h, and the
 * reason leaves through one exit that counts it and turns its sign into a tc action. The
 * layouts of all maps are defined in policyc_maps.h and nowhere else.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/pkt_cls.h>
#include <linux/tcp.h>
#include <linux/udp.h>

/*
 * <linux/icmp.h> includes <linux/if.h> for the interface name in RFC 8335 extended echo
 * (Linux 5.13), and <linux/if.h> includes the C library's <sys/socket.h>, which cannot be
 * compiled for the bpf target: glibc then asks for its 32-bit stubs. Only IFNAMSIZ is
 * needed from it, so <linux/if.h> is marked as already included and IFNAMSIZ given here,
 * with its value from <linux/if.h>.
 */
#define _LINUX_IF_H
#define IFNAMSIZ 16
#include <linux/icmp.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "policyc_maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * Maps. All are pinned by name so that the runtime can fill them before the programs are
 * attached and keep them across program reloads.
 */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* ifindex of the host-side interface */
	__type(value, struct endpoint_info);
	__uint(max_entries, POLICYC_ENDPOINTS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policyc_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__type(key, struct ipcache_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, POLICYC_IPCACHE_MAX);
	/* The kernel refuses an LPM trie without this flag: it never preallocates nodes. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policyc_ipcache SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct policy_key);
	__type(value, struct policy_value);
	__uint(max_entries, POLICYC_POLICY_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policyc_policy SEC(".maps");

struct {
	/* LRU: when the table is full, the oldest flow is forgotten rather than a new one
	 * refused. A forgotten flow is judged by policy again on its next packet. */
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(max_entries, POLICYC_CT_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policyc_ct SEC(".maps");

struct {
	/* Per CPU, so that counting needs neither atomics nor shared cache lines. */
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32); /* the absolute value of a reason */
	__type(value, struct metrics_value);
	__uint(max_entries, POLICYC_METRICS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policyc_metrics SEC(".maps");

/* What a step returns when it has not decided. No reason is zero. */
#define POLICYC_CONTINUE 0

/* Flags and offset of the IPv4 fragment field (RFC 791, section 3.1). */
#define IPV4_FRAG_MF 0x2000
#define IPV4_FRAG_OFFSET 0x1fff

/*
 * TCP, UDP and SCTP all begin with the source port then the destination port (RFC 9260,
 * section 3.1, for SCTP), which is all the datapath reads of them; it reads them through
 * one struct for all three.
 */
struct l4_ports {
	__be16 source;
	__be16 dest;
};

_Static_assert(__builtin_offsetof(struct tcphdr, source) == 0, "TCP source port first");
_Static_assert(__builtin_offsetof(struct tcphdr, dest) == 2, "TCP destination port second");
_Static_assert(__builtin_offsetof(struct udphdr, source) == 0, "UDP source port first");
_Static_assert(__builtin_offsetof(struct udphdr, dest) == 2, "UDP destination port second");

/* What the steps after parsing need to know about a packet. */
struct flow {
	__be32 saddr;      /* network order */
	__be32 daddr;      /* network order */
	__be16 ct_sport;   /* conntrack source port, network order; see parse_l4() */
	__be16 ct_dport;   /* conntrack destination port, network order */
	__u16 policy_port; /* host order: TCP/UDP/SCTP destination port or ICMP type */
	__u8 proto;        /* IP protocol number */
	__u8 has_port;     /* 1 if policy_port is significant */
};

/*
 * Makes the first len bytes of the packet readable between data and data_end, if the
 * packet has that many. Headers of a packet merged by GRO or built from page fragments
 * may lie past the linear area, and would otherwise look truncated. The pull is made only
 * when those very bytes are missing, never in advance: bpf_skb_pull_data() also unclones
 * the skb, which copies its head, and TCP transmits every segment as a clone. A packet
 * shorter than len is left as it is, for the bounds checks to find truncated.
 * Every packet pointer is invalid afterwards; callers load them again from skb.
 */
static __always_inline void pull_headers(struct __sk_buff *skb, __u32 len)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;

	if (data + len > data_end && len <= skb->len)
		bpf_skb_pull_data(skb, len);
}

/* How many bytes of its L4 header the datapath reads for protocol proto. */
static __always_inline __u32 l4_parsed_len(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		return sizeof(struct l4_ports);
	case IPPROTO_ICMP:
		return sizeof(struct icmphdr);
	default:
		return 0;
	}
}

/*
 * Reads the ports of TCP, UDP and SCTP and the type and echo id of ICMP from the L4 header at
 * l4. The caller has checked that the IP header claims l4_parsed_len() bytes of it.
 *
 * For conntrack, ICMP echo request and echo reply both put the echo id in both ports, so
 * that the reversed tuple of a reply is the tuple of its request; other ICMP messages have
 * no ports. For policy, an ICMP type takes the place of a port. Protocols other than these
 * four have neither.
 */
static __always_inline int parse_l4(void *l4, void *data_end, struct flow *flow)
{
	struct l4_ports *ports = l4;
	struct icmphdr *icmp = l4;

	switch (flow->proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		if ((void *)(ports + 1) > data_end)
			return POLICYC_DROP_MALFORMED;
		flow->ct_sport = ports->source;
		flow->ct_dport = ports->dest;
		flow->policy_port = bpf_ntohs(ports->dest);
		flow->has_port = 1;
		break;
	case IPPROTO_ICMP:
		if ((void *)(icmp + 1) > data_end)
			return POLICYC_DROP_MALFORMED;
		/*
		 * The key has no room for the ICMP type, so a peer's own echo request that
		 * reuses the id of a tracked echo passes as a reply too; it can only reach an
		 * endpoint that is already talking to that peer with that id.
		 */
		if (icmp->type == ICMP_ECHO || icmp->type == ICMP_ECHOREPLY) {
			flow->ct_sport = icmp->un.echo.id;
			flow->ct_dport = icmp->un.echo.id;
		}
		/*
		 * FIXME: ICMP errors about a tracked flow (destination unreachable, among them
		 * "fragmentation needed", and time exceeded) are judged by their type like any
		 * other ICMP, so an isolated endpoint loses them unless a policy allows the
		 * type, and path MTU discovery breaks. The cure is to parse the IPv4 header and
		 * first 8 bytes quoted in the error, pass it if the quoted tuple is tracked in
		 * the other direction, and count it under a new POLICYC_PASS_RELATED reason
		 * (policyc_maps.h and datapath::Reason).
		 */
		flow->policy_port = icmp->type;
		flow->has_port = 1;
		break;
	default:
		break;
	}
	return POLICYC_CONTINUE;
}

/*
 * Parses the IPv4 header after the Ethernet header, and the L4 header after it, into
 * flow. The header length is taken from IHL, so options are skipped, and every read is
 * checked against data_end.
 */
static __always_inline int parse_ipv4(struct __sk_buff *skb, struct flow *flow)
{
	struct iphdr *ip;
	void *data_end;
	__u32 hdr_len;
	__u32 tot_len;
	__u32 l4_len;

	pull_headers(skb, ETH_HLEN + sizeof(*ip));
	ip = (void *)(long)skb->data + ETH_HLEN;
	data_end = (void *)(long)skb->data_end;
	if ((void *)(ip + 1) > data_end)
		return POLICYC_DROP_MALFORMED;
	if (ip->version != 4 || ip->ihl < 5)
		return POLICYC_DROP_MALFORMED;
	hdr_len = ip->ihl * 4;

	/*
	 * A GSO packet larger than 64 KiB (IPv4 BIG TCP, Linux 6.3) carries a total length of
	 * zero and its true length in the skb; the kernel reads it the same way, in
	 * iph_totlen() of include/net/ip.h.
	 */
	tot_len = bpf_ntohs(ip->tot_len);
	if (tot_len == 0 && skb->gso_size != 0)
		tot_len = skb->len - ETH_HLEN;
	if (tot_len < hdr_len)
		return POLICYC_DROP_MALFORMED;

	/*
	 * Only the first fragment carries the L4 header, and the datapath does not reassemble,
	 * so it cannot judge any fragment by ports. Dropping them all is the safe choice.
	 */
	if (ip->frag_off & bpf_htons(IPV4_FRAG_MF | IPV4_FRAG_OFFSET))
		return POLICYC_DROP_FRAGMENT;

	flow->saddr = ip->saddr;
	flow->daddr = ip->daddr;
	flow->proto = ip->protocol;
	flow->ct_sport = 0;
	flow->ct_dport = 0;
	flow->policy_port = 0;
	flow->has_port = 0;

	/* The L4 length comes from the IP header, so Ethernet padding is never read as ports. */
	l4_len = l4_parsed_len(flow->proto);
	if (tot_len - hdr_len < l4_len)
		return POLICYC_DROP_MALFORMED;
	pull_headers(skb, ETH_HLEN + hdr_len + l4_len);
	data_end = (void *)(long)skb->data_end;
	return parse_l4((void *)(long)skb->data + ETH_HLEN + hdr_len, data_end, flow);
}

/*
 * The conntrack key of flow as seen by endpoint_id. With reverse set, addresses and
 * ports are swapped: the key a reply would find its request under.
 */
static __always_inline void ct_key_of(struct ct_key *key, __u32 endpoint_id,
                                      const struct flow *flow, int reverse)
{
	/* Padding and the unused 12 bytes of each IPv4 address must be zero, or the hash
	 * lookup would miss entries the runtime wrote. */
	__builtin_memset(key, 0, sizeof(*key));
	key->endpoint_id = endpoint_id;
	key->family = POLICYC_FAMILY_IPV4;
	key->proto = flow->proto;
	if (reverse) {
		__builtin_memcpy(key->saddr, &flow->daddr, sizeof(flow->daddr));
		__builtin_memcpy(key->daddr, &flow->saddr, sizeof(flow->saddr));
		key->sport = flow->ct_dport;
		key->dport = flow->ct_sport;
	} else {
		__builtin_memcpy(key->saddr, &flow->saddr, sizeof(flow->saddr));
		__builtin_memcpy(key->daddr, &flow->daddr, sizeof(flow->daddr));
		key->sport = flow->ct_sport;
		key->dport = flow->ct_dport;
	}
}

/*
 * Passes a reply: a packet whose reversed tuple was allowed, by this endpoint, in the
 * other direction. An entry of the same direction is not a reply but a second flow that
 * happens to mirror the first; that packet goes to policy like any other.
 */
static __always_inline int ct_reply(const struct endpoint_info *ep, const struct flow *flow,
                                    __u8 dir)
{
	struct ct_key key;
	struct ct_value *ct;

	ct_key_of(&key, ep->endpoint_id, flow, 1);
	ct = bpf_map_lookup_elem(&policyc_ct, &key);
	if (!ct || ct->direction == dir)
		return POLICYC_CONTINUE;

	/* A plain store: a racing writer on another CPU stores a time just as recent. */
	ct->last_seen_ns = bpf_ktime_get_ns();
	return POLICYC_PASS_REPLY;
}

/*
 * Opens, or refreshes, the flow of a packet policy allowed, so that its replies pass.
 * A failed update (no memory) is not a reason to drop a packet policy allowed: its replies
 * are then judged by policy in their own direction.
 */
static __always_inline void ct_open(const struct endpoint_info *ep, const struct flow *flow,
                                    __u8 dir, __u32 rule)
{
	struct ct_key key;
	struct ct_value value;

	ct_key_of(&key, ep->endpoint_id, flow, 0);
	__builtin_memset(&value, 0, sizeof(value));
	value.last_seen_ns = bpf_ktime_get_ns();
	value.rule = rule;
	value.direction = dir;
	bpf_map_update_elem(&policyc_ct, &key, &value, BPF_ANY);
}

/* The security identity of an IPv4 peer: its longest ipcache prefix, else the world. */
static __always_inline __u32 peer_identity(__be32 addr)
{
	struct ipcache_key key;
	struct ipcache_value *value;

	__builtin_memset(&key, 0, sizeof(key));
	/* The trie matches over family and padding too: 32 bits of them, then the address. */
	key.prefixlen = 32 + 32;
	key.family = POLICYC_FAMILY_IPV4;
	__builtin_memcpy(key.addr, &addr, sizeof(addr));
	value = bpf_map_lookup_elem(&policyc_ipcache, &key);
	return value ? value->identity : POLICYC_IDENTITY_WORLD;
}

static __always_inline struct policy_value *policy_entry(__u32 table, __u32 identity, __u8 proto,
                                                         __u8 port_bits, __u16 port)
{
	struct policy_key key;

	__builtin_memset(&key, 0, sizeof(key));
	key.table = table;
	key.identity = identity;
	key.proto = proto;
	key.port_bits = port_bits;
	key.port = port;
	return bpf_map_lookup_elem(&policyc_policy, &key);
}

/*
 * The keys of one identity, most specific first: the port blocks that contain the packet's
 * port, from one port (16 bits) to half of all ports (1 bit), then every port of the
 * protocol, then every protocol. Only the block sizes the table holds (port_bits, a bit
 * per size) are looked up, so a table of single ports costs one lookup for them, as
 * before ranges existed. A packet without a port (neither TCP, UDP, SCTP nor ICMP) cannot
 * match a port entry, so no block is looked up for it.
 */
static __always_inline struct policy_value *
policy_for_identity(__u32 table, __u32 port_bits, __u32 identity, const struct flow *flow)
{
	struct policy_value *value;

	if (flow->has_port) {
#pragma unroll
		for (int bits = POLICYC_PORT_BITS; bits > 0; bits--) {
			if (!(port_bits & (1u << bits)))
				continue;
			value = policy_entry(table, identity, flow->proto, bits,
			                     flow->policy_port & (__u16)(0xffffu << (16 - bits)));
			if (value)
				return value;
		}
	}
	value = policy_entry(table, identity, flow->proto, 0, 0);
	if (!value)
		value = policy_entry(table, identity, 0, 0, 0);
	return value;
}

/*
 * Judges a packet that is not a reply by the endpoint's table for dir. The compiler has
 * folded every precedence into the values, so the first entry present decides and values
 * are never compared with each other.
 */
static __always_inline int enforce_policy(const struct endpoint_info *ep, const struct flow *flow,
                                          __u8 dir)
{
	__u32 table = dir == POLICYC_DIR_INGRESS ? ep->ingress_table : ep->egress_table;
	__u32 reply_table = dir == POLICYC_DIR_INGRESS ? ep->egress_table : ep->ingress_table;
	__u32 port_bits = dir == POLICYC_DIR_INGRESS ? ep->ingress_port_bits : ep->egress_port_bits;
	__be32 peer = dir == POLICYC_DIR_INGRESS ? flow->saddr : flow->daddr;
	struct policy_value *value;
	__u32 identity;

	/*
	 * An endpoint no policy isolates in this direction accepts everything. Its replies
	 * travel in the other direction, and if that one is isolated they must still pass:
	 * Kubernetes allows the replies of every allowed connection, so a pod isolated for
	 * ingress only still gets the answers to the connections it opens. The flow is
	 * tracked for that case alone; when neither direction is isolated the replies pass
	 * unenforced anyway, and tracking them would only cost an update per packet.
	 */
	if (table == 0) {
		if (reply_table != 0)
			ct_open(ep, flow, dir, POLICYC_RULE_NONE);
		return POLICYC_PASS_NOT_ENFORCED;
	}

	identity = peer_identity(peer);
	value = policy_for_identity(table, port_bits, identity, flow);
	if (!value)
		value = policy_for_identity(table, port_bits, POLICYC_IDENTITY_ANY, flow);
	if (!value)
		return POLICYC_DROP_NO_POLICY;

	/* Anything but an explicit allow drops, so a corrupt verdict fails closed. */
	if (value->verdict != POLICYC_VERDICT_ALLOW)
		return POLICYC_DROP_POLICY_DENY;
	ct_open(ep, flow, dir, value->rule);
	return POLICYC_PASS_POLICY;
}

/* Runs steps 1 to 5 of the header comment and returns the reason of the decision. */
static __always_inline int judge(struct __sk_buff *skb, __u8 dir)
{
	__u32 ifindex = skb->ifindex;
	const struct endpoint_info *ep;
	struct ethhdr *eth;
	void *data_end;
	struct flow flow;
	__be16 l3;
	int ret;

	pull_headers(skb, ETH_HLEN);
	eth = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	if ((void *)(eth + 1) > data_end)
		return POLICYC_DROP_MALFORMED;
	l3 = eth->h_proto;
	if (l3 != bpf_htons(ETH_P_IP) && l3 != bpf_htons(ETH_P_IPV6))
		return POLICYC_PASS_NOT_IP;

	/* skb->ifindex is the host-side interface in both directions: the device a frame
	 * arrived on at tc ingress, and the device it leaves by at tc egress. */
	ep = bpf_map_lookup_elem(&policyc_endpoints, &ifindex);
	if (!ep)
		return POLICYC_DROP_NO_ENDPOINT;

	/* FIXME: IPv6 is dropped because nothing below parses it, so an endpoint bound here
	 * has no IPv6 at all (not even neighbour discovery). The cure is an IPv6 parser that
	 * fills the 16-byte addresses the keys already have room for. */
	if (l3 == bpf_htons(ETH_P_IPV6))
		return POLICYC_DROP_UNSUPPORTED_L3;
	ret = parse_ipv4(skb, &flow);
	if (ret != POLICYC_CONTINUE)
		return ret;

	ret = ct_reply(ep, &flow, dir);
	if (ret != POLICYC_CONTINUE)
		return ret;

	return enforce_policy(ep, &flow, dir);
}

/* Counts a decision under the absolute value of its reason. */
static __always_inline void count(struct __sk_buff *skb, int reason)
{
	__u32 index = reason < 0 ? -reason : reason;
	struct metrics_value *metrics;

	metrics = bpf_map_lookup_elem(&policyc_metrics, &index);
	if (metrics) {
		metrics->packets += 1;
		metrics->bytes += skb->len;
	}
}

/* The one exit of both programs: every decision is counted, and negative reasons drop. */
static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	int reason = judge(skb, dir);

	count(skb, reason);
	return reason < 0 ? TC_ACT_SHOT : TC_ACT_OK;
}

/* tc ingress of the host-side interface: packets the endpoint sends. */
SEC("classifier")
int policyc_from_ep(struct __sk_buff *skb)
{
	return handle(skb, POLICYC_DIR_EGRESS);
}

/* tc egress of the host-side interface: packets the endpoint receives. */
SEC("classifier")
int policyc_to_ep(struct __sk_buff *skb)
{
	return handle(skb, POLICYC_DIR_INGRESS);
}
