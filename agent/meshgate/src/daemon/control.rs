//! Control mode: the control client's session, `meshgate up`/`down`/`logout`, and the loop
//! that applies each network map.

use std::path::PathBuf;

use ipnet::IpNet;
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

use crate::api::{self, Outcome, Request, UpRequest};
use crate::cli::DaemonArgs;

use super::access::Access;
use super::dns::MagicDns;
use super::endpoints::{local_endpoints, local_networks, system_hostname};
use super::forwarding::Forwarding;
use super::paths::{Steering, Wake};
use super::prefs::{self, Prefs, Wanted};
use super::{BoxError, Signals, log_result, start_api};

/// Control mode's settings: from the daemon's flags, then changed by `meshgate up`.
#[derive(Clone, Debug, PartialEq)]
struct Settings {
    login_server: Option<String>,
    auth_key: Option<String>,
    hostname: Option<String>,
    advertise_routes: Vec<IpNet>,
    advertise_exit_node: bool,
    accept_routes: bool,
    snat_subnet_routes: bool,
    exit_node: Option<String>,
    exit_node_allow_lan_access: bool,
}

impl Settings {
    fn from_args(args: &DaemonArgs) -> Result<Settings, String> {
        let routes: Vec<IpNet> = args.advertise_routes.iter().map(IpNet::trunc).collect();
        check_advertised(&routes)?;
        Ok(Settings {
            login_server: args.login_server.clone(),
            auth_key: args.auth_key.clone(),
            hostname: args.hostname.clone(),
            advertise_routes: routes,
            advertise_exit_node: args.advertise_exit_node,
            accept_routes: args.accept_routes,
            snat_subnet_routes: args.snat_subnet_routes,
            exit_node: args.exit_node.clone().filter(|e| !e.is_empty()),
            exit_node_allow_lan_access: args.exit_node_allow_lan_access,
        })
    }

    fn from_prefs(stored: &Prefs, auth_key: Option<String>) -> Settings {
        Settings {
            login_server: stored.login_server.clone(),
            auth_key,
            hostname: stored.hostname.clone(),
            advertise_routes: stored.advertise_routes.clone(),
            advertise_exit_node: stored.advertise_exit_node,
            accept_routes: stored.accept_routes,
            snat_subnet_routes: stored.snat_subnet_routes.unwrap_or(true),
            exit_node: stored.exit_node.clone(),
            exit_node_allow_lan_access: stored.exit_node_allow_lan_access,
        }
    }

    /// What is stored (never the auth key).
    fn prefs(&self, wanted: Wanted) -> Prefs {
        Prefs {
            login_server: self.login_server.clone(),
            hostname: self.hostname.clone(),
            advertise_routes: self.advertise_routes.clone(),
            advertise_exit_node: self.advertise_exit_node,
            accept_routes: self.accept_routes,
            snat_subnet_routes: (!self.snat_subnet_routes).then_some(false),
            exit_node: self.exit_node.clone(),
            exit_node_allow_lan_access: self.exit_node_allow_lan_access,
            wanted,
        }
    }

    /// Hostinfo.RoutableIPs: the advertised subnets, and both default routes for an exit node.
    fn routable_ips(&self) -> Vec<IpNet> {
        let mut ips = self.advertise_routes.clone();
        if self.advertise_exit_node {
            ips.extend(exit_routes());
        }
        ips
    }

    /// What our nftables table does for forwarded traffic: a node offering routes or an exit
    /// node clamps MSS into the mesh and, unless told not to, masquerades.
    fn advertising(&self) -> bool {
        !self.advertise_routes.is_empty() || self.advertise_exit_node
    }

    fn router(&self) -> meshgate_acl::Router {
        let advertising = self.advertising();
        meshgate_acl::Router {
            masquerade: advertising && self.snat_subnet_routes,
            clamp_mss: advertising,
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
            check_advertised(&new.advertise_routes)?;
        }
        if let Some(exit) = up.advertise_exit_node {
            new.advertise_exit_node = exit;
        }
        if let Some(accept) = up.accept_routes {
            new.accept_routes = accept;
        }
        if let Some(snat) = up.snat_subnet_routes {
            new.snat_subnet_routes = snat;
        }
        if let Some(exit) = up.exit_node {
            new.exit_node = Some(exit).filter(|e| !e.is_empty());
        }
        if let Some(lan) = up.exit_node_allow_lan_access {
            new.exit_node_allow_lan_access = lan;
        }
        let Some(server) = &new.login_server else {
            return Err("no login server: give --login-server URL".into());
        };
        // A bad URL is refused here, before the running session is touched.
        ControlServer::parse(server, None).map_err(|e| e.to_string())?;
        Ok(new)
    }
}

fn exit_routes() -> [IpNet; 2] {
    [
        IpNet::V4(ipnet::Ipv4Net::default()),
        IpNet::V6(ipnet::Ipv6Net::default()),
    ]
}

