//! Control mode: the control client's session, `meshgate up`/`down`/`logout`, and the loop
//! that applies each network map.

use std::path::PathBuf;

use meshgate_acl::Router;
use meshgate_control::client::{
    ClientError, Endpoint, RunConfig, logout as logout_at, run_with_peers,
};
use meshgate_control::endpoint::ControlServer;
use meshgate_control::netmap::{DnsView, PeerDirectory};
use meshgate_control::state::Persisted;
use meshgate_control::wgconfig::WgOptions;
use meshgate_tailcfg::filter::FilterRule;
use meshgate_wg::{Engine, InterfaceConfig};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::api::{self, Outcome, Request};
use crate::cli::DaemonArgs;

use super::access::Access;
use super::dns::MagicDns;
use super::endpoints::{local_endpoints, local_networks, system_hostname};
use super::forwarding::Forwarding;
use super::host_dns::HostDns;
use super::paths::{Steering, Wake};
use super::prefs::Wanted;
use super::reverse_path::ReversePath;
use super::settings::{Settings, initial, remember};
use super::{BoxError, Signals, log_result, start_api};

/// A running control session: the client task and what it publishes.
struct Session {
    task: JoinHandle<ClientError>,
    configs: watch::Receiver<Option<InterfaceConfig>>,
    peers: watch::Receiver<PeerDirectory>,
    /// Control's packet filter (`None` until it sends one).
    filters: watch::Receiver<Option<Vec<FilterRule>>>,
    /// Control's DNS configuration and our name (MagicDNS).
    dns: watch::Receiver<Option<DnsView>>,
    /// The fatal error the client ended with (`None` while it runs).
    ended: watch::Receiver<Option<String>>,
    /// Control's latest configuration, before path steering sets the endpoints.
    raw: Option<InterfaceConfig>,
    steering: Steering,
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
    cfg.hostinfo.routable_ips = settings.routable_ips();
    let local = local_endpoints(args.port, &args.iface);
    cfg.endpoints = local.iter().copied().map(Endpoint::local).collect();
    let (endpoints, endpoint_updates) = watch::channel(cfg.endpoints.clone());
    cfg.endpoint_updates = Some(endpoint_updates);
    cfg.wg = WgOptions {
        interface: args.iface.clone(),
        listen_port: args.port,
        accept_routes: settings.accept_routes,
        exit_node: settings.exit_node.clone(),
        exit_node_bypass: if settings.exit_node_allow_lan_access {
            local_networks(&args.iface)
        } else {
            Vec::new()
        },
        ..WgOptions::default()
    };
    tracing::info!(
        server = %server,
        hostname = %cfg.hostinfo.hostname,
        endpoints = ?local,
        "joining the tailnet"
    );
    let (derp_map_tx, derp_maps) = watch::channel(None);
    let (net_info_tx, net_info) = watch::channel(None);
    cfg.derp_map_out = Some(derp_map_tx);
    let (filter_tx, filters) = watch::channel(None);
    cfg.filter_out = Some(filter_tx);
    let (dns_tx, dns) = watch::channel(None);
    cfg.dns_out = Some(dns_tx);
    cfg.net_info_updates = Some(net_info);
    let derp_ca = args.login_server_ca.as_ref().and_then(|path| {
        std::fs::read(path)
            .inspect_err(|e| {
                tracing::warn!(
                    "{}: {e}; DERP servers get only the public roots",
                    path.display()
                )
            })
            .ok()
    });
    // The host's endpoints, re-read at every reconcile, and the STUN-mapped one go to control
    // through the steering (a change at once, as a lite map request).
    let mut steering = Steering::start(
        args.port,
        cfg.wg.fwmark,
        derp_ca,
        derp_maps,
        net_info_tx,
        endpoints,
    );
    cfg.disco_key = Some(steering.disco_public());
    steering.set_local_endpoints(local);
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
        filters,
        dns,
        ended,
        raw: None,
        steering,
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
        // Marked like the session's connection: never through an exit node.
        let control = ControlServer::parse(&server, ca.as_deref())
            .map_err(|e| e.to_string())?
            .with_fwmark(WgOptions::default().fwmark);
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

/// What `down` leaves: the interface with its key and addresses, and nothing that steers
/// traffic into it (peers, routes, the fwmark rules), so the host routes as before `up`.
fn without_peers(config: &InterfaceConfig) -> InterfaceConfig {
    let mut config = config.clone();
    config.device.peers.clear();
    config.net.routes.clear();
    config.net.rules.clear();
    super::dns::without_quad100(config)
}

/// Ends the session, if any: the control client stops and the port mapping is deleted on the
/// gateway. Whether there was one.
async fn end_session(session: &mut Option<Session>) -> bool {
    match session.take() {
        Some(mut s) => {
            s.steering.shutdown().await;
            true
        }
        None => false,
    }
}

/// What the session woke the daemon for.
enum SessionEvent {
    /// A new configuration from control (false: the client stopped).
    Config(bool),
    /// What control says of the peers changed: route them again.
    Reroute,
    /// Path steering has something to do.
    Steering(Wake),
    /// Control sent a new packet filter.
    Filter,
    /// Control's DNS configuration changed.
    Dns,
    Nothing,
}

/// The session's next event; never without a session.
async fn next_session_event(session: &mut Option<Session>) -> SessionEvent {
    let Some(s) = session else {
        return std::future::pending().await;
    };
    tokio::select! {
        // Configurations first: when the client stops, every channel closes at once.
        biased;
        changed = s.configs.changed() => SessionEvent::Config(changed.is_ok()),
        changed = s.peers.changed() => match changed {
            Ok(()) => SessionEvent::Reroute,
            Err(_) => SessionEvent::Nothing,
        },
        changed = s.filters.changed() => match changed {
            Ok(()) => SessionEvent::Filter,
            Err(_) => SessionEvent::Nothing,
        },
        changed = s.dns.changed() => match changed {
            Ok(()) => SessionEvent::Dns,
            Err(_) => SessionEvent::Nothing,
        },
        wake = s.steering.wake() => SessionEvent::Steering(wake),
    }
}

/// Control's configuration with each peer's endpoint set to its path.
async fn routed(session: &mut Session) -> Option<InterfaceConfig> {
    let raw = session.raw.as_ref()?;
    let peers = session.peers.borrow().clone();
    Some(session.steering.route(raw, &peers).await)
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

    let (mut settings, wanted) = initial(args)?;
    let mut session = match (&settings.login_server, wanted) {
        (Some(_), Wanted::Running) => Some(start_session(args, &settings)?),
        (_, Wanted::Stopped) => {
            tracing::info!(socket = %socket.display(), "down since `meshgate down`; waiting for `meshgate up`");
            None
        }
        (_, Wanted::LoggedOut) => {
            tracing::info!(socket = %socket.display(), "logged out; waiting for `meshgate up --auth-key`");
            None
        }
        (None, Wanted::Running) => {
            tracing::info!(socket = %socket.display(), "waiting for `meshgate up`");
            None
        }
    };
    let mut state = match (&session, wanted) {
        (Some(_), _) => "up",
        (None, Wanted::LoggedOut) => "logged-out",
        (None, _) => "down",
    };
    let mut last_error: Option<String> = None;
    let mut access = Access::new(
        args.filter,
        &args.iface,
        args.bpf_pin_root.clone(),
        settings.router(),
    );
    let mut host_dns = HostDns::new(args.accept_dns, args.resolv_conf.clone(), &args.state_dir);
    let mut dns = MagicDns::new(host_dns.original());
    let mut forwarding = Forwarding::new(args.enable_forwarding, &args.state_dir);
    let mut reverse_path = ReversePath::new(&args.state_dir, &args.iface);
    if session.is_some() {
        access.start().await;
        forwarding.update(settings.advertising());
    }

    // What the system holds as far as we know (None: unknown, so the next apply is in full),
    // and the latest configuration control implies.
    let mut applied: Option<InterfaceConfig> = None;
    let mut desired: Option<InterfaceConfig> = None;
    let mut signals = Signals::new()?;
    // `down` or `logout` asked for our filtering to go once the peers are gone.
    let mut stop_access = false;
    let mut ticker = tokio::time::interval(args.reconcile_every);
    ticker.tick().await;
    loop {
        // A new desired configuration to apply, if any.
        let new: Option<InterfaceConfig>;
        tokio::select! {
            event = next_session_event(&mut session) => match event {
                SessionEvent::Nothing => continue,
                SessionEvent::Dns => {
                    let Some(current) = session.as_mut() else { continue };
                    let view = current.dns.borrow_and_update().clone();
                    let toggled = dns.set_view(view);
                    follow_host_dns(&mut host_dns, &mut dns);
                    if !toggled {
                        dns.update(&current.peers.borrow());
                        continue;
                    }
                    // MagicDNS turned on or off: its addresses come or go.
                    new = routed(current).await;
                    if new.is_none() {
                        continue;
                    }
                }
                SessionEvent::Filter => {
                    let Some(current) = session.as_mut() else { continue };
                    let rules = current.filters.borrow_and_update().clone();
                    if let Some(rules) = rules {
                        access.set_rules(&rules).await;
                    }
                    continue;
                }
                SessionEvent::Steering(wake) => {
                    let Some(current) = session.as_mut() else { continue };
                    if !current.steering.handle(wake, &engine, &args.iface).await {
                        continue;
                    }
                    new = routed(current).await;
                    if new.is_none() {
                        continue;
                    }
                }
                SessionEvent::Config(true) | SessionEvent::Reroute => {
                    let Some(current) = session.as_mut() else { continue };
                    dns.update(&current.peers.borrow());
                    if matches!(event, SessionEvent::Config(true)) {
                        current.raw = current.configs.borrow_and_update().clone();
                    }
                    new = routed(current).await;
                    if new.is_none() {
                        continue;
                    }
                }
                SessionEvent::Config(false) => {
                    let Some(mut current) = session.take() else { continue };
                    // The client stopped: only a fatal error ends it. The interface keeps its
                    // last configuration; `up` starts again.
                    let error = match (&mut current.task).await {
                        Ok(error) => error.to_string(),
                        Err(e) => format!("the control client stopped: {e}"),
                    };
                    tracing::error!("control session ended: {error}; the interface keeps its last configuration (meshgate up to retry)");
                    last_error = Some(error);
                    state = "down";
                    continue;
                }
            },
            _ = ticker.tick() => {
                if let Some(config) = &desired {
                    let result = engine.apply(config).await;
                    applied = result.is_ok().then(|| config.clone());
                    log_result(&config.name, result);
                }
                if let Some(s) = &mut session {
                    s.steering.set_local_endpoints(local_endpoints(args.port, &args.iface));
                }
                if session.is_some() {
                    let restore_marks = reverse_path.update(exit_routed(desired.as_ref()));
                    access.set_router(Router { restore_marks, ..settings.router() }).await;
                }
                access.ensure().await;
                if let Some(s) = &session {
                    let peers = s.peers.borrow().clone();
                    dns.ensure(&peers).await;
                }
                follow_host_dns(&mut host_dns, &mut dns);
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
                    status.control_error = last_error.clone();
                    status.filter = Some(access.status().await);
                    status.magic_dns = dns.status();
                    let exit_in_use = desired.as_ref().is_some_and(|c| {
                        c.device
                            .peers
                            .values()
                            .any(|p| p.allowed_ips.iter().any(|a| a.prefix_len() == 0))
                    });
                    status.warnings.extend(reverse_path.warning().map(str::to_owned));
                    status.exit_node = settings.exit_node.as_ref().map(|choice| {
                        if exit_in_use {
                            format!("{choice} (in use)")
                        } else {
                            format!("{choice} (unavailable: no such peer, or it offers no approved exit routes; traffic outside the tailnet is blocked until it is back)")
                        }
                    });
                    status.warnings.extend(forwarding.warning().map(str::to_owned));
                    if let Some(s) = &session {
                        super::status::add_session(&mut status, &s.peers.borrow(), &s.steering);
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
                    if wanted.auth_key.is_none() && !Persisted::has_node_key(&args.state_dir) {
                        let _ = reply.send(Err(format!(
                            "no registered node key in {} (logged out, or never joined): meshgate up --auth-key KEY",
                            args.state_dir.display()
                        )));
                        continue;
                    }
                    if session.is_some() && wanted == settings {
                        let _ = reply.send(Ok("already up; nothing changed".to_owned()));
                        continue;
                    }
                    end_session(&mut session).await;
                    settings = wanted;
                    match start_session(args, &settings) {
                        Ok(started) => {
                            remember(args, &settings, Wanted::Running);
                            state = "up";
                            last_error = None;
                            tokio::spawn(answer_up(
                                started.configs.clone(),
                                started.ended.clone(),
                                settings.login_server.clone().unwrap_or_default(),
                                reply,
                            ));
                            session = Some(started);
                            access.set_router(settings.router()).await;
                            access.start().await;
                            forwarding.update(settings.advertising());
                        }
                        Err(e) => {
                            state = "down";
                            let _ = reply.send(Err(e));
                        }
                    }
                    continue;
                }
                Request::Netcheck(reply) => {
                    let answer = match &session {
                        Some(s) => s.steering.netcheck(),
                        None => Err(format!("no control session ({state}): netcheck runs while up")),
                    };
                    let _ = reply.send(answer);
                    continue;
                }
                Request::Ping(peer, reply) => {
                    match &mut session {
                        Some(s) => s.steering.ping(&peer, reply).await,
                        None => {
                            let _ = reply.send(Err(format!("no control session ({state}): meshgate up first")));
                        }
                    }
                    continue;
                }
                Request::Down(reply) => {
                    let message = if end_session(&mut session).await {
                        "down: the control session stopped and the peers are off the interface (meshgate up resumes)"
                    } else {
                        "already down"
                    };
                    if state == "up" {
                        state = "down";
                    }
                    if state != "logged-out" {
                        remember(args, &settings, Wanted::Stopped);
                    }
                    new = desired.as_ref().map(without_peers);
                    dns.set_view(None);
                    // Before the answer: once down returns, the host resolves as before up.
                    follow_host_dns(&mut host_dns, &mut dns);
                    let _ = reply.send(Ok(message.to_owned()));
                    stop_access = true;
                    if new.is_none() {
                        access.stop().await;
                        forwarding.restore();
                        reverse_path.restore();
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
                    end_session(&mut session).await;
                    state = "logged-out";
                    // A new node key needs an auth key again.
                    settings.auth_key = None;
                    remember(args, &settings, Wanted::LoggedOut);
                    tokio::spawn(answer_logout(
                        server,
                        args.login_server_ca.clone(),
                        args.state_dir.clone(),
                        reply,
                    ));
                    new = desired.as_ref().map(without_peers);
                    dns.set_view(None);
                    follow_host_dns(&mut host_dns, &mut dns);
                    stop_access = true;
                    if new.is_none() {
                        access.stop().await;
                        forwarding.restore();
                        reverse_path.restore();
                        continue;
                    }
                }
            },
            _ = signals.terminate.recv() => break,
            _ = signals.interrupt.recv() => break,
        }
        let Some(new) = new else { continue };
        let new = dns.with_addresses(new);
        let stopping = std::mem::take(&mut stop_access);
        let result = match &applied {
            Some(from) if from.name == new.name => engine.apply_delta(from, &new).await,
            _ => engine.apply(&new).await,
        };
        match result {
            Ok(report) => {
                tracing::info!(interface = %new.name, "applied: {report}");
                applied = Some(new.clone());
                if let Some(s) = &mut session {
                    s.steering.applied().await;
                }
                access.ensure().await;
                if let Some(s) = &session {
                    let peers = s.peers.borrow().clone();
                    dns.ensure(&peers).await;
                }
                follow_host_dns(&mut host_dns, &mut dns);
            }
            Err(e) => {
                tracing::error!(interface = %new.name, "apply failed (retried at the next reconcile): {e}");
                applied = None;
            }
        }
        desired = Some(new);
        // After the peers are off the interface, so nothing arrives unfiltered in between.
        if stopping {
            access.stop().await;
            forwarding.restore();
            reverse_path.restore();
        } else if session.is_some() {
            let restore_marks = reverse_path.update(exit_routed(desired.as_ref()));
            access
                .set_router(Router {
                    restore_marks,
                    ..settings.router()
                })
                .await;
        }
    }
    end_session(&mut session).await;
    // The resolver dies with us: the host's own resolvers until the next agent serves.
    host_dns.restore();
    tracing::info!(interface = %args.iface, "stopping; the interface keeps forwarding");
    Ok(())
}

/// The host's resolv.conf follows MagicDNS (`--accept-dns`), and MagicDNS forwards to what the
/// host's file says (it may have been renewed meanwhile).
fn follow_host_dns(host: &mut HostDns, dns: &mut MagicDns) {
    host.follow(dns.serving_domains());
    dns.set_resolv_conf(host.original());
}

/// Whether `config` sends the internet to an exit node (its default routes in our table).
fn exit_routed(config: Option<&InterfaceConfig>) -> bool {
    config.is_some_and(|c| c.net.routes.iter().any(|r| r.destination.prefix_len() == 0))
}
