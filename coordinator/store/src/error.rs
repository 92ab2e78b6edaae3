//! The one error type of the store.

use std::net::Ipv4Addr;

use ipnet::IpNet;
use meshgate_tailcfg::{NodeId, UserId};

use crate::AuthKeyId;

/// Everything a [`Store`](crate::Store) operation can fail with. Validation errors are returned
/// before anything is written; every operation runs in one transaction, so a failed operation
/// leaves the database as it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),
    #[error(
        "the database has schema version {found}, newer than the {supported} this build knows; \
         refusing to open it (use a newer meshgate, or restore a backup)"
    )]
    SchemaTooNew { found: i64, supported: i64 },
    #[error("the database could not be switched to WAL mode (journal mode is {0:?})")]
    NotWal(String),
    #[error("corrupt value in the database: {0}")]
    Corrupt(String),

    #[error("invalid user name {0:?}: it must be non-empty and at most 255 bytes")]
    InvalidUserName(String),
    #[error("user {0} not found")]
    UserNotFound(UserId),
    #[error("invalid tag {0:?}: a tag is `tag:` then a letter, then letters, digits or dashes")]
    InvalidTag(String),

    #[error("pre-auth key {0} not found")]
    AuthKeyNotFound(AuthKeyId),
    #[error("unknown pre-auth key")]
    UnknownAuthKey,
    #[error("pre-auth key {0} has expired")]
    AuthKeyExpired(AuthKeyId),
    #[error("pre-auth key {0} has been revoked")]
    AuthKeyRevoked(AuthKeyId),
    #[error("pre-auth key {0} is single-use and has already been used")]
    AuthKeyUsed(AuthKeyId),
    #[error("tag {tag:?} was requested but pre-auth key {key} does not grant it")]
    TagNotPermitted { tag: String, key: AuthKeyId },

    #[error("node {0} not found")]
    NodeNotFound(NodeId),
    #[error("node key {0} is already used by node {1}")]
    NodeKeyInUse(String, NodeId),
    #[error("the tailnet address range is exhausted (last tried {0})")]
    AddressesExhausted(Ipv4Addr),
    #[error("invalid hostinfo: not a JSON object ({0})")]
    InvalidHostinfo(String),
    #[error("invalid route {0}: not a canonical prefix (host bits set)")]
    InvalidRoute(IpNet),
    #[error("node {node} does not advertise route {prefix}, so it cannot be approved")]
    RouteNotAdvertised { node: NodeId, prefix: IpNet },
}

/// Shorthand for results of this crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
