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

use std::path::Path;

use meshgate_wg::{ApplyReport, Engine, InterfaceConfig, PrivateKey, wgconf};
use tokio::signal::unix::{Signal, SignalKind, signal};
use tokio::sync::mpsc;

use crate::api::{self, Request};
use crate::cli::DaemonArgs;

type BoxError = Box<dyn std::error::Error>;

mod access;
mod control;
mod disco;
mod dns;
mod endpoints;
mod forwarding;
mod host_dns;
mod netcheck;
mod paths;
mod prefs;
mod reverse_path;
mod settings;
mod status;
mod sysctl;

use control::run_control;

use status::status;

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
