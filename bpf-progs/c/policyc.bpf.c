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
 *   0. The established path (established_path()): a plain TCP or UDP packet of a flow
 *      whose conntrack entry vouches for it in this generation passes on that entry
 *      alone, before any of the steps below; nearly every packet a node carries is one.
 *      Whatever it does not decide goes on, with what it read of the packet.
 *   2. Ethernet: frames that are neither IPv4 nor IPv6 (ARP, LLDP) pass untouched.
 *   3. Endpoint: the interface must be bound to an endpoint, or the packet is dropped.
 *   4. IP: IPv4, or IPv6 and its extension headers, then the first bytes of TCP, UDP,
 *      SCTP, ICMP or ICMPv6. On a host endpoint, traffic that is not the node's own
 *      passes (POLICYC_EP_F_HOST). A later fragment follows its first fragment's
 *      verdict. IPv6 neighbour discovery and MLD pass, as ARP does for IPv4.
 *   5. Conntrack: one lookup finds the packet's flow (one entry, keyed by interface and
 *      by the tuple with the endpoint's side first): a reply of a flow this endpoint
 *      opened in the other direction passes, and so does a forward packet of a flow
 *      policy allowed in this generation, on the cached verdict. An ICMP error about a
 *      tracked flow passes as related. (Made before step 3, so that an entry stamped
 *      with this generation decides without the endpoint.)
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

/*
 * Map keys are written in whole 32-bit words. A hash map hashes its key a word at a time
 * right after the program wrote it, and a load the CPU cannot serve from a single earlier
 * store (a word written as two bytes and a half, or bytes over a zeroed word) waits until
 * those stores reach the cache: about 7 ns for each lookup of an established packet's 62
 * (BENCHMARKS.md, "Datapath per packet"). So a word that packs several fields is composed
 * in a register and stored once, and keys are not zeroed first. The unions keep the
 * fields' byte order whatever the target's.
 */
static __always_inline __u32 word_of(__u8 a, __u8 b, __u16 c)
{
	union {
		struct {
			__u8 a;
			__u8 b;
			__u16 c;
		} fields;
		__u32 word;
	} u = { .fields = { a, b, c } };

	return u.word;
}

static __always_inline __u32 word_of_halves(__u16 a, __u16 b)
{
	union {
		__u16 halves[2];
		__u32 word;
	} u = { .halves = { a, b } };

	return u.word;
}

static __always_inline __u16 word_of_bytes(__u8 a, __u8 b)
{
	union {
		__u8 bytes[2];
		__u16 half;
	} u = { .bytes = { a, b } };

	return u.half;
}

