//! The one error type of the admin surface.

use std::net::SocketAddr;
use std::path::PathBuf;

use meshgate_coordinator_store::StoreError;

/// Everything an admin operation or the admin API's start-up can fail with. Messages are
/// written for the person at the CLI or reading the API's `{"error": ...}`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AdminError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error(
        "no node {0:?} (list them with `meshgate coordinator nodes list` or GET /api/v1/nodes)"
    )]
    NoSuchNode(String),
    #[error("{name:?} names {count} nodes; use the node id")]
    AmbiguousNode { name: String, count: usize },
    #[error("{0:?} is not a CIDR prefix (like 192.168.1.0/24 or fd00::/64)")]
    InvalidPrefix(String),
    #[error("the auth key expiry must be more than zero seconds")]
    ZeroExpiry,
    #[error("the auth key expiry is too far in the future")]
    ExpiryTooLong,

    #[error(
        "refusing to serve the admin API on {0}: it is not a loopback address \
         (use 127.0.0.1 or ::1, or pass --admin-listen-any to expose it on purpose)"
    )]
    NotLoopback(SocketAddr),
    #[error("admin API on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("admin token file {path}: {reason}")]
    TokenFile { path: PathBuf, reason: String },
}

/// Shorthand for results of this crate.
pub type Result<T, E = AdminError> = std::result::Result<T, E>;
