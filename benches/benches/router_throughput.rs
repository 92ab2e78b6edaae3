//! TCP through meshgate's subnet router and exit node against the same topology configured by
//! hand with `ip`, `wg` and `nft`, on kernel WireGuard in the VM lab (issue 8).
//!
//! Run (root, VM lab prerequisites from scripts/setup.sh, iperf3 installed):
//! `cargo build -p meshgate && cargo bench --profile dev -p meshgate-benches --bench
//! router_throughput` (the daemon is found next to the bench's own target profile, so both
//! must be built in the same one; for release: `cargo build --release -p meshgate && cargo
//! bench -p meshgate-benches --bench router_throughput`). `-- --quick` /
//! `MESHGATE_BENCH_QUICK=1`: 2 rounds of 2 s. `MESHGATE_VMLAB_ECHO=1` shows progress live.
//!
//! On the host it boots one VM and runs itself there. Inside, per case (subnet router, then exit
//! node) it builds the variants side by side in the namespace lab: meshgate's tailnet (a
//! coordinator and two `meshgate daemon --backend kernel`, as in tests/e2e's router_lab and
//! exit_lab, but with the daemon's default reconcile interval and log level, not the fixture's 1 s
//! and debug/trace) and a hand-made twin (two `wg` interfaces with generated keys, MTU 1280 like
//! meshgate's, /32 tunnel addresses, routes in the main table, IPv4 forwarding and an nft
//! masquerade on the router), plus meshgate twice more with its daemons stopped (SIGSTOP) and
//! killed (SIGKILL) once every path carries TCP: the kernel state they made stays, and the gap
//! between these and the running agent is what the agent's own work costs
//! (`MESHGATE_BENCH_FILTER_OFF=1` adds `--filter off`, the tc BPF filter's cost). Then one
//! iperf3 TCP stream laptop -> LAN host / internet host per round, the
//! variants taking turns (which goes first rotating); medians [min-max], the ratio meshgate /
//! manual, and "goal >= 0.95x: met / not met" on the median per-round ratio, and the daemons' CPU
//! time over the rounds. Each variant must first carry a warm-up transfer through WireGuard (its
//! `wg` transfer counters must grow) or the run fails.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use meshgate_benches::manual_wg::{self, Device, KeyPair, Peer, Result};
use meshgate_benches::proc_cpu;
use meshgate_benches::throughput::{Rates, iperf3_received_bps, report_line};
use meshgate_e2e::tailnet_lab::TailnetLab;
use meshgate_netns_lab::{Host, Lab, Proc};
use meshgate_wg::BackendChoice;

const GOAL: f64 = 0.95;
const IPERF3: &str = "/usr/bin/iperf3";
const TIMEOUT: &str = "/usr/bin/timeout";
const PORT: u16 = 5201;
const WG_PORT: u16 = 51820;
const TUNNEL_NET: &str = "100.64.0.0/10";
const LAN: &str = "192.168.77.0/24";
const UPLINK: &str = "198.18.7.0/24";
/// Warm-up transfers until the path carries TCP, at most this long per variant.
const READY_WITHIN: Duration = Duration::from_secs(90);

#[derive(Debug, Clone, Copy)]
struct Params {
    rounds: usize,
    secs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Case {
    Subnet,
    Exit,
}

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::Subnet => "subnet router",
            Case::Exit => "exit node",
        }
    }
}

fn quick() -> bool {
    std::env::args().any(|a| a == "--quick")
        || std::env::var_os("MESHGATE_BENCH_QUICK").is_some_and(|v| v != "0")
}

fn main() {
    if meshgate_vm_lab::in_vm() {
        if let Err(e) = in_vm() {
            println!("BENCH error: {e}");
            std::process::exit(1);
        }
        return;
    }
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let lab = match meshgate_vm_lab::VmLab::new() {
        Ok(lab) => lab,
        Err(e) => {
            eprintln!("router_throughput: cannot start the VM lab: {e}");
            std::process::exit(1);
        }
    };
    println!("daemon: {}", meshgate_e2e::meshgate_bin().display());
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("router_throughput: no current_exe");
        std::process::exit(1);
    };
    let mut scenario = meshgate_vm_lab::Scenario::new(exe)
        .arg("--bench")
        .timeout(Duration::from_secs(1200))
        .memory_mib(2048)
        .cpus(2);
    if quick() {
        scenario = scenario.env("MESHGATE_BENCH_QUICK", "1");
    }
    println!("host load average before: {}", load_average());
    let outcome = match lab.run(&scenario) {
        Ok(outcome) => outcome,
        Err(e) => {
            eprintln!("router_throughput: VM run: {e}");
            std::process::exit(1);
        }
    };
    for line in outcome.console.lines() {
        if let Some(text) = line.strip_prefix("BENCH ") {
            println!("{text}");
        }
    }
    println!("host load average after: {}", load_average());
    if !outcome.passed() {
        eprintln!("{}\n{}", outcome.summary(), outcome.console_tail(120));
        std::process::exit(1);
    }
}