/// Default routes are offered with --advertise-exit-node, as `tailscale up` insists, so that
/// the pair is never half advertised.
fn check_advertised(routes: &[IpNet]) -> Result<(), String> {
    match routes.iter().find(|r| r.prefix_len() == 0) {
        Some(default) => Err(format!(
            "--advertise-routes {default}: a default route is offered with --advertise-exit-node"
        )),
        None => Ok(()),
    }
}

/// The settings and wish to start with: the command line's when it names a login server,
/// else those `meshgate up` left in the state directory. Whether to run comes from the
/// state directory either way, so a node taken `down` stays down across restarts.
fn initial(args: &DaemonArgs) -> Result<(Settings, Wanted), String> {
    let stored = prefs::load(&args.state_dir)?;
    let wanted = stored.as_ref().map(|p| p.wanted).unwrap_or_default();
    let settings = match &stored {
        Some(stored) if args.login_server.is_none() => {
            Settings::from_prefs(stored, args.auth_key.clone())
        }
        _ => Settings::from_args(args)?,
    };
    Ok((settings, wanted))
}

/// Remembers `settings` and `wanted`; a failure is logged, not fatal: the session itself is fine.
fn remember(args: &DaemonArgs, settings: &Settings, wanted: Wanted) {
    if let Err(e) = prefs::save(&args.state_dir, &settings.prefs(wanted)) {
        tracing::warn!("could not store the preferences (a restart would not know them): {e}");
    }
}

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

/// `config` without its peers and their routes: what the interface keeps while down.
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
    let mut dns = MagicDns::new();
    let mut forwarding = Forwarding::new(args.enable_forwarding, &args.state_dir);
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
                    if !dns.set_view(view) {
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
                access.ensure().await;
                if let Some(s) = &session {
                    let peers = s.peers.borrow().clone();
                    dns.ensure(&peers).await;
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
                    status.control_error = last_error.clone();
                    status.filter = Some(access.status().await);
                    status.magic_dns = dns.status();
                    let exit_in_use = desired.as_ref().is_some_and(|c| {
                        c.net.routes.iter().any(|r| r.destination.prefix_len() == 0)
                    });
                    let strict = super::forwarding::strict_rp_filter(&args.iface);
                    if exit_in_use && !strict.is_empty() {
                        status.warnings.push(format!(
                            "rp_filter is strict (1) on {}: WireGuard's packets arriving there are dropped while an exit node is in use; set net.ipv4.conf.<iface>.rp_filter=2",
                            strict.join(", ")
                        ));
                    }
                    status.exit_node = settings.exit_node.as_ref().map(|choice| {
                        if exit_in_use {
                            format!("{choice} (in use)")
                        } else {
                            format!("{choice} (not in use: no such peer, or it offers no approved exit routes)")
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
                    let _ = reply.send(Ok(message.to_owned()));
                    new = desired.as_ref().map(without_peers);
                    dns.set_view(None);
                    stop_access = true;
                    if new.is_none() {
                        access.stop().await;
                        forwarding.restore();
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
                    stop_access = true;
                    if new.is_none() {
                        access.stop().await;
                        forwarding.restore();
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
        }
    }
    end_session(&mut session).await;
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
            advertise_exit_node: false,
            accept_routes: true,
            snat_subnet_routes: true,
            exit_node: None,
            exit_node_allow_lan_access: false,
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
    fn exit_node_is_offered_as_both_default_routes_and_never_through_advertise_routes() {
        let base = Settings {
            login_server: Some("h:1".into()),
            auth_key: None,
            hostname: None,
            advertise_routes: vec!["10.0.0.0/24".parse().unwrap()],
            advertise_exit_node: false,
            accept_routes: false,
            snat_subnet_routes: true,
            exit_node: None,
            exit_node_allow_lan_access: false,
        };
        assert_eq!(base.routable_ips(), base.advertise_routes);
        let exit = base
            .with(UpRequest {
                advertise_exit_node: Some(true),
                ..UpRequest::default()
            })
            .unwrap();
        let ips: Vec<String> = exit
            .routable_ips()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(ips, ["10.0.0.0/24", "0.0.0.0/0", "::/0"]);
        let err = base
            .with(UpRequest {
                advertise_routes: Some(vec!["0.0.0.0/0".into()]),
                ..UpRequest::default()
            })
            .unwrap_err();
        assert!(err.contains("--advertise-exit-node"), "{err}");
    }

    #[test]
    fn stored_prefs_hold_no_auth_key_and_rebuild_the_settings() {
        let settings = Settings {
            login_server: Some("https://c.example".into()),
            auth_key: Some("secret-auth-key".into()),
            hostname: Some("gw".into()),
            advertise_routes: vec!["10.0.0.0/24".parse().unwrap()],
            advertise_exit_node: true,
            accept_routes: true,
            snat_subnet_routes: true,
            exit_node: None,
            exit_node_allow_lan_access: false,
        };
        let stored = settings.prefs(Wanted::Stopped);
        let text = serde_json::to_string(&stored).unwrap();
        assert!(!text.contains("secret-auth-key"), "{text}");
        assert_eq!(stored.wanted, Wanted::Stopped);
        let back = Settings::from_prefs(&stored, Some("secret-auth-key".into()));
        assert_eq!(back, settings);
    }
}
