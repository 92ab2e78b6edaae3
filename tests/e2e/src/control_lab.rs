//! The control plane end to end, through the `meshgate` binary only: a lab host runs
//! `meshgate coordinator serve`, three others run `meshgate daemon --login-server ...` and find
//! each other's tailnet addresses with `meshgate status --json`, then ping them.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use meshgate_netns_lab::{Host, Lab};
use meshgate_wg::BackendChoice;

use crate::{meshgate_bin, unique_ifname};

fn backend_flag(backend: BackendChoice) -> &'static str {
    match backend {
        BackendChoice::Auto => "auto",
        BackendChoice::Kernel => "kernel",
        BackendChoice::Userspace => "userspace",
    }
}

/// Every log file in `dir` (recursively one level), for failure messages.
fn logs(dir: &Path) -> String {
    let mut out = String::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            for inner in std::fs::read_dir(&path).into_iter().flatten().flatten() {
                files.push(inner.path());
            }
        } else {
            files.push(path);
        }
    }
    files.sort();
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "log"))
    {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        out.push_str(&format!("==== {}\n{text}\n", file.display()));
    }
    out
}

/// `meshgate status --json` of the daemon behind `socket`, if it answers.
fn status(host: &Host, socket: &Path) -> Option<serde_json::Value> {
    let mut command = host.command(meshgate_bin());
    command.args(["status", "--json", "--socket"]).arg(socket);
    let output = command.output().ok()?;
    if !output.status.success() {
        return None;
    }
    serde_json::from_slice(&output.stdout).ok()
}

fn ipv4_of(list: &serde_json::Value) -> Option<IpAddr> {
    list.as_array()?
        .iter()
        .filter_map(|a| a.as_str()?.parse::<IpAddr>().ok())
        .find(IpAddr::is_ipv4)
}

/// The subnet n0 advertises.
const ROUTE: &str = "10.99.0.0/24";

/// Whether the status shows a peer routing `prefix`.
fn routes_prefix(status: &serde_json::Value, prefix: &str) -> bool {
    status["peers"].as_array().is_some_and(|peers| {
        peers.iter().any(|p| {
            p["allowed_ips"]
                .as_array()
                .is_some_and(|ips| ips.iter().any(|ip| ip == prefix))
        })
    })
}

