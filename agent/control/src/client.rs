//! The tokio shell of the control client: `GET /key`, ts2021 (via `meshgate-controlhttp`),
//! HTTP/2 requests `/machine/register` and `/machine/map`, and [`run`], the reconnecting loop
//! that feeds the [`NetMap`] and publishes the WireGuard configuration on a `watch` channel.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use meshgate_tailcfg::{
    CAPABILITY_VERSION, COMPRESS_ZSTD, DerpMap, DiscoPublic, EndpointType, FilterRule, Hostinfo,
    MachinePrivate, MapFrameDecoder, MapRequest, MapResponse, NetInfo, NodePrivate,
    OverTlsPublicKeyResponse, RegisterAuth, RegisterRequest, RegisterResponse, Time,
};
use meshgate_wg::InterfaceConfig;
use rand_core::RngCore;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::endpoint::ControlServer;
use crate::netmap::{DnsView, NetMap, PeerDirectory};
use crate::state::Persisted;
use crate::wgconfig::{WgOptions, interface_config};

/// The control server's Noise public key (raw form used by the ts2021 layer).
pub use meshgate_controlbase::MachinePublic as ControlPublic;

/// Connecting, the Noise handshake, and one request each.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// No message (not even a keep-alive) for this long: the stream is dead (Tailscale's watchdog).
pub const MAP_WATCHDOG: Duration = Duration::from_secs(120);
/// Largest JSON reply to `/key` or `/machine/register` we read.
const MAX_REPLY: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("control {addr}: {source}")]
    Io {
        addr: String,
        source: std::io::Error,
    },
    #[error("control: {0}")]
    Noise(#[from] meshgate_controlhttp::Error),
    #[error("control HTTP/2: {0}")]
    H2(#[from] h2::Error),
    #[error("control answered {path} with {status}: {body}")]
    Status {
        path: String,
        status: u16,
        body: String,
    },
    #[error("control {what}: {detail}")]
    Protocol { what: &'static str, detail: String },
    #[error("control timed out during {0}")]
    Timeout(&'static str),
    /// `RegisterResponse.Error`: the server refused us (bad or used auth key, …). Not retried.
    #[error("registration refused by control: {0}")]
    RegisterRefused(String),
    /// Interactive login is needed (no usable auth key). Not retried.
    #[error("control wants an interactive login: visit {0} (or use an auth key)")]
    NeedsLogin(String),
    #[error("map stream: {0}")]
    Map(#[from] meshgate_tailcfg::Error),
    #[error("map stream ended")]
    MapEnded,
    /// The node key is due for renewal (or control said it expired): not an error as such;
    /// [`run`] rotates the key and reconnects.
    #[error("the node key is due for renewal")]
    KeyRenewalDue { expired: bool },
    /// The renewed node key could not be saved. Not retried.
    #[error("saving the renewed node key: {0}")]
    State(#[from] crate::state::StateError),
}

impl ClientError {
    /// Errors that reconnecting cannot fix.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            ClientError::RegisterRefused(_) | ClientError::NeedsLogin(_) | ClientError::State(_)
        )
    }
}

/// `GET /key?v=<capver>` over HTTP/1.1 (TLS for `https` servers): the control server's Noise
/// key (reference §5.1).
pub async fn fetch_control_key(server: &ControlServer) -> Result<ControlPublic, ClientError> {
    let io_err = |source| ClientError::Io {
        addr: server.to_string(),
        source,
    };
    let fetch = async {
        let mut tcp = server.dial().await.map_err(io_err)?;
        let request = format!(
            "GET /key?v={CAPABILITY_VERSION} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
            server.authority()
        );
        tcp.write_all(request.as_bytes()).await.map_err(io_err)?;
        let mut reply = Vec::new();
        (&mut tcp)
            .take(MAX_REPLY as u64)
            .read_to_end(&mut reply)
            .await
            .or_else(|e| {
                // Servers that close without TLS close_notify: the reply is complete anyway.
                if e.kind() == std::io::ErrorKind::UnexpectedEof && !reply.is_empty() {
                    Ok(reply.len())
                } else {
                    Err(e)
                }
            })
            .map_err(io_err)?;
        Ok::<_, ClientError>(reply)
    };
    let reply = timeout(CONNECT_TIMEOUT, fetch)
        .await
        .map_err(|_| ClientError::Timeout("GET /key"))??;
    let text = String::from_utf8_lossy(&reply);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status_line = head.lines().next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    if status != 200 {
        return Err(ClientError::Status {
            path: "/key".into(),
            status,
            body: excerpt(body.as_bytes()),
        });
    }
    // The JSON object itself (tolerates a chunked body, whose size lines surround it).
    let json = match (body.find('{'), body.rfind('}')) {
        (Some(a), Some(b)) if a < b => &body[a..=b],
        _ => body,
    };
    let key: OverTlsPublicKeyResponse =
        serde_json::from_str(json).map_err(|e| ClientError::Protocol {
            what: "/key reply",
            detail: e.to_string(),
        })?;
    if key.public_key.is_zero() {
        return Err(ClientError::Protocol {
            what: "/key reply",
            detail: "no publicKey (server too old for ts2021?)".into(),
        });
    }
    Ok(ControlPublic::from_bytes(*key.public_key.as_bytes()))
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(200)]);
    text.trim().to_owned()
}

/// One ts2021 connection to control, with HTTP/2 on top.
#[derive(Debug)]
pub struct ControlClient {
    host: String,
    send: h2::client::SendRequest<Bytes>,
    driver: JoinHandle<()>,
    /// The EarlyNoise JSON, if the server sent one.
    pub early_noise: Option<Vec<u8>>,
    /// Our disco key, sent in map requests (zero: none, control keeps what it had).
    pub disco_key: DiscoPublic,
}

impl Drop for ControlClient {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl ControlClient {
    /// Connects to `server` (TCP, then TLS for `https`), runs the Noise handshake with our
    /// machine key against `control`, and starts HTTP/2.
    pub async fn connect(
        server: &ControlServer,
        control: &ControlPublic,
        machine: &MachinePrivate,
    ) -> Result<ControlClient, ClientError> {
        let host = server.authority();
        let machine = meshgate_controlbase::MachinePrivate::from_bytes(*machine.as_secret_bytes());
        let setup = async {
            let conn = server.dial().await.map_err(|source| ClientError::Io {
                addr: server.to_string(),
                source,
            })?;
            let (stream, early) =
                meshgate_controlhttp::connect(conn, &host, &machine, control, CAPABILITY_VERSION)
                    .await?;
            let (send, connection) = h2::client::handshake(stream).await?;
            Ok::<_, ClientError>((send, connection, early))
        };
        let (send, connection, early_noise) = timeout(CONNECT_TIMEOUT, setup)
            .await
            .map_err(|_| ClientError::Timeout("connect"))??;
        let driver = tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "control HTTP/2 connection ended");
            }
        });
        Ok(ControlClient {
            host,
            send,
            driver,
            early_noise,
            disco_key: DiscoPublic::default(),
        })
    }

    /// POSTs `body` as JSON to `path`; returns the response once its head arrived.
    async fn post(&mut self, path: &str, body: Vec<u8>) -> Result<h2::RecvStream, ClientError> {
        let request = http::Request::builder()
            .method("POST")
            .uri(format!("https://{}{path}", self.host))
            .header("content-type", "application/json")
            .body(())
            .map_err(|e| ClientError::Protocol {
                what: "request",
                detail: e.to_string(),
            })?;
        let send = self.send.clone();
        let head = async {
            let mut send = send.ready().await?;
            let (response, mut tx) = send.send_request(request, false)?;
            tx.send_data(Bytes::from(body), true)?;
            Ok::<_, ClientError>(response.await?)
        };
        let response = timeout(CONNECT_TIMEOUT, head)
            .await
            .map_err(|_| ClientError::Timeout("request"))??;
        let status = response.status().as_u16();
        let mut rx = response.into_body();
        if status != 200 {
            let body = read_body(&mut rx).await.unwrap_or_default();
            return Err(ClientError::Status {
                path: path.to_owned(),
                status,
                body: excerpt(&body),
            });
        }
        Ok(rx)
    }

    /// `/machine/register` with `node_key` and, if given, an auth key (reference §5.5).
    /// `RegisterResponse.Error` becomes [`ClientError::RegisterRefused`], an `AuthURL`
    /// [`ClientError::NeedsLogin`]; other answers (`NodeKeyExpired`, `MachineAuthorized`
    /// false) are returned for the caller to act on.
    pub async fn register(
        &mut self,
        node_key: &NodePrivate,
        auth_key: Option<&str>,
        hostinfo: Hostinfo,
    ) -> Result<RegisterResponse, ClientError> {
        self.send_register(RegisterRequest {
            version: CAPABILITY_VERSION,
            node_key: node_key.public(),
            auth: auth_key.map(|k| RegisterAuth {
                auth_key: k.to_owned(),
            }),
            hostinfo: Some(hostinfo),
            ..RegisterRequest::default()
        })
        .await
    }

    /// Key rotation (reference §5.5): registers `new` with `OldNodeKey` = `old`. A known
    /// machine whose key has not expired needs no auth key; after `NodeKeyExpired` pass one.
    pub async fn rotate(
        &mut self,
        new: &NodePrivate,
        old: &NodePrivate,
        auth_key: Option<&str>,
        hostinfo: Hostinfo,
    ) -> Result<RegisterResponse, ClientError> {
        self.send_register(RegisterRequest {
            version: CAPABILITY_VERSION,
            node_key: new.public(),
            old_node_key: old.public(),
            auth: auth_key.map(|k| RegisterAuth {
                auth_key: k.to_owned(),
            }),
            hostinfo: Some(hostinfo),
            ..RegisterRequest::default()
        })
        .await
    }

    async fn send_register(
        &mut self,
        request: RegisterRequest,
    ) -> Result<RegisterResponse, ClientError> {
        let body = serde_json::to_vec(&request).expect("RegisterRequest serializes");
        let mut rx = self.post("/machine/register", body).await?;
        let reply = timeout(CONNECT_TIMEOUT, read_body(&mut rx))
            .await
            .map_err(|_| ClientError::Timeout("register"))??;
        let response: RegisterResponse =
            serde_json::from_slice(&reply).map_err(|e| ClientError::Protocol {
                what: "register reply",
                detail: e.to_string(),
            })?;
        if !response.error.is_empty() {
            return Err(ClientError::RegisterRefused(response.error));
        }
        if !response.auth_url.is_empty() {
            return Err(ClientError::NeedsLogin(response.auth_url));
        }
        Ok(response)
    }

    /// Logs `node_key` out (reference §5.5): `/machine/register` with `NodeKey` = the key and
    /// `Expiry` = [`RegisterRequest::LOGOUT_EXPIRY`] (1970-01-01T00:02:03Z). Control expires the
    /// key (and deletes an ephemeral node); `RegisterResponse.Error` becomes
    /// [`ClientError::RegisterRefused`].
    pub async fn logout(&mut self, node_key: &NodePrivate) -> Result<(), ClientError> {
        let request = RegisterRequest {
            version: CAPABILITY_VERSION,
            node_key: node_key.public(),
            expiry: RegisterRequest::LOGOUT_EXPIRY,
            ..RegisterRequest::default()
        };
        let body = serde_json::to_vec(&request).expect("RegisterRequest serializes");
        let mut rx = self.post("/machine/register", body).await?;
        let reply = timeout(CONNECT_TIMEOUT, read_body(&mut rx))
            .await
            .map_err(|_| ClientError::Timeout("logout"))??;
        let response: RegisterResponse =
            serde_json::from_slice(&reply).map_err(|e| ClientError::Protocol {
                what: "logout reply",
                detail: e.to_string(),
            })?;
        if !response.error.is_empty() {
            return Err(ClientError::RegisterRefused(response.error));
        }
        Ok(())
    }

    /// A "lite" map request (reference §5.6: `Stream=false, OmitPeers=true`): tells control new
    /// `endpoints` and `hostinfo` without opening a stream (control ignores them on streaming
    /// requests since capability version 68). The reply body, usually empty, is discarded.
    pub async fn lite_update(
        &mut self,
        node_key: &NodePrivate,
        hostinfo: Hostinfo,
        endpoints: &[Endpoint],
    ) -> Result<(), ClientError> {
        let request = MapRequest {
            version: CAPABILITY_VERSION,
            node_key: node_key.public(),
            stream: false,
            omit_peers: true,
            hostinfo: Some(hostinfo),
            endpoints: endpoints.iter().map(|e| e.addr).collect(),
            endpoint_types: endpoints.iter().map(|e| e.kind.into()).collect(),
            disco_key: self.disco_key,
            ..MapRequest::default()
        };
        let body = serde_json::to_vec(&request).expect("MapRequest serializes");
        let mut rx = self.post("/machine/map", body).await?;
        timeout(CONNECT_TIMEOUT, read_body(&mut rx))
            .await
            .map_err(|_| ClientError::Timeout("lite map request"))??;
        Ok(())
    }

    /// Opens the streaming `/machine/map` long poll (`Stream`, `KeepAlive`, zstd) for
    /// `node_key`, telling control our WireGuard `endpoints` (none: control keeps what it had).
    pub async fn map_stream(
        &mut self,
        node_key: &NodePrivate,
        hostinfo: Hostinfo,
        endpoints: &[Endpoint],
    ) -> Result<MapStream, ClientError> {
        let request = MapRequest {
            version: CAPABILITY_VERSION,
            compress: COMPRESS_ZSTD.to_owned(),
            keep_alive: true,
            node_key: node_key.public(),
            stream: true,
            hostinfo: Some(hostinfo),
            endpoints: endpoints.iter().map(|e| e.addr).collect(),
            endpoint_types: endpoints.iter().map(|e| e.kind.into()).collect(),
            disco_key: self.disco_key,
            ..MapRequest::default()
        };
        let body = serde_json::to_vec(&request).expect("MapRequest serializes");
        let body = self.post("/machine/map", body).await?;
        Ok(MapStream {
            body,
            decoder: MapFrameDecoder::new(),
        })
    }
}