/// Other work on the host slows the VM's CPUs; the ratio is judged per round for that reason.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn say(line: &str) {
    println!("BENCH {line}");
    let _ = std::io::stdout().flush();
}

fn in_vm() -> Result<()> {
    let p = if quick() {
        Params { rounds: 2, secs: 2 }
    } else {
        Params { rounds: 7, secs: 5 }
    };
    if !std::path::Path::new(IPERF3).exists() {
        return Err(format!("{IPERF3} is missing (scripts/setup.sh installs iperf3)").into());
    }
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    say(&format!(
        "TCP through meshgate vs hand-configured WireGuard, kernel {}, {} rounds of {} s, \
         one iperf3 stream, MTU {} both",
        kernel.trim(),
        p.rounds,
        p.secs,
        manual_wg::MTU
    ));
    let mut lines = Vec::new();
    for case in [Case::Subnet, Case::Exit] {
        let started = Instant::now();
        let mut variants = Vec::new();
        for (index, (agent, filter)) in variants_to_run().into_iter().enumerate() {
            let ours = meshgate_topology(case, filter, index)?;
            ours.path.ready(&agent.label(filter))?;
            variants.push((agent, filter, ours));
        }
        let manual = manual_topology(case)?;
        manual.path.ready("manual")?;
        // Only now, with every path proven: what each variant leaves of the agent.
        for (agent, _, ours) in &variants {
            agent.apply(ours)?;
        }
        say(&format!(
            "{}: all variants carry TCP ({:.0?} to set up)",
            case.name(),
            started.elapsed()
        ));
        let mut paths: Vec<(&TcpPath, String)> = variants
            .iter()
            .map(|(agent, filter, ours)| (&ours.path, agent.label(*filter)))
            .collect();
        paths.push((&manual.path, "manual".to_owned()));
        let mut rates = vec![Rates::default(); paths.len()];
        let running = &variants[0].2;
        let (cpu_before, rounds_started) = (running.daemons_cpu(), Instant::now());
        for round in 0..p.rounds {
            // Which variant goes first rotates, so a trend within a round hits all alike.
            for k in 0..paths.len() {
                let v = (round + k) % paths.len();
                let (path, which) = &paths[v];
                let bps = path.iperf3(p.secs)?;
                say(&format!(
                    "round {}/{} {:<14} {which:<24} {:>8.1} Mbit/s",
                    round + 1,
                    p.rounds,
                    case.name(),
                    bps / 1e6
                ));
                rates[v].push(bps);
            }
        }
        let (cpu, wall) = (
            running.daemons_cpu().saturating_sub(cpu_before),
            rounds_started.elapsed(),
        );
        let manual_rates = &rates[rates.len() - 1];
        for ((agent, filter, _), variant_rates) in variants.iter().zip(&rates) {
            let name = match (agent, filter) {
                (AgentState::Running, Filter::Auto) => case.name().to_owned(),
                _ => format!("{} ({})", case.name(), agent.label(*filter)),
            };
            let line = report_line(&name, variant_rates, manual_rates, GOAL);
            say(&line);
            lines.push(line);
        }
        let line = format!(
            "{:<14} meshgate daemons (router + laptop): {} ms CPU over {:.0} s of rounds \
             ({:.1}% of one CPU)",
            case.name(),
            cpu.as_millis(),
            wall.as_secs_f64(),
            100.0 * cpu.as_secs_f64() / wall.as_secs_f64().max(f64::EPSILON)
        );
        say(&line);
        lines.push(line);
        // Labs go here (their namespaces with them) before the next case is built.
        drop(paths);
        drop(manual);
        for (agent, _, ours) in &variants {
            agent.undo(ours);
        }
        drop(variants);
    }
    say("summary:");
    for line in lines {
        say(&line);
    }
    Ok(())
}

/// The laptop's side of one variant: where iperf3 runs and what it reaches.
#[derive(Debug)]
struct TcpPath {
    laptop: Host,
    target: IpAddr,
}

