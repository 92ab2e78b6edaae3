//! Building networks: links, switches, routers, and the guarantee that none of it leads out.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use ipnet::IpNet;
use meshgate_netns_lab::{Error, Lab, NatKind};

#[test]
fn two_hosts_on_a_link_ping_each_other() {
    let lab = Lab::new("link").unwrap();
    let a = lab.add_host("a").unwrap();
    let b = lab.add_host("b").unwrap();
    let link = lab.connect(&a, &b).unwrap();
    assert_eq!(a.addr_on(&link), Some("192.0.2.1".parse().unwrap()));
    assert_eq!(b.addr_on(&link), Some("192.0.2.2".parse().unwrap()));
    assert!(a.ping(b.addr_on(&link).unwrap(), 1));
    assert!(b.ping(a.addr_on(&link).unwrap(), 1));
}

#[test]
fn dual_stack_link_pings_over_ipv6() {
    let lab = Lab::new("v6").unwrap();
    let a = lab.add_host("a").unwrap();
    let b = lab.add_host("b").unwrap();
    let subnets = [
        "10.9.0.0/24".parse().unwrap(),
        "fd00:9::/64".parse().unwrap(),
    ];
    let link = lab.connect_with(&a, &b, &subnets).unwrap();
    let b_v6: IpAddr = "fd00:9::2".parse().unwrap();
    assert_eq!(b.addrs_on(&link), vec!["10.9.0.2".parse().unwrap(), b_v6]);
    assert!(a.ping(b_v6, 1));
}

#[test]
fn a_dual_stack_lan_routes_ipv6_through_the_router() {
    let lab = Lab::new("lan-v6").unwrap();
    let wan_subnets = [
        "203.0.113.0/24".parse().unwrap(),
        "2001:db8:1::/64".parse().unwrap(),
    ];
    let internet = lab.add_switch_with("internet", &wan_subnets).unwrap();
    let server = lab.add_host("server").unwrap();
    internet.attach(&server).unwrap();
    let router = lab
        .add_router("home", &internet, NatKind::EndpointIndependent)
        .unwrap();
    let lan_subnets = [
        "10.5.0.0/24".parse().unwrap(),
        "fd00:5::/64".parse().unwrap(),
    ];
    let lan = lab.add_lan_with(&router, &lan_subnets).unwrap();
    let laptop = lab.add_lan_host(&lan, "laptop").unwrap();
    let gateway_v6: IpAddr = "fd00:5::1".parse().unwrap();
    assert_eq!(lan.gateways()[1], gateway_v6);
    assert!(laptop.ping(gateway_v6, 1));
    // IPv6 is routed, not translated: the server needs the way back.
    let router_v6 = router.addrs_on(&internet)[1];
    server.add_route(lan_subnets[1], router_v6).unwrap();
    assert!(laptop.ping(server.addrs_on(&internet)[1], 1));
    assert!(laptop.ping(server.addr_on(&internet).unwrap(), 1));
}

#[test]
fn hosts_on_a_switch_reach_each_other() {
    let lab = Lab::new("switch").unwrap();
    let internet = lab.add_switch("internet").unwrap();
    let hosts: Vec<_> = (0..3)
        .map(|i| {
            let host = lab.add_host(&format!("h{i}")).unwrap();
            internet.attach(&host).unwrap();
            host
        })
        .collect();
    assert_eq!(
        hosts[2].addr_on(&internet),
        Some("203.0.113.3".parse().unwrap())
    );
    for from in &hosts {
        for to in &hosts {
            assert!(from.ping(to.addr_on(&internet).unwrap(), 1));
        }
    }
}

#[test]
fn a_host_behind_a_nat_router_reaches_an_outside_host() {
    let lab = Lab::new("nat-reach").unwrap();
    let internet = lab.add_switch("internet").unwrap();
    let server = lab.add_host("server").unwrap();
    internet.attach(&server).unwrap();
    let router = lab
        .add_router("home", &internet, NatKind::EndpointIndependent)
        .unwrap();
    let lan = lab.add_lan(&router).unwrap();
    let laptop = lab.add_lan_host(&lan, "laptop").unwrap();
    assert_eq!(lan.gateway_v4(), Some("10.1.0.1".parse().unwrap()));
    assert_eq!(laptop.addr_on(&lan), Some("10.1.0.2".parse().unwrap()));
    assert!(laptop.ping(server.addr_on(&internet).unwrap(), 1));
}

