//! Control mode: the control client's session, `meshgate up`/`down`/`logout`, and the loop
//! that applies each network map.

use std::net::SocketAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use meshgate_control::client::{ClientError, RunConfig, logout as logout_at, run_with_peers};
use meshgate_control::endpoint::ControlServer;
use meshgate_control::netmap::PeerDirectory;
use meshgate_control::state::Persisted;
use meshgate_control::wgconfig::WgOptions;
use meshgate_wg::{Engine, InterfaceConfig};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::api::{self, Outcome, Request, UpRequest};
use crate::cli::DaemonArgs;

use super::endpoints::{local_endpoints, system_hostname};
use super::{BoxError, Signals, log_result, start_api};

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
pub(super) async fn run_control(args: &DaemonArgs) -> Result<(), BoxError> {
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
                    let mut status = super::status(&engine, &args.iface, "control", settings.login_server.as_deref()).await;
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
}
