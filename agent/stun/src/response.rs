//! Binding success responses: what our server sends and what netcheck accepts.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::Error;
use crate::wire::{
    self, ATTR_MAPPED_ADDRESS, ATTR_XOR_MAPPED_ADDRESS, ATTR_XOR_MAPPED_ADDRESS_OLD, MAGIC_COOKIE,
    TYPE_BINDING_SUCCESS, TxId,
};

const FAMILY_V4: u8 = 0x01;
const FAMILY_V6: u8 = 0x02;

/// A Binding success response carrying `addr` as XOR-MAPPED-ADDRESS and nothing else (what
/// Tailscale's server sends). An IPv4-mapped IPv6 address (from a dual-stack socket) is written
/// as IPv4, since that is the address the client actually has.
pub fn binding_response(tx: TxId, addr: SocketAddr) -> Vec<u8> {
    let ip = canonical_ip(addr.ip());
    let mut value = Vec::with_capacity(20);
    value.push(0);
    let mut mask = [0u8; 16];
    mask[..4].copy_from_slice(&MAGIC_COOKIE);
    mask[4..].copy_from_slice(&tx.0);
    let port = addr.port() ^ 0x2112;
    match ip {
        IpAddr::V4(v4) => {
            value.push(FAMILY_V4);
            value.extend_from_slice(&port.to_be_bytes());
            value.extend(v4.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
        IpAddr::V6(v6) => {
            value.push(FAMILY_V6);
            value.extend_from_slice(&port.to_be_bytes());
            value.extend(v6.octets().iter().zip(mask).map(|(a, m)| a ^ m));
        }
    }
    let mut out = Vec::with_capacity(wire::HEADER_LEN + 4 + value.len());
    wire::put_header(&mut out, TYPE_BINDING_SUCCESS, tx);
    wire::put_attr(&mut out, ATTR_XOR_MAPPED_ADDRESS, &value);
    wire::set_len(&mut out);
    out
}

/// Parses a Binding success response: type 0x0101, length field a multiple of 4 and within the
/// datagram (bytes after it are ignored), well-formed attributes. The address is the first
/// XOR-MAPPED-ADDRESS (0x0020 or the old 0x8020), else the first MAPPED-ADDRESS (0x0001).
/// FINGERPRINT is not required (Tailscale's server sends none).
pub fn parse_binding_response(b: &[u8]) -> Result<(TxId, SocketAddr), Error> {
    let h = wire::header(b)?;
    if h.msg_type != TYPE_BINDING_SUCCESS {
        return Err(Error::WrongType(h.msg_type));
    }
    let mut xor_addr = None;
    let mut plain_addr = None;
    for attr in wire::attrs(h.attrs) {
        let attr = attr?;
        match attr.typ {
            ATTR_XOR_MAPPED_ADDRESS | ATTR_XOR_MAPPED_ADDRESS_OLD if xor_addr.is_none() => {
                xor_addr = Some(decode_addr(attr.value, Some(h.tx_id))?);
            }
            ATTR_MAPPED_ADDRESS if plain_addr.is_none() => {
                plain_addr = Some(decode_addr(attr.value, None)?);
            }
            _ => {}
        }
    }
    xor_addr
        .or(plain_addr)
        .map(|a| (h.tx_id, a))
        .ok_or(Error::NoAddress)
}

/// Decodes `0 | family | port | address`, un-XORing when `xor` carries the transaction ID.
fn decode_addr(v: &[u8], xor: Option<TxId>) -> Result<SocketAddr, Error> {
    let mut mask = [0u8; 16];
    if let Some(tx) = xor {
        mask[..4].copy_from_slice(&MAGIC_COOKIE);
        mask[4..].copy_from_slice(&tx.0);
    }
    let (Some(&family), Some(port)) = (v.get(1), v.get(2..4)) else {
        return Err(Error::BadAddress);
    };
    let port = u16::from_be_bytes([port[0] ^ mask[0], port[1] ^ mask[1]]);
    let raw = v.get(4..).ok_or(Error::BadAddress)?;
    let ip = match (family, raw.len()) {
        (FAMILY_V4, 4) => {
            let mut o = [0u8; 4];
            for ((x, r), m) in o.iter_mut().zip(raw).zip(mask) {
                *x = r ^ m;
            }
            IpAddr::V4(Ipv4Addr::from(o))
        }
        (FAMILY_V6, 16) => {
            let mut o = [0u8; 16];
            for ((x, r), m) in o.iter_mut().zip(raw).zip(mask) {
                *x = r ^ m;
            }
            IpAddr::V6(Ipv6Addr::from(o))
        }
        _ => return Err(Error::BadAddress),
    };
    Ok(SocketAddr::new(ip, port))
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}
