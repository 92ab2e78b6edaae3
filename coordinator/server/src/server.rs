//! The tokio shell: connections (ts2021 via controlhttp), HTTP/2, `/machine/register`,
//! `/machine/map` (lite updates, one-shot maps, streams with deltas and keep-alives).

use std::collections::HashMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::{Method, Request, Response, StatusCode};
use ipnet::IpNet;
use meshgate_controlbase::ServerHandshake;
use meshgate_controlhttp::{Accepted, accept};
use meshgate_coordinator_store::{
    Node as StoreNode, NodeRoutes, Registration, Store, StoreError, User as StoreUser,
};
use meshgate_policy::{NodeView, Policy};
use meshgate_tailcfg::{
    COMPRESS_ZSTD, DerpMap, Hostinfo, Login, MIN_SUPPORTED_CLIENT_VERSION, MachinePublic,
    MapRequest, MapResponse, NodeId, RegisterRequest, RegisterResponse, Time, User, UserId,
};
use rand_core::RngCore;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::socket::{TCP_KEEPALIVE_IDLE, TCP_USER_TIMEOUT};
use crate::tailnet::{DnsSettings, NodeMap, NodeRecord, Snapshot, Tailnet, diff, unknown_user};
use crate::{Error, load_or_create_key};

/// Server settings.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where the control key file lives (created if missing).
    pub state_dir: PathBuf,
    pub policy: Policy,
    pub derp_map: DerpMap,
    pub dns: DnsSettings,
    /// Keep-alive period on map streams; each wait adds a random jitter of up to a fifth of it
    /// (Tailscale's client gives up after 120 s of silence).
    pub keep_alive: Duration,
    /// Lifetime of a node key from registration or renewal (`None`: keys never expire).
    pub node_key_lifetime: Option<Duration>,
    /// Largest request body accepted (larger: 400).
    pub max_body: usize,
    /// Limit on the HTTP upgrade, the Noise handshake and the HTTP/2 preface.
    pub handshake_timeout: Duration,
    /// How often the maintenance task deletes idle ephemeral nodes (it also wakes at the
    /// earliest upcoming node key expiry, so peers see `Expired` on time).
    pub maintenance_every: Duration,
    /// An ephemeral node offline for this long is deleted (Tailscale removes ephemeral nodes
    /// some minutes after they go offline; 5 min here).
    pub ephemeral_idle: Duration,
    /// `TCP_USER_TIMEOUT` of accepted connections: a peer that acknowledges nothing for this
    /// long is dropped (its streams end, it goes offline, its subnets fail over).
    pub tcp_user_timeout: Duration,
    /// Idle time before TCP keepalive probes start (then every second), so a silent dead peer
    /// is found even when the server has nothing to send.
    pub tcp_keepalive_idle: Duration,
}

impl Config {
    /// Defaults: allow-all policy (what Tailscale does without a policy file), an empty DERP
    /// map, MagicDNS under `tailnet.meshgate`, keep-alive 50 s, node keys for 180 days,
    /// bodies up to 1 MiB, handshakes within 30 s, maintenance every minute, ephemeral nodes
    /// deleted after 5 min offline, dead peers dropped after [`TCP_USER_TIMEOUT`] (10 s)
    /// with keepalive probes from [`TCP_KEEPALIVE_IDLE`] (5 s) of silence.
    pub fn new(state_dir: impl Into<PathBuf>) -> Config {
        Config {
            state_dir: state_dir.into(),
            policy: allow_all(),
            derp_map: DerpMap::default(),
            dns: DnsSettings::default(),
            keep_alive: Duration::from_secs(50),
            node_key_lifetime: Some(Duration::from_secs(180 * 24 * 3600)),
            max_body: 1 << 20,
            handshake_timeout: Duration::from_secs(30),
            maintenance_every: Duration::from_secs(60),
            ephemeral_idle: Duration::from_secs(5 * 60),
            tcp_user_timeout: TCP_USER_TIMEOUT,
            tcp_keepalive_idle: TCP_KEEPALIVE_IDLE,
        }
    }
}

