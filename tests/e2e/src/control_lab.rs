//! The control plane end to end, through the `meshgate` binary only: a lab host runs
//! `meshgate coordinator serve`, three others run `meshgate daemon --login-server ...` (the
//! third `meshgate daemon` alone, then `meshgate up`) and find each other's tailnet addresses
//! and names with `meshgate status --json`, then ping them; then `down`, `up` and `logout`.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use meshgate_wg::BackendChoice;

use crate::tailnet_lab::{
    TailnetLab, backend_flag, ipv4_of, logs, meshgate_at, peer_count, status_at,
};
use crate::{meshgate_bin, unique_ifname};

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
    let mut net = TailnetLab::new("ctl", backend, 3);
    net.serve(&[]);
    let listen = net.listen.clone();
    let secret = net.secret.clone();
    // n2 starts without a login server and joins with `meshgate up` below.
    let mut daemons = vec![
        net.start_daemon(
            0,
            1,
            true,
            &["--accept-routes", "--advertise-routes", ROUTE],
        ),
        net.start_daemon(1, 1, true, &["--accept-routes", "--advertise-exit-node"]),
        net.start_daemon(2, 1, false, &["--accept-routes"]),
    ];
    // The waiting daemon says so, then joins with `up` (which waits for the first map).
    net.wait_status(2, "n2 waiting for up", |s| {
        s.as_ref()
            .is_some_and(|s| s["state"] == "down" && s["login_server"].is_null())
    });
    let (ok, out) = net.meshgate(2, &["up", "--login-server", &listen, "--auth-key", &secret]);
    assert!(ok && out.contains("connected"), "up: {out}\n{}", net.logs());

    // Each daemon sees both others, with endpoints; learn every node's tailnet IPv4.
    let deadline = Instant::now() + Duration::from_secs(60);
    let addresses: Vec<IpAddr> = loop {
        let statuses: Vec<Option<serde_json::Value>> = (0..3).map(|i| net.status(i)).collect();
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
            net.logs()
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
    for i in 0..3 {
        let shown = net.status(i).unwrap();
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
    for (i, host) in net.agents.iter().enumerate() {
        for (j, address) in addresses.iter().enumerate() {
            if i == j {
                continue;
            }
            while !host.ping(*address, 1) {
                assert!(
                    Instant::now() < deadline,
                    "n{i} cannot ping n{j} at {address}\n{}",
                    net.logs()
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }

    // The daemons are still up (no fatal control error), and `meshgate ip` agrees.
    for (i, daemon) in daemons.iter_mut().enumerate() {
        assert!(daemon.try_wait().unwrap().is_none(), "daemon n{i} exited");
    }
    let (_, ip) = net.meshgate(0, &["ip", "-4"]);
    assert_eq!(ip, addresses[0].to_string());
    // The registry as the admin sees it, from the store while the server runs.
    let out = net.admin(&["nodes", "list", "--json"]);
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
        !routes_prefix(&net.status(1).unwrap(), ROUTE),
        "an unapproved route was served"
    );
    net.admin(&["routes", "approve", "n0", ROUTE]);
    let deadline = Instant::now() + Duration::from_secs(15);
    for i in [1, 2] {
        while !net.status(i).is_some_and(|s| routes_prefix(&s, ROUTE)) {
            assert!(
                Instant::now() < deadline,
                "n{i} never got the approved route\n{}",
                net.logs()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    // n1 offers itself as an exit node: control records both default routes; approving one
    // approves the pair, and still no peer routes through it until it is chosen (issue 8).
    let exit_routes = |net: &TailnetLab| -> serde_json::Value {
        let out = net.admin(&["routes", "list", "--json"]);
        let routes: serde_json::Value = serde_json::from_str(&out).unwrap();
        routes
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"].as_str().is_some_and(|n| n.starts_with("n1")))
            .cloned()
            .unwrap_or_else(|| panic!("no routes entry for n1: {out}"))
    };
    let n1 = exit_routes(&net);
    assert_eq!(
        n1["advertised"],
        serde_json::json!(["0.0.0.0/0", "::/0"]),
        "{n1:#}"
    );
    assert_eq!(n1["served"], serde_json::json!([]), "{n1:#}");
    net.admin(&["routes", "approve", "n1", "0.0.0.0/0"]);
    let n1 = exit_routes(&net);
    assert_eq!(
        n1["served"],
        serde_json::json!(["0.0.0.0/0", "::/0"]),
        "{n1:#}"
    );
    let nodes: serde_json::Value =
        serde_json::from_str(&net.admin(&["nodes", "list", "--json"])).unwrap();
    assert!(
        nodes
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"].as_str().is_some_and(|s| s.starts_with("n1"))
                && n["exit_node"] == true),
        "{nodes:#}"
    );
    std::thread::sleep(Duration::from_secs(2));
    for i in [0, 2] {
        assert!(
            !routes_prefix(&net.status(i).unwrap(), "0.0.0.0/0"),
            "n{i} routes everything through an exit node it did not choose"
        );
    }

    // `down` on n2: no peers on its interface, addresses kept; `up` resumes.
    let (ok, out) = net.meshgate(2, &["down"]);
    assert!(ok && out.starts_with("down"), "down: {out}");
    net.wait_status(2, "n2 down without peers", |s| {
        peer_count(s) == Some(0)
            && s.as_ref().is_some_and(|s| {
                s["state"] == "down" && ipv4_of(&s["self"]["addresses"]) == Some(addresses[2])
            })
    });
    let (ok, out) = net.meshgate(2, &["down"]);
    assert!(ok && out == "already down", "second down: {out}");
    // A restarted daemon remembers `down` and the login server `up` gave it.
    daemons.remove(2).kill().unwrap();
    daemons.push(net.start_daemon(2, 2, false, &["--accept-routes"]));
    net.wait_status(2, "n2 still down after a restart", |s| {
        peer_count(s) == Some(0)
            && s.as_ref()
                .is_some_and(|s| s["state"] == "down" && s["login_server"] == listen.as_str())
    });
    let (ok, out) = net.meshgate(2, &["up"]);
    assert!(ok && out.contains("connected"), "up again: {out}");
    net.wait_status(2, "n2 up again", |s| peer_count(s) == Some(2));

    // `logout` on n2: its key expires at control (the others drop it), its node key file is
    // gone, its interface has no peers; a second logout and an `up` without auth key fail.
    let (ok, out) = net.meshgate(2, &["logout"]);
    assert!(
        ok && out.starts_with("logged out"),
        "logout: {out}\n{}",
        net.logs()
    );
    assert!(!net.state_dir(2).join("node.key").exists(), "node.key kept");
    assert!(
        net.state_dir(2).join("machine.key").exists(),
        "machine.key gone"
    );
    net.wait_status(2, "n2 logged out", |s| {
        peer_count(s) == Some(0) && s.as_ref().is_some_and(|s| s["state"] == "logged-out")
    });
    for i in [0, 1] {
        net.wait_status(i, "the others dropping n2", |s| peer_count(s) == Some(1));
    }
    let (ok, out) = net.meshgate(2, &["logout"]);
    assert!(
        !ok && out.contains("already logged out"),
        "second logout: {out}"
    );
    let (ok, out) = net.meshgate(2, &["up"]);
    assert!(
        !ok && out.contains("error"),
        "up without auth key after logout: {out}"
    );
    assert!(daemons[2].try_wait().unwrap().is_none(), "daemon n2 exited");
    // Logged out survives a restart too: the daemon does not try to register a new key.
    daemons.remove(2).kill().unwrap();
    daemons.push(net.start_daemon(2, 3, false, &["--accept-routes"]));
    net.wait_status(2, "n2 still logged out after a restart", |s| {
        peer_count(s) == Some(0) && s.as_ref().is_some_and(|s| s["state"] == "logged-out")
    });

    // n0 gains an address that sorts first among its endpoints: the daemon notices at its
    // next reconcile and tells control with a lite map request, and control tells the others.
    // n1 keeps the endpoint its handshakes proved (1.1.1.1 leads nowhere in the lab).
    let n0_addr = net.agents[0].addr_on(&net.switch).unwrap().to_string();
    let links = net.agents[0]
        .exec_ok(["ip", "-o", "-4", "addr", "show"])
        .unwrap();
    let dev = links
        .lines()
        .find(|l| l.contains(&format!(" {n0_addr}/")))
        .and_then(|l| l.split_whitespace().nth(1))
        .expect("n0's switch interface")
        .to_owned();
    net.agents[0]
        .exec_ok(["ip", "addr", "add", "1.1.1.1/32", "dev", &dev])
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let out = net.admin(&["nodes", "list", "--json"]);
        let nodes: serde_json::Value = serde_json::from_str(&out).unwrap();
        let moved = nodes.as_array().unwrap().iter().any(|n| {
            n["name"]
                .as_str()
                .is_some_and(|name| name.starts_with("n0"))
                && n["endpoints"][0] == "1.1.1.1:41641"
        });
        if moved {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "control never learned n0's new endpoint: {out}\n{}",
            net.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    std::thread::sleep(Duration::from_secs(2));
    let shown = net.status(1).unwrap();
    let to_n0 = shown["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| ipv4_of(&p["tailnet_ips"]) == Some(addresses[0]))
        .expect("n1 lists n0");
    assert_eq!(to_n0["endpoint"], format!("{n0_addr}:41641"), "{shown:#}");
    assert_eq!(to_n0["path"], "direct", "{shown:#}");
    assert!(
        net.agents[1].ping(addresses[0], 3),
        "n1 lost n0\n{}",
        net.logs()
    );
    drop(daemons);
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
        let shown = status_at(&pair.a, &socket);
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
    let (ok, out) = meshgate_at(&pair.a, &socket, &["down"]);
    assert!(
        !ok && out.contains("--config"),
        "down in config mode: {out}"
    );
    drop(daemon);
    let _ = std::fs::remove_dir_all(&dir);
}