#[test]
fn a_plain_router_routes_both_ways_given_a_route_back() {
    let lab = Lab::new("routed").unwrap();
    let internet = lab.add_switch("internet").unwrap();
    let server = lab.add_host("server").unwrap();
    internet.attach(&server).unwrap();
    let router = lab.add_router("core", &internet, NatKind::None).unwrap();
    let lan = lab.add_lan(&router).unwrap();
    let laptop = lab.add_lan_host(&lan, "laptop").unwrap();
    let server_addr = server.addr_on(&internet).unwrap();
    // Without NAT the server sees the LAN address and needs to know the way back.
    assert!(!laptop.ping(server_addr, 1));
    server
        .add_route(lan.subnets()[0], router.addr_on(&internet).unwrap())
        .unwrap();
    assert!(laptop.ping(server_addr, 1));
    assert!(server.ping(laptop.addr_on(&lan).unwrap(), 1));
}

#[test]
fn no_namespace_has_a_way_out_of_the_lab() {
    let lab = Lab::new("isolated").unwrap();
    let internet = lab.add_switch("internet").unwrap();
    let server = lab.add_host("server").unwrap();
    internet.attach(&server).unwrap();
    let router = lab
        .add_router("home", &internet, NatKind::EndpointDependent)
        .unwrap();
    let lan = lab.add_lan(&router).unwrap();
    let laptop = lab.add_lan_host(&lan, "laptop").unwrap();
    let peer = lab.add_host("peer").unwrap();
    let link = lab.connect(&laptop, &peer).unwrap();

    lab.check_isolation().unwrap();

    // Addresses outside the lab: public ones, and this machine's own addresses and gateway in
    // its own namespace (where a leak would most likely end up), unless the lab reuses them:
    // lab subnets may overlap the machine's network, they just never meet it.
    let lab_subnets: Vec<IpNet> = [&internet, &lan, &link]
        .iter()
        .flat_map(|s| s.subnets().to_vec())
        .collect();
    let outside: Vec<IpAddr> = ["1.1.1.1", "8.8.8.8"]
        .iter()
        .map(|a| a.parse().unwrap())
        .chain(machine_addresses())
        .filter(|a| !lab_subnets.iter().any(|s| s.contains(a)))
        .collect();
    for netns in lab.namespaces() {
        for addr in &outside {
            let out = Command::new("ip")
                .args(["netns", "exec", &netns, "ping", "-c1", "-W1", "-n", "-q"])
                .arg(addr.to_string())
                .output()
                .unwrap();
            assert!(!out.status.success(), "{netns} reached {addr}");
        }
    }

    // Whatever the addresses, nothing sent from inside arrives in the machine's namespace.
    let listener = UdpSocket::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut targets = machine_addresses();
    targets.push("1.1.1.1".parse().unwrap());
    for host in [&server, router.host(), &laptop, &peer] {
        host.run(|| {
            let socket = UdpSocket::bind("0.0.0.0:0").unwrap();
            for addr in &targets {
                let _ = socket.send_to(b"leak?", SocketAddr::new(*addr, port));
            }
        })
        .unwrap();
    }
    listener
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut buf = [0u8; 16];
    let leaked = listener.recv_from(&mut buf);
    assert!(
        leaked.is_err(),
        "a lab packet reached the machine: {leaked:?}"
    );

    // A gateway that is not a lab neighbour is refused outright.
    let err = laptop
        .set_default_route("192.168.255.1".parse().unwrap())
        .unwrap_err();
    assert!(matches!(err, Error::GatewayOutsideLab { .. }), "{err}");
}

