/* Shared layout of the tc ACL program's maps. Mirrored by ebpf/src/maps.rs (#[repr(C)] with size
 * assertions): change both together. */
#ifndef MESHGATE_ACL_H
#define MESHGATE_ACL_H

#include <linux/types.h>

/* mg_config.flags bit 0: ingress skips the verdict cache (benchmarks measure the classifier). */
#define MG_FLAG_NO_VERDICT_CACHE 1u

/* mg_stats indices. */
#define MG_STAT_PASS_RULE 0
#define MG_STAT_PASS_FLOW 1
#define MG_STAT_PASS_ICMP_REPLY 2
#define MG_STAT_PASS_FRAGMENT 3
#define MG_STAT_PASS_NOT_IP 4
#define MG_STAT_DROP_NO_RULE 5
#define MG_STAT_DROP_MALFORMED 6
#define MG_STAT_EGRESS_NEW_FLOW 7
#define MG_STATS_LEN 16

#define MG_RULE_HITS_LEN 32768

/* mg_flows value origin. */
#define MG_ORIGIN_LOCAL 1
#define MG_ORIGIN_PEER 2

/* Rule keys: src_class (32) + dst_class (32) + proto (8) + pad (8) bits are always matched. */
#define MG_RULE_FIXED_BITS 80
/* Address keys: the slot (32 bits) is always matched. */
#define MG_SLOT_BITS 32

struct mg_config {
	__u32 active_slot;
	__u32 flags;
	__u64 generation;
};

struct mg_addr4_key {
	__u32 prefixlen;
	__u32 slot;
	__u8 addr[4];
};

struct mg_addr6_key {
	__u32 prefixlen;
	__u32 slot;
	__u8 addr[16];
};

struct mg_rule_key {
	__u32 prefixlen;
	__u32 src_class;
	__u32 dst_class;
	__u8 proto;
	__u8 pad;
	__be16 port;
};

struct mg_flow_key {
	__u8 family; /* 4 or 6 */
	__u8 proto;
	__u16 pad;
	__be16 local_port;
	__be16 remote_port;
	__u8 local[16];
	__u8 remote[16];
};

struct mg_flow_value {
	__u64 last_seen_ns;
	__u32 origin;
	__u32 policy_gen;
	__u32 counter;
	__u32 pad;
};

#endif
