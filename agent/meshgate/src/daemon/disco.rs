//! Disco's I/O for path steering: our disco key and each peer's shared key, opening what
//! arrives (over WireGuard's shared port or DERP) and sealing what the path table sends, and
//! the shared port's reader that hands STUN answers to netcheck and disco to the steering.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use meshgate_control::netmap::PeerDirectory;
use meshgate_disco::{
    CallMeMaybe, DiscoPrivate, DiscoPublic, Message, NodePublic, Ping, Pong, SharedKey,
    random_nonce,
};
use meshgate_netcheck::StunTransport;
use meshgate_paths::Outgoing;
use meshgate_sharedport::SharedPort;
use tokio::sync::mpsc;

type Key = [u8; 32];

/// Our disco key (new each time the daemon starts a session, as Tailscale's is per process)
/// and one shared key per peer that has a disco key.
pub(super) struct DiscoKeys {
    private: DiscoPrivate,
    peers: BTreeMap<Key, SharedKey>,
    by_disco: BTreeMap<Key, Key>,
}

impl std::fmt::Debug for DiscoKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscoKeys")
            .field("public", &self.private.public())
            .field("peers", &self.peers.len())
            .finish()
    }
}

impl DiscoKeys {
    pub fn generate() -> DiscoKeys {
        DiscoKeys {
            private: DiscoPrivate::generate(),
            peers: BTreeMap::new(),
            by_disco: BTreeMap::new(),
        }
    }

    pub fn public(&self) -> DiscoPublic {
        self.private.public()
    }

    /// The peers' disco keys now; shared keys are computed once per peer and key.
    pub fn set_peers(&mut self, directory: &PeerDirectory) {
        let mut peers = BTreeMap::new();
        let mut by_disco = BTreeMap::new();
        for (node, info) in directory {
            let Some(disco) = info.disco_key else {
                continue;
            };
            let shared = match self.peers.remove(node) {
                Some(shared) if *shared.peer().as_bytes() == disco => shared,
                _ => SharedKey::new(&self.private, &DiscoPublic::from_bytes(disco)),
            };
            peers.insert(*node, shared);
            by_disco.insert(disco, *node);
        }
        self.peers = peers;
        self.by_disco = by_disco;
    }

    /// A packet that came over UDP: the peer whose disco key sealed it, and the message.
    /// Unknown senders and boxes that do not open are dropped silently, as Tailscale does.
    pub fn open_udp(&self, packet: &[u8]) -> Option<(Key, Message)> {
        let sender = meshgate_disco::sender(packet)?;
        let node = *self.by_disco.get(sender.as_bytes())?;
        let message = self.peers.get(&node)?.open(packet).ok()?;
        Some((node, message))
    }

    /// A packet DERP delivered from the node key `node`: accepted only if sealed by that
    /// node's own disco key.
    pub fn open_derp(&self, node: &Key, packet: &[u8]) -> Option<Message> {
        let shared = self.peers.get(node)?;
        let sender = meshgate_disco::sender(packet)?;
        if sender != shared.peer() {
            return None;
        }
        shared.open(packet).ok()
    }

    /// `msg` sealed for `peer`, if it has a disco key.
    pub fn seal(&self, peer: &Key, msg: &Message) -> Option<Vec<u8>> {
        Some(self.peers.get(peer)?.seal(msg, &random_nonce()))
    }
}

/// The wire message for what the path table wants sent; pings carry our node key.
pub(super) fn message(out: Outgoing, node_key: Option<NodePublic>) -> Message {
    match out {
        Outgoing::Ping { tx_id } => Message::Ping(match node_key {
            Some(key) => Ping::standard(tx_id, key),
            None => Ping {
                tx_id,
                node_key: None,
                padding: 0,
            },
        }),
        Outgoing::Pong { tx_id, src } => Message::Pong(Pong { tx_id, src }),
        Outgoing::CallMeMaybe { endpoints } => Message::CallMeMaybe(CallMeMaybe { endpoints }),
    }
}

