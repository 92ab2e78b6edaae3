//! The coordinator's state: users, pre-auth keys, nodes with their tailnet addresses, and
//! advertised/approved routes, behind the [`Store`] trait (DESIGN decision 11), with
//! [`SqliteStore`] as the implementation. See this crate's README for the schema and choices.
//!
//! The trait is synchronous: the server calls it from `spawn_blocking`. Times are
//! [`SystemTime`]s at the API and whole unix seconds in the database.

mod alloc;
mod error;
mod names;
mod schema;
mod sqlite;

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, SystemTime};

use ipnet::IpNet;
pub use meshgate_tailcfg::{DiscoPublic, MachinePublic, NodeId, NodePublic, UserId};

pub use alloc::v6_for_v4;
pub use error::{Result, StoreError};
pub use names::{check_tag, sanitize_hostname};
pub use schema::SCHEMA_VERSION;
pub use sqlite::SqliteStore;

/// Identifies a pre-auth key (not secret; the admin surface lists and revokes keys by it).
pub type AuthKeyId = i64;

/// Text prefix of every pre-auth key secret.
pub const AUTH_KEY_PREFIX: &str = "mgkey-";

/// A user (a login name that owns nodes and keys).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub name: String,
    pub created: SystemTime,
}

/// What to create a pre-auth key with.
#[derive(Clone, Debug)]
pub struct NewAuthKey {
    pub user: UserId,
    /// Usable any number of times (else once).
    pub reusable: bool,
    /// Nodes registered with it are ephemeral.
    pub ephemeral: bool,
    /// Tags the key grants (each `tag:name`).
    pub tags: Vec<String>,
    /// `None`: never expires.
    pub expires: Option<SystemTime>,
    pub now: SystemTime,
}

/// A pre-auth key as stored: everything but the secret, of which only a SHA-256 digest is kept.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthKey {
    pub id: AuthKeyId,
    pub user: UserId,
    pub reusable: bool,
    pub ephemeral: bool,
    pub tags: Vec<String>,
    pub expires: Option<SystemTime>,
    pub created: SystemTime,
    /// Successful registrations made with it.
    pub used_count: u64,
    pub used_at: Option<SystemTime>,
    pub revoked: bool,
}

impl AuthKey {
    /// Whether the key has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.expires.is_some_and(|e| e <= now)
    }
}

/// A freshly created pre-auth key: the only time its secret is available.
#[derive(Clone)]
pub struct CreatedAuthKey {
    pub key: AuthKey,
    /// `mgkey-<48 hex>`; show it once, it cannot be recovered.
    pub secret: String,
}

impl fmt::Debug for CreatedAuthKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedAuthKey")
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A registration with a pre-auth key (reference §5.5, `RegisterRequest` with `Auth.AuthKey`).
#[derive(Clone, Copy)]
pub struct Registration<'a> {
    pub auth_key: &'a str,
    pub machine_key: MachinePublic,
    pub node_key: NodePublic,
    /// `Hostinfo.Hostname`; the given (DNS) name is derived from it.
    pub hostname: &'a str,
    /// `Hostinfo.RequestTags`: must be a subset of the key's tags. Empty: the node gets all of
    /// the key's tags.
    pub requested_tags: &'a [String],
    /// Node key expiry to set (`None`: never), a server policy decided by the caller.
    pub key_expiry: Option<SystemTime>,
    pub now: SystemTime,
}

impl fmt::Debug for Registration<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registration")
            .field("auth_key", &"<redacted>")
            .field("machine_key", &self.machine_key)
            .field("node_key", &self.node_key)
            .field("hostname", &self.hostname)
            .field("requested_tags", &self.requested_tags)
            .field("key_expiry", &self.key_expiry)
            .field("now", &self.now)
            .finish()
    }
}

/// A node (a machine registered in the tailnet).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub id: NodeId,
    /// `tailcfg.StableNodeID`: random, never reused.
    pub stable_id: String,
    pub machine_key: MachinePublic,
    pub node_key: NodePublic,
    pub disco_key: Option<DiscoPublic>,
    pub user: UserId,
    /// The pre-auth key it (last) registered with, if that key still exists.
    pub auth_key: Option<AuthKeyId>,
    /// Sorted; empty for a user-owned node.
    pub tags: Vec<String>,
    /// As the client last sent it.
    pub hostname: String,
    /// The DNS label, unique in the tailnet (`host`, `host-1`, ...).
    pub given_name: String,
    pub ipv4: Ipv4Addr,
    pub ipv6: Ipv6Addr,
    /// `None`: the key never expires.
    pub key_expiry: Option<SystemTime>,
    pub ephemeral: bool,
    pub created: SystemTime,
    pub last_seen: Option<SystemTime>,
    pub online: bool,
    pub endpoints: Vec<SocketAddr>,
    /// The client's `Hostinfo` as JSON text, stored verbatim.
    pub hostinfo: Option<String>,
}