impl TcpPath {
    /// One iperf3 client run; the receiver's rate in bits per second.
    fn iperf3(&self, secs: u32) -> Result<f64> {
        let (secs_arg, limit) = (secs.to_string(), (secs + 30).to_string());
        let (target, port) = (self.target.to_string(), PORT.to_string());
        let out = self.laptop.exec([
            TIMEOUT,
            &limit,
            IPERF3,
            "-c",
            &target,
            "-p",
            &port,
            "-t",
            &secs_arg,
            "--connect-timeout",
            "2000",
            "-J",
        ])?;
        let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        match iperf3_received_bps(&doc) {
            Some(bps) if out.status.success() => Ok(bps),
            _ => Err(format!(
                "iperf3 to {target} failed ({}): {} {}",
                out.status,
                doc["error"].as_str().unwrap_or_default(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
            .into()),
        }
    }

    /// Waits until a short transfer succeeds and shows it went through WireGuard.
    fn ready(&self, which: &str) -> Result<()> {
        let deadline = Instant::now() + READY_WITHIN;
        let mut last = String::new();
        for _ in 0..200 {
            if Instant::now() > deadline {
                break;
            }
            let before = self.wg_tx_bytes()?;
            match self.iperf3(1) {
                Ok(_) => {
                    let sent = self.wg_tx_bytes()?.saturating_sub(before);
                    if sent < 100_000 {
                        return Err(format!(
                            "{which}: iperf3 to {} succeeded but WireGuard sent only {sent} \
                             bytes: not through the tunnel",
                            self.target
                        )
                        .into());
                    }
                    return Ok(());
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Err(format!(
            "{which}: no TCP to {} within {READY_WITHIN:?}: {last}",
            self.target
        )
        .into())
    }

    /// Bytes sent by every WireGuard interface of the laptop (`wg show all transfer`).
    fn wg_tx_bytes(&self) -> Result<u64> {
        let text = self
            .laptop
            .exec_ok([manual_wg::WG, "show", "all", "transfer"])?;
        Ok(text
            .lines()
            .filter_map(|l| l.split_whitespace().nth(3)?.parse::<u64>().ok())
            .sum())
    }
}

/// What is left of the agent while a meshgate variant carries the rounds. Stopping or killing
/// the daemons after setup leaves the kernel state they made (WireGuard, routes, rules, nft
/// table, tc BPF filter) and removes, respectively, the agent's CPU time and then also its
/// sockets (the raw disco sockets see every packet to WireGuard's port): what separates the
/// agent's running cost from the kernel configuration it chose.
#[derive(Debug, Clone, Copy, PartialEq)]
enum AgentState {
    Running,
    /// SIGSTOP after setup (SIGCONT before teardown).
    Stopped,
    /// SIGKILL after setup.
    Killed,
}

impl AgentState {
    fn label(self, filter: Filter) -> String {
        let agent = match self {
            AgentState::Running => "meshgate",
            AgentState::Stopped => "meshgate, agents stopped",
            AgentState::Killed => "meshgate, agents killed",
        };
        match filter {
            Filter::Auto => agent.to_owned(),
            Filter::Off => format!("{agent}, filter off"),
        }
    }

    fn apply(self, ours: &Meshgate) -> Result<()> {
        let signal = match self {
            AgentState::Running => return Ok(()),
            AgentState::Stopped => libc::SIGSTOP,
            AgentState::Killed => libc::SIGKILL,
        };
        for d in &ours.daemons {
            signal_pid(d.id(), signal)?;
        }
        Ok(())
    }

    /// Lets stopped daemons run again, so their teardown is the usual one.
    fn undo(self, ours: &Meshgate) {
        if self == AgentState::Stopped {
            for d in &ours.daemons {
                let _ = signal_pid(d.id(), libc::SIGCONT);
            }
        }
    }
}

fn signal_pid(pid: u32, signal: libc::c_int) -> Result<()> {
    let pid = libc::pid_t::try_from(pid)?;
    // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped) and a valid signal.
    if unsafe { libc::kill(pid, signal) } != 0 {
        return Err(format!("kill({pid}, {signal}): {}", std::io::Error::last_os_error()).into());
    }
    Ok(())
}

/// The meshgate variants of a run: the agent as deployed, then with its daemons stopped and
/// killed after setup; `MESHGATE_BENCH_FILTER_OFF=1` adds `--filter off` (no tc BPF filter).
fn variants_to_run() -> Vec<(AgentState, Filter)> {
    let mut v = vec![
        (AgentState::Running, Filter::Auto),
        (AgentState::Stopped, Filter::Auto),
        (AgentState::Killed, Filter::Auto),
    ];
    if std::env::var_os("MESHGATE_BENCH_FILTER_OFF").is_some_and(|v| v != "0") {
        v.push((AgentState::Running, Filter::Off));
    }
    v
}

/// meshgate's variant. Field order is drop order: processes before the lab's namespaces.
#[derive(Debug)]
struct Meshgate {
    daemons: Vec<Proc>,
    _iperf3: Proc,
    path: TcpPath,
    _net: TailnetLab,
}

impl Meshgate {
    /// CPU time the daemons have used so far (`ip netns exec` execs them, so the pid is
    /// theirs).
    fn daemons_cpu(&self) -> Duration {
        self.daemons
            .iter()
            .filter_map(|d| proc_cpu::cpu_time(d.id()))
            .sum()
    }
}

/// `TailnetLab::start_daemon` with the daemon's own defaults for what the e2e fixture speeds
/// up or makes verbose (`--reconcile-every 1s`, debug/trace logs): the figures are for the
/// agent as deployed. Same socket and state directory, so `net.status`/`net.meshgate` work.
fn start_daemon(net: &TailnetLab, i: usize, extra: &[&str]) -> Result<Proc> {
    let host = &net.agents[i];
    let state = net.state_dir(i);
    std::fs::create_dir_all(&state)?;
    let mut daemon = host.command(meshgate_e2e::meshgate_bin());
    daemon
        .arg("daemon")
        .args(["--login-server", &net.listen, "--auth-key", &net.secret])
        .args(["--backend", "kernel"])
        .args(["--iface", &meshgate_e2e::unique_ifname("b")])
        .args(["--hostname", &format!("n{i}")])
        .arg("--bpf-pin-root")
        .arg(net.bpf.path())
        .arg("--state-dir")
        .arg(&state)
        .arg("--socket")
        .arg(&net.sockets[i])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(state.join("daemon-1.log"))?);
    Ok(host.spawn(daemon)?)
}

fn iperf3_server(host: &Host, bind: IpAddr) -> Result<Proc> {
    let mut server = host.command(IPERF3);
    server
        .args(["-s", "-B", &bind.to_string(), "-p", &PORT.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    Ok(host.spawn(server)?)
}

fn address_in(host: &Host, net: IpNet) -> Result<IpAddr> {
    host.ifaces()
        .iter()
        .flat_map(|i| i.addrs.iter().map(|a| a.addr()))
        .find(|a| net.contains(a))
        .ok_or_else(|| format!("{} has no address in {net}", host.name()).into())
}

/// The e2e fixtures' shapes: n0 is the office router (with the LAN host behind it) or the
/// cloud exit node (with the internet host behind it); n1 the laptop, on the same switch.
/// meshgate's `--filter`: its default, or no packet filter at all (to see what the filter costs).
#[derive(Debug, Clone, Copy, PartialEq)]
enum Filter {
    Auto,
    Off,
}

/// `index` tells apart the namespaces of variants built side by side.
fn meshgate_topology(case: Case, filter: Filter, index: usize) -> Result<Meshgate> {
    let behind: IpNet = match case {
        Case::Subnet => LAN,
        Case::Exit => UPLINK,
    }
    .parse()?;
    let mut server_host: Option<Host> = None;
    let name = match case {
        Case::Subnet => format!("rbs{index}"),
        Case::Exit => format!("rbe{index}"),
    };
    let mut net = TailnetLab::with_agents(&name, BackendChoice::Kernel, |lab, switch| {
        let router = lab.add_host("n0").unwrap();
        switch.attach(&router).unwrap();
        let server = lab.add_host("srv").unwrap();
        lab.connect_with(&router, &server, &[behind]).unwrap();
        let laptop = lab.add_host("n1").unwrap();
        switch.attach(&laptop).unwrap();
        server_host = Some(server);
        vec![router, laptop]
    });
    let server = server_host.ok_or("the server host was not placed")?;
    let target = address_in(&server, behind)?;
    net.serve(&[]);
    let lan = LAN.to_owned();
    let router_args: Vec<&str> = match case {
        Case::Subnet => vec!["--advertise-routes", &lan, "--enable-forwarding"],
        Case::Exit => vec!["--advertise-exit-node", "--enable-forwarding"],
    };
    let laptop_args: &[&str] = match case {
        Case::Subnet => &["--accept-routes"],
        Case::Exit => &[],
    };
    let filter_args: &[&str] = match filter {
        Filter::Auto => &[],
        Filter::Off => &["--filter", "off"],
    };
    let daemons = vec![
        start_daemon(&net, 0, &[&router_args[..], filter_args].concat())?,
        start_daemon(&net, 1, &[laptop_args, filter_args].concat())?,
    ];
    net.wait_joined();
    match case {
        Case::Subnet => {
            net.admin(&["routes", "approve", "n0", LAN]);
        }
        Case::Exit => {
            net.admin(&["routes", "approve", "n0", "0.0.0.0/0"]);
            let (ok, said) = net.meshgate(
                1,
                &["up", "--exit-node", "n0", "--exit-node-allow-lan-access"],
            );
            if !ok {
                return Err(format!("up --exit-node: {said}\n{}", net.logs()).into());
            }
        }
    }
    // What the router's agent hooks into the forwarding path (the tc BPF filter), for the
    // record: the figures include it.
    let filter = net.status(0).map(|s| s["filter"].to_string());
    say(&format!(
        "{}: meshgate router's filter: {}",
        case.name(),
        filter.as_deref().unwrap_or("(no status)")
    ));
    let iperf3 = iperf3_server(&server, target)?;
    let laptop = net.agents[1].clone();
    Ok(Meshgate {
        daemons,
        _iperf3: iperf3,
        path: TcpPath { laptop, target },
        _net: net,
    })
}

/// The hand-configured variant. Field order is drop order.
#[derive(Debug)]
struct Manual {
    _iperf3: Proc,
    path: TcpPath,
    _lab: Lab,
}

fn manual_topology(case: Case) -> Result<Manual> {
    let behind: IpNet = match case {
        Case::Subnet => LAN,
        Case::Exit => UPLINK,
    }
    .parse()?;
    let lab = Lab::new(match case {
        Case::Subnet => "rbms",
        Case::Exit => "rbme",
    })?;
    let switch = lab.add_switch("sw")?;
    let router = lab.add_host("router")?;
    switch.attach(&router)?;
    let server = lab.add_host("srv")?;
    let behind_link = lab.connect_with(&router, &server, &[behind])?;
    let laptop = lab.add_host("laptop")?;
    switch.attach(&laptop)?;
    let target = server
        .addr_on(&behind_link)
        .ok_or("the server has no address")?;
    let router_ip = router.addr_on(&switch).ok_or("router: no address")?;
    let laptop_ip = laptop.addr_on(&switch).ok_or("laptop: no address")?;

    let (router_keys, laptop_keys) = (KeyPair::generate()?, KeyPair::generate()?);
    let (router_tun, laptop_tun): (IpNet, IpNet) =
        ("100.64.0.1/32".parse()?, "100.64.0.2/32".parse()?);
    let key_dir = std::env::temp_dir();
    manual_wg::set_up(
        &router,
        &Device {
            name: "wg0".into(),
            listen_port: WG_PORT,
            address: router_tun,
            peers: vec![Peer {
                public: laptop_keys.public.clone(),
                endpoint: SocketAddr::new(laptop_ip, WG_PORT),
                allowed_ips: vec![laptop_tun],
            }],
            routes: vec![laptop_tun],
        },
        &router_keys,
        &key_dir,
    )?;
    // The subnet router's LAN, or everything through the exit node (the switch's own subnet
    // stays direct, as with meshgate's --exit-node-allow-lan-access).
    let through_router: IpNet = match case {
        Case::Subnet => behind,
        Case::Exit => "0.0.0.0/0".parse()?,
    };
    manual_wg::set_up(
        &laptop,
        &Device {
            name: "wg0".into(),
            listen_port: WG_PORT,
            address: laptop_tun,
            peers: vec![Peer {
                public: router_keys.public.clone(),
                endpoint: SocketAddr::new(router_ip, WG_PORT),
                allowed_ips: vec![router_tun, through_router],
            }],
            routes: vec![router_tun, through_router],
        },
        &laptop_keys,
        &key_dir,
    )?;
    manual_wg::router_masquerade(&router, "wg0", TUNNEL_NET.parse()?)?;
    let iperf3 = iperf3_server(&server, target)?;
    Ok(Manual {
        _iperf3: iperf3,
        path: TcpPath { laptop, target },
        _lab: lab,
    })
}