static __always_inline __u64 pair_of(__u32 a, __u32 b)
{
	union {
		__u32 words[2];
		__u64 pair;
	} u = { .words = { a, b } };

	return u.pair;
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
		__u32 words[5];
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
	if (data + off + sizeof(l4) <= data_end) {
		const __u32 *words = data + off;

		/* In words: clang copies from a void pointer byte by byte, and the port loads
		 * below would then stall on the byte stores (see word_of()). */
#pragma unroll
		for (int i = 0; i < 5; i++)
			l4.words[i] = words[i];
	} else if (bpf_skb_load_bytes(skb, off, &l4, len))
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
 * The conntrack key of a packet from saddr:sport to daddr:dport travelling in dir on
 * interface ifindex: the endpoint's side first, which is the destination of what it
 * receives (ingress) and the source of what it sends (egress). A packet and its reply
 * therefore have the same key. Every byte is written, padding included, since a hash
 * lookup compares them all; IPv4 addresses arrive already zero beyond their 4 bytes.
 */
static __always_inline void ct_key_of(struct ct_key *key, __u32 ifindex, __u8 family, __u8 proto,
                                      const __u8 *saddr, const __u8 *daddr, __be16 sport,
                                      __be16 dport, __u8 dir)
{
	key->ifindex = ifindex;
	/* family, proto and pad, then ep_port and peer_port: one word each (word_of()). */
	*(__u32 *)&key->family = word_of(family, proto, 0);
	if (dir == POLICYC_DIR_INGRESS) {
		__builtin_memcpy(key->ep_addr, daddr, 16);
		__builtin_memcpy(key->peer_addr, saddr, 16);
		*(__u32 *)&key->ep_port = word_of_halves(dport, sport);
	} else {
		__builtin_memcpy(key->ep_addr, saddr, 16);
		__builtin_memcpy(key->peer_addr, daddr, 16);
		*(__u32 *)&key->ep_port = word_of_halves(sport, dport);
	}
}

/* The conntrack clock: the coarse clock in ticks (policyc_maps.h). */
static __always_inline __u32 ct_now(void)
{
	return (__u32)(now_ns() >> POLICYC_CT_TICK_SHIFT);
}

/* Whether a conntrack entry still stands at tick now. Ticks are compared modulo 2^32. */
static __always_inline int ct_alive(const struct ct_value *ct, __u8 proto, __u32 now)
{
	__u32 lifetime = POLICYC_CT_OTHER_NS >> POLICYC_CT_TICK_SHIFT;

	if (ct->flags & POLICYC_CT_F_CLOSING)
		lifetime = POLICYC_CT_CLOSING_NS >> POLICYC_CT_TICK_SHIFT;
	else if (proto == IPPROTO_TCP)
		lifetime = POLICYC_CT_TCP_NS >> POLICYC_CT_TICK_SHIFT;
	return now - ct->last_seen < lifetime;
}

/* Keeps a live entry alive, and marks a TCP flow closing at its first FIN or RST, so that
 * its entry goes soon after the connection does. Plain stores: a racing writer on another
 * CPU stores the same tick, or the same flag. */
static __always_inline void ct_touch(struct ct_value *ct, __u8 tcp_flags, __u32 now)
{
	if (ct->last_seen != now)
		ct->last_seen = now;
	if (tcp_flags & (TCP_FLAG_FIN | TCP_FLAG_RST) && !(ct->flags & POLICYC_CT_F_CLOSING))
		ct->flags |= POLICYC_CT_F_CLOSING;
}

/*
 * Decides a packet by its conntrack entry alone, before the interface's endpoint is looked
 * up, when the entry's stamps show that nothing has changed since it was written or
 * checked (policyc_maps.h, "conntrack"): a forward packet whose verdict was cached in the
 * live generation, or a reply whose entry was found to belong to the interface's endpoint
 * in the live generation. Returns POLICYC_CONTINUE for anything else. Fills row with the
 * interface's metrics row when it decides.
 */
static __always_inline int ct_established(struct ct_value *ct, __u8 proto, __u8 tcp_flags, __u8 dir,
                                          __u32 gen, __u32 *row)
{
	__u32 now = ct_now();
	int reason;

	if (!ct_alive(ct, proto, now))
		return POLICYC_CONTINUE;
	if (ct->direction == dir) {
		if (ct->generation != gen)
			return POLICYC_CONTINUE;
		reason = POLICYC_PASS_ESTABLISHED;
	} else {
		if (ct->checked != gen)
			return POLICYC_CONTINUE;
		reason = POLICYC_PASS_REPLY;
	}
	ct_touch(ct, tcp_flags, now);
	*row = ct->metrics_row;
	return reason;
}

/*
 * What the established path learnt of a plain packet that it did not decide, handed to the
 * full path so that it is neither parsed nor looked up twice: the conntrack key, the ports
 * in the packet's own order and the TCP flags, and the entry if it was looked up.
 */
struct prelude {
	struct ct_key key;
	struct ct_value *found; /* the entry, or NULL; only if looked_up */
	__be16 sport;
	__be16 dport;
	__u8 plain;     /* 1: a plain TCP or UDP packet, whose fields below are set */
	__u8 looked_up; /* 1: found is the result of the conntrack lookup */
	__u8 tcp_flags;
	__u8 pad;
};

/*
 * The established path, step 0: the packets of established TCP and UDP flows, which are
 * nearly all packets, in the plainest shape (IPv4 without options and not fragmented, IPv6
 * without extension headers, the whole transport header in the linear area), are decided
 * here by their conntrack entry alone (ct_established()), with no endpoint lookup and
 * none of the full parser's bookkeeping: about 40 ns instead of 54 (BENCHMARKS.md,
 * "Datapath per packet"). Every check the full path makes of such a packet before it
 * could pass is made here too, so a packet this path passes is one the full path would
 * pass for the same reason; every other packet, including any this path finds malformed,
 * returns POLICYC_CONTINUE and goes the full way, which then reports its own reason. What
 * it read of a plain packet it did not decide (a SYN, a flow without an entry, or with a
 * stale one) is handed on in pre, so that the full path neither parses nor looks it up
 * again.
 */
static __always_inline int established_path(struct __sk_buff *skb, __u8 dir, __u32 gen, __u32 *row,
                                            struct prelude *pre)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct ethhdr *eth = data;
	struct ct_key *key = &pre->key;
	__u8 proto, tcp_flags = 0;
	__be16 sport, dport;
	struct ct_value *ct;
	__u32 off, end;

	if ((void *)(eth + 1) > data_end)
		return POLICYC_CONTINUE;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__u32 *ep = (__u32 *)key->ep_addr;
		__u32 *peer = (__u32 *)key->peer_addr;

		if ((void *)(ip + 1) > data_end)
			return POLICYC_CONTINUE;
		/* Version 4 and a 20-byte header, in one byte. */
		if (*(__u8 *)ip != 0x45 ||
		    ip->frag_off & bpf_htons(IPV4_FRAG_MF | IPV4_FRAG_OFFSET))
			return POLICYC_CONTINUE;
		proto = ip->protocol;
		off = ETH_HLEN + sizeof(*ip);
		end = ETH_HLEN + bpf_ntohs(ip->tot_len);
		*(__u32 *)&key->family = word_of(POLICYC_FAMILY_IPV4, proto, 0);
		ep[0] = dir == POLICYC_DIR_INGRESS ? ip->daddr : ip->saddr;
		peer[0] = dir == POLICYC_DIR_INGRESS ? ip->saddr : ip->daddr;
		ep[1] = ep[2] = ep[3] = 0;
		peer[1] = peer[2] = peer[3] = 0;
	} else if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip = (void *)(eth + 1);

		if ((void *)(ip + 1) > data_end)
			return POLICYC_CONTINUE;
		/* A payload length of zero (a jumbogram) is the full path's to read. */
		if (ip->version != 6 || ip->payload_len == 0)
			return POLICYC_CONTINUE;
		proto = ip->nexthdr;
		off = ETH_HLEN + sizeof(*ip);
		end = off + bpf_ntohs(ip->payload_len);
		*(__u32 *)&key->family = word_of(POLICYC_FAMILY_IPV6, proto, 0);
		if (dir == POLICYC_DIR_INGRESS) {
			__builtin_memcpy(key->ep_addr, &ip->daddr, 16);
			__builtin_memcpy(key->peer_addr, &ip->saddr, 16);
		} else {
			__builtin_memcpy(key->ep_addr, &ip->saddr, 16);
			__builtin_memcpy(key->peer_addr, &ip->daddr, 16);
		}
	} else {
		return POLICYC_CONTINUE;
	}

	/* The transport header must lie inside the IP packet, the IP packet inside the frame
	 * (the full path's malformed checks), and the header in the linear area. */
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return POLICYC_CONTINUE;
	if (off + l4_header_len(proto) > end || end > skb->len ||
	    data + off + l4_header_len(proto) > data_end)
		return POLICYC_CONTINUE;
	sport = *(__be16 *)(data + off);
	dport = *(__be16 *)(data + off + 2);
	if (proto == IPPROTO_TCP) {
		if (data + off + sizeof(struct tcphdr) > data_end)
			return POLICYC_CONTINUE;
		tcp_flags = *(__u8 *)(data + off + 13);
	}
	key->ifindex = skb->ifindex;
	*(__u32 *)&key->ep_port = dir == POLICYC_DIR_INGRESS ? word_of_halves(dport, sport)
	                                                     : word_of_halves(sport, dport);
	pre->sport = sport;
	pre->dport = dport;
	pre->tcp_flags = tcp_flags;
	pre->plain = 1;

	/* A SYN is always judged by policy (ct_check()). */
	if ((tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) == TCP_FLAG_SYN)
		return POLICYC_CONTINUE;
	ct = bpf_map_lookup_elem(&policyc_ct, key);
	pre->found = ct;
	pre->looked_up = 1;
	if (!ct)
		return POLICYC_CONTINUE;
	return ct_established(ct, proto, tcp_flags, dir, gen, row);
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
 * Step 5, once the endpoint is known: passes a reply of a flow this endpoint tracks, a
 * forward packet of a flow policy allowed in this generation, or an ICMP error about a
 * tracked flow. ct is the packet's own entry, or NULL. An entry another endpoint opened
 * on this interface (it was rebound since) is not this endpoint's: its packets are judged
 * by policy. A TCP SYN without ACK always opens a new connection, so it is never a reply
 * and never trusts an earlier verdict; its entry is not even looked up.
 */
