//! Runs the real program with BPF_PROG_TEST_RUN on synthetic Ethernet frames, with maps filled
//! by the same writer `Enforcer::set_policy` uses. Needs root (BPF, bpffs); nothing is attached.

mod common;

use std::net::IpAddr;

use common::*;
use meshgate_ebpf::maps::{ORIGIN_LOCAL, ORIGIN_PEER};
use meshgate_ebpf::{Loaded, PROG_EGRESS_ETH, PROG_INGRESS_ETH, PROG_INGRESS_L3, load};

fn loaded(name: &str) -> (PinDir, Loaded) {
    let pin = PinDir::new(name);
    let loaded = load(&pin.0).unwrap_or_else(|e| panic!("load (needs root): {e}"));
    (pin, loaded)
}

fn ingress(l: &mut Loaded, f: &[u8]) -> u32 {
    run(l, PROG_INGRESS_ETH, f)
}

fn egress(l: &mut Loaded, f: &[u8]) -> u32 {
    run(l, PROG_EGRESS_ETH, f)
}

fn base_policy() -> meshgate_acl::Policy {
    policy(&[
        rule(
            &["100.64.0.0/24", "fd7a:115c:a1e0::/64"],
            &[("10.1.0.0/16", 1000, 1999), ("fd00:1::/64", 443, 443)],
            &[6, 17],
        ),
        rule(&["100.64.0.7"], &[("10.1.2.3/32", 22, 22)], &[6]),
    ])
}

#[test]
fn allows_and_denies_by_policy() {
    let (_pin, mut l) = loaded("basic");
    let p = base_policy();
    l.maps.set_policy(&p).unwrap();
    let peer4 = ip("100.64.0.5");
    let peer6 = ip("fd7a:115c:a1e0::5");
    let cases: [(IpAddr, IpAddr, u8, u16); 14] = [
        (peer4, ip("10.1.9.9"), TCP, 1000),
        (peer4, ip("10.1.9.9"), TCP, 1999),
        (peer4, ip("10.1.9.9"), TCP, 999),
        (peer4, ip("10.1.9.9"), TCP, 2000),
        (peer4, ip("10.1.9.9"), UDP, 1500),
        (peer4, ip("10.2.0.1"), TCP, 1500),
        (ip("100.64.1.5"), ip("10.1.9.9"), TCP, 1500),
        (ip("100.64.0.7"), ip("10.1.2.3"), TCP, 22),
        (peer4, ip("10.1.2.3"), TCP, 22),
        (peer4, ip("10.1.2.3"), ICMP, 8),
        (peer4, ip("10.9.9.9"), ICMP, 8),
        (peer6, ip("fd00:1::1"), TCP, 443),
        (peer6, ip("fd00:1::1"), TCP, 444),
        (peer6, ip("fd00:1::1"), ICMPV6, 128),
    ];
    for (src, dst, proto, port) in cases {
        let want = p.allows(src, dst, proto, port);
        let got = ingress(&mut l, &frame(src, dst, proto, 40000, port));
        assert_eq!(
            got == TC_ACT_OK,
            want,
            "{src} -> {dst} proto {proto} port {port}: verdict {got}"
        );
    }
    // Both outcomes occur in the table above.
    let c = l.maps.counters().unwrap();
    assert!(c.stats.pass_rule >= 6, "{c:?}");
    assert!(c.stats.drop_no_rule >= 5, "{c:?}");
    assert!(!c.hits.is_empty(), "per-rule hits counted: {c:?}");
}

