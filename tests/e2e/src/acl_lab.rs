//! Access control end to end: three agents under a policy of groups, tags, hosts and CIDRs;
//! real TCP, UDP, ICMP and ICMPv6 probes between their namespaces through the WireGuard
//! interfaces, for the BPF program (`--filter auto`) and for nftables (`--filter nft`), which
//! must both give exactly the policy's verdicts. Then a policy edit cuts a connection it no
//! longer allows, and a SIGKILLed agent leaves enforcement in place and its successor adopts it
//! without dropping a packet of an allowed flow.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use meshgate_netns_lab::Host;
use meshgate_wg::BackendChoice;

use crate::meshgate_bin;
use crate::tailnet_lab::{TailnetLab, ipv4_of};

const OPEN: &str = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
/// How long a probe waits for its answer; a denied probe costs this much.
const PROBE_WAIT: Duration = Duration::from_millis(700);

/// n0 and n1 belong to e2e@example.com (in group:ops); n2 is tagged tag:server. The n0 -> n1
/// rule keeps the two peers of each other when the n1 -> n0 one goes, so that what cuts the
/// connection then is the filter, not a removed WireGuard peer.
fn matrix_policy(n0: IpAddr, n1: IpAddr, with_n1_to_n0: bool) -> String {
    let n1_to_n0 = if with_n1_to_n0 {
        r#"{"action": "accept", "src": ["n1"], "dst": ["n0:*"]},"#
    } else {
        ""
    };
    format!(
        r#"{{
  "groups": {{"group:ops": ["e2e@example.com"]}},
  "tagOwners": {{"tag:server": ["group:ops"]}},
  "hosts": {{"n0": "{n0}/32", "n1": "{n1}/32"}},
  "acls": [
    {{"action": "accept", "src": ["group:ops"], "dst": ["tag:server:80,8000-8010"], "proto": "tcp"}},
    {{"action": "accept", "src": ["tag:server"], "dst": ["{n0}/32:5300"], "proto": "udp"}},
    {{"action": "accept", "src": ["group:ops"], "dst": ["tag:server:22"]}},
    {{"action": "accept", "src": ["n0"], "dst": ["n1:7"], "proto": "tcp"}},
    {n1_to_n0}
  ],
}}
"#
    )
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Tcp,
    Udp,
    Ping,
}

#[derive(Clone, Copy, Debug)]
struct Probe {
    from: usize,
    to: usize,
    v6: bool,
    kind: Kind,
    port: u16,
    allowed: bool,
}

const fn probe(from: usize, to: usize, v6: bool, kind: Kind, port: u16, allowed: bool) -> Probe {
    Probe {
        from,
        to,
        v6,
        kind,
        port,
        allowed,
    }
}

/// The policy's verdicts (Tailscale semantics: echo requests follow any rule between the pair
/// whatever its ports and protocols; replies of allowed flows come back).
const MATRIX: &[Probe] = &[
    // group:ops -> tag:server, tcp 80 and 8000-8010, both families; 22 by the default protocols.
    probe(0, 2, false, Kind::Tcp, 80, true),
    probe(0, 2, false, Kind::Tcp, 8000, true),
    probe(1, 2, false, Kind::Tcp, 8010, true),
    probe(0, 2, false, Kind::Tcp, 8011, false),
    probe(0, 2, true, Kind::Tcp, 80, true),
    probe(0, 2, true, Kind::Tcp, 8011, false),
    probe(0, 2, false, Kind::Tcp, 22, true),
    probe(0, 2, true, Kind::Tcp, 22, true),
    probe(0, 2, false, Kind::Udp, 22, true),
    probe(0, 2, false, Kind::Udp, 80, false),
    probe(0, 2, false, Kind::Ping, 0, true),
    probe(0, 2, true, Kind::Ping, 0, true),
    // tag:server -> n0's CIDR, udp 5300 only, IPv4 only; the reply passes as return traffic.
    probe(2, 0, false, Kind::Udp, 5300, true),
    probe(2, 0, false, Kind::Udp, 5301, false),
    probe(2, 0, false, Kind::Tcp, 5300, false),
    probe(2, 0, true, Kind::Udp, 5300, false),
    probe(2, 0, false, Kind::Ping, 0, true),
    probe(2, 0, true, Kind::Ping, 0, false),
    // The other way of allowed flows is a new flow, and dropped.
    probe(2, 0, false, Kind::Tcp, 80, false),
    probe(0, 2, false, Kind::Udp, 5300, false),
    // n1 -> n0 anything (hosts), IPv4; n0 -> n1 tcp 7 only (and so echo); nothing from
    // tag:server to n1.
    probe(1, 0, false, Kind::Tcp, 9999, true),
    probe(1, 0, false, Kind::Ping, 0, true),
    probe(1, 0, true, Kind::Ping, 0, false),
    probe(0, 1, false, Kind::Tcp, 9999, false),
    probe(0, 1, false, Kind::Ping, 0, true),
    probe(2, 1, false, Kind::Ping, 0, false),
];

