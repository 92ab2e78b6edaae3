//! Access control on the forwarding path: 64-byte UDP forwarded through a router namespace with
//! N = 10, 100, 1k and 10k policy lines enforced by our tc BPF program, by nftables with sets
//! (`meshgate_acl::nft`), by nftables with one rule per policy line, and by nothing; plus one TCP
//! stream (iperf3) with and without our hooks.
//!
//! Run (as root): `cargo bench -p meshgate-benches --bench acl_forwarding`, or with `-- --quick` /
//! `MESHGATE_BENCH_QUICK=1` for a smoke run (1 round of 1 s windows, 2 s TCP).
//!
//! Topology (namespace lab): snd 10.71.1.2 -- 10.71.1.1 rtr 10.71.2.1 -- 10.71.2.2 rcv, veth
//! pairs, IPv4 forwarding in rtr. A thread in snd sends 18-byte UDP payloads (64-byte frames) to
//! rcv:5000 with `sendmmsg` (64 per call) over 16 sockets (16 flows), for warm-up + the measured
//! time; delivered packets are rcv's veth `rx_packets` (read in rcv's namespace) over the
//! measured window. rcv has a socket bound to the port (never read), so no ICMP comes back.
//!
//! Policies: N `FilterRule`s; N - 1 fillers with their own /32 source, /32 destination and port
//! range, then the one rule allowing the test flow, last (the worst case for a linear chain).
//! Every filter is checked to drop a flow the policy does not allow (port 4999) before it is
//! measured. Rounds interleave every variant and N, so drift hits them alike; pps are medians
//! of the rounds, ratios medians of per-round ratios, plus the added cost per packet against no
//! filter. Runs at nice -20. Nothing here asserts a time.

use std::error::Error;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshgate_acl::Policy;
use meshgate_benches::acl_rules::{self, LINEAR_TABLE, TestFlow};
use meshgate_benches::blaster::{self, BlastConfig, PAYLOAD_64B_FRAME};
use meshgate_benches::netdev;
use meshgate_ebpf::maps::FLAG_NO_VERDICT_CACHE;
use meshgate_ebpf::{Enforcer, LinkKind, Stats};
use meshgate_netns_lab::{Host, Lab};

type Res<T> = Result<T, Box<dyn Error>>;

const RULE_COUNTS: [usize; 4] = [10, 100, 1000, 10_000];
const FLOWS: usize = 16;
const UDP_PORT: u16 = 5000;
/// Outside the allowed 5000-5009: what every filter must drop.
const DENIED_PORT: u16 = 4999;
const TCP_PORT: u16 = 5201;
const TCP_RULES: usize = 1000;
const SND: Ipv4Addr = Ipv4Addr::new(10, 71, 1, 2);
const RTR_SND: Ipv4Addr = Ipv4Addr::new(10, 71, 1, 1);
const RTR_RCV: Ipv4Addr = Ipv4Addr::new(10, 71, 2, 1);
const RCV: Ipv4Addr = Ipv4Addr::new(10, 71, 2, 2);
/// The blaster keeps sending this long after the window closes, so the second count is read
/// while traffic still flows.
const TAIL: Duration = Duration::from_millis(200);
const CHECK_TIME: Duration = Duration::from_millis(100);

const GOAL_FLAT: f64 = 0.9;
const GOAL_VS_NONE: f64 = 0.85;
const GOAL_VS_SETS: f64 = 1.1;
const GOAL_TCP: f64 = 0.9;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Variant {
    None,
    NftSets,
    NftLinear,
    Ours,
    OursNoCache,
}

const VARIANTS: [Variant; 5] = [
    Variant::None,
    Variant::NftSets,
    Variant::NftLinear,
    Variant::Ours,
    Variant::OursNoCache,
];

impl Variant {
    fn label(self) -> &'static str {
        match self {
            Variant::None => "no filter",
            Variant::NftSets => "nft sets",
            Variant::NftLinear => "nft linear",
            Variant::Ours => "ours (cache)",
            Variant::OursNoCache => "ours (classifier)",
        }
    }
}

struct Params {
    rounds: usize,
    warmup: Duration,
    window: Duration,
    tcp_rounds: usize,
    tcp_secs: u32,
}

