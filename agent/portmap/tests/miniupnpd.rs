//! The port mapper against Debian's miniupnpd 2.3.1 (nftables backend) as the lab's gateway,
//! once per protocol. Needs root and `/usr/sbin/miniupnpd` (scripts/setup.sh installs it).
//!
//! Topology: an "internet" switch on 44.0.0.0/24 (miniupnpd refuses to map when its WAN
//! address is in a reserved range, RFC 5737 included; 44/8 is not in its list, and the lab
//! never routes anywhere outside itself, which `check_isolation` proves), the router
//! (44.0.0.1) with a LAN 10.1.0.0/24, the client 10.1.0.2 and an outside host 44.0.0.2.
//!
//! NAT choice: the router is built with `NatKind::None` and the NAT is miniupnpd's own nftables
//! table (made by the lab's `Router::run_miniupnpd`, as Debian's `nft_init.sh` would if it
//! worked): forward policy accept,
//! `masquerade` out of the WAN for ordinary traffic, and the chains miniupnpd fills with its
//! DNAT rules. The lab's own NAT kinds are not used because their ruleset drops unsolicited
//! WAN UDP to the external address before any DNAT of miniupnpd's could match, and two NAT
//! tables fighting over the same packets would test the lab, not the mapper.
//!
//! "Protocol enabled alone": miniupnpd 2.3.x has one switch for NAT-PMP and PCP together
//! (`enable_natpmp`; there is no `enable_pcp`). To test one without the other, the router
//! drops the other's requests on UDP 5351 by their version byte (0 = NAT-PMP, 2 = PCP).
//! UPnP alone is `enable_upnp=yes`, `enable_natpmp=no`.
//!
//! `system_uptime=no` so a restarted miniupnpd starts a new epoch, as a rebooted router does.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshgate_netns_lab::{Host, Lab, NatKind, Proc, Router, Segment, UPNP_TABLE, UpnpProtocols};
use meshgate_portmap::{Config, Mapping, Options, PortMapper, Protocol};
use tokio::sync::watch;

const WG_PORT: u16 = 51820;
const LEASE: Duration = Duration::from_secs(8);
const TABLE: &str = UPNP_TABLE;

struct World {
    lab: Lab,
    router: Router,
    client: Host,
    outside: Host,
    lan: Segment,
    dir: PathBuf,
    protocol: Protocol,
}

impl Drop for World {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn world(name: &str, protocol: Protocol) -> World {
    let lab = Lab::new(name).unwrap();
    let internet = lab
        .add_switch_with("internet", &["44.0.0.0/24".parse().unwrap()])
        .unwrap();
    let router = lab.add_router("gw", &internet, NatKind::None).unwrap();
    let outside = lab.add_host("outside").unwrap();
    internet.attach(&outside).unwrap();
    let lan = lab.add_lan(&router).unwrap();
    let client = lab.add_lan_host(&lan, "client").unwrap();
    lab.check_isolation().unwrap();
    let dir = std::env::temp_dir().join(format!("mg-portmap-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    World {
        lab,
        router,
        client,
        outside,
        lan,
        dir,
        protocol,
    }
}

impl World {
    fn wan_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(44, 0, 0, 1)
    }

    fn client_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 1, 0, 2)
    }

    /// A router reboot as far as mappings go: miniupnpd's chains are emptied.
    fn flush_mappings(&self) {
        for chain in ["miniupnpd", "prerouting_miniupnpd", "postrouting_miniupnpd"] {
            self.router
                .exec_ok(["nft", "flush", "chain", "inet", TABLE, chain])
                .unwrap();
        }
    }

    fn dnat_rules(&self) -> String {
        self.router
            .exec_ok([
                "nft",
                "list",
                "chain",
                "inet",
                TABLE,
                "prerouting_miniupnpd",
            ])
            .unwrap()
    }

    fn start_miniupnpd(&self) -> Proc {
        let protocols = UpnpProtocols {
            upnp: self.protocol == Protocol::Upnp,
            natpmp: self.protocol == Protocol::NatPmp,
            pcp: self.protocol == Protocol::Pcp,
            min_lifetime: Some(2),
        };
        self.router
            .run_miniupnpd(&self.lan, &self.dir, protocols)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("miniupnpd.log")).unwrap_or_default()
    }

    fn options(&self) -> Options {
        Options {
            mapper: Config {
                lease: LEASE,
                probe_cache: Duration::from_secs(600),
                retry_min: Duration::from_millis(500),
                retry_max: Duration::from_secs(1),
            },
            ..Options::default()
        }
    }
}

