//! `meshgate daemon`: keeps a WireGuard interface in line with a desired state, which comes
//! from one of two sources:
//!
//! - `--config FILE` (wg-quick format): applied on start, re-read on SIGHUP (delta only).
//! - control mode (`--login-server URL`, or neither flag: then it waits for `meshgate
//!   up`): the control client (`meshgate_control::client::run_with_peers`) joins the tailnet
//!   and publishes each new `InterfaceConfig` (and the peers' names) on watches; the daemon
//!   applies it (the delta from the last one applied, or in full on start and after a
//!   failure), so the data path never waits on the control path. `meshgate up` (re)starts the
//!   session with changed settings, `down` stops it and takes the peers off the interface,
//!   `logout` also expires the node key at control and deletes it here.
//!
//! Either way the kernel (or wireguard-go) is compared with the desired state every
//! `--reconcile-every` and drift is mended, and the local API (`--socket`) answers `status`
//! (and in control mode `up`, `down`, `logout`).
//! Exiting never tears the interface down: forwarding goes on without us, and the next start
//! adopts it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ipnet::IpNet;
use meshgate_control::client::{ClientError, RunConfig, logout as logout_at, run_with_peers};
use meshgate_control::endpoint::ControlServer;
use meshgate_control::netmap::PeerDirectory;
use meshgate_control::state::Persisted;
use meshgate_control::wgconfig::WgOptions;
use meshgate_wg::{ApplyReport, Engine, InterfaceConfig, PrivateKey, wgconf};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::api::{self, Outcome, PeerStatus, Request, SelfStatus, Status, UpRequest};
use crate::cli::DaemonArgs;

type BoxError = Box<dyn std::error::Error>;

pub async fn run(args: DaemonArgs) -> Result<(), BoxError> {
    match &args.config {
        Some(config) => run_config(&args, config).await,
        None => run_control(&args).await,
    }
}

struct Signals {
    hangup: Signal,
    terminate: Signal,
    interrupt: Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        Ok(Signals {
            hangup: signal(SignalKind::hangup())?,
            terminate: signal(SignalKind::terminate())?,
            interrupt: signal(SignalKind::interrupt())?,
        })
    }
}

/// The local API: `Some` receiver of status requests while the socket is served.
fn start_api(
    socket: &Path,
    required: bool,
) -> Result<(mpsc::Receiver<Request>, Option<api::SocketGuard>), BoxError> {
    let (tx, rx) = mpsc::channel(16);
    match api::bind(socket) {
        Ok(listener) => {
            tokio::spawn(api::serve(listener, tx));
            tracing::info!(socket = %socket.display(), "local API listening");
            Ok((rx, Some(api::SocketGuard(socket.to_owned()))))
        }
        Err(e) if required => Err(e.into()),
        Err(e) => {
            tracing::warn!("no local API: {e}");
            Ok((rx, None))
        }
    }
}

/// `--config` mode: the file is the only source of desired state.
async fn run_config(args: &DaemonArgs, config_file: &Path) -> Result<(), BoxError> {
    let mut desired = load(args, config_file)?;
    let engine = Engine::new(args.backend.into())?;
    let report = engine.apply(&desired).await?;
    tracing::info!(interface = %desired.name, "applied: {report}");
    // The local API only when asked for (--socket), so this mode stays as it was without it;
    // a socket in use (another daemon) is logged, not fatal.
    let (mut requests, _guard) = match &args.socket {
        Some(socket) => start_api(socket, false)?,
        None => (mpsc::channel(1).1, None),
    };

    let mut signals = Signals::new()?;
    let mut ticker = tokio::time::interval(args.reconcile_every);
    ticker.tick().await;
    loop {
        let result = tokio::select! {
            _ = ticker.tick() => engine.apply(&desired).await,
            _ = signals.hangup.recv() => match load(args, config_file) {
                Ok(config) => {
                    let result = engine.apply_delta(&desired, &config).await;
                    // A configuration the system refused is not kept for the next reconcile.
                    if result.is_ok() {
                        desired = config;
                    }
                    result
                }
                Err(e) => {
                    tracing::error!("keeping the running configuration: {e}");
                    continue;
                }
            },
            Some(request) = requests.recv() => {
                let why = "this daemon runs from --config FILE; up, down and logout are for control mode (--login-server, or neither)";
                if let Some(reply) = request.refuse(why) {
                    let mut status = status(&engine, &desired.name, "config", None).await;
                    status.state = "config".to_owned();
                    let _ = reply.send(status);
                }
                continue;
            }
            _ = signals.terminate.recv() => break,
            _ = signals.interrupt.recv() => break,
        };
        log_result(&desired.name, result);
    }
    tracing::info!(interface = %desired.name, "stopping; the interface keeps forwarding");
    Ok(())
}