static __always_inline int ct_check(const struct endpoint_policy *eps, struct ct_value *ct,
                                    struct event *ev, const struct flow *flow, __u32 ifindex,
                                    __u8 dir, __u32 gen)
{
	struct ct_key key;
	__u32 now = ct_now();

	if (ct && ct->endpoint_id == eps->endpoint_id && ct_alive(ct, ev->proto, now)) {
		if (ct->direction != dir) {
			/* Replies pass whatever the generation: the flow was allowed when it
			 * opened. The stamp lets the next ones take the established path. */
			if (ct->checked != gen)
				ct->checked = gen;
			ct_touch(ct, flow->tcp_flags, now);
			ev->rule = ct->rule;
			return POLICYC_PASS_REPLY;
		}
		if (ct->generation == gen) {
			ct_touch(ct, flow->tcp_flags, now);
			ev->rule = ct->rule;
			return POLICYC_PASS_ESTABLISHED;
		}
	}

	/*
	 * An ICMP error travels as a reply of the packet it quotes would: its quote is of a
	 * packet of a flow this endpoint tracks, sent the other way (the quote may be of a
	 * forward packet or of a reply). It is sent to the quoted packet's source, which
	 * Linux's conntrack checks too (nf_conntrack_inet_error()); without that check an
	 * endpoint could send errors quoting any flow it has to any peer its policy refuses.
	 * The source is not checked: any router on the path may report an error.
	 */
	if (!flow->inner_proto || !same_address(ev->daddr, flow->inner_saddr))
		return POLICYC_CONTINUE;
	ct_key_of(&key, ifindex, ev->family, flow->inner_proto, flow->inner_saddr,
	          flow->inner_daddr, flow->inner_sport, flow->inner_dport, !dir);
	ct = bpf_map_lookup_elem(&policyc_ct, &key);
	if (!ct || ct->endpoint_id != eps->endpoint_id || !ct_alive(ct, flow->inner_proto, now))
		return POLICYC_CONTINUE;
	ev->rule = ct->rule;
	return POLICYC_PASS_RELATED;
}

