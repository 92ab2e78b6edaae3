//! Our control client against our coordinator, both in this process over loopback: three
//! nodes join with one auth key and each ends with a WireGuard configuration naming the other
//! two; a node deleted from the coordinator leaves every peer's configuration.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshgate_control::client::{Endpoint, RunConfig, run};
use meshgate_control::state::Persisted;
use meshgate_coordinator::{Config, Server};
use meshgate_coordinator_store::{NewAuthKey, SqliteStore, Store};
use meshgate_e2e::TempDir;
use meshgate_wg::InterfaceConfig;
use tokio::sync::watch;

fn temp_dir() -> TempDir {
    TempDir::new("control-plane")
}

/// A coordinator on loopback with its SQLite store in `dir`, served until the handle drops.
struct Coordinator {
    store: Arc<SqliteStore>,
    server: Server,
    addr: std::net::SocketAddr,
    serving: tokio::task::JoinHandle<Result<(), meshgate_coordinator::Error>>,
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

async fn start_coordinator(dir: &TempDir, configure: impl FnOnce(&mut Config)) -> Coordinator {
    let store = Arc::new(SqliteStore::open(dir.0.join("coordinator.db")).unwrap());
    let mut config = Config::new(dir.0.join("control"));
    configure(&mut config);
    let server = Server::new(store.clone(), config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let serving = {
        let server = server.clone();
        tokio::spawn(async move { server.serve(listener).await })
    };
    Coordinator {
        store,
        server,
        addr,
        serving,
    }
}

fn auth_key(store: &dyn Store, user: &str, reusable: bool) -> String {
    let now = SystemTime::now();
    let user = store.create_user(user, now).unwrap();
    store
        .create_auth_key(&NewAuthKey {
            user: user.id,
            reusable,
            ephemeral: false,
            tags: Vec::new(),
            expires: None,
            now,
        })
        .unwrap()
        .secret
}

/// Waits until every node's configuration satisfies `check`, or fails after 10 s.
async fn wait_all(
    nodes: &mut [watch::Receiver<Option<InterfaceConfig>>],
    what: &str,
    check: impl Fn(usize, &InterfaceConfig) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for (i, rx) in nodes.iter_mut().enumerate() {
        let result = tokio::time::timeout_at(
            deadline,
            rx.wait_for(|c| c.as_ref().is_some_and(|c| check(i, c))),
        )
        .await;
        assert!(
            result.is_ok(),
            "node {i}: {what} did not happen within 10 s"
        );
    }
}

#[tokio::test]
async fn three_nodes_join_and_see_each_other() {
    let dir = temp_dir();
    let coordinator = start_coordinator(&dir, |_| {}).await;
    let (store, server, addr) = (&coordinator.store, &coordinator.server, coordinator.addr);
    let secret = auth_key(&**store, "alice@example.com", true);

    let mut receivers = Vec::new();
    let mut clients = Vec::new();
    let mut node_keys = Vec::new();
    for n in 0..3 {
        let state = Persisted::load_or_create(&dir.0.join(format!("node{n}"))).unwrap();
        node_keys.push(state.node_key.public());
        let mut config = RunConfig::new(addr);
        config.auth_key = Some(secret.clone());
        config.hostinfo.hostname = format!("node{n}");
        config.backoff_min = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        let (tx, rx) = watch::channel(None);
        clients.push(tokio::spawn(run(config, state, tx)));
        receivers.push(rx);
    }

    let peer_key_bytes: Vec<[u8; 32]> = node_keys.iter().map(|k| *k.as_bytes()).collect();
    wait_all(&mut receivers, "seeing both other nodes", |i, config| {
        let peers: Vec<[u8; 32]> = config.device.peers.keys().map(|k| *k.as_bytes()).collect();
        peers.len() == 2
            && peer_key_bytes
                .iter()
                .enumerate()
                .all(|(j, key)| (j == i) != peers.contains(key))
    })
    .await;
    for rx in &receivers {
        let config = rx.borrow().clone().unwrap();
        let v4 = config
            .net
            .addresses
            .iter()
            .find(|a| a.addr().is_ipv4())
            .expect("an IPv4 tailnet address");
        assert!(
            "100.64.0.0/10"
                .parse::<ipnet::IpNet>()
                .unwrap()
                .contains(v4),
            "{v4} is outside 100.64.0.0/10"
        );
        for peer in config.device.peers.values() {
            assert!(
                peer.allowed_ips.iter().any(|ip| "100.64.0.0/10"
                    .parse::<ipnet::IpNet>()
                    .unwrap()
                    .contains(ip)),
                "a peer without its tailnet address in allowed IPs"
            );
        }
    }

    // The coordinator deletes node 2: the others drop it.
    let gone = store
        .list_nodes()
        .unwrap()
        .into_iter()
        .find(|n| n.node_key.as_bytes() == &peer_key_bytes[2])
        .expect("node 2 stored");
    store.delete_node(gone.id).unwrap();
    server.notify();
    wait_all(
        &mut receivers[..2],
        "dropping the deleted node",
        |_, config| {
            config.device.peers.len() == 1
                && !config
                    .device
                    .peers
                    .keys()
                    .any(|k| k.as_bytes() == &peer_key_bytes[2])
        },
    )
    .await;

    for client in clients {
        client.abort();
    }
}

/// Node keys with a 10 s lifetime: every node renews its key (`OldNodeKey` rotation, no auth
/// key) about a second before expiry, its own configuration gets the new private key and the
/// peers' configurations switch to the new public key.
#[tokio::test]
async fn node_keys_are_renewed_before_expiry() {
    let dir = temp_dir();
    let coordinator = start_coordinator(&dir, |config| {
        config.node_key_lifetime = Some(Duration::from_secs(10));
    })
    .await;
    let (store, addr) = (&coordinator.store, coordinator.addr);
    let now = SystemTime::now();
    let user = store.create_user("bob@example.com", now).unwrap();
    // A one-off key per node: renewal must not need it again.
    let mut receivers = Vec::new();
    let mut clients = Vec::new();
    let mut first_keys = Vec::new();
    for n in 0..2 {
        let secret = store
            .create_auth_key(&NewAuthKey {
                user: user.id,
                reusable: false,
                ephemeral: false,
                tags: Vec::new(),
                expires: None,
                now,
            })
            .unwrap()
            .secret;
        let state_dir = dir.0.join(format!("node{n}"));
        let state = Persisted::load_or_create(&state_dir).unwrap();
        first_keys.push(*state.node_key.public().as_bytes());
        let mut config = RunConfig::new(addr);
        config.auth_key = Some(secret);
        config.hostinfo.hostname = format!("node{n}");
        config.backoff_min = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        let (tx, rx) = watch::channel(None);
        clients.push(tokio::spawn(run(config, state, tx)));
        receivers.push(rx);
    }
    let own_key = |c: &InterfaceConfig| {
        *c.device
            .private_key
            .as_ref()
            .expect("a private key")
            .public_key()
            .as_bytes()
    };
    // First: each sees the other under its first key.
    wait_all(&mut receivers, "seeing the other's first key", |i, c| {
        own_key(c) == first_keys[i]
            && c.device
                .peers
                .keys()
                .any(|k| k.as_bytes() == &first_keys[1 - i])
    })
    .await;
    // Then, within 20 s: a new own key, and the other's new key (never a first key).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    for (i, rx) in receivers.iter_mut().enumerate() {
        let result = tokio::time::timeout_at(
            deadline,
            rx.wait_for(|c| {
                c.as_ref().is_some_and(|c| {
                    own_key(c) != first_keys[i]
                        && c.device.peers.len() == 1
                        && c.device
                            .peers
                            .keys()
                            .all(|k| !first_keys.contains(k.as_bytes()))
                })
            }),
        )
        .await;
        assert!(result.is_ok(), "node {i} never switched to renewed keys");
    }
    // The renewed key is the one on disk.
    for (n, first) in first_keys.iter().enumerate() {
        let state = Persisted::load_or_create(&dir.0.join(format!("node{n}"))).unwrap();
        assert_ne!(state.node_key.public().as_bytes(), first);
    }
    for client in &clients {
        assert!(!client.is_finished(), "a client stopped");
    }
    for client in clients {
        client.abort();
    }
}

/// A node's endpoints change while its stream runs: the client sends a lite map request
/// (`Stream=false, OmitPeers=true`) at once, and the peer's configuration gets the new endpoint.
#[tokio::test]
async fn changed_endpoints_reach_the_peer_without_reconnecting() {
    let dir = temp_dir();
    let coordinator = start_coordinator(&dir, |_| {}).await;
    let addr = coordinator.addr;
    let secret = auth_key(&*coordinator.store, "carol@example.com", true);
    let first: std::net::SocketAddr = "192.0.2.1:41641".parse().unwrap();
    let moved: std::net::SocketAddr = "198.51.100.7:41641".parse().unwrap();
    let (endpoints_tx, endpoints_rx) = watch::channel(vec![Endpoint::local(first)]);
    let mut receivers = Vec::new();
    let mut clients = Vec::new();
    for n in 0..2 {
        let state = Persisted::load_or_create(&dir.0.join(format!("node{n}"))).unwrap();
        let mut config = RunConfig::new(addr);
        config.auth_key = Some(secret.clone());
        config.hostinfo.hostname = format!("node{n}");
        config.backoff_min = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        if n == 0 {
            config.endpoints = vec![Endpoint::local(first)];
            config.endpoint_updates = Some(endpoints_rx.clone());
        }
        let (tx, rx) = watch::channel(None);
        clients.push(tokio::spawn(run(config, state, tx)));
        receivers.push(rx);
    }
    let peer_endpoint = |c: &InterfaceConfig| c.device.peers.values().next()?.endpoint;
    wait_all(
        &mut receivers[1..],
        "seeing node 0's first endpoint",
        |_, c| peer_endpoint(c) == Some(first),
    )
    .await;
    endpoints_tx.send(vec![Endpoint::local(moved)]).unwrap();
    wait_all(
        &mut receivers[1..],
        "seeing node 0's new endpoint",
        |_, c| peer_endpoint(c) == Some(moved),
    )
    .await;
    for client in &clients {
        assert!(!client.is_finished(), "a client stopped");
    }
    for client in clients {
        client.abort();
    }
}
