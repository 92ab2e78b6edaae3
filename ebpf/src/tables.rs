//! Compiles a [`Policy`] into the key sets of the BPF tries (sans-I/O): address prefixes with
//! class ids, and rule keys over (source class, destination class, protocol, port prefix).
//!
//! The address tries return the most specific policy prefix holding an address. The prefixes
//! holding an address form a chain, so an entry's source holds the address exactly when it
//! holds that most specific prefix: the rule keys for (P, Q) are therefore every entry whose
//! source contains P and whose destination contains Q.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use meshgate_acl::Policy;

use crate::error::Error;
use crate::maps::COUNTERS_PER_SLOT;

/// Rule keys one slot may hold (half of `mg_rules`).
pub const MAX_RULE_KEYS: usize = 524_288;
/// Prefixes one slot may hold per address trie (half of `mg_src4` etc.).
pub const MAX_PREFIXES: usize = 131_072;

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const ICMP_ECHO_REQUEST: u16 = 8;
const ICMPV6_ECHO_REQUEST: u16 = 128;

/// A policy prefix and the class id the address tries map it to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClassPrefix {
    pub net: IpNet,
    pub class: u32,
}

/// One `mg_rules` key and its value. The port matches on its top `port_len` bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub src_class: u32,
    pub dst_class: u32,
    pub proto: u8,
    pub port: u16,
    pub port_len: u8,
    pub counter: u32,
}

/// Everything one slot of the maps holds for a policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tables {
    pub slot: u32,
    pub src: Vec<ClassPrefix>,
    pub dst: Vec<ClassPrefix>,
    pub rules: Vec<Rule>,
}

impl Tables {
    /// What the BPF lookups make of a packet, simulated in Rust (linear scans; for tests and
    /// diagnostics): the counter index of the matching rule, or `None` for a drop. `port` is as
    /// in [`Policy::allows`].
    pub fn classify(&self, src: IpAddr, dst: IpAddr, proto: u8, port: u16) -> Option<u32> {
        let src_class = most_specific(&self.src, src)?;
        let dst_class = most_specific(&self.dst, dst)?;
        self.rules
            .iter()
            .find(|r| {
                r.src_class == src_class
                    && r.dst_class == dst_class
                    && r.proto == proto
                    && port_matches(r.port, r.port_len, port)
            })
            .map(|r| r.counter)
    }
}

fn most_specific(prefixes: &[ClassPrefix], addr: IpAddr) -> Option<u32> {
    prefixes
        .iter()
        .filter(|p| p.net.contains(&addr))
        .max_by_key(|p| p.net.prefix_len())
        .map(|p| p.class)
}

fn port_matches(value: u16, len: u8, port: u16) -> bool {
    let mask = u16::MAX
        .checked_shl(16 - u32::from(len.min(16)))
        .unwrap_or(0);
    (value & mask) == (port & mask)
}

/// The class id of the `index`-th prefix of a family in `slot`: never 0, the "no class" value.
pub fn class_id(slot: u32, index: usize) -> u32 {
    ((slot & 1) << 31) | ((index as u32 + 1) & 0x7fff_ffff)
}

/// The slot a class id belongs to.
pub fn class_slot(class: u32) -> u32 {
    class >> 31
}

