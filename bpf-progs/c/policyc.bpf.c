// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * The policyc tc datapath.
 *
 * Two programs sit on the host-side interface of every endpoint: policyc_from_ep at tc
 * ingress sees what the endpoint sends and judges it by the endpoint's egress table, and
 * policyc_to_ep at tc egress sees what the endpoint receives and judges it by its ingress
 * table. On a node's uplink, bound to the node's host endpoint, they are attached the
 * other way round (policyc_to_ep at tc ingress). Both run the same steps, in this order:
 *
 *   1. Generation: the live slot of every value is read once, so that the whole packet
 *      is judged against one complete state (policyc_maps.h, "Generations").
 *   2. Ethernet: frames that are neither IPv4 nor IPv6 (ARP, LLDP) pass untouched.
 *   3. Endpoint: the interface must be bound to an endpoint, or the packet is dropped.
 *   4. IP: IPv4, or IPv6 and its extension headers, then the first bytes of TCP, UDP,
 *      SCTP, ICMP or ICMPv6. On a host endpoint, traffic that is not the node's own
 *      passes (POLICYC_EP_F_HOST). A later fragment follows its first fragment's
 *      verdict. IPv6 neighbour discovery and MLD pass, as ARP does for IPv4.
 *   5. Conntrack: one lookup of the packet's own tuple finds a reply of a flow this
 *      endpoint allowed in the other direction (it passes), or a forward packet of a
 *      flow policy allowed in this generation (it passes on the cached verdict). An ICMP
 *      error about a tracked flow passes as related.
 *   6. Policy: the peer's identity comes from the hosts map or the ipcache, then the
 *      first policy entry present in a fixed order of keys decides (policyc_maps.h). An
 *      allowed packet opens, or renews, its flow.
 *
 * Every step returns either POLICYC_CONTINUE or a reason from policyc_maps.h, and the
 * reason leaves through one exit that counts it, sends a verdict event when one is due,
 * and turns its sign into a tc action. The layouts of all maps are defined in
 * policyc_maps.h and nowhere else.
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
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
#include <linux/icmpv6.h>

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "policyc_maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

_Static_assert(POLICYC_METRICS_MAX == POLICYC_ENDPOINTS_MAX * POLICYC_REASONS_MAX,
               "a metrics row per endpoint slot");

