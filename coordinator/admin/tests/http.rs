//! The admin API over real sockets (loopback TCP and a unix socket), with requests written by
//! hand so the tests see exactly what goes over the wire.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{TempDir, add_node, nets, open};
use meshgate_coordinator_admin::{AdminApi, AdminError, Token, bind_tcp, bind_unix};
use meshgate_coordinator_store::{SqliteStore, Store};
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UnixStream};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";

struct Reply {
    status: u16,
    head: String,
    body: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Writes `head` (request line and headers, without the blank line) and `body`, reads the
/// whole answer (the server closes after one request).
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    head: &str,
    body: &[u8],
) -> Reply {
    let mut request = format!("{head}\r\n\r\n").into_bytes();
    request.extend_from_slice(body);
    stream.write_all(&request).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut raw))
        .await
        .expect("answer within 10 s")
        .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a complete answer");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status line");
    Reply {
        status,
        head: head.to_owned(),
        body: body.to_owned(),
    }
}

struct Api {
    addr: std::net::SocketAddr,
    store: Arc<SqliteStore>,
    changes: Arc<AtomicUsize>,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
    _dir: TempDir,
}

impl Drop for Api {
    fn drop(&mut self) {
        self.serving.abort();
    }
}

impl Api {
    async fn start() -> Api {
        let dir = TempDir::new("http");
        let store = Arc::new(open(&dir));
        let changes = Arc::new(AtomicUsize::new(0));
        let hook = {
            let changes = changes.clone();
            Arc::new(move || {
                changes.fetch_add(1, Ordering::SeqCst);
            })
        };
        let api = AdminApi::new(store.clone(), Token::new(TOKEN).unwrap(), hook);
        let listener = bind_tcp("127.0.0.1:0".parse().unwrap(), false)
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let serving = tokio::spawn(api.serve_tcp(listener));
        Api {
            addr,
            store,
            changes,
            serving,
            _dir: dir,
        }
    }

    /// `method path` with the right token and an optional JSON body.
    async fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Reply {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        self.raw(
            &format!(
                "{method} {path} HTTP/1.1\r\nHost: admin\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Length: {}",
                body.len()
            ),
            body.as_bytes(),
        )
        .await
    }

    async fn raw(&self, head: &str, body: &[u8]) -> Reply {
        exchange(TcpStream::connect(self.addr).await.unwrap(), head, body).await
    }