/// Builds the tables of `policy` for `slot` (0 or 1).
pub fn compile(policy: &Policy, slot: u32) -> Result<Tables, Error> {
    let slot = slot & 1;
    let entries = policy.entries();
    let echo = policy.echo();

    let src = distinct(
        entries
            .iter()
            .map(|e| e.src)
            .chain(echo.iter().map(|p| p.0)),
    );
    let dst = distinct(
        entries
            .iter()
            .map(|e| e.dst)
            .chain(echo.iter().map(|p| p.1)),
    );
    let max_family = |nets: &[IpNet]| {
        let v4 = nets.iter().filter(|n| matches!(n, IpNet::V4(_))).count();
        v4.max(nets.len() - v4)
    };
    let too_large = |rule_keys: usize| Error::TooLarge {
        rule_keys,
        max_rule_keys: MAX_RULE_KEYS,
        src_prefixes: max_family(&src),
        dst_prefixes: max_family(&dst),
        max_prefixes: MAX_PREFIXES,
    };
    if max_family(&src) > MAX_PREFIXES || max_family(&dst) > MAX_PREFIXES {
        return Err(too_large(0));
    }

    let counter = |index: usize| {
        slot * COUNTERS_PER_SLOT + (index.min(COUNTERS_PER_SLOT as usize - 1) as u32)
    };
    // Key -> value; keys are unique because entries (and echo pairs) are disjoint, but a map
    // keeps the result well-formed even if that ever stopped holding.
    let mut rules: BTreeMap<(u32, u32, u8, u16, u8), u32> = BTreeMap::new();
    let mut push = |s: usize, d: usize, proto: u8, port: u16, len: u8, ctr: u32| {
        rules
            .entry((class_id(slot, s), class_id(slot, d), proto, port, len))
            .or_insert(ctr);
        rules.len()
    };

    for (i, e) in entries.iter().enumerate() {
        let ports = port_prefixes(e.first_port, e.last_port);
        for s in sub_prefixes(&src, &e.src) {
            for d in sub_prefixes(&dst, &e.dst) {
                for &(port, len) in &ports {
                    if push(s, d, e.proto, port, len, counter(i)) > MAX_RULE_KEYS {
                        return Err(too_large(MAX_RULE_KEYS + 1));
                    }
                }
            }
        }
    }
    for (j, (es, ed)) in echo.iter().enumerate() {
        let (proto, kind) = match es {
            IpNet::V4(_) => (ICMP, ICMP_ECHO_REQUEST),
            IpNet::V6(_) => (ICMPV6, ICMPV6_ECHO_REQUEST),
        };
        for s in sub_prefixes(&src, es) {
            for d in sub_prefixes(&dst, ed) {
                if push(s, d, proto, kind, 16, counter(entries.len() + j)) > MAX_RULE_KEYS {
                    return Err(too_large(MAX_RULE_KEYS + 1));
                }
            }
        }
    }

    let classes = |nets: &[IpNet]| {
        nets.iter()
            .enumerate()
            .map(|(i, net)| ClassPrefix {
                net: *net,
                class: class_id(slot, i),
            })
            .collect()
    };
    Ok(Tables {
        slot,
        src: classes(&src),
        dst: classes(&dst),
        rules: rules
            .into_iter()
            .map(
                |((src_class, dst_class, proto, port, port_len), counter)| Rule {
                    src_class,
                    dst_class,
                    proto,
                    port,
                    port_len,
                    counter,
                },
            )
            .collect(),
    })
}

/// Sorted, deduplicated. Sorting by (address, length) puts every prefix contained in P in one
/// run starting at P itself.
fn distinct(nets: impl Iterator<Item = IpNet>) -> Vec<IpNet> {
    let mut v: Vec<IpNet> = nets.map(|n| n.trunc()).collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// Indices into the sorted `nets` of the prefixes that `outer` contains (itself included).
fn sub_prefixes<'a>(nets: &'a [IpNet], outer: &'a IpNet) -> impl Iterator<Item = usize> + 'a {
    let start = nets.partition_point(|n| n < outer);
    nets.get(start..)
        .unwrap_or_default()
        .iter()
        .take_while(move |n| outer.contains(*n))
        .enumerate()
        .map(move |(k, _)| start + k)
}

/// The fewest (value, prefix length) port prefixes covering `first..=last` exactly (at most 30).
pub fn port_prefixes(first: u16, last: u16) -> Vec<(u16, u8)> {
    let mut out = Vec::new();
    if first > last {
        return out;
    }
    let (mut lo, hi) = (u32::from(first), u32::from(last));
    // Each step covers at least one port, and at most 2 * 16 steps are needed.
    while lo <= hi {
        let align = if lo == 0 {
            16
        } else {
            lo.trailing_zeros().min(16)
        };
        let fit = 31 - (hi - lo + 1).leading_zeros();
        let k = align.min(fit);
        out.push((lo as u16, (16 - k) as u8));
        lo += 1 << k;
    }
    out
}

#[cfg(test)]
#[path = "tables_tests.rs"]
mod tests;
