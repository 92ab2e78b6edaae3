//! NAT-PMP (RFC 6886) public-address request and response, used for probing.

use std::net::Ipv4Addr;

/// UDP port NAT-PMP and PCP servers listen on.
pub const PORT: u16 = 5351;

/// Public-address request: version 0, opcode 0.
pub const PUBLIC_ADDRESS_REQUEST: [u8; 2] = [0, 0];

const RESPONSE_LEN: usize = 12;
const OP_PUBLIC_ADDRESS_RESPONSE: u8 = 0x80;

/// A successful public-address answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublicAddress {
    pub epoch: u32,
    pub ip: Ipv4Addr,
}

/// Why an answer on port 5351 is not a usable NAT-PMP public-address response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// Not NAT-PMP at all (wrong size, version or opcode): maybe PCP, maybe noise.
    NotNatPmp,
    /// A NAT-PMP answer with a non-zero result code.
    ResultCode(u16),
    /// Success, but an address nobody can reach us on.
    BadAddress(Ipv4Addr),
}

/// Parses a public-address response. Extra bytes after the 12 are refused rather than
/// ignored: RFC 6886 fixes the size, so anything longer is not this message.
pub fn parse_public_address(buf: &[u8]) -> Result<PublicAddress, Reject> {
    let b: &[u8; RESPONSE_LEN] = buf.try_into().map_err(|_| Reject::NotNatPmp)?;
    if b[0] != 0 || b[1] != OP_PUBLIC_ADDRESS_RESPONSE {
        return Err(Reject::NotNatPmp);
    }
    let result = u16::from_be_bytes([b[2], b[3]]);
    if result != 0 {
        return Err(Reject::ResultCode(result));
    }
    let epoch = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
    let ip = Ipv4Addr::new(b[8], b[9], b[10], b[11]);
    if !super::usable_external_ip(ip) {
        return Err(Reject::BadAddress(ip));
    }
    Ok(PublicAddress { epoch, ip })
}

/// Whether a datagram looks like any NAT-PMP answer (version 0, response bit set), even an
/// error: a gateway that answers "not authorized" still speaks the protocol.
pub fn is_natpmp_answer(buf: &[u8]) -> bool {
    buf.len() >= 8 && buf.first() == Some(&0) && buf.get(1).is_some_and(|op| op & 0x80 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(result: u16, epoch: u32, ip: [u8; 4]) -> Vec<u8> {
        let mut v = vec![0, 0x80];
        v.extend_from_slice(&result.to_be_bytes());
        v.extend_from_slice(&epoch.to_be_bytes());
        v.extend_from_slice(&ip);
        v
    }

    #[test]
    fn good_answer() {
        let p = parse_public_address(&resp(0, 77, [44, 0, 0, 1])).unwrap();
        assert_eq!(
            p,
            PublicAddress {
                epoch: 77,
                ip: Ipv4Addr::new(44, 0, 0, 1)
            }
        );
    }

    #[test]
    fn bad_answers_are_rejected_without_panics() {
        assert_eq!(parse_public_address(&[]), Err(Reject::NotNatPmp));
        assert_eq!(parse_public_address(&[0, 0x80, 0]), Err(Reject::NotNatPmp));
        let mut long = resp(0, 1, [44, 0, 0, 1]);
        long.push(0);
        assert_eq!(parse_public_address(&long), Err(Reject::NotNatPmp));
        let mut pcp = resp(0, 1, [44, 0, 0, 1]);
        pcp[0] = 2;
        assert_eq!(parse_public_address(&pcp), Err(Reject::NotNatPmp));
        let mut map = resp(0, 1, [44, 0, 0, 1]);
        map[1] = 0x81;
        assert_eq!(parse_public_address(&map), Err(Reject::NotNatPmp));
        assert_eq!(
            parse_public_address(&resp(3, 1, [44, 0, 0, 1])),
            Err(Reject::ResultCode(3))
        );
        for bad in [
            [0, 0, 0, 0],
            [127, 0, 0, 1],
            [224, 0, 0, 1],
            [255, 255, 255, 255],
        ] {
            assert_eq!(
                parse_public_address(&resp(0, 1, bad)),
                Err(Reject::BadAddress(Ipv4Addr::from(bad)))
            );
        }
    }

    #[test]
    fn answer_detection() {
        assert!(is_natpmp_answer(&resp(2, 1, [0; 4])));
        assert!(!is_natpmp_answer(&[0, 0]));
        assert!(!is_natpmp_answer(&[2, 0x80, 0, 0, 0, 0, 0, 0]));
        assert!(!is_natpmp_answer(&[0, 0x00, 0, 0, 0, 0, 0, 0]));
    }

    #[test]
    fn every_short_prefix_and_byte_flip_is_safe() {
        let good = resp(0, 9, [44, 0, 0, 1]);
        for n in 0..good.len() {
            assert!(parse_public_address(&good[..n]).is_err());
        }
        for i in 0..good.len() {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                if let Ok(p) = parse_public_address(&b) {
                    assert!(crate::wire::usable_external_ip(p.ip));
                }
            }
        }
    }
}
