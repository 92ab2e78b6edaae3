//! What the operations return and take: the JSON of `--json` and of the HTTP API. Times are
//! whole seconds since the Unix epoch. Fields are only ever added (scripts parse these).

use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

use ipnet::IpNet;
use meshgate_coordinator_store::{AuthKeyId, NodeId, UserId};
use serde::{Deserialize, Serialize};

/// A node as the admin sees it (`nodes list`, GET /api/v1/nodes).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    pub id: NodeId,
    /// The given (DNS) name.
    pub name: String,
    pub hostname: String,
    pub user: String,
    /// IPv4 then IPv6.
    pub addresses: Vec<IpAddr>,
    pub tags: Vec<String>,
    pub online: bool,
    pub last_seen: Option<u64>,
    pub key_expiry: Option<u64>,
    pub expired: bool,
    pub ephemeral: bool,
    pub endpoints: Vec<String>,
    pub advertised_routes: Vec<IpNet>,
    pub approved_routes: Vec<IpNet>,
    /// Advertised and approved: what peers get.
    pub served_routes: Vec<IpNet>,
    /// Serves both `0.0.0.0/0` and `::/0`.
    pub exit_node: bool,
}

/// One node's routes (`routes list`, GET /api/v1/routes, the answer to an approval).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutesView {
    pub node: NodeId,
    pub name: String,
    pub advertised: Vec<IpNet>,
    pub approved: Vec<IpNet>,
    /// Advertised and approved: what peers get.
    pub served: Vec<IpNet>,
}

/// A pre-auth key without its secret (only a digest of it is stored).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthKeyView {
    pub id: AuthKeyId,
    pub user_id: UserId,
    pub user: String,
    pub reusable: bool,
    pub ephemeral: bool,
    pub tags: Vec<String>,
    pub created: u64,
    pub expires: Option<u64>,
    pub expired: bool,
    pub used_count: u64,
    pub used_at: Option<u64>,
    pub revoked: bool,
    /// Registers nodes now: not revoked, not expired, and reusable or unused.
    pub usable: bool,
}

/// A key just created: the view plus the secret, which is never available again.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedAuthKeyView {
    #[serde(flatten)]
    pub key: AuthKeyView,
    pub secret: String,
}

impl fmt::Debug for CreatedAuthKeyView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CreatedAuthKeyView")
            .field("key", &self.key)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// What to create a pre-auth key with (`authkey create`, POST /api/v1/authkeys).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateAuthKey {
    /// The owning user's login; created if new.
    pub user: String,
    #[serde(default)]
    pub reusable: bool,
    #[serde(default)]
    pub ephemeral: bool,
    #[serde(default)]
    pub tags: Vec<String>,
    /// Lifetime in seconds; absent: never expires.
    #[serde(default)]
    pub expiry_seconds: Option<u64>,
}

/// POST /api/v1/nodes/{id}/routes: the node's approved routes become exactly these (`[]`
/// approves none), as `routes approve` does.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveRoutes {
    pub approve: Vec<IpNet>,
}

/// Seconds since the Unix epoch (0 for times before it).
pub(crate) fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
