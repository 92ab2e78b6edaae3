//! Act 2: a tailnet made of `meshgate` processes only. A server on the lab internet runs
//! `meshgate derp` and `meshgate coordinator serve` (which offers the relay as region 900);
//! two agents behind NAT routers run `meshgate daemon`. Their firewalls drop every UDP
//! datagram from each other, so WireGuard's packets can only go through the relay.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use meshgate_netns_lab::{Host, Lab, NatKind, Proc};
use meshgate_wg::BackendChoice;

use super::processes::{DaemonSpec, Meshgate, ipv4_of};
use super::scratch::Scratch;
use super::{DemoResult, Steps, check_interrupted, ping};

/// Joining takes a registration and a first map: a second or two.
const JOIN_TIMEOUT: Duration = Duration::from_secs(20);
/// The relay path forms in about 10 s (netcheck picks the home region, then the path table
/// gives up on the direct endpoints).
const RELAY_TIMEOUT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(200);

/// One agent: its lab host, the NAT router in front of it, and its files.
#[derive(Debug)]
struct Agent {
    name: &'static str,
    host: Host,
    public: IpAddr,
    iface: String,
    state_dir: PathBuf,
    socket: PathBuf,
}

pub(super) fn act(steps: &mut Steps, backend: BackendChoice) -> DemoResult<()> {
    // Declared in teardown order reversed: locals drop last-first, so on any error the
    // processes die first, then the lab's namespaces go, then the files.
    let scratch = Scratch::new("demo")?;
    let result = run(steps, backend, &scratch);
    match result {
        Ok(lab) => {
            let namespaces = lab.namespaces().len();
            lab.close()?;
            let dir = scratch.remove()?;
            println!("   {namespaces} namespaces and {} removed", dir.display());
            Ok(())
        }
        Err(e) if check_interrupted().is_err() => Err(e),
        // Logs now: they go with the scratch directory.
        Err(e) => Err(format!("{e}\nlogs of the run:{}", scratch.log_tails(15)).into()),
    }
}

/// Runs the act and returns its lab for the caller to close; the processes are gone by then.
fn run(steps: &mut Steps, backend: BackendChoice, scratch: &Scratch) -> DemoResult<Lab> {
    let meshgate = Meshgate::current()?;

    steps.step("Building the lab: a server on the internet, alice behind a home NAT, bob behind a cafe NAT");
    let lab = Lab::new("tailnet")?;
    let internet = lab.add_switch("internet")?;
    let server = lab.add_host("server")?;
    internet.attach(&server)?;
    let server_ip = server
        .addr_on(&internet)
        .ok_or("the server has no address")?;
    // Userspace WireGuard's sockets share one directory across namespaces: names must be unique.
    let tag = std::process::id() % 100_000;
    let mut agents = Vec::new();
    for (name, router, nat, kind) in [
        (
            "alice",
            "home",
            NatKind::EndpointIndependent,
            "an endpoint-independent",
        ),
        (
            "bob",
            "cafe",
            NatKind::EndpointDependent,
            "an endpoint-dependent",
        ),
    ] {
        let router = lab.add_router(router, &internet, nat)?;
        let lan = lab.add_lan(&router)?;
        let host = lab.add_lan_host(&lan, name)?;
        let public = IpAddr::V4(router.wan_ipv4().ok_or("a router has no WAN address")?);
        let local = host.addr_on(&lan).ok_or("an agent has no address")?;
        println!("   {name}: {local}, behind {kind} NAT at {public}");
        let state_dir = scratch.subdir(name)?;
        agents.push(Agent {
            name,
            host,
            public,
            iface: format!("mgdemo{tag}{}", &name[..1]),
            socket: state_dir.join("meshgate.sock"),
            state_dir,
        });
    }
    lab.check_isolation()?;
    println!("   server: {server_ip} (coordinator :8080, DERP :8443, STUN :3478)");

    steps.step("Starting the DERP relay (`meshgate derp --self-signed`)");
    let relay_addr = SocketAddr::new(server_ip, 8443);
    let (relay, cert_name) = meshgate.start_relay(
        &server,
        relay_addr,
        &scratch.subdir("derp")?,
        &scratch.path().join("derp.log"),
    )?;
    println!("   https://{relay_addr}, certificate pinned by {cert_name}");

    steps.step("Starting the coordinator, offering the relay as DERP region 900");
    let listen = SocketAddr::new(server_ip, 8080);
    let db = scratch.path().join("coordinator.db");
    let coordinator = meshgate.start_coordinator(
        &server,
        listen,
        &db,
        (relay_addr, &cert_name),
        &scratch.path().join("coordinator.log"),
    )?;
    println!("   `meshgate coordinator serve` on {listen}");

    steps.step("Creating an auth key (`meshgate coordinator authkey create --reusable`)");
    let auth_key = meshgate.create_auth_key(&server, &db, "demo@example.com")?;
    let shown: String = auth_key.chars().take(12).collect();
    println!("   {shown}... (secret, printed once)");

    steps.step("Firewalls: alice and bob drop every UDP datagram from each other");
    block_udp(scratch, &agents[0], agents[1].public)?;
    block_udp(scratch, &agents[1], agents[0].public)?;

    steps.step("Starting two agents (`meshgate daemon --login-server ... --auth-key ...`)");
    let login_server = listen.to_string();
    let mut daemons: Vec<Proc> = Vec::new();
    for agent in &agents {
        daemons.push(meshgate.start_daemon(
            &agent.host,
            &DaemonSpec {
                hostname: agent.name,
                iface: &agent.iface,
                login_server: &login_server,
                auth_key: &auth_key,
                state_dir: &agent.state_dir,
                socket: &agent.socket,
                backend,
            },
        )?);
    }
    let tailnet_ips = wait_joined(&meshgate, &agents, &mut daemons)?;
    for (agent, ip) in agents.iter().zip(&tailnet_ips) {
        println!("   {} joined as {ip}", agent.name);
    }

    steps.step("alice and bob ping each other by tailnet IP: only the relay can carry it");
    let started = Instant::now();
    for (i, j) in [(0, 1), (1, 0)] {
        wait_ping(&agents[i].host, tailnet_ips[j], started)?;
    }
    println!(
        "   the relay path carried both directions {:.1} s after the agents joined",
        started.elapsed().as_secs_f64()
    );
    println!("   alice -> bob ({}):", tailnet_ips[1]);
    ping(&agents[0].host, tailnet_ips[1])?;

    steps.step("alice's view (`meshgate status`)");
    let text = meshgate.status_text(&agents[0].host, &agents[0].socket)?;
    for line in text.lines() {
        println!("   {line}");
    }
    if !text.contains("relay 900 (meshgate)") {
        return Err("alice's status does not show the path through relay 900".into());
    }

    steps.step("Cleaning up");
    // Processes first, while their namespaces exist; the caller then closes the lab.
    drop(daemons);
    drop(coordinator);
    drop(relay);
    println!("   daemons, coordinator and relay stopped");
    Ok(lab)
}

