//! Policies of N rules for the access-control benchmark, and the same rules as a linear
//! nftables chain (one rule per policy line), the baseline every rule-count claim is against.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use meshgate_tailcfg::filter::{FilterRule, NetPortRange, PortRange};

/// The one flow the benchmark sends: allowed by exactly one rule of a policy, the last one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TestFlow {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    pub port: u16,
}

const FILLER_SRC_BASE: u32 = u32::from_be_bytes([100, 64, 0, 0]);
const FILLER_DST_BASE: u32 = u32::from_be_bytes([172, 16, 0, 0]);
/// Most rules there can be: the filler addresses stay inside 100.64.0.0/10 and 172.16.0.0/12.
pub const MAX_RULES: usize = 1 << 20;

/// `n` rules (1..=[`MAX_RULES`]) of protocol `flow.proto`: `n - 1` fillers, each with its own
/// source (100.64.0.0/10), destination (172.16.0.0/12) and port range, none matching `flow`,
/// then one rule allowing `flow` (its port and the next 9). The matching rule is last: the
/// worst case for a chain evaluated in order.
pub fn rules(n: usize, flow: TestFlow) -> Vec<FilterRule> {
    let n = n.clamp(1, MAX_RULES);
    let mut out: Vec<FilterRule> = (0..n - 1)
        .map(|i| {
            let i = i as u32;
            let first = 1024 + (i * 7919) % 60_000;
            let last = first + i % 16;
            rule(
                Ipv4Addr::from(FILLER_SRC_BASE + i),
                Ipv4Addr::from(FILLER_DST_BASE + i),
                flow.proto,
                first as u16,
                last as u16,
            )
        })
        .collect();
    out.push(rule(
        flow.src,
        flow.dst,
        flow.proto,
        flow.port,
        flow.port.saturating_add(9),
    ));
    out
}

fn rule(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, first: u16, last: u16) -> FilterRule {
    FilterRule {
        src_ips: vec![src.to_string()],
        dst_ports: vec![NetPortRange {
            ip: dst.to_string(),
            ports: PortRange { first, last },
        }],
        ip_proto: vec![i32::from(proto)],
        cap_grant: Vec::new(),
    }
}

/// Name of the table [`nft_linear`] creates.
pub const LINEAR_TABLE: &str = "bench_linear";

/// `table inet bench_linear` (nft text syntax, one transaction): a forward chain that accepts
/// what did not come in on `iface`, then one `ip saddr S ip daddr D <proto> dport A-B accept`
/// per source x destination of every rule, in order, then `drop`. Only rules shaped like
/// [`rules`]' (TCP or UDP, plain addresses or CIDRs) are expressible; others are an error.
pub fn nft_linear(rules: &[FilterRule], iface: &str) -> Result<String, String> {
    if iface.is_empty()
        || !iface
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    {
        return Err(format!("bad interface name {iface:?}"));
    }
    let mut s = format!(
        "table inet {LINEAR_TABLE} {{\n chain forward {{\n  type filter hook forward priority 0; policy accept;\n  iifname != \"{iface}\" accept\n"
    );
    for (i, r) in rules.iter().enumerate() {
        let proto = match r.ip_proto.as_slice() {
            [6] => "tcp",
            [17] => "udp",
            other => return Err(format!("rule {i}: protocols {other:?} not supported")),
        };
        for src in &r.src_ips {
            let src = plain_net(src).ok_or_else(|| format!("rule {i}: source {src:?}"))?;
            for d in &r.dst_ports {
                let dst = plain_net(&d.ip).ok_or_else(|| format!("rule {i}: dst {:?}", d.ip))?;
                let ports = if d.ports.first == d.ports.last {
                    d.ports.first.to_string()
                } else {
                    format!("{}-{}", d.ports.first, d.ports.last)
                };
                let _ = writeln!(
                    s,
                    "  ip saddr {src} ip daddr {dst} {proto} dport {ports} accept"
                );
            }
        }
    }
    s.push_str("  drop\n }\n}\n");
    Ok(s)
}

/// An IPv4 address or CIDR, re-rendered (so nothing else reaches the nft text).
fn plain_net(s: &str) -> Option<String> {
    if let Ok(a) = s.parse::<Ipv4Addr>() {
        return Some(a.to_string());
    }
    s.parse::<ipnet::Ipv4Net>().ok().map(|n| n.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_acl::Policy;

    const FLOW: TestFlow = TestFlow {
        src: Ipv4Addr::new(10, 71, 1, 2),
        dst: Ipv4Addr::new(10, 71, 2, 2),
        proto: 17,
        port: 5000,
    };

    #[test]
    fn only_the_last_rule_allows_the_flow() {
        for n in [1, 10, 1000] {
            let r = rules(n, FLOW);
            assert_eq!(r.len(), n);
            let allows = |rs: &[FilterRule]| {
                Policy::from_filter_rules(rs).unwrap().allows(
                    FLOW.src.into(),
                    FLOW.dst.into(),
                    FLOW.proto,
                    FLOW.port,
                )
            };
            assert!(allows(&r), "n = {n}");
            assert!(!allows(&r[..n - 1]), "n = {n}: a filler allows the flow");
            let policy = Policy::from_filter_rules(&r).unwrap();
            // Distinct sources and destinations: nothing to split, one entry per rule.
            assert_eq!(policy.entries().len(), n);
            assert!(!policy.allows(FLOW.src.into(), FLOW.dst.into(), 6, FLOW.port));
            assert!(!policy.allows(FLOW.src.into(), FLOW.dst.into(), 17, FLOW.port + 10));
        }
    }

    #[test]
    fn linear_chain_has_one_rule_per_line_with_the_match_last() {
        let text = nft_linear(&rules(100, FLOW), "eth0").unwrap();
        let accepts: Vec<&str> = text.lines().filter(|l| l.contains("dport")).collect();
        assert_eq!(accepts.len(), 100);
        assert_eq!(
            accepts.last().unwrap().trim(),
            "ip saddr 10.71.1.2 ip daddr 10.71.2.2 udp dport 5000-5009 accept"
        );
        assert!(text.contains("iifname != \"eth0\" accept"));
        assert!(text.trim_end().ends_with("drop\n }\n}"));
        assert!(nft_linear(&rules(1, FLOW), "eth0\"; flush ruleset").is_err());
    }
}