#[test]
fn icmp_replies_and_errors_pass_without_a_rule() {
    let (_pin, mut l) = loaded("icmp");
    l.maps.set_policy(&base_policy()).unwrap();
    let (a, b) = (ip("192.0.2.1"), ip("10.1.0.1"));
    for t in [0u16, 3, 11, 12] {
        assert_eq!(
            ingress(&mut l, &frame(a, b, ICMP, 0, t)),
            TC_ACT_OK,
            "icmp {t}"
        );
    }
    for t in [8u16, 13, 5] {
        assert_eq!(
            ingress(&mut l, &frame(a, b, ICMP, 0, t)),
            TC_ACT_SHOT,
            "icmp {t}"
        );
    }
    let (a, b) = (ip("2001:db8::1"), ip("fd00:1::1"));
    for t in [129u16, 1, 2, 3, 4] {
        assert_eq!(
            ingress(&mut l, &frame(a, b, ICMPV6, 0, t)),
            TC_ACT_OK,
            "icmpv6 {t}"
        );
    }
    for t in [128u16, 135, 0] {
        assert_eq!(
            ingress(&mut l, &frame(a, b, ICMPV6, 0, t)),
            TC_ACT_SHOT,
            "icmpv6 {t}"
        );
    }
    assert_eq!(l.maps.counters().unwrap().stats.pass_icmp_reply, 9);
    // Non-IP frames are not ours to judge on Ethernet.
    assert_eq!(ingress(&mut l, &non_ip_frame()), TC_ACT_OK);
    assert_eq!(l.maps.counters().unwrap().stats.pass_not_ip, 1);
}

/// An IPv6 packet with the given extension headers (each: (type, bytes incl. its own header)).
fn v6_with_exts(
    src: IpAddr,
    dst: IpAddr,
    exts: &[(u8, Vec<u8>)],
    proto: u8,
    dport: u16,
) -> Vec<u8> {
    let payload = l4(proto, 40000, dport);
    let first = exts.first().map_or(proto, |e| e.0);
    let mut body = Vec::new();
    for (i, (_, bytes)) in exts.iter().enumerate() {
        let mut b = bytes.clone();
        b[0] = exts.get(i + 1).map_or(proto, |e| e.0);
        body.extend_from_slice(&b);
    }
    body.extend_from_slice(&payload);
    let mut p = ipv6_header(src, dst, first, body.len());
    p.extend_from_slice(&body);
    frame_of(&p)
}

fn opts_ext() -> Vec<u8> {
    // 16 bytes: hdr ext len 1.
    let mut e = vec![0u8; 16];
    e[1] = 1;
    e
}

fn frag_ext(offset: u16, more: bool) -> Vec<u8> {
    let mut e = vec![0u8; 8];
    let field = (offset << 3) | u16::from(more);
    e[2..4].copy_from_slice(&field.to_be_bytes());
    e
}

#[test]
fn ipv6_extension_headers_and_fragments() {
    let (_pin, mut l) = loaded("v6ext");
    l.maps.set_policy(&base_policy()).unwrap();
    let (s, d) = (ip("fd7a:115c:a1e0::5"), ip("fd00:1::1"));
    let hop_dst = [(0u8, opts_ext()), (60u8, opts_ext())];
    assert_eq!(
        ingress(&mut l, &v6_with_exts(s, d, &hop_dst, TCP, 443)),
        TC_ACT_OK
    );
    assert_eq!(
        ingress(&mut l, &v6_with_exts(s, d, &hop_dst, TCP, 22)),
        TC_ACT_SHOT
    );
    // First fragment (offset 0): ports are read and checked.
    let first = [(0u8, opts_ext()), (44u8, frag_ext(0, true))];
    assert_eq!(
        ingress(&mut l, &v6_with_exts(s, d, &first, TCP, 443)),
        TC_ACT_OK
    );
    assert_eq!(
        ingress(&mut l, &v6_with_exts(s, d, &first, TCP, 22)),
        TC_ACT_SHOT
    );
    // Non-first fragment: passes (its first fragment was checked).
    let later = [(44u8, frag_ext(185, false))];
    assert_eq!(
        ingress(&mut l, &v6_with_exts(s, d, &later, TCP, 22)),
        TC_ACT_OK
    );
    assert_eq!(l.maps.counters().unwrap().stats.pass_fragment, 1);
    // Six extension headers are walked; a seventh is beyond what we judge.
    let six: Vec<(u8, Vec<u8>)> = (0..6).map(|_| (60u8, opts_ext())).collect();
    assert_eq!(
        ingress(&mut l, &v6_with_exts(s, d, &six, TCP, 443)),
        TC_ACT_OK
    );
    let seven: Vec<(u8, Vec<u8>)> = (0..7).map(|_| (60u8, opts_ext())).collect();
    assert_eq!(
        ingress(&mut l, &v6_with_exts(s, d, &seven, TCP, 443)),
        TC_ACT_SHOT
    );
}