struct Topo {
    // Dropped last: deletes the namespaces (links, nft tables, tc filters go with them).
    _lab: Lab,
    snd: Host,
    rtr: Host,
    rcv: Host,
    /// rtr's veth facing snd: where the filters look at packets coming in.
    rtr_in: String,
    /// rcv's veth: where delivered packets are counted.
    rcv_if: String,
    /// Bound on rcv to the test port and never read: arrivals are dropped at its full buffer
    /// instead of drawing ICMP port-unreachables.
    _sink: std::net::UdpSocket,
    pins: PinRoot,
}

/// Our pin directory under /sys/fs/bpf, removed on exit and on panic.
struct PinRoot(PathBuf);

impl Drop for PinRoot {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One N: the rules, their policy and what each nftables variant loads.
struct RuleSet {
    n: usize,
    policy: Policy,
    nft_sets: String,
    nft_linear: String,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    if !is_root() {
        eprintln!(
            "acl_forwarding needs root (network namespaces, nftables, tc BPF, bpffs pins): \
             run it as root. Nothing measured."
        );
        std::process::exit(1);
    }
    let quick = args.iter().any(|a| a == "--quick")
        || std::env::var_os("MESHGATE_BENCH_QUICK").is_some_and(|v| v != "0");
    let params = if quick {
        Params {
            rounds: 1,
            warmup: Duration::from_millis(200),
            window: Duration::from_secs(1),
            tcp_rounds: 1,
            tcp_secs: 2,
        }
    } else {
        Params {
            rounds: 5,
            warmup: Duration::from_millis(300),
            window: Duration::from_secs(2),
            tcp_rounds: 3,
            tcp_secs: 5,
        }
    };
    if let Err(e) = run(&params) {
        eprintln!("acl_forwarding failed: {e}");
        std::process::exit(1);
    }
}

fn is_root() -> bool {
    // Effective uid, the second field of "Uid:" (no libc call, no unsafe).
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|l| l.split_whitespace().nth(1).map(|u| u == "0"))
            .unwrap_or(false)
    })
}

fn run(p: &Params) -> Res<()> {
    let started = Instant::now();
    // Other work on the machine competes for the 2 CPUs with the generator and the forwarding
    // (softirq runs in the sender's context on veth): run ahead of it. Threads inherit the nice
    // value of the thread that creates them, so this covers every thread and child to come.
    match renice_self() {
        Ok(()) => println!("priority: nice -20"),
        Err(e) => println!("priority: unchanged ({e})"),
    }
    // The generator and the forwarding share the CPUs with whatever else runs: say how busy.
    println!("load average at start: {}", loadavg());
    let topo = topology()?;
    println!(
        "topology: snd {SND} -> rtr ({}) -> rcv {RCV} ({}), pins in {}",
        topo.rtr_in,
        topo.rcv_if,
        topo.pins.0.display()
    );

    let flow = TestFlow {
        src: SND,
        dst: RCV,
        proto: 17,
        port: UDP_PORT,
    };
    let t = Instant::now();
    let sets = RULE_COUNTS
        .iter()
        .map(|&n| {
            let rules = acl_rules::rules(n, flow);
            let policy = Policy::from_filter_rules(&rules)?;
            Ok(RuleSet {
                n,
                nft_sets: meshgate_acl::nft::compile(&policy, &topo.rtr_in)?,
                nft_linear: acl_rules::nft_linear(&rules, &topo.rtr_in)?,
                policy,
            })
        })
        .collect::<Res<Vec<_>>>()?;
    println!("policies built in {:.2?}", t.elapsed());

    // pps[variant][n index], one sample per round.
    let mut pps = vec![vec![Vec::new(); RULE_COUNTS.len()]; VARIANTS.len()];
    for round in 1..=p.rounds {
        for (ni, set) in sets.iter().enumerate() {
            for (v, pps_n) in measure_all(&topo, p, set)? {
                println!(
                    "round {round}/{} N={:<6} {:<18} delivered {:>9} pps (sent {:>9} pps)",
                    p.rounds,
                    set.n,
                    v.label(),
                    kpps(pps_n.delivered),
                    kpps(pps_n.sent)
                );
                if let Some(i) = VARIANTS.iter().position(|x| *x == v) {
                    pps[i][ni].push(pps_n.delivered);
                }
            }
        }
    }

    let tcp = tcp_bench(&topo, p)?;
    report(p, &pps, tcp);
    println!(
        "whole run: {:.0?}; load average at end: {}",
        started.elapsed(),
        loadavg()
    );
    Ok(())
}

