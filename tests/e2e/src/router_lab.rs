//! The subnet router end to end: an office LAN host with no agent behind a meshgate router,
//! a laptop behind an endpoint-dependent NAT elsewhere. The laptop reaches the LAN host's TCP
//! service by its LAN address through the router, which forwards, masquerades and enforces the
//! tailnet policy (443 allowed, 22 not); `meshgate down` then leaves the router's routing
//! tables, rules, nftables and sysctls as they were before `up`.

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use meshgate_netns_lab::{Host, NatKind};
use meshgate_wg::BackendChoice;

use crate::tailnet_lab::TailnetLab;

const LAN: &str = "192.168.77.0/24";
const PROBE_WAIT: Duration = Duration::from_millis(700);

fn policy(lan_host: IpAddr) -> String {
    format!(
        r#"{{
  "hosts": {{"printer": "{lan_host}/32"}},
  "acls": [
    {{"action": "accept", "src": ["*"], "dst": ["printer:443"]}},
    // The nodes themselves may ping each other (and so see each other).
    {{"action": "accept", "src": ["*"], "dst": ["*:*"], "proto": "icmp"}},
  ],
}}
"#
    )
}

/// A TCP echo service that remembers who connected.
pub(crate) struct Service {
    stop: Arc<AtomicBool>,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    thread: Option<JoinHandle<()>>,
}

