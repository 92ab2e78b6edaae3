use meshgate_tailcfg::filter::{CapGrant, NetPortRange, PortRange};

use super::*;

fn n(s: &str) -> IpNet {
    s.parse().unwrap()
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
        cap_grant: vec![],
    }
}

fn e(src: &str, dst: &str, proto: u8, first_port: u16, last_port: u16) -> Entry {
    Entry {
        src: n(src),
        dst: n(dst),
        proto,
        first_port,
        last_port,
    }
}

#[test]
fn observed_control_rule_with_default_protocols() {
    let r = rule(
        &["100.112.189.40", "fd7a:115c:a1e0::1"],
        &[("*", 0, 65535)],
        &[],
    );
    let p = Policy::from_filter_rules(&[r]).unwrap();
    assert_eq!(
        p.entries(),
        &[
            e("100.112.189.40/32", "0.0.0.0/0", 6, 0, 65535),
            e("100.112.189.40/32", "0.0.0.0/0", 17, 0, 65535),
            e("fd7a:115c:a1e0::1/128", "::/0", 6, 0, 65535),
            e("fd7a:115c:a1e0::1/128", "::/0", 17, 0, 65535),
        ]
    );
    assert_eq!(
        p.echo(),
        &[
            (n("100.112.189.40/32"), n("0.0.0.0/0")),
            (n("fd7a:115c:a1e0::1/128"), n("::/0"))
        ]
    );
}

#[test]
fn overlapping_and_adjacent_port_ranges_merge() {
    let rules = [
        rule(
            &["100.64.0.1"],
            &[("100.64.0.2", 80, 90), ("100.64.0.2", 85, 100)],
            &[6],
        ),
        rule(
            &["100.64.0.1"],
            &[("100.64.0.2", 101, 101), ("100.64.0.2", 443, 443)],
            &[6],
        ),
    ];
    let p = Policy::from_filter_rules(&rules).unwrap();
    assert_eq!(
        p.entries(),
        &[
            e("100.64.0.1/32", "100.64.0.2/32", 6, 80, 101),
            e("100.64.0.1/32", "100.64.0.2/32", 6, 443, 443),
        ]
    );
}

#[test]
fn nested_sources_become_disjoint_entries() {
    let rules = [
        rule(&["10.0.0.0/30"], &[("100.64.0.1", 22, 22)], &[6]),
        rule(&["10.0.0.1"], &[("100.64.0.1", 80, 80)], &[6]),
    ];
    let p = Policy::from_filter_rules(&rules).unwrap();
    assert_eq!(
        p.entries(),
        &[
            // 10.0.0.1 alone also has port 80; its port 22 merged back into the /30.
            e("10.0.0.0/30", "100.64.0.1/32", 6, 22, 22),
            e("10.0.0.1/32", "100.64.0.1/32", 6, 80, 80),
        ]
    );
}

#[test]
fn ranges_become_covering_prefixes() {
    assert_eq!(
        parse_ip_set("10.0.0.1-10.0.0.6").unwrap(),
        vec![
            n("10.0.0.1/32"),
            n("10.0.0.2/31"),
            n("10.0.0.4/31"),
            n("10.0.0.6/32")
        ]
    );
    assert_eq!(
        parse_ip_set("0.0.0.0-255.255.255.255").unwrap(),
        vec![n("0.0.0.0/0")]
    );
    assert_eq!(
        parse_ip_set("::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff").unwrap(),
        vec![n("::/0")]
    );
    assert_eq!(
        parse_ip_set("fd00::ff-fd00::100").unwrap(),
        vec![n("fd00::ff/128"), n("fd00::100/128")]
    );
    assert!(parse_ip_set("10.0.0.6-10.0.0.1").is_err());
    assert!(parse_ip_set("10.0.0.1-::1").is_err());
}

#[test]
fn invalid_rules_are_refused_with_their_index() {
    let good = rule(&["100.64.0.1"], &[("*", 0, 65535)], &[]);
    let empty = rule(&["100.64.0.1"], &[("*", 90, 80)], &[]);
    let err = Policy::from_filter_rules(&[good.clone(), empty]).unwrap_err();
    assert!(
        matches!(
            err,
            Error::EmptyPortRange {
                rule: 1,
                first: 90,
                last: 80,
                ..
            }
        ),
        "{err}"
    );

    let host_bits = rule(&["10.0.0.1/24"], &[("*", 0, 65535)], &[]);
    let err = Policy::from_filter_rules(&[host_bits]).unwrap_err();
    assert!(
        matches!(&err, Error::BadAddress { rule: 0, text, .. } if text == "10.0.0.1/24"),
        "{err}"
    );
    assert!(err.to_string().contains("filter rule 0"), "{err}");

    let junk = rule(&["100.64.0.1"], &[("nope", 0, 65535)], &[]);
    let err = Policy::from_filter_rules(&[good, junk]).unwrap_err();
    assert!(
        matches!(&err, Error::BadAddress { rule: 1, text, .. } if text == "nope"),
        "{err}"
    );
}

