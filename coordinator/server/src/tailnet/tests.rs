//! Hand-worked maps and deltas.

use std::time::Duration;

use meshgate_tailcfg::{
    DerpRegion, FilterRule, MachinePublic, NetPortRange, NodePublic, PortRange,
};

use super::*;

pub(super) const T0: u64 = 1_800_000_000;

pub(super) fn at(secs: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(secs)
}

pub(super) fn user(id: i64, name: &str) -> store::User {
    store::User {
        id,
        name: name.into(),
        created: at(T0),
    }
}

pub(super) fn record(id: i64, name: &str, owner: &store::User) -> NodeRecord {
    let n = u8::try_from(id).unwrap();
    NodeRecord {
        node: store::Node {
            id,
            stable_id: format!("nstable{id}"),
            machine_key: MachinePublic::from_bytes([n; 32]),
            node_key: NodePublic::from_bytes([n + 100; 32]),
            disco_key: None,
            user: owner.id,
            auth_key: None,
            tags: Vec::new(),
            hostname: name.into(),
            given_name: name.into(),
            ipv4: format!("100.64.0.{id}").parse().unwrap(),
            ipv6: format!("fd7a:115c:a1e0:ab12:4843:cd96:6240:{id}")
                .parse()
                .unwrap(),
            key_expiry: Some(at(T0 + 1000)),
            ephemeral: false,
            created: at(T0),
            last_seen: None,
            online: false,
            endpoints: Vec::new(),
            hostinfo: None,
        },
        user: owner.clone(),
        routes: store::NodeRoutes {
            node: id,
            ..Default::default()
        },
    }
}

fn tailnet(policy: &str) -> Arc<Tailnet> {
    let mut derp_map = DerpMap::default();
    derp_map.regions.insert(
        1,
        DerpRegion {
            region_id: 1,
            region_code: "home".into(),
            ..DerpRegion::default()
        },
    );
    Arc::new(Tailnet {
        policy: Policy::parse(policy).unwrap(),
        derp_map,
        dns: DnsSettings::default(),
    })
}

pub(super) const ALLOW_ALL: &str =
    r#"{"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}]}"#;
const DENY_ALL: &str = r#"{"acls": []}"#;

