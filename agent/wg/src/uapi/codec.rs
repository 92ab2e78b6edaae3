//! The cross-platform WireGuard configuration protocol ("UAPI") spoken by wireguard-go on
//! /var/run/wireguard/<ifname>.sock: `key=value` lines, an empty line ends a message.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use ipnet::IpNet;

use crate::device::DeviceState;
use crate::diff::DeviceUpdate;
use crate::key::{PresharedKey, PrivateKey, PublicKey};

pub const GET_REQUEST: &str = "get=1\n\n";

/// The `set=1` request for `update`. Endpoints are written as `ip:port` / `[ip]:port`.
pub fn encode_set(update: &DeviceUpdate) -> String {
    let mut out = String::from("set=1\n");
    if let Some(key) = &update.private_key {
        let _ = writeln!(out, "private_key={}", key.to_hex());
    }
    if let Some(port) = update.listen_port {
        let _ = writeln!(out, "listen_port={port}");
    }
    if let Some(mark) = update.fwmark {
        let _ = writeln!(out, "fwmark={mark}");
    }
    for peer in &update.peers {
        let _ = writeln!(out, "public_key={}", peer.public_key.to_hex());
        if peer.remove {
            out.push_str("remove=true\n");
            continue;
        }
        if let Some(psk) = &peer.preshared_key {
            let _ = writeln!(out, "preshared_key={}", psk.to_hex());
        }
        if let Some(endpoint) = peer.endpoint {
            let _ = writeln!(out, "endpoint={endpoint}");
        }
        if let Some(seconds) = peer.persistent_keepalive {
            let _ = writeln!(out, "persistent_keepalive_interval={seconds}");
        }
        if let Some(ips) = &peer.replace_allowed_ips {
            out.push_str("replace_allowed_ips=true\n");
            for ip in ips {
                let _ = writeln!(out, "allowed_ip={ip}");
            }
        }
    }
    out.push('\n');
    out
}

/// Checks the `errno=N` reply to a set.
pub fn decode_errno(reply: &str) -> Result<(), String> {
    for line in reply.lines() {
        if let Some(value) = line.strip_prefix("errno=") {
            return match value.trim().parse::<i32>() {
                Ok(0) => Ok(()),
                // wireguard-go reports negated errno values.
                Ok(code) => Err(format!(
                    "the daemon refused the change: {}",
                    std::io::Error::from_raw_os_error(code.abs())
                )),
                Err(_) => Err(format!("unreadable errno line {line:?}")),
            };
        }
    }
    Err("reply has no errno line".into())
}

