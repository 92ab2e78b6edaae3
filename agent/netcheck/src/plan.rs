//! Which DERP nodes to STUN, over which family, and when (reference §3.2 "initial/full plan").

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use meshgate_tailcfg::{DerpMap, DerpNode, RegionId};

use crate::Report;

/// Tries per region in a full plan, cycling over the region's STUN nodes.
pub const TRIES_PER_REGION: usize = 3;
/// Spacing of tries when there is no earlier report.
pub const INITIAL_RETRANSMIT: Duration = Duration::from_millis(100);
/// Spacing of tries when an earlier report had no latency for the region.
pub const ACTIVE_RETRANSMIT: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Family {
    V4,
    V6,
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "v4",
            Family::V6 => "v6",
        })
    }
}

/// Which address families the socket can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanOptions {
    pub ipv4: bool,
    pub ipv6: bool,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            ipv4: true,
            ipv6: true,
        }
    }
}

/// One STUN request to send `delay` after the probe starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedProbe {
    pub region: RegionId,
    pub node: String,
    pub family: Family,
    pub addr: SocketAddr,
    pub delay: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SkipReason {
    /// The node has no IP literal for this family; resolving `HostName` is not done here.
    NeedsDns,
    /// The `IPv4`/`IPv6` field is neither an address of that family nor `"none"`.
    BadAddress(String),
}

/// A node/family that would have been probed but could not be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedNode {
    pub region: RegionId,
    pub node: String,
    pub family: Family,
    pub reason: SkipReason,
}

/// The probes of one netcheck run, sorted by delay (stable: region order within a delay).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    pub probes: Vec<PlannedProbe>,
    pub skipped: Vec<SkippedNode>,
    /// Full plans wait twice the worst latency after the third region answers.
    pub full: bool,
}

/// Try spacing for `region`: 1.2 × its latency in the last report, else 200 ms if there was a
/// last report, else 100 ms (first run).
pub fn retransmit_interval(region: RegionId, last: Option<&Report>) -> Duration {
    match last {
        None => INITIAL_RETRANSMIT,
        Some(r) => r
            .region_latency
            .get(&region)
            .map(|d| d.saturating_mul(6) / 5)
            .unwrap_or(ACTIVE_RETRANSMIT),
    }
}

impl Plan {
    /// The full plan: every region except `NoMeasureNoHome`, [`TRIES_PER_REGION`] tries over its
    /// STUN nodes (those with `STUNPort` ≠ -1), each enabled family whose node address is not
    /// `"none"`. Only IP literals are used (`STUNTestIP`, then `IPv4`/`IPv6`, then a `HostName`
    /// that is a literal); other nodes are listed in `skipped`.
    pub fn full(map: &DerpMap, last: Option<&Report>, opts: PlanOptions) -> Plan {
        let mut plan = Plan {
            full: true,
            ..Plan::default()
        };
        let mut skipped_seen = BTreeSet::new();
        let families = [(Family::V4, opts.ipv4), (Family::V6, opts.ipv6)];
        for (&region_id, region) in &map.regions {
            if region.no_measure_no_home {
                continue;
            }
            let nodes: Vec<(&DerpNode, u16)> = region
                .nodes
                .iter()
                .filter_map(|n| n.effective_stun_port().map(|p| (n, p)))
                .collect();
            if nodes.is_empty() {
                continue;
            }
            let step = retransmit_interval(region_id, last);
            for try_no in 0..TRIES_PER_REGION {
                let (node, port) = nodes[try_no % nodes.len()];
                let delay = step.saturating_mul(try_no as u32);
                for (family, enabled) in families {
                    if !enabled {
                        continue;
                    }
                    match node_ip(node, family) {
                        Ok(Some(ip)) => plan.probes.push(PlannedProbe {
                            region: region_id,
                            node: node.name.clone(),
                            family,
                            addr: SocketAddr::new(ip, port),
                            delay,
                        }),
                        Ok(None) => {}
                        Err(reason) => {
                            if skipped_seen.insert((region_id, node.name.clone(), family)) {
                                plan.skipped.push(SkippedNode {
                                    region: region_id,
                                    node: node.name.clone(),
                                    family,
                                    reason,
                                });
                            }
                        }
                    }
                }
            }
        }
        plan.probes.sort_by_key(|p| p.delay);
        plan
    }
}

/// `Ok(None)`: the node does not do this family (`"none"`, or only a literal of the other one).
fn node_ip(node: &DerpNode, family: Family) -> Result<Option<IpAddr>, SkipReason> {
    let matches = |ip: &IpAddr| match family {
        Family::V4 => ip.is_ipv4(),
        Family::V6 => ip.is_ipv6(),
    };
    let field = match family {
        Family::V4 => node.ipv4.as_str(),
        Family::V6 => node.ipv6.as_str(),
    };
    if field == "none" {
        return Ok(None);
    }
    if let Ok(ip) = node.stun_test_ip.parse::<IpAddr>()
        && matches(&ip)
    {
        return Ok(Some(ip));
    }
    if !field.is_empty() {
        return match field.parse::<IpAddr>() {
            Ok(ip) if matches(&ip) => Ok(Some(ip)),
            _ => Err(SkipReason::BadAddress(field.to_owned())),
        };
    }
    match node.host_name.parse::<IpAddr>() {
        Ok(ip) if matches(&ip) => Ok(Some(ip)),
        Ok(_) => Ok(None),
        Err(_) => Err(SkipReason::NeedsDns),
    }
}