/// Reads a whole (small) body, releasing flow-control capacity as it goes.
async fn read_body(rx: &mut h2::RecvStream) -> Result<Vec<u8>, ClientError> {
    let mut data = Vec::new();
    while let Some(chunk) = rx.data().await {
        let chunk = chunk?;
        let _ = rx.flow_control().release_capacity(chunk.len());
        if data.len() + chunk.len() > MAX_REPLY {
            return Err(ClientError::Protocol {
                what: "reply",
                detail: format!("longer than {MAX_REPLY} bytes"),
            });
        }
        data.extend_from_slice(&chunk);
    }
    Ok(data)
}

/// The map responses of one long poll, decoded from their frames.
#[derive(Debug)]
pub struct MapStream {
    body: h2::RecvStream,
    decoder: MapFrameDecoder,
}

impl MapStream {
    /// The next message; `Err(MapEnded)` when the server ends the stream. A frame that fails to
    /// decode is an error for that frame; an oversized frame leaves the stream unusable.
    pub async fn next(&mut self) -> Result<MapResponse, ClientError> {
        loop {
            if let Some(msg) = self.decoder.next() {
                return Ok(msg?);
            }
            if self.decoder.is_failed() {
                return Err(ClientError::Protocol {
                    what: "map stream",
                    detail: "framing failed".into(),
                });
            }
            match self.body.data().await {
                Some(chunk) => {
                    let chunk = chunk?;
                    let _ = self.body.flow_control().release_capacity(chunk.len());
                    self.decoder.push(&chunk);
                }
                None => return Err(ClientError::MapEnded),
            }
        }
    }
}

