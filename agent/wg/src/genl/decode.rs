//! Reads WG_CMD_GET_DEVICE dump messages back into a [`DeviceState`]. The kernel splits a
//! device across messages and one peer's allowed IPs across several of them, repeating the
//! public key; parts are merged here so a peer reads back exactly as it was written.

use std::time::{Duration, SystemTime};

use ipnet::IpNet;
use netlink_packet_wireguard::{
    WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute, WireguardPeer,
    WireguardPeerAttribute,
};

use crate::device::{DeviceState, PeerConfig, PeerStats};
use crate::error::Error;
use crate::key::{PresharedKey, PrivateKey, PublicKey};

pub fn decode(
    messages: impl IntoIterator<Item = Vec<WireguardAttribute>>,
) -> Result<DeviceState, Error> {
    let mut state = DeviceState::default();
    for attributes in messages {
        for attribute in attributes {
            match attribute {
                WireguardAttribute::PrivateKey(bytes) if bytes != [0; 32] => {
                    state.config.private_key = Some(PrivateKey::from_bytes(bytes));
                }
                WireguardAttribute::PublicKey(bytes) if bytes != [0; 32] => {
                    state.public_key = Some(PublicKey::from_bytes(bytes));
                }
                WireguardAttribute::ListenPort(port) => state.config.listen_port = port,
                WireguardAttribute::Fwmark(mark) => state.config.fwmark = mark,
                WireguardAttribute::Peers(peers) => {
                    for peer in peers {
                        merge_peer(&mut state, peer)?;
                    }
                }
                _ => {}
            }
        }
    }
    Ok(state)
}

fn merge_peer(state: &mut DeviceState, peer: WireguardPeer) -> Result<(), Error> {
    let key = peer
        .iter()
        .find_map(|a| match a {
            WireguardPeerAttribute::PublicKey(bytes) => Some(PublicKey::from_bytes(*bytes)),
            _ => None,
        })
        .ok_or_else(|| Error::NetlinkReply {
            context: "reading WireGuard peers".into(),
            reason: "a peer without a public key".into(),
        })?;
    let config = state.config.peers.entry(key).or_default();
    let stats = state.stats.entry(key).or_default();
    for attribute in peer.0 {
        apply_attribute(config, stats, attribute)?;
    }
    Ok(())
}

fn apply_attribute(
    config: &mut PeerConfig,
    stats: &mut PeerStats,
    attribute: WireguardPeerAttribute,
) -> Result<(), Error> {
    match attribute {
        WireguardPeerAttribute::PresharedKey(bytes) => {
            let key = PresharedKey::from_bytes(bytes);
            config.preshared_key = (!key.is_zero()).then_some(key);
        }
        WireguardPeerAttribute::Endpoint(endpoint) => config.endpoint = Some(endpoint),
        WireguardPeerAttribute::PersistentKeepalive(seconds) => {
            config.persistent_keepalive = seconds;
        }
        WireguardPeerAttribute::LastHandshake(time) => {
            stats.last_handshake = (time.seconds != 0 || time.nano_seconds != 0).then(|| {
                SystemTime::UNIX_EPOCH
                    + Duration::new(
                        u64::try_from(time.seconds).unwrap_or(0),
                        u32::try_from(time.nano_seconds).unwrap_or(0),
                    )
            });
        }
        WireguardPeerAttribute::RxBytes(n) => stats.rx_bytes = n,
        WireguardPeerAttribute::TxBytes(n) => stats.tx_bytes = n,
        WireguardPeerAttribute::AllowedIps(ips) => {
            for ip in ips {
                config.allowed_ips.insert(allowed_ip(&ip)?);
            }
        }
        _ => {}
    }
    Ok(())
}

fn allowed_ip(ip: &WireguardAllowedIp) -> Result<IpNet, Error> {
    let mut addr = None;
    let mut cidr = None;
    for attribute in ip.iter() {
        match attribute {
            WireguardAllowedIpAttr::IpAddr(a) => addr = Some(*a),
            WireguardAllowedIpAttr::Cidr(c) => cidr = Some(*c),
            _ => {}
        }
    }
    let bad = |reason: &str| Error::NetlinkReply {
        context: "reading WireGuard allowed IPs".into(),
        reason: reason.into(),
    };
    let (addr, cidr) = addr
        .zip(cidr)
        .ok_or_else(|| bad("an allowed IP without address or mask"))?;
    IpNet::new(addr, cidr).map_err(|_| bad("an allowed IP with a mask longer than its address"))
}
