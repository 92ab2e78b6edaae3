//! The crate's error type.

use std::net::IpAddr;

/// Everything that can go wrong while mapping.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("no default IPv4 gateway in /proc/net/route")]
    NoGateway,
    #[error("NAT-PMP: {0}")]
    NatPmp(#[from] crab_nat::natpmp::Failure),
    #[error("PCP: {0}")]
    Pcp(#[from] crab_nat::pcp::Failure),
    #[error("UPnP: {0}")]
    Upnp(String),
    #[error("gateway reported an unusable external address {0}")]
    BadExternalAddress(IpAddr),
    #[error("{0}")]
    Unexpected(&'static str),
    #[error("the port mapper task is gone")]
    Stopped,
}