/// TCP echo listeners and UDP echo sockets on every port the matrix probes, in every agent.
struct Services {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Services {
    fn start(agents: &[Host]) -> Services {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for host in agents {
            // Not 53: MagicDNS listens there on 100.100.100.100.
            for port in [22u16, 5300, 5301, 80, 8000, 8010, 8011, 9999] {
                // [::] takes IPv4 too (bindv6only is 0).
                let (tcp, udp) = host
                    .run(move || {
                        let any = SocketAddr::from(([0u16; 8], port));
                        (TcpListener::bind(any), UdpSocket::bind(any))
                    })
                    .expect("enter the agent's namespace");
                let (tcp, udp) = (tcp.expect("tcp listener"), udp.expect("udp socket"));
                threads.push(tcp_echo(tcp, stop.clone()));
                threads.push(udp_echo(udp, stop.clone()));
            }
        }
        Services { stop, threads }
    }
}

impl Drop for Services {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn tcp_echo(listener: TcpListener, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    let stop = stop.clone();
                    std::thread::spawn(move || {
                        let _ = conn.set_read_timeout(Some(Duration::from_millis(100)));
                        let mut buf = [0u8; 64];
                        while !stop.load(Ordering::Relaxed) {
                            match conn.read(&mut buf) {
                                Ok(0) => return,
                                Ok(n) => {
                                    if conn.write_all(&buf[..n]).is_err() {
                                        return;
                                    }
                                }
                                Err(e) if is_timeout(&e) => {}
                                Err(_) => return,
                            }
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    })
}

fn udp_echo(socket: UdpSocket, stop: Arc<AtomicBool>) -> JoinHandle<()> {
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 64];
        while !stop.load(Ordering::Relaxed) {
            if let Ok((n, from)) = socket.recv_from(&mut buf) {
                let _ = socket.send_to(&buf[..n], from);
            }
        }
    })
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Tailnet addresses of each agent: (IPv4, IPv6).
struct Addresses(Vec<(IpAddr, IpAddr)>);

impl Addresses {
    fn of(&self, node: usize, v6: bool) -> IpAddr {
        let (v4, v6addr) = self.0[node];
        if v6 { v6addr } else { v4 }
    }
}

/// Whether the probe got its answer back.
fn run_probe(agents: &[Host], addrs: &Addresses, p: &Probe) -> bool {
    let target = addrs.of(p.to, p.v6);
    let host = &agents[p.from];
    match p.kind {
        Kind::Ping => host.ping(target, 1),
        Kind::Tcp => host
            .run(move || tcp_round_trip(SocketAddr::new(target, p.port)))
            .unwrap_or(false),
        Kind::Udp => host
            .run(move || udp_round_trip(SocketAddr::new(target, p.port)))
            .unwrap_or(false),
    }
}

fn tcp_round_trip(to: SocketAddr) -> bool {
    let Ok(mut conn) = TcpStream::connect_timeout(&to, PROBE_WAIT) else {
        return false;
    };
    echoes(&mut conn)
}

fn echoes(conn: &mut TcpStream) -> bool {
    let _ = conn.set_read_timeout(Some(PROBE_WAIT));
    let mut buf = [0u8; 8];
    conn.write_all(b"mesh").is_ok()
        && conn.read_exact(&mut buf[..4]).is_ok()
        && &buf[..4] == b"mesh"
}

fn udp_round_trip(to: SocketAddr) -> bool {
    let local: SocketAddr = if to.is_ipv6() {
        "[::]:0".parse().unwrap()
    } else {
        "0.0.0.0:0".parse().unwrap()
    };
    let Ok(socket) = UdpSocket::bind(local) else {
        return false;
    };
    let _ = socket.set_read_timeout(Some(PROBE_WAIT));
    let mut buf = [0u8; 16];
    socket.send_to(b"mesh", to).is_ok()
        && socket
            .recv_from(&mut buf)
            .is_ok_and(|(n, from)| from == to && &buf[..n] == b"mesh")
}

/// Probes that disagree with their expected verdict.
fn mismatches(agents: &[Host], addrs: &Addresses, probes: &[Probe]) -> Vec<String> {
    probes
        .iter()
        .filter_map(|p| {
            let got = run_probe(agents, addrs, p);
            (got != p.allowed).then(|| {
                format!(
                    "n{} -> n{} {:?}{} {}: got {}, policy says {}",
                    p.from,
                    p.to,
                    p.kind,
                    if p.v6 { " v6" } else { "" },
                    p.port,
                    verdict(got),
                    verdict(p.allowed)
                )
            })
        })
        .collect()
}

fn verdict(passed: bool) -> &'static str {
    if passed { "passed" } else { "dropped" }
}

