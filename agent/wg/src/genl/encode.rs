//! Turns a [`DeviceUpdate`] into WG_CMD_SET_DEVICE attribute sets that each fit one netlink
//! message. A peer whose allowed IPs do not fit is continued in the next message under the
//! same public key, without the replace flag, which is how wg(8) splits it too.

use netlink_packet_core::Emitable;
use netlink_packet_wireguard::{
    WireguardAddressFamily, WireguardAllowedIp, WireguardAllowedIpAttr, WireguardAttribute,
    WireguardPeer, WireguardPeerAttribute, WireguardPeerFlags,
};

use crate::diff::{DeviceUpdate, PeerUpdate};

/// Attribute bytes per message. The kernel accepts far larger messages; this keeps each
/// allocation small while needing few messages (about 300 single-address peers each).
pub const MESSAGE_BUDGET: usize = 16 * 1024;

/// Netlink attribute header length, the overhead of every nested list.
const NLA_HEADER: usize = 4;

pub fn encode(ifname: &str, update: &DeviceUpdate, budget: usize) -> Vec<Vec<WireguardAttribute>> {
    let mut out = Vec::new();
    let mut current = MessageBuilder::new(ifname, Some(update));
    for peer in &update.peers {
        let mut head = peer_head(peer);
        let ips: Vec<WireguardAllowedIp> = peer
            .replace_allowed_ips
            .iter()
            .flatten()
            .map(|net| allowed_ip(*net))
            .collect();
        let mut ips = ips.into_iter().peekable();
        loop {
            let first_ip = ips.peek().map_or(0, |ip| ip.buffer_len());
            if !current.fits(&head, first_ip, budget) && current.has_peers() {
                out.push(current.finish());
                current = MessageBuilder::new(ifname, None);
            }
            let mut chunk = Vec::new();
            let mut used = current.size + peer_size(&head, &[]);
            while let Some(ip) = ips.peek() {
                if used + ip.buffer_len() > budget && !chunk.is_empty() {
                    break;
                }
                used += ip.buffer_len();
                chunk.push(ips.next().unwrap());
            }
            let has_ip_list = peer.replace_allowed_ips.is_some();
            current.push(WireguardPeer(
                head.iter()
                    .cloned()
                    .chain(has_ip_list.then_some(WireguardPeerAttribute::AllowedIps(chunk)))
                    .collect(),
            ));
            if ips.peek().is_none() {
                break;
            }
            // The rest of this peer's allowed IPs go on, added to what was just written.
            head = vec![WireguardPeerAttribute::PublicKey(
                *peer.public_key.as_bytes(),
            )];
            out.push(current.finish());
            current = MessageBuilder::new(ifname, None);
        }
    }
    if current.has_peers() || out.is_empty() {
        out.push(current.finish());
    }
    out
}

struct MessageBuilder {
    attributes: Vec<WireguardAttribute>,
    peers: Vec<WireguardPeer>,
    size: usize,
}

impl MessageBuilder {
    fn new(ifname: &str, device: Option<&DeviceUpdate>) -> Self {
        let mut attributes = vec![WireguardAttribute::IfName(ifname.to_string())];
        if let Some(update) = device {
            if let Some(key) = &update.private_key {
                attributes.push(WireguardAttribute::PrivateKey(*key.as_bytes()));
            }
            if let Some(port) = update.listen_port {
                attributes.push(WireguardAttribute::ListenPort(port));
            }
            if let Some(mark) = update.fwmark {
                attributes.push(WireguardAttribute::Fwmark(mark));
            }
        }
        let size = attributes.as_slice().buffer_len() + NLA_HEADER;
        MessageBuilder {
            attributes,
            peers: Vec::new(),
            size,
        }
    }

    fn fits(&self, head: &[WireguardPeerAttribute], first_ip: usize, budget: usize) -> bool {
        self.size + peer_size(head, &[]) + first_ip <= budget
    }

    fn has_peers(&self) -> bool {
        !self.peers.is_empty()
    }

    fn push(&mut self, peer: WireguardPeer) {
        self.size += peer.buffer_len();
        self.peers.push(peer);
    }

    fn finish(self) -> Vec<WireguardAttribute> {
        let mut attributes = self.attributes;
        if !self.peers.is_empty() {
            attributes.push(WireguardAttribute::Peers(self.peers));
        }
        attributes
    }
}

fn peer_size(head: &[WireguardPeerAttribute], ips: &[WireguardAllowedIp]) -> usize {
    NLA_HEADER + head.buffer_len() + NLA_HEADER + ips.buffer_len()
}

