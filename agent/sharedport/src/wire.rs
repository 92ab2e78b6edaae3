//! IPv4 and UDP headers: parse what the raw sockets deliver, build what they send.
//! Pure functions over bytes; nothing here trusts a length field without checking it.

use std::net::{Ipv4Addr, SocketAddrV4};

use crate::Error;
use crate::filter::{DISCO_MAGIC_HEAD, DISCO_MAGIC_TAIL, STUN_COOKIE};

/// IPv4 header without options.
pub const IPV4_HEADER_LEN: usize = 20;
/// UDP header.
pub const UDP_HEADER_LEN: usize = 8;
/// Largest UDP payload in one IPv4 datagram (total length is 16 bits).
pub const MAX_IPV4_PAYLOAD: usize = 65535 - IPV4_HEADER_LEN - UDP_HEADER_LEN;
/// Largest UDP payload the 16-bit UDP length allows (IPv6 without jumbograms).
pub const MAX_UDP_PAYLOAD: usize = 65535 - UDP_HEADER_LEN;

const IPPROTO_UDP: u8 = 17;
const FLAG_DF: u16 = 0x4000;
const MF_OR_OFFSET: u16 = 0x3fff;
const DEFAULT_TTL: u8 = 64;

/// A UDP datagram's ports and payload, borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpView<'a> {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// The payload, cut to the UDP length field.
    pub payload: &'a [u8],
}

/// An IPv4 UDP packet's addresses and payload, borrowed from the packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4UdpView<'a> {
    /// Source address and port.
    pub src: SocketAddrV4,
    /// Destination address and port.
    pub dst: SocketAddrV4,
    /// The UDP payload.
    pub payload: &'a [u8],
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

/// Parses a UDP header and payload (what an AF_INET6 raw UDP socket delivers).
pub fn parse_udp(segment: &[u8]) -> Result<UdpView<'_>, Error> {
    let (src_port, dst_port, len) = match (be16(segment, 0), be16(segment, 2), be16(segment, 4)) {
        (Some(s), Some(d), Some(l)) if segment.len() >= UDP_HEADER_LEN => (s, d, usize::from(l)),
        _ => return Err(Error::Truncated("UDP header")),
    };
    if len < UDP_HEADER_LEN {
        return Err(Error::Malformed("UDP length below header size"));
    }
    let payload = segment
        .get(UDP_HEADER_LEN..len)
        .ok_or(Error::Truncated("UDP length beyond packet"))?;
    Ok(UdpView {
        src_port,
        dst_port,
        payload,
    })
}

/// Parses an IPv4 packet carrying UDP (what an AF_INET raw socket delivers): header length
/// from IHL, options skipped, fragments refused, lengths checked against the buffer.
pub fn parse_ipv4(packet: &[u8]) -> Result<Ipv4UdpView<'_>, Error> {
    let first = *packet.first().ok_or(Error::Truncated("IPv4 header"))?;
    if first >> 4 != 4 {
        return Err(Error::Malformed("not IPv4"));
    }
    let ihl = usize::from(first & 0x0f) * 4;
    if ihl < IPV4_HEADER_LEN {
        return Err(Error::Malformed("IHL below 5"));
    }
    let header = packet.get(..ihl).ok_or(Error::Truncated("IPv4 options"))?;
    let total = usize::from(be16(header, 2).ok_or(Error::Truncated("IPv4 header"))?);
    if total < ihl {
        return Err(Error::Malformed("IPv4 total length below header length"));
    }
    let flags = be16(header, 6).ok_or(Error::Truncated("IPv4 header"))?;
    if flags & MF_OR_OFFSET != 0 {
        return Err(Error::Fragment);
    }
    if header.get(9) != Some(&IPPROTO_UDP) {
        return Err(Error::Malformed("not UDP"));
    }
    let addr = |at: usize| -> Result<Ipv4Addr, Error> {
        let b: [u8; 4] = header
            .get(at..at + 4)
            .and_then(|s| s.try_into().ok())
            .ok_or(Error::Truncated("IPv4 addresses"))?;
        Ok(Ipv4Addr::from(b))
    };
    let (src_ip, dst_ip) = (addr(12)?, addr(16)?);
    let body = packet
        .get(ihl..total)
        .ok_or(Error::Truncated("IPv4 total length beyond packet"))?;
    let udp = parse_udp(body)?;
    Ok(Ipv4UdpView {
        src: SocketAddrV4::new(src_ip, udp.src_port),
        dst: SocketAddrV4::new(dst_ip, udp.dst_port),
        payload: udp.payload,
    })
}

/// Whether a payload starts like disco ("TS💬") or a STUN message (top two bits zero, magic
/// cookie at 4..8): the same test as the kernel filter, repeated in userspace so that anything
/// queued before the filter was attached is not taken for ours.
pub fn is_disco_or_stun(payload: &[u8]) -> bool {
    let word = |at: usize| -> Option<u32> {
        let s: [u8; 4] = payload.get(at..at + 4)?.try_into().ok()?;
        Some(u32::from_be_bytes(s))
    };
    let disco = word(0) == Some(DISCO_MAGIC_HEAD) && be16(payload, 4) == Some(DISCO_MAGIC_TAIL);
    let stun = payload.first().is_some_and(|b| b & 0xc0 == 0) && word(4) == Some(STUN_COOKIE);
    disco || stun
}