/// Renew the node key when at most this long is left before its expiry (or a tenth of its
/// lifetime, if that is less).
pub const RENEW_MARGIN_MAX: Duration = Duration::from_secs(24 * 3600);

fn millis(t: &Time) -> i64 {
    t.unix_secs()
        .saturating_mul(1000)
        .saturating_add(i64::from(t.subsec_nanos() / 1_000_000))
}

/// When to renew a node key that expires at `key_expiry` and was registered (or last seen
/// registered by this process) at `registered_at`: when the smaller of a tenth of that
/// lifetime and [`RENEW_MARGIN_MAX`] is left. `None`: the key never expires (zero time).
/// A restart shortens the apparent lifetime, so renewal only comes later, never early.
pub fn renewal_time(key_expiry: &Time, registered_at: &Time) -> Option<Time> {
    if key_expiry.is_zero() {
        return None;
    }
    let expiry = millis(key_expiry);
    let lifetime = expiry.saturating_sub(millis(registered_at)).max(0);
    let margin = (lifetime / 10).min(RENEW_MARGIN_MAX.as_millis() as i64);
    let at = expiry - margin;
    Some(Time::from_unix(
        at.div_euclid(1000),
        (at.rem_euclid(1000) as u32) * 1_000_000,
    ))
}

/// Generates a new node key, registers it with `OldNodeKey` = the current one (with the auth
/// key only if the current one `expired`), and persists it ([`Persisted::replace_node_key`]).
async fn renew_node_key(
    cfg: &RunConfig,
    state: &mut Persisted,
    expired: bool,
) -> Result<(), ClientError> {
    let control = fetch_control_key(&cfg.server).await?;
    let mut client = ControlClient::connect(&cfg.server, &control, &state.machine_key).await?;
    let new = NodePrivate::generate();
    let auth_key = if expired {
        cfg.auth_key.as_deref()
    } else {
        None
    };
    let reply = client
        .rotate(&new, &state.node_key, auth_key, cfg.hostinfo.clone())
        .await?;
    if reply.node_key_expired {
        return Err(ClientError::Protocol {
            what: "node key renewal",
            detail: "control says the new key expired".into(),
        });
    }
    let old = state.replace_node_key(new)?;
    tracing::info!(
        old = %old.public(),
        new = %state.node_key.public(),
        "renewed the node key"
    );
    Ok(())
}

