// SPDX-License-Identifier: MIT OR Apache-2.0
/* tc access control for the mesh interface (DESIGN decision 5). Ingress classifies new packets
 * from the mesh against the policy tries and drops what no rule allows; egress records the flows
 * this node starts so their return traffic passes. Headers are read with bpf_skb_load_bytes so
 * that non-linear (GRO) skbs and odd offsets need no per-kernel verifier tricks. */

#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "acl.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define NS_PER_SEC 1000000000ull
#define FLOW_IDLE_NS (600 * NS_PER_SEC)
#define FLOW_REFRESH_NS (1 * NS_PER_SEC)
#define MAX_EXT_HEADERS 6

#define PROTO_ICMP 1
#define PROTO_TCP 6
#define PROTO_UDP 17
#define PROTO_ICMPV6 58
#define PROTO_SCTP 132

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct mg_config);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mg_config SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct mg_addr4_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mg_src4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct mg_addr4_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mg_dst4 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct mg_addr6_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mg_src6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct mg_addr6_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mg_dst6 SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 1048576);
	__type(key, struct mg_rule_key);
	__type(value, __u32);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mg_rules SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 32768);
	__type(key, struct mg_flow_key);
	__type(value, struct mg_flow_value);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mg_flows SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MG_STATS_LEN);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mg_stats SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, MG_RULE_HITS_LEN);
	__type(key, __u32);
	__type(value, __u64);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} mg_rule_hits SEC(".maps");

enum parse_result {
	PARSE_OK,
	PARSE_NOT_IP,
	PARSE_MALFORMED,
	PARSE_FRAGMENT,
};

struct pkt {
	__u8 family; /* 4 or 6 */
	__u8 proto;
	__u8 icmp;      /* ICMP for IPv4, ICMPv6 for IPv6 */
	__u8 icmp_type;
	__be16 sport;
	__be16 dport;
	__u8 saddr[16];
	__u8 daddr[16];
};

static __always_inline void count(__u32 index)
{
	__u64 *v = bpf_map_lookup_elem(&mg_stats, &index);

	if (v)
		*v += 1;
}

static __always_inline void count_hit(__u32 index)
{
	/* The array bounds the index: an out-of-range counter simply is not counted. */
	__u64 *v = bpf_map_lookup_elem(&mg_rule_hits, &index);

	if (v)
		*v += 1;
}

static __always_inline int parse_ipv4(struct __sk_buff *skb, __u32 off, struct pkt *p, __u32 *l4)
{
	__u8 h[20];

	if (bpf_skb_load_bytes(skb, off, h, sizeof(h)))
		return PARSE_MALFORMED;
	if ((h[0] >> 4) != 4)
		return PARSE_MALFORMED;
	__u32 hl = (__u32)(h[0] & 0x0f) * 4;
	if (hl < 20 || skb->len < off + hl)
		return PARSE_MALFORMED;
	p->family = 4;
	p->proto = h[9];
	__builtin_memcpy(p->saddr, &h[12], 4);
	__builtin_memcpy(p->daddr, &h[16], 4);
	/* A non-zero fragment offset: the first fragment carried the ports and was checked. */
	if ((((__u32)h[6] << 8 | h[7]) & 0x1fff) != 0)
		return PARSE_FRAGMENT;
	p->icmp = p->proto == PROTO_ICMP;
	*l4 = off + hl;
	return PARSE_OK;
}

static __always_inline int is_ext_header(__u8 nh)
{
	return nh == 0 || nh == 43 || nh == 44 || nh == 60;
}

static __always_inline int parse_ipv6(struct __sk_buff *skb, __u32 off, struct pkt *p, __u32 *l4)
{
	__u8 h[40];

	if (bpf_skb_load_bytes(skb, off, h, sizeof(h)))
		return PARSE_MALFORMED;
	if ((h[0] >> 4) != 6)
		return PARSE_MALFORMED;
	p->family = 6;
	__builtin_memcpy(p->saddr, &h[8], 16);
	__builtin_memcpy(p->daddr, &h[24], 16);
	__u8 nh = h[6];
	__u32 pos = off + 40;

#pragma unroll
	for (int i = 0; i < MAX_EXT_HEADERS; i++) {
		__u8 e[8];

		if (!is_ext_header(nh))
			break;
		if (nh == 44) {
			if (bpf_skb_load_bytes(skb, pos, e, 8))
				return PARSE_MALFORMED;
			if ((((__u32)e[2] << 8 | e[3]) & 0xfff8) != 0)
				return PARSE_FRAGMENT;
			nh = e[0];
			pos += 8;
		} else {
			if (bpf_skb_load_bytes(skb, pos, e, 2))
				return PARSE_MALFORMED;
			nh = e[0];
			pos += ((__u32)e[1] + 1) * 8;
		}
	}
	/* More extension headers than we walk: we cannot find the ports, so we cannot judge it. */
	if (is_ext_header(nh))
		return PARSE_MALFORMED;
	p->proto = nh;
	p->icmp = nh == PROTO_ICMPV6;
	*l4 = pos;
	return PARSE_OK;
}