/// Parses the reply to `get=1`.
pub fn decode_get(reply: &str) -> Result<DeviceState, String> {
    let mut state = DeviceState::default();
    let mut peer: Option<PublicKey> = None;
    let mut handshake_sec = 0u64;
    for (number, line) in reply.lines().enumerate() {
        if line.is_empty() {
            break;
        }
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| format!("line {}: no '=' in {line:?}", number + 1))?;
        let bad = |e: &dyn std::fmt::Display| format!("line {}: {name}: {e}", number + 1);
        match (name, peer) {
            ("errno", _) => decode_errno(line)?,
            ("private_key", None) => {
                let private = PrivateKey::from_hex(value).map_err(|e| bad(&e))?;
                state.public_key = Some(private.public_key());
                state.config.private_key = Some(private);
            }
            ("listen_port", None) => {
                state.config.listen_port = value.parse().map_err(|e| bad(&e))?;
            }
            ("fwmark", None) => state.config.fwmark = value.parse().map_err(|e| bad(&e))?,
            ("public_key", _) => {
                let key = PublicKey::from_hex(value).map_err(|e| bad(&e))?;
                state.config.peers.entry(key).or_default();
                state.stats.entry(key).or_default();
                peer = Some(key);
            }
            (_, Some(key)) => {
                let config = state.config.peers.get_mut(&key).unwrap();
                let stats = state.stats.get_mut(&key).unwrap();
                match name {
                    "preshared_key" => {
                        let psk = PresharedKey::from_hex(value).map_err(|e| bad(&e))?;
                        config.preshared_key = (!psk.is_zero()).then_some(psk);
                    }
                    "endpoint" => {
                        config.endpoint = Some(value.parse::<SocketAddr>().map_err(|e| bad(&e))?);
                    }
                    "persistent_keepalive_interval" => {
                        config.persistent_keepalive = value.parse().map_err(|e| bad(&e))?;
                    }
                    "allowed_ip" => {
                        let net: IpNet = value.parse().map_err(|e| bad(&e))?;
                        config.allowed_ips.insert(net);
                    }
                    "rx_bytes" => stats.rx_bytes = value.parse().map_err(|e| bad(&e))?,
                    "tx_bytes" => stats.tx_bytes = value.parse().map_err(|e| bad(&e))?,
                    "last_handshake_time_sec" => {
                        handshake_sec = value.parse().map_err(|e| bad(&e))?;
                    }
                    "last_handshake_time_nsec" => {
                        let nanos: u32 = value.parse().map_err(|e| bad(&e))?;
                        stats.last_handshake = (handshake_sec != 0 || nanos != 0)
                            .then(|| SystemTime::UNIX_EPOCH + Duration::new(handshake_sec, nanos));
                    }
                    _ => {}
                }
            }
            _ => {}
        }
    }
    Ok(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::PeerUpdate;

    #[test]
    fn set_request_lists_device_then_peers() {
        let key = PublicKey::from_bytes([0xab; 32]);
        let update = DeviceUpdate {
            listen_port: Some(41641),
            peers: vec![
                PeerUpdate {
                    endpoint: Some("[2001:db8::1]:51820".parse().unwrap()),
                    persistent_keepalive: Some(25),
                    replace_allowed_ips: Some(vec!["10.0.0.0/24".parse().unwrap()]),
                    ..PeerUpdate::new(key)
                },
                PeerUpdate::removal(PublicKey::from_bytes([1; 32])),
            ],
            ..DeviceUpdate::default()
        };
        let text = encode_set(&update);
        assert!(text.starts_with("set=1\nlisten_port=41641\npublic_key=abab"));
        assert!(text.contains("endpoint=[2001:db8::1]:51820\n"));
        assert!(text.contains("replace_allowed_ips=true\nallowed_ip=10.0.0.0/24\n"));
        assert!(text.ends_with("remove=true\n\n"));
    }

    #[test]
    fn get_reply_parses() {
        let private = PrivateKey::from_bytes([3; 32]);
        let reply = format!(
            "private_key={}\nlisten_port=51820\nfwmark=524288\n\
             public_key={}\npreshared_key={}\nprotocol_version=1\nendpoint=192.0.2.1:4242\n\
             last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\n\
             tx_bytes=10\nrx_bytes=20\npersistent_keepalive_interval=25\n\
             allowed_ip=10.0.0.1/32\nallowed_ip=fd00::/64\nerrno=0\n\n",
            private.to_hex(),
            "cd".repeat(32),
            "00".repeat(32)
        );
        let state = decode_get(&reply).unwrap();
        assert_eq!(state.config.listen_port, 51820);
        assert_eq!(state.config.fwmark, 0x80000);
        assert_eq!(state.public_key, Some(private.public_key()));
        let (key, peer) = state.config.peers.iter().next().unwrap();
        assert_eq!(*key, PublicKey::from_bytes([0xcd; 32]));
        assert_eq!(peer.allowed_ips.len(), 2);
        assert_eq!(peer.persistent_keepalive, 25);
        assert!(peer.preshared_key.is_none());
        assert_eq!(state.stats[key].rx_bytes, 20);
        assert!(state.stats[key].last_handshake.is_some());
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(decode_get("listen_port=notanumber\n\n").is_err());
        assert!(decode_get("no equals sign\n").is_err());
        assert!(decode_get("public_key=xyz\n").is_err());
        assert!(decode_get("errno=22\n\n").is_err());
        assert!(decode_errno("").is_err());
    }
}