/// The policy in force when there is no policy file: everyone may reach everything.
pub fn allow_all() -> Policy {
    Policy::parse(r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#)
        .expect("the allow-all policy parses")
}

/// The coordination server. Cheap to clone (shared state).
#[derive(Clone)]
pub struct Server {
    inner: Arc<Inner>,
}

struct Inner {
    store: Arc<dyn Store>,
    handshake: ServerHandshake,
    tailnet: RwLock<Arc<Tailnet>>,
    /// Bumped on every change that may alter some node's map.
    changes: watch::Sender<u64>,
    /// The snapshot for a generation, built by the first stream that needs it.
    cache: tokio::sync::Mutex<Option<(u64, Arc<Snapshot>)>>,
    /// Open map streams per node (online while > 0).
    streams: Mutex<HashMap<NodeId, usize>>,
    stats: Counters,
    config: Config,
}

/// Map stream counters (monotonic, all streams together).
#[derive(Debug, Default)]
struct Counters {
    frames_sent: AtomicU64,
    generations_skipped: AtomicU64,
    capacity_waits: AtomicU64,
    ephemeral_deleted: AtomicU64,
}

/// A copy of the server's map stream counters ([`Server::stats`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Frames (full maps, deltas, keep-alives) handed to HTTP/2, all of them within the
    /// client's flow-control window.
    pub frames_sent: u64,
    /// Change generations a stream never sent on its own, because it was still waiting for the
    /// client to take the previous frame (or computing) when newer ones came: the next delta
    /// covers them.
    pub generations_skipped: u64,
    /// Times a stream had to wait for the client's flow-control window.
    pub capacity_waits: u64,
    /// Ephemeral nodes deleted by the maintenance task.
    pub ephemeral_deleted: u64,
}

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("public_key", &self.public_key())
            .field("generation", &*self.inner.changes.borrow())
            .finish_non_exhaustive()
    }
}

/// An HTTP answer that ends a request early.
struct Reply(StatusCode, String);

impl Server {
    /// Loads (or creates) the control key in `config.state_dir`.
    ///
    /// # Errors
    /// The key file cannot be read or created ([`load_or_create_key`]).
    pub fn new(store: Arc<dyn Store>, config: Config) -> Result<Server, Error> {
        let key = load_or_create_key(&config.state_dir)?;
        let key = meshgate_controlbase::MachinePrivate::from_bytes(*key.as_secret_bytes());
        let handshake = ServerHandshake::new(key, MIN_SUPPORTED_CLIENT_VERSION..=u16::MAX);
        let tailnet = Tailnet {
            policy: config.policy.clone(),
            derp_map: config.derp_map.clone(),
            dns: config.dns.clone(),
        };
        Ok(Server {
            inner: Arc::new(Inner {
                store,
                handshake,
                tailnet: RwLock::new(Arc::new(tailnet)),
                changes: watch::Sender::new(0),
                cache: tokio::sync::Mutex::new(None),
                streams: Mutex::new(HashMap::new()),
                stats: Counters::default(),
                config,
            }),
        })
    }