/*
 * Opens, or renews, the flow of a packet policy allowed in generation gen, with its key
 * already built: one write, which caches the verdict for the packet's direction and lets
 * the replies through in the other. A failed update (no memory) is not a reason to drop a
 * packet policy allowed: its later packets are then judged by policy again, and its
 * replies by policy in their own direction.
 */
static __always_inline void ct_open(const struct ct_key *key, const struct endpoint_policy *eps,
                                    __u32 row, __u8 dir, __u32 rule, __u32 gen)
{
	/* Stored in 64-bit words, which is how the kernel copies it into the map (see
	 * word_of()): last_seen and rule, generation and checked, then endpoint_id,
	 * metrics_row, direction and flags. */
	union {
		struct ct_value value;
		__u64 words[3];
	} entry;

	entry.words[0] = pair_of(ct_now(), rule);
	entry.words[1] = pair_of(gen, gen);
	entry.words[2] = pair_of(eps->endpoint_id, word_of_halves(row, word_of_bytes(dir, 0)));
	bpf_map_update_elem(&policyc_ct, key, &entry.value, BPF_ANY);
}

/* The hosts map's entry for an exact address (16 bytes, an IPv4 one zero beyond its 4),
 * or NULL. */
static __always_inline struct ipcache_value *host_entry(__u8 family, const __u8 *addr)
{
	struct host_key host;

	/* family and pad: one word (word_of()). */
	*(__u32 *)&host.family = word_of(family, 0, 0);
	__builtin_memcpy(host.addr, addr, 16);
	return bpf_map_lookup_elem(&policyc_hosts, &host);
}

