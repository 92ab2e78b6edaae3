//! The probe state machine on a simulated clock.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::{map, node, region, simple_map};
use meshgate_netcheck::{Plan, PlanOptions, Probe, ResponseOutcome, STUN_PHASE_TIMEOUT};
use meshgate_stun::{binding_response, parse_binding_request};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Answers `req` as a STUN server would, claiming we are `mapped`.
fn answer(req: &[u8], mapped: &str) -> Vec<u8> {
    let tx = parse_binding_request(req).expect("probe sends valid Tailscale requests");
    binding_response(tx, mapped.parse().unwrap())
}

fn drain(p: &mut Probe, now: Instant) -> Vec<(SocketAddr, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(x) = p.poll_transmit(now) {
        out.push(x);
        assert!(out.len() < 100, "poll_transmit must run dry");
    }
    out
}

#[test]
fn retransmit_timing_and_skip_after_answer() {
    let t0 = Instant::now();
    let m = simple_map(2);
    let mut p = Probe::new(Plan::full(&m, None, PlanOptions::default()), t0);
    // t0: the first try of both regions, then nothing until t0+100ms.
    let first = drain(&mut p, t0);
    let dests: Vec<String> = first.iter().map(|(a, _)| a.to_string()).collect();
    assert_eq!(dests, vec!["10.0.0.1:3478", "10.0.0.2:3478"]);
    assert!(first.iter().all(|(_, b)| b.len() == 40));
    assert_eq!(p.poll_timeout(), Some(t0 + ms(100)));
    assert!(drain(&mut p, t0 + ms(99)).is_empty());
    // Region 1 answers at 30 ms: its later tries are dropped, region 2 keeps retrying.
    let r = answer(&first[0].1, "198.51.100.1:41641");
    assert_eq!(
        p.handle_response(first[0].0, &r, t0 + ms(30)),
        ResponseOutcome::Accepted
    );
    let second = drain(&mut p, t0 + ms(100));
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].0.to_string(), "10.0.0.2:3478");
    assert_eq!(p.poll_timeout(), Some(t0 + ms(200)));
    let third = drain(&mut p, t0 + ms(200));
    assert_eq!(third.len(), 1);
    // Nothing left to send: wait for the STUN phase deadline.
    assert_eq!(p.poll_timeout(), Some(t0 + STUN_PHASE_TIMEOUT));
    p.handle_timeout(t0 + STUN_PHASE_TIMEOUT - ms(1));
    assert!(!p.is_done());
    p.handle_timeout(t0 + STUN_PHASE_TIMEOUT);
    assert!(p.is_done());
    assert_eq!(p.poll_timeout(), None);
    assert!(p.poll_transmit(t0 + Duration::from_secs(10)).is_none());

    let rep = p.report();
    assert!(rep.udp && rep.ipv4 && !rep.ipv6);
    assert_eq!(rep.region_latency.get(&1), Some(&ms(30)));
    assert_eq!(rep.region_v4_latency.get(&1), Some(&ms(30)));
    assert_eq!(rep.region_latency.get(&2), None);
    assert_eq!(rep.global_v4, Some("198.51.100.1:41641".parse().unwrap()));
    assert_eq!(rep.mapping_varies_by_dest_ip, None);
}

#[test]
fn done_when_every_region_answered_and_rtt_of_the_retry() {
    let t0 = Instant::now();
    let mut p = Probe::new(Plan::full(&simple_map(1), None, PlanOptions::default()), t0);
    let a = drain(&mut p, t0);
    let b = drain(&mut p, t0 + ms(100));
    assert_eq!((a.len(), b.len()), (1, 1));
    // The retry's answer arrives first, 5 ms after it was sent: latency is measured per request.
    let rb = answer(&b[0].1, "198.51.100.1:1");
    assert_eq!(
        p.handle_response(b[0].0, &rb, t0 + ms(105)),
        ResponseOutcome::Accepted
    );
    assert!(p.is_done());
    assert_eq!(p.report().region_latency.get(&1), Some(&ms(5)));
    // The late answer to the first try is still ours and may only lower the latency.
    let ra = answer(&a[0].1, "198.51.100.1:1");
    assert_eq!(
        p.handle_response(a[0].0, &ra, t0 + ms(106)),
        ResponseOutcome::Accepted
    );
    assert_eq!(p.report().region_latency.get(&1), Some(&ms(5)));
    // Duplicates are unknown now.
    assert_eq!(
        p.handle_response(a[0].0, &ra, t0 + ms(107)),
        ResponseOutcome::UnknownTransaction
    );
}

