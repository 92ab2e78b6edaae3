//! `meshgate daemon`: keeps a WireGuard interface in line with a desired state, which comes
//! from one of two sources:
//!
//! - `--config FILE` (wg-quick format): applied on start, re-read on SIGHUP (delta only).
//! - `--login-server HOST:PORT`: the control client (`meshgate_control::client::run`) joins the
//!   tailnet and publishes each new `InterfaceConfig` on a watch; the daemon applies it (the
//!   delta from the last one applied, or in full on start and after a failure), so the data
//!   path never waits on the control path.
//!
//! Either way the kernel (or wireguard-go) is compared with the desired state every
//! `--reconcile-every` and drift is mended, and the local API (`--socket`) answers `status`.
//! Exiting never tears the interface down: forwarding goes on without us, and the next start
//! adopts it.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use ipnet::IpNet;
use meshgate_control::client::{RunConfig, run as run_control_client};
use meshgate_control::state::Persisted;
use meshgate_control::wgconfig::WgOptions;
use meshgate_wg::{ApplyReport, Engine, InterfaceConfig, PrivateKey, wgconf};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::{mpsc, watch};

use crate::api::{self, PeerStatus, SelfStatus, Status, StatusRequest};
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
) -> Result<(mpsc::Receiver<StatusRequest>, Option<api::SocketGuard>), BoxError> {
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
            Some(reply) = requests.recv() => {
                let _ = reply.send(status(&engine, &desired.name, "config", None).await);
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

/// `--login-server` mode: the control client's watch is the source of desired state.
async fn run_control(args: &DaemonArgs) -> Result<(), BoxError> {
    let server = args
        .login_server
        .clone()
        .ok_or("--login-server is required in control mode")?;
    let persisted = Persisted::load_or_create(&args.state_dir)?;
    let engine = Engine::new(args.backend.into())?;
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(crate::cli::DEFAULT_SOCKET));
    let (mut requests, _guard) = start_api(&socket, true)?;

    let mut cfg = RunConfig::new(server.clone());
    cfg.auth_key = args.auth_key.clone();
    cfg.hostinfo.hostname = args.hostname.clone().unwrap_or_else(system_hostname);
    cfg.hostinfo.os = "linux".to_owned();
    cfg.hostinfo.ipn_version = env!("CARGO_PKG_VERSION").to_owned();
    cfg.hostinfo.routable_ips = args.advertise_routes.clone();
    cfg.endpoints = local_endpoints(args.port, &args.iface);
    cfg.wg = WgOptions {
        interface: args.iface.clone(),
        listen_port: args.port,
        accept_routes: args.accept_routes,
        ..WgOptions::default()
    };
    tracing::info!(
        server = %server,
        hostname = %cfg.hostinfo.hostname,
        endpoints = ?cfg.endpoints,
        "joining the tailnet"
    );
    let (tx, mut configs) = watch::channel(None::<InterfaceConfig>);
    let mut client = tokio::spawn(run_control_client(cfg, persisted, tx));

    // What the system holds as far as we know (None: unknown, so the next apply is in full),
    // and the latest configuration control implies.
    let mut applied: Option<InterfaceConfig> = None;
    let mut desired: Option<InterfaceConfig> = None;
    let mut signals = Signals::new()?;
    let mut ticker = tokio::time::interval(args.reconcile_every);
    ticker.tick().await;
    loop {
        tokio::select! {
            changed = configs.changed() => {
                if changed.is_err() {
                    // The client stopped: only a fatal error ends it.
                    let error = (&mut client).await?;
                    return Err(format!("{error} (the interface keeps its last configuration)").into());
                }
                let Some(new) = configs.borrow_and_update().clone() else { continue };
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
            result = &mut client => {
                let error = result?;
                return Err(format!("{error} (the interface keeps its last configuration)").into());
            }
            _ = ticker.tick() => {
                if let Some(config) = &desired {
                    let result = engine.apply(config).await;
                    applied = result.is_ok().then(|| config.clone());
                    log_result(&config.name, result);
                }
            }
            _ = signals.hangup.recv() => {
                tracing::info!("SIGHUP: nothing to re-read in control mode; reconciling");
                ticker.reset_immediately();
            }
            Some(reply) = requests.recv() => {
                let _ = reply.send(status(&engine, &args.iface, "control", Some(&server)).await);
            }
            _ = signals.terminate.recv() => break,
            _ = signals.interrupt.recv() => break,
        }
    }
    client.abort();
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