    fn changes(&self) -> usize {
        self.changes.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn requests_without_the_right_token_get_401() {
    let api = Api::start().await;
    for auth in [
        "",
        "\r\nAuthorization: Bearer wrong",
        "\r\nAuthorization: Bearer 0123456789abcdef0123456789abcde",
        "\r\nAuthorization: Basic MDEyMzQ1Njc4OWFiY2RlZg==",
        "\r\nAuthorization: 0123456789abcdef0123456789abcdef",
    ] {
        let reply = api
            .raw(&format!("GET /api/v1/nodes HTTP/1.1\r\nHost: a{auth}"), b"")
            .await;
        assert_eq!(reply.status, 401, "{auth:?}: {}", reply.body);
        assert!(
            reply
                .head
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{}",
            reply.head
        );
        assert!(!reply.body.contains(TOKEN));
        assert!(reply.json()["error"].as_str().unwrap().contains("token"));
    }
    // A mutation without the token changes nothing.
    let reply = api
        .raw(
            "POST /api/v1/authkeys HTTP/1.1\r\nHost: a\r\nContent-Length: 14",
            br#"{"user":"eve"}"#,
        )
        .await;
    assert_eq!(reply.status, 401);
    assert!(api.store.list_auth_keys().unwrap().is_empty());
    assert_eq!(api.changes(), 0);
    // Unknown paths are 401 too: nothing is revealed before the token.
    let reply = api.raw("GET /nope HTTP/1.1\r\nHost: a", b"").await;
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn every_route_works_and_mutations_call_the_hook() {
    let api = Api::start().await;

    // Auth keys: create (secret once), list (no secret), revoke.
    let reply = api
        .call(
            "POST",
            "/api/v1/authkeys",
            Some(
                &json!({"user": "alice@example.com", "reusable": true, "tags": ["tag:router"],
                         "expiry_seconds": 3600}),
            ),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.body);
    assert!(reply.head.contains("application/json"));
    let created = reply.json();
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("mgkey-"));
    assert_eq!(created["user"], "alice@example.com");
    assert_eq!(created["reusable"], true);
    assert_eq!(created["tags"], json!(["tag:router"]));
    assert!(created["expires"].is_u64());
    let key_id = created["id"].as_i64().unwrap();
    assert_eq!(api.changes(), 1);

    let reply = api.call("GET", "/api/v1/authkeys", None).await;
    assert_eq!(reply.status, 200);
    assert!(!reply.body.contains(&secret) && !reply.body.contains("secret"));
    assert_eq!(reply.json()[0]["id"], key_id);
    assert_eq!(reply.json()[0]["usable"], true);

    // Nodes and routes (registered through the store, as the server would).
    let router = add_node(
        &*api.store,
        1,
        "router",
        "alice",
        &["10.1.0.0/24", "0.0.0.0/0", "::/0"],
    );
    let laptop = add_node(&*api.store, 2, "laptop", "bob", &[]);
    let reply = api.call("GET", "/api/v1/nodes", None).await;
    assert_eq!(reply.status, 200);
    let nodes = reply.json();
    assert_eq!(nodes.as_array().unwrap().len(), 2);
    assert_eq!(nodes[0]["id"], router);
    assert_eq!(nodes[0]["name"], "router");
    assert_eq!(nodes[0]["advertised_routes"].as_array().unwrap().len(), 3);
    let reply = api.call("GET", "/api/v1/routes", None).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()[0]["approved"], json!([]));
    assert_eq!(api.changes(), 1, "reads must not call the hook");

    let reply = api
        .call(
            "POST",
            &format!("/api/v1/nodes/{router}/routes"),
            Some(&json!({"approve": ["10.1.0.0/24", "::/0"]})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.json()["served"],
        json!(["0.0.0.0/0", "10.1.0.0/24", "::/0"])
    );
    assert_eq!(api.changes(), 2);
    assert_eq!(
        api.store.routes(router).unwrap().approved,
        nets(&["0.0.0.0/0", "10.1.0.0/24", "::/0"])
    );
    // By name works too.
    let reply = api
        .call(
            "POST",
            "/api/v1/nodes/router/routes",
            Some(&json!({"approve": ["10.1.0.0/24"]})),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["approved"], json!(["10.1.0.0/24"]));
    let reply = api
        .call("GET", &format!("/api/v1/nodes/{router}"), None)
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["served_routes"], json!(["10.1.0.0/24"]));

    let reply = api
        .call("POST", &format!("/api/v1/nodes/{laptop}/expire"), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["expired"], true);
    assert_eq!(api.changes(), 4);

    let reply = api
        .call("DELETE", &format!("/api/v1/nodes/{laptop}"), None)
        .await;
    assert_eq!(reply.status, 204, "{}", reply.body);
    assert!(api.store.node(laptop).unwrap().is_none());
    assert_eq!(api.changes(), 5);

    let reply = api
        .call("DELETE", &format!("/api/v1/authkeys/{key_id}"), None)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json()["revoked"], true);
    assert!(api.store.list_auth_keys().unwrap()[0].revoked);
    assert_eq!(api.changes(), 6);
}

