//! The admin HTTP API next to a running coordinator, all in this process over loopback: an
//! auth key created over the API registers a real control client, the router's advertised
//! route is approved over the API and reaches the other node's WireGuard configuration at once
//! (no data_version poll runs here: only the API's change hook can tell the server), and the
//! node list over the API shows the node online with the route served.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use std::time::Instant;

use ipnet::IpNet;
use meshgate_control::client::{RunConfig, run};
use meshgate_control::state::Persisted;
use meshgate_coordinator::{Config, Server};
use meshgate_coordinator_admin::{AdminApi, Token, bind_tcp};
use meshgate_coordinator_store::{SqliteStore, Store};
use meshgate_e2e::{TempDir, meshgate_bin};
use meshgate_wg::InterfaceConfig;
use serde_json::{Value, json};
use tokio::sync::watch;

const ROUTE: &str = "10.77.0.0/24";

/// Where the admin API listens.
#[derive(Clone, Debug)]
enum Target {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// One request to the admin API (HTTP/1.1 written by hand, the server closes after it):
/// status and JSON body (`null` when empty).
async fn call(
    target: &Target,
    token: &str,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    fn exchange(mut stream: impl Read + Write, request: &str) -> String {
        stream.write_all(request.as_bytes()).unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).unwrap();
        raw
    }
    let target = target.clone();
    let raw = tokio::task::spawn_blocking(move || match target {
        Target::Tcp(addr) => {
            let stream = std::net::TcpStream::connect(addr).unwrap();
            stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            exchange(stream, &request)
        }
        Target::Unix(path) => {
            let stream = std::os::unix::net::UnixStream::connect(path).unwrap();
            stream.set_read_timeout(Some(TIMEOUT)).unwrap();
            exchange(stream, &request)
        }
    })
    .await
    .unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").expect("a complete answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    let body = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    };
    (status, body)
}

const TIMEOUT: Duration = Duration::from_secs(10);

fn node_named<'a>(nodes: &'a Value, hostname: &str) -> &'a Value {
    nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["hostname"] == hostname)
        .unwrap_or_else(|| panic!("no {hostname} in {nodes:#}"))
}