/*
 * Maps. All are pinned by name so that the runtime can fill them before the programs are
 * attached and keep them across program reloads.
 */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct config);
	__uint(max_entries, 1);
	/* The runtime flips the generation through a shared mapping of the value. */
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policyc_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32); /* ifindex of the host-side interface */
	__type(value, struct endpoint_info);
	__uint(max_entries, POLICYC_ENDPOINTS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policyc_endpoints SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct host_key);
	__type(value, struct ipcache_value);
	__uint(max_entries, POLICYC_HOSTS_MAX);
	/* Filled once per artifact and rarely all at once: no need to pin memory for every
	 * possible pod of the cluster up front. */
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policyc_hosts SEC(".maps");

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
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct frag_key);
	__type(value, struct frag_value);
	__uint(max_entries, POLICYC_FRAGS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policyc_frags SEC(".maps");

struct {
	/* Per CPU, so that counting needs neither atomics nor shared cache lines. Row r,
	 * slot s is index r * POLICYC_REASONS_MAX + s; row 0 counts unbound interfaces. */
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(max_entries, POLICYC_METRICS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policyc_metrics SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, POLICYC_EVENTS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policyc_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct event_state);
	__uint(max_entries, 1);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} policyc_events_state SEC(".maps");

/*
 * The clock of conntrack and fragment lifetimes, the event limiter and event timestamps:
 * CLOCK_MONOTONIC_COARSE, one tick (at most a few milliseconds) behind the precise clock.
 * Lifetimes are seconds to hours, so a tick does not matter, while the precise clock
 * costs about 20 ns a read on virtual machines, a quarter of an established packet's
 * cost (BENCHMARKS.md, "Datapath per packet").
 */
static __always_inline __u64 now_ns(void)
{
	return bpf_ktime_get_coarse_ns();
}

/* What a step returns when it has not decided. No reason is zero. */
#define POLICYC_CONTINUE 0

#define NSEC_PER_SEC 1000000000ULL

/* Flags and offset of the IPv4 fragment field (RFC 791, section 3.1). */
#define IPV4_FRAG_MF 0x2000
#define IPV4_FRAG_OFFSET 0x1fff

/* IPv6 extension headers (RFC 8200, section 4; RFC 4302 for AH). ESP (50) is not
 * followed: what it carries is encrypted, so it is the upper layer as far as policy goes. */
#define NEXTHDR_HOP 0
#define NEXTHDR_ROUTING 43
#define NEXTHDR_FRAGMENT 44
#define NEXTHDR_AUTH 51
#define NEXTHDR_DEST 60
/* Extension headers followed before giving up with POLICYC_DROP_UNSUPPORTED_L3. */
#define IPV6_MAX_EXT_HEADERS 8

/*
 * ICMPv6 messages of the link itself: multicast listener discovery (130-132, RFC 2710;
 * 143, RFC 3810) and neighbour discovery (133-137, RFC 4861). Without them IPv6 cannot
 * resolve a neighbour at all, so they pass whatever the policy, as ARP does, but only
 * with the hop limit their RFCs require: 255 for neighbour discovery (RFC 4861, section
 * 7.1.1) and 1 for MLD (RFC 2710, section 3; RFC 3810, section 5). A router decrements
 * the hop limit, so such a packet cannot have come from, or go to, beyond the link; any
 * other is an ordinary ICMPv6 packet for policy to judge, not a way around it.
 */
#define ICMPV6_MLD_FIRST 130
#define ICMPV6_MLD_LAST 132
#define ICMPV6_ND_FIRST 133
#define ICMPV6_ND_LAST 137
#define ICMPV6_MLD2_REPORT 143
#define ICMPV6_ND_HOP_LIMIT 255
#define ICMPV6_MLD_HOP_LIMIT 1

#define TCP_FLAG_FIN 0x01
#define TCP_FLAG_SYN 0x02
#define TCP_FLAG_RST 0x04
#define TCP_FLAG_ACK 0x10

/* Where a packet stands in fragmentation. */
#define FRAG_NONE 0
#define FRAG_FIRST 1
#define FRAG_LATER 2

/*
 * What the steps after parsing need to know about a packet beyond what its event record
 * holds (addresses, protocol, ports in host order). All ports here are network order.
 */
struct flow {
	__u8 inner_saddr[16]; /* ICMP errors: the quoted packet's source */
	__u8 inner_daddr[16]; /* ICMP errors: the quoted packet's destination */
	__be16 ct_sport;      /* conntrack source port; see parse_l4() */
	__be16 ct_dport;      /* conntrack destination port */
	__be16 inner_sport;   /* ICMP errors: the quoted packet's conntrack ports */
	__be16 inner_dport;
	__u32 frag_id;     /* fragment identification, host order */
	__u16 policy_port; /* host order: TCP/UDP/SCTP destination port or ICMP type */
	__u8 has_port;     /* 1 if policy_port is significant */
	__u8 tcp_flags;    /* TCP: the flags byte */
	__u8 frag;         /* FRAG_* */
	__u8 inner_proto;  /* nonzero: an ICMP error quoting a packet of this protocol */
	__u8 link_local;   /* 1: IPv6 neighbour discovery or MLD, with its hop limit */
	__u8 frag_next;    /* IPv4 protocol or IPv6 fragment header's next: in every fragment */
	__u8 hop_limit;    /* IPv6: the hop limit */
	__u8 pad[3];
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

/* The fixed header length of an upper-layer protocol, or 0 for one the datapath does not
 * read. A shorter header is malformed; reading all of it (the TCP flags among it) also
 * refuses the tiny first fragments of RFC 1858. */
static __always_inline __u32 l4_header_len(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return sizeof(struct tcphdr);
	case IPPROTO_UDP:
		return sizeof(struct udphdr);
	case IPPROTO_SCTP:
		return 12; /* RFC 9260, section 3.1: the common header */
	case IPPROTO_ICMP:
		return sizeof(struct icmphdr);
	case IPPROTO_ICMPV6:
		return sizeof(struct icmp6hdr);
	default:
		return 0;
	}
}

static __always_inline int is_icmp_error(__u8 proto, __u8 type)
{
	if (proto == IPPROTO_ICMP)
		return type == ICMP_DEST_UNREACH || type == ICMP_TIME_EXCEEDED ||
		       type == ICMP_PARAMETERPROB;
	return type == ICMPV6_DEST_UNREACH || type == ICMPV6_PKT_TOOBIG ||
	       type == ICMPV6_TIME_EXCEED || type == ICMPV6_PARAMPROB;
}

/*
 * The conntrack ports of an ICMP echo: (id, 0) for a request and (0, id) for a reply, so
 * that the reversed tuple of a request is its reply's tuple, and a request from the peer
 * with the same id is never taken for a reply of the endpoint's own echo.
 */
static __always_inline void echo_ports(int request, __be16 id, __be16 *sport, __be16 *dport)
{
	*sport = request ? id : 0;
	*dport = request ? 0 : id;
}

/*
 * Reads the quoted packet of an ICMP error at off (its IP header) into flow's inner
 * fields, when it is one conntrack could have tracked: TCP, UDP or SCTP, or an ICMP echo.
 * A quote that is cut short or of any other kind leaves inner_proto 0, and the error is
 * then judged by policy like other ICMP.
 */
static __always_inline void parse_quoted(struct __sk_buff *skb, __u32 off, __u32 end, __u8 family,
                                         struct flow *flow)
{
	__u8 l4[8];
	__be16 id;
	__u8 proto;

	if (family == POLICYC_FAMILY_IPV4) {
		struct iphdr ip;

		if (off + sizeof(ip) > end || bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)))
			return;
		if (ip.version != 4 || ip.ihl < 5)
			return;
		__builtin_memset(flow->inner_saddr, 0, sizeof(flow->inner_saddr));
		__builtin_memset(flow->inner_daddr, 0, sizeof(flow->inner_daddr));
		__builtin_memcpy(flow->inner_saddr, &ip.saddr, 4);
		__builtin_memcpy(flow->inner_daddr, &ip.daddr, 4);
		proto = ip.protocol;
		off += ip.ihl * 4;
	} else {
		struct ipv6hdr ip;

		if (off + sizeof(ip) > end || bpf_skb_load_bytes(skb, off, &ip, sizeof(ip)))
			return;
		__builtin_memcpy(flow->inner_saddr, &ip.saddr, 16);
		__builtin_memcpy(flow->inner_daddr, &ip.daddr, 16);
		proto = ip.nexthdr;
		off += sizeof(ip);
	}
	/* RFC 792 and RFC 4443 quote at least the first 8 bytes of the upper layer. */
	if (off + sizeof(l4) > end || bpf_skb_load_bytes(skb, off, l4, sizeof(l4)))
		return;

	switch (proto) {
	case IPPROTO_TCP:
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		__builtin_memcpy(&flow->inner_sport, &l4[0], 2);
		__builtin_memcpy(&flow->inner_dport, &l4[2], 2);
		break;
	case IPPROTO_ICMP:
		if (l4[0] != ICMP_ECHO && l4[0] != ICMP_ECHOREPLY)
			return;
		__builtin_memcpy(&id, &l4[4], 2);
		echo_ports(l4[0] == ICMP_ECHO, id, &flow->inner_sport, &flow->inner_dport);
		break;
	case IPPROTO_ICMPV6:
		if (l4[0] != ICMPV6_ECHO_REQUEST && l4[0] != ICMPV6_ECHO_REPLY)
			return;
		__builtin_memcpy(&id, &l4[4], 2);
		echo_ports(l4[0] == ICMPV6_ECHO_REQUEST, id, &flow->inner_sport,
		           &flow->inner_dport);
		break;
	default:
		return;
	}
	flow->inner_proto = proto;
}

