//! PCP (RFC 6887) ANNOUNCE request and response header, used for probing.

use std::net::Ipv4Addr;

const VERSION: u8 = 2;
const OP_ANNOUNCE: u8 = 0;
const RESPONSE_BIT: u8 = 0x80;
const HEADER_LEN: usize = 24;
/// RFC 6887 §7: messages are at most 1100 bytes and a multiple of 4.
const MAX_LEN: usize = 1100;

/// 24-byte ANNOUNCE: version 2, opcode 0, lifetime 0, our address as an IPv4-mapped IPv6.
pub fn announce_request(client: Ipv4Addr) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0] = VERSION;
    b[1] = OP_ANNOUNCE;
    b[8..24].copy_from_slice(&client.to_ipv6_mapped().octets());
    b
}

/// A PCP response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub opcode: u8,
    pub result: u8,
    pub lifetime: u32,
    pub epoch: u32,
}

/// Why a datagram is not a usable PCP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Wrong version, no response bit, or a size PCP forbids.
    NotPcp,
    /// A PCP answer whose result code is not SUCCESS.
    ResultCode(u8),
}

/// Parses a response header (any opcode).
pub fn parse_header(buf: &[u8]) -> Result<Header, Reject> {
    if buf.len() < HEADER_LEN || buf.len() > MAX_LEN || !buf.len().is_multiple_of(4) {
        return Err(Reject::NotPcp);
    }
    let h: &[u8; HEADER_LEN] = buf
        .get(..HEADER_LEN)
        .and_then(|s| s.try_into().ok())
        .ok_or(Reject::NotPcp)?;
    if h[0] != VERSION || h[1] & RESPONSE_BIT == 0 {
        return Err(Reject::NotPcp);
    }
    Ok(Header {
        opcode: h[1] & !RESPONSE_BIT,
        result: h[3],
        lifetime: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
        epoch: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
    })
}

/// A successful ANNOUNCE answer: the gateway speaks PCP. Returns its epoch.
pub fn parse_announce(buf: &[u8]) -> Result<u32, Reject> {
    let h = parse_header(buf)?;
    if h.opcode != OP_ANNOUNCE {
        return Err(Reject::NotPcp);
    }
    if h.result != 0 {
        return Err(Reject::ResultCode(h.result));
    }
    Ok(h.epoch)
}

/// Whether a datagram is any PCP answer, also an error one (a gateway saying "not authorized"
/// to an ANNOUNCE still speaks PCP; NAT-PMP-only gateways answer version 0).
pub fn is_pcp_answer(buf: &[u8]) -> bool {
    parse_header(buf).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(op: u8, result: u8, epoch: u32) -> Vec<u8> {
        let mut v = vec![2, op | 0x80, 0, result];
        v.extend_from_slice(&0u32.to_be_bytes());
        v.extend_from_slice(&epoch.to_be_bytes());
        v.extend_from_slice(&[0; 12]);
        v
    }

    #[test]
    fn announce_bytes() {
        let b = announce_request(Ipv4Addr::new(10, 1, 0, 2));
        assert_eq!(&b[..8], &[2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(
            &b[8..],
            &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 1, 0, 2]
        );
    }

    #[test]
    fn good_announce() {
        assert_eq!(parse_announce(&resp(0, 0, 1234)), Ok(1234));
    }

    #[test]
    fn bad_answers() {
        assert_eq!(parse_announce(&[]), Err(Reject::NotPcp));
        assert_eq!(parse_announce(&resp(0, 0, 1)[..23]), Err(Reject::NotPcp));
        let mut odd = resp(0, 0, 1);
        odd.push(0);
        assert_eq!(parse_announce(&odd), Err(Reject::NotPcp));
        assert_eq!(parse_announce(&vec![0; 1104]), Err(Reject::NotPcp));
        let mut req = resp(0, 0, 1);
        req[1] = 0;
        assert_eq!(parse_announce(&req), Err(Reject::NotPcp));
        let mut v1 = resp(0, 0, 1);
        v1[0] = 1;
        assert_eq!(parse_announce(&v1), Err(Reject::NotPcp));
        assert_eq!(parse_announce(&resp(1, 0, 1)), Err(Reject::NotPcp));
        assert_eq!(parse_announce(&resp(0, 2, 1)), Err(Reject::ResultCode(2)));
        assert!(is_pcp_answer(&resp(0, 2, 1)));
        assert!(!is_pcp_answer(&[0, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn every_prefix_is_safe() {
        let good = resp(0, 0, 5);
        for n in 0..good.len() {
            assert!(parse_announce(&good[..n]).is_err());
        }
    }
}