    /// The map stream and maintenance counters.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.stats;
        Stats {
            frames_sent: c.frames_sent.load(Ordering::Relaxed),
            generations_skipped: c.generations_skipped.load(Ordering::Relaxed),
            capacity_waits: c.capacity_waits.load(Ordering::Relaxed),
            ephemeral_deleted: c.ephemeral_deleted.load(Ordering::Relaxed),
        }
    }

    /// The control public key (`/key` serves it; clients pin it).
    pub fn public_key(&self) -> meshgate_controlbase::MachinePublic {
        self.inner.handshake.public()
    }

    /// The settings in force.
    pub fn tailnet(&self) -> Arc<Tailnet> {
        self.inner.tailnet.read().expect("tailnet lock").clone()
    }

    /// Replaces the policy (already parsed and validated) and updates every stream.
    pub fn set_policy(&self, policy: Policy) {
        self.update_tailnet(|t| t.policy = policy);
    }

    /// Replaces the DERP map and updates every stream.
    pub fn set_derp_map(&self, derp_map: DerpMap) {
        self.update_tailnet(|t| t.derp_map = derp_map);
    }

    fn update_tailnet(&self, f: impl FnOnce(&mut Tailnet)) {
        {
            let mut guard = self.inner.tailnet.write().expect("tailnet lock");
            let mut t = Tailnet::clone(&guard);
            f(&mut t);
            *guard = Arc::new(t);
        }
        self.notify();
    }

    /// Tells every stream that the store changed (call after changing it from outside, e.g.
    /// deleting a node or approving routes): each recomputes its map and sends the delta.
    pub fn notify(&self) {
        self.inner.changes.send_modify(|g| *g += 1);
    }

    /// A snapshot of the tailnet as of the latest notification.
    ///
    /// # Errors
    /// The store failed.
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, Error> {
        let mut cache = self.inner.cache.lock().await;
        let generation = *self.inner.changes.borrow();
        if let Some((g, snap)) = &*cache
            && *g == generation
        {
            return Ok(snap.clone());
        }
        let tailnet = self.tailnet();
        let store = self.inner.store.clone();
        let records = tokio::task::spawn_blocking(move || load_records(&*store)).await??;
        // The primary routers live here, in memory: each snapshot chooses from the last one's
        // (a restart starts afresh: the lowest online id), and shares its unchanged nodes.
        let snap = Arc::new(Snapshot::after(
            cache.as_ref().map(|(_, s)| &**s),
            tailnet,
            records,
            SystemTime::now(),
        ));
        *cache = Some((generation, snap.clone()));
        Ok(snap)
    }

    /// Accepts connections forever, one task each, and runs [`Server::maintain`] alongside
    /// (stopped when this returns or is dropped).
    ///
    /// # Errors
    /// Only if accepting from `listener` fails.
    pub async fn serve(&self, listener: TcpListener) -> Result<(), Error> {
        let server = self.clone();
        let _maintenance = AbortOnDrop(tokio::spawn(async move { server.maintain().await }));
        loop {
            let (tcp, peer) = listener.accept().await?;
            let server = self.clone();
            tokio::spawn(async move {
                if let Err(e) = server.serve_connection(tcp).await {
                    debug!(%peer, "connection ended: {e}");
                }
            });
        }
    }

    /// Runs forever: every `maintenance_every` deletes ephemeral nodes offline for
    /// `ephemeral_idle` (notifying the streams when any went), and at the earliest upcoming
    /// node key expiry notifies the streams so maps mark the node `Expired` (and its own stream
    /// ends). Store and snapshot failures are logged and retried at the next tick.
    pub async fn maintain(&self) {
        let every = self.inner.config.maintenance_every.max(MIN_WAKE);
        let mut changes = self.inner.changes.subscribe();
        let mut next_tick = tokio::time::Instant::now() + every;
        loop {
            changes.borrow_and_update();
            let now = SystemTime::now();
            let next_expiry = match self.snapshot().await {
                Ok(snap) => snap.next_key_expiry(),
                Err(e) => {
                    warn!("maintenance: {e}");
                    None
                }
            };
            if next_expiry.is_some_and(|t| t <= now) {
                // The snapshot predates an expiry: a new one marks the node expired.
                self.notify();
                tokio::time::sleep(MIN_WAKE).await;
                continue;
            }
            let mut wake = next_tick;
            if let Some(t) = next_expiry {
                let until = t.duration_since(now).unwrap_or_default();
                wake = wake.min(tokio::time::Instant::now() + until.max(MIN_WAKE));
            }
            tokio::select! {
                () = tokio::time::sleep_until(wake) => {}
                changed = changes.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    // A change may bring an earlier expiry: look again (not more often than
                    // MIN_WAKE).
                    tokio::time::sleep(MIN_WAKE).await;
                }
            }
            if tokio::time::Instant::now() >= next_tick {
                next_tick = tokio::time::Instant::now() + every;
                let idle = self.inner.config.ephemeral_idle;
                let deleted = self
                    .blocking(move |inner| {
                        inner
                            .store
                            .delete_expired_ephemeral(SystemTime::now(), idle)
                    })
                    .await;
                match deleted {
                    Ok(ids) if !ids.is_empty() => {
                        info!(?ids, "deleted idle ephemeral nodes");
                        self.inner
                            .stats
                            .ephemeral_deleted
                            .fetch_add(ids.len() as u64, Ordering::Relaxed);
                        self.notify();
                    }
                    Ok(_) => {}
                    Err(Reply(_, text)) => warn!("ephemeral clean-up: {text}"),
                }
            }
        }
    }

    /// Serves one TCP connection: `/key` or the ts2021 upgrade, then HTTP/2 until the client
    /// goes away.
    ///
    /// # Errors
    /// Handshake failures and HTTP/2 connection errors.
    pub async fn serve_connection(&self, tcp: TcpStream) -> Result<(), Error> {
        self.prepare_socket(&tcp);
        self.serve_stream(tcp).await
    }

    /// Sets the options every accepted control connection needs (failures are logged):
    /// `TCP_NODELAY`, and dead-peer detection ([`crate::socket`]) so a router whose host
    /// vanished goes offline (and loses its subnets) within `Config::tcp_user_timeout`.
    pub fn prepare_socket(&self, tcp: &TcpStream) {
        let c = &self.inner.config;
        if let Err(e) = crate::socket::prepare(tcp, c.tcp_user_timeout, c.tcp_keepalive_idle) {
            debug!("control socket options: {e}");
        }
    }

    /// Serves one connection over any byte stream, e.g. TLS in front of TCP (call
    /// [`Server::prepare_socket`] on the socket underneath, as [`Server::serve_connection`]
    /// does).
    ///
    /// # Errors
    /// Handshake failures and HTTP/2 connection errors.
    pub async fn serve_stream<S>(&self, stream: S) -> Result<(), Error>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let limit = self.inner.config.handshake_timeout;
        let accepted = tokio::time::timeout(limit, accept(stream, &self.inner.handshake, None))
            .await
            .map_err(|_| Error::Timeout("ts2021 handshake"))??;
        let conn = match accepted {
            Accepted::KeyServed { .. } => return Ok(()),
            Accepted::Noise(conn) => *conn,
        };
        let machine = MachinePublic::from_bytes(*conn.machine_key.as_bytes());
        let mut h2 = tokio::time::timeout(limit, h2::server::handshake(conn.stream))
            .await
            .map_err(|_| Error::Timeout("HTTP/2 preface"))??;
        while let Some(next) = h2.accept().await {
            let (req, respond) = next?;
            let server = self.clone();
            tokio::spawn(async move { server.handle(req, respond, machine).await });
        }
        Ok(())
    }

    async fn handle(
        self,
        req: Request<RecvStream>,
        mut respond: SendResponse<Bytes>,
        machine: MachinePublic,
    ) {
        let (method, path) = (req.method().clone(), req.uri().path().to_owned());
        let result = match (method, path.as_str()) {
            (Method::POST, "/machine/register") => {
                self.register(req.into_body(), &mut respond, machine).await
            }
            (Method::POST, "/machine/map") => {
                self.map(req.into_body(), &mut respond, machine).await
            }
            (_, "/machine/register" | "/machine/map") => Err(Reply(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} takes POST"),
            )),
            _ => Err(Reply(
                StatusCode::NOT_FOUND,
                format!("no such endpoint: {path}"),
            )),
        };
        if let Err(Reply(status, text)) = result {
            debug!(%machine, %path, %status, "{text}");
            send_reply(
                respond,
                status,
                "text/plain; charset=utf-8",
                text.into_bytes(),
            );
        }
    }

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, Reply> {
        let inner = self.inner.clone();
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => {
                warn!("store: {e}");
                Err(Reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("store error: {e}"),
                ))
            }
            Err(e) => Err(Reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("internal error: {e}"),
            )),
        }
    }

    async fn register(
        &self,
        mut body: RecvStream,
        respond: &mut SendResponse<Bytes>,
        machine: MachinePublic,
    ) -> Result<(), Reply> {
        let req: RegisterRequest = read_json(&mut body, self.inner.config.max_body).await?;
        let tailnet = self.tailnet();
        let (resp, changed) = self
            .blocking(move |inner| register_blocking(inner, &tailnet, machine, &req))
            .await?;
        if changed {
            self.notify();
        }
        if !resp.error.is_empty() {
            info!(%machine, "registration refused: {}", resp.error);
        }
        let json = serde_json::to_vec(&resp).expect("RegisterResponse serializes");
        send_reply_ref(respond, StatusCode::OK, "application/json", json);
        Ok(())
    }

    async fn map(
        &self,
        mut body: RecvStream,
        respond: &mut SendResponse<Bytes>,
        machine: MachinePublic,
    ) -> Result<(), Reply> {
        let req: MapRequest = read_json(&mut body, self.inner.config.max_body).await?;
        if req.node_key.is_zero() {
            return Err(Reply(StatusCode::BAD_REQUEST, "NodeKey is missing".into()));
        }
        let node = self
            .blocking(move |inner| inner.store.node_by_machine_key(&machine))
            .await?
            .ok_or_else(|| {
                Reply(
                    StatusCode::UNAUTHORIZED,
                    "this machine key is not registered".into(),
                )
            })?;
        if node.node_key != req.node_key {
            return Err(Reply(
                StatusCode::FORBIDDEN,
                "NodeKey is not the current node key of this machine".into(),
            ));
        }
        if node.is_expired(SystemTime::now()) {
            return Err(Reply(
                StatusCode::FORBIDDEN,
                "the node key has expired or logged out: register again".into(),
            ));
        }
        let tailnet = self.tailnet();
        let update = req.clone();
        let id = node.id;
        let changed = self
            .blocking(move |inner| apply_map_request(inner, &tailnet, node, &update))
            .await?;
        if changed {
            self.notify();
        }
        let compress = req.compress == COMPRESS_ZSTD;
        if !req.stream {
            if req.omit_peers {
                send_reply_ref(respond, StatusCode::OK, "application/json", Vec::new());
            } else {
                let map = self.map_now(id, &req).await?.response();
                let frame = meshgate_tailcfg::encode(&map, compress);
                send_reply_ref(respond, StatusCode::OK, "application/octet-stream", frame);
            }
            return Ok(());
        }
        self.stream_opened(id).await;
        let result = self.stream(id, &req, respond, compress).await;
        self.stream_closed(id).await;
        result
    }

    /// The current full map for `id`, if the node is still the one `req` speaks for.
    async fn map_now(&self, id: NodeId, req: &MapRequest) -> Result<NodeMap, Reply> {
        let snap = self.snapshot().await.map_err(|e| {
            Reply(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot compute the map: {e}"),
            )
        })?;
        match snap.record(id) {
            Some(r) if r.node.node_key == req.node_key && !r.node.is_expired(SystemTime::now()) => {
            }
            _ => {
                return Err(Reply(
                    StatusCode::FORBIDDEN,
                    "the node was removed, logged out or changed its key".into(),
                ));
            }
        }
        snap.map_for(id).ok_or_else(|| {
            Reply(
                StatusCode::FORBIDDEN,
                "the node was removed, logged out or changed its key".into(),
            )
        })
    }

    async fn stream(
        &self,
        id: NodeId,
        req: &MapRequest,
        respond: &mut SendResponse<Bytes>,
        compress: bool,
    ) -> Result<(), Reply> {
        let mut changes = self.inner.changes.subscribe();
        let mut seen = *changes.borrow_and_update();
        let mut last = self.map_now(id, req).await?;
        let head = Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/octet-stream")
            .body(())
            .expect("static response head");
        let Ok(mut send) = respond.send_response(head, false) else {
            return Ok(());
        };
        let frame = |m: &MapResponse| Bytes::from(meshgate_tailcfg::encode(m, compress));
        let stats = &self.inner.stats;
        if send_frame(&mut send, frame(&last.response()), stats)
            .await
            .is_err()
        {
            return Ok(());
        }
        let keep_alive = self.inner.config.keep_alive;
        loop {
            let wait = keep_alive + jitter(keep_alive / 5);
            tokio::select! {
                changed = changes.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let generation = *changes.borrow_and_update();
                    stats
                        .generations_skipped
                        .fetch_add(generation.saturating_sub(seen + 1), Ordering::Relaxed);
                    seen = generation;
                    let new = match self.map_now(id, req).await {
                        Ok(m) => m,
                        Err(Reply(_, text)) => {
                            debug!(id, "closing map stream: {text}");
                            let _ = send.send_data(Bytes::new(), true);
                            break;
                        }
                    };
                    // Waits for the client's window: changes meanwhile only bump the watch
                    // generation, and the next delta (from this full map) covers them all.
                    if let Some(delta) = diff(&last, &new)
                        && send_frame(&mut send, frame(&delta), stats).await.is_err()
                    {
                        break;
                    }
                    last = new;
                }
                () = tokio::time::sleep(wait) => {
                    if send_frame(&mut send, frame(&MapResponse::keep_alive()), stats)
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                _ = std::future::poll_fn(|cx| send.poll_reset(cx)) => break,
            }
        }
        Ok(())
    }

    async fn stream_opened(&self, id: NodeId) {
        let first = {
            let mut streams = self.inner.streams.lock().expect("streams lock");
            let n = streams.entry(id).or_insert(0);
            *n += 1;
            *n == 1
        };
        if first {
            self.set_online(id, true).await;
        }
    }

    async fn stream_closed(&self, id: NodeId) {
        let last = {
            let mut streams = self.inner.streams.lock().expect("streams lock");
            match streams.get_mut(&id) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    streams.remove(&id);
                    true
                }
            }
        };
        if last {
            self.set_online(id, false).await;
        }
    }

    async fn set_online(&self, id: NodeId, online: bool) {
        let result = self
            .blocking(
                move |inner| match inner.store.set_online(id, online, SystemTime::now()) {
                    Err(StoreError::NodeNotFound(_)) => Ok(()),
                    other => other,
                },
            )
            .await;
        if result.is_ok() {
            self.notify();
        }
    }
}