/*
 * Reads the upper-layer header at off, with end the end of the IP payload (so Ethernet
 * padding is never read as ports), into the packet record and flow.
 *
 * For conntrack, an ICMP echo request and its reply carry the echo id in opposite ports
 * (echo_ports()), so that the reversed tuple of a request is the tuple of its reply;
 * other ICMP messages have no ports. For policy, an ICMP type takes the place of a port. Protocols
 * other than these five have neither.
 */
static __always_inline int parse_l4(struct __sk_buff *skb, __u32 off, __u32 end, struct event *ev,
                                    struct flow *flow)
{
	__u32 len = l4_header_len(ev->proto);
	void *data, *data_end;
	union {
		struct tcphdr tcp;
		struct udphdr udp;
		struct icmphdr icmp;
		struct icmp6hdr icmp6;
		__u8 bytes[20];
	} l4;

	if (len == 0)
		return POLICYC_CONTINUE;
	if (off + len > end || len > sizeof(l4))
		return POLICYC_DROP_MALFORMED;

	/*
	 * Copied straight from the packet when all of l4 lies in its linear area, as it does
	 * for nearly every packet, and by bpf_skb_load_bytes() otherwise: the helper call cost
	 * about 5 ns of an established flow's 87 (BENCHMARKS.md, "Datapath per packet"). Bytes
	 * past a shorter header are copied too and never read. skb->data is loaded afresh
	 * (volatile): clang would otherwise reuse an earlier load narrowed to 32 bits, which
	 * the verifier no longer takes for a packet pointer.
	 */
	data = (void *)(long)*(volatile __u32 *)&skb->data;
	data_end = (void *)(long)*(volatile __u32 *)&skb->data_end;
	if (data + off + sizeof(l4) <= data_end)
		__builtin_memcpy(&l4, data + off, sizeof(l4));
	else if (bpf_skb_load_bytes(skb, off, &l4, len))
		return POLICYC_DROP_MALFORMED;

	switch (ev->proto) {
	case IPPROTO_TCP:
		flow->tcp_flags = l4.bytes[13];
		/* The ports are where UDP and SCTP have them. */
		__attribute__((fallthrough));
	case IPPROTO_UDP:
	case IPPROTO_SCTP:
		flow->ct_sport = l4.udp.source;
		flow->ct_dport = l4.udp.dest;
		ev->sport = bpf_ntohs(l4.udp.source);
		ev->dport = bpf_ntohs(l4.udp.dest);
		flow->policy_port = ev->dport;
		flow->has_port = 1;
		return POLICYC_CONTINUE;
	case IPPROTO_ICMP:
		if (l4.icmp.type == ICMP_ECHO || l4.icmp.type == ICMP_ECHOREPLY)
			echo_ports(l4.icmp.type == ICMP_ECHO, l4.icmp.un.echo.id, &flow->ct_sport,
			           &flow->ct_dport);
		break;
	default: /* IPPROTO_ICMPV6 */
		if (l4.icmp6.icmp6_type == ICMPV6_ECHO_REQUEST ||
		    l4.icmp6.icmp6_type == ICMPV6_ECHO_REPLY)
			echo_ports(l4.icmp6.icmp6_type == ICMPV6_ECHO_REQUEST,
			           l4.icmp6.icmp6_dataun.u_echo.identifier, &flow->ct_sport,
			           &flow->ct_dport);
		if (l4.icmp6.icmp6_type >= ICMPV6_ND_FIRST && l4.icmp6.icmp6_type <= ICMPV6_ND_LAST)
			flow->link_local = flow->hop_limit == ICMPV6_ND_HOP_LIMIT;
		else if ((l4.icmp6.icmp6_type >= ICMPV6_MLD_FIRST &&
		          l4.icmp6.icmp6_type <= ICMPV6_MLD_LAST) ||
		         l4.icmp6.icmp6_type == ICMPV6_MLD2_REPORT)
			flow->link_local = flow->hop_limit == ICMPV6_MLD_HOP_LIMIT;
		break;
	}