/// Logs this node out of the control server at `server`: a fresh connection
/// with the machine key, then [`ControlClient::logout`] with the current node key. The caller
/// deletes the node key afterwards ([`Persisted::forget_node_key`]).
pub async fn logout(server: &ControlServer, state: &Persisted) -> Result<(), ClientError> {
    let control = fetch_control_key(server).await?;
    let mut client = ControlClient::connect(server, &control, &state.machine_key).await?;
    client.logout(&state.node_key).await
}

/// What [`run`] needs besides the keys.
#[derive(Clone, Debug)]
pub struct RunConfig {
    /// The control server (plain or TLS; see [`ControlServer::parse`]).
    pub server: ControlServer,
    pub auth_key: Option<String>,
    pub hostinfo: Hostinfo,
    /// Our WireGuard endpoints (`address:listen port`) and how each was found, sent in every
    /// map request.
    pub endpoints: Vec<Endpoint>,
    /// Later endpoint lists (the daemon re-reads its addresses): a change is sent at once as a
    /// lite map request and replaces `endpoints` for later streams. `None`: fixed endpoints.
    pub endpoint_updates: Option<watch::Receiver<Vec<Endpoint>>>,
    /// The latest netcheck result (home DERP region, latencies): sent in Hostinfo, a change
    /// at once as a lite map request. `None`: none to send.
    pub net_info_updates: Option<watch::Receiver<Option<NetInfo>>>,
    /// Where to publish the DERP map control sends (the relay needs it).
    pub derp_map_out: Option<watch::Sender<Option<DerpMap>>>,
    /// Where to publish the packet filter (every named set merged); `None` until control sends
    /// one, and then an empty list denies everything.
    pub filter_out: Option<watch::Sender<Option<Vec<FilterRule>>>>,
    /// Where to publish control's DNS configuration with our own name (MagicDNS).
    pub dns_out: Option<watch::Sender<Option<DnsView>>>,
    /// Our disco key (the public half), told to control so peers can ping us.
    pub disco_key: Option<DiscoPublic>,
    /// The WireGuard settings; `wg.fwmark` also marks the control connections (SO_MARK), so
    /// they skip the tailnet's table and never go through an exit node.
    pub wg: WgOptions,
    /// First reconnect delay; doubles per failure up to `backoff_max`, each with up to +50 %
    /// random jitter.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
}