#[test]
fn protocols_out_of_range_ignored_and_portless_ones_need_all_ports() {
    let all = rule(
        &["100.64.0.1"],
        &[("100.64.0.2", 0, 65535)],
        &[6, 300, -1, 47],
    );
    let p = Policy::from_filter_rules(&[all]).unwrap();
    assert_eq!(
        p.entries(),
        &[
            e("100.64.0.1/32", "100.64.0.2/32", 6, 0, 65535),
            e("100.64.0.1/32", "100.64.0.2/32", 47, 0, 65535),
        ]
    );
    let some = rule(&["100.64.0.1"], &[("100.64.0.2", 22, 22)], &[6, 47, 1]);
    let p = Policy::from_filter_rules(&[some]).unwrap();
    assert_eq!(
        p.entries(),
        &[e("100.64.0.1/32", "100.64.0.2/32", 6, 22, 22)]
    );
    // Ping follows (source, destination) whatever the rule's protocols.
    assert_eq!(p.echo(), &[(n("100.64.0.1/32"), n("100.64.0.2/32"))]);
}

#[test]
fn cap_grants_and_cap_sources_give_no_packet_permission() {
    let grant = FilterRule {
        src_ips: vec!["100.64.0.1".into()],
        cap_grant: vec![CapGrant {
            dsts: vec!["100.64.0.2".into()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let cap_src = rule(&["cap:funnel"], &[("*", 0, 65535)], &[]);
    let p = Policy::from_filter_rules(&[grant, cap_src]).unwrap();
    assert_eq!(p, Policy::default());
}

#[test]
fn order_of_rules_does_not_matter() {
    let a = rule(&["100.64.0.0/10"], &[("100.64.0.9", 22, 22)], &[6]);
    let b = rule(
        &["*"],
        &[("100.64.0.9", 80, 80), ("fd7a::9", 443, 443)],
        &[],
    );
    let ab = Policy::from_filter_rules(&[a.clone(), b.clone()]).unwrap();
    let ba = Policy::from_filter_rules(&[b, a]).unwrap();
    assert_eq!(ab, ba);
    for (i, x) in ab.entries().iter().enumerate() {
        for y in ab.entries().iter().skip(i + 1) {
            let overlap = (x.src.contains(&y.src) || y.src.contains(&x.src))
                && (x.dst.contains(&y.dst) || y.dst.contains(&x.dst))
                && x.proto == y.proto
                && x.first_port <= y.last_port
                && y.first_port <= x.last_port;
            assert!(!overlap, "{x:?} overlaps {y:?}");
        }
    }
}

#[test]
fn huge_policies_are_refused() {
    // Every other address, so no two are siblings that merging could join: 62 500 entries
    // and as many echo pairs.
    let srcs: Vec<String> = (0..250u32)
        .map(|i| std::net::Ipv4Addr::from(0x0a00_0000 + 2 * i).to_string())
        .collect();
    let dsts: Vec<String> = (0..250u32)
        .map(|i| std::net::Ipv4Addr::from(0x6440_0000 + 2 * i).to_string())
        .collect();
    let r = FilterRule {
        src_ips: srcs,
        dst_ports: dsts
            .into_iter()
            .map(|ip| NetPortRange {
                ip,
                ports: PortRange {
                    first: 22,
                    last: 22,
                },
            })
            .collect(),
        ip_proto: vec![6],
        cap_grant: vec![],
    };
    let err = Policy::from_filter_rules(&[r]).unwrap_err();
    assert!(
        matches!(err, Error::TooManyEntries { max: MAX_ENTRIES }),
        "{err}"
    );
}

#[test]
fn splits_that_change_nothing_are_merged_back() {
    let rules = [
        rule(&["*"], &[("100.64.0.9", 22, 22)], &[6]),
        rule(&["100.64.0.1"], &[("100.64.0.9", 80, 80)], &[6]),
    ];
    let p = Policy::from_filter_rules(&rules).unwrap();
    assert_eq!(
        p.entries(),
        &[
            e("0.0.0.0/0", "100.64.0.9/32", 6, 22, 22),
            e("100.64.0.1/32", "100.64.0.9/32", 6, 80, 80),
        ]
    );
    assert_eq!(p.echo(), &[(n("0.0.0.0/0"), n("100.64.0.9/32"))]);
}