#[test]
fn the_isolation_check_catches_a_link_to_a_foreign_namespace() {
    // Another lab stands in for "outside": wiring the machine's own namespace in, even to
    // prove a point, is exactly what a lab must never do.
    let lab = Lab::new("inside").unwrap();
    let other = Lab::new("outside").unwrap();
    let a = lab.add_host("a").unwrap();
    let stranger = other.add_host("stranger").unwrap();
    lab.connect(&a, &stranger).unwrap();
    let err = lab.check_isolation().unwrap_err();
    assert!(matches!(err, Error::NotIsolated { .. }), "{err}");
}

/// The global IPv4 addresses and gateways of this machine's own namespace.
fn machine_addresses() -> Vec<IpAddr> {
    let mut found = Vec::new();
    for args in [
        &["addr", "show", "scope", "global"][..],
        &["route", "show"][..],
    ] {
        let out = Command::new("ip").arg("-4").args(args).output().unwrap();
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            for pair in words.windows(2) {
                if matches!(pair[0], "inet" | "via") {
                    found.extend(
                        pair[1]
                            .split('/')
                            .next()
                            .and_then(|a| a.parse::<IpAddr>().ok()),
                    );
                }
            }
        }
    }
    assert!(!found.is_empty(), "this machine has no IPv4 address?");
    found
}

#[test]
fn closures_run_inside_the_namespace() {
    let lab = Lab::new("run").unwrap();
    let a = lab.add_host("a").unwrap();
    let b = lab.add_host("b").unwrap();
    let link = lab.connect(&a, &b).unwrap();
    let a_addr = a.addr_on(&link).unwrap();

    // /proc/thread-self/net shows the calling thread's namespace.
    let devs = a
        .run(|| std::fs::read_to_string("/proc/thread-self/net/dev").unwrap())
        .unwrap();
    assert!(devs.contains("eth0:"), "{devs}");

    // A socket made inside can use the lab address, which does not exist outside.
    let socket = a.udp_bind(SocketAddr::new(a_addr, 0)).unwrap();
    assert_eq!(socket.local_addr().unwrap().ip(), a_addr);
    assert!(std::net::UdpSocket::bind(SocketAddr::new(a_addr, 0)).is_err());

    // Child processes started inside inherit the namespace.
    let out = a
        .run(|| Command::new("ip").args(["-o", "addr"]).output().unwrap())
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains(&a_addr.to_string()));

    // So do threads started inside, even after the closure returned.
    let thread = a
        .run(|| std::thread::spawn(|| std::fs::read_to_string("/proc/thread-self/net/dev")))
        .unwrap();
    assert!(thread.join().unwrap().unwrap().contains("eth0:"));
}

#[test]
fn a_panic_inside_run_reaches_the_caller() {
    let lab = Lab::new("run-panic").unwrap();
    let a = lab.add_host("a").unwrap();
    let caught = std::panic::catch_unwind(|| a.run(|| panic!("inside")));
    assert!(caught.is_err());
}

#[test]
fn exec_reports_the_failing_command_and_its_stderr() {
    let lab = Lab::new("exec").unwrap();
    let a = lab.add_host("a").unwrap();
    let links = a.exec_ok(["ip", "-o", "link"]).unwrap();
    assert!(links.contains("lo:"));
    let err = a
        .exec_ok(["ip", "link", "show", "nonexistent0"])
        .unwrap_err();
    let Error::Command {
        command, stderr, ..
    } = &err
    else {
        panic!("unexpected {err:?}");
    };
    assert!(command.contains("ip link show nonexistent0"), "{command}");
    assert!(stderr.contains("nonexistent0"), "{stderr}");
}

#[test]
fn spawned_processes_die_with_their_handle() {
    let lab = Lab::new("spawn").unwrap();
    let a = lab.add_host("a").unwrap();
    let mut sleeper = Command::new("sleep");
    sleeper.arg("300");
    let proc = a.spawn(sleeper).unwrap();
    let pid = proc.id();
    let netns_of = |pid: u32| std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
    let own_ns = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert_ne!(netns_of(pid).unwrap(), own_ns, "the child runs in the lab");
    drop(proc);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}
