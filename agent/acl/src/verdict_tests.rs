//! The normalized policy must give the verdict that control's rules give when read naively,
//! rule by rule, as Tailscale's filter reads them.

use std::net::IpAddr;

use meshgate_tailcfg::filter::{DEFAULT_PROTOCOLS, FilterRule, NetPortRange, PortRange};

use crate::model::{Policy, parse_ip_set};

/// xorshift64: deterministic, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const NETS: &[&str] = &[
    "*",
    "10.0.0.0/30",
    "10.0.0.1",
    "10.0.0.4/31",
    "10.0.0.2-10.0.0.6",
    "10.0.0.0/29",
    "fd00::/126",
    "fd00::1",
    "fd00::2-fd00::5",
];
const ADDRS: &[&str] = &[
    "10.0.0.0", "10.0.0.1", "10.0.0.2", "10.0.0.5", "10.0.0.7", "10.0.0.9", "fd00::", "fd00::1",
    "fd00::3", "fd00::9",
];
const PROTOS: &[u8] = &[1, 6, 17, 47, 58, 132];

fn random_rule(rng: &mut Rng) -> FilterRule {
    let srcs = (0..1 + rng.below(3))
        .map(|_| rng.pick(NETS).to_string())
        .collect();
    let dsts = (0..1 + rng.below(3))
        .map(|_| {
            let (first, last) = if rng.below(4) == 0 {
                (0, u16::MAX)
            } else {
                let a = rng.below(12) as u16;
                (a, a + rng.below(4) as u16)
            };
            NetPortRange {
                ip: rng.pick(NETS).to_string(),
                ports: PortRange { first, last },
            }
        })
        .collect();
    let protos = if rng.below(3) == 0 {
        vec![]
    } else {
        (0..1 + rng.below(3))
            .map(|_| i32::from(*rng.pick(PROTOS)))
            .collect()
    };
    FilterRule {
        src_ips: srcs,
        dst_ports: dsts,
        ip_proto: protos,
        cap_grant: vec![],
    }
}

fn in_set(text: &str, ip: IpAddr) -> bool {
    parse_ip_set(text)
        .unwrap_or_default()
        .iter()
        .any(|n| n.contains(&ip))
}

/// Tailscale's reading, one rule at a time.
fn naive(rules: &[FilterRule], src: IpAddr, dst: IpAddr, proto: u8, port: u16) -> bool {
    let echo = matches!(
        (proto, port, src),
        (1, 8, IpAddr::V4(_)) | (58, 128, IpAddr::V6(_))
    );
    rules.iter().any(|r| {
        if !r.src_ips.iter().any(|s| in_set(s, src)) {
            return false;
        }
        let protos: Vec<u8> = if r.ip_proto.is_empty() {
            DEFAULT_PROTOCOLS.to_vec()
        } else {
            r.ip_proto
                .iter()
                .filter_map(|p| u8::try_from(*p).ok())
                .collect()
        };
        r.dst_ports.iter().any(|d| {
            if !in_set(&d.ip, dst) {
                return false;
            }
            if echo {
                return true;
            }
            if !protos.contains(&proto) || matches!(proto, 1 | 58) {
                return false;
            }
            if matches!(proto, 6 | 17 | 132) {
                (d.ports.first..=d.ports.last).contains(&port)
            } else {
                (d.ports.first, d.ports.last) == (0, u16::MAX)
            }
        })
    })
}

#[test]
fn normalized_policy_agrees_with_the_rules_read_one_by_one() {
    let mut rng = Rng(0x5eed_ac10_0001);
    let mut allowed = 0;
    let mut denied = 0;
    for _ in 0..150 {
        let rules: Vec<FilterRule> = (0..1 + rng.below(5))
            .map(|_| random_rule(&mut rng))
            .collect();
        let policy = Policy::from_filter_rules(&rules).expect("valid random rules");
        for _ in 0..200 {
            let src: IpAddr = rng.pick(ADDRS).parse().unwrap();
            let dst: IpAddr = rng.pick(ADDRS).parse().unwrap();
            if src.is_ipv4() != dst.is_ipv4() {
                continue;
            }
            let proto = *rng.pick(PROTOS);
            let port = match proto {
                1 => *rng.pick(&[0, 8, 3]),
                58 => *rng.pick(&[128, 129, 1]),
                6 | 17 | 132 => rng.below(16) as u16,
                _ => 0,
            };
            let want = naive(&rules, src, dst, proto, port);
            assert_eq!(
                policy.allows(src, dst, proto, port),
                want,
                "{src} -> {dst} proto {proto} port {port} under {rules:?}"
            );
            if want {
                allowed += 1;
            } else {
                denied += 1;
            }
        }
    }
    // The sample must exercise both verdicts, or the comparison proves little.
    assert!(
        allowed > 1_000 && denied > 1_000,
        "{allowed} allowed, {denied} denied"
    );
}
