//! DERP map builders shared by the tests.
#![allow(dead_code)]

use std::collections::BTreeMap;

use meshgate_tailcfg::{DerpHomeParams, DerpMap, DerpNode, DerpRegion, RegionId};

pub fn node(name: &str, region: RegionId, ipv4: &str, ipv6: &str, stun_port: i32) -> DerpNode {
    DerpNode {
        name: name.into(),
        region_id: region,
        host_name: format!("derp{name}.example.com"),
        ipv4: ipv4.into(),
        ipv6: ipv6.into(),
        stun_port,
        ..DerpNode::default()
    }
}

pub fn region(id: RegionId, nodes: Vec<DerpNode>) -> DerpRegion {
    DerpRegion {
        region_id: id,
        region_code: format!("r{id}"),
        nodes,
        ..DerpRegion::default()
    }
}

pub fn map(regions: Vec<DerpRegion>) -> DerpMap {
    DerpMap {
        regions: regions.into_iter().map(|r| (r.region_id, r)).collect(),
        ..DerpMap::default()
    }
}

pub fn with_scores(mut m: DerpMap, scores: &[(RegionId, f64)]) -> DerpMap {
    m.home_params = Some(DerpHomeParams {
        region_score: scores.iter().copied().collect::<BTreeMap<_, _>>(),
    });
    m
}

/// N regions 1..=n, each one node with IPv4 10.0.0.<id>, no IPv6, STUN port 3478.
pub fn simple_map(n: RegionId) -> DerpMap {
    map((1..=n)
        .map(|id| {
            region(
                id,
                vec![node(
                    &format!("{id}a"),
                    id,
                    &format!("10.0.0.{id}"),
                    "none",
                    0,
                )],
            )
        })
        .collect())
}
