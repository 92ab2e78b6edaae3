//! The 18-byte `IP[16] ‖ port u16` endpoint form shared by Pong and CallMeMaybe.

use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};

pub(crate) const ADDR_LEN: usize = 18;

pub(crate) fn put(out: &mut Vec<u8>, addr: &SocketAddr) {
    // IPv4 travels as ::ffff:a.b.c.d, as Go's netip.Addr.As16 writes it.
    let ip = match addr.ip() {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    };
    out.extend_from_slice(&ip.octets());
    out.extend_from_slice(&addr.port().to_be_bytes());
}

pub(crate) fn get(b: &[u8; ADDR_LEN]) -> SocketAddr {
    let [ip @ .., p0, p1] = *b;
    let port = u16::from_be_bytes([p0, p1]);
    let v6 = Ipv6Addr::from(ip);
    // Mirrors Go's Unmap(): a mapped address comes back as IPv4, never as ::ffff:… IPv6.
    match v6.to_ipv4_mapped() {
        Some(v4) => SocketAddr::new(IpAddr::V4(v4), port),
        None => SocketAddr::V6(SocketAddrV6::new(v6, port, 0, 0)),
    }
}
