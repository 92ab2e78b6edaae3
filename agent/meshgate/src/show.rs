//! `meshgate wg show`: an interface as the system has it, for people and for scripts.

use std::fmt::Write as _;
use std::time::SystemTime;

use meshgate_wg::engine::InterfaceState;
use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct InterfaceView {
    pub name: String,
    pub backend: &'static str,
    pub public_key: Option<String>,
    pub listen_port: u16,
    pub fwmark: u32,
    pub mtu: u32,
    pub up: bool,
    pub addresses: Vec<String>,
    pub routes: Vec<String>,
    pub rules: Vec<String>,
    pub peers: Vec<PeerView>,
}

#[derive(Debug, Serialize)]
pub struct PeerView {
    pub public_key: String,
    pub endpoint: Option<String>,
    pub allowed_ips: Vec<String>,
    pub persistent_keepalive: u16,
    /// Seconds since the Unix epoch.
    pub last_handshake: Option<u64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

impl InterfaceView {
    pub fn from_state(state: &InterfaceState) -> Self {
        let device = &state.device;
        InterfaceView {
            name: state.link.name.clone(),
            backend: state.backend,
            public_key: device
                .public_key
                .or_else(|| device.config.private_key.as_ref().map(|k| k.public_key()))
                .map(|k| k.to_string()),
            listen_port: device.config.listen_port,
            fwmark: device.config.fwmark,
            mtu: state.link.mtu,
            up: state.link.up,
            addresses: state
                .net
                .addresses
                .iter()
                .map(ToString::to_string)
                .collect(),
            routes: state
                .net
                .routes
                .iter()
                .map(|r| format!("{} table {}", r.destination, r.table))
                .collect(),
            rules: state
                .net
                .rules
                .iter()
                .map(|r| {
                    let mark = r.fwmark.map_or(String::new(), |(mark, mask)| {
                        format!(
                            "{}fwmark {mark:#x}/{mask:#x} ",
                            if r.invert { "not " } else { "" }
                        )
                    });
                    format!(
                        "{:?} pref {} {mark}lookup {}",
                        r.family, r.priority, r.table
                    )
                })
                .collect(),
            peers: device
                .config
                .peers
                .iter()
                .map(|(key, peer)| {
                    let stats = device.stats.get(key).copied().unwrap_or_default();
                    PeerView {
                        public_key: key.to_string(),
                        endpoint: peer.endpoint.map(|e| e.to_string()),
                        allowed_ips: peer.allowed_ips.iter().map(ToString::to_string).collect(),
                        persistent_keepalive: peer.persistent_keepalive,
                        last_handshake: unix_seconds(stats.last_handshake),
                        rx_bytes: stats.rx_bytes,
                        tx_bytes: stats.tx_bytes,
                    }
                })
                .collect(),
        }
    }

    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "interface: {} ({} WireGuard)", self.name, self.backend);
        if let Some(key) = &self.public_key {
            let _ = writeln!(out, "  public key: {key}");
        }
        out.push_str("  private key: (hidden)\n");
        let _ = writeln!(out, "  listening port: {}", self.listen_port);
        if self.fwmark != 0 {
            let _ = writeln!(out, "  fwmark: {:#x}", self.fwmark);
        }
        let _ = writeln!(
            out,
            "  mtu: {}, {}",
            self.mtu,
            if self.up { "up" } else { "down" }
        );
        for (label, items) in [
            ("address", &self.addresses),
            ("route", &self.routes),
            ("rule", &self.rules),
        ] {
            for item in items {
                let _ = writeln!(out, "  {label}: {item}");
            }
        }
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        for peer in &self.peers {
            let _ = writeln!(out, "\npeer: {}", peer.public_key);
            if let Some(endpoint) = &peer.endpoint {
                let _ = writeln!(out, "  endpoint: {endpoint}");
            }
            let ips = if peer.allowed_ips.is_empty() {
                "(none)".to_string()
            } else {
                peer.allowed_ips.join(", ")
            };
            let _ = writeln!(out, "  allowed ips: {ips}");
            if let Some(at) = peer.last_handshake {
                let _ = writeln!(
                    out,
                    "  latest handshake: {} seconds ago",
                    now.saturating_sub(at)
                );
            }
            if peer.rx_bytes > 0 || peer.tx_bytes > 0 {
                let _ = writeln!(
                    out,
                    "  transfer: {} B received, {} B sent",
                    peer.rx_bytes, peer.tx_bytes
                );
            }
            if peer.persistent_keepalive != 0 {
                let _ = writeln!(
                    out,
                    "  persistent keepalive: every {} seconds",
                    peer.persistent_keepalive
                );
            }
        }
        out
    }
}

/// Seconds since the Unix epoch, as `wg show dump` and the JSON outputs give times.
pub fn unix_seconds(time: Option<SystemTime>) -> Option<u64> {
    time.and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map(|d| d.as_secs())
}