fn topology() -> Res<Topo> {
    let lab = Lab::new("acl")?;
    let snd = lab.add_host("snd")?;
    let rtr = lab.add_host("rtr")?;
    let rcv = lab.add_host("rcv")?;
    let a = lab.connect_with(&rtr, &snd, &["10.71.1.0/24".parse()?])?;
    let b = lab.connect_with(&rtr, &rcv, &["10.71.2.0/24".parse()?])?;
    rtr.set_sysctl("net.ipv4.ip_forward", "1")?;
    snd.add_route("10.71.2.0/24".parse()?, RTR_SND.into())?;
    rcv.add_route("10.71.1.0/24".parse()?, RTR_RCV.into())?;
    let rtr_in = rtr.iface_on(&a).ok_or("rtr has no link to snd")?.name;
    let rcv_if = rcv.iface_on(&b).ok_or("rcv has no link to rtr")?.name;
    if snd.addr_on(&a) != Some(SND.into()) || rcv.addr_on(&b) != Some(RCV.into()) {
        return Err("the lab did not give snd and rcv the planned addresses".into());
    }
    if !snd.ping(RCV.into(), 3) {
        return Err("snd cannot ping rcv through rtr".into());
    }
    let sink = rcv.udp_bind((RCV, UDP_PORT).into())?;
    let pins = PinRoot(PathBuf::from(format!(
        "/sys/fs/bpf/meshgate-bench-{}",
        std::process::id()
    )));
    Ok(Topo {
        _lab: lab,
        snd,
        rtr,
        rcv,
        rtr_in,
        rcv_if,
        _sink: sink,
        pins,
    })
}

/// Every variant at one N, in a fixed order; each filter is installed, checked to drop the
/// denied port, measured and removed.
fn measure_all(t: &Topo, p: &Params, set: &RuleSet) -> Res<Vec<(Variant, Rate)>> {
    let mut out = Vec::with_capacity(VARIANTS.len());
    out.push((Variant::None, measure_udp(t, p, UDP_PORT)?));

    t.rtr.run(|| meshgate_acl::apply(&set.nft_sets))??;
    let r = check_and_measure(t, p, Variant::NftSets, set.n);
    t.rtr.run(meshgate_acl::remove)??;
    out.push((Variant::NftSets, r?));

    nft_stdin(&t.rtr, &set.nft_linear)?;
    let r = check_and_measure(t, p, Variant::NftLinear, set.n);
    t.rtr
        .exec_ok(["nft", "delete", "table", "inet", LINEAR_TABLE])?;
    out.push((Variant::NftLinear, r?));

    let mut enforcer = attach(t, &set.policy)?;
    let r = (|| -> Res<(Rate, Rate)> {
        let s0 = t.rtr.run(|| enforcer.stats())??;
        let cached = check_and_measure(t, p, Variant::Ours, set.n)?;
        let s1 = t.rtr.run(|| enforcer.stats())??;
        t.rtr.run(|| enforcer.set_flags(FLAG_NO_VERDICT_CACHE))??;
        let classified = check_and_measure(t, p, Variant::OursNoCache, set.n)?;
        let s2 = t.rtr.run(|| enforcer.stats())??;
        // Which path passed the packets: the verdict cache, or the rule lookups (the flag).
        let by = |a: &Stats, b: &Stats| {
            (
                b.pass_rule.saturating_sub(a.pass_rule),
                b.pass_flow.saturating_sub(a.pass_flow),
            )
        };
        let ((rule_c, flow_c), (rule_n, flow_n)) = (by(&s0, &s1), by(&s1, &s2));
        println!(
            "  BPF passes, N={}: cache run {rule_c} by rule / {flow_c} by cache; \
             classifier run {rule_n} by rule / {flow_n} by cache",
            set.n
        );
        if flow_c <= rule_c || rule_n <= flow_n {
            return Err("the verdict-cache flag did not switch the BPF program's path".into());
        }
        Ok((cached, classified))
    })();
    detach(t, enforcer)?;
    let (cached, classified) = r?;
    out.push((Variant::Ours, cached));
    out.push((Variant::OursNoCache, classified));
    Ok(out)
}