/// Three agents join one coordinator with a reusable auth key and ping each other by tailnet IP.
pub fn three_agents_join_and_ping(backend: BackendChoice) {
    let lab = Lab::new("ctl").unwrap();
    let switch = lab.add_switch("sw").unwrap();
    let coordinator = lab.add_host("coord").unwrap();
    switch.attach(&coordinator).unwrap();
    let agents: Vec<Host> = (0..3)
        .map(|i| {
            let host = lab.add_host(&format!("n{i}")).unwrap();
            switch.attach(&host).unwrap();
            host
        })
        .collect();
    let dir = std::env::temp_dir().join(format!("meshgate-ctl-{}", unique_ifname("t")));
    std::fs::create_dir_all(&dir).unwrap();
    let bin = meshgate_bin();

    // The tailnet: a user with a reusable key, then the server.
    let db = dir.join("coordinator.db");
    let secret = coordinator
        .exec_ok([
            bin.as_os_str(),
            "coordinator".as_ref(),
            "authkey".as_ref(),
            "create".as_ref(),
            "--db".as_ref(),
            db.as_os_str(),
            "--user".as_ref(),
            "e2e@example.com".as_ref(),
            "--reusable".as_ref(),
        ])
        .unwrap()
        .trim()
        .to_owned();
    assert!(secret.starts_with("mgkey-"), "not a key: {secret:?}");
    let listen = format!("{}:8080", coordinator.addr_on(&switch).unwrap());
    let mut serve = coordinator.command(&bin);
    serve
        .args(["coordinator", "serve", "--listen", &listen, "--db"])
        .arg(&db)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("coordinator.log")).unwrap());
    let _server = coordinator.spawn(serve).expect("coordinator");

    let mut daemons = Vec::new();
    let mut sockets = Vec::new();
    for (i, host) in agents.iter().enumerate() {
        let state = dir.join(format!("n{i}"));
        std::fs::create_dir_all(&state).unwrap();
        let socket = state.join("s.sock");
        let mut daemon = host.command(&bin);
        daemon
            .args(["daemon", "--login-server", &listen, "--auth-key", &secret])
            .args(["--backend", backend_flag(backend)])
            .args(["--iface", &unique_ifname("c")])
            .args(["--hostname", &format!("n{i}"), "--accept-routes"])
            .arg("--state-dir")
            .arg(&state)
            .arg("--socket")
            .arg(&socket)
            .env("MESHGATE_LOG", "info,meshgate_control=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(state.join("daemon.log")).unwrap());
        if i == 0 {
            daemon.args(["--advertise-routes", ROUTE]);
        }
        daemons.push(host.spawn(daemon).expect("daemon"));
        sockets.push(socket);
    }

    // Each daemon sees both others, with endpoints; learn every node's tailnet IPv4.
    let deadline = Instant::now() + Duration::from_secs(60);
    let addresses: Vec<IpAddr> = loop {
        let statuses: Vec<Option<serde_json::Value>> = agents
            .iter()
            .zip(&sockets)
            .map(|(host, socket)| status(host, socket))
            .collect();
        let ready = statuses.iter().all(|s| {
            s.as_ref().is_some_and(|s| {
                ipv4_of(&s["self"]["addresses"]).is_some()
                    && s["peers"].as_array().is_some_and(|peers| {
                        peers.len() == 2 && peers.iter().all(|p| p["endpoint"].is_string())
                    })
            })
        });
        if ready {
            break statuses
                .iter()
                .map(|s| ipv4_of(&s.as_ref().unwrap()["self"]["addresses"]).unwrap())
                .collect();
        }
        assert!(
            Instant::now() < deadline,
            "the agents never saw each other: {statuses:#?}\n{}",
            logs(&dir)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    for address in &addresses {
        assert!(
            "100.64.0.0/10"
                .parse::<ipnet::IpNet>()
                .unwrap()
                .contains(address),
            "{address} is not a tailnet address"
        );
    }

    // Everyone pings everyone else by tailnet IP.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (i, host) in agents.iter().enumerate() {
        for (j, address) in addresses.iter().enumerate() {
            if i == j {
                continue;
            }
            while !host.ping(*address, 1) {
                assert!(
                    Instant::now() < deadline,
                    "n{i} cannot ping n{j} at {address}\n{}",
                    logs(&dir)
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    // The daemons are still up (no fatal control error), and `meshgate ip` agrees.
    for (i, daemon) in daemons.iter_mut().enumerate() {
        assert!(daemon.try_wait().unwrap().is_none(), "daemon n{i} exited");
    }
    let mut ip = agents[0].command(&bin);
    ip.args(["ip", "-4", "--socket"]).arg(&sockets[0]);
    let out = ip.output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        addresses[0].to_string()
    );
    // The registry as the admin sees it, from the store while the server runs.
    let out = coordinator
        .exec_ok([
            bin.as_os_str(),
            "coordinator".as_ref(),
            "nodes".as_ref(),
            "list".as_ref(),
            "--json".as_ref(),
            "--db".as_ref(),
            db.as_os_str(),
        ])
        .unwrap();
    let nodes: serde_json::Value = serde_json::from_str(&out).unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{out}");
    assert!(
        nodes
            .iter()
            .all(|n| n["online"] == true && !n["endpoints"].as_array().unwrap().is_empty()),
        "{out}"
    );

    // n0's advertised route reaches the others only once approved, by the admin command on the
    // store while the server runs (the server polls the database for such changes).
    assert!(
        !routes_prefix(&status(&agents[1], &sockets[1]).unwrap(), ROUTE),
        "an unapproved route was served"
    );
    coordinator
        .exec_ok([
            bin.as_os_str(),
            "coordinator".as_ref(),
            "routes".as_ref(),
            "approve".as_ref(),
            "--db".as_ref(),
            db.as_os_str(),
            "n0".as_ref(),
            ROUTE.as_ref(),
        ])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    for i in [1, 2] {
        while !status(&agents[i], &sockets[i]).is_some_and(|s| routes_prefix(&s, ROUTE)) {
            assert!(
                Instant::now() < deadline,
                "n{i} never got the approved route\n{}",
                logs(&dir)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    drop(daemons);
    drop(lab);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `--config` mode serves the local API only when `--socket` is given; `meshgate status --json`
/// then shows the file's peer, and after a ping its handshake.
pub fn config_mode_status(backend: BackendChoice) {
    let pair = crate::scenarios::Pair::new("cfgst");
    crate::apply(&pair.b, backend, &pair.config_b).unwrap();
    let dir = std::env::temp_dir().join(format!("meshgate-cfgst-{}", unique_ifname("s")));
    std::fs::create_dir_all(&dir).unwrap();
    let config_file = dir.join("a.conf");
    crate::scenarios::write_config(&config_file, &pair.config_a);
    let socket = dir.join("s.sock");
    let mut command = pair.a.command(meshgate_bin());
    command
        .args(["daemon", "--iface", &pair.config_a.name])
        .args(["--backend", backend_flag(backend)])
        .arg("--config")
        .arg(&config_file)
        .arg("--state-dir")
        .arg(&dir)
        .arg("--socket")
        .arg(&socket)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("daemon.log")).unwrap());
    let daemon = pair.a.spawn(command).expect("daemon");
    let key_b = pair.key_b().to_string();
    let peer_tunnel_ip = crate::scenarios::tunnel_ip(2);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        // The handshake shows once traffic flowed.
        let _ = pair.a.ping(peer_tunnel_ip, 1);
        let shown = status(&pair.a, &socket);
        let done = shown.as_ref().is_some_and(|s| {
            s["mode"] == "config"
                && s["peers"].as_array().is_some_and(|peers| {
                    peers.len() == 1
                        && peers[0]["public_key"] == key_b.as_str()
                        && peers[0]["tailnet_ips"][0] == peer_tunnel_ip.to_string().as_str()
                        && peers[0]["latest_handshake"].is_u64()
                })
        });
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed the peer with a handshake: {shown:#?}\n{}",
            logs(&dir)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
