//! Wire formats this crate parses itself: the probe packets and their answers, and the
//! default route. MAP/renew/delete bytes are crab_nat's and igd-next's.

pub mod natpmp;
pub mod pcp;
pub mod route;
pub mod ssdp;

use std::net::Ipv4Addr;

/// Whether `ip` can be advertised as our external address: a gateway answering 0.0.0.0,
/// loopback, multicast or broadcast is misconfigured (or lying), and an endpoint built from it
/// would be wrong.
pub fn usable_external_ip(ip: Ipv4Addr) -> bool {
    !(ip.is_unspecified() || ip.is_loopback() || ip.is_multicast() || ip.is_broadcast())
}