static __always_inline int parse(struct __sk_buff *skb, int eth, struct pkt *p)
{
	__u32 off = 0;
	__u32 l4 = 0;
	int version;
	int r;

	if (eth) {
		__be16 ethertype;

		if (bpf_skb_load_bytes(skb, 12, &ethertype, 2))
			return PARSE_MALFORMED;
		if (ethertype == bpf_htons(ETH_P_IP))
			version = 4;
		else if (ethertype == bpf_htons(ETH_P_IPV6))
			version = 6;
		else
			return PARSE_NOT_IP;
		off = ETH_HLEN;
	} else {
		__u8 b;

		if (bpf_skb_load_bytes(skb, 0, &b, 1))
			return PARSE_MALFORMED;
		version = b >> 4;
	}

	if (version == 4)
		r = parse_ipv4(skb, off, p, &l4);
	else if (version == 6)
		r = parse_ipv6(skb, off, p, &l4);
	else
		return PARSE_MALFORMED;
	if (r != PARSE_OK)
		return r;

	if (p->icmp) {
		__u8 t[2];

		if (bpf_skb_load_bytes(skb, l4, t, 2))
			return PARSE_MALFORMED;
		p->icmp_type = t[0];
	} else if (p->proto == PROTO_TCP || p->proto == PROTO_UDP || p->proto == PROTO_SCTP) {
		__be16 ports[2];

		if (bpf_skb_load_bytes(skb, l4, ports, 4))
			return PARSE_MALFORMED;
		p->sport = ports[0];
		p->dport = ports[1];
	}
	return PARSE_OK;
}

static __always_inline int is_icmp_reply(const struct pkt *p)
{
	__u8 t = p->icmp_type;

	if (p->family == 4)
		return t == 0 || t == 3 || t == 11 || t == 12;
	return t == 129 || t == 1 || t == 2 || t == 3 || t == 4;
}

static __always_inline void flow_key(struct mg_flow_key *k, const struct pkt *p, int inbound)
{
	k->family = p->family;
	k->proto = p->proto;
	if (inbound) {
		k->local_port = p->dport;
		k->remote_port = p->sport;
		__builtin_memcpy(k->local, p->daddr, 16);
		__builtin_memcpy(k->remote, p->saddr, 16);
	} else {
		k->local_port = p->sport;
		k->remote_port = p->dport;
		__builtin_memcpy(k->local, p->saddr, 16);
		__builtin_memcpy(k->remote, p->daddr, 16);
	}
}

/* The class of the most specific policy prefix holding addr in this slot, or 0. */
static __always_inline __u32 addr_class(void *trie4, void *trie6, const struct pkt *p,
					const __u8 *addr, __u32 slot)
{
	__u32 *c;

	if (p->family == 4) {
		struct mg_addr4_key k = { .prefixlen = MG_SLOT_BITS + 32, .slot = slot };

		__builtin_memcpy(k.addr, addr, 4);
		c = bpf_map_lookup_elem(trie4, &k);
	} else {
		struct mg_addr6_key k = { .prefixlen = MG_SLOT_BITS + 128, .slot = slot };

		__builtin_memcpy(k.addr, addr, 16);
		c = bpf_map_lookup_elem(trie6, &k);
	}
	return c ? *c : 0;
}