/// Every node with its user and routes.
fn load_records(store: &dyn Store) -> Result<Vec<NodeRecord>, StoreError> {
    let users: HashMap<UserId, StoreUser> =
        store.list_users()?.into_iter().map(|u| (u.id, u)).collect();
    let mut routes: HashMap<NodeId, NodeRoutes> = store
        .list_routes()?
        .into_iter()
        .map(|r| (r.node, r))
        .collect();
    Ok(store
        .list_nodes()?
        .into_iter()
        .map(|node| NodeRecord {
            user: users
                .get(&node.user)
                .cloned()
                .unwrap_or_else(|| unknown_user(node.user)),
            routes: routes.remove(&node.id).unwrap_or(NodeRoutes {
                node: node.id,
                ..NodeRoutes::default()
            }),
            node,
        })
        .collect())
}

fn refusal(text: impl Into<String>) -> RegisterResponse {
    RegisterResponse {
        error: text.into(),
        ..RegisterResponse::default()
    }
}

/// Store errors that are the client's fault, answered in `RegisterResponse.Error`.
fn is_refusal(e: &StoreError) -> bool {
    matches!(
        e,
        StoreError::UnknownAuthKey
            | StoreError::AuthKeyExpired(_)
            | StoreError::AuthKeyRevoked(_)
            | StoreError::AuthKeyUsed(_)
            | StoreError::TagNotPermitted { .. }
            | StoreError::InvalidTag(_)
            | StoreError::NodeKeyInUse(..)
            | StoreError::AddressesExhausted(_)
            | StoreError::InvalidHostinfo(_)
    )
}

