//! Using an exit node end to end: a cloud VM (n0) offers itself as exit node with an uplink to
//! an "internet" host; a laptop (n1) with a LAN of its own chooses it. The internet host sees
//! the exit node's uplink address; with LAN access the laptop's LAN stays direct; the agent's
//! own control connection keeps WireGuard's mark (so it never enters the tunnel); and turning
//! the exit node off restores the laptop's routes and rules exactly.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use meshgate_netns_lab::Host;
use meshgate_wg::BackendChoice;

use crate::router_lab::{Service, round_trip, system_state};
use crate::tailnet_lab::TailnetLab;

fn address_in(host: &Host, net: ipnet::IpNet) -> IpAddr {
    host.ifaces()
        .iter()
        .flat_map(|i| i.addrs.iter().map(|a| a.addr()))
        .find(|a| net.contains(a))
        .expect("an address in the network")
}

/// Polls `done` every 200 ms until it holds; fails with `what` (and the logs) after `secs`.
fn wait_until(net: &TailnetLab, secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done() {
        assert!(
            Instant::now() < deadline,
            "{what}: {:#?}\n{}",
            net.status(1),
            net.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

pub fn exit_node(backend: BackendChoice) {
    let uplink: ipnet::IpNet = "198.18.7.0/24".parse().unwrap();
    let home_lan: ipnet::IpNet = "192.168.55.0/24".parse().unwrap();
    let mut others: Vec<Host> = Vec::new();
    let mut net = TailnetLab::with_agents("exit", backend, |lab, switch| {
        let cloud = lab.add_host("n0").unwrap();
        switch.attach(&cloud).unwrap();
        let internet = lab.add_host("www").unwrap();
        lab.connect_with(&cloud, &internet, &[uplink]).unwrap();
        let laptop = lab.add_host("n1").unwrap();
        switch.attach(&laptop).unwrap();
        let tv = lab.add_host("tv").unwrap();
        lab.connect_with(&laptop, &tv, &[home_lan]).unwrap();
        others = vec![internet, tv];
        vec![cloud, laptop]
    });
    let (internet, tv) = (others[0].clone(), others[1].clone());
    let internet_ip = address_in(&internet, uplink);
    let cloud_uplink_ip = address_in(&net.agents[0], uplink);
    let tv_ip = address_in(&tv, home_lan);
    let laptop_lan_ip = address_in(&net.agents[1], home_lan);
    net.serve(&[]);
    let _cloud = net.start_daemon(
        0,
        1,
        true,
        &["--advertise-exit-node", "--enable-forwarding"],
    );
    let _laptop = net.start_daemon(1, 1, true, &[]);
    net.wait_joined();
    net.admin(&["routes", "approve", "n0", "0.0.0.0/0"]);

    let web = Service::start(&internet, 443);
    let tv_service = Service::start(&tv, 8009);
    let to_web = SocketAddr::new(internet_ip, 443);
    assert!(
        !round_trip(&net.agents[1], to_web),
        "the laptop reaches the internet host without an exit node"
    );
    let before = system_state(&net.agents[1]);

    let (ok, said) = net.meshgate(
        1,
        &["up", "--exit-node", "n0", "--exit-node-allow-lan-access"],
    );
    assert!(ok, "up --exit-node: {said}\n{}", net.logs());
    wait_until(
        &net,
        30,
        "the laptop never reached the internet host through the exit node",
        || round_trip(&net.agents[1], to_web),
    );
    assert_eq!(
        web.last_peer().map(|p| p.ip()),
        Some(cloud_uplink_ip),
        "the internet host sees the exit node's uplink address"
    );
    assert!(
        round_trip(&net.agents[1], SocketAddr::new(tv_ip, 8009)),
        "with LAN access the laptop's own LAN stays reachable"
    );
    assert_eq!(
        tv_service.last_peer().map(|p| p.ip()),
        Some(laptop_lan_ip),
        "the LAN is reached directly, not through the exit node"
    );
    let status = net.status(1).unwrap();
    assert!(
        status["exit_node"]
            .as_str()
            .is_some_and(|e| e.contains("in use")),
        "{status:#}"
    );
    // The control connection carries WireGuard's mark, so it skips the tunnel's table.
    let coordinator = net.listen.clone();
    let sockets = net.agents[1]
        .exec_ok(["ss", "-tnHe", "state", "established", "dst", &coordinator])
        .unwrap();
    println!("control sockets: {sockets}");
    assert!(
        !sockets.trim().is_empty() && sockets.lines().all(|l| l.contains("fwmark:0x80000")),
        "control connections without WireGuard's mark:\n{sockets}\n{}",
        net.logs()
    );

    // The exit node goes away (its exit routes withdrawn on the coordinator): the laptop's
    // internet traffic is refused in table 52 instead of leaking out of its own uplink, for
    // IPv4 and IPv6, and flows again when the exit node is back.
    net.admin(&["routes", "approve", "n0", ""]);
    net.wait_status(1, "exit node unavailable", |s| {
        s.as_ref()
            .and_then(|s| s["exit_node"].as_str())
            .is_some_and(|e| e.contains("unavailable"))
    });
    for probe in [internet_ip.to_string(), "2001:db8::1".to_owned()] {
        let route = net.agents[1]
            .exec_ok(["ip", "route", "get", &probe])
            .unwrap();
        assert!(
            route.contains("table 52"),
            "with the exit node gone, {probe} left the tunnel's table: {route}\n{}",
            net.logs()
        );
    }
    assert!(
        !round_trip(&net.agents[1], to_web),
        "the laptop reached the internet host with its exit node gone"
    );
    net.admin(&["routes", "approve", "n0", "0.0.0.0/0"]);
    wait_until(
        &net,
        30,
        "the exit node came back but the laptop's traffic did not",
        || round_trip(&net.agents[1], to_web),
    );

    strict_rp_filter(&net, to_web);

    let (ok, said) = net.meshgate(1, &["up", "--exit-node", ""]);
    assert!(ok, "up --exit-node '': {said}");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let after = system_state(&net.agents[1]);
        if after == before && !round_trip(&net.agents[1], to_web) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "turning the exit node off did not restore the laptop:\n--- before\n{before}\n--- after\n{after}\n{}",
            net.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Strict reverse-path filtering, without LAN access (so the exit node's own address is routed
/// into the tunnel too): the reverse lookup of WireGuard's and the control connection's replies
/// would point into the tunnel. The agent saves and restores its marks in conntrack and sets
/// src_valid_mark, so they keep arriving; set back after.
fn strict_rp_filter(net: &TailnetLab, to_web: SocketAddr) {
    let (ok, said) = net.meshgate(
        1,
        &[
            "up",
            "--exit-node",
            "n0",
            "--exit-node-allow-lan-access=false",
        ],
    );
    assert!(ok, "up without LAN access: {said}");
    let src_valid_mark = || {
        net.agents[1]
            .exec_ok(["sysctl", "-n", "net.ipv4.conf.all.src_valid_mark"])
            .unwrap()
            .trim()
            .to_owned()
    };
    assert_eq!(src_valid_mark(), "0");
    net.agents[1]
        .exec_ok(["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=1"])
        .unwrap();
    wait_until(
        net,
        15,
        "strict rp_filter with an exit node: src_valid_mark never set",
        || src_valid_mark() == "1",
    );
    wait_until(
        net,
        30,
        "with strict rp_filter the exit node stopped working",
        || round_trip(&net.agents[1], to_web),
    );
    let status = net.status(1).unwrap();
    assert!(
        status["exit_node"]
            .as_str()
            .is_some_and(|e| e.contains("in use")),
        "{status:#}"
    );
    assert!(
        status["warnings"].as_array().is_none_or(|w| w.is_empty()),
        "{status:#}"
    );
    net.agents[1]
        .exec_ok(["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"])
        .unwrap();
    wait_until(
        net,
        15,
        "rp_filter loose again, but src_valid_mark was not set back",
        || src_valid_mark() == "0",
    );
}
