//! Shared by the loopback tests: a server on a temporary SQLite file, ts2021 clients
//! (controlhttp + h2) and map stream readers. Every wait is bounded by a timeout.

// Each test binary uses a different part of this.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use meshgate_controlbase::{MachinePrivate, MachinePublic as ControlPublic};
use meshgate_coordinator::{Config, Server};
use meshgate_coordinator_store::{NewAuthKey, SqliteStore, Store};
use meshgate_tailcfg::{
    Hostinfo, MapFrameDecoder, MapRequest, MapResponse, NodePrivate, NodePublic, RegisterAuth,
    RegisterRequest, RegisterResponse,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::timeout;

pub const LIMIT: Duration = Duration::from_secs(10);
/// Deltas must arrive within this.
pub const PROMPT: Duration = Duration::from_secs(1);

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let dir = std::env::temp_dir().join(format!(
            "meshgate-coordinator-test-{}-{}-{nanos}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Running {
    pub server: Server,
    pub store: Arc<SqliteStore>,
    pub addr: SocketAddr,
    pub task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn start(dir: &TempDir) -> Running {
    start_with(dir, |_| {}).await
}

pub async fn start_with(dir: &TempDir, f: impl FnOnce(&mut Config)) -> Running {
    let store = Arc::new(SqliteStore::open(dir.0.join("coordinator.db")).unwrap());
    let mut config = Config::new(dir.0.join("state"));
    config.keep_alive = Duration::from_millis(100);
    config.maintenance_every = Duration::from_millis(100);
    f(&mut config);
    let server = Server::new(store.clone(), config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let s = server.clone();
    let task = tokio::spawn(async move {
        let _ = s.serve(listener).await;
    });
    Running {
        server,
        store,
        addr,
        task,
    }
}

pub fn auth_key(store: &dyn Store, reusable: bool) -> String {
    let now = SystemTime::now();
    let user = store.create_user("alice@example.com", now).unwrap();
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

/// A ts2021 client: one machine key, one node key, one HTTP/2 connection.
pub struct Client {
    pub node_key: NodePublic,
    /// The client end of its TCP connection.
    pub local: SocketAddr,
    pub send: h2::client::SendRequest<Bytes>,
}

impl Client {
    pub async fn connect(addr: SocketAddr, control: &ControlPublic) -> Client {
        let machine = MachinePrivate::generate().unwrap();
        let node_key = NodePrivate::generate().public();
        Client::connect_as(addr, control, machine, node_key).await
    }

    pub async fn connect_as(
        addr: SocketAddr,
        control: &ControlPublic,
        machine: MachinePrivate,
        node_key: NodePublic,
    ) -> Client {
        Client::connect_window(addr, control, machine, node_key, None).await
    }

    /// With `window`: the HTTP/2 stream window this client grants (a tiny one stalls the
    /// server after a few bytes until the client reads).
    pub async fn connect_window(
        addr: SocketAddr,
        control: &ControlPublic,
        machine: MachinePrivate,
        node_key: NodePublic,
        window: Option<u32>,
    ) -> Client {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let local = tcp.local_addr().unwrap();
        let (stream, _early) = timeout(
            LIMIT,
            meshgate_controlhttp::connect(tcp, "control.test", &machine, control, 130),
        )
        .await
        .unwrap()
        .unwrap();
        let mut builder = h2::client::Builder::new();
        if let Some(w) = window {
            builder.initial_window_size(w);
        }
        let (send, conn) = builder.handshake(stream).await.unwrap();
        tokio::spawn(conn);
        Client {
            node_key,
            local,
            send,
        }
    }

    pub async fn request(&mut self, path: &str, body: Vec<u8>) -> http::Response<h2::RecvStream> {
        let send = self.send.clone();
        let mut send = timeout(LIMIT, send.ready()).await.unwrap().unwrap();
        let req = http::Request::builder()
            .method("POST")
            .uri(format!("https://control.test{path}"))
            .header("content-type", "application/json")
            .body(())
            .unwrap();
        let (resp, mut tx) = send.send_request(req, false).unwrap();
        tx.send_data(Bytes::from(body), true).unwrap();
        timeout(LIMIT, resp).await.unwrap().unwrap()
    }

    pub async fn post(&mut self, path: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        let resp = self.request(path, body).await;
        let status = resp.status().as_u16();
        let mut rx = resp.into_body();
        let mut data = Vec::new();
        while let Some(chunk) = timeout(LIMIT, rx.data()).await.unwrap() {
            let chunk = chunk.unwrap();
            rx.flow_control().release_capacity(chunk.len()).unwrap();
            data.extend_from_slice(&chunk);
        }
        (status, data)
    }

    pub async fn register(&mut self, key: &str, hostname: &str) -> RegisterResponse {
        let req = RegisterRequest {
            version: 130,
            node_key: self.node_key,
            auth: Some(RegisterAuth {
                auth_key: key.into(),
            }),
            hostinfo: Some(Hostinfo {
                hostname: hostname.into(),
                os: "linux".into(),
                ..Hostinfo::default()
            }),
            ..RegisterRequest::default()
        };
        let (status, body) = self
            .post("/machine/register", serde_json::to_vec(&req).unwrap())
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }

    pub fn map_request(&self, stream: bool) -> MapRequest {
        MapRequest {
            version: 130,
            node_key: self.node_key,
            stream,
            keep_alive: stream,
            ..MapRequest::default()
        }
    }

    pub async fn stream(&mut self, compress: bool) -> MapStream {
        let mut req = self.map_request(true);
        if compress {
            req.compress = "zstd".into();
        }
        let resp = self
            .request("/machine/map", serde_json::to_vec(&req).unwrap())
            .await;
        assert_eq!(resp.status(), 200);
        MapStream {
            rx: resp.into_body(),
            decoder: MapFrameDecoder::new(),
            raw: Vec::new(),
            keep_alives: 0,
        }
    }
}

pub struct MapStream {
    pub rx: h2::RecvStream,
    pub decoder: MapFrameDecoder,
    /// Every byte received, for framing checks.
    pub raw: Vec<u8>,
    pub keep_alives: usize,
}

impl MapStream {
    /// The next message that is not a keep-alive, within `limit`.
    pub async fn next(&mut self, limit: Duration) -> MapResponse {
        timeout(limit, async {
            loop {
                if let Some(msg) = self.decoder.next() {
                    let msg = msg.unwrap();
                    if msg.is_keep_alive_only() {
                        self.keep_alives += 1;
                        continue;
                    }
                    return msg;
                }
                let chunk = self.rx.data().await.expect("stream ended").unwrap();
                self.rx
                    .flow_control()
                    .release_capacity(chunk.len())
                    .unwrap();
                self.raw.extend_from_slice(&chunk);
                self.decoder.push(&chunk);
            }
        })
        .await
        .expect("no map message in time")
    }

    /// Skips messages until one satisfies `f`, all within `limit`.
    pub async fn until(
        &mut self,
        limit: Duration,
        f: impl Fn(&MapResponse) -> bool,
    ) -> MapResponse {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let msg = self.next(left).await;
            if f(&msg) {
                return msg;
            }
        }
    }
}
