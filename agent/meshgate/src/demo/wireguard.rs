//! Act 1: meshgate's engine programs WireGuard directly (config mode, no control plane).
//!
//! An office router with a LAN (a printer on 10.1.0.0/24) and a laptop behind a home NAT, both
//! on a lab "internet". meshgate programs a WireGuard interface on each; the laptop reaches the
//! office and, through it, the printer; a second apply writes nothing; a change writes one
//! peer. The lab is deleted at the end, also on error.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use ipnet::IpNet;
use meshgate_netns_lab::{Host, Lab, NatKind};
use meshgate_wg::{
    ApplyReport, BackendChoice, DeviceConfig, Engine, InterfaceConfig, PeerConfig, PrivateKey,
    Route,
};

use super::{DemoResult, Steps, ping};
use crate::show::InterfaceView;

const OFFICE_TUNNEL: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const LAPTOP_TUNNEL: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const MAIN_TABLE: u32 = 254;

pub(super) fn act(steps: &mut Steps, backend: BackendChoice) -> DemoResult<()> {
    steps.step("Building the lab: office router + LAN, laptop behind a home NAT, a lab internet");
    let lab = Lab::new("demo")?;
    let internet = lab.add_switch("internet")?;
    let office = lab.add_router("office", &internet, NatKind::None)?;
    let office_lan = lab.add_lan(&office)?;
    let printer = lab.add_lan_host(&office_lan, "printer")?;
    let home = lab.add_router("home", &internet, NatKind::EndpointIndependent)?;
    let home_lan = lab.add_lan(&home)?;
    let laptop = lab.add_lan_host(&home_lan, "laptop")?;
    lab.check_isolation()?;
    let office_public = office
        .host()
        .addr_on(&internet)
        .ok_or("office has no address")?;
    let printer_ip = printer
        .addr_on(&office_lan)
        .ok_or("printer has no address")?;
    let lan_net = *office_lan
        .subnets()
        .first()
        .ok_or("office LAN has no subnet")?;
    println!("   office {office_public} (LAN {lan_net}, printer {printer_ip}); laptop behind NAT");

    let office_key = PrivateKey::generate();
    let laptop_key = PrivateKey::generate();
    // Userspace WireGuard's sockets share one directory across namespaces: names must be unique.
    let tag = std::process::id() % 100_000;
    let mut office_if = interface(&format!("mgdemo{tag}o"), &office_key, 41641, OFFICE_TUNNEL);
    let mut laptop_if = interface(&format!("mgdemo{tag}l"), &laptop_key, 41641, LAPTOP_TUNNEL);
    office_if.device.peers.insert(
        laptop_key.public_key(),
        PeerConfig {
            allowed_ips: [IpNet::from(IpAddr::V4(LAPTOP_TUNNEL))].into(),
            ..PeerConfig::default()
        },
    );
    laptop_if.device.peers.insert(
        office_key.public_key(),
        PeerConfig {
            endpoint: Some(SocketAddr::new(office_public, 41641)),
            allowed_ips: [IpNet::from(IpAddr::V4(OFFICE_TUNNEL))].into(),
            persistent_keepalive: 25,
            ..PeerConfig::default()
        },
    );

    steps.step("Programming WireGuard on both sites (create, keys, port, peers, addresses)");
    let report = apply(office.host(), backend, &office_if)?;
    println!("   office: {report}");
    if !report.backend.starts_with("kernel") {
        println!(
            "   note: this kernel has no WireGuard module, so meshgate drives wireguard-go \
             (userspace) through the same engine"
        );
    }
    println!("   laptop: {}", apply(&laptop, backend, &laptop_if)?);

    steps.step("Laptop pings the office through the tunnel (across the home NAT)");
    ping(&laptop, IpAddr::V4(OFFICE_TUNNEL))?;

    steps.step("Applying the same configuration again: only differences are written");
    println!("   laptop: {}", apply(&laptop, backend, &laptop_if)?);

    steps.step("Routing the office LAN through the tunnel: one peer changes, nothing else");
    let office_peer = laptop_if
        .device
        .peers
        .get_mut(&office_key.public_key())
        .ok_or("office peer missing")?;
    office_peer.allowed_ips.insert(lan_net);
    laptop_if.net.routes.insert(Route {
        destination: lan_net,
        table: MAIN_TABLE,
    });
    println!("   laptop: {}", apply(&laptop, backend, &laptop_if)?);
    ping(&laptop, printer_ip)?;

    steps.step("The laptop's interface as the system reports it (`meshgate wg show`)");
    let state = read(&laptop, &laptop_if.name)?;
    for line in InterfaceView::from_state(&state).to_text().lines() {
        println!("   {line}");
    }

    steps.step("Cleaning up");
    let namespaces = lab.namespaces().len();
    lab.close()?;
    println!("   {namespaces} namespaces and the WireGuard interfaces in them removed");
    Ok(())
}

fn interface(name: &str, key: &PrivateKey, port: u16, address: Ipv4Addr) -> InterfaceConfig {
    let mut config = InterfaceConfig {
        name: name.into(),
        device: DeviceConfig {
            private_key: Some(key.clone()),
            listen_port: port,
            ..DeviceConfig::default()
        },
        ..InterfaceConfig::default()
    };
    config.net.mtu = Some(1280);
    config
        .net
        .addresses
        .insert(IpNet::new(IpAddr::V4(address), 24).expect("valid prefix"));
    config
}

fn in_host<R: Send>(
    host: &Host,
    backend: BackendChoice,
    f: impl AsyncFnOnce(&Engine) -> Result<R, meshgate_wg::Error> + Send,
) -> DemoResult<R> {
    host.run(move || -> DemoResult<R> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let engine = Engine::new(backend)?;
            Ok(f(&engine).await?)
        })
    })?
}

fn apply(host: &Host, backend: BackendChoice, config: &InterfaceConfig) -> DemoResult<ApplyReport> {
    in_host(host, backend, async move |engine| {
        engine.apply(config).await
    })
}

fn read(host: &Host, name: &str) -> DemoResult<meshgate_wg::engine::InterfaceState> {
    in_host(host, BackendChoice::Auto, async move |engine| {
        engine.read(name).await
    })
}
