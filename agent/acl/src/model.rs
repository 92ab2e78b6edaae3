//! The packet filter as normalized allow entries, built from control's `FilterRule`s.
//! Semantics follow Tailscale's inbound filter: TCP/UDP/SCTP match the destination port; ICMP
//! echo-request is allowed for any (source, destination net) pair of any rule, whatever its
//! protocols and ports; other protocols only through a rule giving them ports 0-65535.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use meshgate_tailcfg::filter::{DEFAULT_PROTOCOLS, FilterRule};

use crate::disjoint::{coalesce, refine};
use crate::error::Error;

/// The most entries (port entries plus echo pairs) a policy may compile to.
pub const MAX_ENTRIES: usize = 100_000;

/// The most boxes held while splitting, before splits are merged back: bounds time and memory
/// (a few tens of MB) for policies that only become small after merging.
const MAX_SPLIT: usize = 8 * MAX_ENTRIES;

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const PORT_PROTOCOLS: [u8; 3] = [6, 17, 132];

/// One allowed (source, destination, protocol, destination ports) box. Entries of a policy are
/// pairwise disjoint; source and destination are of the same family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Entry {
    pub src: IpNet,
    pub dst: IpNet,
    pub proto: u8,
    pub first_port: u16,
    pub last_port: u16,
}

/// The allow list: disjoint, sorted entries plus the (source, destination) pairs allowed to
/// send ICMP/ICMPv6 echo requests. Everything else arriving from the mesh is denied.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    entries: Vec<Entry>,
    echo: Vec<(IpNet, IpNet)>,
}

/// One rule after parsing, before the rules are merged.
struct Parsed {
    srcs: Vec<IpNet>,
    dsts: Vec<(IpNet, u16, u16)>,
    protos: Vec<u8>,
}

impl Policy {
    /// Normalizes control's rules. Rules granting only capabilities, and `cap:` sources, give no
    /// packet permission and are skipped. Errors name the offending rule's index.
    pub fn from_filter_rules(rules: &[FilterRule]) -> Result<Self, Error> {
        let parsed = rules
            .iter()
            .enumerate()
            .map(|(i, r)| parse_rule(i, r))
            .collect::<Result<Vec<_>, _>>()?;

        let mut src_nets = Vec::new();
        let mut src_rule = Vec::new();
        for (i, rule) in parsed.iter().enumerate() {
            for s in &rule.srcs {
                src_nets.push(*s);
                src_rule.push(i);
            }
        }
        let too_many = Error::TooManyEntries { max: MAX_ENTRIES };
        let src_atoms = refine(&src_nets, MAX_SPLIT).ok_or(too_many)?;

        let mut entries = Vec::new();
        let mut echo = Vec::new();
        for (src, owners) in src_atoms {
            let mut rule_ids: Vec<usize> = owners
                .iter()
                .filter_map(|o| src_rule.get(*o))
                .copied()
                .collect();
            rule_ids.dedup();
            // (dst, proto, first, last) granted to this source atom by its rules.
            let mut items = Vec::new();
            for rule in rule_ids.iter().filter_map(|r| parsed.get(*r)) {
                for &(dst, first, last) in rule.dsts.iter().filter(|d| same_family(&src, &d.0)) {
                    for &proto in &rule.protos {
                        items.push((dst, proto, first, last));
                    }
                }
            }
            let dst_nets: Vec<IpNet> = items.iter().map(|i| i.0).collect();
            let budget = MAX_SPLIT.saturating_sub(entries.len() + echo.len());
            let dst_atoms =
                refine(&dst_nets, budget).ok_or(Error::TooManyEntries { max: MAX_ENTRIES })?;
            for (dst, item_ids) in dst_atoms {
                echo.push((src, dst));
                let mut by_proto: BTreeMap<u8, Vec<(u16, u16)>> = BTreeMap::new();
                for &(_, proto, first, last) in item_ids.iter().filter_map(|i| items.get(*i)) {
                    if proto == ICMP || proto == ICMPV6 {
                        continue;
                    }
                    if !PORT_PROTOCOLS.contains(&proto) && (first, last) != (0, u16::MAX) {
                        continue;
                    }
                    by_proto.entry(proto).or_default().push((first, last));
                }
                for (proto, ranges) in by_proto {
                    for (first_port, last_port) in merge_ranges(ranges) {
                        entries.push(Entry {
                            src,
                            dst,
                            proto,
                            first_port,
                            last_port,
                        });
                    }
                }
                if entries.len() + echo.len() > MAX_SPLIT {
                    return Err(Error::TooManyEntries { max: MAX_ENTRIES });
                }
            }
        }
        let entries = coalesce_entries(entries);
        let echo = coalesce_pairs(echo);
        if entries.len() + echo.len() > MAX_ENTRIES {
            return Err(Error::TooManyEntries { max: MAX_ENTRIES });
        }
        Ok(Policy { entries, echo })
    }

    /// Disjoint port entries, sorted.
    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Disjoint (source, destination) pairs allowed to ping, sorted.
    pub fn echo(&self) -> &[(IpNet, IpNet)] {
        &self.echo
    }
}

/// Re-merges what refining split without need: sources, then destinations, then sources again.
fn coalesce_entries(entries: Vec<Entry>) -> Vec<Entry> {
    let by_src = entries
        .into_iter()
        .map(|e| (e.src, (e.dst, e.proto, e.first_port, e.last_port)));
    let by_dst = coalesce(by_src.collect())
        .into_iter()
        .map(|(src, (dst, proto, first, last))| (dst, (src, proto, first, last)));
    let by_src = coalesce(by_dst.collect())
        .into_iter()
        .map(|(dst, (src, proto, first, last))| (src, (dst, proto, first, last)));
    let mut out: Vec<Entry> = coalesce(by_src.collect())
        .into_iter()
        .map(|(src, (dst, proto, first_port, last_port))| Entry {
            src,
            dst,
            proto,
            first_port,
            last_port,
        })
        .collect();
    out.sort();
    out
}

