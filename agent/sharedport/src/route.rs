//! Which source address the kernel would use to reach a destination, under our fwmark.
//!
//! A header-included IPv4 packet needs its source address before the UDP checksum can be
//! computed (the pseudo-header covers it). Connecting a throwaway UDP socket that carries the
//! same mark asks the routing code exactly the question WireGuard's own sends ask, without
//! netlink and without sending anything.

use std::io;
use std::net::{IpAddr, SocketAddr};

use socket2::{Domain, Protocol, Socket, Type};

/// The local address the kernel picks for packets to `dst` carrying `fwmark` (0: no mark).
pub fn source_for(dst: SocketAddr, fwmark: u32) -> io::Result<IpAddr> {
    let sock = Socket::new(Domain::for_address(dst), Type::DGRAM, Some(Protocol::UDP))?;
    if fwmark != 0 {
        sock.set_mark(fwmark)?;
    }
    // connect() on UDP needs a non-zero port; the port plays no part in the route lookup.
    let probe = if dst.port() == 0 {
        SocketAddr::new(dst.ip(), 9)
    } else {
        dst
    };
    sock.connect(&probe.into())?;
    sock.local_addr()?
        .as_socket()
        .map(|a| a.ip())
        .ok_or_else(|| io::Error::other("local address is not an IP socket address"))
}
