//! The DERP map control sends (reference §2.8; ts:tailcfg/derpmap.go).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::serde_util::{is_false, is_zero, nullable};

/// A DERP region's ID (`RegionID`; also the port of the magic endpoint `127.3.3.40:<id>`).
pub type RegionId = i32;

/// The in-process address `127.3.3.40`; an endpoint `127.3.3.40:N` means "via DERP region N".
/// Never put on the wire or into a kernel WireGuard configuration.
pub const DERP_MAGIC_IP: std::net::Ipv4Addr = std::net::Ipv4Addr::new(127, 3, 3, 40);

/// All DERP regions. In a `MapResponse`, an absent (`None`) map means unchanged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DerpMap {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_params: Option<DerpHomeParams>,
    /// Keyed by region ID (a JSON object with decimal string keys).
    #[serde(default, deserialize_with = "nullable")]
    pub regions: BTreeMap<RegionId, DerpRegion>,
    /// Whether the client should drop its built-in default regions.
    #[serde(
        rename = "omitDefaultRegions",
        default,
        skip_serializing_if = "is_false"
    )]
    pub omit_default_regions: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DerpHomeParams {
    /// Multiplier applied to a region's latency when choosing home (< 1 prefers it).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub region_score: BTreeMap<RegionId, f64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DerpRegion {
    #[serde(rename = "RegionID")]
    pub region_id: RegionId,
    #[serde(default)]
    pub region_code: String,
    #[serde(default)]
    pub region_name: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub latitude: f64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub longitude: f64,
    /// Deprecated: don't pick as home if possible.
    #[serde(default, skip_serializing_if = "is_false")]
    pub avoid: bool,
    /// Don't measure latency to it and never make it home (it's only for reaching peers).
    #[serde(default, skip_serializing_if = "is_false")]
    pub no_measure_no_home: bool,
    /// In priority order: TLS to the first, STUN to the first one or two.
    #[serde(default, deserialize_with = "nullable")]
    pub nodes: Vec<DerpNode>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DerpNode {
    /// Unique within the map, e.g. `"1b"`.
    #[serde(default)]
    pub name: String,
    #[serde(rename = "RegionID", default)]
    pub region_id: RegionId,
    #[serde(default)]
    pub host_name: String,
    /// TLS certificate name if not `HostName`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cert_name: String,
    /// IPv4 address to use instead of resolving `HostName`; `"none"` disables IPv4.
    #[serde(rename = "IPv4", default, skip_serializing_if = "String::is_empty")]
    pub ipv4: String,
    /// IPv6 address to use instead of resolving `HostName`; `"none"` disables IPv6.
    #[serde(rename = "IPv6", default, skip_serializing_if = "String::is_empty")]
    pub ipv6: String,
    /// 0 means 3478; -1 means no STUN.
    #[serde(rename = "STUNPort", default, skip_serializing_if = "is_zero")]
    pub stun_port: i32,
    #[serde(rename = "STUNOnly", default, skip_serializing_if = "is_false")]
    pub stun_only: bool,
    /// 0 means 443.
    #[serde(rename = "DERPPort", default, skip_serializing_if = "is_zero")]
    pub derp_port: i32,
    #[serde(default, skip_serializing_if = "is_false")]
    pub insecure_for_tests: bool,
    #[serde(
        rename = "STUNTestIP",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub stun_test_ip: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub can_port80: bool,
}

impl DerpNode {
    /// The STUN port, or `None` if STUN is disabled.
    pub fn effective_stun_port(&self) -> Option<u16> {
        match self.stun_port {
            0 => Some(3478),
            p => u16::try_from(p).ok(),
        }
    }

    /// The DERP (HTTPS) port.
    pub fn effective_derp_port(&self) -> u16 {
        match self.derp_port {
            0 => 443,
            p => u16::try_from(p).unwrap_or(443),
        }
    }
}