#[test]
fn ipv4_fragments() {
    let (_pin, mut l) = loaded("v4frag");
    l.maps.set_policy(&base_policy()).unwrap();
    let (s, d) = (ip("100.64.0.5"), ip("10.1.0.1"));
    let frag = |flags_off: u16, dport: u16| {
        let payload = l4(TCP, 40000, dport);
        let mut p = ipv4_header(s, d, TCP, flags_off, payload.len());
        p.extend_from_slice(&payload);
        frame_of(&p)
    };
    // MF set, offset 0: the first fragment, checked.
    assert_eq!(ingress(&mut l, &frag(0x2000, 1000)), TC_ACT_OK);
    assert_eq!(ingress(&mut l, &frag(0x2000, 22)), TC_ACT_SHOT);
    // Offset != 0: passes.
    assert_eq!(ingress(&mut l, &frag(0x0010, 22)), TC_ACT_OK);
    assert_eq!(ingress(&mut l, &frag(0x2001, 22)), TC_ACT_OK);
}

#[test]
fn truncated_and_malformed_headers_never_pass_a_denied_packet() {
    let (_pin, mut l) = loaded("trunc");
    l.maps.set_policy(&base_policy()).unwrap();
    let cases = [
        (ip("100.64.0.5"), ip("10.1.0.1"), TCP, 22u16, 1000u16),
        (ip("100.64.0.5"), ip("10.1.0.1"), UDP, 22, 1000),
        (ip("fd7a:115c:a1e0::5"), ip("fd00:1::1"), TCP, 22, 443),
        (ip("100.64.0.5"), ip("10.1.2.3"), ICMP, 13, 8),
    ];
    for (s, d, proto, denied, allowed) in cases {
        let ip_len = if s.is_ipv4() { 20 } else { 40 };
        let needed = ip_len + if proto == ICMP { 2 } else { 4 };
        // The L3 program sees the packet at offset 0. The kernel takes bytes 12-13 (inside the
        // source address, 100.64 / fd7a here) for an ethertype that is not IP, so it runs the
        // program on every cut; it refuses 14 bytes or less.
        let deny = ip_packet(s, d, proto, 40000, denied);
        let allow = ip_packet(s, d, proto, 40000, allowed);
        for cut in 15..=deny.len() {
            assert_eq!(
                run(&mut l, PROG_INGRESS_L3, &deny[..cut]),
                TC_ACT_SHOT,
                "l3 denied {proto} cut {cut}"
            );
            let want = if cut >= needed {
                TC_ACT_OK
            } else {
                TC_ACT_SHOT
            };
            assert_eq!(
                run(&mut l, PROG_INGRESS_L3, &allow[..cut]),
                want,
                "l3 allowed {proto} cut {cut}"
            );
        }
        // The Ethernet program on every cut the kernel accepts (it may refuse a cut IP header).
        let (deny, allow) = (frame_of(&deny), frame_of(&allow));
        let mut ran = 0;
        for cut in 15..=deny.len() {
            if let Ok(v) = try_run(&mut l, PROG_INGRESS_ETH, &deny[..cut]) {
                assert_eq!(v, TC_ACT_SHOT, "eth denied {proto} cut at {cut}");
                ran += 1;
            }
            if let Ok(v) = try_run(&mut l, PROG_INGRESS_ETH, &allow[..cut]) {
                let want = if cut >= 14 + needed {
                    TC_ACT_OK
                } else {
                    TC_ACT_SHOT
                };
                assert_eq!(v, want, "eth allowed {proto} cut at {cut}");
            }
        }
        assert!(
            ran >= deny.len() - 14 - ip_len,
            "the kernel ran only {ran} cuts"
        );
    }
    // A first fragment (MF set, offset 0) cut anywhere before its ports is dropped too.
    let (s, d) = (ip("100.64.0.5"), ip("10.1.0.1"));
    for (dport, full_verdict) in [(22u16, TC_ACT_SHOT), (1000, TC_ACT_OK)] {
        let payload = l4(TCP, 40000, dport);
        let mut first = ipv4_header(s, d, TCP, 0x2000, payload.len());
        first.extend_from_slice(&payload);
        for cut in 15..=first.len() {
            let want = if cut >= 24 { full_verdict } else { TC_ACT_SHOT };
            let got = run(&mut l, PROG_INGRESS_L3, &first[..cut]);
            assert_eq!(got, want, "first fragment to port {dport} cut at {cut}");
        }
    }
    // Header fields that lie.
    let good = frame(ip("100.64.0.5"), ip("10.1.0.1"), TCP, 40000, 1000);
    assert_eq!(ingress(&mut l, &good), TC_ACT_OK);
    let mut bad_ihl = good.clone();
    bad_ihl[14] = 0x44;
    assert_eq!(ingress(&mut l, &bad_ihl), TC_ACT_SHOT);
    let mut long_ihl = good.clone();
    long_ihl[14] = 0x4f; // 60-byte header does not fit the packet
    assert_eq!(ingress(&mut l, &long_ihl), TC_ACT_SHOT);
    let mut wrong_version = good.clone();
    wrong_version[14] = 0x65;
    assert_eq!(ingress(&mut l, &wrong_version), TC_ACT_SHOT);
    assert!(l.maps.counters().unwrap().stats.drop_malformed > 50);
}

