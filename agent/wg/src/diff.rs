//! The smallest update that turns one device configuration into another. Pure: no I/O.

use std::net::SocketAddr;

use ipnet::IpNet;

use crate::device::{DeviceConfig, PeerConfig};
use crate::key::{PresharedKey, PrivateKey, PublicKey};

/// Changes to write to a device; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceUpdate {
    pub private_key: Option<PrivateKey>,
    pub listen_port: Option<u16>,
    pub fwmark: Option<u32>,
    pub peers: Vec<PeerUpdate>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerUpdate {
    pub public_key: PublicKey,
    pub remove: bool,
    /// An all-zero key clears the preshared key.
    pub preshared_key: Option<PresharedKey>,
    pub endpoint: Option<SocketAddr>,
    pub persistent_keepalive: Option<u16>,
    /// When set, the peer's allowed IPs become exactly these.
    pub replace_allowed_ips: Option<Vec<IpNet>>,
}

impl PeerUpdate {
    pub fn new(public_key: PublicKey) -> Self {
        PeerUpdate {
            public_key,
            remove: false,
            preshared_key: None,
            endpoint: None,
            persistent_keepalive: None,
            replace_allowed_ips: None,
        }
    }

    pub fn removal(public_key: PublicKey) -> Self {
        PeerUpdate {
            remove: true,
            ..PeerUpdate::new(public_key)
        }
    }

    /// Everything needed to create the peer from nothing.
    pub fn create(public_key: PublicKey, peer: &PeerConfig) -> Self {
        PeerUpdate {
            preshared_key: peer.preshared_key.clone(),
            endpoint: peer.endpoint,
            persistent_keepalive: (peer.persistent_keepalive != 0)
                .then_some(peer.persistent_keepalive),
            replace_allowed_ips: Some(peer.allowed_ips.iter().copied().collect()),
            ..PeerUpdate::new(public_key)
        }
    }

    fn changes_anything(&self) -> bool {
        self.remove
            || self.preshared_key.is_some()
            || self.endpoint.is_some()
            || self.persistent_keepalive.is_some()
            || self.replace_allowed_ips.is_some()
    }
}

impl DeviceUpdate {
    pub fn is_empty(&self) -> bool {
        self.private_key.is_none()
            && self.listen_port.is_none()
            && self.fwmark.is_none()
            && self.peers.is_empty()
    }

    /// Number of peers added, changed or removed.
    pub fn peer_changes(&self) -> usize {
        self.peers.len()
    }
}

/// What to write so that a device holding `actual` holds `desired`.
///
/// An endpoint that `desired` leaves unset is not touched: the kernel learns endpoints from
/// authenticated packets (roaming), and there is no way to unset one.
pub fn diff(actual: &DeviceConfig, desired: &DeviceConfig) -> DeviceUpdate {
    let mut update = DeviceUpdate {
        private_key: (desired.private_key.is_some() && desired.private_key != actual.private_key)
            .then(|| desired.private_key.clone())
            .flatten(),
        listen_port: (desired.listen_port != 0 && desired.listen_port != actual.listen_port)
            .then_some(desired.listen_port),
        fwmark: (desired.fwmark != actual.fwmark).then_some(desired.fwmark),
        peers: Vec::new(),
    };

    for key in actual.peers.keys() {
        if !desired.peers.contains_key(key) {
            update.peers.push(PeerUpdate::removal(*key));
        }
    }
    for (key, want) in &desired.peers {
        match actual.peers.get(key) {
            None => update.peers.push(PeerUpdate::create(*key, want)),
            Some(have) => {
                let change = peer_diff(*key, have, want);
                if change.changes_anything() {
                    update.peers.push(change);
                }
            }
        }
    }
    update
}