/// One's-complement sum of 16-bit big-endian words (odd trailing byte padded with zero).
fn sum16(mut acc: u32, bytes: &[u8]) -> u32 {
    let mut chunks = bytes.chunks_exact(2);
    for c in &mut chunks {
        acc = acc.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        acc = (acc & 0xffff) + (acc >> 16);
    }
    if let [last] = chunks.remainder() {
        acc = acc.wrapping_add(u32::from(*last) << 8);
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    // The fold above leaves at most 16 bits.
    !(acc as u16)
}

/// The Internet checksum of `bytes`.
pub fn internet_checksum(bytes: &[u8]) -> u16 {
    fold(sum16(0, bytes))
}

/// The UDP checksum over the IPv4 pseudo-header and `segment` (UDP header with its checksum
/// field zero, then payload). A computed zero is sent as 0xffff (RFC 768).
pub fn udp4_checksum(src: Ipv4Addr, dst: Ipv4Addr, segment: &[u8]) -> u16 {
    let mut acc = sum16(0, &src.octets());
    acc = sum16(acc, &dst.octets());
    acc = sum16(acc, &[0, IPPROTO_UDP]);
    // Callers bound segment to 16 bits; a longer one would not be a UDP datagram.
    acc = sum16(acc, &(segment.len() as u16).to_be_bytes());
    acc = sum16(acc, segment);
    match fold(acc) {
        0 => 0xffff,
        c => c,
    }
}

/// A UDP header with checksum zero (to be filled in by the caller or the kernel).
pub fn udp_header(src_port: u16, dst_port: u16, payload_len: usize) -> Result<[u8; 8], Error> {
    if payload_len > MAX_UDP_PAYLOAD {
        return Err(Error::PayloadTooLarge(payload_len));
    }
    let len = u16::try_from(UDP_HEADER_LEN + payload_len)
        .map_err(|_| Error::PayloadTooLarge(payload_len))?;
    let [s0, s1] = src_port.to_be_bytes();
    let [d0, d1] = dst_port.to_be_bytes();
    let [l0, l1] = len.to_be_bytes();
    Ok([s0, s1, d0, d1, l0, l1, 0, 0])
}

/// A complete IPv4+UDP packet for an `IP_HDRINCL` socket: DF set (the kernel does not
/// fragment header-included packets anyway), TTL 64, IP ID zero (the kernel picks one), IP
/// and UDP checksums computed. `src` must be the address the kernel will route from, or the
/// UDP checksum will not verify at the receiver.
pub fn build_ipv4_udp(
    src: SocketAddrV4,
    dst: SocketAddrV4,
    payload: &[u8],
) -> Result<Vec<u8>, Error> {
    if payload.len() > MAX_IPV4_PAYLOAD {
        return Err(Error::PayloadTooLarge(payload.len()));
    }
    let total = IPV4_HEADER_LEN + UDP_HEADER_LEN + payload.len();
    let total16 = u16::try_from(total).map_err(|_| Error::PayloadTooLarge(payload.len()))?;
    let mut pkt = Vec::with_capacity(total);
    pkt.extend_from_slice(&[0x45, 0]);
    pkt.extend_from_slice(&total16.to_be_bytes());
    pkt.extend_from_slice(&[0, 0]);
    pkt.extend_from_slice(&FLAG_DF.to_be_bytes());
    pkt.extend_from_slice(&[DEFAULT_TTL, IPPROTO_UDP, 0, 0]);
    pkt.extend_from_slice(&src.ip().octets());
    pkt.extend_from_slice(&dst.ip().octets());
    let ip_csum = internet_checksum(&pkt);
    pkt[10..12].copy_from_slice(&ip_csum.to_be_bytes());
    pkt.extend_from_slice(&udp_header(src.port(), dst.port(), payload.len())?);
    pkt.extend_from_slice(payload);
    let udp_csum = udp4_checksum(*src.ip(), *dst.ip(), &pkt[IPV4_HEADER_LEN..]);
    pkt[IPV4_HEADER_LEN + 6..IPV4_HEADER_LEN + 8].copy_from_slice(&udp_csum.to_be_bytes());
    Ok(pkt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs() -> (SocketAddrV4, SocketAddrV4) {
        (
            SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 1), 41641),
            SocketAddrV4::new(Ipv4Addr::new(198, 51, 100, 7), 3478),
        )
    }

    #[test]
    fn build_then_parse_round_trips() {
        let (src, dst) = addrs();
        let pkt = build_ipv4_udp(src, dst, b"hello").unwrap();
        assert_eq!(pkt.len(), 33);
        let v = parse_ipv4(&pkt).unwrap();
        assert_eq!((v.src, v.dst, v.payload), (src, dst, &b"hello"[..]));
    }

    #[test]
    fn checksums_verify_to_zero() {
        let (src, dst) = addrs();
        for payload in [&b""[..], b"a", b"odd-length payload!", &[0xffu8; 1001][..]] {
            let pkt = build_ipv4_udp(src, dst, payload).unwrap();
            assert_eq!(internet_checksum(&pkt[..20]), 0, "IP header");
            // Recomputing over the segment with its checksum in place yields 0 (or the
            // 0xffff substitution when the sum itself is zero).
            let seg = &pkt[20..];
            let c = udp4_checksum(*src.ip(), *dst.ip(), seg);
            assert!(c == 0xffff, "UDP checksum does not verify: {c:#x}");
        }
    }

    #[test]
    fn known_udp_checksum_vector() {
        // 127.0.0.1:1000 -> 127.0.0.1:2000, payload "abc"; worked by hand:
        // pseudo 7f00+0001+7f00+0001+0011+000b, header 03e8+07d0+000b, data 6162+6300.
        let src = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 1000);
        let dst = SocketAddrV4::new(Ipv4Addr::LOCALHOST, 2000);
        let pkt = build_ipv4_udp(src, dst, b"abc").unwrap();
        let sum: u32 = [
            0x7f00u32, 0x0001, 0x7f00, 0x0001, 0x0011, 0x000b, 0x03e8, 0x07d0, 0x000b, 0x6162,
            0x6300,
        ]
        .iter()
        .sum();
        let folded = (sum & 0xffff) + (sum >> 16);
        let expect = !(folded as u16);
        assert_eq!(u16::from_be_bytes([pkt[26], pkt[27]]), expect);
    }

    #[test]
    fn parse_skips_options_and_cuts_to_lengths() {
        let (src, dst) = addrs();
        let pkt = build_ipv4_udp(src, dst, b"payload").unwrap();
        let mut with_opts = pkt[..20].to_vec();
        with_opts.extend_from_slice(&[1, 1, 1, 0]);
        with_opts.extend_from_slice(&pkt[20..]);
        with_opts[0] = 0x46;
        with_opts[2..4].copy_from_slice(&(pkt.len() as u16 + 4).to_be_bytes());
        with_opts.extend_from_slice(b"trailing junk beyond total length");
        let v = parse_ipv4(&with_opts).unwrap();
        assert_eq!(v.payload, b"payload");
        assert_eq!(v.dst, dst);
    }

    #[test]
    fn parse_rejects_bad_input_without_panicking() {
        let (src, dst) = addrs();
        let pkt = build_ipv4_udp(src, dst, b"payload").unwrap();
        for n in 0..pkt.len() {
            assert!(parse_ipv4(&pkt[..n]).is_err(), "prefix of {n} bytes");
        }
        let mut frag = pkt.clone();
        frag[6] |= 0x20;
        assert_eq!(parse_ipv4(&frag), Err(Error::Fragment));
        let mut ihl = pkt.clone();
        ihl[0] = 0x44;
        assert!(parse_ipv4(&ihl).is_err());
        let mut ihl_big = pkt.clone();
        ihl_big[0] = 0x4f;
        assert!(parse_ipv4(&ihl_big).is_err());
        let mut udp_len = pkt.clone();
        udp_len[24..26].copy_from_slice(&4u16.to_be_bytes());
        assert!(parse_ipv4(&udp_len).is_err());
        let mut udp_long = pkt.clone();
        udp_long[24..26].copy_from_slice(&999u16.to_be_bytes());
        assert!(parse_ipv4(&udp_long).is_err());
        let mut v6 = pkt;
        v6[0] = 0x65;
        assert!(parse_ipv4(&v6).is_err());
        // Every byte pattern of a short buffer is handled.
        for b in 0..=255u8 {
            let _ = parse_ipv4(&[b; 27]);
            let _ = parse_udp(&[b; 9]);
        }
    }

    #[test]
    fn payload_limits() {
        let (src, dst) = addrs();
        assert!(build_ipv4_udp(src, dst, &vec![0; MAX_IPV4_PAYLOAD]).is_ok());
        assert_eq!(
            build_ipv4_udp(src, dst, &vec![0; MAX_IPV4_PAYLOAD + 1]),
            Err(Error::PayloadTooLarge(MAX_IPV4_PAYLOAD + 1))
        );
        assert!(udp_header(1, 2, MAX_UDP_PAYLOAD).is_ok());
        assert!(udp_header(1, 2, MAX_UDP_PAYLOAD + 1).is_err());
    }

    #[test]
    fn disco_or_stun_shapes() {
        assert!(is_disco_or_stun(b"TS\xf0\x9f\x92\xacrest"));
        assert!(!is_disco_or_stun(b"TS\xf0\x9f\x92"));
        assert!(is_disco_or_stun(&[0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]));
        assert!(!is_disco_or_stun(&[0x80, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42]));
        assert!(!is_disco_or_stun(&[1, 0, 0, 0, 0, 0, 0, 0]));
        assert!(!is_disco_or_stun(&[]));
    }
}