/* The peer's security identity in slot: its exact address in the hosts map, else its
 * longest ipcache prefix, else the world. */
static __always_inline __u32 peer_identity(const struct event *ev, __u8 dir, __u32 slot)
{
	const __u8 *addr = dir == POLICYC_DIR_INGRESS ? ev->saddr : ev->daddr;
	struct ipcache_value *value = host_entry(ev->family, addr);
	struct ipcache_key prefix;

	if (value)
		return value->identity[slot];

	/* The trie matches over family and padding too: 32 bits of them, then the address. */
	prefix.prefixlen = 32 + (ev->family == POLICYC_FAMILY_IPV4 ? 32 : 128);
	*(__u32 *)&prefix.family = word_of(ev->family, 0, 0);
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

	/* proto, port_bits and port share a word, stored whole (word_of()). */
	__u32 *last = (__u32 *)&ev->entry.proto;

	ev->entry.table = table;
	ev->entry.identity = identity;
	if (flow->has_port) {
#pragma unroll
		for (int bits = POLICYC_PORT_BITS; bits > 0; bits--) {
			if (!(port_bits & (1u << bits)))
				continue;
			*last = word_of(ev->proto, bits,
			                flow->policy_port & (__u16)(0xffffu << (16 - bits)));
			verdict = policy_entry(ev, slot);
			if (verdict)
				return verdict;
		}
	}
	*last = word_of(ev->proto, 0, 0);
	verdict = policy_entry(ev, slot);
	if (verdict)
		return verdict;
	*last = 0;
	return policy_entry(ev, slot);
}

/* The node's host endpoint in slot, as the runtime copies it to key
 * POLICYC_HOST_ENDPOINT_KEY of the endpoints map, or NULL when the node has none. */
static __always_inline const struct endpoint_policy *host_endpoint(__u32 slot)
{
	__u32 key = POLICYC_HOST_ENDPOINT_KEY;
	const struct endpoint_info *host = bpf_map_lookup_elem(&policyc_endpoints, &key);

	if (!host || host->slot[slot & 1].endpoint_id == 0)
		return NULL;
	return &host->slot[slot & 1];
}

/*
 * The host policy over traffic between the node and one of its own pods. Such traffic
 * crosses the pod's interface and never the node's uplink, so the host endpoint's tables
 * are applied here, after the pod's own: the host's ingress table to what the pod sends
 * the node, its egress table to what the node sends the pod, with the pod's identity as
 * the peer (as Cilium's host firewall judges it). Returns POLICYC_CONTINUE when the host
 * does not enforce that direction, else POLICYC_PASS_POLICY or a drop, with the deciding
 * key and rule in ev.
 */