fn peer_head(peer: &PeerUpdate) -> Vec<WireguardPeerAttribute> {
    let mut head = vec![WireguardPeerAttribute::PublicKey(
        *peer.public_key.as_bytes(),
    )];
    let mut flags = WireguardPeerFlags::empty();
    if peer.remove {
        flags |= WireguardPeerFlags::RemoveMe;
    }
    if peer.replace_allowed_ips.is_some() {
        flags |= WireguardPeerFlags::ReplaceAllowedIps;
    }
    if !flags.is_empty() {
        head.push(WireguardPeerAttribute::Flags(flags));
    }
    if let Some(psk) = &peer.preshared_key {
        head.push(WireguardPeerAttribute::PresharedKey(*psk.as_bytes()));
    }
    if let Some(endpoint) = peer.endpoint {
        head.push(WireguardPeerAttribute::Endpoint(endpoint));
    }
    if let Some(seconds) = peer.persistent_keepalive {
        head.push(WireguardPeerAttribute::PersistentKeepalive(seconds));
    }
    head
}

fn allowed_ip(net: ipnet::IpNet) -> WireguardAllowedIp {
    let family = match net {
        ipnet::IpNet::V4(_) => WireguardAddressFamily::Ipv4,
        ipnet::IpNet::V6(_) => WireguardAddressFamily::Ipv6,
    };
    WireguardAllowedIp(vec![
        WireguardAllowedIpAttr::Family(family),
        WireguardAllowedIpAttr::IpAddr(net.addr()),
        WireguardAllowedIpAttr::Cidr(net.prefix_len()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::genl::decode::decode;
    use crate::key::PublicKey;
    use ipnet::IpNet;

    fn nets(count: u32) -> Vec<IpNet> {
        (0..count)
            .map(|n| IpNet::new(std::net::Ipv4Addr::from(0x0a00_0000 + n).into(), 32).unwrap())
            .collect()
    }

    fn peer(n: u32, ips: Vec<IpNet>) -> PeerUpdate {
        let mut key = [0u8; 32];
        key[..4].copy_from_slice(&n.to_be_bytes());
        PeerUpdate {
            endpoint: Some("192.0.2.1:51820".parse().unwrap()),
            replace_allowed_ips: Some(ips),
            ..PeerUpdate::new(PublicKey::from_bytes(key))
        }
    }

    fn emitted_len(attributes: &[WireguardAttribute]) -> usize {
        attributes.buffer_len()
    }

    #[test]
    fn every_message_fits_the_budget() {
        let update = DeviceUpdate {
            peers: (0..2000).map(|n| peer(n, nets(2))).collect(),
            ..DeviceUpdate::default()
        };
        let messages = encode("wg0", &update, MESSAGE_BUDGET);
        assert!(messages.len() > 1);
        for message in &messages {
            assert!(
                emitted_len(message) <= MESSAGE_BUDGET,
                "{}",
                emitted_len(message)
            );
        }
    }

    #[test]
    fn a_large_peer_is_split_and_only_the_first_part_replaces() {
        let update = DeviceUpdate {
            peers: vec![peer(1, nets(1000))],
            ..DeviceUpdate::default()
        };
        let messages = encode("wg0", &update, 4096);
        assert!(messages.len() >= 7, "{} messages", messages.len());
        let replaces: Vec<bool> = messages
            .iter()
            .map(|m| match m.last().unwrap() {
                WireguardAttribute::Peers(peers) => peers[0].iter().any(|a| {
                    matches!(a, WireguardPeerAttribute::Flags(f) if f.contains(WireguardPeerFlags::ReplaceAllowedIps))
                }),
                _ => panic!("no peers"),
            })
            .collect();
        assert!(replaces[0]);
        assert!(replaces[1..].iter().all(|r| !r));
        for message in &messages {
            assert!(emitted_len(message) <= 4096);
        }
        // Read back as the kernel would report it: split parts merge into one peer.
        let state = decode(messages).unwrap();
        let all = &state.config.peers.values().next().unwrap().allowed_ips;
        assert_eq!(all.len(), 1000);
    }

    #[test]
    fn device_fields_go_in_the_first_message_only() {
        let update = DeviceUpdate {
            listen_port: Some(41641),
            fwmark: Some(0x80000),
            peers: (0..1000).map(|n| peer(n, nets(1))).collect(),
            ..DeviceUpdate::default()
        };
        let messages = encode("wg0", &update, 4096);
        let has_port = |m: &Vec<WireguardAttribute>| {
            m.iter()
                .any(|a| matches!(a, WireguardAttribute::ListenPort(_)))
        };
        assert!(has_port(&messages[0]));
        assert!(messages[1..].iter().all(|m| !has_port(m)));
    }

    #[test]
    fn an_empty_update_with_device_fields_is_one_message() {
        let update = DeviceUpdate {
            fwmark: Some(1),
            ..DeviceUpdate::default()
        };
        assert_eq!(encode("wg0", &update, MESSAGE_BUDGET).len(), 1);
    }

    #[test]
    fn removal_carries_no_allowed_ips() {
        let update = DeviceUpdate {
            peers: vec![PeerUpdate::removal(PublicKey::from_bytes([1; 32]))],
            ..DeviceUpdate::default()
        };
        let messages = encode("wg0", &update, MESSAGE_BUDGET);
        let WireguardAttribute::Peers(peers) = messages[0].last().unwrap() else {
            panic!()
        };
        assert!(
            !peers[0]
                .iter()
                .any(|a| matches!(a, WireguardPeerAttribute::AllowedIps(_)))
        );
    }
}
