//! A run of changes through successive snapshots, checking every node's delta against a
//! client that applies it: the delta applied to the last full map must give the new full map.

use super::tests::{ALLOW_ALL, T0, at, record, user};
use super::*;

fn tailnet(policy: &str, regions: &[i32]) -> Arc<Tailnet> {
    let mut derp_map = DerpMap::default();
    for &id in regions {
        derp_map.regions.insert(
            id,
            meshgate_tailcfg::DerpRegion {
                region_id: id,
                region_code: format!("r{id}"),
                ..Default::default()
            },
        );
    }
    Arc::new(Tailnet {
        policy: Policy::parse(policy).unwrap(),
        derp_map,
        dns: DnsSettings::default(),
    })
}

const ALICE_TO_BOB: &str = r#"{"acls": [
  {"action": "accept", "src": ["alice@example.com"], "dst": ["bob@example.com:22"]}
]}"#;

/// What a client holds after applying `d` to `full` (the tailcontrol rules for deltas).
fn apply(full: &MapResponse, d: &MapResponse) -> MapResponse {
    let mut m = full.clone();
    if d.node.is_some() {
        m.node.clone_from(&d.node);
    }
    if d.derp_map.is_some() {
        m.derp_map.clone_from(&d.derp_map);
    }
    if d.dns_config.is_some() {
        m.dns_config.clone_from(&d.dns_config);
    }
    if !d.domain.is_empty() {
        m.domain.clone_from(&d.domain);
    }
    if d.packet_filter.is_some() {
        m.packet_filter.clone_from(&d.packet_filter);
    }
    let peers = m.peers.get_or_insert_with(Vec::new);
    peers.retain(|p| !d.peers_removed.contains(&p.id));
    for changed in &d.peers_changed {
        peers.retain(|p| p.id != changed.id);
        peers.push(changed.clone());
    }
    for c in &d.peers_changed_patch {
        let p = peers
            .iter_mut()
            .find(|p| p.id == c.node_id)
            .expect("patched peer");
        if let Some(e) = &c.endpoints {
            p.endpoints.clone_from(e);
        }
        if c.derp_region != 0 {
            p.home_derp = c.derp_region;
        }
        if c.online.is_some() {
            p.online = c.online;
        }
        if c.last_seen.is_some() {
            p.last_seen = c.last_seen;
        }
        if let Some(k) = c.disco_key {
            p.disco_key = k;
        }
    }
    peers.sort_by_key(|p| p.id);
    for profile in &d.user_profiles {
        m.user_profiles.retain(|p| p.id != profile.id);
        m.user_profiles.push(profile.clone());
    }
    m
}

/// Checks every node present in both snapshots: no delta when its map did not change, else
/// one that takes its old map to the new one.
fn check_step(step: &str, old: &Snapshot, new: &Snapshot) {
    for r in &new.records {
        let id = r.node.id;
        let (Some(before), Some(after)) = (old.map_for(id), new.map_for(id)) else {
            continue;
        };
        let (full_before, full_after) = (before.response(), after.response());
        match diff(&before, &after) {
            None => assert_eq!(full_before, full_after, "{step}: node {id} missed a change"),
            Some(d) => {
                let applied = apply(&full_before, &d);
                let MapResponse {
                    user_profiles: held,
                    ..
                } = &applied;
                assert!(
                    full_after.user_profiles.iter().all(|p| held.contains(p)),
                    "{step}: node {id} lacks a profile"
                );
                assert_eq!(
                    MapResponse {
                        user_profiles: Vec::new(),
                        ..applied.clone()
                    },
                    MapResponse {
                        user_profiles: Vec::new(),
                        ..full_after
                    },
                    "{step}: node {id}: delta {d:?}"
                );
            }
        }
    }
}

#[test]
fn every_delta_takes_each_node_from_its_old_map_to_its_new_one() {
    let alice = user(1, "alice@example.com");
    let bob = user(2, "bob@example.com");
    let mut records: Vec<NodeRecord> = (1..=5)
        .map(|id| {
            record(
                id,
                &format!("n{id}"),
                if id % 2 == 1 { &alice } else { &bob },
            )
        })
        .collect();
    let mut net = tailnet(ALLOW_ALL, &[1]);
    let mut snap = Snapshot::new(net.clone(), records.clone(), at(T0));

    type Change = Box<dyn Fn(&mut Vec<NodeRecord>, &mut Arc<Tailnet>)>;
    let changes: Vec<(&str, Change)> = vec![
        (
            "endpoints move",
            Box::new(|r, _| r[2].node.endpoints = vec!["198.51.100.3:41641".parse().unwrap()]),
        ),
        (
            "online",
            Box::new(|r, _| {
                r[0].node.online = true;
                r[0].node.last_seen = Some(at(T0 + 5));
            }),
        ),
        (
            "hostinfo",
            Box::new(|r, _| {
                r[3].node.hostinfo = Some(r#"{"OS":"linux","NetInfo":{"PreferredDERP":1}}"#.into())
            }),
        ),
        (
            "home DERP moves",
            Box::new(|r, _| {
                r[3].node.hostinfo = Some(r#"{"OS":"linux","NetInfo":{"PreferredDERP":2}}"#.into())
            }),
        ),
        ("nothing", Box::new(|_, _| {})),
        ("a node joins", {
            let bob = bob.clone();
            Box::new(move |r, _| r.push(record(6, "n6", &bob)))
        }),
        (
            "a node leaves",
            Box::new(|r, _| r.retain(|n| n.node.id != 2)),
        ),
        (
            "policy narrows",
            Box::new(|_, t| *t = tailnet(ALICE_TO_BOB, &[1])),
        ),
        (
            "a node is tagged",
            Box::new(|r, _| r[0].node.tags = vec!["tag:gw".into()]),
        ),
        (
            "DERP map",
            Box::new(|_, t| *t = tailnet(ALICE_TO_BOB, &[1, 2])),
        ),
        (
            "policy widens",
            Box::new(|_, t| *t = tailnet(ALLOW_ALL, &[1, 2])),
        ),
    ];
    for (step, change) in changes {
        change(&mut records, &mut net);
        let next = Snapshot::after(Some(&snap), net.clone(), records.clone(), at(T0));
        check_step(step, &snap, &next);
        snap = next;
    }
}

#[test]
fn unchanged_nodes_are_shared_with_the_previous_snapshot() {
    let alice = user(1, "alice@example.com");
    let mut records: Vec<NodeRecord> = (1..=3)
        .map(|id| record(id, &format!("n{id}"), &alice))
        .collect();
    let net = tailnet(ALLOW_ALL, &[1]);
    let old = Snapshot::new(net.clone(), records.clone(), at(T0));
    records[1].node.endpoints = vec!["198.51.100.2:41641".parse().unwrap()];
    let new = Snapshot::after(Some(&old), net, records, at(T0));
    let shared: Vec<bool> = (1..=3)
        .map(|id| Arc::ptr_eq(old.shared_node(id).unwrap(), new.shared_node(id).unwrap()))
        .collect();
    assert_eq!(shared, [true, false, true]);
}
