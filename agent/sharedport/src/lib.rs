//! STUN and disco on kernel WireGuard's UDP port (DESIGN decision 3): raw AF_INET/AF_INET6
//! UDP sockets with a classic-BPF filter receive only whole disco/STUN datagrams sent to the
//! port, after the host firewall; sends go out through the same raw sockets with source port =
//! the WireGuard port and SO_MARK = WireGuard's fwmark, so they share its NAT mapping.
//! See README.md.

pub mod bpf;
mod cmsg;
mod error;
pub mod filter;
mod route;
mod shared_port;
mod socket;
mod sys;
pub mod wire;

pub use error::Error;
pub use shared_port::{Datagram, SharedPort};