fn coalesce_pairs(pairs: Vec<(IpNet, IpNet)>) -> Vec<(IpNet, IpNet)> {
    let by_dst = coalesce(pairs).into_iter().map(|(src, dst)| (dst, src));
    let by_src = coalesce(by_dst.collect())
        .into_iter()
        .map(|(dst, src)| (src, dst));
    let mut out: Vec<(IpNet, IpNet)> = coalesce(by_src.collect());
    out.sort();
    out
}

fn same_family(a: &IpNet, b: &IpNet) -> bool {
    matches!(
        (a, b),
        (IpNet::V4(_), IpNet::V4(_)) | (IpNet::V6(_), IpNet::V6(_))
    )
}

fn parse_rule(index: usize, rule: &FilterRule) -> Result<Parsed, Error> {
    let mut srcs = Vec::new();
    for text in &rule.src_ips {
        if text.starts_with("cap:") {
            continue;
        }
        srcs.extend(parse_ip_set(text).map_err(|why| Error::BadAddress {
            rule: index,
            text: text.clone(),
            why,
        })?);
    }
    let mut dsts = Vec::new();
    for d in &rule.dst_ports {
        let (first, last) = (d.ports.first, d.ports.last);
        if first > last {
            return Err(Error::EmptyPortRange {
                rule: index,
                ip: d.ip.clone(),
                first,
                last,
            });
        }
        let nets = parse_ip_set(&d.ip).map_err(|why| Error::BadAddress {
            rule: index,
            text: d.ip.clone(),
            why,
        })?;
        dsts.extend(nets.into_iter().map(|n| (n, first, last)));
    }
    let mut protos: Vec<u8> = if rule.ip_proto.is_empty() {
        DEFAULT_PROTOCOLS.to_vec()
    } else {
        rule.ip_proto
            .iter()
            .filter_map(|p| u8::try_from(*p).ok())
            .collect()
    };
    protos.sort_unstable();
    protos.dedup();
    Ok(Parsed { srcs, dsts, protos })
}

/// Parses one address form of a rule: `*`, an IP, a CIDR (host bits zero) or an `a-b` range.
pub(crate) fn parse_ip_set(text: &str) -> Result<Vec<IpNet>, &'static str> {
    if text == "*" {
        return Ok(vec![
            IpNet::V4(Ipv4Net::default()),
            IpNet::V6(Ipv6Net::default()),
        ]);
    }
    if text.contains('/') {
        let net: IpNet = text.parse().map_err(|_| "not a CIDR prefix")?;
        if net.trunc() != net {
            return Err("CIDR prefix has host bits set");
        }
        return Ok(vec![net]);
    }
    if let Some((a, b)) = text.split_once('-') {
        let a: IpAddr = a.parse().map_err(|_| "range start is not an IP")?;
        let b: IpAddr = b.parse().map_err(|_| "range end is not an IP")?;
        return match (a, b) {
            (IpAddr::V4(a), IpAddr::V4(b)) if a <= b => Ok(range_to_prefixes(
                u32::from(a).into(),
                u32::from(b).into(),
                32,
            )),
            (IpAddr::V6(a), IpAddr::V6(b)) if a <= b => {
                Ok(range_to_prefixes(a.into(), b.into(), 128))
            }
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                Err("range start is after its end")
            }
            _ => Err("range mixes IPv4 and IPv6"),
        };
    }
    let ip: IpAddr = text.parse().map_err(|_| "not an IP, CIDR, range or *")?;
    Ok(vec![IpNet::from(ip)])
}

/// The fewest prefixes covering `lo..=hi` exactly, for `bits`-wide addresses (32 or 128).
fn range_to_prefixes(mut lo: u128, hi: u128, bits: u32) -> Vec<IpNet> {
    let mut out = Vec::new();
    // Each step covers at least one address, so this terminates within 2 * bits steps.
    loop {
        let span = hi - lo;
        let fit = if span == u128::MAX {
            128
        } else {
            127 - (span + 1).leading_zeros()
        };
        let align = lo.trailing_zeros().min(bits);
        let k = fit.min(align);
        let len = (bits - k) as u8;
        let net = if bits == 32 {
            Ipv4Net::new(std::net::Ipv4Addr::from(lo as u32), len).map(IpNet::V4)
        } else {
            Ipv6Net::new(std::net::Ipv6Addr::from(lo), len).map(IpNet::V6)
        };
        if let Ok(net) = net {
            out.push(net);
        }
        let size = 1u128.checked_shl(k).unwrap_or(0);
        match lo.checked_add(size) {
            Some(next) if size != 0 && next <= hi => lo = next,
            _ => break,
        }
    }
    out
}

/// Sorts and merges overlapping or adjacent ranges.
fn merge_ranges(mut ranges: Vec<(u16, u16)>) -> Vec<(u16, u16)> {
    ranges.sort_unstable();
    let mut out: Vec<(u16, u16)> = Vec::with_capacity(ranges.len());
    for (first, last) in ranges {
        match out.last_mut() {
            Some(prev) if u32::from(first) <= u32::from(prev.1) + 1 => prev.1 = prev.1.max(last),
            _ => out.push((first, last)),
        }
    }
    out
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