fn log_result(interface: &str, result: Result<ApplyReport, meshgate_wg::Error>) {
    match result {
        Ok(report) if report.changed_anything() => {
            tracing::info!(interface, "reconciled: {report}");
        }
        Ok(_) => tracing::debug!(interface, "in line with the configuration"),
        Err(e) => tracing::error!(interface, "apply failed: {e}"),
    }
}

/// Control mode's settings: from the daemon's flags, then changed by `meshgate up`.
#[derive(Clone, Debug, PartialEq)]
struct Settings {
    login_server: Option<String>,
    auth_key: Option<String>,
    hostname: Option<String>,
    advertise_routes: Vec<IpNet>,
    accept_routes: bool,
}

impl Settings {
    fn from_args(args: &DaemonArgs) -> Settings {
        Settings {
            login_server: args.login_server.clone(),
            auth_key: args.auth_key.clone(),
            hostname: args.hostname.clone(),
            advertise_routes: args.advertise_routes.clone(),
            accept_routes: args.accept_routes,
        }
    }

    /// These settings with what `up` gave (a field left out keeps its value).
    fn with(&self, up: UpRequest) -> Result<Settings, String> {
        let mut new = self.clone();
        if let Some(server) = up.login_server {
            new.login_server = Some(server);
        }
        if let Some(key) = up.auth_key {
            new.auth_key = Some(key);
        }
        if let Some(hostname) = up.hostname {
            new.hostname = Some(hostname);
        }
        if let Some(routes) = up.advertise_routes {
            new.advertise_routes = routes
                .iter()
                .map(|r| {
                    r.parse::<IpNet>()
                        .map(|n| n.trunc())
                        .map_err(|e| format!("--advertise-routes {r:?}: {e}"))
                })
                .collect::<Result<_, _>>()?;
        }
        if let Some(accept) = up.accept_routes {
            new.accept_routes = accept;
        }
        let Some(server) = &new.login_server else {
            return Err("no login server: give --login-server URL".into());
        };
        // A bad URL is refused here, before the running session is touched.
        ControlServer::parse(server, None).map_err(|e| e.to_string())?;
        Ok(new)
    }
}

