use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use meshgate_acl::Policy;
use meshgate_tailcfg::filter::{FilterRule, NetPortRange, PortRange};

use super::*;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn rule(srcs: &[&str], dsts: &[(&str, u16, u16)], protos: &[i32]) -> FilterRule {
    FilterRule {
        src_ips: srcs.iter().map(|s| s.to_string()).collect(),
        dst_ports: dsts
            .iter()
            .map(|(ip, first, last)| NetPortRange {
                ip: ip.to_string(),
                ports: PortRange {
                    first: *first,
                    last: *last,
                },
            })
            .collect(),
        ip_proto: protos.to_vec(),
        ..Default::default()
    }
}

// Small address universe so random packets hit nested prefixes often.
const V4_NETS: [&str; 8] = [
    "10.0.0.0/8",
    "10.1.0.0/16",
    "10.1.2.0/24",
    "10.1.2.3/32",
    "10.1.2.4/30",
    "192.168.0.0/24",
    "0.0.0.0/0",
    "10.1.2.128/25",
];
const V6_NETS: [&str; 6] = [
    "fd00::/8",
    "fd00:1::/32",
    "fd00:1::/64",
    "fd00:1::5/128",
    "::/0",
    "fd00:1::80/121",
];
const PROTOS: [i32; 7] = [6, 17, 1, 58, 132, 47, 6];

fn random_rule(rng: &mut Rng) -> FilterRule {
    let nets: Vec<&str> = V4_NETS.iter().chain(V6_NETS.iter()).copied().collect();
    let mut srcs: Vec<&str> = Vec::new();
    for _ in 0..=rng.below(2) {
        srcs.push(if rng.below(6) == 0 {
            "*"
        } else {
            *rng.pick(&nets)
        });
    }
    let mut dsts = Vec::new();
    for _ in 0..=rng.below(2) {
        let ip = if rng.below(8) == 0 {
            "*"
        } else {
            *rng.pick(&nets)
        };
        let (first, last) = match rng.below(4) {
            0 => (0, u16::MAX),
            1 => {
                let p = rng.below(65536) as u16;
                (p, p)
            }
            _ => {
                let a = rng.below(2000) as u16;
                (a, a + rng.below(300) as u16)
            }
        };
        dsts.push((ip, first, last));
    }
    let protos: Vec<i32> = if rng.below(3) == 0 {
        Vec::new()
    } else {
        (0..=rng.below(2)).map(|_| *rng.pick(&PROTOS)).collect()
    };
    rule(&srcs, &dsts, &protos)
}

fn random_addr(rng: &mut Rng, v6: bool) -> IpAddr {
    // Addresses near the policy prefixes: a random net, then random low bits.
    if v6 {
        let base: u128 = match rng.below(4) {
            0 => 0xfd00_0001_0000_0000_0000_0000_0000_0000,
            1 => 0xfd00_0000_0000_0000_0000_0000_0000_0000,
            2 => 0xfd00_0001_0000_0000_0000_0000_0000_0005,
            _ => u128::from(rng.next()) << 64,
        };
        IpAddr::V6(Ipv6Addr::from(
            base ^ u128::from(rng.below(256) * (rng.below(2))),
        ))
    } else {
        let base: u32 = match rng.below(4) {
            0 => 0x0a01_0200,
            1 => 0x0a00_0000,
            2 => 0xc0a8_0000,
            _ => rng.next() as u32,
        };
        let low = if rng.below(2) == 0 {
            rng.below(256)
        } else {
            rng.below(1 << 20)
        };
        IpAddr::V4(Ipv4Addr::from(base ^ low as u32))
    }
}

fn random_port(rng: &mut Rng, proto: u8) -> u16 {
    match proto {
        1 => *rng.pick(&[0, 8, 3, 128, 13]),
        58 => *rng.pick(&[128, 129, 8, 1, 135]),
        6 | 17 | 132 => match rng.below(3) {
            0 => rng.below(65536) as u16,
            _ => rng.below(2400) as u16,
        },
        _ => 0,
    }
}

#[test]
fn simulated_lookup_equals_policy_verdict() {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut allowed = 0usize;
    let mut checked = 0usize;
    for round in 0..60 {
        let rules: Vec<FilterRule> = (0..=rng.below(6)).map(|_| random_rule(&mut rng)).collect();
        let policy = Policy::from_filter_rules(&rules).expect("random policy is valid");
        let slot = round % 2;
        let tables = compile(&policy, slot).expect("small policy fits");
        for r in &tables.rules {
            assert_eq!(class_slot(r.src_class), slot);
            assert_eq!(class_slot(r.dst_class), slot);
            assert_eq!(r.counter / COUNTERS_PER_SLOT, slot);
        }
        for _ in 0..500 {
            let v6 = rng.below(2) == 0;
            let proto = *rng.pick(&PROTOS) as u8;
            let (src, dst) = (random_addr(&mut rng, v6), random_addr(&mut rng, v6));
            let port = random_port(&mut rng, proto);
            let want = policy.allows(src, dst, proto, port);
            let got = tables.classify(src, dst, proto, port).is_some();
            assert_eq!(
                got, want,
                "{src} -> {dst} proto {proto} port {port}\nrules {rules:?}\npolicy {policy:?}"
            );
            allowed += usize::from(want);
            checked += 1;
        }
    }
    // The sample must exercise both verdicts, or the comparison proves little.
    assert!(
        allowed > checked / 20,
        "only {allowed} of {checked} allowed"
    );
    assert!(
        allowed < checked * 19 / 20,
        "{allowed} of {checked} allowed"
    );
}

