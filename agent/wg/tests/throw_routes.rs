//! Throw routes (exit node "allow LAN access") against the real kernel, in a fresh network
//! namespace with a wireguard-go interface. Needs root (CAP_SYS_ADMIN for the namespace).

use std::collections::BTreeSet;
use std::process::Command;

use meshgate_wg::rtnl::types::Rule;
use meshgate_wg::{BackendChoice, Engine, Error, Family, InterfaceConfig, PrivateKey, Route};

const TABLE: u32 = 52;
/// Set in the re-executed test binary, which runs inside `unshare --net`.
const NETNS_ENV: &str = "MESHGATE_WG_TEST_NETNS";

/// Runs `test` again in a new network namespace; true when already there.
fn in_fresh_netns(test: &str) -> bool {
    if std::env::var_os(NETNS_ENV).is_some() {
        return true;
    }
    let exe = std::env::current_exe().expect("test binary path");
    let status = Command::new("unshare")
        .arg("--net")
        .arg(exe)
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(NETNS_ENV, "1")
        .status()
        .expect("running unshare (root needed)");
    assert!(status.success(), "{test} in a fresh namespace: {status}");
    false
}

fn ip(args: &[&str]) -> String {
    let output = Command::new("ip").args(args).output().expect("running ip");
    assert!(
        output.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn route(destination: &str) -> Route {
    Route {
        destination: destination.parse().unwrap(),
        table: TABLE,
    }
}

fn throws(destinations: &[&str]) -> BTreeSet<Route> {
    destinations.iter().map(|d| route(d)).collect()
}

/// An exit-node setup: default routes into table 52 through the interface, the fwmark rule,
/// and throw routes for the LAN.
fn exit_config(name: &str) -> InterfaceConfig {
    let mut config = InterfaceConfig {
        name: name.to_string(),
        ..InterfaceConfig::default()
    };
    config.device.private_key = Some(PrivateKey::generate());
    config.device.fwmark = 0x80000;
    config
        .net
        .addresses
        .insert("100.64.0.1/32".parse().unwrap());
    config.net.routes = [route("0.0.0.0/0"), route("::/0")].into();
    config.net.throw_routes = throws(&["192.168.1.0/24", "fd00:1::/64"]);
    for family in [Family::V4, Family::V6] {
        config.net.rules.insert(Rule {
            family,
            priority: 5270,
            fwmark: Some((0x80000, 0x80000)),
            invert: true,
            table: TABLE,
        });
    }
    config
}

/// Deletes the interface even when an assertion fails, so that wireguard-go (which keeps the
/// namespace alive) exits with it.
struct DeleteLink(String);

impl Drop for DeleteLink {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.0])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

#[test]
fn throw_routes_are_applied_read_back_diffed_and_removed() {
    if !in_fresh_netns("throw_routes_are_applied_read_back_diffed_and_removed") {
        return;
    }
    // The engine's futures are large in debug builds: more stack than a test thread's 2 MiB.
    std::thread::Builder::new()
        .stack_size(16 << 20)
        .spawn(|| {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(scenario());
        })
        .unwrap()
        .join()
        .expect("scenario");
}

async fn scenario() {
    ip(&["link", "set", "lo", "up"]);
    // The LAN the throw route must leave to the main table.
    ip(&[
        "link", "add", "lan0", "type", "veth", "peer", "name", "lan1",
    ]);
    ip(&["addr", "add", "192.168.1.1/24", "dev", "lan0"]);
    ip(&["link", "set", "lan0", "up"]);
    ip(&["link", "set", "lan1", "up"]);
    // Someone else's throw route in our table: never ours to read or remove.
    ip(&["route", "add", "throw", "10.9.0.0/16", "table", "52"]);

    let name = format!("mgthr{}", std::process::id() % 100_000);
    let _cleanup = DeleteLink(name.clone());
    let engine = Engine::new(BackendChoice::Userspace).unwrap();
    let config = exit_config(&name);
    let report = engine.apply(&config).await.unwrap();
    assert!(report.created, "{report}");

    let v4 = ip(&["route", "show", "table", "52"]);
    assert!(v4.contains("throw 192.168.1.0/24 proto 109"), "{v4}");
    assert!(
        v4.contains(&format!("default dev {name} proto 109")),
        "{v4}"
    );
    let v6 = ip(&["-6", "route", "show", "table", "52"]);
    assert!(v6.contains("throw fd00:1::/64"), "{v6}");
    // The point of it: the LAN goes out on the LAN, everything else through the interface.
    let lan = ip(&["route", "get", "192.168.1.5"]);
    assert!(lan.contains("dev lan0"), "{lan}");
    let internet = ip(&["route", "get", "192.0.2.1"]);
    assert!(internet.contains(&format!("dev {name}")), "{internet}");

    let state = engine.read(&name).await.unwrap();
    assert_eq!(state.net.throw_routes, config.net.throw_routes);
    assert_eq!(state.net.routes, config.net.routes);
    let again = engine.apply(&config).await.unwrap();
    assert!(!again.changed_anything(), "a second apply wrote {again}");

    // One throw route out, one in: two changes, nothing else touched.
    let mut moved = config.clone();
    moved.net.throw_routes = throws(&["192.168.2.0/24", "fd00:1::/64"]);
    let report = engine.apply(&moved).await.unwrap();
    assert_eq!(report.net_changes, 2, "{report}");
    assert_eq!(report.peers_changed, 0, "{report}");
    let state = engine.read(&name).await.unwrap();
    assert_eq!(state.net.throw_routes, moved.net.throw_routes);
    let lan = ip(&["route", "get", "192.168.1.5"]);
    assert!(lan.contains(&format!("dev {name}")), "{lan}");

    // The kernel refuses 10.9.0.0/16 (the foreign route holds it): 10.8.0.0/16, written just
    // before, is taken back.
    let mut clash = moved.clone();
    clash
        .net
        .throw_routes
        .extend(throws(&["10.8.0.0/16", "10.9.0.0/16"]));
    let err = engine.apply(&clash).await.unwrap_err();
    assert!(matches!(err, Error::RolledBack { .. }), "{err}");
    assert!(err.to_string().contains("throw 10.9.0.0/16"), "{err}");
    let state = engine.read(&name).await.unwrap();
    assert_eq!(state.net.throw_routes, moved.net.throw_routes);
    let v4 = ip(&["route", "show", "table", "52"]);
    assert!(!v4.contains("10.8.0.0"), "{v4}");

    // A prefix cannot be both routed into the interface and thrown, in one table.
    let mut both = moved.clone();
    both.net.throw_routes.insert(route("0.0.0.0/0"));
    let err = engine.apply(&both).await.unwrap_err();
    assert!(matches!(err, Error::InvalidConfig(_)), "{err}");

    // Dropping them removes exactly ours.
    let mut without = moved.clone();
    without.net.throw_routes.clear();
    let report = engine.apply(&without).await.unwrap();
    assert_eq!(report.net_changes, 2, "{report}");
    let v4 = ip(&["route", "show", "table", "52"]);
    assert!(
        !v4.contains("192.168.2.0") && v4.contains("throw 10.9.0.0/16"),
        "{v4}"
    );

    // Deleting the interface takes its throw routes with it, and leaves the foreign one.
    engine.apply(&moved).await.unwrap();
    engine.delete(&name).await.unwrap();
    let v4 = ip(&["route", "show", "table", "52"]);
    assert_eq!(v4.trim(), "throw 10.9.0.0/16", "{v4}");
    let v6 = ip(&["-6", "route", "show", "table", "52"]);
    assert!(v6.trim().is_empty(), "{v6}");
    let rules = ip(&["rule", "show"]);
    assert!(!rules.contains("lookup 52"), "{rules}");
}