/// A running control session: the client task and what it publishes.
struct Session {
    task: JoinHandle<ClientError>,
    configs: watch::Receiver<Option<InterfaceConfig>>,
    peers: watch::Receiver<PeerDirectory>,
    /// The fatal error the client ended with (`None` while it runs).
    ended: watch::Receiver<Option<String>>,
    /// The host's endpoints, re-read at every reconcile; a change goes to control at once.
    endpoints: watch::Sender<Vec<SocketAddr>>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the control client with `settings` (which name a login server) and the keys in the
/// state directory (created if missing: a new node key needs an auth key to register).
fn start_session(args: &DaemonArgs, settings: &Settings) -> Result<Session, String> {
    let server = settings
        .login_server
        .clone()
        .ok_or("no login server: give --login-server URL")?;
    let control = ControlServer::parse(&server, args.login_server_ca.as_deref())
        .map_err(|e| e.to_string())?;
    let persisted = Persisted::load_or_create(&args.state_dir).map_err(|e| e.to_string())?;
    let mut cfg = RunConfig::new(control);
    cfg.auth_key = settings.auth_key.clone();
    cfg.hostinfo.hostname = settings.hostname.clone().unwrap_or_else(system_hostname);
    cfg.hostinfo.os = "linux".to_owned();
    cfg.hostinfo.ipn_version = env!("CARGO_PKG_VERSION").to_owned();
    cfg.hostinfo.routable_ips = settings.advertise_routes.clone();
    cfg.endpoints = local_endpoints(args.port, &args.iface);
    let (endpoints, endpoint_updates) = watch::channel(cfg.endpoints.clone());
    cfg.endpoint_updates = Some(endpoint_updates);
    cfg.wg = WgOptions {
        interface: args.iface.clone(),
        listen_port: args.port,
        accept_routes: settings.accept_routes,
        ..WgOptions::default()
    };
    tracing::info!(
        server = %server,
        hostname = %cfg.hostinfo.hostname,
        endpoints = ?cfg.endpoints,
        "joining the tailnet"
    );
    let (config_tx, configs) = watch::channel(None::<InterfaceConfig>);
    let (peers_tx, peers) = watch::channel(PeerDirectory::new());
    let (ended_tx, ended) = watch::channel(None::<String>);
    let task = tokio::spawn(async move {
        let error = run_with_peers(cfg, persisted, config_tx, peers_tx).await;
        let _ = ended_tx.send(Some(error.to_string()));
        error
    });
    Ok(Session {
        task,
        configs,
        peers,
        ended,
        endpoints,
    })
}

/// Answers `up` once the session produced its first WireGuard configuration, ended with a
/// fatal error, or [`api::UP_WAIT`] passed.
async fn answer_up(
    mut configs: watch::Receiver<Option<InterfaceConfig>>,
    mut ended: watch::Receiver<Option<String>>,
    server: String,
    reply: oneshot::Sender<Outcome>,
) {
    let wait = async {
        let connected = configs.wait_for(Option::is_some).await.is_ok();
        if connected {
            return Ok(format!("up: connected to {server}"));
        }
        // The client ended: its error follows on `ended` (none if it was stopped).
        let error = ended
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|e| e.clone());
        Err(match error {
            Some(error) => format!("{error} (the session is down; fix it and run up again)"),
            None => "the session was stopped before it connected".to_owned(),
        })
    };
    let outcome = match tokio::time::timeout(api::UP_WAIT, wait).await {
        Ok(outcome) => outcome,
        Err(_) => Err(format!(
            "no network map from {server} within {}s; the daemon keeps trying (see its log; awaiting approval?)",
            api::UP_WAIT.as_secs()
        )),
    };
    let _ = reply.send(outcome);
}

/// Logs out at `server` (trusting `ca` besides the public roots) with the keys in `dir`, then
/// deletes the node key.
async fn answer_logout(
    server: String,
    ca: Option<PathBuf>,
    dir: PathBuf,
    reply: oneshot::Sender<Outcome>,
) {
    let outcome = async {
        let control = ControlServer::parse(&server, ca.as_deref()).map_err(|e| e.to_string())?;
        let persisted = Persisted::load_or_create(&dir).map_err(|e| e.to_string())?;
        logout_at(&control, &persisted).await.map_err(|e| {
            format!("{e}; the node key is kept and the session is down: run logout again")
        })?;
        persisted.forget_node_key().map_err(|e| e.to_string())?;
        Ok(format!(
            "logged out of {server}; the node key is deleted (meshgate up --auth-key KEY joins again)"
        ))
    }
    .await;
    let _ = reply.send(outcome);
}

/// `config` without its peers and their routes: what the interface keeps while down.
fn without_peers(config: &InterfaceConfig) -> InterfaceConfig {
    let mut config = config.clone();
    config.device.peers.clear();
    config.net.routes.clear();
    config
}