fn peer_diff(key: PublicKey, have: &PeerConfig, want: &PeerConfig) -> PeerUpdate {
    let mut change = PeerUpdate::new(key);
    if have.preshared_key != want.preshared_key {
        change.preshared_key = Some(
            want.preshared_key
                .clone()
                .unwrap_or_else(|| PresharedKey::from_bytes([0; 32])),
        );
    }
    if want.endpoint.is_some() && want.endpoint != have.endpoint {
        change.endpoint = want.endpoint;
    }
    if have.persistent_keepalive != want.persistent_keepalive {
        change.persistent_keepalive = Some(want.persistent_keepalive);
    }
    if have.allowed_ips != want.allowed_ips {
        change.replace_allowed_ips = Some(want.allowed_ips.iter().copied().collect());
    }
    change
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> PublicKey {
        PublicKey::from_bytes([n; 32])
    }

    fn peer(endpoint: &str, ips: &[&str]) -> PeerConfig {
        PeerConfig {
            endpoint: Some(endpoint.parse().unwrap()),
            allowed_ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            ..PeerConfig::default()
        }
    }

    fn device(peers: Vec<(PublicKey, PeerConfig)>) -> DeviceConfig {
        DeviceConfig {
            private_key: Some(PrivateKey::from_bytes([9; 32])),
            listen_port: 41641,
            fwmark: 0x80000,
            peers: peers.into_iter().collect(),
        }
    }

    #[test]
    fn equal_configurations_need_nothing() {
        let config = device(vec![(key(1), peer("192.0.2.1:51820", &["10.0.0.1/32"]))]);
        assert!(diff(&config, &config).is_empty());
    }

    #[test]
    fn one_changed_peer_is_one_update() {
        let mut peers: Vec<_> = (1..=100)
            .map(|n| {
                (
                    key(n),
                    peer("192.0.2.1:51820", &[&format!("10.0.0.{n}/32")]),
                )
            })
            .collect();
        let before = device(peers.clone());
        peers[41].1.endpoint = Some("198.51.100.7:4242".parse().unwrap());
        let after = device(peers);
        let update = diff(&before, &after);
        assert_eq!(update.peers.len(), 1);
        let change = &update.peers[0];
        assert_eq!(change.public_key, key(42));
        assert_eq!(change.endpoint, Some("198.51.100.7:4242".parse().unwrap()));
        assert_eq!(change.replace_allowed_ips, None);
        assert!(update.private_key.is_none() && update.listen_port.is_none());
    }

    #[test]
    fn removed_added_and_readdressed_peers() {
        let before = device(vec![
            (key(1), peer("192.0.2.1:1", &["10.0.0.1/32"])),
            (key(2), peer("192.0.2.2:1", &["10.0.0.2/32"])),
        ]);
        let after = device(vec![
            (key(2), peer("192.0.2.2:1", &["10.0.0.2/32", "10.9.0.0/16"])),
            (key(3), peer("192.0.2.3:1", &["10.0.0.3/32"])),
        ]);
        let update = diff(&before, &after);
        assert_eq!(update.peers.len(), 3);
        assert!(update.peers[0].remove && update.peers[0].public_key == key(1));
        assert_eq!(update.peers[1].public_key, key(2));
        assert_eq!(
            update.peers[1].replace_allowed_ips.as_ref().unwrap().len(),
            2
        );
        assert_eq!(update.peers[2].public_key, key(3));
        assert!(update.peers[2].replace_allowed_ips.is_some());
    }

    #[test]
    fn a_roamed_endpoint_is_left_alone_when_none_is_wanted() {
        let before = device(vec![(key(1), peer("192.0.2.1:1", &[]))]);
        let mut after = before.clone();
        after.peers.get_mut(&key(1)).unwrap().endpoint = None;
        assert!(diff(&before, &after).is_empty());
    }

    #[test]
    fn device_fields() {
        let before = device(vec![]);
        let mut after = before.clone();
        after.fwmark = 0;
        after.listen_port = 0;
        let update = diff(&before, &after);
        assert_eq!(update.fwmark, Some(0));
        assert_eq!(
            update.listen_port, None,
            "port 0 means keep whatever the kernel chose"
        );
    }
}