fn authorized(store: &dyn Store, node: &StoreNode) -> Result<RegisterResponse, StoreError> {
    let user = store
        .user(node.user)?
        .unwrap_or_else(|| unknown_user(node.user));
    Ok(RegisterResponse {
        user: User {
            id: user.id,
            display_name: user.name.clone(),
            created: Time::from(user.created),
            ..User::default()
        },
        login: Login {
            id: user.id,
            provider: "meshgate".into(),
            login_name: user.name.clone(),
            display_name: user.name,
            ..Login::default()
        },
        machine_authorized: true,
        node_key_expired: false,
        ..RegisterResponse::default()
    })
}

/// `/machine/register`: returns the answer and whether the store changed.
fn register_blocking(
    inner: &Inner,
    tailnet: &Tailnet,
    machine: MachinePublic,
    req: &RegisterRequest,
) -> Result<(RegisterResponse, bool), StoreError> {
    let store = &*inner.store;
    let now = SystemTime::now();
    if req.node_key.is_zero() {
        return Ok((refusal("NodeKey is missing"), false));
    }
    let lifetime = inner.config.node_key_lifetime.map(|d| now + d);
    let logout = !req.expiry.is_zero() && req.expiry.to_system_time() <= now;
    let auth_key = req
        .auth
        .as_ref()
        .map(|a| a.auth_key.as_str())
        .filter(|k| !k.is_empty());
    let existing = store.node_by_machine_key(&machine)?;
    if let Some(node) = &existing {
        let holds = node.node_key == req.node_key
            || (!req.old_node_key.is_zero() && node.node_key == req.old_node_key);
        if logout {
            if !holds {
                return Ok((
                    refusal("logout for a node key this machine does not hold"),
                    false,
                ));
            }
            if node.ephemeral {
                store.delete_node(node.id)?;
            } else {
                store.expire_node(node.id, now)?;
            }
            let resp = RegisterResponse {
                node_key_expired: true,
                ..RegisterResponse::default()
            };
            return Ok((resp, true));
        }
        if auth_key.is_none() {
            let expired = node.is_expired(now);
            if node.node_key == req.node_key && !expired {
                let changed = match &req.hostinfo {
                    Some(hi) => apply_hostinfo(store, tailnet, node, hi)?,
                    None => false,
                };
                return Ok((authorized(store, node)?, changed));
            }
            if !req.old_node_key.is_zero() && node.node_key == req.old_node_key && !expired {
                let node = store.set_node_key(node.id, &req.node_key, lifetime)?;
                return Ok((authorized(store, &node)?, true));
            }
            if node.node_key == req.node_key {
                let resp = RegisterResponse {
                    node_key_expired: true,
                    error: "the node key has expired: register again with an auth key".into(),
                    ..RegisterResponse::default()
                };
                return Ok((resp, false));
            }
        }
    } else if logout {
        return Ok((refusal("this machine is not registered"), false));
    }
    let Some(auth_key) = auth_key else {
        return Ok((
            refusal("an auth key is required to register (interactive login is not supported)"),
            false,
        ));
    };
    let hostinfo = req.hostinfo.clone().unwrap_or_default();
    let reg = Registration {
        auth_key,
        machine_key: machine,
        node_key: req.node_key,
        hostname: &hostinfo.hostname,
        requested_tags: &hostinfo.request_tags,
        key_expiry: lifetime,
        now,
    };
    match store.register_with_auth_key(&reg) {
        Ok(node) => {
            if req.hostinfo.is_some() {
                apply_hostinfo(store, tailnet, &node, &hostinfo)?;
            }
            Ok((authorized(store, &node)?, true))
        }
        Err(e) if is_refusal(&e) => Ok((refusal(e.to_string()), false)),
        Err(e) => Err(e),
    }
}