static __always_inline int host_policy(const struct endpoint_policy *host,
                                       const struct endpoint_policy *eps, struct event *ev,
                                       const struct flow *flow, __u8 dir, __u32 slot)
{
	__u32 table = dir == POLICYC_DIR_EGRESS ? host->ingress_table : host->egress_table;
	__u32 port_bits =
	        dir == POLICYC_DIR_EGRESS ? host->ingress_port_bits : host->egress_port_bits;
	const struct policy_verdict *verdict;

	if (table == 0)
		return POLICYC_CONTINUE;
	verdict = policy_for_identity(ev, flow, table, port_bits, eps->identity, slot);
	if (!verdict)
		verdict =
		        policy_for_identity(ev, flow, table, port_bits, POLICYC_IDENTITY_ANY, slot);
	if (!verdict) {
		__builtin_memset(&ev->entry, 0, sizeof(ev->entry));
		ev->rule = POLICYC_RULE_NONE;
		return POLICYC_DROP_NO_POLICY;
	}
	ev->rule = verdict->rule;
	return verdict->verdict == POLICYC_VERDICT_ALLOW ? POLICYC_PASS_POLICY
	                                                 : POLICYC_DROP_POLICY_DENY;
}

/*
 * Step 6: judges a packet by the endpoint's table for dir, and, when its peer is the node
 * itself, by the node's host policy too. The compiler has folded every precedence into
 * the values, so the first entry present decides and values are never compared with each
 * other.
 */
static __always_inline int enforce_policy(const struct endpoint_policy *eps, struct event *ev,
                                          const struct flow *flow, const struct ct_key *key,
                                          __u32 row, __u8 dir, __u32 gen)
{
	__u32 table = dir == POLICYC_DIR_INGRESS ? eps->ingress_table : eps->egress_table;
	__u32 reply_table = dir == POLICYC_DIR_INGRESS ? eps->egress_table : eps->ingress_table;
	__u32 port_bits =
	        dir == POLICYC_DIR_INGRESS ? eps->ingress_port_bits : eps->egress_port_bits;
	const struct endpoint_policy *host = NULL;
	const struct policy_verdict *verdict;
	int reason = POLICYC_PASS_NOT_ENFORCED;
	__u32 rule = POLICYC_RULE_NONE;
	__u32 slot = gen & 1;
	struct policy_key entry;
	int ret;

	if (table != 0) {
		ev->peer_identity = peer_identity(ev, dir, slot);
		verdict = policy_for_identity(ev, flow, table, port_bits, ev->peer_identity, slot);
		if (!verdict)
			verdict = policy_for_identity(ev, flow, table, port_bits,
			                              POLICYC_IDENTITY_ANY, slot);
		if (!verdict) {
			__builtin_memset(&ev->entry, 0, sizeof(ev->entry));
			return POLICYC_DROP_NO_POLICY;
		}
		ev->rule = verdict->rule;
		/* Anything but an explicit allow drops, so a corrupt verdict fails closed. */
		if (verdict->verdict != POLICYC_VERDICT_ALLOW)
			return POLICYC_DROP_POLICY_DENY;
		reason = POLICYC_PASS_POLICY;
		rule = verdict->rule;
		if (ev->peer_identity == POLICYC_IDENTITY_HOST)
			host = host_endpoint(slot);
	} else {
		/* The peer is looked up only if a host policy could care about it. */
		host = host_endpoint(slot);
		if (host)
			ev->peer_identity = peer_identity(ev, dir, slot);
	}

	/* A host endpoint itself (a node's uplink) is never its own peer here: the node's
	 * own addresses are what it protects. */
	if (host && eps->identity != POLICYC_IDENTITY_HOST &&
	    ev->peer_identity == POLICYC_IDENTITY_HOST) {
		entry = ev->entry;
		ret = host_policy(host, eps, ev, flow, dir, slot);
		if (ret < 0)
			return ret;
		if (reason == POLICYC_PASS_NOT_ENFORCED && ret == POLICYC_PASS_POLICY) {
			/* The host's allow is the only policy that decided. */
			reason = POLICYC_PASS_POLICY;
			rule = ev->rule;
		} else {
			/* The pod's decision is the one to name. */
			ev->entry = entry;
			ev->rule = rule;
		}
		/* Its replies cross the other direction, which the host may enforce. */
		if (host->ingress_table != 0 || host->egress_table != 0)
			reply_table = 1;
	}

	/*
	 * An endpoint no policy isolates in this direction accepts everything. Its replies
	 * travel in the other direction, and if that one is isolated they must still pass:
	 * Kubernetes allows the replies of every allowed connection, so a pod isolated for
	 * ingress only still gets the answers to the connections it opens. The flow is
	 * tracked for that case alone; when neither direction is isolated the replies pass
	 * unenforced anyway, and tracking them would only cost an update per flow.
	 */
	if (reason == POLICYC_PASS_NOT_ENFORCED && reply_table == 0)
		return POLICYC_PASS_NOT_ENFORCED;
	ct_open(key, eps, row, dir, rule, gen);
	return reason;
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
	struct ipcache_value *value = host_entry(ev->family, addr);

	return !value || value->identity[slot] != POLICYC_IDENTITY_HOST;
}