/// Drops UDP from `from` (the other agent's public address) in `agent`'s input chain, in a
/// table of its own. Sends still succeed, as behind a firewall on the path.
fn block_udp(scratch: &Scratch, agent: &Agent, from: IpAddr) -> DemoResult<()> {
    let rules = format!(
        "table inet demo_block {{\n\
           chain input {{ type filter hook input priority 0; ip saddr {from} meta l4proto udp drop; }}\n\
         }}\n"
    );
    let file = scratch.path().join(format!("block-{}.nft", agent.name));
    std::fs::write(&file, rules).map_err(|e| format!("writing {}: {e}", file.display()))?;
    agent
        .host
        .exec_ok(["nft".as_ref(), "-f".as_ref(), file.as_os_str()])?;
    println!("   {}: udp from {from} dropped", agent.name);
    Ok(())
}

/// Waits until every agent has a tailnet address and sees the other as a peer; returns the
/// addresses. Fails early if a daemon exits.
fn wait_joined(
    meshgate: &Meshgate,
    agents: &[Agent],
    daemons: &mut [Proc],
) -> DemoResult<Vec<IpAddr>> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    loop {
        check_interrupted()?;
        for (agent, daemon) in agents.iter().zip(daemons.iter_mut()) {
            if let Some(status) = daemon.try_wait()? {
                return Err(format!("{}'s daemon exited ({status})", agent.name).into());
            }
        }
        let joined: Option<Vec<IpAddr>> = agents
            .iter()
            .map(|agent| {
                let status = meshgate.status_json(&agent.host, &agent.socket)?;
                let peers = status["peers"].as_array()?.len();
                (peers == agents.len() - 1)
                    .then(|| ipv4_of(&status["self"]["addresses"]))
                    .flatten()
            })
            .collect();
        if let Some(ips) = joined {
            return Ok(ips);
        }
        if Instant::now() > deadline {
            return Err(format!("the agents did not join within {JOIN_TIMEOUT:?}").into());
        }
        std::thread::sleep(POLL);
    }
}

/// Pings `target` from `host` once at a time until it answers (each ping waits 1 s).
fn wait_ping(host: &Host, target: IpAddr, since: Instant) -> DemoResult<()> {
    let deadline = since + RELAY_TIMEOUT;
    loop {
        check_interrupted()?;
        if host.ping(target, 1) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{target} did not answer within {RELAY_TIMEOUT:?}").into());
        }
    }
}