/// The non-streaming parts of a map request: disco key, endpoints, Hostinfo (with advertised
/// routes and their auto-approval). Returns whether anything changed.
fn apply_map_request(
    inner: &Inner,
    tailnet: &Tailnet,
    node: StoreNode,
    req: &MapRequest,
) -> Result<bool, StoreError> {
    let store = &*inner.store;
    let mut changed = false;
    if !req.disco_key.is_zero() && node.disco_key != Some(req.disco_key) {
        store.set_disco_key(node.id, &req.disco_key)?;
        changed = true;
    }
    if !req.endpoints.is_empty() && node.endpoints != req.endpoints {
        store.set_endpoints(node.id, &req.endpoints)?;
        changed = true;
    }
    if let Some(hi) = &req.hostinfo {
        changed |= apply_hostinfo(store, tailnet, &node, hi)?;
    }
    Ok(changed)
}

/// Stores Hostinfo and its advertised routes (`RoutableIPs`), approving the ones the policy's
/// autoApprovers allow. Returns whether anything changed.
fn apply_hostinfo(
    store: &dyn Store,
    tailnet: &Tailnet,
    node: &StoreNode,
    hi: &Hostinfo,
) -> Result<bool, StoreError> {
    let mut changed = false;
    let json = serde_json::to_string(hi).expect("Hostinfo serializes");
    if node.hostinfo.as_deref() != Some(json.as_str()) {
        store.set_hostinfo(node.id, &json)?;
        changed = true;
    }
    let mut advertised: Vec<IpNet> = hi.routable_ips.iter().map(IpNet::trunc).collect();
    advertised.sort();
    advertised.dedup();
    let routes = store.routes(node.id)?;
    if routes.advertised != advertised {
        store.set_advertised_routes(node.id, &advertised)?;
        changed = true;
    }
    let user = store.user(node.user)?.map(|u| u.name).unwrap_or_default();
    let view = NodeView {
        id: node.id,
        user,
        tags: node.tags.clone(),
        addresses: vec![node.ipv4.into(), node.ipv6.into()],
        approved_routes: routes.served(),
    };
    let policy = &tailnet.policy;
    let newly: Vec<IpNet> = advertised
        .iter()
        .filter(|p| !routes.approved.contains(p))
        .filter(|p| {
            if p.prefix_len() == 0 {
                policy.auto_approve_exit_node(&view)
            } else {
                policy.auto_approve(&view, **p)
            }
        })
        .copied()
        .collect();
    if !newly.is_empty() {
        // The store only approves advertised prefixes: earlier approvals of withdrawn routes
        // are dropped here.
        let mut approved: Vec<IpNet> = routes
            .approved
            .iter()
            .filter(|p| advertised.contains(p))
            .copied()
            .chain(newly)
            .collect();
        approved.sort();
        approved.dedup();
        store.approve_routes(node.id, &approved)?;
        changed = true;
    }
    Ok(changed)
}