#[test]
fn return_traffic_of_our_flows_passes() {
    let (_pin, mut l) = loaded("return");
    l.maps.set_policy(&base_policy()).unwrap();
    let (me, them) = (ip("10.1.0.1"), ip("192.0.2.80"));
    for proto in [TCP, UDP] {
        let reply = frame(them, me, proto, 443, 40001);
        assert_eq!(ingress(&mut l, &reply), TC_ACT_SHOT, "no flow yet");
        assert_eq!(
            egress(&mut l, &frame(me, them, proto, 40001, 443)),
            TC_ACT_OK
        );
        let f = l.maps.flow(proto, (me, 40001), (them, 443)).unwrap();
        assert_eq!(f.map(|f| f.origin), Some(ORIGIN_LOCAL));
        assert_eq!(ingress(&mut l, &reply), TC_ACT_OK, "reply to our flow");
        // Another port of the same host is not part of the flow.
        assert_eq!(
            ingress(&mut l, &frame(them, me, proto, 443, 40002)),
            TC_ACT_SHOT
        );
    }
    let me6 = ip("fd00:1::1");
    let them6 = ip("2001:db8::80");
    assert_eq!(
        egress(&mut l, &frame(me6, them6, TCP, 40001, 22)),
        TC_ACT_OK
    );
    assert_eq!(
        ingress(&mut l, &frame(them6, me6, TCP, 22, 40001)),
        TC_ACT_OK
    );
    let c = l.maps.counters().unwrap().stats;
    assert_eq!(c.egress_new_flow, 3);
    assert_eq!(c.pass_flow, 3);
}

