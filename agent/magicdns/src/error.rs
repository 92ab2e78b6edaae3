//! The crate's error type.

use std::net::SocketAddr;

/// Errors from setting up the resolver (answering and forwarding never fail outward: a
/// broken query gets FORMERR, a failed forward gets SERVFAIL).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A listening socket could not be bound.
    #[error("bind {proto} {addr}: {source}")]
    Bind {
        proto: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// No listen address was given.
    #[error("no listen address configured")]
    NoListenAddress,
}
