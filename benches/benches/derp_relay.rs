//! The DERP relay on loopback: packets/s and Mbit/s from client A to client B through an
//! in-process `meshgate-relay`, against a plain TCP forwarder measured in the same run (the
//! ceiling a relay can approach).
//!
//! Run: `cargo bench -p meshgate-benches --bench derp_relay`, or with `-- --quick` /
//! `MESHGATE_BENCH_QUICK=1` for a smoke run of a few seconds.
//!
//! Both sides use the same `meshgate-derp` client for A and B (same batching writer, same
//! frame decoder, same channels), so only the middle differs. The forwarder speaks just enough
//! DERP to complete the client's handshake (setup, not measured), then one task reads A's
//! socket, parses frame lengths, rewrites each SendPacket header into a RecvPacket header
//! (destination key → A's key; the frame keeps its length) and copies the frames to B's socket:
//! no routing table, no queues, no per-packet allocation. The server side (relay or forwarder)
//! runs on its own tokio runtime (2 workers, threads `relay-srv`), the clients on another
//! (2 workers, `bench-cli`). Server CPU is read from `/proc/self/task/*/stat` (clock ticks) of
//! the `relay-srv` threads.
//!
//! Per run: A `send`s N packets as fast as its send queue accepts them (stops at N or the time
//! cap); B counts what arrives (a warm-up packet first proves the path; warm-up packets carry
//! another marker and are not counted). Rate = packets received / (last arrival - first send).
//! Mbit/s counts payload bytes only. Drops = sent - received (the relay drops the oldest queued
//! packet when a receiver's queue is full; the forwarder cannot drop, TCP pushes back).

use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use meshgate_derp::frame::{self, HEADER_LEN, SERVER_MAX_CLIENT_INFO, SERVER_MAX_FRAME, types};
use meshgate_derp::handshake::{self, ServerInfo};
use meshgate_derp::{
    ClientOptions, DerpClient, DerpEvents, DerpTarget, Event, Frame, PROTOCOL_VERSION,
};
use meshgate_relay::{Config, Relay};
use meshgate_tailcfg::{NodePrivate, NodePublic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Runtime;
use tokio::sync::watch;
use tokio::time::{sleep_until, timeout};

const SIZES: [usize; 3] = [64, 512, 1280];
const GOAL: f64 = 0.70;
const SERVER_THREADS: &str = "relay-srv";
/// Bound on connecting, the handshake and the warm-up.
const SETUP_LIMIT: Duration = Duration::from_secs(10);
/// After the sender finished: this long without an arrival ends the receiver.
const QUIET: Duration = Duration::from_millis(300);
/// Payload marker bytes: counted packets and warm-up packets.
const MEASURED: u8 = 0x00;
const WARMUP: u8 = 0xff;
/// Largest batch the forwarder writes at once (as the relay's writer).
const WRITE_BATCH: usize = 64 << 10;
/// Linux `USER_HZ` (clock ticks in `/proc/*/stat`), fixed at 100 on every architecture we run.
const TICKS_PER_SEC: u64 = 100;

struct Params {
    packets: u64,
    cap: Duration,
    rounds: usize,
    /// The relay's per-client queue depth (its default unless overridden, for diagnosis).
    relay_queue: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Forwarder,
    Relay,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Forwarder => "tcp forwarder",
            Side::Relay => "meshgate-relay",
        }
    }
}

/// One run's outcome.
struct Run {
    sent: u64,
    received: u64,
    elapsed: Duration,
    server_cpu: Duration,
    /// Relay only: packets it dropped because B's queue was full.
    queue_full: u64,
}

