//! `meshgate daemon`: applies the configuration, then keeps the kernel in line with it. The
//! configuration is the only source of desired state until the control client lands; SIGHUP
//! re-reads it. Exiting never tears the interface down: forwarding goes on without us, and the
//! next start adopts it.

use std::path::Path;

use meshgate_wg::{Engine, InterfaceConfig, PrivateKey, wgconf};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::DaemonArgs;

pub async fn run(args: DaemonArgs) -> Result<(), Box<dyn std::error::Error>> {
    let mut desired = load(&args)?;
    let engine = Engine::new(args.backend.into())?;
    let report = engine.apply(&desired).await?;
    tracing::info!(interface = %desired.name, "applied: {report}");

    let mut hangup = signal(SignalKind::hangup())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut ticker = tokio::time::interval(args.reconcile_every);
    ticker.tick().await;
    loop {
        let result = tokio::select! {
            _ = ticker.tick() => engine.apply(&desired).await,
            _ = hangup.recv() => match load(&args) {
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
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
        };
        match result {
            Ok(report) if report.changed_anything() => {
                tracing::info!(interface = %desired.name, "reconciled: {report}");
            }
            Ok(_) => tracing::debug!(interface = %desired.name, "in line with the configuration"),
            Err(e) => tracing::error!(interface = %desired.name, "apply failed: {e}"),
        }
    }
    tracing::info!(interface = %desired.name, "stopping; the interface keeps forwarding");
    Ok(())
}

fn load(args: &DaemonArgs) -> Result<InterfaceConfig, meshgate_wg::Error> {
    let mut config = wgconf::load(&args.config, &args.iface)?;
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
