//! CallMeMaybe (type 0x03): `N × (IP[16] ‖ port u16)`, sent only over DERP.

use std::net::SocketAddr;

use crate::addr::{self, ADDR_LEN};
use crate::message::VERSION;

/// "I am pinging you at these endpoints; ping me back at mine."
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CallMeMaybe {
    /// The sender's endpoints (IPv4 unmapped back to `SocketAddr::V4`). The receiver should
    /// skip IPv6 link-local entries (reference §1.2); this codec keeps them.
    pub endpoints: Vec<SocketAddr>,
}

impl CallMeMaybe {
    pub(crate) fn payload_len(&self) -> usize {
        self.endpoints.len().saturating_mul(ADDR_LEN)
    }

    pub(crate) fn encode_payload(&self, out: &mut Vec<u8>) {
        for ep in &self.endpoints {
            addr::put(out, ep);
        }
    }

    /// Never fails: as Go's parser, a payload that is empty, not a multiple of 18 bytes, or of
    /// another version is an empty CallMeMaybe (still a signal to re-ping).
    pub(crate) fn parse_payload(version: u8, p: &[u8]) -> CallMeMaybe {
        if version != VERSION || p.is_empty() || !p.len().is_multiple_of(ADDR_LEN) {
            return CallMeMaybe::default();
        }
        let (chunks, _) = p.as_chunks::<ADDR_LEN>();
        CallMeMaybe {
            endpoints: chunks.iter().map(addr::get).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Message;

    fn cmm(eps: &[&str]) -> Message {
        Message::CallMeMaybe(CallMeMaybe {
            endpoints: eps.iter().map(|s| s.parse().unwrap()).collect(),
        })
    }

    #[test]
    fn round_trip_and_layout() {
        let m = cmm(&["10.0.0.1:41641", "[2001:db8::2]:1", "[fe80::1]:3"]);
        let b = m.encode();
        assert_eq!(b.len(), 2 + 3 * 18);
        assert_eq!(&b[..2], &[0x03, 0x00]);
        assert_eq!(&b[2 + 10..2 + 16], &[0xff, 0xff, 10, 0, 0, 1]);
        assert_eq!(Message::parse(&b).unwrap(), m);
        assert_eq!(Message::parse(&cmm(&[]).encode()).unwrap(), cmm(&[]));
    }

    #[test]
    fn lax_cases_are_empty_not_errors() {
        let good = cmm(&["10.0.0.1:41641", "[2001:db8::2]:1"]).encode();
        // Length not a multiple of 18.
        for cut in [1, 17, 19] {
            assert_eq!(Message::parse(&good[..good.len() - cut]).unwrap(), cmm(&[]));
        }
        let mut extra = good.clone();
        extra.push(0);
        assert_eq!(Message::parse(&extra).unwrap(), cmm(&[]));
        // Another version.
        let mut v1 = good.clone();
        v1[1] = 1;
        assert_eq!(Message::parse(&v1).unwrap(), cmm(&[]));
        // Empty payload.
        assert_eq!(Message::parse(&[0x03, 0x00]).unwrap(), cmm(&[]));
    }
}
