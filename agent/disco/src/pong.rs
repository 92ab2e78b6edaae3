//! Pong (type 0x02): `TxID[12] ‖ SrcIP[16] ‖ SrcPort u16` = 30 bytes.

use std::net::SocketAddr;

use crate::Error;
use crate::addr::{self, ADDR_LEN};

pub(crate) const PONG_LEN: usize = 12 + ADDR_LEN;

/// A disco Pong: the answer to a Ping, carrying where the Ping came from (a STUN answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pong {
    /// The Ping's transaction ID.
    pub tx_id: [u8; 12],
    /// The Ping's source as the responder saw it. IPv4 is mapped on the wire and unmapped
    /// back here, so it is always `SocketAddr::V4` for an IPv4 source.
    pub src: SocketAddr,
}

impl Pong {
    pub(crate) fn encode_payload(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.tx_id);
        addr::put(out, &self.src);
    }

    /// ≥ 30 bytes; trailing bytes (future fields) are ignored.
    pub(crate) fn parse_payload(p: &[u8]) -> Result<Pong, Error> {
        let (Some(tx), Some(a)) = (
            p.first_chunk::<12>(),
            p.get(12..).and_then(|r| r.first_chunk::<ADDR_LEN>()),
        ) else {
            return Err(Error::Short { what: "pong" });
        };
        Ok(Pong {
            tx_id: *tx,
            src: addr::get(a),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    #[test]
    fn v4_is_mapped_on_the_wire() {
        let m = Message::Pong(Pong {
            tx_id: [5; 12],
            src: "192.0.2.7:41641".parse().unwrap(),
        });
        let b = m.encode();
        assert_eq!(b.len(), 2 + 30);
        assert_eq!(&b[14..24], &[0; 10]);
        assert_eq!(&b[24..26], &[0xff, 0xff]);
        assert_eq!(&b[26..30], &[192, 0, 2, 7]);
        assert_eq!(&b[30..32], &41641u16.to_be_bytes());
        assert_eq!(Message::parse(&b).unwrap(), m);
    }

    #[test]
    fn short_and_trailing() {
        let m = Message::Pong(Pong {
            tx_id: [5; 12],
            src: "[2001:db8::1]:7".parse().unwrap(),
        });
        let mut b = m.encode();
        assert_eq!(
            Message::parse(&b[..b.len() - 1]),
            Err(Error::Short { what: "pong" })
        );
        b.extend_from_slice(&[0xee; 9]);
        b[1] = 1;
        assert_eq!(Message::parse(&b).unwrap(), m);
    }
}
