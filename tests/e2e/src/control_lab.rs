//! The control plane end to end, through the `meshgate` binary only: a lab host runs
//! `meshgate coordinator serve`, three others run `meshgate daemon --login-server ...` (the
//! third `meshgate daemon` alone, then `meshgate up`) and find each other's tailnet addresses
//! and names with `meshgate status --json`, then ping them; then `down`, `up` and `logout`.

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

/// `meshgate ARGS --socket SOCKET` on `host`: success, and stdout or stderr.
fn meshgate(host: &Host, socket: &Path, args: &[&str]) -> (bool, String) {
    let mut command = host.command(meshgate_bin());
    command.args(args).arg("--socket").arg(socket);
    let output = command.output().expect("running meshgate");
    let text = if output.status.success() {
        &output.stdout
    } else {
        &output.stderr
    };
    (
        output.status.success(),
        String::from_utf8_lossy(text).trim().to_owned(),
    )
}

/// Number of peers in `status`, if it answered.
fn peer_count(status: &Option<serde_json::Value>) -> Option<usize> {
    status.as_ref()?["peers"].as_array().map(Vec::len)
}

/// Waits up to 20 s until `check` holds for the status of the daemon behind `socket`.
fn wait_status(
    host: &Host,
    socket: &Path,
    dir: &Path,
    what: &str,
    check: impl Fn(&Option<serde_json::Value>) -> bool,
) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let shown = status(host, socket);
        if check(&shown) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened: {shown:#?}\n{}",
            logs(dir)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
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
        daemon.arg("daemon");
        // n2 starts without a login server and joins with `meshgate up` below.
        if i < 2 {
            daemon.args(["--login-server", &listen, "--auth-key", &secret]);
        }
        daemon
            .args(["--backend", backend_flag(backend)])
            .args(["--iface", &unique_ifname("c")])
            .args(["--hostname", &format!("n{i}"), "--accept-routes"])
            .args(["--reconcile-every", "1s"])
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
    // The waiting daemon says so, then joins with `up` (which waits for the first map).
    wait_status(&agents[2], &sockets[2], &dir, "n2 waiting for up", |s| {
        s.as_ref()
            .is_some_and(|s| s["state"] == "down" && s["login_server"].is_null())
    });
    let (ok, out) = meshgate(
        &agents[2],
        &sockets[2],
        &["up", "--login-server", &listen, "--auth-key", &secret],
    );
    assert!(ok && out.contains("connected"), "up: {out}\n{}", logs(&dir));

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

    // Every peer shows its name from control (`n<j>.<base domain>`, no trailing dot).
    for (i, (host, socket)) in agents.iter().zip(&sockets).enumerate() {
        let shown = status(host, socket).unwrap();
        assert_eq!(shown["state"], "up", "{shown:#}");
        for peer in shown["peers"].as_array().unwrap() {
            let ip = ipv4_of(&peer["tailnet_ips"]).unwrap();
            let j = addresses.iter().position(|a| *a == ip).unwrap();
            let name = peer["name"].as_str().unwrap_or_default();
            assert!(
                name.starts_with(&format!("n{j}.")) && !name.ends_with('.'),
                "n{i} names n{j} {name:?}: {shown:#}"
            );
        }
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

    // `down` on n2: no peers on its interface, addresses kept; `up` resumes.
    let (ok, out) = meshgate(&agents[2], &sockets[2], &["down"]);
    assert!(ok && out.starts_with("down"), "down: {out}");
    wait_status(
        &agents[2],
        &sockets[2],
        &dir,
        "n2 down without peers",
        |s| {
            peer_count(s) == Some(0)
                && s.as_ref().is_some_and(|s| {
                    s["state"] == "down" && ipv4_of(&s["self"]["addresses"]) == Some(addresses[2])
                })
        },
    );
    let (ok, out) = meshgate(&agents[2], &sockets[2], &["down"]);
    assert!(ok && out == "already down", "second down: {out}");
    let (ok, out) = meshgate(&agents[2], &sockets[2], &["up"]);
    assert!(ok && out.contains("connected"), "up again: {out}");
    wait_status(&agents[2], &sockets[2], &dir, "n2 up again", |s| {
        peer_count(s) == Some(2)
    });

    // `logout` on n2: its key expires at control (the others drop it), its node key file is
    // gone, its interface has no peers; a second logout and an `up` without auth key fail.
    let (ok, out) = meshgate(&agents[2], &sockets[2], &["logout"]);
    assert!(
        ok && out.starts_with("logged out"),
        "logout: {out}\n{}",
        logs(&dir)
    );
    assert!(!dir.join("n2").join("node.key").exists(), "node.key kept");
    assert!(
        dir.join("n2").join("machine.key").exists(),
        "machine.key gone"
    );
    wait_status(&agents[2], &sockets[2], &dir, "n2 logged out", |s| {
        peer_count(s) == Some(0) && s.as_ref().is_some_and(|s| s["state"] == "logged-out")
    });
    for i in [0, 1] {
        wait_status(
            &agents[i],
            &sockets[i],
            &dir,
            "the others dropping n2",
            |s| peer_count(s) == Some(1),
        );
    }
    let (ok, out) = meshgate(&agents[2], &sockets[2], &["logout"]);
    assert!(
        !ok && out.contains("already logged out"),
        "second logout: {out}"
    );
    let (ok, out) = meshgate(&agents[2], &sockets[2], &["up"]);
    assert!(
        !ok && out.contains("error"),
        "up without auth key after logout: {out}"
    );
    assert!(daemons[2].try_wait().unwrap().is_none(), "daemon n2 exited");

    // n0 gains an address that sorts first among its endpoints: the daemon notices at its
    // next reconcile and tells control with a lite map request; n1 sees the new endpoint.
    let n0_addr = agents[0].addr_on(&switch).unwrap().to_string();
    let links = agents[0]
        .exec_ok(["ip", "-o", "-4", "addr", "show"])
        .unwrap();
    let dev = links
        .lines()
        .find(|l| l.contains(&format!(" {n0_addr}/")))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("n0's switch interface")
        .to_owned();
    agents[0]
        .exec_ok(["ip", "addr", "add", "1.1.1.1/32", "dev", &dev])
        .unwrap();
    wait_status(
        &agents[1],
        &sockets[1],
        &dir,
        "n1 seeing n0's new endpoint",
        |s| {
            s.as_ref().is_some_and(|s| {
                s["peers"].as_array().is_some_and(|peers| {
                    peers.iter().any(|p| {
                        ipv4_of(&p["tailnet_ips"]) == Some(addresses[0])
                            && p["endpoint"] == "1.1.1.1:41641"
                    })
                })
            })
        },
    );

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
    let (ok, out) = meshgate(&pair.a, &socket, &["down"]);
    assert!(
        !ok && out.contains("--config"),
        "down in config mode: {out}"
    );
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
