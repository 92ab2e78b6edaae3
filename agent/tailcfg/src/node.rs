//! Nodes and users as control describes them (reference §5.6; ts:tailcfg/tailcfg.go `Node`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::capver::CapabilityVersion;
use crate::derp::RegionId;
use crate::hostinfo::Hostinfo;
use crate::key::{DiscoPublic, MachinePublic, NodePublic};
use crate::serde_util::{is_false, is_zero, nullable};
use crate::time::Time;

/// A node's numeric ID, unique within the control server.
pub type NodeId = i64;
/// A user's numeric ID.
pub type UserId = i64;

/// Node capabilities with optional JSON arguments (`CapMap`); values are kept as raw JSON.
pub type CapMap = BTreeMap<String, serde_json::Value>;

/// A node: the self node (`MapResponse.Node`) or a peer.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    #[serde(rename = "ID")]
    pub id: NodeId,
    #[serde(rename = "StableID", default, skip_serializing_if = "String::is_empty")]
    pub stable_id: String,
    /// MagicDNS FQDN with a trailing dot, e.g. `host.tailnet.ts.net.`.
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub user: UserId,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub sharer: UserId,
    /// The WireGuard public key.
    #[serde(default)]
    pub key: NodePublic,
    /// Zero time means the key never expires.
    #[serde(default)]
    pub key_expiry: Time,
    /// Tailnet-lock signature (base64), carried opaquely.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_signature: String,
    #[serde(default, skip_serializing_if = "MachinePublic::is_zero")]
    pub machine: MachinePublic,
    #[serde(default, skip_serializing_if = "DiscoPublic::is_zero")]
    pub disco_key: DiscoPublic,
    /// The node's Tailscale addresses (/32 and /128).
    #[serde(default, deserialize_with = "nullable")]
    pub addresses: Vec<IpNet>,
    /// Prefixes routed to this node. `None` (absent or `null`) means the same as `Addresses`
    /// (capability version ≥ 112); use [`Node::allowed_ips`].
    #[serde(
        rename = "AllowedIPs",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub allowed_ips: Option<Vec<IpNet>>,
    /// Candidate UDP endpoints.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub endpoints: Vec<SocketAddr>,
    /// Legacy home DERP as `"127.3.3.40:<region>"`; see [`Node::home_derp_region`].
    #[serde(rename = "DERP", default, skip_serializing_if = "String::is_empty")]
    pub legacy_derp: String,
    /// Home DERP region (0 = none).
    #[serde(rename = "HomeDERP", default, skip_serializing_if = "is_zero")]
    pub home_derp: RegionId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostinfo: Option<Hostinfo>,
    #[serde(default, skip_serializing_if = "Time::is_zero")]
    pub created: Time,
    /// The node's capability version.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cap: CapabilityVersion,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub tags: Vec<String>,
    /// Subnet routes for which this node is the primary router.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub primary_routes: Vec<IpNet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
    /// `None` = unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub machine_authorized: bool,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub cap_map: CapMap,
    /// Set by control on peers whose key has expired (their key and endpoints are not usable).
    #[serde(default, skip_serializing_if = "is_false")]
    pub expired: bool,
    /// The source address this node must be masqueraded to when sending to this peer.
    #[serde(
        rename = "SelfNodeV4MasqAddrForThisPeer",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub self_node_v4_masq_addr_for_this_peer: Option<IpAddr>,
    #[serde(
        rename = "SelfNodeV6MasqAddrForThisPeer",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub self_node_v6_masq_addr_for_this_peer: Option<IpAddr>,
    /// A plain WireGuard peer (no disco, no DERP).
    #[serde(default, skip_serializing_if = "is_false")]
    pub is_wire_guard_only: bool,
    /// Peers may not initiate connections to us through this node (inbound only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub is_jailed: bool,
}

impl Node {
    /// Prefixes routed to this node: `AllowedIPs`, or `Addresses` when that is absent.
    pub fn allowed_ips(&self) -> &[IpNet] {
        self.allowed_ips.as_deref().unwrap_or(&self.addresses)
    }

    /// The home DERP region: `HomeDERP`, else the region in the legacy `"127.3.3.40:N"` form.
    pub fn home_derp_region(&self) -> Option<RegionId> {
        if self.home_derp != 0 {
            return Some(self.home_derp);
        }
        let port = self.legacy_derp.strip_prefix("127.3.3.40:")?;
        port.parse().ok().filter(|r| *r != 0)
    }
}

/// A user as peers see it (`MapResponse.UserProfiles`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserProfile {
    #[serde(rename = "ID")]
    pub id: UserId,
    /// e.g. an email address.
    #[serde(default)]
    pub login_name: String,
    #[serde(default)]
    pub display_name: String,
    #[serde(
        rename = "ProfilePicURL",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub profile_pic_url: String,
}
