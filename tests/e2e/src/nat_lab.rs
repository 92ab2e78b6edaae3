//! NAT traversal: two agents behind the lab's NAT routers, a coordinator and a `meshgate derp`
//! relay on the "internet". Each case reports the final path of both agents and the time to
//! get there; a case that is traversable without port mapping must end direct (on both
//! sides), the others relayed, and traffic must flow either way.

use std::time::{Duration, Instant};

use meshgate_netns_lab::{Host, Lab, Nat, NatKind, Proc, Segment, UpnpProtocols};
use meshgate_wg::BackendChoice;

use crate::tailnet_lab::TailnetLab;

/// Where the two agents sit.
#[derive(Clone, Copy, Debug)]
pub enum Topology {
    /// Both on the "internet" switch, no NAT.
    Switch,
    /// Each behind its own router with these NATs.
    Behind(NatKind, NatKind),
    /// Both on the LAN of one endpoint-independent router with hairpinning.
    SameNat,
}

impl Topology {
    /// A short name (it prefixes namespace and interface names).
    pub fn name(self) -> String {
        let kind = |k: NatKind| match k {
            NatKind::None => "none",
            NatKind::EndpointIndependent => "eim",
            NatKind::EndpointDependent => "edm",
            NatKind::UdpBlocked => "noudp",
        };
        match self {
            Topology::Switch => "switch".to_owned(),
            Topology::Behind(a, b) => format!("{}-{}", kind(a), kind(b)),
            Topology::SameNat => "samenat".to_owned(),
        }
    }

    /// Builds the agents' hosts (`n0`, `n1`) around the switch `internet`.
    pub fn place(self, lab: &Lab, internet: &Segment) -> Vec<Host> {
        match self {
            Topology::Switch => (0..2)
                .map(|i| {
                    let host = lab.add_host(&format!("n{i}")).unwrap();
                    internet.attach(&host).unwrap();
                    host
                })
                .collect(),
            Topology::Behind(a, b) => [a, b]
                .into_iter()
                .enumerate()
                .map(|(i, kind)| {
                    let router = lab.add_router(&format!("r{i}"), internet, kind).unwrap();
                    let lan = lab.add_lan(&router).unwrap();
                    lab.add_lan_host(&lan, &format!("n{i}")).unwrap()
                })
                .collect(),
            Topology::SameNat => {
                let nat = Nat {
                    kind: NatKind::EndpointIndependent,
                    hairpin: true,
                };
                let router = lab.add_router("r0", internet, nat).unwrap();
                let lan = lab.add_lan(&router).unwrap();
                (0..2)
                    .map(|i| lab.add_lan_host(&lan, &format!("n{i}")).unwrap())
                    .collect()
            }
        }
    }
}

/// Runs one case; `direct` is whether it must end on a direct path.
pub fn traversal(backend: BackendChoice, topology: Topology, direct: bool) {
    let name = topology.name();
    let net = TailnetLab::with_agents(&format!("nat{name}"), backend, |lab, internet| {
        topology.place(lab, internet)
    });
    run_case(net, &name, direct);
}

/// Both agents behind endpoint-dependent NATs whose routers run miniupnpd (NAT-PMP and PCP):
/// without the mappings this case ends relayed; with them, direct. The "internet" is
/// 44.0.0.0/24, a range miniupnpd agrees to map on (it refuses the documentation ranges).
pub fn traversal_with_port_mapping(backend: BackendChoice) {
    let mut gateways = Vec::new();
    let dir = crate::TempDir::new("upnp");
    let net = TailnetLab::with_agents_on(
        "natupnp",
        backend,
        Some("44.0.0.0/24".parse().unwrap()),
        |lab, internet| {
            (0..2)
                .map(|i| {
                    let router = lab
                        .add_router(&format!("r{i}"), internet, NatKind::EndpointDependent)
                        .unwrap();
                    let lan = lab.add_lan(&router).unwrap();
                    let host = lab.add_lan_host(&lan, &format!("n{i}")).unwrap();
                    let protocols = UpnpProtocols {
                        natpmp: true,
                        pcp: true,
                        ..UpnpProtocols::default()
                    };
                    gateways.push(
                        router
                            .run_miniupnpd(&lan, &dir.0.join(format!("r{i}")), protocols)
                            .unwrap(),
                    );
                    host
                })
                .collect()
        },
    );
    let (net, _daemons) = run_case(net, "edm-edm+portmap", true);
    // Both agents hold a mapping (shown by status, and advertised as an endpoint). The first
    // packets each way can only have come in through a mapping; once a flow is open, disco
    // may keep the flow's address as the best path instead, which is as good. Without
    // mappings this case ends relayed (the plain edm-edm case).
    for i in 0..2 {
        let own = net.status(i).unwrap();
        let mapping = own["port_mapping"].as_str().unwrap_or_default();
        assert!(
            mapping.starts_with("NAT-PMP ") || mapping.starts_with("PCP "),
            "n{i} has no port mapping: {own:#}"
        );
    }
    drop(gateways);
}

/// Runs the case on a built lab; the lab and its daemons, still up, for more checks.
fn run_case(mut net: TailnetLab, name: &str, direct: bool) -> (TailnetLab, Vec<Proc>) {
    net.lab.check_isolation().unwrap();
    let derp_flags = net.start_relay();
    let derp_flags: Vec<&str> = derp_flags.iter().map(String::as_str).collect();
    net.serve(&derp_flags);
    let started = Instant::now();
    let daemons: Vec<_> = (0..2).map(|i| net.start_daemon(i, 1, true, &[])).collect();

    let addresses = net.wait_joined();
    // Traffic both ways (it also keeps disco's session active).
    net.wait_reachable(&addresses);
    let reachable = started.elapsed();

    // The final path: direct on both sides within 20 s for a traversable case; otherwise
    // relayed after a while of trying (disco pings and CallMeMaybes keep going meanwhile).
    let path_of = |i: usize| -> String {
        net.status(i)
            .and_then(|s| s["peers"][0]["path"].as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let settle = Instant::now() + Duration::from_secs(if direct { 20 } else { 12 });
    let mut paths;
    loop {
        let _ = net.agents[0].ping(addresses[1], 1);
        paths = [path_of(0), path_of(1)];
        let done = paths.iter().all(|p| p == "direct");
        if (direct && done) || Instant::now() >= settle {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let took = started.elapsed();
    println!(
        "nat case {name:<13} final paths n0={:<6} n1={:<6} reachable after {reachable:>8.2?}, final after {took:>8.2?}",
        paths[0], paths[1]
    );
    let want = if direct { "direct" } else { "relay" };
    assert_eq!(
        paths,
        [want, want],
        "{name}: {:#?}\n{:#?}\n{}",
        net.status(0),
        net.status(1),
        net.logs()
    );
    // Still working on the final path.
    for (i, j) in [(0, 1), (1, 0)] {
        assert!(
            net.agents[i].ping(addresses[j], 3),
            "{name}: n{i} lost n{j} on the {want} path\n{}",
            net.logs()
        );
    }
    (net, daemons)
}