impl Service {
    pub(crate) fn start(host: &Host, port: u16) -> Service {
        let listener = host
            .run(move || TcpListener::bind(SocketAddr::from(([0, 0, 0, 0], port))))
            .unwrap()
            .expect("listen");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let peers = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, peers) = (stop.clone(), peers.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let Ok((mut conn, from)) = listener.accept() else {
                        std::thread::sleep(Duration::from_millis(20));
                        continue;
                    };
                    peers.lock().unwrap().push(from);
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(PROBE_WAIT));
                    let mut buf = [0u8; 16];
                    if let Ok(n) = conn.read(&mut buf) {
                        let _ = conn.write_all(&buf[..n]);
                    }
                }
            })
        };
        Service {
            stop,
            peers,
            thread: Some(thread),
        }
    }

    pub(crate) fn last_peer(&self) -> Option<SocketAddr> {
        self.peers.lock().unwrap().last().copied()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub(crate) fn round_trip(host: &Host, to: SocketAddr) -> bool {
    host.run(move || {
        let Ok(mut conn) = TcpStream::connect_timeout(&to, PROBE_WAIT) else {
            return false;
        };
        let _ = conn.set_read_timeout(Some(PROBE_WAIT));
        let mut buf = [0u8; 4];
        conn.write_all(b"mesh").is_ok() && conn.read_exact(&mut buf).is_ok() && &buf == b"mesh"
    })
    .unwrap_or(false)
}

/// What `down` must put back: rules, routes we own (not the kernel's own), every table of
/// nftables, and the forwarding sysctls.
pub(crate) fn system_state(host: &Host) -> String {
    let mut out = String::new();
    for args in [
        &["ip", "-4", "rule"][..],
        &["ip", "-6", "rule"],
        &["ip", "-4", "route", "show", "table", "all"],
        &["ip", "-6", "route", "show", "table", "all"],
        &["nft", "list", "ruleset"],
        &[
            "sysctl",
            "net.ipv4.ip_forward",
            "net.ipv6.conf.all.forwarding",
        ],
    ] {
        let text = host.exec_ok(args).unwrap();
        out.push_str(&format!("$ {}\n", args.join(" ")));
        for line in text.lines() {
            // The interface stays (with its addresses, as `tailscale down` leaves it): the
            // kernel's local and link routes for it are not ours.
            if line.contains("proto kernel") || line.contains("table local") {
                continue;
            }
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `behind_nat`: the laptop sits behind an endpoint-dependent NAT router (the lab's NAT rules
/// need the host kernel; in the VM the laptop is on the switch).
pub fn office_subnet_router(backend: BackendChoice, behind_nat: bool) {
    let lan: ipnet::IpNet = LAN.parse().unwrap();
    let mut lan_host: Option<Host> = None;
    let mut net = TailnetLab::with_agents("office", backend, |lab, internet| {
        let office = lab.add_host("n0").unwrap();
        internet.attach(&office).unwrap();
        let printer = lab.add_host("printer").unwrap();
        lab.connect_with(&office, &printer, &[lan]).unwrap();
        lan_host = Some(printer);
        let laptop = if behind_nat {
            let nat = lab
                .add_router("r1", internet, NatKind::EndpointDependent)
                .unwrap();
            let home = lab.add_lan(&nat).unwrap();
            lab.add_lan_host(&home, "n1").unwrap()
        } else {
            let laptop = lab.add_host("n1").unwrap();
            internet.attach(&laptop).unwrap();
            laptop
        };
        vec![office, laptop]
    });
    let printer = lan_host.expect("placed");
    let printer_ip = printer
        .ifaces()
        .iter()
        .flat_map(|i| i.addrs.iter().map(|a| a.addr()))
        .find(|a| lan.contains(a))
        .expect("the LAN host's address");
    let office_lan_ip = net.agents[0]
        .ifaces()
        .iter()
        .flat_map(|i| i.addrs.iter().map(|a| a.addr()))
        .find(|a| lan.contains(a))
        .expect("the router's LAN address");

    let policy_file = net.dir.0.join("policy.hujson");
    std::fs::write(&policy_file, policy(printer_ip)).unwrap();
    net.serve(&["--policy", policy_file.to_str().unwrap()]);

    // The office router starts down, so that what `up` changes can be compared with `down`.
    let _office = net.start_daemon(0, 1, false, &["--enable-forwarding"]);
    let _laptop = net.start_daemon(1, 1, true, &["--accept-routes"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while net.status(0).is_none() {
        assert!(Instant::now() < deadline, "office daemon\n{}", net.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let before = system_state(&net.agents[0]);
    let (listen, secret) = (net.listen.clone(), net.secret.clone());
    let (ok, said) = net.meshgate(
        0,
        &[
            "up",
            "--login-server",
            &listen,
            "--auth-key",
            &secret,
            "--advertise-routes",
            LAN,
        ],
    );
    assert!(ok, "up: {said}\n{}", net.logs());
    net.wait_joined();
    net.admin(&["routes", "approve", "n0", LAN]);

    let https = Service::start(&printer, 443);
    let ssh = Service::start(&printer, 22);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !round_trip(&net.agents[1], SocketAddr::new(printer_ip, 443)) {
        assert!(
            Instant::now() < deadline,
            "the laptop never reached the LAN host's 443 through the router: {:#?}\n{:#?}\n{}",
            net.status(1),
            net.status(0),
            net.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(
        https.last_peer().map(|p| p.ip()),
        Some(office_lan_ip),
        "the LAN host sees the router's address (masquerade)"
    );
    assert!(
        !round_trip(&net.agents[1], SocketAddr::new(printer_ip, 22)),
        "the policy allows only 443 to the LAN host, yet 22 got through"
    );
    assert_eq!(ssh.last_peer(), None, "22 reached the LAN host");
    let status = net.status(0).unwrap();
    assert!(
        status["filter"]["dropped"].as_u64().unwrap_or(0) > 0,
        "the router's filter counted no drop: {status:#}"
    );

    // --snat-subnet-routes=false: the LAN host sees the laptop's own tailnet address, for a
    // LAN that routes the tailnet back to the router.
    let laptop_ip = crate::tailnet_lab::ipv4_of(&net.status(1).unwrap()["self"]["addresses"])
        .expect("the laptop's tailnet address");
    printer
        .exec_ok([
            "ip",
            "route",
            "add",
            "100.64.0.0/10",
            "via",
            &office_lan_ip.to_string(),
        ])
        .unwrap();
    let (ok, said) = net.meshgate(0, &["up", "--snat-subnet-routes=false"]);
    assert!(ok, "up --snat-subnet-routes=false: {said}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(round_trip(&net.agents[1], SocketAddr::new(printer_ip, 443))
        && https.last_peer().map(|p| p.ip()) == Some(laptop_ip))
    {
        assert!(
            Instant::now() < deadline,
            "without SNAT the LAN host never saw the laptop's address (last: {:?})\n{}",
            https.last_peer(),
            net.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    let (ok, said) = net.meshgate(0, &["down"]);
    assert!(ok, "down: {said}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let after = system_state(&net.agents[0]);
        if after == before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "down left the router changed:\n--- before up\n{before}\n--- after down\n{after}\n{}",
            net.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !round_trip(&net.agents[1], SocketAddr::new(printer_ip, 443)),
        "the LAN is still reachable through a router that is down"
    );
}

/// Two subnet routers for one LAN: the laptop reaches the LAN host through the primary; the
/// primary's host dies (links down, then its agent killed: no goodbye to control), and within
/// seconds the laptop's connections go through the secondary, with no one touching anything.
pub fn subnet_router_failover(backend: BackendChoice) {
    let lan: ipnet::IpNet = "192.168.88.0/24".parse().unwrap();
    let mut lan_host: Option<Host> = None;
    let mut net = TailnetLab::with_agents("failover", backend, |lab, internet| {
        let lan_switch = lab.add_switch_with("lan", &[lan]).unwrap();
        let routers: Vec<Host> = (0..2)
            .map(|i| {
                let router = lab.add_host(&format!("n{i}")).unwrap();
                internet.attach(&router).unwrap();
                lan_switch.attach(&router).unwrap();
                router
            })
            .collect();
        let printer = lab.add_host("printer").unwrap();
        lan_switch.attach(&printer).unwrap();
        lan_host = Some(printer);
        let laptop = lab.add_host("n2").unwrap();
        internet.attach(&laptop).unwrap();
        routers.into_iter().chain([laptop]).collect()
    });
    let printer = lan_host.expect("placed");
    let lan_ip = |host: &Host| {
        host.ifaces()
            .iter()
            .flat_map(|i| i.addrs.iter().map(|a| a.addr()))
            .find(|a| lan.contains(a))
            .expect("a LAN address")
    };
    let printer_ip = lan_ip(&printer);
    let router_ips = [lan_ip(&net.agents[0]), lan_ip(&net.agents[1])];
    net.serve(&[]);
    let lan_text = lan.to_string();
    let router_args = ["--advertise-routes", &lan_text, "--enable-forwarding"];
    // n0 first, so that it has the lower node id and is the first primary.
    let mut primary = Some(net.start_daemon(0, 1, true, &router_args));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !net.status(0).is_some_and(|s| {
        s["state"] == "up"
            && s["self"]["addresses"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
    }) {
        assert!(Instant::now() < deadline, "n0 never joined\n{}", net.logs());
        std::thread::sleep(Duration::from_millis(100));
    }
    let _secondary = net.start_daemon(1, 1, true, &router_args);
    let _laptop = net.start_daemon(2, 1, true, &["--accept-routes"]);
    net.wait_joined();
    net.admin(&["routes", "approve", "n0", &lan_text]);
    net.admin(&["routes", "approve", "n1", &lan_text]);

    let https = Service::start(&printer, 443);
    let target = SocketAddr::new(printer_ip, 443);
    let through = |want: IpAddr, what: &str, within: Duration| {
        let deadline = Instant::now() + within;
        loop {
            if round_trip(&net.agents[2], target) && https.last_peer().map(|p| p.ip()) == Some(want)
            {
                return Instant::now();
            }
            assert!(
                Instant::now() < deadline,
                "{what}: no round trip through {want} (last peer seen {:?}): {:#?}\n{}",
                https.last_peer(),
                net.status(2),
                net.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    };
    through(
        router_ips[0],
        "through the primary",
        Duration::from_secs(30),
    );

    // The primary's host dies: its links first, so nothing reaches control, then its agent.
    for iface in net.agents[0].ifaces() {
        net.agents[0]
            .exec_ok(["ip", "link", "set", &iface.name, "down"])
            .unwrap();
    }
    let died = Instant::now();
    if let Some(p) = primary.take() {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &p.id().to_string()])
            .status();
        drop(p);
    }
    let recovered = through(
        router_ips[1],
        "after the primary died",
        Duration::from_secs(40),
    );
    println!(
        "subnet failover: connections through the secondary {:?} after the primary died",
        recovered - died
    );
}
