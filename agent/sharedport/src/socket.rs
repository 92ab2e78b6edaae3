//! Opening the two raw sockets, each configured for both receive (filter) and send.

use std::io;

use socket2::{Domain, Protocol, Socket, Type};

use crate::{filter, sys};

/// The AF_INET raw UDP socket: filtered receive of whole IPv4 packets, header-included send.
pub fn open_v4(port: u16, fwmark: u32) -> io::Result<Socket> {
    let sock = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP))?;
    // Attach the filter first so as little as possible queues unfiltered; what does slip in
    // before it is rejected by the same test in userspace.
    sock.attach_filter(&filter::ipv4_filter(port)?)?;
    sock.set_header_included_v4(true)?;
    if fwmark != 0 {
        sock.set_mark(fwmark)?;
    }
    sock.set_nonblocking(true)?;
    Ok(sock)
}

/// The AF_INET6 raw UDP socket, or `None` when the host has no IPv6.
///
/// `IPV6_CHECKSUM` at offset 6 makes the kernel fill in the UDP checksum of what we send (with
/// the source address it picks) and verify it on what we receive, as the UDP stack does for
/// WireGuard. `IPV6_RECVPKTINFO` tells us each packet's destination address.
pub fn open_v6(port: u16, fwmark: u32) -> io::Result<Option<Socket>> {
    let sock = match Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::UDP)) {
        Ok(s) => s,
        Err(e) if e.raw_os_error() == Some(libc::EAFNOSUPPORT) => return Ok(None),
        Err(e) => return Err(e),
    };
    sock.attach_filter(&filter::ipv6_filter(port)?)?;
    sys::set_int_option(&sock, libc::IPPROTO_IPV6, libc::IPV6_CHECKSUM, 6)?;
    sys::set_int_option(&sock, libc::IPPROTO_IPV6, libc::IPV6_RECVPKTINFO, 1)?;
    if fwmark != 0 {
        sock.set_mark(fwmark)?;
    }
    sock.set_nonblocking(true)?;
    Ok(Some(sock))
}