#[test]
fn peer_flows_do_not_survive_a_policy_that_drops_them() {
    let (_pin, mut l) = loaded("peerflow");
    let allow_ssh = policy(&[rule(&["100.64.0.7"], &[("10.1.2.3/32", 22, 22)], &[6])]);
    let (peer, me) = (ip("100.64.0.7"), ip("10.1.2.3"));
    let syn = frame(peer, me, TCP, 50000, 22);
    l.maps.set_policy(&allow_ssh).unwrap();
    assert_eq!(ingress(&mut l, &syn), TC_ACT_OK);
    let f = l.maps.flow(TCP, (me, 22), (peer, 50000)).unwrap().unwrap();
    assert_eq!(f.origin, ORIGIN_PEER);
    // Our replies must not make it "our" flow.
    assert_eq!(egress(&mut l, &frame(me, peer, TCP, 22, 50000)), TC_ACT_OK);
    let f = l.maps.flow(TCP, (me, 22), (peer, 50000)).unwrap().unwrap();
    assert_eq!(f.origin, ORIGIN_PEER);
    // Cached verdict: the second packet is a flow hit.
    assert_eq!(ingress(&mut l, &syn), TC_ACT_OK);
    assert_eq!(l.maps.counters().unwrap().stats.pass_flow, 1);
    // Same policy again: still allowed (re-classified once under the new generation).
    l.maps.set_policy(&allow_ssh).unwrap();
    assert_eq!(ingress(&mut l, &syn), TC_ACT_OK);
    // A policy without the rule cuts the established flow.
    let web_only = policy(&[rule(&["100.64.0.7"], &[("10.1.2.3/32", 80, 80)], &[6])]);
    assert!(!web_only.allows(peer, me, TCP, 22));
    let report = l.maps.set_policy(&web_only).unwrap();
    assert!(report.removed_keys > 0, "{report:?}");
    assert_eq!(ingress(&mut l, &syn), TC_ACT_SHOT);
    assert_eq!(ingress(&mut l, &syn), TC_ACT_SHOT);
}

#[test]
fn verdict_cache_can_be_disabled() {
    let (_pin, mut l) = loaded("nocache");
    l.maps.set_policy(&base_policy()).unwrap();
    l.maps
        .set_flags(meshgate_ebpf::maps::FLAG_NO_VERDICT_CACHE)
        .unwrap();
    let f = frame(ip("100.64.0.5"), ip("10.1.0.1"), TCP, 40000, 1000);
    for _ in 0..3 {
        assert_eq!(ingress(&mut l, &f), TC_ACT_OK);
    }
    let c = l.maps.counters().unwrap().stats;
    assert_eq!((c.pass_rule, c.pass_flow), (3, 0));
    assert_eq!(l.maps.config().unwrap().flags, 1);
}

/// xorshift64*.
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
}