/// Whether a datagram from outside to `external` arrives on the WireGuard stand-in socket.
/// Each check sends from a new socket: an old flow's conntrack entry would keep a deleted
/// mapping's DNAT alive, as on any Linux router.
fn reaches(outside: &(Host, IpAddr), wg: &UdpSocket, external: SocketAddr, tag: u32) -> bool {
    let from = outside.0.udp_bind(SocketAddr::new(outside.1, 0)).unwrap();
    let payload = format!("probe-{tag}");
    let mut buf = [0u8; 64];
    for _ in 0..3 {
        from.send_to(payload.as_bytes(), external).unwrap();
        let deadline = Instant::now() + Duration::from_millis(400);
        while Instant::now() < deadline {
            match wg.recv_from(&mut buf) {
                Ok((n, _)) if buf.get(..n) == Some(payload.as_bytes()) => return true,
                Ok(_) => continue,
                Err(_) => break,
            }
        }
    }
    false
}

async fn wait_for(
    rx: &mut watch::Receiver<Option<Mapping>>,
    within: Duration,
    what: &str,
    pred: impl FnMut(&Option<Mapping>) -> bool,
) -> Option<Mapping> {
    match tokio::time::timeout(within, rx.wait_for(pred)).await {
        Ok(Ok(m)) => *m,
        _ => panic!("timed out waiting for {what}"),
    }
}

fn run_protocol(name: &str, protocol: Protocol) {
    let w = world(name, protocol);
    let mut daemon = Some(w.start_miniupnpd());
    let wg = w
        .client
        .udp_bind(SocketAddr::from((w.client_ip(), WG_PORT)))
        .unwrap();
    wg.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let outside_ip = w.outside.addr_on(w.router.wan()).unwrap();
    let from = (w.outside.clone(), outside_ip);
    let options = w.options();
    // NAT-PMP also covers the default: the gateway read from the namespace's default route.
    let gateway = (protocol != Protocol::NatPmp).then(|| w.lab_gateway());
    let local = w.client_ip();

    w.client
        .run(|| {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let (mapper, mut rx) =
                    PortMapper::start_with(WG_PORT, gateway, local, options).unwrap();

                // 1. A mapping by the protocol under test, on the gateway's WAN address.
                let first = wait_for(
                    &mut rx,
                    Duration::from_secs(10),
                    "a mapping",
                    Option::is_some,
                )
                .await
                .unwrap();
                assert_eq!(first.protocol, protocol, "log: {}", w.log());
                assert_eq!(first.external.ip(), IpAddr::V4(w.wan_ip()));
                assert!(
                    reaches(&from, &wg, first.external, 1),
                    "traffic to {} did not arrive",
                    first.external
                );

                // 2. Renewed at half the lease, same endpoint.
                let renewed = wait_for(&mut rx, LEASE, "a renewal", |m| {
                    m.is_some_and(|m| m.obtained_at > first.obtained_at)
                })
                .await
                .unwrap();
                assert_eq!(renewed.external, first.external);
                assert!(
                    renewed.obtained_at.duration_since(first.obtained_at)
                        >= renewed.lease / 2 - Duration::from_millis(200)
                );

                // 3. Gateway rebooted (miniupnpd restarted, its rules gone): mapping re-created.
                drop(daemon.take());
                w.flush_mappings();
                assert!(
                    !reaches(&from, &wg, renewed.external, 2),
                    "mapping survived the flush"
                );
                daemon = Some(w.start_miniupnpd());
                let recreated = wait_for(&mut rx, LEASE, "re-creation after reboot", |m| {
                    m.is_some_and(|m| m.obtained_at > renewed.obtained_at)
                })
                .await
                .unwrap();
                assert!(
                    reaches(&from, &wg, recreated.external, 3),
                    "re-created mapping does not deliver"
                );

                // 4. Gateway lost mid-lease: the mapping is withdrawn at renewal, and comes back.
                drop(daemon.take());
                w.flush_mappings();
                wait_for(
                    &mut rx,
                    LEASE + Duration::from_secs(5),
                    "withdrawal",
                    Option::is_none,
                )
                .await;
                daemon = Some(w.start_miniupnpd());
                let back = wait_for(
                    &mut rx,
                    Duration::from_secs(15),
                    "recovery",
                    Option::is_some,
                )
                .await
                .unwrap();
                assert!(
                    reaches(&from, &wg, back.external, 4),
                    "recovered mapping does not deliver"
                );

                // 5. Clean stop deletes it on the gateway.
                mapper.stop().await.unwrap();
                assert!(rx.borrow().is_none());
                let port = back.external.port().to_string();
                let rules = w.dnat_rules();
                assert!(
                    !rules.contains(&format!("dport {port}")),
                    "rule left behind:\n{rules}"
                );
                assert!(
                    !reaches(&from, &wg, back.external, 5),
                    "traffic still mapped after stop"
                );
            });
        })
        .unwrap();
    drop(daemon);
    w.lab.check_isolation().unwrap();
}

impl World {
    fn lab_gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 1, 0, 1)
    }
}

#[test]
fn natpmp_alone() {
    run_protocol("pmp", Protocol::NatPmp);
}

#[test]
fn pcp_alone() {
    run_protocol("pcp", Protocol::Pcp);
}

#[test]
fn upnp_alone() {
    run_protocol("upnp", Protocol::Upnp);
}