	/* ICMP and ICMPv6 keep the type at the same place. */
	ev->dport = l4.icmp.type;
	flow->policy_port = l4.icmp.type;
	flow->has_port = 1;
	if (is_icmp_error(ev->proto, l4.icmp.type))
		parse_quoted(skb, off + len, end, ev->family, flow);
	return POLICYC_CONTINUE;
}

/*
 * Parses the IPv4 header after the Ethernet header, and the upper layer after it. The
 * header length is taken from IHL, so options are skipped, and every read is checked
 * against the packet.
 */
static __always_inline int parse_ipv4(struct __sk_buff *skb, struct event *ev, struct flow *flow)
{
	struct iphdr *ip;
	void *data_end;
	__u32 hdr_len;
	__u32 tot_len;
	__u16 frag;

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
	if (tot_len < hdr_len || ETH_HLEN + tot_len > skb->len)
		return POLICYC_DROP_MALFORMED;

	ev->family = POLICYC_FAMILY_IPV4;
	ev->proto = ip->protocol;
	__builtin_memcpy(ev->saddr, &ip->saddr, 4);
	__builtin_memcpy(ev->daddr, &ip->daddr, 4);

	/* Only the first fragment carries the upper-layer header; later ones are matched to
	 * it by (addresses, protocol, identification), RFC 791 section 3.2. */
	frag = bpf_ntohs(ip->frag_off);
	if (frag & (IPV4_FRAG_MF | IPV4_FRAG_OFFSET)) {
		flow->frag_id = bpf_ntohs(ip->id);
		flow->frag_next = ip->protocol;
		flow->frag = frag & IPV4_FRAG_OFFSET ? FRAG_LATER : FRAG_FIRST;
		if (flow->frag == FRAG_LATER)
			return POLICYC_CONTINUE;
	}
	return parse_l4(skb, ETH_HLEN + hdr_len, ETH_HLEN + tot_len, ev, flow);
}

/* Whether an IPv6 next header value names an extension header the parser follows. */
static __always_inline int ipv6_is_extension(__u8 next)
{
	return next == NEXTHDR_HOP || next == NEXTHDR_ROUTING || next == NEXTHDR_DEST ||
	       next == NEXTHDR_AUTH || next == NEXTHDR_FRAGMENT;
}

/*
 * Parses the IPv6 header, follows its extension headers to the upper layer, and parses
 * that. A chain longer than IPV6_MAX_EXT_HEADERS is not followed: its packet is dropped
 * rather than judged without its ports.
 */
static __always_inline int parse_ipv6(struct __sk_buff *skb, struct event *ev, struct flow *flow)
{
	struct ipv6hdr *ip;
	void *data_end;
	__u32 off = ETH_HLEN + sizeof(*ip);
	__u32 end;
	__u8 next;

	pull_headers(skb, ETH_HLEN + sizeof(*ip));
	ip = (void *)(long)skb->data + ETH_HLEN;
	data_end = (void *)(long)skb->data_end;
	if ((void *)(ip + 1) > data_end)
		return POLICYC_DROP_MALFORMED;
	if (ip->version != 6)
		return POLICYC_DROP_MALFORMED;
	/* A payload length of zero is a jumbogram (RFC 2675), or IPv6 BIG TCP, whose true
	 * length is the skb's, as ipv6_payload_len() of include/net/ipv6.h reads it. */
	end = off + bpf_ntohs(ip->payload_len);
	if (ip->payload_len == 0 && skb->gso_size != 0)
		end = skb->len;
	if (end > skb->len)
		return POLICYC_DROP_MALFORMED;

	ev->family = POLICYC_FAMILY_IPV6;
	flow->hop_limit = ip->hop_limit;
	__builtin_memcpy(ev->saddr, &ip->saddr, 16);
	__builtin_memcpy(ev->daddr, &ip->daddr, 16);
	next = ip->nexthdr;

#pragma unroll
	for (int i = 0; i < IPV6_MAX_EXT_HEADERS; i++) {
		__u8 hdr[8];

		if (!ipv6_is_extension(next))
			break;
		if (off + sizeof(hdr) > end || bpf_skb_load_bytes(skb, off, hdr, sizeof(hdr)))
			return POLICYC_DROP_MALFORMED;
		if (next == NEXTHDR_FRAGMENT) {
			/* RFC 8200, section 4.5: offset in the top 13 bits, M in the lowest. */
			__u16 frag = ((__u16)hdr[2] << 8) | hdr[3];

			flow->frag_id = ((__u32)hdr[4] << 24) | ((__u32)hdr[5] << 16) |
			                ((__u32)hdr[6] << 8) | hdr[7];
			flow->frag_next = hdr[0];
			/*
			 * What follows the fragment header of a later fragment is data: the
			 * headers of the fragmentable part (destination options, AH) and the
			 * upper layer are in the first fragment only. Its next header is all the
			 * fragments share, so fragments are matched on it (frag_key).
			 */
			if (frag >> 3) {
				flow->frag = FRAG_LATER;
				ev->proto = hdr[0];
				return POLICYC_CONTINUE;
			}
			/* An atomic fragment (offset 0, no M: RFC 6946) is a whole packet. */
			if (frag & 1)
				flow->frag = FRAG_FIRST;
			off += 8;
		} else if (next == NEXTHDR_AUTH) {
			off += ((__u32)hdr[1] + 2) * 4; /* RFC 4302: in 4-byte units, minus 2 */
		} else {
			off += ((__u32)hdr[1] + 1) * 8; /* in 8-byte units, minus the first */
		}
		next = hdr[0];
	}
	if (ipv6_is_extension(next))
		return POLICYC_DROP_UNSUPPORTED_L3;
	ev->proto = next;
	return parse_l4(skb, off, end, ev, flow);
}