#[tokio::test]
async fn bad_requests_get_400_404_405_413_and_change_nothing() {
    let api = Api::start().await;
    let router = add_node(&*api.store, 1, "router", "alice", &["10.1.0.0/24"]);
    let keys_before = api.store.list_auth_keys().unwrap();

    // 400: malformed JSON, with the reason; unknown fields; unadvertised route; bad tag.
    let reply = api
        .raw(
            &format!(
                "POST /api/v1/authkeys HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Length: 9"
            ),
            b"{\"user\":,",
        )
        .await;
    assert_eq!(reply.status, 400);
    assert!(
        reply.json()["error"].as_str().unwrap().contains("bad JSON"),
        "{}",
        reply.body
    );
    let reply = api
        .call(
            "POST",
            "/api/v1/authkeys",
            Some(&json!({"user": "a", "reuseable": true})),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("reuseable"), "{}", reply.body);
    let reply = api
        .call(
            "POST",
            "/api/v1/authkeys",
            Some(&json!({"user": "a", "tags": ["router"]})),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    let reply = api
        .call(
            "POST",
            &format!("/api/v1/nodes/{router}/routes"),
            Some(&json!({"approve": ["10.9.0.0/24"]})),
        )
        .await;
    assert_eq!(reply.status, 400);
    assert!(reply.body.contains("does not advertise"), "{}", reply.body);
    let reply = api
        .call(
            "POST",
            &format!("/api/v1/nodes/{router}/routes"),
            Some(&json!({"approve": ["not a prefix"]})),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);

    // 404: unknown paths, nodes and keys.
    for path in [
        "/",
        "/api/v1/users",
        "/api/v1/nodes/999",
        "/api/v1/authkeys/x",
    ] {
        let method = if path == "/api/v1/authkeys/x" {
            "DELETE"
        } else {
            "GET"
        };
        let reply = api.call(method, path, None).await;
        assert_eq!(reply.status, 404, "{path}: {}", reply.body);
    }
    let reply = api.call("DELETE", "/api/v1/authkeys/42", None).await;
    assert_eq!(reply.status, 404, "{}", reply.body);
    let reply = api.call("POST", "/api/v1/nodes/nobody/expire", None).await;
    assert_eq!(reply.status, 404, "{}", reply.body);

    // 405 with Allow.
    let reply = api.call("DELETE", "/api/v1/routes", None).await;
    assert_eq!(reply.status, 405);
    assert!(reply.head.contains("allow: GET"), "{}", reply.head);
    let reply = api.call("PUT", "/api/v1/authkeys", None).await;
    assert_eq!(reply.status, 405);
    assert!(reply.head.contains("allow: GET, POST"), "{}", reply.head);

    // 413: a declared length over 64 KiB (answered before the body is sent), and a chunked
    // body that grows past it.
    let reply = api
        .raw(
            &format!(
                "POST /api/v1/authkeys HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Content-Length: 65537"
            ),
            b"",
        )
        .await;
    assert_eq!(reply.status, 413, "{}", reply.body);
    let mut chunked = format!("{:x}\r\n", 65 * 1024).into_bytes();
    chunked.extend(std::iter::repeat_n(b' ', 65 * 1024));
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    let reply = api
        .raw(
            &format!(
                "POST /api/v1/authkeys HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}\r\n\
                 Transfer-Encoding: chunked"
            ),
            &chunked,
        )
        .await;
    assert_eq!(reply.status, 413, "{}", reply.body);

    assert_eq!(api.store.list_auth_keys().unwrap(), keys_before);
    assert!(api.store.routes(router).unwrap().approved.is_empty());
    assert_eq!(api.changes(), 0, "a failed request called the hook");
}

#[tokio::test]
async fn non_loopback_tcp_is_refused_unless_allowed() {
    for addr in ["0.0.0.0:0", "[::]:0", "192.0.2.1:8080"] {
        let err = bind_tcp(addr.parse().unwrap(), false).await.unwrap_err();
        assert!(matches!(err, AdminError::NotLoopback(_)), "{addr}: {err}");
        assert!(err.to_string().contains("--admin-listen-any"), "{err}");
    }
    // Allowed: the address is no longer checked (192.0.2.1 is not ours, so binding it fails
    // for the kernel's reason, not ours).
    let err = bind_tcp("192.0.2.1:0".parse().unwrap(), true)
        .await
        .unwrap_err();
    assert!(matches!(err, AdminError::Listen { .. }), "{err}");
    assert!(
        bind_tcp("127.0.0.1:0".parse().unwrap(), false)
            .await
            .is_ok()
    );
}

#[tokio::test]
async fn the_unix_socket_is_0600_serves_and_replaces_a_stale_one() {
    let dir = TempDir::new("unix");
    let store: Arc<dyn Store> = Arc::new(open(&dir));
    let path = dir.0.join("admin.sock");
    // A stale socket file from a previous run.
    drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
    let listener = bind_unix(&path).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    // A live one is not taken over.
    let err = bind_unix(&path).await.unwrap_err();
    assert!(err.to_string().contains("another process"), "{err}");

    let api = AdminApi::new(store, Token::new(TOKEN).unwrap(), Arc::new(|| {}));
    let serving = tokio::spawn(api.serve_unix(listener));
    let reply = exchange(
        UnixStream::connect(&path).await.unwrap(),
        &format!("GET /api/v1/nodes HTTP/1.1\r\nHost: a\r\nAuthorization: Bearer {TOKEN}"),
        b"",
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.json(), json!([]));
    let reply = exchange(
        UnixStream::connect(&path).await.unwrap(),
        "GET /api/v1/nodes HTTP/1.1\r\nHost: a",
        b"",
    )
    .await;
    assert_eq!(reply.status, 401);
    serving.abort();

    // Not a socket: refused, left alone.
    let file = dir.0.join("plain");
    std::fs::write(&file, "x").unwrap();
    assert!(bind_unix(&file).await.is_err());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "x");
}