/// Waits until every probe gives the policy's verdict (the policy takes a moment to arrive),
/// then runs the whole matrix once more and requires it to agree throughout.
fn assert_matrix(net: &TailnetLab, addrs: &Addresses, probes: &[Probe], what: &str) {
    let deadline = Instant::now() + Duration::from_secs(40);
    loop {
        let wrong = mismatches(&net.agents, addrs, probes);
        if wrong.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the filter never gave the policy's verdicts:\n{}\n{}",
            wrong.join("\n"),
            net.logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let wrong = mismatches(&net.agents, addrs, probes);
    assert!(
        wrong.is_empty(),
        "{what}: verdicts changed on a second run:\n{}",
        wrong.join("\n")
    );
}

fn hangup(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -HUP {pid}");
}

fn kill9(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -KILL {pid}");
}

/// A host firewall of the admin's own in n0: a default-drop forward chain and an input chain
/// in another table, which ours must never touch.
const HOST_FIREWALL: &str = "table inet hostfw {
  chain forward { type filter hook forward priority 0; policy drop; }
  chain input { type filter hook input priority 10; policy accept; counter; }
}
";

fn host_firewall(host: &Host) -> String {
    let out = host
        .exec_ok(["nft", "list", "table", "inet", "hostfw"])
        .expect("the host firewall table is there");
    // The counter moves with traffic; the rules must not.
    out.lines()
        .filter(|l| !l.contains("counter"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The matrix, a policy edit, and a SIGKILL, with `--filter <mode>`; `enforcement` is what
/// status must report (`bpf` or `nftables`).
pub fn policy_matrix(backend: BackendChoice, mode: &str, enforcement: &str) {
    let mut net = TailnetLab::new("acl", backend, 3);
    let tagged = net
        .coordinator
        .exec_ok([
            meshgate_bin().as_os_str(),
            "coordinator".as_ref(),
            "authkey".as_ref(),
            "create".as_ref(),
            "--db".as_ref(),
            net.db.as_os_str(),
            "--user".as_ref(),
            "e2e@example.com".as_ref(),
            "--tags".as_ref(),
            "tag:server".as_ref(),
        ])
        .unwrap()
        .trim()
        .to_owned();
    let policy = net.dir.0.join("policy.hujson");
    std::fs::write(&policy, OPEN).unwrap();
    net.serve(&["--policy", policy.to_str().unwrap()]);

    let hostfw = net.dir.0.join("hostfw.nft");
    std::fs::write(&hostfw, HOST_FIREWALL).unwrap();
    net.agents[0]
        .exec_ok(["nft".as_ref(), "-f".as_ref(), hostfw.as_os_str()])
        .unwrap();
    let firewall_before = host_firewall(&net.agents[0]);

    let listen = net.listen.clone();
    let filter = ["--filter", mode];
    let mut daemons = vec![
        net.start_daemon(0, 1, true, &filter),
        net.start_daemon(1, 1, true, &filter),
    ];
    let tagged_args = [
        "--login-server",
        &listen,
        "--auth-key",
        &tagged,
        "--filter",
        mode,
    ];
    daemons.push(net.start_daemon(2, 1, false, &tagged_args));
    let v4 = net.wait_joined();
    let addrs = Addresses(
        (0..3)
            .map(|i| {
                let status = net.status(i).unwrap();
                let v6 = status["self"]["addresses"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|a| a.as_str()?.parse::<IpAddr>().ok())
                    .find(IpAddr::is_ipv6)
                    .expect("an IPv6 tailnet address");
                (v4[i], v6)
            })
            .collect(),
    );
    assert!(ipv4_of(&net.status(2).unwrap()["self"]["addresses"]).is_some());
    let _services = Services::start(&net.agents);

    std::fs::write(&policy, matrix_policy(v4[0], v4[1], true)).unwrap();
    hangup(net.server_pid());
    assert_matrix(&net, &addrs, MATRIX, mode);
    for i in 0..3 {
        let status = net.status(i).unwrap();
        assert_eq!(
            status["filter"]["enforcement"], enforcement,
            "n{i}: {status:#}"
        );
        let counted = |key: &str| status["filter"][key].as_u64().unwrap_or(0);
        assert!(
            counted("passed") > 0 && counted("dropped") > 0,
            "n{i}: status does not count what the filter did: {status:#}"
        );
    }
    assert_eq!(
        host_firewall(&net.agents[0]),
        firewall_before,
        "our table changed the admin's"
    );

    // An open connection n1 -> n0, then a policy without the rule that allowed it: the
    // connection is cut at once, not only new ones.
    let mut conn = net.agents[1]
        .run(|| TcpStream::connect_timeout(&SocketAddr::new(v4[0], 9999), PROBE_WAIT))
        .unwrap()
        .expect("n1 -> n0 connects while allowed");
    assert!(echoes(&mut conn), "n1 -> n0 echo while allowed");
    std::fs::write(&policy, matrix_policy(v4[0], v4[1], false)).unwrap();
    hangup(net.server_pid());
    let revoked = [
        probe(1, 0, false, Kind::Tcp, 9999, false),
        probe(1, 0, false, Kind::Ping, 0, false),
        probe(2, 0, false, Kind::Udp, 5300, true),
    ];
    assert_matrix(&net, &addrs, &revoked, "after the edit");
    assert!(
        !echoes(&mut conn),
        "{mode}: the connection the new policy no longer allows still flows"
    );
    drop(conn);

    // SIGKILL n0's agent: denied stays denied, allowed keeps flowing, and the next agent
    // takes over without a single lost round trip of an allowed flow.
    kill9(daemons[0].id());
    assert_matrix(&net, &addrs, &revoked, "with n0's agent dead");
    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (stop, n2, to) = (
            stop.clone(),
            net.agents[2].clone(),
            SocketAddr::new(v4[0], 5300),
        );
        std::thread::spawn(move || {
            let (mut sent, mut lost) = (0u32, 0u32);
            let deadline = Instant::now() + Duration::from_secs(60);
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                sent += 1;
                if !n2.run(move || udp_round_trip(to)).unwrap_or(false) {
                    lost += 1;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (sent, lost)
        })
    };
    daemons[0] = net.start_daemon(0, 2, true, &filter);
    net.wait_status(0, "the restarted agent enforces the policy again", |s| {
        s.as_ref().is_some_and(|s| {
            s["filter"]["enforcement"] == enforcement && s["filter"]["entries"].is_u64()
        })
    });
    std::thread::sleep(Duration::from_secs(2));
    stop.store(true, Ordering::Relaxed);
    let (sent, lost) = prober.join().unwrap();
    assert!(sent > 20, "only {sent} probes");
    assert_eq!(
        lost,
        0,
        "{mode}: {lost} of {sent} round trips of an allowed flow lost across the restart\n{}",
        net.logs()
    );
    assert_matrix(&net, &addrs, &revoked, "after the restart");
    drop(daemons);
}
