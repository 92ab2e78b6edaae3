//! Labs built at the same time (threads here; test binaries do the same across processes) use
//! the same addresses and names yet never meet.

use std::collections::HashSet;
use std::net::SocketAddr;

use meshgate_netns_lab::{Lab, NatKind, mapped_addr};

#[test]
fn parallel_labs_do_not_collide() {
    let labs: Vec<Vec<String>> = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..4)
            .map(|i| {
                scope.spawn(move || {
                    // Identical labs: same host names, same subnets, same ports.
                    let lab = Lab::new(&format!("parallel{i}")).unwrap();
                    let internet = lab.add_switch("internet").unwrap();
                    let server = lab.add_host("server").unwrap();
                    internet.attach(&server).unwrap();
                    let server_addr = server.addr_on(&internet).unwrap();
                    let reflector = server
                        .udp_reflector(SocketAddr::new(server_addr, 3478))
                        .unwrap();
                    let router = lab
                        .add_router("home", &internet, NatKind::EndpointIndependent)
                        .unwrap();
                    let lan = lab.add_lan(&router).unwrap();
                    let laptop = lab.add_lan_host(&lan, "laptop").unwrap();
                    assert!(laptop.ping(server_addr, 1), "lab {i}");
                    let socket = laptop
                        .udp_bind(SocketAddr::new(laptop.addr_on(&lan).unwrap(), 41641))
                        .unwrap();
                    let seen = mapped_addr(&socket, reflector.addr()).unwrap();
                    assert_eq!(seen.ip(), router.addr_on(&internet).unwrap(), "lab {i}");
                    lab.check_isolation().unwrap();
                    lab.namespaces()
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let all: Vec<&String> = labs.iter().flatten().collect();
    let unique: HashSet<&&String> = all.iter().collect();
    assert_eq!(all.len(), unique.len(), "namespace names collided: {all:?}");
}
