//! The crate's one error type.

use std::io;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

/// Everything that can go wrong while building or using a lab.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An external command (`ip`, `nft`, ...) exited unsuccessfully.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        /// The command line, as it would be typed.
        command: String,
        /// Exit code or signal, as text.
        status: String,
        /// What the command wrote to stderr (trimmed).
        stderr: String,
    },
    /// A system call or file operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// The default address pool is used up: the caller has to choose a subnet.
    #[error("no default subnet left for a new {what}; pass one explicitly")]
    NoFreeSubnet {
        /// The kind of segment ("switch", "link", "LAN").
        what: &'static str,
    },
    /// A segment's subnet has no host address left.
    #[error("subnet {subnet} has no host address left")]
    SubnetFull {
        /// The exhausted subnet.
        subnet: IpNet,
    },
    /// A point-to-point link already has both of its ends.
    #[error("segment {segment} is a point-to-point link and takes no more hosts")]
    LinkFull {
        /// The link's name.
        segment: String,
    },
    /// The host is not attached to the segment it was asked about.
    #[error("host {host} has no interface on segment {segment}")]
    NotOnSegment {
        /// The host's name.
        host: String,
        /// The segment's name.
        segment: String,
    },
    /// A route's gateway is not on any segment of the host: refused, so that no route can lead
    /// out of the lab.
    #[error("gateway {via} is not on any lab segment of host {host}")]
    GatewayOutsideLab {
        /// The host's name.
        host: String,
        /// The refused gateway.
        via: IpAddr,
    },
    /// A NAT router needs an IPv4 address on its WAN segment (the NAT is IPv4 only).
    #[error("router {router} needs an IPv4 subnet on its WAN segment for NAT")]
    NoIpv4Wan {
        /// The router's name.
        router: String,
    },
    /// A segment without an IPv4 gateway was given where a LAN was expected.
    #[error("segment {segment} has no gateway (it is not a LAN made by add_lan)")]
    NoGateway {
        /// The segment's name.
        segment: String,
    },
    /// A service the lab runs (miniupnpd) could not be set up or did not start.
    #[error("{0}")]
    Setup(String),
    /// The isolation audit found an interface whose other end is outside the lab.
    #[error("namespace {netns} has a link out of the lab: {line}")]
    NotIsolated {
        /// The lab namespace.
        netns: String,
        /// The offending `ip -o -d link` line.
        line: String,
    },
    /// A new interface did not become operationally up in time.
    #[error("interface {iface} in namespace {netns} did not come up")]
    LinkNotUp {
        /// The namespace.
        netns: String,
        /// The interface.
        iface: String,
    },
    /// A UDP probe got no (valid) answer.
    #[error("UDP probe to {target} got no answer")]
    ProbeTimeout {
        /// The reflector that was asked.
        target: SocketAddr,
    },
}

/// Shorthand used throughout the crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an I/O error with what was being done.
    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