fn two_nodes() -> Vec<NodeRecord> {
    let alice = user(1, "alice@example.com");
    let bob = user(2, "bob@example.com");
    vec![record(2, "pc", &bob), record(1, "gw", &alice)]
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn full_map_allow_all() {
    let mut records = two_nodes();
    // gw (id 1) advertises two routes, one approved.
    records[1].routes.advertised = vec![net("10.1.0.0/24"), net("10.2.0.0/24")];
    records[1].routes.approved = vec![net("10.1.0.0/24")];
    records[1].node.hostinfo =
        Some(r#"{"Hostname":"gw","OS":"linux","NetInfo":{"PreferredDERP":1}}"#.into());
    let snap = Snapshot::new(tailnet(ALLOW_ALL), records, at(T0));
    let map = snap.map_for(2).unwrap().response();

    let me = map.node.as_ref().unwrap();
    assert_eq!(me.id, 2);
    assert_eq!(me.name, "pc.tailnet.meshgate.");
    assert_eq!(
        me.addresses,
        [
            net("100.64.0.2/32"),
            net("fd7a:115c:a1e0:ab12:4843:cd96:6240:2/128")
        ]
    );
    assert_eq!(me.key_expiry, Time::from(at(T0 + 1000)));
    assert!(!me.expired);

    let peers = map.peers.as_ref().unwrap();
    assert_eq!(peers.len(), 1);
    let gw = &peers[0];
    assert_eq!(gw.id, 1);
    assert_eq!(gw.name, "gw.tailnet.meshgate.");
    assert_eq!(gw.key, NodePublic::from_bytes([101; 32]));
    assert_eq!(gw.home_derp, 1, "from Hostinfo.NetInfo.PreferredDERP");
    assert!(
        gw.hostinfo.as_ref().unwrap().net_info.is_none(),
        "NetInfo is not sent to peers"
    );
    assert_eq!(
        gw.allowed_ips.as_deref().unwrap(),
        [
            net("100.64.0.1/32"),
            net("fd7a:115c:a1e0:ab12:4843:cd96:6240:1/128"),
            net("10.1.0.0/24")
        ],
        "addresses plus the approved (not the merely advertised) route"
    );
    assert_eq!(gw.primary_routes, [net("10.1.0.0/24")]);
    assert_eq!(gw.online, Some(false));

    assert_eq!(
        map.packet_filter.as_deref().unwrap(),
        [FilterRule {
            src_ips: vec!["*".into()],
            dst_ports: vec![NetPortRange {
                ip: "*".into(),
                ports: PortRange {
                    first: 0,
                    last: 65535
                },
            }],
            ..FilterRule::default()
        }]
    );
    assert_eq!(map.derp_map.as_ref().unwrap().regions.len(), 1);
    let dns = map.dns_config.as_ref().unwrap();
    assert_eq!(dns.domains, ["tailnet.meshgate"]);
    assert!(dns.proxied);
    assert_eq!(map.domain, "tailnet.meshgate");
    let logins: Vec<&str> = map
        .user_profiles
        .iter()
        .map(|p| p.login_name.as_str())
        .collect();
    assert_eq!(logins, ["alice@example.com", "bob@example.com"]);

    // The JSON says "PacketFilter" and "Peers" explicitly.
    let json = serde_json::to_string(&map).unwrap();
    assert!(
        json.contains(r#""PacketFilter":[{"SrcIPs":["*"]"#),
        "{json}"
    );
    assert!(snap.map_for(99).is_none());
}

#[test]
fn deny_all_has_no_peers_and_an_empty_filter() {
    let snap = Snapshot::new(tailnet(DENY_ALL), two_nodes(), at(T0));
    let map = snap.map_for(1).unwrap().response();
    assert_eq!(map.peers.as_deref(), Some(&[][..]));
    assert_eq!(map.packet_filter.as_deref(), Some(&[][..]));
    let json = serde_json::to_string(&map).unwrap();
    assert!(json.contains(r#""PacketFilter":[]"#), "{json}");
    assert!(json.contains(r#""Peers":[]"#), "{json}");
    assert_eq!(map.user_profiles.len(), 1, "only its own user");
}

#[test]
fn expired_peer_is_marked() {
    let mut records = two_nodes();
    records[0].node.key_expiry = Some(at(T0 - 1));
    let snap = Snapshot::new(tailnet(ALLOW_ALL), records, at(T0));
    let map = snap.map_for(1).unwrap().response();
    assert!(map.peers.unwrap()[0].expired);
}

fn maps(f: impl FnOnce(&mut Vec<NodeRecord>)) -> (NodeMap, NodeMap) {
    let records = two_nodes();
    let old = Snapshot::new(tailnet(ALLOW_ALL), records.clone(), at(T0))
        .map_for(1)
        .unwrap();
    let mut changed = records;
    f(&mut changed);
    let new = Snapshot::new(tailnet(ALLOW_ALL), changed, at(T0))
        .map_for(1)
        .unwrap();
    (old, new)
}

#[test]
fn no_change_no_delta() {
    let (old, new) = maps(|_| {});
    assert_eq!(diff(&old, &new), None);
}

#[test]
fn endpoint_and_online_changes_are_patches() {
    let (old, new) = maps(|r| {
        r[0].node.endpoints = vec!["198.51.100.7:41641".parse().unwrap()];
        r[0].node.online = true;
        r[0].node.last_seen = Some(at(T0 + 5));
        r[0].node.hostinfo = Some(r#"{"NetInfo":{"PreferredDERP":1}}"#.into());
    });
    // Hostinfo went from None to Some: that is more than a patch can say.
    let d = diff(&old, &new).unwrap();
    assert_eq!(d.peers_changed.len(), 1);
    assert!(d.peers_changed_patch.is_empty());

    let (old, new) = maps(|r| {
        r[0].node.endpoints = vec!["198.51.100.7:41641".parse().unwrap()];
        r[0].node.online = true;
        r[0].node.last_seen = Some(at(T0 + 5));
    });
    let d = diff(&old, &new).unwrap();
    assert_eq!(
        d,
        MapResponse {
            peers_changed_patch: vec![PeerChange {
                node_id: 2,
                endpoints: Some(vec!["198.51.100.7:41641".parse().unwrap()]),
                online: Some(true),
                last_seen: Some(Time::from(at(T0 + 5))),
                ..PeerChange::default()
            }],
            ..MapResponse::default()
        }
    );
    assert_eq!(
        serde_json::to_string(&d).unwrap(),
        r#"{"PeersChangedPatch":[{"NodeID":2,"Endpoints":["198.51.100.7:41641"],"Online":true,"LastSeen":"2027-01-15T08:00:05Z"}]}"#
    );
}

#[test]
fn home_derp_change_is_a_patch() {
    let with_derp = |region: u16| {
        move |r: &mut Vec<NodeRecord>| {
            r[0].node.hostinfo = Some(format!(r#"{{"NetInfo":{{"PreferredDERP":{region}}}}}"#));
        }
    };
    let records = {
        let mut r = two_nodes();
        with_derp(1)(&mut r);
        r
    };
    let old = Snapshot::new(tailnet(ALLOW_ALL), records.clone(), at(T0))
        .map_for(1)
        .unwrap();
    let mut moved = records;
    with_derp(2)(&mut moved);
    let new = Snapshot::new(tailnet(ALLOW_ALL), moved, at(T0))
        .map_for(1)
        .unwrap();
    let d = diff(&old, &new).unwrap();
    assert_eq!(
        d.peers_changed_patch,
        [PeerChange {
            node_id: 2,
            derp_region: 2,
            ..PeerChange::default()
        }]
    );
    assert!(d.peers_changed.is_empty());
}

#[test]
fn other_peer_changes_send_the_whole_node() {
    let (old, new) = maps(|r| r[0].node.given_name = "laptop".into());
    let d = diff(&old, &new).unwrap();
    assert_eq!(d.peers_changed.len(), 1);
    assert_eq!(d.peers_changed[0].name, "laptop.tailnet.meshgate.");
    assert!(d.peers_changed_patch.is_empty());
    assert!(d.node.is_none() && d.packet_filter.is_none() && d.derp_map.is_none());
}

#[test]
fn new_and_removed_peers() {
    let carol = user(3, "carol@example.com");
    let (old, new) = maps(|r| {
        r.retain(|n| n.node.id != 2);
        r.push(record(3, "nas", &carol));
    });
    let d = diff(&old, &new).unwrap();
    assert_eq!(d.peers_removed, [2]);
    assert_eq!(d.peers_changed.len(), 1);
    assert_eq!(d.peers_changed[0].id, 3);
    assert_eq!(d.user_profiles.len(), 1, "only the new profile");
    assert_eq!(d.user_profiles[0].login_name, "carol@example.com");
    // The filter (`*`) did not change.
    assert!(d.packet_filter.is_none());
}

#[test]
fn self_change_sends_node() {
    let (old, new) = maps(|r| r[1].node.key_expiry = Some(at(T0 + 2000)));
    let d = diff(&old, &new).unwrap();
    assert_eq!(
        d.node.as_ref().unwrap().key_expiry,
        Time::from(at(T0 + 2000))
    );
    assert!(d.peers_changed.is_empty() && d.peers_changed_patch.is_empty());
}

#[test]
fn policy_change_sends_empty_filter_and_removals() {
    let records = two_nodes();
    let old = Snapshot::new(tailnet(ALLOW_ALL), records.clone(), at(T0))
        .map_for(1)
        .unwrap();
    let new = Snapshot::new(tailnet(DENY_ALL), records, at(T0))
        .map_for(1)
        .unwrap();
    let d = diff(&old, &new).unwrap();
    assert_eq!(d.packet_filter.as_deref(), Some(&[][..]));
    assert_eq!(d.peers_removed, [2]);
    assert!(
        serde_json::to_string(&d)
            .unwrap()
            .contains(r#""PacketFilter":[]"#)
    );
}

#[test]
fn derp_map_only_when_changed() {
    let records = two_nodes();
    let t1 = tailnet(ALLOW_ALL);
    let old = Snapshot::new(t1.clone(), records.clone(), at(T0))
        .map_for(1)
        .unwrap();
    let mut t2 = Tailnet::clone(&t1);
    t2.derp_map.regions.remove(&1);
    let new = Snapshot::new(Arc::new(t2), records, at(T0))
        .map_for(1)
        .unwrap();
    let d = diff(&old, &new).unwrap();
    assert_eq!(d.derp_map.as_ref().unwrap().regions.len(), 0);
    assert_eq!(
        d,
        MapResponse {
            derp_map: d.derp_map.clone(),
            ..MapResponse::default()
        }
    );
}

/// gw (1) and gw2 (3) both serve 10.1.0.0/24 and an exit route; pc (2) looks at them.
fn two_routers(gw_online: bool) -> Vec<NodeRecord> {
    let alice = user(1, "alice@example.com");
    let mut records = vec![
        record(1, "gw", &alice),
        record(2, "pc", &alice),
        record(3, "gw2", &alice),
    ];
    for i in [0, 2] {
        let routes = vec![net("0.0.0.0/0"), net("10.1.0.0/24"), net("::/0")];
        records[i].routes.advertised.clone_from(&routes);
        records[i].routes.approved = routes;
        records[i].node.online = true;
        records[i].node.hostinfo =
            Some(r#"{"Hostname":"gw","RoutableIPs":["10.1.0.0/24","0.0.0.0/0","::/0"]}"#.into());
    }
    records[0].node.online = gw_online;
    records
}

#[test]
fn only_the_primary_carries_a_subnet_and_failover_is_a_delta() {
    let subnet = net("10.1.0.0/24");
    let snap = Snapshot::new(tailnet(ALLOW_ALL), two_routers(true), at(T0));
    assert_eq!(snap.primaries().get(&subnet), Some(&1));
    let before = snap.map_for(2).unwrap();
    let full = before.response();
    let peers = full.peers.as_ref().unwrap();
    let (gw, gw2) = (&peers[0], &peers[1]);
    assert!(gw.allowed_ips.as_ref().unwrap().contains(&subnet));
    assert_eq!(gw.primary_routes, [subnet]);
    let gw2_allowed = gw2.allowed_ips.as_ref().unwrap();
    assert!(!gw2_allowed.contains(&subnet), "{gw2_allowed:?}");
    assert!(gw2.primary_routes.is_empty());
    // Both stay exit nodes; the secondary's Hostinfo still shows what it advertises.
    assert!(gw2_allowed.contains(&net("0.0.0.0/0")) && gw2_allowed.contains(&net("::/0")));
    assert!(
        gw2.hostinfo
            .as_ref()
            .unwrap()
            .routable_ips
            .contains(&subnet)
    );

    // gw goes offline: gw2 takes over, and pc gets both nodes whole.
    let snap = Snapshot::after(Some(&snap), tailnet(ALLOW_ALL), two_routers(false), at(T0));
    assert_eq!(snap.primaries().get(&subnet), Some(&3));
    let after = snap.map_for(2).unwrap();
    let d = diff(&before, &after).unwrap();
    let changed: Vec<NodeId> = d.peers_changed.iter().map(|n| n.id).collect();
    assert_eq!(changed, [1, 3]);
    assert!(!d.peers_changed[0].allowed_ips().contains(&subnet));
    assert_eq!(d.peers_changed[1].primary_routes, [subnet]);

    // gw is back: the prefix stays with gw2.
    let snap = Snapshot::after(Some(&snap), tailnet(ALLOW_ALL), two_routers(true), at(T0));
    assert_eq!(snap.primaries().get(&subnet), Some(&3));
}