fn attach(t: &Topo, policy: &Policy) -> Res<Enforcer> {
    Ok(t.rtr.run(|| -> Result<Enforcer, meshgate_ebpf::Error> {
        let mut e = Enforcer::attach(&t.rtr_in, LinkKind::Ethernet, &t.pins.0)?;
        e.set_policy(policy)?;
        Ok(e)
    })??)
}

fn detach(t: &Topo, enforcer: Enforcer) -> Res<()> {
    drop(enforcer);
    t.rtr.run(|| Enforcer::detach(&t.rtr_in, &t.pins.0))??;
    // The empty clsact qdisc would stay on the path of the next variants.
    t.rtr
        .exec_ok(["tc", "qdisc", "del", "dev", &t.rtr_in, "clsact"])?;
    Ok(())
}

/// Fails unless the filter now in place drops a flow the policy denies, then measures.
fn check_and_measure(t: &Topo, p: &Params, v: Variant, n: usize) -> Res<Rate> {
    let (sent, delivered) = burst(t, DENIED_PORT, CHECK_TIME)?;
    if sent == 0 || delivered * 100 > sent {
        return Err(format!(
            "{} with N={n} let {delivered} of {sent} denied packets through: not filtering",
            v.label()
        )
        .into());
    }
    let pps = measure_udp(t, p, UDP_PORT)?;
    if pps.delivered <= 0.0 {
        return Err(format!(
            "{} with N={n} delivered nothing of the allowed flow",
            v.label()
        )
        .into());
    }
    Ok(pps)
}

fn rx(t: &Topo) -> Res<(u64, Instant)> {
    let iface = &t.rcv_if;
    Ok(t.rcv
        .run(|| netdev::read_rx_packets(iface).map(|c| (c, Instant::now())))??)
}

fn blast_cfg(port: u16, duration: Duration) -> BlastConfig {
    BlastConfig {
        dst: SocketAddrV4::new(RCV, port),
        flows: FLOWS,
        payload: PAYLOAD_64B_FRAME,
        duration,
    }
}

/// Sends for `duration` and returns (sent, delivered).
fn burst(t: &Topo, port: u16, duration: Duration) -> Res<(u64, u64)> {
    let (c0, _) = rx(t)?;
    let report = t.snd.run(|| blaster::blast(&blast_cfg(port, duration)))??;
    let (c1, _) = rx(t)?;
    Ok((report.sent, c1.saturating_sub(c0)))
}

/// Packets per second.
#[derive(Clone, Copy, Debug)]
struct Rate {
    /// Counted at rcv over the window.
    delivered: f64,
    /// Accepted by snd's sockets over the whole blast.
    sent: f64,
}

/// Delivered packets per second over the window, the blaster running before and after it.
fn measure_udp(t: &Topo, p: &Params, port: u16) -> Res<Rate> {
    let cfg = blast_cfg(port, p.warmup + p.window + TAIL);
    std::thread::scope(|s| {
        let sender = s.spawn(|| t.snd.run(|| blaster::blast(&cfg)));
        // Timed phases of a benchmark, not synchronisation: the blaster runs on its own clock.
        std::thread::sleep(p.warmup);
        let first = rx(t);
        std::thread::sleep(p.window);
        let second = rx(t);
        let report = sender
            .join()
            .map_err(|_| "the blaster thread panicked")???;
        let ((c0, t0), (c1, t1)) = (first?, second?);
        if report.sent == 0 {
            return Err(format!("the blaster sent nothing ({report:?})").into());
        }
        let delivered =
            c1.saturating_sub(c0) as f64 / t1.duration_since(t0).as_secs_f64().max(1e-3);
        let sent = report.sent as f64 / report.elapsed.as_secs_f64().max(1e-3);
        Ok(Rate { delivered, sent })
    })
}

