//! Does io_uring beat sendmmsg as the bench's traffic generator here? (Issue 10: use io_uring
//! if, and only if, it measurably does.) Two namespaces joined by a veth, 64-byte frames
//! (18-byte UDP payloads) from one pinned thread over 16 connected sockets, counted at the
//! receiver's interface; the two generators interleaved A/B for 5 rounds of 2 s; medians with
//! [min-max] and the median of per-round ratios. Root. Run:
//! `cargo run --release -p meshgate-bench --example uring_vs_sendmmsg`.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use io_uring::{IoUring, opcode, types};
use meshgate_bench::blaster::{self, BlastConfig};
use meshgate_bench::netdev;
use meshgate_netns_lab::Lab;

const ROUNDS: usize = 5;
const WINDOW: Duration = Duration::from_secs(2);
const WARMUP: Duration = Duration::from_millis(300);
const TAIL: Duration = Duration::from_millis(200);
const FLOWS: usize = 16;
const PAYLOAD: usize = 18;
/// Sends per submission, the same as the sendmmsg batch.
const BATCH: usize = 64;
const RCV: Ipv4Addr = Ipv4Addr::new(10, 73, 0, 2);

type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// io_uring: BATCH `send` SQEs (round-robin over the sockets) per `submit_and_wait`, then the
/// completions reaped; returns datagrams sent.
fn uring_blast(dst: SocketAddrV4, duration: Duration) -> Res<u64> {
    let sockets = (0..FLOWS)
        .map(|_| {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.connect(dst)?;
            Ok(s)
        })
        .collect::<std::io::Result<Vec<_>>>()?;
    let payload = [7u8; PAYLOAD];
    let mut ring = IoUring::new(256)?;
    let mut sent = 0u64;
    let end = Instant::now() + duration;
    let max_batches = duration.as_secs_f64() as u64 * 10_000_000 + 1;
    let mut next = 0usize;
    for _ in 0..max_batches {
        if Instant::now() >= end {
            break;
        }
        for _ in 0..BATCH {
            let fd = sockets[next % FLOWS].as_raw_fd();
            next = next.wrapping_add(1);
            let sqe = opcode::Send::new(types::Fd(fd), payload.as_ptr(), PAYLOAD as u32).build();
            // SAFETY: `payload` and the sockets outlive every SQE: all are reaped below before
            // the next batch and before they are dropped.
            unsafe { ring.submission().push(&sqe)? };
        }
        ring.submit_and_wait(BATCH)?;
        for cqe in ring.completion() {
            if cqe.result() >= 0 {
                sent += 1;
            }
        }
    }
    Ok(sent)
}

fn main() -> Res<()> {
    let lab = Lab::new("uring")?;
    let snd = lab.add_host("snd")?;
    let rcv = lab.add_host("rcv")?;
    let link = lab.connect_with(&snd, &rcv, &["10.73.0.0/24".parse()?])?;
    let rcv_if = rcv.iface_on(&link).ok_or("no rcv iface")?.name;
    let _sink = rcv.udp_bind((RCV, 5000).into())?;
    let dst = SocketAddrV4::new(RCV, 5000);
    let cpu = std::thread::available_parallelism().map_or(1, |n| n.get()) - 1;

    let rx = || -> Res<u64> { Ok(rcv.run(|| netdev::read_rx_packets(&rcv_if))??) };
    let measure = |uring: bool| -> Res<(f64, f64)> {
        let total = WARMUP + WINDOW + TAIL;
        std::thread::scope(|s| {
            let h = s.spawn(|| -> Res<(u64, Duration)> {
                snd.run(|| {
                    let _ = blaster::pin_current_thread(cpu);
                    let t = Instant::now();
                    let sent = if uring {
                        uring_blast(dst, total)?
                    } else {
                        let cfg = BlastConfig {
                            dst,
                            flows: FLOWS,
                            payload: PAYLOAD,
                            duration: total,
                        };
                        blaster::blast(&cfg)?.sent
                    };
                    Ok((sent, t.elapsed()))
                })?
            });
            // Timed phases of a benchmark: the generator runs on its own clock.
            std::thread::sleep(WARMUP);
            let (c0, t0) = (rx()?, Instant::now());
            std::thread::sleep(WINDOW);
            let (c1, t1) = (rx()?, Instant::now());
            let (sent, took) = h.join().map_err(|_| "generator panicked")??;
            Ok((
                c1.saturating_sub(c0) as f64 / (t1 - t0).as_secs_f64(),
                sent as f64 / took.as_secs_f64(),
            ))
        })
    };
    let (mut mm, mut ur, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..ROUNDS {
        // A/B, the first alternating.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        let mut got = [0.0; 2];
        for uring in order {
            let (delivered, offered) = measure(uring)?;
            println!(
                "round {}/{ROUNDS} {:<9} delivered {:>8.1} kpps (offered {:>8.1} kpps)",
                round + 1,
                if uring { "io_uring" } else { "sendmmsg" },
                delivered / 1e3,
                offered / 1e3
            );
            got[usize::from(uring)] = delivered;
        }
        mm.push(got[0]);
        ur.push(got[1]);
        ratios.push(got[1] / got[0]);
    }
    let med = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        (s[s.len() / 2], s[0], s[s.len() - 1])
    };
    let ((m, ml, mh), (u, ul, uh), (r, rl, rh)) = (med(&mm), med(&ur), med(&ratios));
    println!(
        "64 B, {FLOWS} flows, {ROUNDS} x {WINDOW:?}: sendmmsg {:.1}k [{:.1}-{:.1}] pps, io_uring \
         {:.1}k [{:.1}-{:.1}] pps, io_uring / sendmmsg {r:.3}x [{rl:.3}-{rh:.3}]",
        m / 1e3,
        ml / 1e3,
        mh / 1e3,
        u / 1e3,
        ul / 1e3,
        uh / 1e3
    );
    Ok(())
}