impl Node {
    /// Whether the node key has expired (or the node logged out) at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        self.key_expiry.is_some_and(|e| e <= now)
    }
}

/// One node's routes. Peers are served only [`NodeRoutes::served`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeRoutes {
    pub node: NodeId,
    /// What the node advertises (`Hostinfo.RoutableIPs`), sorted.
    pub advertised: Vec<IpNet>,
    /// What an admin (or autoApprovers) approved, sorted. Kept when the node stops advertising
    /// a prefix, so it is served again when re-advertised.
    pub approved: Vec<IpNet>,
}

impl NodeRoutes {
    /// Advertised and approved.
    pub fn served(&self) -> Vec<IpNet> {
        self.advertised
            .iter()
            .filter(|p| self.approved.contains(p))
            .copied()
            .collect()
    }
}

/// The coordinator's state. Every method is one transaction: it completes entirely or, on
/// error, changes nothing.
///
/// Synchronous by design; call it from `tokio::task::spawn_blocking` (see the README).
pub trait Store: Send + Sync {
    /// Creates a user, or returns the existing one of that name.
    fn create_user(&self, name: &str, now: SystemTime) -> Result<User>;
    fn user(&self, id: UserId) -> Result<Option<User>>;
    fn user_by_name(&self, name: &str) -> Result<Option<User>>;
    fn list_users(&self) -> Result<Vec<User>>;

    /// Creates a pre-auth key; the returned secret is never stored.
    fn create_auth_key(&self, key: &NewAuthKey) -> Result<CreatedAuthKey>;
    fn list_auth_keys(&self) -> Result<Vec<AuthKey>>;
    /// Revokes a key; nodes registered with it stay.
    fn revoke_auth_key(&self, id: AuthKeyId) -> Result<()>;

    /// Registers a node with a pre-auth key. The key must exist, be unexpired, unrevoked and,
    /// if single-use, unused (except by this same machine, re-registering); requested tags must
    /// be among the key's. A known machine key keeps its node (id, addresses, name): only the
    /// node key, expiry, tags, user and ephemeral flag are updated (key rotation). A new machine
    /// gets a new node with fresh addresses.
    fn register_with_auth_key(&self, reg: &Registration<'_>) -> Result<Node>;

    fn node(&self, id: NodeId) -> Result<Option<Node>>;
    fn node_by_machine_key(&self, key: &MachinePublic) -> Result<Option<Node>>;
    fn node_by_node_key(&self, key: &NodePublic) -> Result<Option<Node>>;
    /// Every node, by id.
    fn list_nodes(&self) -> Result<Vec<Node>>;

    /// Replaces the node key (renewal) and its expiry.
    fn set_node_key(
        &self,
        id: NodeId,
        key: &NodePublic,
        expiry: Option<SystemTime>,
    ) -> Result<Node>;
    /// Logs the node out: its key expires at `now`.
    fn expire_node(&self, id: NodeId, now: SystemTime) -> Result<Node>;
    /// Deletes the node and its routes.
    fn delete_node(&self, id: NodeId) -> Result<()>;
    /// Deletes ephemeral nodes that are offline and were last seen (or, never seen, created)
    /// at least `idle` before `now`; returns their ids.
    fn delete_expired_ephemeral(&self, now: SystemTime, idle: Duration) -> Result<Vec<NodeId>>;

    fn set_endpoints(&self, id: NodeId, endpoints: &[SocketAddr]) -> Result<()>;
    /// Stores `Hostinfo` JSON text verbatim (it must be a JSON object).
    fn set_hostinfo(&self, id: NodeId, hostinfo_json: &str) -> Result<()>;
    fn set_disco_key(&self, id: NodeId, key: &DiscoPublic) -> Result<()>;
    fn set_last_seen(&self, id: NodeId, at: SystemTime) -> Result<()>;
    /// Sets the online flag; also records `now` as last seen.
    fn set_online(&self, id: NodeId, online: bool, now: SystemTime) -> Result<()>;

    /// Replaces the advertised routes (prefixes must be canonical).
    fn set_advertised_routes(&self, id: NodeId, prefixes: &[IpNet]) -> Result<()>;
    /// Replaces the approved routes; every prefix must be advertised by the node.
    fn approve_routes(&self, id: NodeId, prefixes: &[IpNet]) -> Result<()>;
    fn routes(&self, id: NodeId) -> Result<NodeRoutes>;
    /// Routes of every node that advertises or has approved any, by node id.
    fn list_routes(&self) -> Result<Vec<NodeRoutes>>;
}
