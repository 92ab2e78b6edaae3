//! What `meshgate status` answers, read from the system.

use meshgate_wg::Engine;

use meshgate_control::netmap::PeerDirectory;

use super::paths::{Shown, Steering};
use crate::api::{DerpRegionStatus, DerpStatus, PeerStatus, SelfStatus, Status};

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
            .map(|a| a.addr())
            // MagicDNS's service addresses sit on the interface but are not this node's.
            .filter(|a| {
                *a != std::net::IpAddr::V4(meshgate_magicdns::QUAD100_V4)
                    && *a != std::net::IpAddr::V6(meshgate_magicdns::QUAD100_V6)
            })
            .map(|a| a.to_string())
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
                path: None,
                latency_ms: None,
                relay_region: None,
                relay_region_code: None,
                latest_handshake: crate::show::unix_seconds(stats.last_handshake),
                rx_bytes: stats.rx_bytes,
                tx_bytes: stats.tx_bytes,
            }
        })
        .collect();
    status
}

/// What the control session knows of each peer (name, online, path) and of DERP.
pub(super) fn add_session(status: &mut Status, directory: &PeerDirectory, steering: &Steering) {
    for peer in &mut status.peers {
        let Ok(key) = peer.public_key.parse::<meshgate_wg::PublicKey>() else {
            continue;
        };
        if let Some(info) = directory.get(key.as_bytes()) {
            peer.name = (!info.name.is_empty()).then(|| info.name.clone());
            peer.online = info.online;
        }
        match steering.shown(key.as_bytes()) {
            Some(Shown::Direct(_, latency)) => {
                peer.path = Some("direct".to_owned());
                peer.latency_ms = latency.map(|l| l.as_secs_f64() * 1000.0);
            }
            Some(Shown::Relay { region, code }) => {
                peer.path = Some("relay".to_owned());
                peer.relay_region = Some(region);
                peer.relay_region_code = Some(code);
            }
            Some(Shown::Unreachable) => peer.path = Some("unreachable".to_owned()),
            None => {}
        }
    }
    status.port_mapping = steering.port_mapping();
    let derp = steering.derp();
    if derp.home.is_some() || !derp.regions.is_empty() {
        status.derp = Some(DerpStatus {
            home: derp.home,
            regions: derp
                .regions
                .into_iter()
                .map(|(id, code, connected, error)| DerpRegionStatus {
                    id,
                    code,
                    connected,
                    error,
                })
                .collect(),
        });
    }
}
