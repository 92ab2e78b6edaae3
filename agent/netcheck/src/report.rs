//! The netcheck report and its `NetInfo` form for control (reference §3.3).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use meshgate_tailcfg::{NetInfo, RegionId};

use crate::SkippedNode;

/// What one netcheck run learned.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Any STUN reply arrived.
    pub udp: bool,
    /// An IPv4 / IPv6 STUN reply arrived.
    pub ipv4: bool,
    pub ipv6: bool,
    /// Our address as the first IPv4 / IPv6 STUN server saw it.
    pub global_v4: Option<SocketAddr>,
    pub global_v6: Option<SocketAddr>,
    /// `Some(true)` if two IPv4 STUN servers (distinct ip:port) saw different mapped ip:port,
    /// `Some(false)` if at least two answered and all agreed, `None` if fewer answered.
    pub mapping_varies_by_dest_ip: Option<bool>,
    /// Best round trip per region over both families, and per family.
    pub region_latency: BTreeMap<RegionId, Duration>,
    pub region_v4_latency: BTreeMap<RegionId, Duration>,
    pub region_v6_latency: BTreeMap<RegionId, Duration>,
    /// Home region (0 = none); set by [`crate::History::add_report`].
    pub preferred_derp: RegionId,
    /// Nodes that could not be probed (no IP literal, bad address).
    pub skipped: Vec<SkippedNode>,
}

impl Report {
    /// The `Hostinfo.NetInfo` fields netcheck owns: WorkingUDP, WorkingIPv6,
    /// MappingVariesByDestIP, PreferredDERP and DERPLatency (`"<id>-v4"`/`"<id>-v6"` in
    /// seconds). Port-mapping, ICMP, OS IPv6 and link type are left unset for others to fill.
    pub fn net_info(&self) -> NetInfo {
        let mut derp_latency = BTreeMap::new();
        for (fam, map) in [
            ("v4", &self.region_v4_latency),
            ("v6", &self.region_v6_latency),
        ] {
            for (region, d) in map {
                derp_latency.insert(format!("{region}-{fam}"), d.as_secs_f64());
            }
        }
        NetInfo {
            mapping_varies_by_dest_ip: self.mapping_varies_by_dest_ip,
            working_ipv6: Some(self.ipv6),
            working_udp: Some(self.udp),
            preferred_derp: self.preferred_derp,
            derp_latency,
            ..NetInfo::default()
        }
    }
}
