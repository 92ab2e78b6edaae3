//! Ping (type 0x01): `TxID[12] ‖ NodeKey[32] (optional) ‖ zero padding`.

use meshgate_tailcfg::NodePublic;

use crate::Error;
use crate::packet::OVERHEAD;

const TX_ID_LEN: usize = 12;
const KEY_LEN: usize = 32;

/// Size of the UDP payload of a standard ping (Tailscale's `discoPingSize`): a Ping carrying a
/// node key and no padding, sealed.
pub const STANDARD_PING_SIZE: usize = OVERHEAD + 2 + TX_ID_LEN + KEY_LEN;

/// Padding beyond which a sealed Ping could not fit a UDP datagram; [`Ping`] encoding clamps
/// to this so a caller's bad size cannot make us allocate without bound.
pub const MAX_PADDING: usize = 65_535 - STANDARD_PING_SIZE;

/// A disco Ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// Random per-ping transaction ID, echoed in the Pong.
    pub tx_id: [u8; 12],
    /// The sender's node key as it claims it (absent from clients ≤ 1.16). Not to be trusted
    /// alone: it only narrows down which netmap node owns the sender's disco key.
    pub node_key: Option<NodePublic>,
    /// Trailing zero bytes, used to probe path MTU.
    pub padding: usize,
}

impl Ping {
    /// The ping Tailscale sends for discovery and heartbeats: with our node key, unpadded,
    /// [`STANDARD_PING_SIZE`] (124) bytes once sealed.
    pub fn standard(tx_id: [u8; 12], node_key: NodePublic) -> Ping {
        Ping {
            tx_id,
            node_key: Some(node_key),
            padding: 0,
        }
    }

    pub(crate) fn payload_len(&self) -> usize {
        TX_ID_LEN + self.node_key.map_or(0, |_| KEY_LEN) + self.padding.min(MAX_PADDING)
    }

    pub(crate) fn encode_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.tx_id);
        if let Some(k) = &self.node_key {
            out.extend_from_slice(k.as_bytes());
        }
        out.resize(out.len() + self.padding.min(MAX_PADDING), 0);
    }

    /// Lax as Go's `parsePing`: ≥ 12 bytes; if ≥ 32 more follow they are the node key; the rest
    /// is padding. An all-zero key slot is Go's "no key": then it is reported as `None` and its
    /// 32 bytes count as padding, so every `Ping` value survives encode → parse unchanged.
    pub(crate) fn parse_payload(p: &[u8]) -> Result<Ping, Error> {
        let (Some(tx), Some(rest)) = (p.first_chunk::<TX_ID_LEN>(), p.get(TX_ID_LEN..)) else {
            return Err(Error::Short { what: "ping" });
        };
        let node_key = rest
            .first_chunk::<KEY_LEN>()
            .map(|k| NodePublic::from_bytes(*k))
            .filter(|k| !k.is_zero());
        let padding = rest.len() - node_key.map_or(0, |_| KEY_LEN);
        Ok(Ping {
            tx_id: *tx,
            node_key,
            padding,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    fn key() -> NodePublic {
        NodePublic::from_bytes([7; 32])
    }

    #[test]
    fn layout() {
        let m = Message::Ping(Ping {
            tx_id: [0xaa; 12],
            node_key: Some(key()),
            padding: 5,
        });
        let b = m.encode();
        assert_eq!(&b[..2], &[0x01, 0x00]);
        assert_eq!(&b[2..14], &[0xaa; 12]);
        assert_eq!(&b[14..46], &[7; 32]);
        assert_eq!(&b[46..], &[0; 5]);
        assert_eq!(Message::parse(&b).unwrap(), m);
    }

    #[test]
    fn lax_parsing() {
        let mut p = vec![0x01, 0x00];
        // Fewer than 12 bytes: error.
        p.extend_from_slice(&[3; 11]);
        assert_eq!(Message::parse(&p), Err(Error::Short { what: "ping" }));
        // Exactly 12: old client, no key.
        p.push(3);
        let want = Ping {
            tx_id: [3; 12],
            node_key: None,
            padding: 0,
        };
        assert_eq!(Message::parse(&p), Ok(Message::Ping(want.clone())));
        // 12 + 31: not enough for a key, all padding.
        let mut q = p.clone();
        q.extend_from_slice(&[9; 31]);
        let Ok(Message::Ping(m)) = Message::parse(&q) else {
            panic!()
        };
        assert_eq!((m.node_key, m.padding), (None, 31));
        // 12 + 32 + 10: key then padding (whatever its bytes: receivers ignore them).
        let mut q = p.clone();
        q.extend_from_slice(&[7; 32]);
        q.extend_from_slice(&[1; 10]);
        let Ok(Message::Ping(m)) = Message::parse(&q) else {
            panic!()
        };
        assert_eq!((m.node_key, m.padding), (Some(key()), 10));
        // A non-zero version is tolerated, as Go does.
        q[1] = 3;
        assert!(matches!(Message::parse(&q), Ok(Message::Ping(_))));
    }

    #[test]
    fn keyless_padded_round_trip() {
        for padding in [0, 1, 31, 32, 33, 100] {
            let m = Message::Ping(Ping {
                tx_id: [1; 12],
                node_key: None,
                padding,
            });
            assert_eq!(Message::parse(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn padding_is_clamped() {
        let m = Ping {
            tx_id: [0; 12],
            node_key: None,
            padding: usize::MAX,
        };
        assert_eq!(Message::Ping(m).encode().len(), 2 + 12 + MAX_PADDING);
    }
}
