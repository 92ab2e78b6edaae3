//! Each NAT kind behaves as named, proven with UDP probes against reflectors outside.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use meshgate_netns_lab::{
    Error, Host, Lab, Nat, NatKind, PORT_BASE, PORT_POOL, Reflector, Router, Segment, mapped_addr,
};

const REFLECTOR_PORT: u16 = 3478;
const LOCAL_PORT: u16 = 41641;

/// Two outside hosts with reflectors, a router with `nat`, and two hosts on its LAN.
struct World {
    lab: Lab,
    router: Router,
    outside: Vec<Host>,
    reflectors: Vec<Reflector>,
    lan: Segment,
    a: Host,
    b: Host,
}

fn world(name: &str, nat: impl Into<Nat>) -> World {
    let lab = Lab::new(name).unwrap();
    let internet = lab.add_switch("internet").unwrap();
    let mut outside = Vec::new();
    let mut reflectors = Vec::new();
    for name in ["stun1", "stun2"] {
        let host = lab.add_host(name).unwrap();
        internet.attach(&host).unwrap();
        let addr = SocketAddr::new(host.addr_on(&internet).unwrap(), REFLECTOR_PORT);
        reflectors.push(host.udp_reflector(addr).unwrap());
        outside.push(host);
    }
    let router = lab.add_router("nat", &internet, nat).unwrap();
    let lan = lab.add_lan(&router).unwrap();
    let a = lab.add_lan_host(&lan, "a").unwrap();
    let b = lab.add_lan_host(&lan, "b").unwrap();
    World {
        lab,
        router,
        outside,
        reflectors,
        lan,
        a,
        b,
    }
}

impl World {
    fn socket(&self, host: &Host) -> UdpSocket {
        host.udp_bind(SocketAddr::new(
            host.addr_on(&self.lan).unwrap(),
            LOCAL_PORT,
        ))
        .unwrap()
    }

    /// What each reflector sees for `socket`.
    fn mappings(&self, socket: &UdpSocket) -> Vec<SocketAddr> {
        self.reflectors
            .iter()
            .map(|r| mapped_addr(socket, r.addr()).unwrap())
            .collect()
    }

    fn external(&self) -> IpAddr {
        IpAddr::V4(self.router.wan_ipv4().unwrap())
    }
}

fn in_pool(port: u16) -> bool {
    (PORT_BASE..PORT_BASE + PORT_POOL).contains(&port)
}

#[test]
fn endpoint_independent_shows_one_port_to_every_destination() {
    let w = world("eim", NatKind::EndpointIndependent);
    // Both LAN hosts use the same local port: Linux's masquerade alone would then give `b` a
    // mapping that depends on the destination.
    for host in [&w.a, &w.b] {
        let seen = w.mappings(&w.socket(host));
        assert_eq!(seen[0], seen[1], "{}: {seen:?}", host.name());
        assert_eq!(seen[0].ip(), w.external());
        assert!(in_pool(seen[0].port()), "{seen:?}");
    }
    let a = w.mappings(&w.socket(&w.a))[0];
    let b = w.mappings(&w.socket(&w.b))[0];
    assert_ne!(a, b, "two LAN sockets share no mapping");
}

#[test]
fn endpoint_dependent_shows_a_new_port_to_each_destination() {
    let w = world("edm", NatKind::EndpointDependent);
    let socket = w.socket(&w.a);
    let seen = w.mappings(&socket);
    assert_eq!(seen[0].ip(), w.external());
    assert_eq!(seen[1].ip(), w.external());
    assert_ne!(seen[0].port(), seen[1].port(), "{seen:?}");
    // The same destination again keeps its flow, so its mapping.
    assert_eq!(
        mapped_addr(&socket, w.reflectors[0].addr()).unwrap(),
        seen[0]
    );
}

#[test]
fn plain_routing_shows_the_lan_address() {
    let w = world("routed", NatKind::None);
    let via = w.router.addr_on(w.router.wan()).unwrap();
    for host in &w.outside {
        host.add_route(w.lan.subnets()[0], via).unwrap();
    }
    let socket = w.socket(&w.a);
    let seen = w.mappings(&socket);
    assert_eq!(seen[0], socket.local_addr().unwrap());
}