impl RunConfig {
    pub fn new(server: impl Into<ControlServer>) -> Self {
        RunConfig {
            server: server.into(),
            auth_key: None,
            hostinfo: Hostinfo::default(),
            endpoints: Vec::new(),
            endpoint_updates: None,
            net_info_updates: None,
            derp_map_out: None,
            filter_out: None,
            dns_out: None,
            disco_key: None,
            wg: WgOptions::default(),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
        }
    }
}

/// One of our endpoints and how it was found (`MapRequest.EndpointTypes`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    pub kind: EndpointType,
}

impl Endpoint {
    /// An address of one of the host's interfaces.
    pub fn local(addr: SocketAddr) -> Endpoint {
        Endpoint {
            addr,
            kind: EndpointType::Local,
        }
    }
}

/// The delay before reconnect attempt `failures` (≥ 1): `min · 2^(failures-1)` capped at
/// `max`, plus a random 0–50 % of it.
pub fn backoff_delay(min: Duration, max: Duration, failures: u32, random: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(20);
    let base = min.saturating_mul(1 << exp).min(max);
    let jitter = base.mul_f64(f64::from(random % 1001) / 2000.0);
    base + jitter
}

/// Keeps a session with control up for as long as the task lives: fetch the control key,
/// connect, register (once, until it succeeds), stream the map, apply each message to the
/// NetMap and publish the WireGuard configuration on `out` whenever it changes. Failures
/// reconnect with [`backoff_delay`]; returns only on a fatal error
/// ([`ClientError::is_fatal`]).
///
/// The data path reads `out` and never waits for this loop.
pub async fn run(
    cfg: RunConfig,
    state: Persisted,
    out: watch::Sender<Option<InterfaceConfig>>,
) -> ClientError {
    run_with_peers(cfg, state, out, watch::channel(PeerDirectory::new()).0).await
}