/// A CallMeMaybe's endpoints without IPv6 link-local ones, which receivers ignore
/// (reference §1.2).
pub(super) fn usable(endpoints: &[SocketAddr]) -> Vec<SocketAddr> {
    endpoints
        .iter()
        .filter(|e| match e {
            SocketAddr::V6(v6) => !v6.ip().is_unicast_link_local(),
            SocketAddr::V4(_) => true,
        })
        .copied()
        .collect()
}

/// Reads the shared port until it fails: disco to `disco`, STUN to `stun`. Channels that are
/// full drop the datagram, as a busy UDP socket would.
pub(super) async fn read_port(
    port: Arc<SharedPort>,
    disco: mpsc::Sender<(SocketAddr, Bytes)>,
    stun: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) {
    loop {
        match port.recv().await {
            Ok(datagram) => {
                if meshgate_disco::looks_like_disco(&datagram.payload) {
                    let _ = disco.try_send((datagram.src, datagram.payload));
                } else if meshgate_stun::is_stun(&datagram.payload) {
                    let _ = stun.try_send((datagram.src, datagram.payload.to_vec()));
                }
            }
            Err(e) => {
                tracing::error!("shared WireGuard port: {e}; disco and STUN stop");
                return;
            }
        }
    }
}

/// Netcheck over the shared port: requests leave from WireGuard's port, so the mapped
/// address STUN reports is the one peers can reach WireGuard at.
pub(super) struct PortTransport {
    pub port: Arc<SharedPort>,
    pub stun: mpsc::Receiver<(SocketAddr, Vec<u8>)>,
}

impl StunTransport for PortTransport {
    async fn send(&mut self, dst: SocketAddr, packet: &[u8]) {
        if let Err(e) = self.port.send_to(packet, dst).await {
            tracing::debug!(%dst, "STUN over the shared port: {e}");
        }
    }

    async fn recv(&mut self) -> std::io::Result<(SocketAddr, Vec<u8>)> {
        match self.stun.recv().await {
            Some(datagram) => Ok(datagram),
            None => Err(std::io::Error::other("the shared port's reader stopped")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_control::netmap::PeerInfo;

    #[test]
    fn only_known_peers_disco_keys_open_and_derp_senders_must_match() {
        let mut ours = DiscoKeys::generate();
        let mut theirs = DiscoKeys::generate();
        let stranger = DiscoKeys::generate();
        let (our_node, their_node) = ([1u8; 32], [2u8; 32]);
        let directory = |disco: DiscoPublic, node: Key| {
            PeerDirectory::from([(
                node,
                PeerInfo {
                    disco_key: Some(*disco.as_bytes()),
                    ..PeerInfo::default()
                },
            )])
        };
        ours.set_peers(&directory(theirs.public(), their_node));
        theirs.set_peers(&directory(ours.public(), our_node));

        let ping = Message::Ping(Ping::standard([7; 12], NodePublic::from_bytes(their_node)));
        let packet = theirs.seal(&our_node, &ping).unwrap();
        assert_eq!(ours.open_udp(&packet), Some((their_node, ping.clone())));
        assert_eq!(ours.open_derp(&their_node, &packet), Some(ping.clone()));
        // Over DERP from another node key: refused even though the box opens.
        assert_eq!(ours.open_derp(&[3; 32], &packet), None);
        // From a disco key no peer has: dropped.
        let mut stranger = stranger;
        stranger.set_peers(&directory(ours.public(), our_node));
        let foreign = stranger.seal(&our_node, &ping).unwrap();
        assert_eq!(ours.open_udp(&foreign), None);
        let mut tampered = packet.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert_eq!(ours.open_udp(&tampered), None);
    }

    #[test]
    fn link_local_v6_endpoints_are_skipped() {
        let endpoints: Vec<SocketAddr> = ["[fe80::1]:1", "192.0.2.1:2", "[2001:db8::1]:3"]
            .iter()
            .map(|e| e.parse().unwrap())
            .collect();
        assert_eq!(usable(&endpoints), endpoints[1..]);
    }
}
