//! The tailnet policy end to end: three agents under `coordinator serve --policy FILE`; the
//! file is edited and the coordinator sent SIGHUP, as an admin would. A broken edit is refused
//! with its line and changes nothing; a good one reaches every agent's WireGuard peers within a
//! second. Then the coordinator restarts and every node comes back with its address.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use meshgate_wg::BackendChoice;

use crate::tailnet_lab::{TailnetLab, ipv4_of, peer_count};

/// Everyone reaches everyone.
const OPEN: &str = r#"{
  // the default of a new tailnet
  "acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
}
"#;

/// Only n0 and n1, both ways, by their tailnet addresses: n2 is in no rule.
fn pair_only(n0: IpAddr, n1: IpAddr) -> String {
    format!(
        r#"{{
  "hosts": {{"n0": "{n0}/32", "n1": "{n1}/32"}},
  "acls": [
    {{"action": "accept", "src": ["n0"], "dst": ["n1:*"]}},
    {{"action": "accept", "src": ["n1"], "dst": ["n0:*"]}},
  ],
}}
"#
    )
}

/// The tailnet IPv4 addresses of the peers in a status.
fn peer_addresses(status: &serde_json::Value) -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = status["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| ipv4_of(&p["tailnet_ips"]))
        .collect();
    found.sort();
    found
}

fn hangup(pid: u32) {
    let status = std::process::Command::new("kill")
        .args(["-HUP", &pid.to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill -HUP {pid}");
}

pub fn policy_edit_reaches_every_agent(backend: BackendChoice) {
    let mut net = TailnetLab::new("pol", backend, 3);
    let policy = net.dir.0.join("policy.hujson");
    std::fs::write(&policy, OPEN).unwrap();
    let policy_arg = policy.to_str().unwrap().to_owned();
    net.serve(&["--policy", &policy_arg]);
    let _daemons: Vec<_> = (0..3).map(|i| net.start_daemon(i, 1, true, &[])).collect();
    let addresses = net.wait_joined();

    // A broken edit: refused with the file's line, and the running policy stays.
    std::fs::write(
        &policy,
        "{\n  \"acls\": [\n    {\"action\": \"accept\", \"src\": [\"*\"]\n",
    )
    .unwrap();
    hangup(net.server_pid());
    let log = net.dir.0.join("coordinator.log");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains(&format!("{policy_arg}:"))
    {
        assert!(
            Instant::now() < deadline,
            "the broken policy was not reported with its file and line\n{}",
            net.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    for i in 0..3 {
        assert_eq!(peer_count(&net.status(i)), Some(2), "n{i} lost peers");
    }

    // A good edit reaches every agent, peers and WireGuard configuration, within a second.
    std::fs::write(&policy, pair_only(addresses[0], addresses[1])).unwrap();
    let wanted: [Vec<IpAddr>; 3] = [vec![addresses[1]], vec![addresses[0]], vec![]];
    let sent = Instant::now();
    hangup(net.server_pid());
    let took: Vec<Duration> = std::thread::scope(|scope| {
        let watchers: Vec<_> = (0..3)
            .map(|i| {
                let (net, wanted) = (&net, &wanted[i]);
                scope.spawn(move || {
                    loop {
                        if net.status(i).is_some_and(|s| peer_addresses(&s) == *wanted) {
                            return sent.elapsed();
                        }
                        assert!(
                            sent.elapsed() < Duration::from_secs(20),
                            "n{i} never got the new policy: {:#?}\n{}",
                            net.status(i),
                            net.logs()
                        );
                        std::thread::sleep(Duration::from_millis(20));
                    }
                })
            })
            .collect();
        watchers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    println!("policy edit to each agent's WireGuard peers: {took:?}");
    for (i, t) in took.iter().enumerate() {
        assert!(
            *t < Duration::from_secs(1),
            "n{i} took {t:?} to apply the policy (all: {took:?})"
        );
    }

    // The coordinator restarts: no node and no key is lost; the agents reconnect with the
    // same node keys and addresses, and the policy on file still holds.
    let registry = |net: &TailnetLab| -> Vec<String> {
        let nodes: serde_json::Value =
            serde_json::from_str(&net.admin(&["nodes", "list", "--json"])).unwrap();
        let mut rows: Vec<String> = nodes
            .as_array()
            .into_iter()
            .flatten()
            .map(|n| format!("{} {} {}", n["id"], n["name"], n["addresses"]))
            .collect();
        rows.sort();
        rows
    };
    let node_keys: Vec<serde_json::Value> = (0..3)
        .map(|i| net.status(i).unwrap()["self"]["public_key"].clone())
        .collect();
    let before = registry(&net);
    assert_eq!(before.len(), 3, "{before:#?}");
    net.restart_server(&["--policy", &policy_arg]);
    assert_eq!(
        registry(&net),
        before,
        "the registry changed across a restart"
    );
    for i in 0..3 {
        net.wait_status(i, "an agent back on the restarted coordinator", |s| {
            s.as_ref().is_some_and(|s| {
                s["state"] == "up"
                    && s["self"]["public_key"] == node_keys[i]
                    && ipv4_of(&s["self"]["addresses"]) == Some(addresses[i])
                    && peer_addresses(s) == wanted[i]
            })
        });
    }
    assert_eq!(registry(&net), before, "reconnecting changed the registry");
    // The agents' map streams are on the new server: an edit served by it reaches them.
    std::fs::write(&policy, OPEN).unwrap();
    hangup(net.server_pid());
    for i in 0..3 {
        net.wait_status(
            i,
            "the open policy again, from the restarted coordinator",
            |s| peer_count(s) == Some(2),
        );
    }
    assert_eq!(registry(&net), before, "reconnecting changed the registry");
}
