//! DERP end to end: two agents whose firewalls drop every UDP datagram between them reach
//! each other through `meshgate derp` (self-signed TLS, pinned by the CertName the coordinator
//! hands out), and `meshgate status` says the path is relayed and through which region.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use meshgate_netns_lab::Proc;
use meshgate_wg::BackendChoice;

use crate::tailnet_lab::TailnetLab;

/// n<i>'s firewall drops all UDP arriving from `other` (the lab's address of the other
/// agent), in its own table so nothing else is touched. With both sides doing so, no datagram
/// gets through either way, and the senders' sends still succeed, as behind a firewall on the
/// path (a drop in the sender's own output chain would fail its sends instead).
fn block_udp(net: &TailnetLab, i: usize, other: IpAddr) {
    let rules = format!(
        "table inet e2e_block {{\n\
           chain input {{ type filter hook input priority 0; ip saddr {other} meta l4proto udp drop; }}\n\
         }}\n"
    );
    let file = net.dir.0.join(format!("block-n{i}.nft"));
    std::fs::write(&file, rules).unwrap();
    net.agents[i]
        .exec_ok(["nft".as_ref(), "-f".as_ref(), file.as_os_str()])
        .unwrap();
}

/// What the agents' firewalls drop from the start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Firewall {
    Open,
    /// Each drops all UDP from the other.
    UdpBetween,
    /// n1 drops everything to WireGuard's port (41641), from anyone.
    WgPortOnN1,
}

/// n1's firewall drops all UDP arriving at WireGuard's port from the network: WireGuard, disco
/// and STUN answers alike. Loopback stays open, as in any host firewall; the relay bridge hands
/// relayed packets to the kernel over it.
fn block_wg_port(net: &TailnetLab) {
    let rules = "table inet e2e_block {\n\
                   chain input { type filter hook input priority 0; \
                     iifname != \"lo\" udp dport 41641 drop; }\n\
                 }\n";
    let file = net.dir.0.join("block-port.nft");
    std::fs::write(&file, rules).unwrap();
    net.agents[1]
        .exec_ok(["nft".as_ref(), "-f".as_ref(), file.as_os_str()])
        .unwrap();
}

/// Two agents, a coordinator and a relay, behind `firewall`.
/// Returns the lab, its daemons, the agents' tailnet addresses and how long both directions
/// took to ping.
fn relayed_pair(
    backend: BackendChoice,
    firewall: Firewall,
) -> (TailnetLab, Vec<Proc>, Vec<IpAddr>, Duration) {
    let name = match firewall {
        Firewall::Open => "disco",
        Firewall::UdpBetween => "relay",
        Firewall::WgPortOnN1 => "wgport",
    };
    let mut net = TailnetLab::new(name, backend, 2);
    let derp_flags = net.start_relay();
    let derp_flags: Vec<&str> = derp_flags.iter().map(String::as_str).collect();
    net.serve(&derp_flags);
    let lab_addrs: Vec<IpAddr> = (0..2)
        .map(|i| net.agents[i].addr_on(&net.switch).unwrap())
        .collect();
    match firewall {
        Firewall::Open => {}
        Firewall::UdpBetween => {
            block_udp(&net, 0, lab_addrs[1]);
            block_udp(&net, 1, lab_addrs[0]);
        }
        Firewall::WgPortOnN1 => block_wg_port(&net),
    }
    let started = Instant::now();
    let daemons: Vec<_> = (0..2).map(|i| net.start_daemon(i, 1, true, &[])).collect();

    let addresses = net.wait_joined();
    net.wait_reachable(&addresses);
    let took = started.elapsed();
    (net, daemons, addresses, took)
}

pub fn udp_blocked_pair_talks_through_relay(backend: BackendChoice) {
    let (net, _daemons, _, took) = relayed_pair(backend, Firewall::UdpBetween);
    println!("UDP blocked: both directions through the relay {took:?} after the daemons started");
    for i in 0..2 {
        let shown = net.status(i).unwrap();
        let peer = &shown["peers"][0];
        assert_eq!(peer["path"], "relay", "n{i}: {shown:#}");
        assert_eq!(peer["relay_region"], 900, "n{i}: {shown:#}");
        assert_eq!(peer["relay_region_code"], "meshgate", "n{i}: {shown:#}");
        assert!(
            peer["endpoint"]
                .as_str()
                .is_some_and(|e| e.starts_with("127.0.0.1:")),
            "n{i}'s kernel endpoint is not its bridge: {shown:#}"
        );
        assert_eq!(shown["derp"]["home"], 900, "n{i}: {shown:#}");
        assert_eq!(
            shown["derp"]["regions"][0]["connected"], true,
            "n{i}: {shown:#}"
        );
        // The human form names the relay too.
        let (ok, text) = net.meshgate(i, &["status"]);
        assert!(ok && text.contains("relay 900 (meshgate)"), "n{i}: {text}");
        // `meshgate ping` goes the relayed way; netcheck still sees UDP to the relay host.
        let (ok, text) = net.meshgate(i, &["ping", &format!("n{}", 1 - i), "-c", "2"]);
        assert!(ok && text.contains("via DERP(900)"), "n{i} ping: {text}");
        let (ok, text) = net.meshgate(i, &["netcheck"]);
        assert!(
            ok && text.contains("UDP: yes (from WireGuard's port)")
                && text.contains("Nearest DERP: 900"),
            "n{i} netcheck: {text}"
        );
    }
}

