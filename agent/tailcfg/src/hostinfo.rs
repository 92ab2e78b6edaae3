//! What a node says about itself (ts:tailcfg/tailcfg.go `Hostinfo`, `NetInfo`, `Service`).

use std::collections::BTreeMap;

use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::derp::RegionId;
use crate::serde_util::{is_false, nullable};

/// The subset of `Hostinfo` this project sends or reads; other fields are ignored on input.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Hostinfo {
    /// Agent version string.
    #[serde(
        rename = "IPNVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub ipn_version: String,
    #[serde(
        rename = "BackendLogID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub backend_log_id: String,
    /// `"linux"`.
    #[serde(rename = "OS", default, skip_serializing_if = "String::is_empty")]
    pub os: String,
    #[serde(
        rename = "OSVersion",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub distro: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub distro_version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub hostname: String,
    /// `uname -m`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub machine: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub go_arch: String,
    /// Advertised subnet routes; an exit node advertises both `0.0.0.0/0` and `::/0`.
    /// Control must approve them before peers route them.
    #[serde(
        rename = "RoutableIPs",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub routable_ips: Vec<IpNet>,
    /// ACL tags (`tag:…`) this node asks for.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub request_tags: Vec<String>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub services: Vec<Service>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub net_info: Option<NetInfo>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub shields_up: bool,
}

/// A listening service (`Proto` is `tcp`, `udp`, `peerapi4`, `peerapi6`, `peerapi-dns-proxy`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Service {
    #[serde(default)]
    pub proto: String,
    #[serde(default)]
    pub port: u16,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// Network conditions from netcheck (reference §3.3). Go's `opt.Bool` fields are `Option<bool>`
/// (`null`/absent = unknown).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct NetInfo {
    #[serde(
        rename = "MappingVariesByDestIP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub mapping_varies_by_dest_ip: Option<bool>,
    #[serde(
        rename = "WorkingIPv6",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_ipv6: Option<bool>,
    #[serde(rename = "OSHasIPv6", default, skip_serializing_if = "Option::is_none")]
    pub os_has_ipv6: Option<bool>,
    #[serde(
        rename = "WorkingUDP",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_udp: Option<bool>,
    #[serde(
        rename = "WorkingICMPv4",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub working_icmpv4: Option<bool>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub have_port_map: bool,
    #[serde(rename = "UPnP", default, skip_serializing_if = "Option::is_none")]
    pub upnp: Option<bool>,
    #[serde(rename = "PMP", default, skip_serializing_if = "Option::is_none")]
    pub pmp: Option<bool>,
    #[serde(rename = "PCP", default, skip_serializing_if = "Option::is_none")]
    pub pcp: Option<bool>,
    /// Home DERP region (0 = none yet).
    #[serde(rename = "PreferredDERP", default)]
    pub preferred_derp: RegionId,
    /// `"wired"`, `"wifi"`, `"mobile"` or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link_type: String,
    /// `"<region>-v4"` / `"<region>-v6"` → seconds.
    #[serde(
        rename = "DERPLatency",
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub derp_latency: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub firewall_mode: String,
}
