//! Two real meshgate-stun servers on 127.0.0.1 as two DERP regions.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{map, node, region};
use meshgate_netcheck::{History, run_once};
use meshgate_stun::{ServerStats, serve};
use tokio::net::UdpSocket;

#[tokio::test]
async fn run_once_against_two_loopback_servers() {
    let mut regions = Vec::new();
    let mut stats = Vec::new();
    let mut tasks = Vec::new();
    for id in [1, 2] {
        let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let port = sock.local_addr().unwrap().port();
        let st = Arc::new(ServerStats::default());
        tasks.push(tokio::spawn(serve(sock, st.clone())));
        stats.push(st);
        regions.push(region(
            id,
            vec![node(
                &format!("{id}a"),
                id,
                "127.0.0.1",
                "none",
                i32::from(port),
            )],
        ));
    }
    let m = map(regions);
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = client.local_addr().unwrap();
    let mut history = History::new();

    let started = std::time::Instant::now();
    let rep = run_once(&client, &m, &mut history, Duration::from_secs(5))
        .await
        .unwrap();
    // Both regions answer well before the 3 s STUN phase; done as soon as both did.
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    assert!(rep.udp && rep.ipv4 && !rep.ipv6);
    assert_eq!(
        rep.region_latency.keys().copied().collect::<Vec<_>>(),
        vec![1, 2]
    );
    assert_eq!(rep.region_v4_latency.len(), 2);
    assert_eq!(rep.global_v4, Some(me));
    // Both servers saw the same mapping (no NAT on loopback).
    assert_eq!(rep.mapping_varies_by_dest_ip, Some(false));
    assert!(rep.preferred_derp == 1 || rep.preferred_derp == 2);
    assert_eq!(history.home(), rep.preferred_derp);
    let ni = rep.net_info();
    assert!(ni.derp_latency.contains_key("1-v4") && ni.derp_latency.contains_key("2-v4"));
    assert_eq!(ni.working_udp, Some(true));
    for st in &stats {
        assert!(st.snapshot().answered >= 1);
        assert_eq!(st.snapshot().rejected, 0);
    }

    // A second run uses the first for its spacing and keeps a home.
    let rep2 = run_once(&client, &m, &mut history, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(rep2.region_latency.len(), 2);
    assert_ne!(rep2.preferred_derp, 0);
    for t in tasks {
        t.abort();
    }
}

#[tokio::test]
async fn silent_region_is_bounded_by_the_timeout() {
    let live = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let live_port = live.local_addr().unwrap().port();
    let task = tokio::spawn(serve(live, Arc::new(ServerStats::default())));
    // A port with no server: nothing answers (or the kernel reports it refused).
    let dead_port = {
        let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        s.local_addr().unwrap().port()
    };
    let m = map(vec![
        region(
            1,
            vec![node("1a", 1, "127.0.0.1", "none", i32::from(live_port))],
        ),
        region(
            2,
            vec![node("2a", 2, "127.0.0.1", "none", i32::from(dead_port))],
        ),
    ]);
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut history = History::new();
    let started = std::time::Instant::now();
    let rep = run_once(&client, &m, &mut history, Duration::from_secs(1))
        .await
        .unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(3),
        "{took:?}"
    );
    assert_eq!(
        rep.region_latency.keys().copied().collect::<Vec<_>>(),
        vec![1]
    );
    assert_eq!(rep.preferred_derp, 1);
    assert_eq!(rep.mapping_varies_by_dest_ip, None);
    task.abort();
}
