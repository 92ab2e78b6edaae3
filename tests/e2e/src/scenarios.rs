//! Data-plane scenarios, written once and run twice: against wireguard-go in the namespace lab
//! on this host, and against the kernel module in the VM lab.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use ipnet::IpNet;
use meshgate_netns_lab::{Host, Lab, Segment};
use meshgate_wg::{
    BackendChoice, DeviceConfig, Error, InterfaceConfig, PeerConfig, PrivateKey, PublicKey, Route,
};

use crate::{apply, meshgate_bin, read, unique_ifname};

const MAIN_TABLE: u32 = 254;

pub fn tunnel_ip(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(10, 77, 0, n))
}

/// Two hosts on one switch, each with a meshgate interface peered with the other.
#[allow(missing_debug_implementations)]
pub struct Pair {
    pub lab: Lab,
    pub segment: Segment,
    pub a: Host,
    pub b: Host,
    pub config_a: InterfaceConfig,
    pub config_b: InterfaceConfig,
}

impl Pair {
    pub fn new(name: &str) -> Pair {
        let lab = Lab::new(name).expect("lab");
        let segment = lab.add_switch("underlay").expect("switch");
        let a = lab.add_host("a").expect("host a");
        let b = lab.add_host("b").expect("host b");
        segment.attach(&a).expect("attach a");
        segment.attach(&b).expect("attach b");
        let key_a = PrivateKey::generate();
        let key_b = PrivateKey::generate();
        let underlay_b = b.addr_on(&segment).expect("b's address");

        let mut config_a = interface(&unique_ifname("a"), &key_a, 41641, 1);
        config_a.device.peers.insert(
            key_b.public_key(),
            PeerConfig {
                endpoint: Some(SocketAddr::new(underlay_b, 41642)),
                allowed_ips: [host_net(tunnel_ip(2))].into(),
                ..PeerConfig::default()
            },
        );
        // b learns a's endpoint from a's handshake, so only a's view of b's endpoint matters.
        let mut config_b = interface(&unique_ifname("b"), &key_b, 41642, 2);
        config_b.device.peers.insert(
            key_a.public_key(),
            PeerConfig {
                allowed_ips: [host_net(tunnel_ip(1))].into(),
                ..PeerConfig::default()
            },
        );
        Pair {
            lab,
            segment,
            a,
            b,
            config_a,
            config_b,
        }
    }

    pub fn key_b(&self) -> PublicKey {
        self.config_b
            .device
            .private_key
            .as_ref()
            .unwrap()
            .public_key()
    }

    pub fn apply_both(&self, backend: BackendChoice) {
        apply(&self.a, backend, &self.config_a).expect("apply a");
        apply(&self.b, backend, &self.config_b).expect("apply b");
    }
}

pub fn interface(name: &str, key: &PrivateKey, port: u16, host: u8) -> InterfaceConfig {
    let mut config = InterfaceConfig {
        name: name.to_string(),
        device: DeviceConfig {
            private_key: Some(key.clone()),
            listen_port: port,
            ..DeviceConfig::default()
        },
        ..InterfaceConfig::default()
    };
    config
        .net
        .addresses
        .insert(IpNet::new(tunnel_ip(host), 24).unwrap());
    config
}

pub fn host_net(ip: IpAddr) -> IpNet {
    IpNet::from(ip)
}

/// Ping through the tunnel, allowing a first handshake.
fn reaches(host: &Host, ip: IpAddr) -> bool {
    host.ping(ip, 3)
}