/*
 * The conntrack key of the packet as seen by endpoint_id. With reverse set, addresses and
 * ports are swapped: the key a reply would carry.
 */
static __always_inline void ct_key_of(struct ct_key *key, __u32 endpoint_id, const struct event *ev,
                                      const struct flow *flow, int reverse)
{
	/* Padding and the unused 12 bytes of each IPv4 address must be zero, or the hash
	 * lookup would miss entries the runtime wrote. */
	__builtin_memset(key, 0, sizeof(*key));
	key->endpoint_id = endpoint_id;
	key->family = ev->family;
	key->proto = ev->proto;
	if (reverse) {
		__builtin_memcpy(key->saddr, ev->daddr, 16);
		__builtin_memcpy(key->daddr, ev->saddr, 16);
		key->sport = flow->ct_dport;
		key->dport = flow->ct_sport;
	} else {
		__builtin_memcpy(key->saddr, ev->saddr, 16);
		__builtin_memcpy(key->daddr, ev->daddr, 16);
		key->sport = flow->ct_sport;
		key->dport = flow->ct_dport;
	}
}

/* Whether a conntrack entry still stands at now. */
static __always_inline int ct_alive(const struct ct_value *ct, __u8 proto, __u64 now)
{
	__u64 lifetime = POLICYC_CT_OTHER_NS;

	if (ct->flags & POLICYC_CT_F_CLOSING)
		lifetime = POLICYC_CT_CLOSING_NS;
	else if (proto == IPPROTO_TCP)
		lifetime = POLICYC_CT_TCP_NS;
	return now - ct->last_seen_ns < lifetime;
}

/* Keeps a live entry alive, and marks both entries of a TCP flow closing at its first
 * FIN or RST, so that they go soon after the connection does. */
static __always_inline void ct_touch(struct ct_value *ct, __u32 endpoint_id, const struct event *ev,
                                     const struct flow *flow, __u64 now)
{
	struct ct_key key;
	struct ct_value *other;

	/* A plain store: a racing writer on another CPU stores a time just as recent. */
	if (now - ct->last_seen_ns > POLICYC_CT_REFRESH_NS)
		ct->last_seen_ns = now;
	if (!(flow->tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST)) || ct->flags & POLICYC_CT_F_CLOSING)
		return;
	ct->flags |= POLICYC_CT_F_CLOSING;
	ct_key_of(&key, endpoint_id, ev, flow, 1);
	other = bpf_map_lookup_elem(&policyc_ct, &key);
	if (other)
		other->flags |= POLICYC_CT_F_CLOSING;
}

/*
 * Opens, or renews, the flow of a packet policy allowed in generation gen: its own tuple
 * caches the verdict, its reversed tuple lets replies through. A failed update (no memory)
 * is not a reason to drop a packet policy allowed: its later packets are then judged by
 * policy again, and its replies by policy in their own direction.
 */
static __always_inline void ct_open(__u32 endpoint_id, const struct event *ev,
                                    const struct flow *flow, __u8 dir, __u32 rule, __u32 gen)
{
	struct ct_key key;
	struct ct_value value;

	__builtin_memset(&value, 0, sizeof(value));
	value.last_seen_ns = now_ns();
	value.rule = rule;
	value.generation = gen;

	ct_key_of(&key, endpoint_id, ev, flow, 0);
	value.direction = dir;
	value.kind = POLICYC_CT_FORWARD;
	bpf_map_update_elem(&policyc_ct, &key, &value, BPF_ANY);

	ct_key_of(&key, endpoint_id, ev, flow, 1);
	value.direction = !dir;
	value.kind = POLICYC_CT_REPLY;
	bpf_map_update_elem(&policyc_ct, &key, &value, BPF_ANY);
}

/* Whether two addresses as events and flows hold them (16 bytes, 4-byte aligned: both
 * structs place them so) are equal. */
static __always_inline int same_address(const __u8 *a, const __u8 *b)
{
	const __u32 *x = (const __u32 *)a;
	const __u32 *y = (const __u32 *)b;

	return ((x[0] ^ y[0]) | (x[1] ^ y[1]) | (x[2] ^ y[2]) | (x[3] ^ y[3])) == 0;
}

/*
 * Step 5: passes a reply of a tracked flow, a forward packet of a flow policy allowed in
 * this generation, or an ICMP error about a tracked flow. A TCP SYN without ACK always
 * opens a new connection, so it is never a reply and never trusts an earlier verdict.
 */