/// The session's configuration channel, or never (no session).
async fn next_config(session: &mut Option<Session>) -> bool {
    match session {
        Some(s) => s.configs.changed().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// Control mode: the control client's watch is the source of desired state; `meshgate
/// up/down/logout` start and stop the session. Without `--login-server` it waits for `up`.
async fn run_control(args: &DaemonArgs) -> Result<(), BoxError> {
    let engine = Engine::new(args.backend.into())?;
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::cli::DEFAULT_SOCKET));
    let (mut requests, _guard) = start_api(&socket, true)?;

    let mut settings = Settings::from_args(args);
    let mut session = match settings.login_server {
        Some(_) => Some(start_session(args, &settings)?),
        None => {
            tracing::info!(socket = %socket.display(), "waiting for `meshgate up`");
            None
        }
    };
    let mut state = if session.is_some() { "up" } else { "down" };
    let mut last_error: Option<String> = None;

    // What the system holds as far as we know (None: unknown, so the next apply is in full),
    // and the latest configuration control implies.
    let mut applied: Option<InterfaceConfig> = None;
    let mut desired: Option<InterfaceConfig> = None;
    let mut signals = Signals::new()?;
    let mut ticker = tokio::time::interval(args.reconcile_every);
    ticker.tick().await;
    loop {
        // A new desired configuration to apply, if any.
        let mut new: Option<InterfaceConfig> = None;
        tokio::select! {
            open = next_config(&mut session) => {
                let Some(mut current) = session.take() else { continue };
                if open {
                    new = current.configs.borrow_and_update().clone();
                    session = Some(current);
                } else {
                    // The client stopped: only a fatal error ends it. The interface keeps its
                    // last configuration; `up` starts again.
                    let error = match (&mut current.task).await {
                        Ok(error) => error.to_string(),
                        Err(e) => format!("the control client stopped: {e}"),
                    };
                    tracing::error!("control session ended: {error}; the interface keeps its last configuration (meshgate up to retry)");
                    last_error = Some(error);
                    state = "down";
                }
                if new.is_none() {
                    continue;
                }
            }
            _ = ticker.tick() => {
                if let Some(config) = &desired {
                    let result = engine.apply(config).await;
                    applied = result.is_ok().then(|| config.clone());
                    log_result(&config.name, result);
                }
                if let Some(s) = &session {
                    let found = local_endpoints(args.port, &args.iface);
                    s.endpoints.send_if_modified(|current| {
                        let changed = *current != found;
                        if changed {
                            *current = found;
                        }
                        changed
                    });
                }
                continue;
            }
            _ = signals.hangup.recv() => {
                tracing::info!("SIGHUP: nothing to re-read in control mode; reconciling");
                ticker.reset_immediately();
                continue;
            }
            Some(request) = requests.recv() => match request {
                Request::Status(reply) => {
                    let mut status = status(&engine, &args.iface, "control", settings.login_server.as_deref()).await;
                    status.state = state.to_owned();
                    status.error = last_error.clone();
                    if let Some(s) = &session {
                        let directory = s.peers.borrow();
                        for peer in &mut status.peers {
                            let Ok(key) = peer.public_key.parse::<meshgate_wg::PublicKey>() else { continue };
                            if let Some(info) = directory.get(key.as_bytes()) {
                                peer.name = (!info.name.is_empty()).then(|| info.name.clone());
                                peer.online = info.online;
                            }
                        }
                    }
                    let _ = reply.send(status);
                    continue;
                }
                Request::Up(up, reply) => {
                    let wanted = match settings.with(up) {
                        Ok(wanted) => wanted,
                        Err(e) => {
                            let _ = reply.send(Err(e));
                            continue;
                        }
                    };
                    if session.is_some() && wanted == settings {
                        let _ = reply.send(Ok("already up; nothing changed".to_owned()));
                        continue;
                    }
                    session = None;
                    settings = wanted;
                    match start_session(args, &settings) {
                        Ok(started) => {
                            state = "up";
                            last_error = None;
                            tokio::spawn(answer_up(
                                started.configs.clone(),
                                started.ended.clone(),
                                settings.login_server.clone().unwrap_or_default(),
                                reply,
                            ));
                            session = Some(started);
                        }
                        Err(e) => {
                            state = "down";
                            let _ = reply.send(Err(e));
                        }
                    }
                    continue;
                }
                Request::Down(reply) => {
                    let message = if session.take().is_some() {
                        "down: the control session stopped and the peers are off the interface (meshgate up resumes)"
                    } else {
                        "already down"
                    };
                    if state == "up" {
                        state = "down";
                    }
                    let _ = reply.send(Ok(message.to_owned()));
                    new = desired.as_ref().map(without_peers);
                    if new.is_none() {
                        continue;
                    }
                }
                Request::Logout(reply) => {
                    let Some(server) = settings.login_server.clone() else {
                        let _ = reply.send(Err("not logged in: no login server known (meshgate up --login-server URL first)".to_owned()));
                        continue;
                    };
                    if !Persisted::has_node_key(&args.state_dir) {
                        let _ = reply.send(Err(format!("already logged out (no node key in {})", args.state_dir.display())));
                        continue;
                    }
                    session = None;
                    state = "logged-out";
                    // A new node key needs an auth key again.
                    settings.auth_key = None;
                    tokio::spawn(answer_logout(
                        server,
                        args.login_server_ca.clone(),
                        args.state_dir.clone(),
                        reply,
                    ));
                    new = desired.as_ref().map(without_peers);
                    if new.is_none() {
                        continue;
                    }
                }
            },
            _ = signals.terminate.recv() => break,
            _ = signals.interrupt.recv() => break,
        }
        let Some(new) = new else { continue };
        let result = match &applied {
            Some(from) if from.name == new.name => engine.apply_delta(from, &new).await,
            _ => engine.apply(&new).await,
        };
        match result {
            Ok(report) => {
                tracing::info!(interface = %new.name, "applied: {report}");
                applied = Some(new.clone());
            }
            Err(e) => {
                tracing::error!(interface = %new.name, "apply failed (retried at the next reconcile): {e}");
                applied = None;
            }
        }
        desired = Some(new);
    }
    drop(session);
    tracing::info!(interface = %args.iface, "stopping; the interface keeps forwarding");
    Ok(())
}