/* The endpoint bound to interface ifindex in generation gen, or NULL when it is unbound,
 * and in any case the interface's metrics row in row (row 0 when it has no entry) and its
 * POLICYC_EP_F_* flags in flags. */
static __always_inline const struct endpoint_policy *endpoint_of(__u32 ifindex, __u32 gen,
                                                                 __u32 *row, __u32 *flags)
{
	const struct endpoint_info *ep = bpf_map_lookup_elem(&policyc_endpoints, &ifindex);
	const struct endpoint_policy *eps;

	if (!ep)
		return NULL;
	*row = ep->metrics_row;
	*flags = ep->flags;
	eps = &ep->slot[gen & 1];
	return eps->endpoint_id != 0 ? eps : NULL;
}

/* Fills the event and flow of a plain packet from what the established path read of it:
 * what parse_ipv4() or parse_ipv6() and parse_l4() would have. */
static __always_inline void plain_packet(const struct prelude *pre, struct event *ev,
                                         struct flow *flow, __u8 dir)
{
	const __u8 *src = dir == POLICYC_DIR_INGRESS ? pre->key.peer_addr : pre->key.ep_addr;
	const __u8 *dst = dir == POLICYC_DIR_INGRESS ? pre->key.ep_addr : pre->key.peer_addr;

	ev->family = pre->key.family;
	ev->proto = pre->key.proto;
	__builtin_memcpy(ev->saddr, src, 16);
	__builtin_memcpy(ev->daddr, dst, 16);
	ev->sport = bpf_ntohs(pre->sport);
	ev->dport = bpf_ntohs(pre->dport);
	flow->ct_sport = pre->sport;
	flow->ct_dport = pre->dport;
	flow->policy_port = ev->dport;
	flow->has_port = 1;
	flow->tcp_flags = pre->tcp_flags;
}

/*
 * Runs steps 2 to 6 of the header comment for a packet the established path did not
 * decide, and returns the reason of the decision, with the interface's metrics row in
 * row. skb->ifindex is the host-side interface in both directions: the device a frame
 * arrived on at tc ingress, and the device it leaves by at tc egress.
 */
