//! 500 concurrent clients on one relay in one process: every client sends to the next one in a
//! ring and reads what its predecessor sent; all packets are accounted for, RSS stays bounded.

mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use meshgate_derp::Event;
use meshgate_relay::Config;
use tokio::task::JoinSet;
use tokio::time::timeout;

const CLIENTS: usize = 500;
const PER_CLIENT: usize = 20;
const SIZE: usize = 1200;

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Each client costs two sockets here (its end and the server's): make sure there are enough.
fn ensure_fd_limit(needed: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        if lim.rlim_cur < needed {
            lim.rlim_cur = needed.min(lim.rlim_max);
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
        }
    }
    assert!(
        lim.rlim_cur >= needed,
        "RLIMIT_NOFILE {} < {needed}",
        lim.rlim_cur
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_clients_in_a_ring() {
    ensure_fd_limit(4 * CLIENTS as u64 + 256);
    let started = Instant::now();
    let rss_before = rss_kib();
    let (relay, addr) = start(Config::default()).await;
    let target = plain(addr);

    let result = timeout(Duration::from_secs(50), async {
        let mut connecting = JoinSet::new();
        for i in 0..CLIENTS {
            let t = target.clone();
            connecting.spawn(async move { (i, client(&t).await) });
        }
        let mut clients: Vec<_> = (0..CLIENTS).map(|_| None).collect();
        while let Some(r) = connecting.join_next().await {
            let (i, c) = r.unwrap();
            clients[i] = Some(c);
        }
        let clients: Vec<_> = clients.into_iter().map(Option::unwrap).collect();
        assert_eq!(relay.stats().clients_connected, CLIENTS as u64);
        let rss_connected = rss_kib();

        let keys: Vec<_> = clients.iter().map(|(c, _, _)| c.public_key()).collect();
        let mut running = JoinSet::new();
        for (i, (c, mut ev, _)) in clients.into_iter().enumerate() {
            let dst = keys[(i + 1) % CLIENTS];
            let src = keys[(i + CLIENTS - 1) % CLIENTS];
            running.spawn(async move {
                for n in 0..PER_CLIENT {
                    let mut p = vec![0u8; SIZE];
                    p[..8].copy_from_slice(&(n as u64).to_be_bytes());
                    c.send(dst, Bytes::from(p)).await.unwrap();
                }
                // Read until everything expected arrived, or 3 s of silence (drops).
                let mut got = 0;
                while got < PER_CLIENT {
                    match timeout(Duration::from_secs(3), ev.recv()).await {
                        Ok(Ok(Event::Packet { src: s, data })) => {
                            assert_eq!((s, data.len()), (src, SIZE));
                            got += 1;
                        }
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => panic!("client {i} closed: {e}"),
                        Err(_) => break,
                    }
                }
                (got, c, ev)
            });
        }
        let mut received = 0;
        let mut keep = Vec::new();
        while let Some(r) = running.join_next().await {
            let (got, c, ev) = r.unwrap();
            received += got;
            keep.push((c, ev));
        }
        (received, rss_connected, keep)
    })
    .await;
    let (received, rss_connected, keep) = result.expect("ring did not finish in 50 s");
    let s = relay.stats();
    let rss_after = rss_kib();
    let sent = (CLIENTS * PER_CLIENT) as u64;
    println!(
        "{CLIENTS} clients: RSS before {rss_before} KiB, connected {rss_connected} KiB, after {rss_after} KiB; \
         sent {sent}, received {received}, dropped {} ({:?}); {:?}",
        s.dropped(),
        s,
        started.elapsed()
    );
    assert_eq!(s.packets_received, sent);
    assert_eq!(
        received as u64 + s.dropped(),
        sent,
        "every packet received or counted dropped"
    );
    assert!(
        received as u64 >= sent * 9 / 10,
        "most packets arrive: {received}/{sent}"
    );
    // Bound: per client pair (client + server side, one process) the buffers are a 16 KiB client
    // read buffer, an 8 KiB server read buffer, 16 KiB write batches on each side, 32+32 queued
    // packets and two channels of at most 256 small entries: well under 256 KiB even with
    // allocator slack. 500 × 256 KiB = 125 MiB; 256 MiB is a generous ceiling that still
    // catches per-connection growth such as unbounded queues or per-frame 1 MiB allocations.
    let growth = rss_after.saturating_sub(rss_before);
    assert!(growth < 256 * 1024, "RSS grew by {growth} KiB");
    assert!(started.elapsed() < Duration::from_secs(60));
    drop(keep);
}