#[tokio::test]
async fn auth_key_and_route_approval_over_the_admin_api() {
    let dir = TempDir::new("admin-api");
    let store = Arc::new(SqliteStore::open(dir.0.join("coordinator.db")).unwrap());
    let server = Server::new(store.clone(), Config::new(dir.0.join("control"))).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control = listener.local_addr().unwrap();
    let serving = {
        let server = server.clone();
        tokio::spawn(async move { server.serve(listener).await })
    };
    // The admin API as `coordinator serve` starts it: the server's store, notify as the hook.
    let token = Token::generate();
    let hook = {
        let server = server.clone();
        Arc::new(move || server.notify())
    };
    let api = AdminApi::new(store.clone() as Arc<dyn Store>, token.clone(), hook);
    let admin_listener = bind_tcp("127.0.0.1:0".parse().unwrap(), false)
        .await
        .unwrap();
    let admin = Target::Tcp(admin_listener.local_addr().unwrap());
    let admin_serving = tokio::spawn(api.serve_tcp(admin_listener));
    let token = token.expose().to_owned();

    let (status, created) = call(
        &admin,
        &token,
        "POST",
        "/api/v1/authkeys",
        Some(json!({"user": "e2e@example.com", "reusable": true})),
    )
    .await;
    assert_eq!(status, 201, "{created:#}");
    let secret = created["secret"].as_str().unwrap().to_owned();

    // Two nodes join with it: the router advertises ROUTE, the other accepts routes.
    let route: IpNet = ROUTE.parse().unwrap();
    let mut receivers = Vec::new();
    let mut clients = Vec::new();
    for (n, hostname) in ["router", "client"].into_iter().enumerate() {
        let state = Persisted::load_or_create(&dir.0.join(hostname)).unwrap();
        let mut config = RunConfig::new(control);
        config.auth_key = Some(secret.clone());
        config.hostinfo.hostname = hostname.to_owned();
        if n == 0 {
            config.hostinfo.routable_ips = vec![route];
        }
        config.wg.accept_routes = true;
        config.backoff_min = Duration::from_millis(50);
        config.backoff_max = Duration::from_millis(500);
        let (tx, rx) = watch::channel(None);
        clients.push(tokio::spawn(run(config, state, tx)));
        receivers.push(rx);
    }
    let sees_peer =
        |c: &Option<InterfaceConfig>| c.as_ref().is_some_and(|c| c.device.peers.len() == 1);
    for rx in &mut receivers {
        tokio::time::timeout(Duration::from_secs(10), rx.wait_for(sees_peer))
            .await
            .expect("both nodes see each other within 10 s")
            .unwrap();
    }
    let routes_to = |c: &InterfaceConfig| {
        c.device
            .peers
            .values()
            .any(|p| p.allowed_ips.contains(&route))
    };
    assert!(
        !routes_to(receivers[1].borrow().as_ref().unwrap()),
        "an unapproved route was served"
    );

    // The advertisement is stored with the router's first map request; wait for it (bounded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let router_id = loop {
        let (status, nodes) = call(&admin, &token, "GET", "/api/v1/nodes", None).await;
        assert_eq!(status, 200, "{nodes:#}");
        let router = node_named(&nodes, "router");
        if router["advertised_routes"] == json!([ROUTE]) {
            break router["id"].as_i64().unwrap();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the route was never advertised: {nodes:#}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    let (status, approved) = call(
        &admin,
        &token,
        "POST",
        &format!("/api/v1/nodes/{router_id}/routes"),
        Some(json!({"approve": [ROUTE]})),
    )
    .await;
    assert_eq!(status, 200, "{approved:#}");
    assert_eq!(approved["served"], json!([ROUTE]));
    // At once: nothing polls the database in this test, only the hook notifies the server.
    tokio::time::timeout(
        Duration::from_secs(3),
        receivers[1].wait_for(|c| c.as_ref().is_some_and(routes_to)),
    )
    .await
    .expect("the approved route reached the other node within 3 s")
    .unwrap();

    let (status, nodes) = call(&admin, &token, "GET", "/api/v1/nodes", None).await;
    assert_eq!(status, 200);
    let router = node_named(&nodes, "router");
    assert_eq!(router["approved_routes"], json!([ROUTE]), "{nodes:#}");
    assert_eq!(router["served_routes"], json!([ROUTE]), "{nodes:#}");
    assert_eq!(router["user"], "e2e@example.com");
    assert_eq!(router["online"], true, "{nodes:#}");
    let (status, keys) = call(&admin, &token, "GET", "/api/v1/authkeys", None).await;
    assert_eq!(status, 200);
    assert_eq!(keys[0]["used_count"], 2, "{keys:#}");
    // And nothing without the token.
    let (status, _) = call(&admin, "wrong", "GET", "/api/v1/nodes", None).await;
    assert_eq!(status, 401);

    for client in clients {
        client.abort();
    }
    admin_serving.abort();
    serving.abort();
}

/// Kills the child on drop (a failed assertion must not leave a server running).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The built binary: `coordinator serve` starts the admin API on `<db dir>/admin.sock` with a
/// fresh 0600 token; the API and the CLI work on the same store; SIGTERM removes the socket.
#[tokio::test]
async fn serve_starts_the_admin_api_on_its_unix_socket() {
    let dir = TempDir::new("admin-serve");
    let db = dir.0.join("coordinator.db");
    let bin = meshgate_bin();
    let log_path = dir.0.join("coordinator.log");
    let mut server = Killed(
        Command::new(&bin)
            .args(["coordinator", "serve", "--listen", "127.0.0.1:0", "--db"])
            .arg(&db)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log_path).unwrap())
            .spawn()
            .unwrap(),
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let socket = dir.0.join("admin.sock");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            server.0.try_wait().unwrap().is_none(),
            "serve exited:\n{}",
            log()
        );
        assert!(Instant::now() < deadline, "no admin socket:\n{}", log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let token_file = dir.0.join("admin.token");
    for file in [&token_file, &socket] {
        let mode = std::fs::metadata(file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", file.display());
    }
    let token = std::fs::read_to_string(&token_file)
        .unwrap()
        .trim()
        .to_owned();
    assert_eq!(token.len(), 64);
    assert!(!log().contains(&token), "the token was logged");
    let api = Target::Unix(socket.clone());

    let (status, _) = call(&api, "nope", "GET", "/api/v1/nodes", None).await;
    assert_eq!(status, 401);
    let (status, created) = call(
        &api,
        &token,
        "POST",
        "/api/v1/authkeys",
        Some(json!({"user": "api@example.com", "tags": ["tag:ci"]})),
    )
    .await;
    assert_eq!(status, 201, "{created:#}");
    // The CLI sees the API's key, and the API the CLI's.
    let out = Command::new(&bin)
        .args([
            "coordinator",
            "authkey",
            "create",
            "--user",
            "cli@example.com",
            "--db",
        ])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (status, keys) = call(&api, &token, "GET", "/api/v1/authkeys", None).await;
    assert_eq!(status, 200);
    let users: Vec<&str> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["api@example.com", "cli@example.com"]);
    let out = Command::new(&bin)
        .args(["coordinator", "nodes", "list", "--json", "--db"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let nodes: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(nodes, json!([]));

    // SIGTERM: a clean stop that takes the socket away.
    let term = Command::new("kill")
        .args(["-TERM", &server.0.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    while server.0.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "serve ignored SIGTERM:\n{}",
            log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!socket.exists(), "the socket outlived the server");
}