/// What `meshgate status` shows: the interface as the system has it.
async fn status(
    engine: &Engine,
    interface: &str,
    mode: &str,
    login_server: Option<&str>,
) -> Status {
    let mut status = Status {
        interface: interface.to_owned(),
        mode: mode.to_owned(),
        login_server: login_server.map(str::to_owned),
        ..Status::default()
    };
    let state = match engine.read(interface).await {
        Ok(state) => state,
        Err(e) => {
            tracing::debug!("status: {e}");
            return status;
        }
    };
    let device = &state.device;
    status.backend = state.backend.to_owned();
    status.self_node = SelfStatus {
        public_key: device
            .public_key
            .or_else(|| device.config.private_key.as_ref().map(|k| k.public_key()))
            .map(|k| k.to_string()),
        addresses: state
            .net
            .addresses
            .iter()
            .map(|a| a.addr().to_string())
            .collect(),
        listen_port: device.config.listen_port,
    };
    status.peers = device
        .config
        .peers
        .iter()
        .map(|(key, peer)| {
            let stats = device.stats.get(key).copied().unwrap_or_default();
            PeerStatus {
                name: None,
                online: None,
                public_key: key.to_string(),
                tailnet_ips: peer
                    .allowed_ips
                    .iter()
                    .filter(|net| net.prefix_len() == net.max_prefix_len())
                    .map(|net| net.addr().to_string())
                    .collect(),
                allowed_ips: peer.allowed_ips.iter().map(ToString::to_string).collect(),
                endpoint: peer.endpoint.map(|e| e.to_string()),
                latest_handshake: stats.last_handshake.and_then(|t| {
                    t.duration_since(SystemTime::UNIX_EPOCH)
                        .ok()
                        .map(|d| d.as_secs())
                }),
                rx_bytes: stats.rx_bytes,
                tx_bytes: stats.tx_bytes,
            }
        })
        .collect();
    status
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Tailnet ranges: never advertised as endpoints.
fn is_tailnet(ip: IpAddr) -> bool {
    let ranges: [IpNet; 2] = [
        "100.64.0.0/10".parse().expect("valid"),
        "fd7a:115c:a1e0::/48".parse().expect("valid"),
    ];
    ranges.iter().any(|r| r.contains(&ip))
}

/// Whether `ip` can serve as a WireGuard endpoint for peers: not loopback, link-local,
/// unspecified, multicast or in the tailnet ranges.
fn endpoint_candidate(ip: IpAddr) -> bool {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || link_local || is_tailnet(ip))
}