#[test]
fn udp_blocked_drops_udp_but_passes_ping_and_tcp() {
    let w = world("udp-blocked", NatKind::UdpBlocked);
    let server = &w.outside[0];
    let server_addr = server.addr_on(w.router.wan()).unwrap();
    assert!(w.a.ping(server_addr, 2));

    let err = mapped_addr(&w.socket(&w.a), w.reflectors[0].addr()).unwrap_err();
    assert!(matches!(err, Error::ProbeTimeout { .. }), "{err}");

    // TCP still goes through, translated.
    let listener = server
        .run(|| std::net::TcpListener::bind(SocketAddr::new(server_addr, 8080)))
        .unwrap()
        .unwrap();
    let stream =
        w.a.run(|| std::net::TcpStream::connect(SocketAddr::new(server_addr, 8080)))
            .unwrap()
            .unwrap();
    let (_, peer) = listener.accept().unwrap();
    assert_eq!(peer.ip(), w.external());
    drop(stream);
}

/// What a hairpin attempt showed.
struct Hairpin {
    /// Where `a` saw the datagram of `b` come from, if it arrived.
    from: Option<SocketAddr>,
    /// `b`'s mapping as the first reflector saw it.
    b_mapped: SocketAddr,
    /// Whether `a`'s answer came back to `b` from `a`'s mapping.
    answered: bool,
}

/// `b` sends to the external mapping of `a`'s socket, and `a` answers if it got it.
fn hairpin(w: &World) -> Hairpin {
    let a_socket = w.socket(&w.a);
    let b_socket = w.socket(&w.b);
    let a_mapped = w.mappings(&a_socket)[0];
    let b_mapped = w.mappings(&b_socket)[0];
    b_socket.send_to(b"hairpin", a_mapped).unwrap();
    let timeout = Some(Duration::from_millis(700));
    a_socket.set_read_timeout(timeout).unwrap();
    b_socket.set_read_timeout(timeout).unwrap();
    let mut buf = [0u8; 32];
    let Ok((len, from)) = a_socket.recv_from(&mut buf) else {
        return Hairpin {
            from: None,
            b_mapped,
            answered: false,
        };
    };
    assert_eq!(&buf[..len], b"hairpin");
    a_socket.send_to(b"back", from).unwrap();
    let answered = b_socket
        .recv_from(&mut buf)
        .is_ok_and(|(len, answer_from)| &buf[..len] == b"back" && answer_from == a_mapped);
    Hairpin {
        from: Some(from),
        b_mapped,
        answered,
    }
}

#[test]
fn hairpin_on_reaches_the_lan_host_owning_the_mapping() {
    for kind in [NatKind::EndpointIndependent, NatKind::EndpointDependent] {
        let w = world("hairpin", kind.with_hairpin());
        let seen = hairpin(&w);
        let from = seen
            .from
            .unwrap_or_else(|| panic!("{kind:?}: nothing arrived"));
        // The receiver sees the sender's external address, as behind a real NAT box: with an
        // endpoint-independent NAT exactly the mapping the outside sees.
        assert_eq!(from.ip(), w.external(), "{kind:?}");
        assert!(in_pool(from.port()), "{kind:?}: {from}");
        if kind == NatKind::EndpointIndependent {
            assert_eq!(from, seen.b_mapped);
        }
        assert!(seen.answered, "{kind:?}: the answer did not come back");
    }
}

#[test]
fn hairpin_off_drops_packets_to_the_external_address() {
    for kind in [NatKind::EndpointIndependent, NatKind::EndpointDependent] {
        let w = world("no-hairpin", kind);
        assert_eq!(hairpin(&w).from, None, "{kind:?}");
    }
}

#[test]
fn a_nat_lab_is_isolated_too() {
    let w = world("nat-isolated", NatKind::EndpointIndependent.with_hairpin());
    w.lab.check_isolation().unwrap();
}
