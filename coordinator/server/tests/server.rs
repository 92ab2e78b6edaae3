//! The server over loopback TCP with real ts2021 clients (controlhttp + h2) and a real SQLite
//! file. Every wait is bounded by a timeout.

mod common;

use std::time::{Duration, SystemTime};

use common::*;
use meshgate_controlbase::MachinePrivate;
use meshgate_coordinator_store::{NewAuthKey, Store};
use meshgate_policy::Policy;
use meshgate_tailcfg::{Hostinfo, NodePrivate, RegisterRequest, RegisterResponse};
use tokio::net::TcpStream;
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_stream_deltas_policy_and_removal() {
    let dir = TempDir::new();
    let run = start(&dir).await;
    let key = auth_key(&*run.store, true);
    let control = run.server.public_key();

    let mut a = Client::connect(run.addr, &control).await;
    let resp = a.register(&key, "gw").await;
    assert!(resp.machine_authorized, "{resp:?}");
    assert!(resp.error.is_empty());
    assert_eq!(resp.login.login_name, "alice@example.com");

    let mut sa = a.stream(false).await;
    let first = sa.next(LIMIT).await;
    let me = first.node.as_ref().unwrap();
    assert_eq!(me.addresses[0].to_string(), "100.64.0.1/32");
    assert_eq!(me.name, "gw.tailnet.meshgate.");
    assert_eq!(me.online, Some(true));
    assert_eq!(first.peers.as_deref(), Some(&[][..]));
    assert!(first.packet_filter.is_some());

    // A second node joins: A hears of it promptly, as a delta.
    let mut b = Client::connect(run.addr, &control).await;
    assert!(b.register(&key, "pc").await.machine_authorized);
    let d = sa.until(PROMPT, |m| !m.peers_changed.is_empty()).await;
    assert!(d.peers.is_none(), "a delta, not a full map");
    assert_eq!(d.peers_changed[0].name, "pc.tailnet.meshgate.");
    assert_eq!(d.peers_changed[0].key, b.node_key);

    let mut sb = b.stream(false).await;
    let first_b = sb.next(LIMIT).await;
    assert_eq!(first_b.peers.as_ref().unwrap().len(), 1);
    // B's stream marks it online: A gets a patch.
    let p = sa
        .until(PROMPT, |m| {
            m.peers_changed_patch.iter().any(|p| p.online == Some(true))
        })
        .await;
    assert_eq!(p.peers_changed_patch[0].node_id, first_b.node.unwrap().id);

    // Keep-alives flow (100 ms in tests).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = tokio::time::Instant::now();
    run.server
        .set_policy(Policy::parse(r#"{"acls": []}"#).unwrap());
    let da = sa.until(PROMPT, |m| m.packet_filter.is_some()).await;
    let db = sb.until(PROMPT, |m| m.packet_filter.is_some()).await;
    assert!(t.elapsed() < PROMPT);
    assert_eq!(da.packet_filter.as_deref(), Some(&[][..]));
    assert_eq!(db.packet_filter.as_deref(), Some(&[][..]));
    assert_eq!(da.peers_removed.len(), 1, "deny all also hides the peer");
    assert!(sa.keep_alives > 0, "keep-alives arrive");

    // Allow again; then delete B in the store and notify: A gets PeersRemoved.
    run.server.set_policy(
        Policy::parse(r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#).unwrap(),
    );
    let again = sa.until(PROMPT, |m| !m.peers_changed.is_empty()).await;
    let b_id = again.peers_changed[0].id;
    run.store.delete_node(b_id).unwrap();
    run.server.notify();
    let gone = sa.until(PROMPT, |m| !m.peers_removed.is_empty()).await;
    assert_eq!(gone.peers_removed, [b_id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_auth_key_is_refused_and_stores_nothing() {
    let dir = TempDir::new();
    let run = start(&dir).await;
    let _ = auth_key(&*run.store, false);
    let mut c = Client::connect(run.addr, &run.server.public_key()).await;
    let resp = c
        .register(
            "mgkey-000000000000000000000000000000000000000000000000",
            "x",
        )
        .await;
    assert!(!resp.machine_authorized);
    assert!(resp.error.contains("auth key"), "{}", resp.error);
    let resp = c.register("", "x").await;
    assert!(
        resp.error.contains("auth key is required"),
        "{}",
        resp.error
    );
    assert!(run.store.list_nodes().unwrap().is_empty());

    // Not registered: no map.
    let (status, _) = c
        .post(
            "/machine/map",
            serde_json::to_vec(&c.map_request(false)).unwrap(),
        )
        .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests() {
    let dir = TempDir::new();
    let run = start(&dir).await;
    let key = auth_key(&*run.store, true);
    let mut c = Client::connect(run.addr, &run.server.public_key()).await;

    let (status, body) = c.post("/machine/register", b"{not json".to_vec()).await;
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("malformed JSON"));
    let (status, _) = c.post("/machine/nope", b"{}".to_vec()).await;
    assert_eq!(status, 404);
    let big = vec![b' '; (1 << 20) + 1];
    let (status, body) = c.post("/machine/register", big).await;
    assert_eq!(status, 413, "{}", String::from_utf8_lossy(&body));
    assert!(run.store.list_nodes().unwrap().is_empty());

    // Registered, but a map request with another node key is refused.
    assert!(c.register(&key, "gw").await.machine_authorized);
    let mut req = c.map_request(false);
    req.node_key = NodePrivate::generate().public();
    let (status, _) = c
        .post("/machine/map", serde_json::to_vec(&req).unwrap())
        .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lite_update_stores_endpoints_and_routes() {
    let dir = TempDir::new();
    let run = start(&dir).await;
    let key = auth_key(&*run.store, true);
    let mut c = Client::connect(run.addr, &run.server.public_key()).await;
    assert!(c.register(&key, "gw").await.machine_authorized);
    let mut req = c.map_request(false);
    req.omit_peers = true;
    req.endpoints = vec!["198.51.100.7:41641".parse().unwrap()];
    req.hostinfo = Some(Hostinfo {
        hostname: "gw".into(),
        routable_ips: vec!["10.1.0.0/24".parse().unwrap()],
        ..Hostinfo::default()
    });
    let (status, body) = c
        .post("/machine/map", serde_json::to_vec(&req).unwrap())
        .await;
    assert_eq!(status, 200);
    assert!(body.is_empty());
    let node = run.store.list_nodes().unwrap().remove(0);
    assert_eq!(node.endpoints, req.endpoints);
    let routes = run.store.routes(node.id).unwrap();
    assert_eq!(routes.advertised, ["10.1.0.0/24".parse().unwrap()]);
    assert!(routes.approved.is_empty(), "no autoApprovers");

    // Logout: the key expires and the map is refused.
    let logout = RegisterRequest {
        version: 130,
        node_key: c.node_key,
        expiry: RegisterRequest::LOGOUT_EXPIRY,
        ..RegisterRequest::default()
    };
    let (status, body) = c
        .post("/machine/register", serde_json::to_vec(&logout).unwrap())
        .await;
    assert_eq!(status, 200);
    let resp: RegisterResponse = serde_json::from_slice(&body).unwrap();
    assert!(resp.node_key_expired);
    let (status, _) = c
        .post(
            "/machine/map",
            serde_json::to_vec(&c.map_request(false)).unwrap(),
        )
        .await;
    assert_eq!(status, 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zstd_stream() {
    let dir = TempDir::new();
    let run = start(&dir).await;
    let key = auth_key(&*run.store, true);
    let mut c = Client::connect(run.addr, &run.server.public_key()).await;
    assert!(c.register(&key, "gw").await.machine_authorized);
    let mut s = c.stream(true).await;
    let first = s.next(LIMIT).await;
    assert!(first.node.is_some());
    assert_eq!(
        &s.raw[4..8],
        [0x28, 0xb5, 0x2f, 0xfd],
        "the first body is a zstd frame"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_keeps_nodes_and_control_key() {
    let dir = TempDir::new();
    let machine = MachinePrivate::generate().unwrap();
    let node_key = NodePrivate::generate().public();
    let (control, id) = {
        let run = start(&dir).await;
        let key = auth_key(&*run.store, false);
        let control = run.server.public_key();
        let mut c = Client::connect_as(run.addr, &control, machine.clone(), node_key).await;
        assert!(c.register(&key, "gw").await.machine_authorized);
        let id = run.store.list_nodes().unwrap()[0].id;
        (control, id)
    };
    let run = start(&dir).await;
    assert_eq!(run.server.public_key(), control, "same Noise key");
    // The client reconnects with the same keys and streams without registering again.
    let mut c = Client::connect_as(run.addr, &control, machine, node_key).await;
    let mut s = c.stream(false).await;
    let first = s.next(LIMIT).await;
    assert_eq!(first.node.unwrap().id, id);
    // Registering again with the same node key needs no auth key.
    let resp = c.register("", "gw").await;
    assert!(resp.machine_authorized, "{resp:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_on_close_and_auto_approved_routes() {
    let dir = TempDir::new();
    let run = start(&dir).await;
    run.server.set_policy(
        Policy::parse(
            r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
                "autoApprovers": {"routes": {"10.0.0.0/8": ["alice@example.com"]}}}"#,
        )
        .unwrap(),
    );
    let key = auth_key(&*run.store, true);
    let control = run.server.public_key();
    let mut a = Client::connect(run.addr, &control).await;
    assert!(a.register(&key, "gw").await.machine_authorized);
    let mut sa = a.stream(false).await;
    sa.next(LIMIT).await;

    let mut b = Client::connect(run.addr, &control).await;
    assert!(b.register(&key, "router").await.machine_authorized);
    let sb = b.stream(false).await;
    sa.until(PROMPT, |m| {
        m.peers_changed_patch.iter().any(|p| p.online == Some(true))
            || m.peers_changed.iter().any(|p| p.online == Some(true))
    })
    .await;

    // B advertises a route inside the auto-approved range: A sees it in B's AllowedIPs.
    let mut req = b.map_request(false);
    req.omit_peers = true;
    req.hostinfo = Some(Hostinfo {
        hostname: "router".into(),
        routable_ips: vec!["10.1.0.0/24".parse().unwrap()],
        ..Hostinfo::default()
    });
    let (status, _) = b
        .post("/machine/map", serde_json::to_vec(&req).unwrap())
        .await;
    assert_eq!(status, 200);
    let d = sa.until(PROMPT, |m| !m.peers_changed.is_empty()).await;
    assert!(
        d.peers_changed[0]
            .allowed_ips()
            .contains(&"10.1.0.0/24".parse().unwrap()),
        "{:?}",
        d.peers_changed[0]
    );
    assert_eq!(
        d.peers_changed[0].primary_routes,
        ["10.1.0.0/24".parse().unwrap()]
    );

    // B goes away: A is told it is offline.
    drop((sb, b));
    sa.until(PROMPT, |m| {
        m.peers_changed_patch
            .iter()
            .any(|p| p.online == Some(false))
    })
    .await;
    assert!(!run.store.list_nodes().unwrap()[1].online);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_endpoint_serves_the_control_key() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = TempDir::new();
    let run = start(&dir).await;
    let mut tcp = TcpStream::connect(run.addr).await.unwrap();
    tcp.write_all(b"GET /key?v=130 HTTP/1.1\r\nHost: control.test\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    timeout(LIMIT, tcp.read_to_string(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    let body = &reply[reply.find("\r\n\r\n").unwrap() + 4..];
    let parsed: meshgate_tailcfg::OverTlsPublicKeyResponse = serde_json::from_str(body).unwrap();
    assert_eq!(
        parsed.public_key.as_bytes(),
        run.server.public_key().as_bytes()
    );
    // The key file is private.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(
        dir.0
            .join("state")
            .join(meshgate_coordinator::KEY_FILE_NAME),
    )
    .unwrap()
    .permissions()
    .mode();
    assert_eq!(mode & 0o777, 0o600);
}

fn ephemeral_key(store: &dyn Store) -> String {
    let user = store.user_by_name("alice@example.com").unwrap().unwrap();
    store
        .create_auth_key(&NewAuthKey {
            user: user.id,
            reusable: false,
            ephemeral: true,
            tags: Vec::new(),
            expires: None,
            now: SystemTime::now(),
        })
        .unwrap()
        .secret
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_ephemeral_nodes_are_deleted() {
    let dir = TempDir::new();
    let run = start_with(&dir, |c| c.ephemeral_idle = Duration::from_millis(300)).await;
    let key = auth_key(&*run.store, true);
    let eph = ephemeral_key(&*run.store);
    let control = run.server.public_key();
    let mut a = Client::connect(run.addr, &control).await;
    assert!(a.register(&key, "gw").await.machine_authorized);
    let mut sa = a.stream(false).await;
    sa.next(LIMIT).await;

    // B registers with an ephemeral key and never streams (offline): deleted after 300 ms idle
    // by the 100 ms maintenance tick; A is told.
    let mut b = Client::connect(run.addr, &control).await;
    assert!(b.register(&eph, "ci-runner").await.machine_authorized);
    let joined = sa.until(PROMPT, |m| !m.peers_changed.is_empty()).await;
    let b_id = joined.peers_changed[0].id;
    let gone = sa
        .until(Duration::from_secs(3), |m| !m.peers_removed.is_empty())
        .await;
    assert_eq!(gone.peers_removed, [b_id]);
    assert_eq!(run.store.list_nodes().unwrap().len(), 1, "A stays");
    assert_eq!(run.server.stats().ephemeral_deleted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_expiry_reaches_peers_without_other_changes() {
    let dir = TempDir::new();
    let run = start(&dir).await;
    let key = auth_key(&*run.store, true);
    let control = run.server.public_key();
    let mut a = Client::connect(run.addr, &control).await;
    assert!(a.register(&key, "gw").await.machine_authorized);
    let mut sa = a.stream(false).await;
    sa.next(LIMIT).await;
    let mut b = Client::connect(run.addr, &control).await;
    assert!(b.register(&key, "pc").await.machine_authorized);
    let joined = sa.until(PROMPT, |m| !m.peers_changed.is_empty()).await;
    let b_id = joined.peers_changed[0].id;
    assert!(!joined.peers_changed[0].expired);

    // B's key now expires in 500 ms; nothing else changes after this notify.
    // (The store keeps whole seconds: read the expiry back.)
    let expiry = SystemTime::now() + Duration::from_millis(1500);
    let stored = run
        .store
        .set_node_key(b_id, &b.node_key, Some(expiry))
        .unwrap();
    let expiry = stored.key_expiry.unwrap();
    run.server.notify();
    let expired = sa
        .until(Duration::from_secs(3), |m| {
            m.peers_changed.iter().any(|p| p.id == b_id && p.expired)
        })
        .await;
    assert!(SystemTime::now() >= expiry, "{expired:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_client_coalesces_instead_of_queueing() {
    let dir = TempDir::new();
    let run = start(&dir).await;
    let key = auth_key(&*run.store, true);
    let control = run.server.public_key();
    let machine = MachinePrivate::generate().unwrap();
    let node_key = NodePrivate::generate().public();
    let mut a = Client::connect_as(run.addr, &control, machine.clone(), node_key).await;
    assert!(a.register(&key, "gw").await.machine_authorized);

    // A second connection of the same machine grants a 16-byte stream window: the first full
    // map already stalls until the client reads.
    let start = run.server.stats();
    let mut slow = Client::connect_window(run.addr, &control, machine, node_key, Some(16)).await;
    let mut stream = slow.stream(false).await;
    let deny = r#"{"acls": []}"#;
    let allow = r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
    for i in 0..50 {
        let text = if i % 2 == 0 { allow } else { deny };
        run.server.set_policy(Policy::parse(text).unwrap());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let stalled = run.server.stats();
    assert_eq!(
        stalled.frames_sent, start.frames_sent,
        "nothing completes while the client does not read"
    );
    assert!(
        stalled.capacity_waits > start.capacity_waits,
        "{start:?} {stalled:?}"
    );

    // The client reads: the full map, then (at most) one delta that already has the final,
    // deny-all policy; 50 policy edits did not become 50 queued frames.
    let first = stream.next(LIMIT).await;
    assert!(first.peers.is_some(), "the full map comes first");
    stream
        .until(LIMIT, |m| m.packet_filter.as_deref() == Some(&[][..]))
        .await;
    let done = run.server.stats();
    let sent = done.frames_sent - start.frames_sent;
    assert!(
        sent <= 4,
        "{sent} frames for 50 edits (keep-alives included)"
    );
    assert!(
        done.generations_skipped - start.generations_skipped >= 40,
        "{done:?}"
    );
}