static __always_inline int ct_check(const struct endpoint_policy *eps, struct event *ev,
                                    const struct flow *flow, __u8 dir, __u32 gen)
{
	struct ct_key key;
	struct ct_value *ct;
	__u64 now;

	if ((flow->tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
		return POLICYC_CONTINUE;

	ct_key_of(&key, eps->endpoint_id, ev, flow, 0);
	ct = bpf_map_lookup_elem(&policyc_ct, &key);
	if (ct && ct->direction == dir) {
		now = now_ns();
		if (ct_alive(ct, ev->proto, now)) {
			if (ct->kind == POLICYC_CT_REPLY) {
				ct_touch(ct, eps->endpoint_id, ev, flow, now);
				ev->rule = ct->rule;
				return POLICYC_PASS_REPLY;
			}
			if (ct->generation == gen) {
				ct_touch(ct, eps->endpoint_id, ev, flow, now);
				ev->rule = ct->rule;
				return POLICYC_PASS_ESTABLISHED;
			}
		}
	}

	/*
	 * An ICMP error travels as a reply of the packet it quotes would: its quote, reversed,
	 * is a tuple this endpoint tracks in this direction (either kind: the quote may be of
	 * a forward packet or of a reply). It is sent to the quoted packet's source, which
	 * Linux's conntrack checks too (nf_conntrack_inet_error()); without that check an
	 * endpoint could send errors quoting any flow it has to any peer its policy refuses.
	 * The source is not checked: any router on the path may report an error.
	 */
	if (!flow->inner_proto || !same_address(ev->daddr, flow->inner_saddr))
		return POLICYC_CONTINUE;
	__builtin_memset(&key, 0, sizeof(key));
	key.endpoint_id = eps->endpoint_id;
	key.family = ev->family;
	key.proto = flow->inner_proto;
	__builtin_memcpy(key.saddr, flow->inner_daddr, 16);
	__builtin_memcpy(key.daddr, flow->inner_saddr, 16);
	key.sport = flow->inner_dport;
	key.dport = flow->inner_sport;
	ct = bpf_map_lookup_elem(&policyc_ct, &key);
	if (!ct || ct->direction != dir || !ct_alive(ct, flow->inner_proto, now_ns()))
		return POLICYC_CONTINUE;
	ev->rule = ct->rule;
	return POLICYC_PASS_RELATED;
}

/* The peer's security identity in slot: its exact address in the hosts map, else its
 * longest ipcache prefix, else the world. */
static __always_inline __u32 peer_identity(const struct event *ev, __u8 dir, __u32 slot)
{
	const __u8 *addr = dir == POLICYC_DIR_INGRESS ? ev->saddr : ev->daddr;
	struct ipcache_value *value;
	struct ipcache_key prefix;
	struct host_key host;

	__builtin_memset(&host, 0, sizeof(host));
	host.family = ev->family;
	__builtin_memcpy(host.addr, addr, 16);
	value = bpf_map_lookup_elem(&policyc_hosts, &host);
	if (value)
		return value->identity[slot];

	__builtin_memset(&prefix, 0, sizeof(prefix));
	/* The trie matches over family and padding too: 32 bits of them, then the address. */
	prefix.prefixlen = 32 + (ev->family == POLICYC_FAMILY_IPV4 ? 32 : 128);
	prefix.family = ev->family;
	__builtin_memcpy(prefix.addr, addr, 16);
	value = bpf_map_lookup_elem(&policyc_ipcache, &prefix);
	return value ? value->identity[slot] : POLICYC_IDENTITY_WORLD;
}

/* The verdict of the key in ev->entry in slot, or NULL when the key is absent or has no
 * entry in this generation. */
static __always_inline const struct policy_verdict *policy_entry(struct event *ev, __u32 slot)
{
	const struct policy_value *value = bpf_map_lookup_elem(&policyc_policy, &ev->entry);
	const struct policy_verdict *verdict;

	if (!value)
		return NULL;
	verdict = &value->slot[slot];
	return verdict->verdict != POLICYC_VERDICT_NONE ? verdict : NULL;
}

/*
 * The keys of one identity, most specific first: the port blocks that contain the packet's
 * port, from one port (16 bits) to half of all ports (1 bit), then every port of the
 * protocol, then every protocol. Only the block sizes the table holds (port_bits, a bit
 * per size) are looked up, so a table of single ports costs one lookup for them. A packet
 * without a port (neither TCP, UDP, SCTP nor ICMP) cannot match a port entry, so no block
 * is looked up for it. The key tried last is left in ev->entry.
 */
static __always_inline const struct policy_verdict *
policy_for_identity(struct event *ev, const struct flow *flow, __u32 table, __u32 port_bits,
                    __u32 identity, __u32 slot)
{
	const struct policy_verdict *verdict;

	ev->entry.table = table;
	ev->entry.identity = identity;
	ev->entry.proto = ev->proto;
	if (flow->has_port) {
#pragma unroll
		for (int bits = POLICYC_PORT_BITS; bits > 0; bits--) {
			if (!(port_bits & (1u << bits)))
				continue;
			ev->entry.port_bits = bits;
			ev->entry.port = flow->policy_port & (__u16)(0xffffu << (16 - bits));
			verdict = policy_entry(ev, slot);
			if (verdict)
				return verdict;
		}
	}
	ev->entry.port_bits = 0;
	ev->entry.port = 0;
	verdict = policy_entry(ev, slot);
	if (verdict)
		return verdict;
	ev->entry.proto = 0;
	return policy_entry(ev, slot);
}

/*
 * Step 6: judges a packet by the endpoint's table for dir. The compiler has folded every
 * precedence into the values, so the first entry present decides and values are never
 * compared with each other.
 */
static __always_inline int enforce_policy(const struct endpoint_policy *eps, struct event *ev,
                                          const struct flow *flow, __u8 dir, __u32 gen)
{
	__u32 table = dir == POLICYC_DIR_INGRESS ? eps->ingress_table : eps->egress_table;
	__u32 reply_table = dir == POLICYC_DIR_INGRESS ? eps->egress_table : eps->ingress_table;
	__u32 port_bits =
	        dir == POLICYC_DIR_INGRESS ? eps->ingress_port_bits : eps->egress_port_bits;
	__u32 slot = gen & 1;
	const struct policy_verdict *verdict;

	/*
	 * An endpoint no policy isolates in this direction accepts everything. Its replies
	 * travel in the other direction, and if that one is isolated they must still pass:
	 * Kubernetes allows the replies of every allowed connection, so a pod isolated for
	 * ingress only still gets the answers to the connections it opens. The flow is
	 * tracked for that case alone; when neither direction is isolated the replies pass
	 * unenforced anyway, and tracking them would only cost an update per flow.
	 */
	if (table == 0) {
		if (reply_table != 0)
			ct_open(eps->endpoint_id, ev, flow, dir, POLICYC_RULE_NONE, gen);
		return POLICYC_PASS_NOT_ENFORCED;
	}

	ev->peer_identity = peer_identity(ev, dir, slot);
	verdict = policy_for_identity(ev, flow, table, port_bits, ev->peer_identity, slot);
	if (!verdict)
		verdict =
		        policy_for_identity(ev, flow, table, port_bits, POLICYC_IDENTITY_ANY, slot);
	if (!verdict) {
		__builtin_memset(&ev->entry, 0, sizeof(ev->entry));
		return POLICYC_DROP_NO_POLICY;
	}
	ev->rule = verdict->rule;

	/* Anything but an explicit allow drops, so a corrupt verdict fails closed. */
	if (verdict->verdict != POLICYC_VERDICT_ALLOW)
		return POLICYC_DROP_POLICY_DENY;
	ct_open(eps->endpoint_id, ev, flow, dir, verdict->rule, gen);
	return POLICYC_PASS_POLICY;
}

static __always_inline void frag_key_of(struct frag_key *key, __u32 endpoint_id,
                                        const struct event *ev, const struct flow *flow)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->endpoint_id = endpoint_id;
	key->family = ev->family;
	key->proto = flow->frag_next;
	key->direction = ev->direction;
	key->id = flow->frag_id;
	__builtin_memcpy(key->saddr, ev->saddr, 16);
	__builtin_memcpy(key->daddr, ev->daddr, 16);
}

/* A later fragment passes when its first fragment passed here, recently. */
static __always_inline int frag_follow(__u32 endpoint_id, struct event *ev, const struct flow *flow)
{
	struct frag_key key;
	struct frag_value *first;

	frag_key_of(&key, endpoint_id, ev, flow);
	first = bpf_map_lookup_elem(&policyc_frags, &key);
	if (!first || now_ns() - first->first_seen_ns > POLICYC_FRAG_NS)
		return POLICYC_DROP_FRAGMENT;
	ev->rule = first->rule;
	return POLICYC_PASS_FRAGMENT;
}

/* Remembers a first fragment that passed, for the fragments that follow it. */
static __always_inline void frag_record(__u32 endpoint_id, const struct event *ev,
                                        const struct flow *flow, int reason)
{
	struct frag_key key;
	struct frag_value value;

	frag_key_of(&key, endpoint_id, ev, flow);
	value.first_seen_ns = now_ns();
	value.rule = ev->rule;
	value.reason = reason;
	bpf_map_update_elem(&policyc_frags, &key, &value, BPF_ANY);
}

/*
 * On a host endpoint (a node's uplink, POLICYC_EP_F_HOST): whether the packet is not the
 * node's own traffic, because its local address (the destination of a packet to the
 * endpoint, the source of one from it) is no address the hosts map gives the host
 * identity in this generation. Such a packet is routed to or from a pod and is judged
 * at the pod's interface; a host policy is about the node's own connections only.
 */
static __always_inline int host_forwarded(const struct event *ev, __u8 dir, __u32 slot)
{
	const __u8 *addr = dir == POLICYC_DIR_INGRESS ? ev->daddr : ev->saddr;
	struct ipcache_value *value;
	struct host_key host;

	__builtin_memset(&host, 0, sizeof(host));
	host.family = ev->family;
	__builtin_memcpy(host.addr, addr, 16);
	value = bpf_map_lookup_elem(&policyc_hosts, &host);
	return !value || value->identity[slot] != POLICYC_IDENTITY_HOST;
}

/* Runs steps 2 to 6 of the header comment and returns the reason of the decision. */
static __always_inline int judge(struct __sk_buff *skb, const struct endpoint_policy *eps,
                                 __u32 ep_flags, struct event *ev, __u8 dir, __u32 gen)
{
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
	if (!eps)
		return POLICYC_DROP_NO_ENDPOINT;
	ev->endpoint_id = eps->endpoint_id;
	ev->identity = eps->identity;

	__builtin_memset(&flow, 0, sizeof(flow));
	if (l3 == bpf_htons(ETH_P_IP))
		ret = parse_ipv4(skb, ev, &flow);
	else
		ret = parse_ipv6(skb, ev, &flow);
	if (ret != POLICYC_CONTINUE)
		return ret;
	/* Before fragments and conntrack: forwarded traffic leaves no state here. */
	if (ep_flags & POLICYC_EP_F_HOST && host_forwarded(ev, dir, gen & 1))
		return POLICYC_PASS_FORWARDED;

	if (flow.frag == FRAG_LATER)
		return frag_follow(eps->endpoint_id, ev, &flow);
	if (flow.link_local)
		return POLICYC_PASS_ICMPV6_LINK;

	ret = ct_check(eps, ev, &flow, dir, gen);
	if (ret == POLICYC_CONTINUE)
		ret = enforce_policy(eps, ev, &flow, dir, gen);
	if (ret > 0 && flow.frag == FRAG_FIRST)
		frag_record(eps->endpoint_id, ev, &flow, ret);
	return ret;
}

/* Counts a decision in the interface's metrics row. */
static __always_inline void count(struct __sk_buff *skb, __u32 row, int reason)
{
	__u32 index = row * POLICYC_REASONS_MAX + (reason < 0 ? -reason : reason);
	struct metrics_value *metrics;

	metrics = bpf_map_lookup_elem(&policyc_metrics, &index);
	if (metrics) {
		metrics->packets += 1;
		metrics->bytes += skb->len;
	}
}

/*
 * Sends one verdict event, within this CPU's budget of rate events a second and at most
 * burst at once. Out of line: it runs for drops and, if asked for, new flows, never on
 * the path of an established flow's packets.
 */
static __noinline int send_event(const struct event *ev, __u32 rate, __u32 burst)
{
	struct event_state *state;
	__u32 zero = 0;
	__u64 elapsed;

	state = bpf_map_lookup_elem(&policyc_events_state, &zero);
	if (!state)
		return 0;

	/* Top the budget up. Fractions of an event are not kept, so refilled_ns moves only
	 * when a whole event was earned; a quiet second refills it completely. */
	elapsed = ev->timestamp_ns - state->refilled_ns;
	if (elapsed >= NSEC_PER_SEC) {
		state->tokens = burst;
		state->refilled_ns = ev->timestamp_ns;
	} else {
		__u64 earned = elapsed * rate / NSEC_PER_SEC;

		if (earned) {
			state->tokens =
			        state->tokens + earned > burst ? burst : state->tokens + earned;
			state->refilled_ns = ev->timestamp_ns;
		}
	}

	if (state->tokens == 0) {
		state->suppressed += 1;
		return 0;
	}
	state->tokens -= 1;
	if (bpf_ringbuf_output(&policyc_events, (void *)ev, sizeof(*ev), 0))
		state->lost += 1;
	else
		state->sent += 1;
	return 0;
}

/* The one exit of both programs: every decision is counted, drops and (if asked for) new
 * flows are reported, and negative reasons drop. */
static __always_inline int handle(struct __sk_buff *skb, __u8 dir)
{
	__u32 ifindex = skb->ifindex;
	const struct endpoint_policy *eps = NULL;
	const struct endpoint_info *ep;
	const struct config *cfg;
	struct event ev;
	__u32 zero = 0;
	__u32 gen = 0;
	__u32 rate = 0;
	__u32 flags = 0;
	__u32 burst = 0;
	__u32 row = 0;
	int reason;

	cfg = bpf_map_lookup_elem(&policyc_config, &zero);
	if (cfg) {
		/* Once per packet: every lookup below uses this generation's slot. */
		gen = *(volatile const __u32 *)&cfg->generation;
		flags = cfg->flags;
		rate = cfg->event_rate;
		burst = cfg->event_burst;
	}
	ep = bpf_map_lookup_elem(&policyc_endpoints, &ifindex);
	if (ep) {
		row = ep->metrics_row;
		eps = &ep->slot[gen & 1];
		if (eps->endpoint_id == 0)
			eps = NULL;
	}

	__builtin_memset(&ev, 0, sizeof(ev));
	ev.direction = dir;
	reason = judge(skb, eps, ep ? ep->flags : 0, &ev, dir, gen);

	if (row >= POLICYC_ENDPOINTS_MAX)
		row = 0;
	count(skb, row, reason);

	if (rate && (reason < 0 ||
	             (reason == POLICYC_PASS_POLICY && flags & POLICYC_CONFIG_EVENTS_ALLOWED))) {
		ev.timestamp_ns = now_ns();
		ev.ifindex = ifindex;
		ev.reason = reason;
		ev.generation = gen;
		ev.length = skb->len;
		send_event(&ev, rate, burst);
	}
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