#[test]
fn three_regions_shorten_the_deadline_to_twice_the_slowest() {
    let t0 = Instant::now();
    let mut p = Probe::new(Plan::full(&simple_map(4), None, PlanOptions::default()), t0);
    let sent = drain(&mut p, t0);
    assert_eq!(sent.len(), 4);
    for (i, lat) in [(0usize, 10u64), (1, 20), (2, 30)] {
        let r = answer(&sent[i].1, "198.51.100.1:1");
        assert_eq!(
            p.handle_response(sent[i].0, &r, t0 + ms(lat)),
            ResponseOutcome::Accepted
        );
    }
    // Third answer at 30 ms, slowest 30 ms, full plan: stop at 30 + 2×30 = 90 ms.
    assert_eq!(p.poll_timeout(), Some(t0 + ms(90)));
    p.handle_timeout(t0 + ms(89));
    assert!(!p.is_done());
    p.handle_timeout(t0 + ms(90));
    assert!(p.is_done());
    assert_eq!(p.report().region_latency.len(), 3);
}

#[test]
fn mapping_varies_by_dest_ip() {
    let t0 = Instant::now();
    for (m1, m2, want) in [
        ("198.51.100.1:1000", "198.51.100.1:1000", Some(false)),
        ("198.51.100.1:1000", "198.51.100.1:2000", Some(true)),
        ("198.51.100.1:1000", "198.51.100.9:1000", Some(true)),
    ] {
        let mut p = Probe::new(Plan::full(&simple_map(2), None, PlanOptions::default()), t0);
        let s = drain(&mut p, t0);
        p.handle_response(s[0].0, &answer(&s[0].1, m1), t0 + ms(1));
        p.handle_response(s[1].0, &answer(&s[1].1, m2), t0 + ms(2));
        let rep = p.report();
        assert_eq!(rep.mapping_varies_by_dest_ip, want, "{m1} {m2}");
        assert_eq!(rep.global_v4, Some(m1.parse().unwrap()));
    }
}

#[test]
fn foreign_datagrams_are_ignored() {
    let t0 = Instant::now();
    let mut p = Probe::new(Plan::full(&simple_map(1), None, PlanOptions::default()), t0);
    let s = drain(&mut p, t0);
    let r = answer(&s[0].1, "198.51.100.1:1");
    let other: SocketAddr = "10.9.9.9:3478".parse().unwrap();
    assert_eq!(
        p.handle_response(other, &r, t0 + ms(1)),
        ResponseOutcome::WrongSource
    );
    assert_eq!(
        p.handle_response(s[0].0, b"junk", t0 + ms(1)),
        ResponseOutcome::Malformed
    );
    assert_eq!(
        p.handle_response(s[0].0, &s[0].1, t0 + ms(1)),
        ResponseOutcome::Malformed
    );
    let stranger = binding_response(meshgate_stun::TxId([7; 12]), "1.2.3.4:5".parse().unwrap());
    assert_eq!(
        p.handle_response(s[0].0, &stranger, t0 + ms(1)),
        ResponseOutcome::UnknownTransaction
    );
    assert!(!p.report().udp);
    // A dual-stack socket reports the server as ::ffff:10.0.0.1; that is the same source.
    let mapped_src: SocketAddr = "[::ffff:10.0.0.1]:3478".parse().unwrap();
    assert_eq!(
        p.handle_response(mapped_src, &r, t0 + ms(2)),
        ResponseOutcome::Accepted
    );
    assert!(p.is_done());
}

#[test]
fn empty_plan_is_done_at_once() {
    let m = map(vec![region(1, vec![node("1a", 1, "", "", 0)])]);
    let p = Probe::new(Plan::full(&m, None, PlanOptions::default()), Instant::now());
    assert!(p.is_done());
    assert_eq!(p.report().skipped.len(), 2);
}