/// Reads the whole body (at most `max` bytes) and parses it as JSON.
async fn read_json<T: serde::de::DeserializeOwned>(
    body: &mut RecvStream,
    max: usize,
) -> Result<T, Reply> {
    let mut data = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| {
            Reply(
                StatusCode::BAD_REQUEST,
                format!("reading the request body: {e}"),
            )
        })?;
        let _ = body.flow_control().release_capacity(chunk.len());
        if data.len() + chunk.len() > max {
            return Err(Reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {max} bytes"),
            ));
        }
        data.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&data).map_err(|e| {
        Reply(
            StatusCode::BAD_REQUEST,
            format!("malformed JSON request: {e}"),
        )
    })
}

fn send_reply(mut respond: SendResponse<Bytes>, status: StatusCode, ct: &str, body: Vec<u8>) {
    send_reply_ref(&mut respond, status, ct, body);
}

fn send_reply_ref(respond: &mut SendResponse<Bytes>, status: StatusCode, ct: &str, body: Vec<u8>) {
    let head = Response::builder()
        .status(status)
        .header("content-type", ct)
        .body(())
        .expect("valid response head");
    match respond.send_response(head, body.is_empty()) {
        Ok(mut send) if !body.is_empty() => {
            if let Err(e) = send.send_data(Bytes::from(body), true) {
                debug!("sending the response body: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => debug!("sending the response: {e}"),
    }
}

/// The shortest sleep of the maintenance loop (bounds how often it can spin).
const MIN_WAKE: Duration = Duration::from_millis(20);

/// Aborts the task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Hands `data` to HTTP/2 only as the client's flow-control window allows, so at most one
/// frame per stream is ever buffered in the server: waits (without a time limit; the client's
/// own keep-alive timeout or a reset ends a dead stream) while the window is closed.
async fn send_frame(
    send: &mut SendStream<Bytes>,
    mut data: Bytes,
    stats: &Counters,
) -> Result<(), h2::Error> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let mut available = send.capacity();
        if available == 0 {
            stats.capacity_waits.fetch_add(1, Ordering::Relaxed);
        }
        while available == 0 {
            match std::future::poll_fn(|cx| send.poll_capacity(cx)).await {
                Some(Ok(n)) => available = n,
                Some(Err(e)) => return Err(e),
                None => return Err(h2::Error::from(h2::Reason::CANCEL)),
            }
        }
        let chunk = data.split_to(available.min(data.len()));
        send.send_data(chunk, false)?;
    }
    stats.frames_sent.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// A random duration in `[0, max]`.
fn jitter(max: Duration) -> Duration {
    let ms = u64::try_from(max.as_millis()).unwrap_or(u64::MAX);
    if ms == 0 {
        return Duration::ZERO;
    }
    Duration::from_millis(rand_core::OsRng.next_u64() % (ms + 1))
}