/// Traffic flows; an endpoint change and an allowed-IPs change each take effect.
pub fn tunnel_ping_and_changes(backend: BackendChoice) {
    let mut pair = Pair::new("ping");
    pair.apply_both(backend);
    assert!(reaches(&pair.a, tunnel_ip(2)), "no ping through the tunnel");

    // b moves to another port: a's packets go nowhere until a is told.
    pair.config_b.device.listen_port = 41700;
    apply(&pair.b, backend, &pair.config_b).unwrap();
    assert!(
        !pair.a.ping(tunnel_ip(2), 2),
        "ping still answered on b's old port"
    );
    let key_b = pair.key_b();
    let underlay_b = pair.b.addr_on(&pair.segment).unwrap();
    let new_endpoint = SocketAddr::new(underlay_b, 41700);
    pair.config_a.device.peers.get_mut(&key_b).unwrap().endpoint = Some(new_endpoint);
    let report = apply(&pair.a, backend, &pair.config_a).unwrap();
    assert_eq!(report.peers_changed, 1);
    let state = read(&pair.a, &pair.config_a.name).unwrap();
    assert_eq!(
        state.device.config.peers[&key_b].endpoint,
        Some(new_endpoint)
    );
    assert!(
        reaches(&pair.a, tunnel_ip(2)),
        "no ping after the endpoint change"
    );

    // A new address behind b is reachable only once a's peer for b allows it.
    let extra = IpAddr::V4(Ipv4Addr::new(10, 88, 0, 2));
    pair.config_b.net.addresses.insert(host_net(extra));
    apply(&pair.b, backend, &pair.config_b).unwrap();
    pair.config_a.net.routes.insert(Route {
        destination: host_net(extra),
        table: MAIN_TABLE,
    });
    apply(&pair.a, backend, &pair.config_a).unwrap();
    assert!(
        !pair.a.ping(extra, 1),
        "reached {extra} without it in allowed IPs"
    );
    let peer = pair.config_a.device.peers.get_mut(&key_b).unwrap();
    peer.allowed_ips.insert(host_net(extra));
    apply(&pair.a, backend, &pair.config_a).unwrap();
    assert!(
        reaches(&pair.a, extra),
        "{extra} unreachable after adding it to allowed IPs"
    );
    let peer = pair.config_a.device.peers.get_mut(&key_b).unwrap();
    peer.allowed_ips.remove(&host_net(extra));
    apply(&pair.a, backend, &pair.config_a).unwrap();
    assert!(
        !pair.a.ping(extra, 1),
        "{extra} still reachable after removing it"
    );
    assert!(
        reaches(&pair.a, tunnel_ip(2)),
        "the tunnel address must stay reachable"
    );
}

fn key_for(n: u32) -> PublicKey {
    let mut private = [0u8; 32];
    private[..4].copy_from_slice(&n.to_be_bytes());
    private[31] = 0x40;
    PrivateKey::from_bytes(private).public_key()
}

fn bulk_peer(n: u32) -> PeerConfig {
    let v4 = Ipv4Addr::from(0x0a00_0000 | (n << 8) | 1);
    let v6 = Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, (n >> 16) as u16, n as u16);
    PeerConfig {
        endpoint: Some(SocketAddr::new(
            IpAddr::V4(Ipv4Addr::new(198, 51, 100, (n % 250) as u8 + 1)),
            10_000 + (n % 50_000) as u16,
        )),
        allowed_ips: [IpNet::from(IpAddr::V4(v4)), IpNet::from(IpAddr::V6(v6))].into(),
        persistent_keepalive: if n.is_multiple_of(3) { 25 } else { 0 },
        ..PeerConfig::default()
    }
}

/// 2,000 peers, and then one peer with 1,000 allowed IPs, read back exactly; a one-peer change
/// at that size is one message.
pub fn bulk_read_back(backend: BackendChoice) {
    let lab = Lab::new("bulk").expect("lab");
    let host = lab.add_host("a").expect("host");
    let mut config = interface(&unique_ifname("k"), &PrivateKey::generate(), 41641, 1);
    config.device.fwmark = 0x80000;
    for n in 0..2000 {
        config.device.peers.insert(key_for(n), bulk_peer(n));
    }
    let report = apply(&host, backend, &config).expect("apply 2000 peers");
    assert_eq!(report.peers_changed, 2000);
    let state = read(&host, &config.name).unwrap();
    assert_eq!(
        state.device.config, config.device,
        "2000 peers did not read back exactly"
    );

    let big: BTreeSet<IpNet> = (0..1000u32)
        .map(|i| IpNet::from(IpAddr::V4(Ipv4Addr::from(0x6440_0000 + i))))
        .collect();
    config
        .device
        .peers
        .get_mut(&key_for(7))
        .unwrap()
        .allowed_ips = big.clone();
    let report = apply(&host, backend, &config).unwrap();
    assert_eq!(report.peers_changed, 1);
    let state = read(&host, &config.name).unwrap();
    assert_eq!(state.device.config.peers[&key_for(7)].allowed_ips, big);
    assert_eq!(state.device.config, config.device);

    config
        .device
        .peers
        .get_mut(&key_for(1999))
        .unwrap()
        .endpoint = Some("203.0.113.9:4000".parse().unwrap());
    let report = apply(&host, backend, &config).unwrap();
    assert_eq!((report.peers_changed, report.device_messages), (1, 1));
    let again = apply(&host, backend, &config).unwrap();
    assert!(!again.changed_anything(), "a second apply wrote {again}");
}