#[test]
fn nested_sources_inherit_the_wider_grants() {
    let policy = Policy::from_filter_rules(&[
        rule(&["*"], &[("10.0.0.1/32", 80, 80)], &[6]),
        rule(&["100.64.0.5"], &[("10.0.0.1/32", 22, 22)], &[6]),
    ])
    .unwrap();
    let t = compile(&policy, 1).unwrap();
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    let dst = ip("10.0.0.1");
    assert!(t.classify(ip("100.64.0.5"), dst, 6, 80).is_some());
    assert!(t.classify(ip("100.64.0.5"), dst, 6, 22).is_some());
    assert!(t.classify(ip("100.64.0.6"), dst, 6, 80).is_some());
    assert!(t.classify(ip("100.64.0.6"), dst, 6, 22).is_none());
    assert!(t.classify(ip("100.64.0.6"), dst, 17, 80).is_none());
    assert!(
        t.src
            .iter()
            .all(|c| c.class >> 31 == 1 && c.class & 0x7fff_ffff != 0)
    );
}

#[test]
fn port_ranges_become_exact_prefix_covers() {
    let cases = [
        (0u16, u16::MAX),
        (1, u16::MAX - 1),
        (80, 80),
        (1024, 2047),
        (1023, 2048),
        (0, 0),
        (u16::MAX, u16::MAX),
        (5000, 5999),
    ];
    for (first, last) in cases {
        let cover = port_prefixes(first, last);
        assert!(
            cover.len() <= 30,
            "{first}-{last}: {} prefixes",
            cover.len()
        );
        for port in 0..=u16::MAX {
            let hits = cover
                .iter()
                .filter(|(v, len)| port_matches(*v, *len, port))
                .count();
            let inside = (first..=last).contains(&port);
            assert_eq!(hits, usize::from(inside), "{first}-{last} port {port}");
        }
    }
    assert_eq!(port_prefixes(0, u16::MAX), vec![(0, 0)]);
    assert_eq!(port_prefixes(1, u16::MAX - 1).len(), 30);
    assert!(port_prefixes(2, 1).is_empty());
}

#[test]
fn empty_policy_compiles_to_empty_tables() {
    let t = compile(&Policy::default(), 0).unwrap();
    assert!(t.src.is_empty() && t.dst.is_empty() && t.rules.is_empty());
    let any = "10.0.0.1".parse().unwrap();
    assert_eq!(t.classify(any, any, 6, 80), None);
}

#[test]
fn too_many_rule_keys_is_refused_with_numbers() {
    // 1 + 600 sources under `*`, each inheriting `*`'s 2 * 30 rule keys per destination: far
    // beyond MAX_RULE_KEYS once multiplied by the destinations.
    let srcs: Vec<String> = (0..600)
        .map(|i| format!("100.64.{}.{}", i / 250, i % 250))
        .collect();
    let dsts: Vec<String> = (0..20).map(|i| format!("10.0.{i}.0/24")).collect();
    let mut rules = vec![rule(
        &["*"],
        &dsts
            .iter()
            .map(|d| (d.as_str(), 1, u16::MAX - 1))
            .collect::<Vec<_>>(),
        &[6, 17],
    )];
    for (i, s) in srcs.iter().enumerate() {
        rules.push(rule(&[s], &[(dsts[i % 20].as_str(), 7, 7)], &[132]));
    }
    let policy = Policy::from_filter_rules(&rules).unwrap();
    match compile(&policy, 0) {
        Err(Error::TooLarge {
            rule_keys,
            max_rule_keys,
            ..
        }) => {
            assert!(rule_keys > max_rule_keys);
            assert_eq!(max_rule_keys, MAX_RULE_KEYS);
        }
        other => panic!("expected TooLarge, got {:?}", other.map(|t| t.rules.len())),
    }
}

#[test]
fn counters_are_capped_and_offset_by_slot() {
    let policy = Policy::from_filter_rules(&[rule(&["*"], &[("*", 80, 80)], &[6])]).unwrap();
    let t = compile(&policy, 1).unwrap();
    assert!(!t.rules.is_empty());
    assert!(
        t.rules
            .iter()
            .all(|r| (COUNTERS_PER_SLOT..2 * COUNTERS_PER_SLOT).contains(&r.counter))
    );
}
