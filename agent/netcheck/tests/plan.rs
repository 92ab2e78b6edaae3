mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{map, node, region};
use meshgate_netcheck::{Family, Plan, PlanOptions, Report, SkipReason, retransmit_interval};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn test_map() -> meshgate_tailcfg::DerpMap {
    let mut nomeasure = region(2, vec![node("2a", 2, "10.0.0.2", "none", 0)]);
    nomeasure.no_measure_no_home = true;
    let mut hostname_literal = node("6a", 6, "", "", 3478);
    hostname_literal.host_name = "10.0.0.6".into();
    map(vec![
        region(
            1,
            vec![
                node("1a", 1, "10.0.0.1", "fd00::1", 0),
                node("1b", 1, "10.0.0.11", "fd00::11", 3479),
            ],
        ),
        nomeasure,
        region(3, vec![node("3a", 3, "10.0.0.3", "fd00::3", -1)]),
        region(4, vec![node("4a", 4, "none", "fd00::4", 0)]),
        region(5, vec![node("5a", 5, "", "", 0)]),
        region(6, vec![hostname_literal]),
        region(7, vec![node("7a", 7, "10.0.0", "none", 0)]),
    ])
}

fn sa(s: &str) -> SocketAddr {
    s.parse().unwrap()
}

#[test]
fn full_plan_regions_nodes_families_and_delays() {
    let plan = Plan::full(&test_map(), None, PlanOptions::default());
    assert!(plan.full);
    let got: Vec<(i32, &str, Family, SocketAddr, Duration)> = plan
        .probes
        .iter()
        .map(|p| (p.region, p.node.as_str(), p.family, p.addr, p.delay))
        .collect();
    use Family::{V4, V6};
    // Sorted by delay, region order within a delay. Region 1 cycles 1a,1b,1a; 2 (NoMeasureNoHome)
    // and 3 (STUNPort -1) are absent; 4 is v6 only; 5 needs DNS; 6 uses its literal HostName.
    let want = vec![
        (1, "1a", V4, sa("10.0.0.1:3478"), ms(0)),
        (1, "1a", V6, sa("[fd00::1]:3478"), ms(0)),
        (4, "4a", V6, sa("[fd00::4]:3478"), ms(0)),
        (6, "6a", V4, sa("10.0.0.6:3478"), ms(0)),
        (1, "1b", V4, sa("10.0.0.11:3479"), ms(100)),
        (1, "1b", V6, sa("[fd00::11]:3479"), ms(100)),
        (4, "4a", V6, sa("[fd00::4]:3478"), ms(100)),
        (6, "6a", V4, sa("10.0.0.6:3478"), ms(100)),
        (1, "1a", V4, sa("10.0.0.1:3478"), ms(200)),
        (1, "1a", V6, sa("[fd00::1]:3478"), ms(200)),
        (4, "4a", V6, sa("[fd00::4]:3478"), ms(200)),
        (6, "6a", V4, sa("10.0.0.6:3478"), ms(200)),
    ];
    assert_eq!(got, want);
    let skipped: Vec<(i32, &str, Family, &SkipReason)> = plan
        .skipped
        .iter()
        .map(|s| (s.region, s.node.as_str(), s.family, &s.reason))
        .collect();
    assert_eq!(
        skipped,
        vec![
            (5, "5a", V4, &SkipReason::NeedsDns),
            (5, "5a", V6, &SkipReason::NeedsDns),
            (7, "7a", V4, &SkipReason::BadAddress("10.0.0".into())),
        ]
    );
}

#[test]
fn family_options_filter() {
    let plan = Plan::full(
        &test_map(),
        None,
        PlanOptions {
            ipv4: true,
            ipv6: false,
        },
    );
    assert!(plan.probes.iter().all(|p| p.family == Family::V4));
    assert_eq!(plan.probes.len(), 6);
}

#[test]
fn retransmit_spacing_from_last_report() {
    assert_eq!(retransmit_interval(1, None), ms(100));
    let mut last = Report::default();
    last.region_latency.insert(1, ms(50));
    assert_eq!(retransmit_interval(1, Some(&last)), ms(60));
    assert_eq!(retransmit_interval(4, Some(&last)), ms(200));
    let plan = Plan::full(
        &test_map(),
        Some(&last),
        PlanOptions {
            ipv4: true,
            ipv6: false,
        },
    );
    let r1: Vec<Duration> = plan
        .probes
        .iter()
        .filter(|p| p.region == 1)
        .map(|p| p.delay)
        .collect();
    assert_eq!(r1, vec![ms(0), ms(60), ms(120)]);
    let r6: Vec<Duration> = plan
        .probes
        .iter()
        .filter(|p| p.region == 6)
        .map(|p| p.delay)
        .collect();
    assert_eq!(r6, vec![ms(0), ms(200), ms(400)]);
}