/// `nft -f -` inside `host`, one transaction.
fn nft_stdin(host: &Host, text: &str) -> Res<()> {
    let mut cmd = host.command("nft");
    cmd.args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        return Err(format!("nft -f -: {}", String::from_utf8_lossy(&out.stderr).trim()).into());
    }
    Ok(())
}

/// Single-stream TCP, iperf3 from snd to rcv, without and with our hooks; Gbit/s per round.
fn tcp_bench(t: &Topo, p: &Params) -> Res<Option<(Vec<f64>, Vec<f64>)>> {
    let have_iperf3 = Command::new("iperf3")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !have_iperf3 {
        println!("TCP: skipped, iperf3 is not installed (scripts/setup.sh installs it)");
        return Ok(None);
    }
    let mut server = t.rcv.command("iperf3");
    server
        .args(["-s", "-B", &RCV.to_string(), "-p", &TCP_PORT.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _server = t.rcv.spawn(server)?;
    let rules = acl_rules::rules(
        TCP_RULES,
        TestFlow {
            src: SND,
            dst: RCV,
            proto: 6,
            port: TCP_PORT,
        },
    );
    let policy = Policy::from_filter_rules(&rules)?;
    let (mut none, mut ours) = (Vec::new(), Vec::new());
    for round in 1..=p.tcp_rounds {
        let g = iperf3(t, p.tcp_secs)?;
        println!(
            "round {round}/{} TCP no filter        {g:>7.2} Gbit/s",
            p.tcp_rounds
        );
        none.push(g);
        let enforcer = attach(t, &policy)?;
        let g = iperf3(t, p.tcp_secs);
        detach(t, enforcer)?;
        let g = g?;
        println!(
            "round {round}/{} TCP ours (cache)     {g:>7.2} Gbit/s",
            p.tcp_rounds
        );
        ours.push(g);
    }
    Ok(Some((none, ours)))
}

fn iperf3(t: &Topo, secs: u32) -> Res<f64> {
    let (rcv, port, secs) = (RCV.to_string(), TCP_PORT.to_string(), secs.to_string());
    let mut last = String::new();
    // The server may not listen yet on the first call: retry a refused connection, boundedly.
    for _ in 0..50 {
        let out = t
            .snd
            .exec(["iperf3", "-c", &rcv, "-p", &port, "-t", &secs, "-J"])?;
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        if let Some(bps) = doc["end"]["sum_received"]["bits_per_second"].as_f64()
            && out.status.success()
        {
            return Ok(bps / 1e9);
        }
        last = doc["error"]
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned());
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("iperf3 client kept failing: {last}").into())
}

fn renice_self() -> Res<()> {
    // The main thread's id is the process id; renice of that id changes this thread only.
    let out = Command::new("renice")
        .args(["-n", "-20", "-p", &std::process::id().to_string()])
        .output()?;
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr)
            .trim()
            .to_owned()
            .into())
    }
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

fn spread(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    if v.is_empty() { (0.0, 0.0) } else { (min, max) }
}

fn kpps(pps: f64) -> String {
    format!("{:.1}k", pps / 1e3)
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

fn met(r: f64, goal: f64) -> &'static str {
    if r >= goal { "MET" } else { "NOT MET" }
}

