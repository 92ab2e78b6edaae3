//! What `meshgate status` answers, read from the system.

use meshgate_wg::Engine;

use crate::api::{PeerStatus, SelfStatus, Status};

/// What `meshgate status` shows: the interface as the system has it.
pub(super) async fn status(
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
                latest_handshake: crate::show::unix_seconds(stats.last_handshake),
                rx_bytes: stats.rx_bytes,
                tx_bytes: stats.tx_bytes,
            }
        })
        .collect();
    status
}