#[test]
fn random_sample_matches_the_policy_oracle() {
    let (_pin, mut l) = loaded("random");
    let mut rng = Rng(0x51ed_270b_27a4_f00d);
    let srcs4 = ["100.64.0.0/24", "100.64.0.7", "*", "100.64.0.0/10"];
    let srcs6 = ["fd7a:115c:a1e0::/48", "fd7a:115c:a1e0::7"];
    let dsts = [
        "10.1.0.0/16",
        "10.1.2.0/24",
        "10.1.2.3",
        "fd00:1::/64",
        "fd00::/8",
        "*",
    ];
    let protos = [6, 17, 1, 58, 132, 47];
    let mut allowed = 0;
    for _round in 0..4 {
        let mut rules = Vec::new();
        for _ in 0..4 {
            let s = if rng.below(2) == 0 {
                srcs4[rng.below(4) as usize]
            } else {
                srcs6[rng.below(2) as usize]
            };
            let d = dsts[rng.below(6) as usize];
            let lo = rng.below(1200) as u16;
            let hi = if rng.below(4) == 0 {
                u16::MAX
            } else {
                lo + rng.below(200) as u16
            };
            let lo = if hi == u16::MAX { 0 } else { lo };
            let ps = vec![protos[rng.below(6) as usize], protos[rng.below(6) as usize]];
            rules.push(rule(&[s], &[(d, lo, hi)], &ps));
        }
        let p = policy(&rules);
        l.maps.set_policy(&p).unwrap();
        for _ in 0..300 {
            let v6 = rng.below(2) == 0;
            let (src, dst) = if v6 {
                (
                    IpAddr::from([0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, rng.below(16) as u16]),
                    IpAddr::from([0xfd00, rng.below(2) as u16, 0, 0, 0, 0, 0, 1]),
                )
            } else {
                (
                    IpAddr::from([100, 64, rng.below(2) as u8, rng.below(10) as u8]),
                    IpAddr::from([10, 1, 2 + rng.below(2) as u8, rng.below(5) as u8]),
                )
            };
            let proto = protos[rng.below(6) as usize] as u8;
            let icmp = (proto == ICMP && !v6) || (proto == ICMPV6 && v6);
            let port = match proto {
                ICMP => [8u16, 0, 13][rng.below(3) as usize],
                ICMPV6 => [128u16, 129, 135][rng.below(3) as usize],
                6 | 17 | 132 => rng.below(1500) as u16,
                _ => 0,
            };
            let sport = 30000 + rng.below(30000) as u16;
            let reply_type = match (icmp, v6) {
                (true, false) => [0, 3, 11, 12].contains(&port),
                (true, true) => [129, 1, 2, 3, 4].contains(&port),
                _ => false,
            };
            let want = p.allows(src, dst, proto, port) || reply_type;
            let got = ingress(&mut l, &frame(src, dst, proto, sport, port)) == TC_ACT_OK;
            assert_eq!(
                got, want,
                "{src} -> {dst} proto {proto} port {port}\n{rules:?}"
            );
            allowed += usize::from(want);
        }
    }
    assert!(allowed > 60 && allowed < 1140, "allowed {allowed} of 1200");
}

#[test]
fn a_pinned_map_of_another_layout_is_refused() {
    let (pin, l) = loaded("incompat");
    drop(l);
    // Put the 16-entry stats array where the 1-entry config array belongs.
    let config = pin.0.join("mg_config");
    std::fs::remove_file(&config).unwrap();
    let stats = aya::maps::MapData::from_pin(pin.0.join("mg_stats")).unwrap();
    stats.pin(&config).unwrap();
    let err = load(&pin.0).unwrap_err();
    assert!(
        matches!(err, meshgate_ebpf::Error::IncompatiblePin { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("mg_config"), "{err}");
}

#[test]
fn a_policy_too_large_for_the_maps_leaves_the_active_one_in_place() {
    let (_pin, mut l) = loaded("toolarge");
    l.maps.set_policy(&base_policy()).unwrap();
    let before = l.maps.config().unwrap();
    // 600 sources under `*`, each inheriting `*`'s 2 x 30 port prefixes for 20 destinations.
    let srcs: Vec<String> = (0..600)
        .map(|i| format!("100.65.{}.{}", i / 250, i % 250))
        .collect();
    let dsts: Vec<String> = (0..20).map(|i| format!("10.7.{i}.0/24")).collect();
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
    let err = l.maps.set_policy(&policy(&rules)).unwrap_err();
    assert!(
        matches!(err, meshgate_ebpf::Error::TooLarge { .. }),
        "{err}"
    );
    assert_eq!(l.maps.config().unwrap(), before);
    let f = frame(ip("100.64.0.5"), ip("10.1.0.1"), TCP, 40000, 1000);
    assert_eq!(ingress(&mut l, &f), TC_ACT_OK);
    let f = frame(ip("100.64.0.5"), ip("10.1.0.1"), TCP, 40000, 999);
    assert_eq!(ingress(&mut l, &f), TC_ACT_SHOT);
}
