//! What a WireGuard device holds: the keys, port and mark of the interface, and its peers.
//! The same types describe the state we want and the state the kernel reports.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::SystemTime;

use ipnet::IpNet;

use crate::error::Error;
use crate::key::{PresharedKey, PrivateKey, PublicKey};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceConfig {
    pub private_key: Option<PrivateKey>,
    /// 0 lets the kernel pick a port.
    pub listen_port: u16,
    /// 0 means no mark.
    pub fwmark: u32,
    pub peers: BTreeMap<PublicKey, PeerConfig>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerConfig {
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<SocketAddr>,
    pub allowed_ips: BTreeSet<IpNet>,
    /// Seconds; 0 means off.
    pub persistent_keepalive: u16,
}

/// What the device reports about a peer besides its configuration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerStats {
    pub last_handshake: Option<SystemTime>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// A device as read back: its configuration and the per-peer counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceState {
    pub config: DeviceConfig,
    pub public_key: Option<PublicKey>,
    pub stats: BTreeMap<PublicKey, PeerStats>,
}

impl DeviceConfig {
    /// Refuses what the kernel would take but not mean: an allowed IP on two peers (the kernel
    /// silently moves it to the last one written), a peer with our own public key, and prefixes
    /// with host bits set (normalised by the caller with [`DeviceConfig::normalize`]).
    pub fn validate(&self) -> Result<(), Error> {
        let own = self.private_key.as_ref().map(PrivateKey::public_key);
        let mut owner: BTreeMap<IpNet, &PublicKey> = BTreeMap::new();
        for (key, peer) in &self.peers {
            if Some(*key) == own {
                return Err(Error::InvalidConfig(format!(
                    "peer {key} is this interface's own public key"
                )));
            }
            for net in &peer.allowed_ips {
                if *net != net.trunc() {
                    return Err(Error::InvalidConfig(format!(
                        "allowed IP {net} of peer {key} has host bits set (did you mean {}?)",
                        net.trunc()
                    )));
                }
                if let Some(other) = owner.insert(*net, key) {
                    return Err(Error::InvalidConfig(format!(
                        "allowed IP {net} is given to two peers, {other} and {key}; \
                         WireGuard routes each prefix to exactly one peer"
                    )));
                }
            }
        }
        Ok(())
    }

    /// Clears host bits in allowed IPs, as the kernel stores them.
    pub fn normalize(&mut self) {
        for peer in self.peers.values_mut() {
            peer.allowed_ips = peer.allowed_ips.iter().map(IpNet::trunc).collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(ips: &[&str]) -> PeerConfig {
        PeerConfig {
            allowed_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            ..PeerConfig::default()
        }
    }

    #[test]
    fn overlapping_allowed_ips_are_refused() {
        let mut config = DeviceConfig::default();
        let a = PrivateKey::generate().public_key();
        let b = PrivateKey::generate().public_key();
        config
            .peers
            .insert(a, peer(&["10.0.0.1/32", "10.1.0.0/16"]));
        config.peers.insert(b, peer(&["10.1.0.0/16"]));
        let err = config.validate().unwrap_err().to_string();
        assert!(err.contains("10.1.0.0/16 is given to two peers"), "{err}");
    }

    #[test]
    fn nested_prefixes_on_two_peers_are_fine() {
        // Longest-prefix match makes a /16 on one peer and a /24 inside it on another useful.
        let mut config = DeviceConfig::default();
        config
            .peers
            .insert(PrivateKey::generate().public_key(), peer(&["10.1.0.0/16"]));
        config
            .peers
            .insert(PrivateKey::generate().public_key(), peer(&["10.1.2.0/24"]));
        config.validate().unwrap();
    }

    #[test]
    fn host_bits_are_refused_until_normalised() {
        let mut config = DeviceConfig::default();
        config
            .peers
            .insert(PrivateKey::generate().public_key(), peer(&["10.1.2.3/16"]));
        assert!(
            config
                .validate()
                .unwrap_err()
                .to_string()
                .contains("10.1.0.0/16")
        );
        config.normalize();
        config.validate().unwrap();
    }

    #[test]
    fn own_key_as_peer_is_refused() {
        let private = PrivateKey::generate();
        let mut config = DeviceConfig {
            private_key: Some(private.clone()),
            ..DeviceConfig::default()
        };
        config.peers.insert(private.public_key(), peer(&[]));
        assert!(config.validate().is_err());
    }
}