/// Invalid input is refused before anything is written; a change the system refuses is undone.
pub fn bad_input_changes_nothing(backend: BackendChoice) {
    let pair = Pair::new("bad");
    pair.apply_both(backend);
    let before = read(&pair.a, &pair.config_a.name).unwrap();

    // One allowed IP on two peers.
    let mut overlapping = pair.config_a.clone();
    overlapping.device.peers.insert(
        PrivateKey::generate().public_key(),
        PeerConfig {
            allowed_ips: [host_net(tunnel_ip(2))].into(),
            ..PeerConfig::default()
        },
    );
    let err = apply(&pair.a, backend, &overlapping).unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");
    assert_unchanged(&pair, &before);

    // The kernel (or wireguard-go) refuses a port that another interface holds; the peers
    // written in the same apply must be taken back.
    let mut blocker = interface(&unique_ifname("x"), &PrivateKey::generate(), 41999, 9);
    blocker.net.addresses.clear();
    apply(&pair.a, backend, &blocker).unwrap();
    let mut clash = pair.config_a.clone();
    clash.device.listen_port = 41999;
    clash
        .device
        .peers
        .insert(PrivateKey::generate().public_key(), bulk_peer(1));
    clash.net.addresses.insert("10.99.0.1/32".parse().unwrap());
    let err = apply(&pair.a, backend, &clash).unwrap_err();
    assert!(
        matches!(err, Error::RolledBack { .. }),
        "expected a rolled-back error, got: {err}"
    );
    assert!(err.to_string().to_lowercase().contains("in use"), "{err}");
    assert_unchanged(&pair, &before);

    // A missing interface is named.
    let err = read(&pair.a, "mgnosuch0").unwrap_err();
    assert_eq!(err.to_string(), "interface mgnosuch0 does not exist");

    // A bad key in a configuration file: a clear error, exit status 1, nothing written.
    let dir = std::env::temp_dir().join(format!("meshgate-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.conf");
    std::fs::write(
        &file,
        "[Interface]\nListenPort = 1\n\n[Peer]\nPublicKey = abc\nAllowedIPs = 10.1.0.0/16\n",
    )
    .unwrap();
    let output = pair
        .a
        .command(meshgate_bin())
        .args(["wg", "apply", &pair.config_a.name])
        .arg(&file)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("bad.conf:5:") && stderr.contains("public key"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
    assert_unchanged(&pair, &before);
}

fn assert_unchanged(pair: &Pair, before: &meshgate_wg::engine::InterfaceState) {
    let after = read(&pair.a, &pair.config_a.name).unwrap();
    assert_eq!(
        after.device.config, before.device.config,
        "WireGuard state changed"
    );
    assert_eq!(after.net, before.net, "addresses, routes or rules changed");
}

/// A ping flow keeps running, without loss, while the daemon is killed and restarted; the
/// restarted daemon adopts the interface without touching it.
pub fn restart_keeps_flows(backend: BackendChoice) {
    let pair = Pair::new("restart");
    apply(&pair.b, backend, &pair.config_b).unwrap();
    let dir = std::env::temp_dir().join(format!("meshgate-restart-{}", unique_ifname("r")));
    std::fs::create_dir_all(&dir).unwrap();
    let config_file = dir.join("a.conf");
    write_config(&config_file, &pair.config_a);
    let backend_arg = backend_flag(backend);
    let start_daemon = |log: &str| {
        let mut command = pair.a.command(meshgate_bin());
        command
            .args([
                "daemon",
                "--iface",
                &pair.config_a.name,
                "--backend",
                backend_arg,
            ])
            .arg("--config")
            .arg(&config_file)
            .arg("--state-dir")
            .arg(&dir)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(log)).unwrap());
        pair.a.spawn(command).expect("daemon")
    };
    let wait_applied = |log: &str| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let text = std::fs::read_to_string(dir.join(log)).unwrap_or_default();
            if let Some(line) = text.lines().find(|l| l.contains("applied:")) {
                return line.to_string();
            }
            assert!(Instant::now() < deadline, "daemon never applied:\n{text}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };

    let first = start_daemon("first.log");
    wait_applied("first.log");
    assert!(reaches(&pair.a, tunnel_ip(2)));
    let handshake_before =
        read(&pair.a, &pair.config_a.name).unwrap().device.stats[&pair.key_b()].last_handshake;
    assert!(handshake_before.is_some());

    let mut ping = pair.a.command("ping");
    ping.args(["-n", "-i", "0.05", "-c", "120", "-W", "1"])
        .arg(tunnel_ip(2).to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut flow = pair.a.spawn(ping).expect("ping");
    std::thread::sleep(Duration::from_secs(1));
    first.kill().expect("kill -9 the daemon");
    std::thread::sleep(Duration::from_millis(500));
    let second = start_daemon("second.log");
    let applied = wait_applied("second.log");
    assert!(
        applied.contains("0 peer(s) changed in 0 message(s), 0 address/route/rule/link change(s)")
            && !applied.contains("created"),
        "the restarted daemon changed the interface: {applied}"
    );

    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        if let Some(status) = flow.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "ping never finished");
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut out = String::new();
    use std::io::Read as _;
    flow.child_mut()
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(status.success(), "ping failed: {out}");
    assert!(
        out.contains("120 packets transmitted, 120 received"),
        "packets lost across the restart:\n{out}"
    );
    let handshake_after =
        read(&pair.a, &pair.config_a.name).unwrap().device.stats[&pair.key_b()].last_handshake;
    assert_eq!(
        handshake_before, handshake_after,
        "the session was re-established"
    );
    second.kill().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

fn backend_flag(backend: BackendChoice) -> &'static str {
    match backend {
        BackendChoice::Auto => "auto",
        BackendChoice::Kernel => "kernel",
        BackendChoice::Userspace => "userspace",
    }
}

/// Writes `config` as the wg-quick style file the daemon reads.
pub fn write_config(path: &std::path::Path, config: &InterfaceConfig) {
    use std::os::unix::fs::PermissionsExt as _;
    let mut text = meshgate_wg::wgconf::render_wg_setconf(&config.device);
    let addresses: Vec<String> = config
        .net
        .addresses
        .iter()
        .map(ToString::to_string)
        .collect();
    text = text.replacen(
        "[Interface]\n",
        &format!("[Interface]\nAddress = {}\n", addresses.join(", ")),
        1,
    );
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Our interface talks to a peer that `wg` and `ip` configured, with no meshgate involved.
pub fn talks_to_independent_peer(backend: BackendChoice) {
    let pair = Pair::new("interop");
    apply(&pair.a, backend, &pair.config_a).unwrap();

    let b = &pair.b;
    let name = &pair.config_b.name;
    match backend {
        BackendChoice::Userspace => {
            b.exec_ok(["wireguard-go", name.as_str()])
                .expect("wireguard-go");
        }
        _ => {
            b.exec_ok(["ip", "link", "add", name.as_str(), "type", "wireguard"])
                .expect("ip link add");
        }
    }
    let dir = std::env::temp_dir().join(format!("meshgate-interop-{}", unique_ifname("i")));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("b.conf");
    std::fs::write(
        &conf,
        meshgate_wg::wgconf::render_wg_setconf(&pair.config_b.device),
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    b.exec_ok(["wg", "setconf", name.as_str(), conf])
        .expect("wg setconf");
    b.exec_ok(["ip", "address", "add", "10.77.0.2/24", "dev", name.as_str()])
        .unwrap();
    b.exec_ok(["ip", "link", "set", name.as_str(), "up"])
        .unwrap();
    assert!(
        reaches(&pair.a, tunnel_ip(2)),
        "no ping to a wg-configured peer"
    );
    let shown = b
        .exec_ok(["wg", "show", name.as_str(), "latest-handshakes"])
        .unwrap();
    assert!(
        !shown.trim().ends_with("\t0"),
        "wg reports no handshake: {shown}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Routes into table 52 and the fwmark rule, from a configuration file; a second interface
/// with its own table leaves them alone; dropping them from the file removes exactly them.
pub fn routes_and_rules(backend: BackendChoice) {
    let lab = Lab::new("rules").expect("lab");
    let host = lab.add_host("a").expect("host");
    let peer = PrivateKey::generate().public_key();
    let file = |table: u32, name: &str, port: u16| {
        let text = format!(
            "[Interface]\nPrivateKey = {}\nListenPort = {port}\nFwMark = 0x80000\n\
             Address = 100.64.0.1/32\nTable = {table}\nRulePriority = 5270\n\n\
             [Peer]\nPublicKey = {peer}\nAllowedIPs = 100.64.0.2/32, 10.1.0.0/16\n",
            PrivateKey::generate().to_base64()
        );
        meshgate_wg::wgconf::parse(&text, "test.conf", name).expect("config")
    };
    let first = file(52, &unique_ifname("t"), 41641);
    apply(&host, backend, &first).unwrap();
    let rules = host.exec_ok(["ip", "rule", "show"]).unwrap();
    assert!(
        rules.contains("5270:\tnot from all fwmark 0x80000/0x80000 lookup 52 proto 109"),
        "{rules}"
    );
    let routes = host
        .exec_ok(["ip", "route", "show", "table", "52"])
        .unwrap();
    assert!(
        routes.contains("10.1.0.0/16 dev") && routes.contains("100.64.0.2 dev"),
        "{routes}"
    );

    let second = file(53, &unique_ifname("u"), 41642);
    let mut second = second;
    second.net.addresses.clear();
    apply(&host, backend, &second).unwrap();
    let report = apply(&host, backend, &first).unwrap();
    assert!(
        !report.changed_anything(),
        "the second interface disturbed the first: {report}"
    );
    let rules = host.exec_ok(["ip", "-6", "rule", "show"]).unwrap();
    assert!(
        rules.contains("lookup 52") && rules.contains("lookup 53"),
        "{rules}"
    );

    let mut without = first.clone();
    without.net.routes.clear();
    without.net.rules.clear();
    let report = apply(&host, backend, &without).unwrap();
    assert_eq!(report.net_changes, 4, "{report}");
    let rules = host.exec_ok(["ip", "rule", "show"]).unwrap();
    assert!(
        !rules.contains("lookup 52") && rules.contains("lookup 53"),
        "{rules}"
    );
    let routes = host
        .exec_ok(["ip", "route", "show", "table", "52"])
        .unwrap_or_default();
    assert!(routes.trim().is_empty(), "{routes}");
}

/// The daemon puts back what someone else changed, takes a new configuration on SIGHUP, and
/// keeps the running one when the new file is broken.
pub fn daemon_mends_drift_and_reloads(backend: BackendChoice) {
    let pair = Pair::new("drift");
    let name = pair.config_a.name.clone();
    let dir = std::env::temp_dir().join(format!("meshgate-drift-{}", unique_ifname("d")));
    std::fs::create_dir_all(&dir).unwrap();
    let config_file = dir.join("a.conf");
    write_config(&config_file, &pair.config_a);
    let log = dir.join("daemon.log");
    let mut command = pair.a.command(meshgate_bin());
    command
        .args(["daemon", "--iface", &name, "--reconcile-every", "300ms"])
        .args(["--backend", backend_flag(backend)])
        .arg("--config")
        .arg(&config_file)
        .arg("--state-dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut daemon = pair.a.spawn(command).expect("daemon");
    let peers = |host: &Host| -> Vec<PublicKey> {
        read(host, &name)
            .map(|s| s.device.config.peers.keys().copied().collect())
            .unwrap_or_default()
    };
    let wait_for = |what: &str, check: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !check() {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            assert!(Instant::now() < deadline, "{what} never happened:\n{text}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    let key_b = pair.key_b();
    wait_for("the first apply", &|| peers(&pair.a) == vec![key_b]);

    // Someone removes the peer behind the daemon's back.
    pair.a
        .exec_ok([
            "wg",
            "set",
            name.as_str(),
            "peer",
            &key_b.to_string(),
            "remove",
        ])
        .unwrap();
    wait_for("restoring the removed peer", &|| {
        peers(&pair.a) == vec![key_b]
    });

    // A new peer in the file, then SIGHUP.
    let mut changed = pair.config_a.clone();
    let extra = PrivateKey::generate().public_key();
    changed.device.peers.insert(extra, bulk_peer(3));
    write_config(&config_file, &changed);
    let pid = daemon.id().to_string();
    pair.a.exec_ok(["kill", "-HUP", pid.as_str()]).unwrap();
    wait_for("the reload", &|| peers(&pair.a).contains(&extra));

    // A broken file: the error is logged, the running configuration stays.
    std::fs::write(&config_file, "[Interface]\nListenPort = many\n").unwrap();
    pair.a.exec_ok(["kill", "-HUP", pid.as_str()]).unwrap();
    wait_for("the reload error", &|| {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("keeping the running configuration")
    });
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        peers(&pair.a).contains(&extra),
        "a broken file changed the interface"
    );
    assert!(
        daemon.try_wait().unwrap().is_none(),
        "the daemon exited on a broken file"
    );
    daemon.kill().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
