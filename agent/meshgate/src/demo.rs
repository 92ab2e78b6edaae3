//! `meshgate demo`: the whole system so far, in a throw-away lab of network namespaces.
//!
//! An office router with a LAN (a printer on 10.1.0.0/24) and a laptop behind a home NAT, both
//! on a lab "internet". meshgate programs a WireGuard interface on each; the laptop reaches the
//! office and, through it, the printer; a second apply writes nothing; a change writes one
//! peer. Everything is deleted at the end, also on error.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Instant;

use ipnet::IpNet;
use meshgate_netns_lab::{Host, Lab, NatKind};
use meshgate_wg::{
    ApplyReport, BackendChoice, DeviceConfig, Engine, InterfaceConfig, PeerConfig, PrivateKey,
    Route,
};

use crate::cli::DemoArgs;
use crate::show::InterfaceView;

type DemoResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

const OFFICE_TUNNEL: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 1);
const LAPTOP_TUNNEL: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 2);
const MAIN_TABLE: u32 = 254;

pub async fn run(args: DemoArgs) -> Result<(), Box<dyn std::error::Error>> {
    let backend: BackendChoice = args.backend.into();
    // The lab and the engine work from their own threads (namespaces are per thread).
    tokio::task::spawn_blocking(move || demo(backend))
        .await?
        .map_err(|e| e as Box<dyn std::error::Error>)?;
    Ok(())
}

fn step(text: &str) {
    println!("\n== {text}");
}

fn demo(backend: BackendChoice) -> DemoResult<()> {
    let started = Instant::now();
    step("Building the lab: office router + LAN, laptop behind a home NAT, a lab internet");
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

    step("Programming WireGuard on both sites (create, keys, port, peers, addresses)");
    let report = apply(office.host(), backend, &office_if)?;
    println!("   office: {report}");
    if !report.backend.starts_with("kernel") {
        println!(
            "   note: this kernel has no WireGuard module, so meshgate drives wireguard-go \
             (userspace) through the same engine"
        );
    }
    println!("   laptop: {}", apply(&laptop, backend, &laptop_if)?);

    step("Laptop pings the office through the tunnel (across the home NAT)");
    ping(&laptop, IpAddr::V4(OFFICE_TUNNEL))?;

    step("Applying the same configuration again: only differences are written");
    println!("   laptop: {}", apply(&laptop, backend, &laptop_if)?);

    step("Routing the office LAN through the tunnel: one peer changes, nothing else");
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

    step("The laptop's interface as the system reports it (`meshgate wg show`)");
    let state = read(&laptop, &laptop_if.name)?;
    for line in InterfaceView::from_state(&state).to_text().lines() {
        println!("   {line}");
    }

    step("Cleaning up");
    drop(lab);
    println!(
        "   lab removed; the demo took {:.1} s",
        started.elapsed().as_secs_f64()
    );
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

fn ping(host: &Host, target: IpAddr) -> DemoResult<()> {
    let output = host.exec(
        ["ping", "-n", "-c", "3", "-i", "0.2", "-W", "2"]
            .into_iter()
            .chain([target.to_string().as_str()]),
    )?;
    let text = String::from_utf8_lossy(&output.stdout);
    for line in text
        .lines()
        .filter(|l| l.contains("packets") || l.contains("rtt"))
    {
        println!("   {line}");
    }
    if output.status.success() {
        Ok(())
    } else {
        Err(format!("no answer from {target}").into())
    }
}