static __always_inline int ingress(struct __sk_buff *skb, int eth)
{
	struct pkt p = {};
	struct mg_flow_key fk = {};
	struct mg_flow_value *fv = NULL;
	__u32 zero = 0;
	int r = parse(skb, eth, &p);

	if (r == PARSE_NOT_IP) {
		count(MG_STAT_PASS_NOT_IP);
		return TC_ACT_OK;
	}
	if (r == PARSE_FRAGMENT) {
		count(MG_STAT_PASS_FRAGMENT);
		return TC_ACT_OK;
	}
	if (r != PARSE_OK) {
		count(MG_STAT_DROP_MALFORMED);
		return TC_ACT_SHOT;
	}
	if (p.icmp && is_icmp_reply(&p)) {
		count(MG_STAT_PASS_ICMP_REPLY);
		return TC_ACT_OK;
	}

	struct mg_config *cfg = bpf_map_lookup_elem(&mg_config, &zero);
	if (!cfg) {
		count(MG_STAT_DROP_NO_RULE);
		return TC_ACT_SHOT;
	}
	__u32 gen = (__u32)cfg->generation;
	__u64 now = bpf_ktime_get_ns();

	if (!p.icmp) {
		flow_key(&fk, &p, 1);
		fv = bpf_map_lookup_elem(&mg_flows, &fk);
		if (fv) {
			if (fv->origin == MG_ORIGIN_LOCAL && now - fv->last_seen_ns < FLOW_IDLE_NS) {
				count(MG_STAT_PASS_FLOW);
				return TC_ACT_OK;
			}
			if (fv->origin == MG_ORIGIN_PEER && !(cfg->flags & MG_FLAG_NO_VERDICT_CACHE) &&
			    fv->policy_gen == gen) {
				count_hit(fv->counter);
				count(MG_STAT_PASS_FLOW);
				return TC_ACT_OK;
			}
		}
	}

	__u32 slot = cfg->active_slot;
	__u32 src_class = addr_class(&mg_src4, &mg_src6, &p, p.saddr, slot);
	__u32 dst_class = addr_class(&mg_dst4, &mg_dst6, &p, p.daddr, slot);
	__u32 *counter = NULL;

	if (src_class && dst_class) {
		struct mg_rule_key rk = {
			.prefixlen = MG_RULE_FIXED_BITS + 16,
			.src_class = src_class,
			.dst_class = dst_class,
			.proto = p.proto,
			.port = p.icmp ? bpf_htons((__u16)p.icmp_type) : p.dport,
		};
		counter = bpf_map_lookup_elem(&mg_rules, &rk);
	}
	if (!counter) {
		count(MG_STAT_DROP_NO_RULE);
		return TC_ACT_SHOT;
	}
	__u32 ctr = *counter;

	count_hit(ctr);
	count(MG_STAT_PASS_RULE);
	/* Remember the verdict unless the flow is ours or already remembered for this policy. */
	if (!p.icmp && !(fv && (fv->origin == MG_ORIGIN_LOCAL || fv->policy_gen == gen))) {
		struct mg_flow_value nv = {
			.last_seen_ns = now,
			.origin = MG_ORIGIN_PEER,
			.policy_gen = gen,
			.counter = ctr,
		};
		bpf_map_update_elem(&mg_flows, &fk, &nv, BPF_ANY);
	}
	return TC_ACT_OK;
}

static __always_inline int egress(struct __sk_buff *skb, int eth)
{
	struct pkt p = {};
	struct mg_flow_key fk = {};

	if (parse(skb, eth, &p) != PARSE_OK || p.icmp)
		return TC_ACT_OK;

	flow_key(&fk, &p, 0);
	__u64 now = bpf_ktime_get_ns();
	struct mg_flow_value *fv = bpf_map_lookup_elem(&mg_flows, &fk);

	if (!fv) {
		struct mg_flow_value nv = {
			.last_seen_ns = now,
			.origin = MG_ORIGIN_LOCAL,
		};
		/* NOEXIST: a peer-started entry written meanwhile must not become ours. */
		if (bpf_map_update_elem(&mg_flows, &fk, &nv, BPF_NOEXIST) == 0)
			count(MG_STAT_EGRESS_NEW_FLOW);
	} else if (fv->origin == MG_ORIGIN_LOCAL && now - fv->last_seen_ns > FLOW_REFRESH_NS) {
		fv->last_seen_ns = now;
	}
	return TC_ACT_OK;
}

SEC("classifier")
int acl_ingress_l3(struct __sk_buff *skb)
{
	return ingress(skb, 0);
}

SEC("classifier")
int acl_egress_l3(struct __sk_buff *skb)
{
	return egress(skb, 0);
}

SEC("classifier")
int acl_ingress_eth(struct __sk_buff *skb)
{
	return ingress(skb, 1);
}

SEC("classifier")
int acl_egress_eth(struct __sk_buff *skb)
{
	return egress(skb, 1);
}
