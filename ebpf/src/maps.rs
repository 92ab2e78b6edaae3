//! `#[repr(C)]` mirrors of the map keys and values in `bpf/acl.h`, with layout assertions so a
//! change on one side fails the build instead of corrupting lookups.

use std::mem::size_of;

use aya::maps::lpm_trie::Key;

/// Map names as the object (and the pin directory) spells them.
pub mod names {
    pub const CONFIG: &str = "mg_config";
    pub const SRC4: &str = "mg_src4";
    pub const DST4: &str = "mg_dst4";
    pub const SRC6: &str = "mg_src6";
    pub const DST6: &str = "mg_dst6";
    pub const RULES: &str = "mg_rules";
    pub const FLOWS: &str = "mg_flows";
    pub const STATS: &str = "mg_stats";
    pub const RULE_HITS: &str = "mg_rule_hits";
    /// Every pinned map, for cleanup.
    pub const ALL: [&str; 9] = [
        CONFIG, SRC4, DST4, SRC6, DST6, RULES, FLOWS, STATS, RULE_HITS,
    ];
}

/// `mg_config.flags` bit 0: ingress skips the verdict cache (benchmarks).
pub const FLAG_NO_VERDICT_CACHE: u32 = 1;
/// Length of `mg_rule_hits`; each slot owns half.
pub const RULE_HITS_LEN: u32 = 32768;
/// Counter indices per slot.
pub const COUNTERS_PER_SLOT: u32 = RULE_HITS_LEN / 2;
/// Bits of a rule key always matched (src class, dst class, proto, pad).
pub const RULE_FIXED_BITS: u32 = 80;
/// Bits of an address key always matched (the slot).
pub const SLOT_BITS: u32 = 32;
/// `mg_flows` origin: this node started the flow.
pub const ORIGIN_LOCAL: u32 = 1;
/// `mg_flows` origin: the peer started the flow.
pub const ORIGIN_PEER: u32 = 2;

/// `struct mg_config`, the one element of `mg_config`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub active_slot: u32,
    pub flags: u32,
    pub generation: u64,
}

/// The data part (after `prefixlen`) of `struct mg_addr4_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addr4 {
    pub slot: u32,
    pub addr: [u8; 4],
}

/// The data part (after `prefixlen`) of `struct mg_addr6_key`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Addr6 {
    pub slot: u32,
    pub addr: [u8; 16],
}

/// The data part (after `prefixlen`) of `struct mg_rule_key`. `port` is big-endian bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RuleData {
    pub src_class: u32,
    pub dst_class: u32,
    pub proto: u8,
    pub pad: u8,
    pub port: [u8; 2],
}

/// `struct mg_flow_key`; addresses in network order, IPv4 in the first 4 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub family: u8,
    pub proto: u8,
    pub pad: u16,
    pub local_port: [u8; 2],
    pub remote_port: [u8; 2],
    pub local: [u8; 16],
    pub remote: [u8; 16],
}

/// `struct mg_flow_value`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowValue {
    pub last_seen_ns: u64,
    pub origin: u32,
    pub policy_gen: u32,
    pub counter: u32,
    pub pad: u32,
}

/// The whole C key structs, only to assert their sizes against the header.
#[repr(C)]
struct Addr4Key {
    prefixlen: u32,
    data: Addr4,
}
#[repr(C)]
struct Addr6Key {
    prefixlen: u32,
    data: Addr6,
}
#[repr(C)]
struct RuleKey {
    prefixlen: u32,
    data: RuleData,
}

const _: () = assert!(size_of::<Config>() == 16);
const _: () = assert!(size_of::<Addr4Key>() == 12);
const _: () = assert!(size_of::<Addr6Key>() == 24);
const _: () = assert!(size_of::<RuleKey>() == 16);
const _: () = assert!(size_of::<Key<Addr4>>() == size_of::<Addr4Key>());
const _: () = assert!(size_of::<Key<Addr6>>() == size_of::<Addr6Key>());
const _: () = assert!(size_of::<Key<RuleData>>() == size_of::<RuleKey>());
const _: () = assert!(size_of::<FlowKey>() == 40);
const _: () = assert!(size_of::<FlowValue>() == 24);

// SAFETY: all are #[repr(C)] of integers and byte arrays with no padding (the sizes above equal
// the sum of their fields), so every bit pattern is valid and no byte is uninitialised.
unsafe impl aya::Pod for Config {}
// SAFETY: as above.
unsafe impl aya::Pod for Addr4 {}
// SAFETY: as above.
unsafe impl aya::Pod for Addr6 {}
// SAFETY: as above.
unsafe impl aya::Pod for RuleData {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowKey {}
// SAFETY: as above.
unsafe impl aya::Pod for FlowValue {}