fn report(p: &Params, pps: &[Vec<Vec<f64>>], tcp: Option<(Vec<f64>, Vec<f64>)>) {
    let idx = |v: Variant| VARIANTS.iter().position(|x| *x == v).unwrap_or(0);
    let med = |v: Variant, ni: usize| median(&pps[idx(v)][ni]);
    // Ratios are medians of per-round ratios: the two figures of a pair were measured seconds
    // apart, so load that drifts over the run (other work on the machine) cancels out.
    let pr = |a: Variant, ai: usize, b: Variant, bi: usize| {
        let (x, y) = (&pps[idx(a)][ai], &pps[idx(b)][bi]);
        median(
            &x.iter()
                .zip(y)
                .map(|(x, y)| ratio(*x, *y))
                .collect::<Vec<_>>(),
        )
    };
    println!();
    println!(
        "64-byte UDP, {FLOWS} flows, delivered pps at rcv: median [min-max] of {} x {:?}",
        p.rounds, p.window
    );
    print!("{:<8}", "rules");
    for v in VARIANTS {
        print!(" | {:>28}", v.label());
    }
    println!();
    for (ni, n) in RULE_COUNTS.iter().enumerate() {
        print!("{n:<8}");
        for v in VARIANTS {
            let s = &pps[idx(v)][ni];
            let (lo, hi) = spread(s);
            print!(
                " | {:>28}",
                format!("{} [{}-{}]", kpps(median(s)), kpps(lo), kpps(hi))
            );
        }
        println!();
    }
    println!();
    println!("ratio to no filter at the same N (median of the per-round ratios)");
    print!("{:<8}", "rules");
    for v in &VARIANTS[1..] {
        print!(" | {:>18}", v.label());
    }
    println!();
    for (ni, n) in RULE_COUNTS.iter().enumerate() {
        print!("{n:<8}");
        for v in &VARIANTS[1..] {
            print!(" | {:>17.3}x", pr(*v, ni, Variant::None, ni));
        }
        println!();
    }

    println!();
    println!("added cost per packet vs no filter, from the medians (us; 1/pps - 1/pps(no filter))");
    print!("{:<8}", "rules");
    for v in &VARIANTS[1..] {
        print!(" | {:>18}", v.label());
    }
    println!();
    for (ni, n) in RULE_COUNTS.iter().enumerate() {
        print!("{n:<8}");
        let base = med(Variant::None, ni);
        for v in &VARIANTS[1..] {
            let m = med(*v, ni);
            let us = if m > 0.0 && base > 0.0 {
                (1.0 / m - 1.0 / base) * 1e6
            } else {
                f64::NAN
            };
            print!(" | {us:>17.2} ");
        }
        println!();
    }

    // RULE_COUNTS is 10, 100, 1k, 10k: indices 0..=3.
    let (i10, i1k, i10k) = (0, 2, 3);
    println!();
    println!("goals (ours = the classifier, verdict cache off; with the cache in brackets):");
    let flat = pr(Variant::OursNoCache, i10k, Variant::OursNoCache, i10);
    let flat_c = pr(Variant::Ours, i10k, Variant::Ours, i10);
    println!(
        "ours at 10k rules / ours at 10 rules      {flat:.3}x [{flat_c:.3}x]  goal >= {GOAL_FLAT}x: {}",
        met(flat, GOAL_FLAT)
    );
    let vs_none = pr(Variant::OursNoCache, i1k, Variant::None, i1k);
    let vs_none_c = pr(Variant::Ours, i1k, Variant::None, i1k);
    println!(
        "ours at 1k rules / no filter              {vs_none:.3}x [{vs_none_c:.3}x]  goal >= {GOAL_VS_NONE}x: {}",
        met(vs_none, GOAL_VS_NONE)
    );
    let vs_sets = pr(Variant::OursNoCache, i10k, Variant::NftSets, i10k);
    let vs_sets_c = pr(Variant::Ours, i10k, Variant::NftSets, i10k);
    println!(
        "ours / nft sets at 10k rules              {vs_sets:.3}x [{vs_sets_c:.3}x]  goal >= {GOAL_VS_SETS}x: {}",
        met(vs_sets, GOAL_VS_SETS)
    );
    match tcp {
        Some((none, ours)) => {
            let per_round: Vec<f64> = ours.iter().zip(&none).map(|(o, n)| ratio(*o, *n)).collect();
            let r = median(&per_round);
            let ((nl, nh), (ol, oh)) = (spread(&none), spread(&ours));
            println!(
                "TCP single stream, ours / no filter       {r:.3}x  (ours {:.2} [{ol:.2}-{oh:.2}] vs \
                 {:.2} [{nl:.2}-{nh:.2}] Gbit/s, {TCP_RULES} rules)  goal >= {GOAL_TCP}x: {}",
                median(&ours),
                median(&none),
                met(r, GOAL_TCP)
            );
        }
        None => println!("TCP single stream: not measured (no iperf3)"),
    }
}