/// [`run`], also publishing on `peers` what `meshgate status` shows about the peers (name,
/// tailnet IPs, online), by WireGuard public key, whenever it changes.
pub async fn run_with_peers(
    cfg: RunConfig,
    state: Persisted,
    out: watch::Sender<Option<InterfaceConfig>>,
    peers: watch::Sender<PeerDirectory>,
) -> ClientError {
    // Control must never be reached through the tailnet (an exit node's default route in our
    // table): its connections carry WireGuard's mark, which the table's rule skips.
    let mut cfg = cfg;
    cfg.server = cfg.server.with_fwmark(cfg.wg.fwmark);
    let mut state = state;
    let mut netmap = NetMap::new();
    let mut registered: Option<Time> = None;
    let mut failures = 0u32;
    loop {
        let mut progressed = false;
        let mut err = session(
            &cfg,
            &state,
            &out,
            &peers,
            &mut netmap,
            &mut registered,
            &mut progressed,
        )
        .await;
        if let ClientError::KeyRenewalDue { expired } = err {
            match renew_node_key(&cfg, &mut state, expired).await {
                Ok(()) => {
                    registered = Some(Time::now());
                    failures = 0;
                    continue;
                }
                Err(e) => err = e,
            }
        }
        if err.is_fatal() {
            tracing::error!(error = %err, "control client stopped");
            return err;
        }
        failures = if progressed { 1 } else { failures + 1 };
        let delay = backoff_delay(
            cfg.backoff_min,
            cfg.backoff_max,
            failures,
            rand_core::OsRng.next_u32(),
        );
        tracing::warn!(error = %err, retry_in = ?delay, "control session ended");
        tokio::time::sleep(delay).await;
    }
}