static __always_inline int judge(struct __sk_buff *skb, struct event *ev, __u8 dir, __u32 gen,
                                 __u32 *row, struct prelude *pre)
{
	__u32 ifindex = skb->ifindex;
	const struct endpoint_policy *eps;
	struct ct_value *ct = NULL;
	const struct ct_key *key = &pre->key;
	__u32 ep_flags = 0;
	struct ethhdr *eth;
	void *data_end;
	struct flow flow;
	__be16 l3;
	int ret = POLICYC_CONTINUE;

	__builtin_memset(&flow, 0, sizeof(flow));
	if (pre->plain) {
		plain_packet(pre, ev, &flow, dir);
	} else {
		pull_headers(skb, ETH_HLEN);
		eth = (void *)(long)skb->data;
		data_end = (void *)(long)skb->data_end;
		if ((void *)(eth + 1) > data_end) {
			endpoint_of(ifindex, gen, row, &ep_flags);
			return POLICYC_DROP_MALFORMED;
		}
		l3 = eth->h_proto;
		if (l3 != bpf_htons(ETH_P_IP) && l3 != bpf_htons(ETH_P_IPV6)) {
			endpoint_of(ifindex, gen, row, &ep_flags);
			return POLICYC_PASS_NOT_IP;
		}
		if (l3 == bpf_htons(ETH_P_IP))
			ret = parse_ipv4(skb, ev, &flow);
		else
			ret = parse_ipv6(skb, ev, &flow);
		/* The established path left its key unused: it did not read this packet. */
		ct_key_of(&pre->key, ifindex, ev->family, ev->proto, ev->saddr, ev->daddr,
		          flow.ct_sport, flow.ct_dport, dir);
	}

	/*
	 * Step 5 before step 3, for the packets the established path did not see: a packet of
	 * a flow whose entry vouches for it is decided without its endpoint. A later fragment
	 * has no ports to look up, link-local ICMPv6 and a SYN never use conntrack, and a
	 * first fragment must also be recorded for its followers, which needs the endpoint.
	 * An entry the established path found and did not take is not taken here either.
	 */
	if (ret == POLICYC_CONTINUE && flow.frag != FRAG_LATER && !flow.link_local) {
		if (pre->looked_up) {
			ct = pre->found;
		} else if ((flow.tcp_flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN) {
			ct = bpf_map_lookup_elem(&policyc_ct, key);
			if (ct && flow.frag == FRAG_NONE) {
				ret = ct_established(ct, ev->proto, flow.tcp_flags, dir, gen, row);
				if (ret != POLICYC_CONTINUE) {
					ev->rule = ct->rule;
					return ret;
				}
			}
		}
	}

	/* Step 3: an unbound interface drops whatever its packets are, once they are IP. */
	eps = endpoint_of(ifindex, gen, row, &ep_flags);
	if (!eps)
		return POLICYC_DROP_NO_ENDPOINT;
	ev->endpoint_id = eps->endpoint_id;
	ev->identity = eps->identity;
	if (ret != POLICYC_CONTINUE)
		return ret;
	/* Neighbour discovery and MLD are the link's, on an uplink as on a pod's veth. */
	if (flow.link_local)
		return POLICYC_PASS_ICMPV6_LINK;
	/* Before fragments and conntrack: forwarded traffic leaves no state here, and its
	 * later fragments pass as their first did. */
	if (ep_flags & POLICYC_EP_F_HOST && host_forwarded(ev, dir, gen & 1))
		return POLICYC_PASS_FORWARDED;

	if (flow.frag == FRAG_LATER)
		return frag_follow(eps->endpoint_id, ev, &flow);

	ret = ct_check(eps, ct, ev, &flow, ifindex, dir, gen);
	if (ret == POLICYC_CONTINUE)
		ret = enforce_policy(eps, ev, &flow, key, *row, dir, gen);
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
	struct prelude pre;
	const struct config *cfg;
	struct event ev;
	__u32 zero = 0;
	__u32 gen = 0;
	__u32 rate = 0;
	__u32 flags = 0;
	__u32 burst = 0;
	__u32 row = 0;
	int reason;

	pre.found = NULL;
	pre.plain = 0;
	pre.looked_up = 0;
	cfg = bpf_map_lookup_elem(&policyc_config, &zero);
	if (cfg) {
		/* Once per packet: every lookup below uses this generation's slot. */
		gen = *(volatile const __u32 *)&cfg->generation;
		flags = cfg->flags;
		rate = cfg->event_rate;
		burst = cfg->event_burst;
	}

	reason = established_path(skb, dir, gen, &row, &pre);
	if (reason != POLICYC_CONTINUE) {
		if (row >= POLICYC_ENDPOINTS_MAX)
			row = 0;
		count(skb, row, reason);
		return TC_ACT_OK;
	}

	__builtin_memset(&ev, 0, sizeof(ev));
	ev.direction = dir;
	reason = judge(skb, &ev, dir, gen, &row, &pre);

	if (row >= POLICYC_ENDPOINTS_MAX)
		row = 0;
	count(skb, row, reason);

	if (rate && (reason < 0 ||
	             (reason == POLICYC_PASS_POLICY && flags & POLICYC_CONFIG_EVENTS_ALLOWED))) {
		ev.timestamp_ns = now_ns();
		ev.ifindex = skb->ifindex;
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
