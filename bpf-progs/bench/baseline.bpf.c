// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Baselines of the datapath benchmark (bpf-progs/benches/datapath.rs); never loaded by
 * policyc itself, built by the benchmark when it runs.
 *
 * bench_empty is the floor: what BPF_PROG_TEST_RUN costs per run for a tc program that
 * does nothing. bench_hash adds exactly one bpf_map_lookup_elem() in a hash map whose key
 * and value have the sizes of the datapath's conntrack key and value, which is the goal's
 * yardstick for packets of established flows. bench_lru_hash is the same lookup in an LRU
 * hash map, the type policyc_ct has, to show what the LRU itself adds.
 *
 * Two more take apart what an established flow's packet costs beyond that lookup:
 * bench_ktime reads the clock as conntrack does (bpf_ktime_get_ns()), and bench_ep_hash
 * looks up an interface in a map shaped like policyc_endpoints.
 *
 * The key is built on the stack from constants, not from the packet, so that the
 * baselines carry no parsing cost: they are as cheap as a program with one lookup can be.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>

#include <bpf/bpf_helpers.h>

#include "../c/policyc_maps.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Filled by the benchmark with as many entries as it keeps in policyc_ct, key 0 among
 * them (struct ct_key with every field zero but ifindex 1). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(max_entries, POLICYC_CT_MAX);
} bench_ct_hash SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__type(key, struct ct_key);
	__type(value, struct ct_value);
	__uint(max_entries, POLICYC_CT_MAX);
} bench_ct_lru SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, __u32);
	__type(value, struct endpoint_info);
	__uint(max_entries, POLICYC_ENDPOINTS_MAX);
} bench_endpoints SEC(".maps");

SEC("classifier")
int bench_empty(struct __sk_buff *skb __attribute__((unused)))
{
	return TC_ACT_OK;
}

/* The key every baseline looks up; it is present in both maps. */
static __always_inline void bench_key(struct ct_key *key)
{
	__builtin_memset(key, 0, sizeof(*key));
	key->ifindex = 1;
}

SEC("classifier")
int bench_hash(struct __sk_buff *skb __attribute__((unused)))
{
	struct ct_key key;

	bench_key(&key);
	return bpf_map_lookup_elem(&bench_ct_hash, &key) ? TC_ACT_OK : TC_ACT_SHOT;
}

SEC("classifier")
int bench_lru_hash(struct __sk_buff *skb __attribute__((unused)))
{
	struct ct_key key;

	bench_key(&key);
	return bpf_map_lookup_elem(&bench_ct_lru, &key) ? TC_ACT_OK : TC_ACT_SHOT;
}

SEC("classifier")
int bench_ktime(struct __sk_buff *skb __attribute__((unused)))
{
	/* Any use of the value keeps the call; no clock reads zero. */
	return bpf_ktime_get_ns() ? TC_ACT_OK : TC_ACT_SHOT;
}

SEC("classifier")
int bench_ep_hash(struct __sk_buff *skb __attribute__((unused)))
{
	__u32 ifindex = 1;

	return bpf_map_lookup_elem(&bench_endpoints, &ifindex) ? TC_ACT_OK : TC_ACT_SHOT;
}