async fn session(
    cfg: &RunConfig,
    state: &Persisted,
    out: &watch::Sender<Option<InterfaceConfig>>,
    peers: &watch::Sender<PeerDirectory>,
    netmap: &mut NetMap,
    registered: &mut Option<Time>,
    progressed: &mut bool,
) -> ClientError {
    let result: Result<(), ClientError> = async {
        let control = fetch_control_key(&cfg.server).await?;
        let mut client = ControlClient::connect(&cfg.server, &control, &state.machine_key).await?;
        if let Some(disco) = cfg.disco_key {
            client.disco_key = disco;
        }
        if registered.is_none() {
            let reply = client
                .register(
                    &state.node_key,
                    cfg.auth_key.as_deref(),
                    cfg.hostinfo.clone(),
                )
                .await?;
            if reply.node_key_expired {
                tracing::warn!("control says the node key expired; renewing it");
                return Err(ClientError::KeyRenewalDue { expired: true });
            }
            if !reply.machine_authorized {
                tracing::warn!("registered; awaiting approval by the tailnet admin");
            }
            *registered = Some(Time::now());
        }
        let mut updates = cfg.endpoint_updates.clone();
        let mut endpoints = cfg.endpoints.clone();
        if let Some(updates) = &mut updates {
            let latest = updates.borrow_and_update();
            if *latest != endpoints && !latest.is_empty() {
                endpoints.clone_from(&latest);
            }
        }
        let mut net_infos = cfg.net_info_updates.clone();
        let mut hostinfo = cfg.hostinfo.clone();
        if let Some(rx) = &mut net_infos {
            hostinfo.net_info = rx.borrow_and_update().clone();
        }
        let mut stream = client
            .map_stream(&state.node_key, hostinfo.clone(), &endpoints)
            .await?;
        // When the self node's key expiry calls for renewal (see `renewal_time`).
        let mut renew_at: Option<tokio::time::Instant> = None;
        loop {
            let renewal = async {
                match renew_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            let endpoint_change = async {
                match &mut updates {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let net_info_change = async {
                match &mut net_infos {
                    Some(rx) => rx.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            let msg = tokio::select! {
                msg = timeout(MAP_WATCHDOG, stream.next()) => msg,
                open = net_info_change => {
                    let Some(rx) = net_infos.as_mut().filter(|_| open) else {
                        net_infos = None;
                        continue;
                    };
                    let latest = rx.borrow_and_update().clone();
                    if latest != hostinfo.net_info {
                        tracing::info!(preferred_derp = latest.as_ref().map(|n| n.preferred_derp), "network conditions changed; telling control");
                        hostinfo.net_info = latest;
                        client
                            .lite_update(&state.node_key, hostinfo.clone(), &endpoints)
                            .await?;
                    }
                    continue;
                }
                () = renewal => return Err(ClientError::KeyRenewalDue { expired: false }),
                open = endpoint_change => {
                    let Some(rx) = updates.as_mut().filter(|_| open) else {
                        updates = None;
                        continue;
                    };
                    let latest = rx.borrow_and_update().clone();
                    if latest != endpoints {
                        tracing::info!(endpoints = ?latest, "endpoints changed; telling control");
                        client
                            .lite_update(&state.node_key, hostinfo.clone(), &latest)
                            .await?;
                        endpoints = latest;
                    }
                    continue;
                }
            }
            .map_err(|_| ClientError::Timeout("map stream (no keep-alive)"))??;
            *progressed = true;
            // Recomputed on every message, keep-alives included, so that peers whose key
            // expired since the last change drop out; the watch only fires on a difference.
            netmap.apply(msg);
            renew_at = netmap
                .self_node
                .as_ref()
                .zip(registered.as_ref())
                .and_then(|(node, at)| renewal_time(&node.key_expiry, at))
                .map(|at| {
                    let wait = millis(&at).saturating_sub(millis(&Time::now())).max(0);
                    tokio::time::Instant::now() + Duration::from_millis(wait as u64)
                });
            if let Some(derp_maps) = &cfg.derp_map_out {
                derp_maps.send_if_modified(|current| {
                    let changed = *current != netmap.derp_map;
                    if changed {
                        current.clone_from(&netmap.derp_map);
                    }
                    changed
                });
            }
            if let Some(filters) = &cfg.filter_out {
                filters.send_if_modified(|current| {
                    let changed = *current != netmap.packet_filter;
                    if changed {
                        current.clone_from(&netmap.packet_filter);
                    }
                    changed
                });
            }
            if let Some(dns) = &cfg.dns_out {
                let view = netmap.dns_view();
                dns.send_if_modified(|current| {
                    let changed = *current != view;
                    if changed {
                        *current = view;
                    }
                    changed
                });
            }
            let directory = netmap.peer_directory();
            peers.send_if_modified(|current| {
                if *current == directory {
                    false
                } else {
                    *current = directory;
                    true
                }
            });
            let config = interface_config(
                netmap,
                &state.node_key,
                &cfg.wg,
                meshgate_tailcfg::Time::now(),
            );
            out.send_if_modified(|current| {
                if current.as_ref() == Some(&config) {
                    false
                } else {
                    *current = Some(config);
                    true
                }
            });
        }
    }
    .await;
    match result {
        Ok(()) => ClientError::MapEnded,
        Err(e) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_caps_and_jitters_within_half() {
        let min = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        assert_eq!(backoff_delay(min, max, 1, 0), min);
        assert_eq!(backoff_delay(min, max, 3, 0), Duration::from_secs(4));
        assert_eq!(backoff_delay(min, max, 30, 0), max);
        assert_eq!(
            backoff_delay(min, max, 1, 1000),
            Duration::from_millis(1500)
        );
        for r in [1, 77, 999, u32::MAX] {
            let d = backoff_delay(min, max, 100, r);
            assert!(d >= max && d <= max.mul_f64(1.5), "{d:?}");
        }
    }

    #[test]
    fn renewal_at_a_tenth_of_the_lifetime_or_a_day_before() {
        let t = |s: i64| Time::from_unix(s, 0);
        assert_eq!(renewal_time(&Time::ZERO, &t(100)), None, "never expires");
        // 100 s lifetime: renew 10 s before expiry.
        assert_eq!(renewal_time(&t(1100), &t(1000)), Some(t(1090)));
        // 180 days: a day before.
        let day = 86_400;
        assert_eq!(renewal_time(&t(180 * day), &t(0)), Some(t(179 * day)));
        // 5 days: half a day before (a tenth is less than a day).
        assert_eq!(renewal_time(&t(5 * day), &t(0)), Some(t(5 * day - day / 2)));
        // Already expired, or registered after the expiry: at once (the expiry itself).
        assert_eq!(renewal_time(&t(50), &t(100)), Some(t(50)));
        // Sub-second lifetimes keep millisecond precision.
        assert_eq!(renewal_time(&t(11), &t(1)), Some(Time::from_unix(10, 0)));
        assert!(!ClientError::KeyRenewalDue { expired: false }.is_fatal());
    }
}