impl Run {
    fn pps(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn mbps(&self, size: usize) -> f64 {
        self.pps() * size as f64 * 8.0 / 1e6
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var_os("MESHGATE_BENCH_QUICK").is_some_and(|v| v != "0");
    let relay_queue = std::env::var("MESHGATE_BENCH_RELAY_QUEUE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(Config::default().queue_depth);
    let p = if quick {
        Params {
            packets: 50_000,
            cap: Duration::from_secs(1),
            rounds: 3,
            relay_queue,
        }
    } else {
        Params {
            packets: 1_000_000,
            cap: Duration::from_secs(5),
            rounds: 5,
            relay_queue,
        }
    };
    let server = runtime(SERVER_THREADS);
    let clients = runtime("bench-cli");
    println!(
        "derp_relay: A -> B on loopback, {} packets or {} s per run, {} rounds per size, \
         interleaved forwarder/relay, relay queue depth {}, {} CPUs",
        p.packets,
        p.cap.as_secs_f64(),
        p.rounds,
        p.relay_queue,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut all_met = true;
    let mut summary = Vec::new();
    for size in SIZES {
        let mut base = Vec::new();
        let mut relay = Vec::new();
        for round in 0..p.rounds {
            for side in [Side::Forwarder, Side::Relay] {
                let r = match run_once(&server, &clients, side, size, &p) {
                    Ok(r) => r,
                    Err(e) => {
                        eprintln!("derp_relay: {} {size} B round {round}: {e}", side.name());
                        std::process::exit(1);
                    }
                };
                println!(
                    "  {size:>5} B round {round} {:<14} {:>9.0} pkt/s {:>8.1} Mbit/s  sent {} \
                     received {} dropped {} (queue full {})  server CPU {:.2} us/pkt",
                    side.name(),
                    r.pps(),
                    r.mbps(size),
                    r.sent,
                    r.received,
                    r.sent.saturating_sub(r.received),
                    r.queue_full,
                    per_packet_us(&r),
                );
                match side {
                    Side::Forwarder => base.push(r),
                    Side::Relay => relay.push(r),
                }
            }
        }
        let ratio = median(&relay, Run::pps) / median(&base, Run::pps).max(1e-9);
        let met = ratio >= GOAL;
        all_met &= met;
        summary.push(format!(
            "{size:>5} B  forwarder {}  relay {}  ratio {ratio:.2}x  relay drops {} of {} \
             (median per run)  server CPU us/pkt fwd {:.2} relay {:.2}  goal >= {GOAL:.2}x: {}",
            rates(&base, size),
            rates(&relay, size),
            median_u64(&relay, |r| r.sent.saturating_sub(r.received)),
            median_u64(&relay, |r| r.sent),
            median(&base, per_packet_us),
            median(&relay, per_packet_us),
            if met { "met" } else { "not met" },
        ));
    }
    println!();
    println!("results (median [min..max] over rounds; Mbit/s = payload):");
    for line in &summary {
        println!("{line}");
    }
    println!(
        "goal >= {GOAL:.2}x: {}",
        if all_met { "met" } else { "not met" }
    );
}

fn runtime(name: &str) -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Server CPU per packet that entered the server (all of A's packets do; the relay may drop
/// some after reading them, and that work counts too).
fn per_packet_us(r: &Run) -> f64 {
    r.server_cpu.as_secs_f64() * 1e6 / (r.sent.max(1) as f64)
}

fn median(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    let mut v: Vec<f64> = runs.iter().map(f).collect();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

fn median_u64(runs: &[Run], f: impl Fn(&Run) -> u64) -> u64 {
    let mut v: Vec<u64> = runs.iter().map(f).collect();
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// `pkt/s [min..max], Mbit/s [min..max]`.
fn rates(runs: &[Run], size: usize) -> String {
    let spread = |f: &dyn Fn(&Run) -> f64| {
        let v: Vec<f64> = runs.iter().map(f).collect();
        let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = v.iter().copied().fold(0.0, f64::max);
        (lo, hi)
    };
    let (plo, phi) = spread(&Run::pps);
    let (mlo, mhi) = spread(&|r: &Run| r.mbps(size));
    format!(
        "{:.0} pkt/s [{plo:.0}..{phi:.0}] {:.1} Mbit/s [{mlo:.1}..{mhi:.1}]",
        median(runs, Run::pps),
        median(runs, |r| r.mbps(size)),
    )
}

/// One measured transfer: a fresh server (relay or forwarder) and fresh clients A and B.
fn run_once(
    server: &Runtime,
    clients: &Runtime,
    side: Side,
    size: usize,
    p: &Params,
) -> Result<Run, String> {
    let listener = server
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| format!("bind: {e}"))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let key_a = NodePrivate::generate();
    let key_b = NodePrivate::generate();
    let (task, relay) = match side {
        Side::Relay => {
            let config = Config {
                queue_depth: p.relay_queue,
                ..Config::default()
            };
            let relay = Relay::new(config).map_err(|e| format!("relay: {e}"))?;
            let r = relay.clone();
            (
                server.spawn(async move { drop(r.serve(listener).await) }),
                Some(relay),
            )
        }
        Side::Forwarder => {
            let a = key_a.public();
            let task = server.spawn(async move {
                if let Err(e) = forwarder(listener, a).await {
                    eprintln!("forwarder: {e}");
                }
            });
            (task, None)
        }
    };
    let target = DerpTarget::from_url(&format!("http://{addr}"), "", None)
        .map_err(|e| format!("target: {e}"))?;
    let cpu0 = server_cpu();
    let result = clients.block_on(transfer(target, key_a, key_b, size, p));
    let server_cpu = server_cpu().saturating_sub(cpu0);
    task.abort();
    let (sent, received, elapsed) = result?;
    Ok(Run {
        sent,
        received,
        elapsed,
        server_cpu,
        queue_full: relay.map_or(0, |r| r.stats().drop_queue_full),
    })
}

/// Connects B then A, proves the path with warm-up packets, then A sends and B counts.
/// Returns (sent, received, first send → last arrival).
async fn transfer(
    target: DerpTarget,
    key_a: NodePrivate,
    key_b: NodePrivate,
    size: usize,
    p: &Params,
) -> Result<(u64, u64, Duration), String> {
    let opts = ClientOptions::default();
    let (b, mut events) = connect(&target, key_b, &opts).await?;
    let (a, _a_events) = connect(&target, key_a, &opts).await?;
    let dst = b.public_key();
    let warm = Bytes::from(vec![WARMUP; size]);
    let mut proven = false;
    let setup_end = Instant::now() + SETUP_LIMIT;
    while !proven && Instant::now() < setup_end {
        a.send(dst, warm.clone())
            .await
            .map_err(|e| format!("warm-up send: {e}"))?;
        proven = timeout(Duration::from_millis(20), next_packet(&mut events))
            .await
            .is_ok_and(|r| r.is_ok());
    }
    if !proven {
        return Err("no warm-up packet reached B".into());
    }
    let payload = Bytes::from(vec![MEASURED; size]);
    let (done_tx, done_rx) = watch::channel(false);
    let start = Instant::now();
    let hard_end = start + p.cap + SETUP_LIMIT;
    let receiver = tokio::spawn(receive(events, p.packets, done_rx, hard_end));
    let (packets, cap) = (p.packets, p.cap);
    let sender = tokio::spawn(async move {
        let mut sent = 0u64;
        while sent < packets {
            // Checking the clock every packet would cost as much as a small send.
            if sent.is_multiple_of(1024) && start.elapsed() >= cap {
                break;
            }
            if a.send(dst, payload.clone()).await.is_err() {
                break;
            }
            sent += 1;
        }
        let _ = done_tx.send(true);
        (sent, a)
    });
    let (sent, a) = sender.await.map_err(|e| format!("sender: {e}"))?;
    let (received, last) = receiver.await.map_err(|e| format!("receiver: {e}"))?;
    a.close();
    b.close();
    let elapsed = last.map_or(Duration::ZERO, |t| t.duration_since(start));
    Ok((sent, received, elapsed))
}

async fn connect(
    target: &DerpTarget,
    key: NodePrivate,
    opts: &ClientOptions,
) -> Result<(DerpClient, DerpEvents), String> {
    meshgate_derp::connect(target, key, opts)
        .await
        .map_err(|e| format!("connect: {e}"))
}

async fn next_packet(events: &mut DerpEvents) -> Result<(), String> {
    loop {
        match events.recv().await {
            Ok(Event::Packet { .. }) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Counts measured packets until `want`, or until `QUIET` passes without one after the sender
/// is done, or `hard_end`. Returns the count and the last arrival.
async fn receive(
    mut events: DerpEvents,
    want: u64,
    mut done: watch::Receiver<bool>,
    hard_end: Instant,
) -> (u64, Option<Instant>) {
    let mut count = 0u64;
    let mut last = None;
    let mut deadline = tokio::time::Instant::from_std(hard_end);
    let mut sender_done = false;
    while count < want {
        tokio::select! {
            ev = events.recv() => match ev {
                Ok(Event::Packet { data, .. }) => {
                    if data.first() == Some(&MEASURED) {
                        count += 1;
                        let now = Instant::now();
                        last = Some(now);
                        if sender_done {
                            deadline = deadline.min(tokio::time::Instant::from_std(now + QUIET));
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            },
            r = done.changed(), if !sender_done => {
                sender_done = true;
                if r.is_ok() {
                    let from = last.unwrap_or_else(Instant::now).max(Instant::now());
                    deadline = deadline.min(tokio::time::Instant::from_std(from + QUIET));
                }
            }
            _ = sleep_until(deadline) => break,
        }
    }
    (count, last)
}

/// The baseline: accepts two DERP clients, then copies A's SendPackets to B as RecvPackets.
async fn forwarder(listener: TcpListener, a_key: NodePublic) -> Result<(), String> {
    let private = NodePrivate::generate();
    let (s1, k1, buf1) = accept_derp(&listener, &private).await?;
    let (s2, k2, buf2) = accept_derp(&listener, &private).await?;
    let ((mut from, buf), mut to) = if k1 == a_key {
        ((s1, buf1), s2)
    } else if k2 == a_key {
        ((s2, buf2), s1)
    } else {
        return Err("neither client is A".into());
    };
    let mut buf = buf;
    let mut out = BytesMut::with_capacity(WRITE_BATCH + SERVER_MAX_FRAME as usize);
    loop {
        // Move every whole frame in `buf` to `out`, rewriting packet headers in passing.
        while out.len() < WRITE_BATCH {
            let Some(&[frame_type, l0, l1, l2, l3]) = buf.get(..HEADER_LEN) else {
                break;
            };
            let len = u32::from_be_bytes([l0, l1, l2, l3]);
            if len > SERVER_MAX_FRAME {
                return Err(format!("frame of {len} B from A"));
            }
            let len = len as usize;
            let Some(body) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
                break;
            };
            if frame_type == types::SEND_PACKET
                && let Some(data) = body.get(32..)
            {
                frame::encode_packet_header(&mut out, types::RECV_PACKET, &a_key, data.len());
                out.extend_from_slice(data);
            }
            buf.advance(HEADER_LEN + len);
        }
        if !out.is_empty() {
            to.write_all(&out)
                .await
                .map_err(|e| format!("write to B: {e}"))?;
            out.clear();
            continue;
        }
        if buf.capacity() - buf.len() < 16 << 10 {
            buf.reserve(64 << 10);
        }
        match from.read_buf(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(format!("read from A: {e}")),
        }
    }
}

/// The server half of the upgrade and handshake (§2.1–2.2), just enough for our client.
/// Returns the stream, the client's key and any bytes read past ClientInfo.
async fn accept_derp(
    listener: &TcpListener,
    private: &NodePrivate,
) -> Result<(TcpStream, NodePublic, BytesMut), String> {
    let io = |what: &'static str| move |e: io::Error| format!("forwarder {what}: {e}");
    let (mut s, _) = timeout(SETUP_LIMIT, listener.accept())
        .await
        .map_err(|_| "forwarder: no client".to_string())?
        .map_err(io("accept"))?;
    let _ = s.set_nodelay(true);
    let hs = async {
        let mut buf = BytesMut::with_capacity(4096);
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 8 << 10 || s.read_buf(&mut buf).await.map_err(io("read"))? == 0 {
                return Err("forwarder: bad upgrade request".to_string());
            }
        };
        buf.advance(head_end);
        let mut out = BytesMut::from(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\
                 Derp-Version: {PROTOCOL_VERSION}\r\nDerp-Public-Key: {}\r\n\r\n",
                meshgate_derp::http::key_hex(&private.public())
            )
            .as_bytes(),
        );
        frame::encode(
            &Frame::ServerKey {
                key: private.public(),
            },
            &mut out,
        );
        s.write_all(&out).await.map_err(io("write"))?;
        let (key, sealed) = loop {
            match frame::decode(&mut buf, SERVER_MAX_CLIENT_INFO).map_err(|e| e.to_string())? {
                Some(Frame::ClientInfo { key, sealed }) => break (key, sealed),
                Some(_) => return Err("forwarder: expected ClientInfo".to_string()),
                None => {
                    if s.read_buf(&mut buf).await.map_err(io("read"))? == 0 {
                        return Err("forwarder: closed in handshake".to_string());
                    }
                }
            }
        };
        handshake::open_client_info(private, &key, &sealed).map_err(|e| e.to_string())?;
        let info = ServerInfo {
            version: PROTOCOL_VERSION,
            ..ServerInfo::default()
        };
        out.clear();
        frame::encode(
            &handshake::server_info_frame(private, &key, &info),
            &mut out,
        );
        s.write_all(&out).await.map_err(io("write"))?;
        Ok((key, buf))
    };
    let (key, buf) = timeout(SETUP_LIMIT, hs)
        .await
        .map_err(|_| "forwarder: handshake timed out".to_string())??;
    Ok((s, key, buf))
}

/// CPU time (user + system) of the server runtime's threads, from `/proc/self/task/*/stat`.
fn server_cpu() -> Duration {
    let mut ticks = 0u64;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with(SERVER_THREADS) {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        for i in [11, 12] {
            ticks += fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Duration::from_millis(ticks * 1000 / TICKS_PER_SEC)
}