/// The host's addresses (interfaces that are up, except loopback and our own `iface`) with the
/// WireGuard port: the endpoints we tell control about, IPv4 first (peers use the first one
/// until disco picks paths).
fn local_endpoints(port: u16, iface: &str) -> Vec<SocketAddr> {
    let mut found = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        tracing::warn!(
            "getifaddrs: {}; no endpoints to advertise",
            std::io::Error::last_os_error()
        );
        return found;
    }
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        let flags = entry.ifa_flags;
        if entry.ifa_addr.is_null()
            || flags & libc::IFF_UP as libc::c_uint == 0
            || flags & libc::IFF_LOOPBACK as libc::c_uint != 0
        {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
        if name.to_bytes() == iface.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr is non-null; its family says which sockaddr it is.
        let ip = unsafe {
            match i32::from((*entry.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sin = &*(entry.ifa_addr as *const libc::sockaddr_in);
                    IpAddr::from(u32::from_be(sin.sin_addr.s_addr).to_be_bytes())
                }
                libc::AF_INET6 => {
                    let sin6 = &*(entry.ifa_addr as *const libc::sockaddr_in6);
                    IpAddr::from(sin6.sin6_addr.s6_addr)
                }
                _ => continue,
            }
        };
        if endpoint_candidate(ip) {
            found.push(SocketAddr::new(ip, port));
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found.sort_by_key(|e| (e.is_ipv6(), *e));
    found.dedup();
    found
}

fn load(args: &DaemonArgs, config_file: &Path) -> Result<InterfaceConfig, meshgate_wg::Error> {
    let mut config = wgconf::load(config_file, &args.iface)?;
    if config.device.private_key.is_none() {
        config.device.private_key = Some(node_key(&args.state_dir)?);
    }
    Ok(config)
}

/// The node's key from the state directory, created on first start.
fn node_key(state_dir: &Path) -> Result<PrivateKey, meshgate_wg::Error> {
    let path = state_dir.join("private.key");
    if path.exists() {
        return wgconf::read_private_key_file(&path);
    }
    std::fs::create_dir_all(state_dir).map_err(|e| meshgate_wg::Error::Io {
        context: format!("creating {}", state_dir.display()),
        source: e,
    })?;
    let key = PrivateKey::generate();
    wgconf::write_private_key_file(&path, &key)?;
    tracing::info!(path = %path.display(), public_key = %key.public_key(), "created the node key");
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_keeps_what_it_does_not_set() {
        let base = Settings {
            login_server: None,
            auth_key: None,
            hostname: Some("a".into()),
            advertise_routes: vec!["10.0.0.0/24".parse().unwrap()],
            accept_routes: true,
        };
        let err = base.with(UpRequest::default()).unwrap_err();
        assert!(err.contains("--login-server"), "{err}");
        let up = base
            .with(UpRequest {
                login_server: Some("h:1".into()),
                advertise_routes: Some(vec!["10.1.0.9/24".into()]),
                ..UpRequest::default()
            })
            .unwrap();
        assert_eq!(up.login_server.as_deref(), Some("h:1"));
        let err = base
            .with(UpRequest {
                login_server: Some("ftp://h".into()),
                ..UpRequest::default()
            })
            .unwrap_err();
        assert!(err.contains("unsupported scheme"), "{err}");
        assert_eq!(up.hostname.as_deref(), Some("a"));
        assert!(up.accept_routes);
        assert_eq!(
            up.advertise_routes,
            ["10.1.0.0/24".parse::<IpNet>().unwrap()]
        );
        let cleared = up
            .with(UpRequest {
                advertise_routes: Some(Vec::new()),
                accept_routes: Some(false),
                ..UpRequest::default()
            })
            .unwrap();
        assert!(cleared.advertise_routes.is_empty() && !cleared.accept_routes);
        assert!(
            up.with(UpRequest {
                advertise_routes: Some(vec!["nope".into()]),
                ..UpRequest::default()
            })
            .is_err()
        );
    }

    #[test]
    fn endpoint_candidates() {
        for ok in ["203.0.113.2", "10.1.0.2", "2001:db8::1"] {
            assert!(endpoint_candidate(ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "127.0.0.1",
            "::1",
            "169.254.1.1",
            "fe80::1",
            "100.64.0.7",
            "fd7a:115c:a1e0::1",
            "0.0.0.0",
            "224.0.0.1",
        ] {
            assert!(!endpoint_candidate(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn local_endpoints_skip_loopback_and_carry_the_port() {
        for endpoint in local_endpoints(41641, "meshgate-none") {
            assert_eq!(endpoint.port(), 41641);
            assert!(!endpoint.ip().is_loopback());
        }
    }
}