/// The same pair with UDP open: they start relayed and disco moves them to a direct path (the
/// other agent's lab address, with a measured latency); traffic keeps flowing.
pub fn open_pair_goes_direct(backend: BackendChoice) {
    let (net, _daemons, addresses, took) = relayed_pair(backend, Firewall::Open);
    let lab_addrs: Vec<IpAddr> = (0..2)
        .map(|i| net.agents[i].addr_on(&net.switch).unwrap())
        .collect();
    for (i, j) in [(0, 1), (1, 0)] {
        let want = format!("{}:41641", lab_addrs[j]);
        net.wait_status(i, "a direct path proven by disco", |s| {
            s.as_ref().is_some_and(|s| {
                let peer = &s["peers"][0];
                peer["path"] == "direct"
                    && peer["endpoint"] == want.as_str()
                    && peer["latency_ms"].is_f64()
            })
        });
        assert!(
            net.agents[i].ping(addresses[j], 2),
            "n{i} lost n{j}\n{}",
            net.logs()
        );
        let (ok, text) = net.meshgate(i, &["ping", &addresses[j].to_string(), "-c", "1"]);
        assert!(
            ok && text.contains(&format!("via {want} in ")),
            "n{i} ping: {text}"
        );
    }
    println!("UDP open: reachable after {took:?}, then direct");
}

/// The paths of both agents' only peer, as status shows them.
fn paths(net: &TailnetLab) -> [String; 2] {
    [0, 1].map(|i| {
        net.status(i)
            .and_then(|s| s["peers"][0]["path"].as_str().map(str::to_owned))
            .unwrap_or_default()
    })
}

/// Pings both ways every 200 ms until both paths are `want`; how long it took (fails after
/// `limit`).
fn until_paths(net: &TailnetLab, addresses: &[IpAddr], want: &str, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let _ = net.agents[0].ping(addresses[1], 1);
        let _ = net.agents[1].ping(addresses[0], 1);
        if paths(net) == [want, want] {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "paths never became {want}: {:?}\n{:#?}\n{}",
            paths(net),
            net.status(0),
            net.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A direct path that dies (the firewalls start dropping UDP between the agents) falls back to
/// the relay within seconds while traffic keeps flowing, and goes direct again once UDP
/// returns.
pub fn direct_path_dies_and_returns(backend: BackendChoice) {
    let (net, _daemons, addresses, _) = relayed_pair(backend, Firewall::Open);
    until_paths(&net, &addresses, "direct", Duration::from_secs(20));
    let lab_addrs: Vec<IpAddr> = (0..2)
        .map(|i| net.agents[i].addr_on(&net.switch).unwrap())
        .collect();
    // Cut mid-flow: a ping every 200 ms; the time until they get through again is how long
    // traffic stopped.
    let cut = Instant::now();
    block_udp(&net, 0, lab_addrs[1]);
    block_udp(&net, 1, lab_addrs[0]);
    std::thread::sleep(Duration::from_millis(200));
    while !net.agents[0].ping(addresses[1], 1) {
        assert!(
            cut.elapsed() < Duration::from_secs(30),
            "traffic never resumed over the relay\n{}",
            net.logs()
        );
    }
    let resumed = cut.elapsed();
    let to_relay = until_paths(&net, &addresses, "relay", Duration::from_secs(30));
    for (i, j) in [(0, 1), (1, 0)] {
        assert!(
            net.agents[i].ping(addresses[j], 3),
            "n{i} lost n{j} on the relay\n{}",
            net.logs()
        );
    }
    for i in 0..2 {
        net.agents[i]
            .exec_ok(["nft", "delete", "table", "inet", "e2e_block"])
            .unwrap();
    }
    let to_direct = until_paths(&net, &addresses, "direct", Duration::from_secs(30));
    println!(
        "direct path cut: traffic resumed over DERP after {resumed:?} (both paths relay {to_relay:?} later); UDP back: direct after {to_direct:?}"
    );
    // The bound, with the 200 ms between pings and ping's 1 s wait as slack.
    assert!(
        resumed < Duration::from_secs(5) + Duration::from_millis(1200),
        "traffic stopped for {resumed:?}\n{}",
        net.logs()
    );
}

/// A firewall on n1 that drops WireGuard's port (so disco on that port fails as WireGuard does):
/// the pair ends relayed and keeps working, instead of holding on to a path that cannot carry
/// WireGuard.
pub fn wg_port_firewalled_on_one_host_ends_relayed(backend: BackendChoice) {
    let (net, _daemons, addresses, took) = relayed_pair(backend, Firewall::WgPortOnN1);
    // Give disco time to try every candidate, then check it did not settle on a direct path.
    let deadline = Instant::now() + Duration::from_secs(8);
    while Instant::now() < deadline {
        let _ = net.agents[0].ping(addresses[1], 1);
        std::thread::sleep(Duration::from_millis(300));
    }
    assert_eq!(paths(&net), ["relay", "relay"], "{}", net.logs());
    for (i, j) in [(0, 1), (1, 0)] {
        assert!(
            net.agents[i].ping(addresses[j], 2),
            "n{i} lost n{j}\n{}",
            net.logs()
        );
    }
    println!("WireGuard's port firewalled on n1: relayed, reachable after {took:?}");
}
