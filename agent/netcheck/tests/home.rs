//! Home region selection and stickiness, hand-worked (reference §2.7).

mod common;

use std::time::{Duration, Instant};

use common::{simple_map, with_scores};
use meshgate_netcheck::{History, Report};
use meshgate_tailcfg::{DerpMap, RegionId};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn report(lat: &[(RegionId, u64)]) -> Report {
    let mut r = Report::default();
    for &(id, l) in lat {
        r.region_latency.insert(id, ms(l));
        r.region_v4_latency.insert(id, ms(l));
    }
    r.udp = !lat.is_empty();
    r
}

/// Fresh history with `old` as home, one report, no DERP frames heard.
fn pick(map: &DerpMap, old: RegionId, lat: &[(RegionId, u64)]) -> RegionId {
    let mut h = History::new();
    h.set_home(old);
    let mut r = report(lat);
    let got = h.add_report(&mut r, Instant::now(), map, |_| false);
    assert_eq!(r.preferred_derp, got);
    assert_eq!(h.home(), got);
    got
}

#[test]
fn first_choice_is_lowest_latency() {
    let m = simple_map(3);
    assert_eq!(pick(&m, 0, &[(1, 50), (2, 30), (3, 31)]), 2);
    // Ties go to the lower region ID.
    assert_eq!(pick(&m, 0, &[(3, 30), (2, 30)]), 2);
}

#[test]
fn ten_ms_rule() {
    let m = simple_map(3);
    // Old 40, best 32: gain 8 ms < 10 ms → keep (even though 32 ≤ ⅔·40 is false anyway).
    assert_eq!(pick(&m, 1, &[(1, 40), (2, 32)]), 1);
    // Old 15, best 9: 9 < ⅔·15 = 10, but gain 6 ms < 10 ms → keep.
    assert_eq!(pick(&m, 1, &[(1, 15), (2, 9)]), 1);
    // Old 30, best 19: gain 11 ms, 19 < 20 → switch.
    assert_eq!(pick(&m, 1, &[(1, 30), (2, 19)]), 2);
}

#[test]
fn two_thirds_rule() {
    let m = simple_map(3);
    // Old 100, best 80: gain 20 ms ≥ 10, but 80 > 66.7 → keep.
    assert_eq!(pick(&m, 1, &[(1, 100), (2, 80)]), 1);
    // Old 100, best 66: 66 < 66.7 and gain 34 → switch.
    assert_eq!(pick(&m, 1, &[(1, 100), (2, 66)]), 2);
    // Old 90, best 60: 60 = ⅔·90 exactly, not greater → switch.
    assert_eq!(pick(&m, 1, &[(1, 90), (2, 60)]), 2);
}

#[test]
fn unreachable_old_home() {
    let m = simple_map(3);
    // No STUN answer from the old home and no DERP frame: switch.
    assert_eq!(pick(&m, 1, &[(2, 60)]), 2);
    // No STUN answer but a recent DERP frame: it is reachable, keep it.
    let mut h = History::new();
    h.set_home(1);
    let mut r = report(&[(2, 60)]);
    assert_eq!(h.add_report(&mut r, Instant::now(), &m, |id| id == 1), 1);
    // Old home gone from the map: switch even if heard.
    let mut h = History::new();
    h.set_home(9);
    let mut r = report(&[(2, 60)]);
    assert_eq!(h.add_report(&mut r, Instant::now(), &m, |_| true), 2);
}

#[test]
fn no_latency_keeps_current_home() {
    let m = simple_map(3);
    assert_eq!(pick(&m, 3, &[]), 3);
    assert_eq!(pick(&m, 0, &[]), 0);
}

#[test]
fn region_score_scaling() {
    // Region 2 is faster (40 vs 50) but its score 2.0 makes it 80: region 1 wins.
    let m = with_scores(simple_map(3), &[(2, 2.0)]);
    assert_eq!(pick(&m, 0, &[(1, 50), (2, 40)]), 1);
    // Score 0.5 makes region 1's 50 ms count as 25 < 30.
    let m = with_scores(simple_map(3), &[(1, 0.5)]);
    assert_eq!(pick(&m, 0, &[(1, 50), (2, 30)]), 1);
    // Zero, negative and non-finite scores are ignored; a huge one does not panic.
    let m = with_scores(simple_map(3), &[(1, 0.0), (2, -1.0), (3, f64::NAN)]);
    assert_eq!(pick(&m, 0, &[(1, 50), (2, 30), (3, 40)]), 2);
    let m = with_scores(simple_map(3), &[(1, 1e300), (2, f64::INFINITY)]);
    assert_eq!(pick(&m, 0, &[(1, 5), (2, 30), (3, 40)]), 2);
    // Stickiness compares scaled latencies: old 1 at 100×1.5 = 150, new 2 at 100 → gain 50 but
    // 100 > ⅔·150 = 100? No (equal) → switch; with 101 → keep.
    let m = with_scores(simple_map(3), &[(1, 1.5)]);
    assert_eq!(pick(&m, 1, &[(1, 100), (2, 100)]), 2);
    assert_eq!(pick(&m, 1, &[(1, 100), (2, 101)]), 1);
}

#[test]
fn history_window_five_minutes_five_seconds() {
    let m = simple_map(3);
    let t0 = Instant::now();
    let mut h = History::new();
    let mut a = report(&[(1, 20), (2, 50)]);
    assert_eq!(h.add_report(&mut a, t0, &m, |_| false), 1);
    // 60 s later region 1 is slow now, but its best recent (20 ms) still wins.
    let mut b = report(&[(1, 80), (2, 50)]);
    assert_eq!(
        h.add_report(&mut b, t0 + Duration::from_secs(60), &m, |_| false),
        1
    );
    // At 305 s the first report still counts.
    let mut c = report(&[(1, 80), (2, 50)]);
    assert_eq!(
        h.add_report(&mut c, t0 + Duration::from_secs(305), &m, |_| false),
        1
    );
    // At 306 s it has expired: best recent 1 = 80, 2 = 50; old home's current 80 vs 50:
    // gain 30 ≥ 10 and 50 ≤ 53.3 → switch.
    let mut d = report(&[(1, 80), (2, 50)]);
    assert_eq!(
        h.add_report(&mut d, t0 + Duration::from_secs(306), &m, |_| false),
        2
    );
    assert_eq!(h.last_report().map(|r| r.preferred_derp), Some(2));
}

#[test]
fn no_measure_no_home_is_never_home() {
    let mut m = simple_map(2);
    if let Some(r) = m.regions.get_mut(&1) {
        r.no_measure_no_home = true;
    }
    assert_eq!(pick(&m, 0, &[(1, 5), (2, 50)]), 2);
}

#[test]
fn net_info_fields() {
    let mut r = report(&[(1, 50)]);
    r.region_v6_latency.insert(1, ms(70));
    r.ipv4 = true;
    r.mapping_varies_by_dest_ip = Some(true);
    r.preferred_derp = 1;
    let ni = r.net_info();
    assert_eq!(ni.preferred_derp, 1);
    assert_eq!(ni.working_udp, Some(true));
    assert_eq!(ni.working_ipv6, Some(false));
    assert_eq!(ni.mapping_varies_by_dest_ip, Some(true));
    let keys: Vec<(&str, f64)> = ni
        .derp_latency
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(keys, vec![("1-v4", 0.05), ("1-v6", 0.07)]);
}
