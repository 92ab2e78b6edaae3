//! The network map as the map stream builds it (reference §5.6), sans-I/O: a [`NetMap`] and the
//! delta rules of `MapResponse`, applied by [`NetMap::apply`].

use std::collections::{BTreeMap, BTreeSet};

use meshgate_tailcfg::{
    DerpMap, DnsConfig, FilterRule, MapResponse, Node, NodeId, PeerChange, Time, UserId,
    UserProfile,
};

/// The name of the packet-filter set that `MapResponse.PacketFilter` stands for.
pub const BASE_FILTER: &str = "base";

/// Everything the control server has told us, with all deltas applied.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NetMap {
    /// This node as control sees it (addresses, key expiry, …). `None` until the first message
    /// that carries it.
    pub self_node: Option<Node>,
    /// Peers by node ID.
    pub peers: BTreeMap<NodeId, Node>,
    pub derp_map: Option<DerpMap>,
    pub dns_config: Option<DnsConfig>,
    /// The tailnet name; empty until control sends one.
    pub domain: String,
    /// The effective packet filter: every named set concatenated in name order. `None`: no
    /// filter received yet; `Some(empty)`: **deny all**.
    pub packet_filter: Option<Vec<FilterRule>>,
    /// The named filter sets behind [`NetMap::packet_filter`] (`"base"` = `PacketFilter`).
    pub packet_filters: BTreeMap<String, Vec<FilterRule>>,
    /// Users, accumulated (control sends new or changed profiles only).
    pub user_profiles: BTreeMap<UserId, UserProfile>,
    /// Control's clock as last reported, to correct key-expiry checks for skew.
    pub control_time: Option<Time>,
}

/// What MagicDNS needs of the netmap besides the peers: control's DNS configuration and our
/// own name and addresses (see [`NetMap::dns_view`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DnsView {
    pub config: DnsConfig,
    /// Our MagicDNS FQDN without its trailing dot; empty if control sent none.
    pub self_name: String,
    pub self_ips: Vec<std::net::IpAddr>,
}

/// A peer as `meshgate status` names it (see [`NetMap::peer_directory`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// The MagicDNS FQDN without its trailing dot (`host.tailnet.example`); empty if control
    /// sent none.
    pub name: String,
    /// Its tailnet addresses (`Addresses`, without prefix length).
    pub tailnet_ips: Vec<std::net::IpAddr>,
    /// `Online` as control last said; `None`: never said.
    pub online: Option<bool>,
    /// Its direct endpoints, in control's order.
    pub endpoints: Vec<std::net::SocketAddr>,
    /// The DERP region it is connected to (`HomeDERP`, or the legacy `DERP` form).
    pub home_derp: Option<u16>,
    /// Its disco key (raw), if it speaks disco.
    pub disco_key: Option<[u8; 32]>,
}

/// Peers by WireGuard public key (raw 32 bytes), as published next to the WireGuard
/// configuration.
pub type PeerDirectory = BTreeMap<[u8; 32], PeerInfo>;

/// What one [`NetMap::apply`] changed. Empty for a keep-alive or a message repeating what we
/// already had.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub self_node: bool,
    /// Peers that were not there before.
    pub peers_added: BTreeSet<NodeId>,
    /// Peers that were there and differ now (replaced or patched).
    pub peers_changed: BTreeSet<NodeId>,
    pub peers_removed: BTreeSet<NodeId>,
    pub derp_map: bool,
    pub dns_config: bool,
    pub domain: bool,
    pub packet_filter: bool,
    pub user_profiles: bool,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        *self == Changes::default()
    }

    /// Whether peers were added, changed or removed.
    pub fn peers(&self) -> bool {
        !(self.peers_added.is_empty()
            && self.peers_changed.is_empty()
            && self.peers_removed.is_empty())
    }
}

impl NetMap {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one map-stream message, with `now` = [`Time::now`] for `PeerSeenChange`.
    pub fn apply(&mut self, resp: MapResponse) -> Changes {
        self.apply_at(resp, Time::now())
    }

    /// Applies one map-stream message; `now` is what `PeerSeenChange: {id: true}` sets
    /// `LastSeen` to.
    ///
    /// Rules (reference §5.6, ts:control/controlclient/map.go):
    /// - `Node`, `DERPMap`, `DNSConfig`: `None` = unchanged, else replaced whole;
    ///   `Domain`: empty = unchanged.
    /// - `Peers` (`Some`, even empty): the complete list; the delta fields are then ignored.
    /// - Otherwise, in this order: `PeersRemoved` deletes, `PeersChanged` adds or replaces
    ///   whole, `PeerSeenChange` sets `LastSeen` to `now` (true) or clears it (false),
    ///   `OnlineChange` sets `Online`, `PeersChangedPatch` sets only the fields present.
    ///   Changes and patches naming unknown peers are ignored.
    /// - Filters: `PacketFilters["*"] = null` first clears every set; then `PacketFilter`
    ///   (`Some`) becomes the set `"base"`; then each other `PacketFilters` entry sets
    ///   (`Some`) or deletes (`null`) its set. The effective filter is all sets concatenated
    ///   in name order; `Some(empty)` is deny-all.
    /// - `UserProfiles` add or replace by ID; a keep-alive changes nothing.
    pub fn apply_at(&mut self, resp: MapResponse, now: Time) -> Changes {
        let mut changes = Changes::default();
        if resp.is_keep_alive_only() {
            return changes;
        }
        if let Some(node) = resp.node {
            changes.self_node = replace(&mut self.self_node, Some(node));
        }
        if let Some(derp_map) = resp.derp_map {
            changes.derp_map = replace(&mut self.derp_map, Some(derp_map));
        }
        if let Some(dns) = resp.dns_config {
            changes.dns_config = replace(&mut self.dns_config, Some(dns));
        }
        if !resp.domain.is_empty() {
            changes.domain = replace(&mut self.domain, resp.domain);
        }
        if let Some(t) = resp.control_time {
            self.control_time = Some(t);
        }
        for profile in resp.user_profiles {
            changes.user_profiles |= self.user_profiles.get(&profile.id) != Some(&profile);
            self.user_profiles.insert(profile.id, profile);
        }
        changes.packet_filter = self.apply_filters(resp.packet_filter, resp.packet_filters);

        if let Some(peers) = resp.peers {
            self.replace_peers(peers, &mut changes);
            return changes;
        }
        for id in resp.peers_removed {
            if self.peers.remove(&id).is_some() {
                changes.peers_removed.insert(id);
                changes.peers_added.remove(&id);
                changes.peers_changed.remove(&id);
            }
        }
        for node in resp.peers_changed {
            let id = node.id;
            match self.peers.insert(id, node) {
                None => {
                    changes.peers_added.insert(id);
                    changes.peers_removed.remove(&id);
                }
                Some(old) if Some(&old) != self.peers.get(&id) => {
                    if !changes.peers_added.contains(&id) {
                        changes.peers_changed.insert(id);
                    }
                }
                Some(_) => {}
            }
        }
        for (id, seen) in resp.peer_seen_change {
            let last_seen = seen.then_some(now);
            self.modify_peer(id, &mut changes, |p| p.last_seen = last_seen);
        }
        for (id, online) in resp.online_change {
            self.modify_peer(id, &mut changes, |p| p.online = Some(online));
        }
        for patch in resp.peers_changed_patch {
            let id = patch.node_id;
            self.modify_peer(id, &mut changes, |p| apply_patch(p, patch));
        }
        changes
    }

    /// Our own addresses, from the self node.
    pub fn self_addresses(&self) -> &[ipnet::IpNet] {
        self.self_node
            .as_ref()
            .map_or(&[][..], |n| n.addresses.as_slice())
    }

    /// What `meshgate status` shows about each peer, by WireGuard public key (32 bytes).
    /// `None` until control sent a DNS configuration.
    pub fn dns_view(&self) -> Option<DnsView> {
        let config = self.dns_config.clone()?;
        let (self_name, self_ips) = self
            .self_node
            .as_ref()
            .map(|n| {
                (
                    n.name.trim_end_matches('.').to_owned(),
                    n.addresses.iter().map(ipnet::IpNet::addr).collect(),
                )
            })
            .unwrap_or_default();
        Some(DnsView {
            config,
            self_name,
            self_ips,
        })
    }

    pub fn peer_directory(&self) -> PeerDirectory {
        self.peers
            .values()
            .filter(|p| !p.key.is_zero())
            .map(|p| {
                (
                    *p.key.as_bytes(),
                    PeerInfo {
                        name: p.name.trim_end_matches('.').to_owned(),
                        tailnet_ips: p.addresses.iter().map(ipnet::IpNet::addr).collect(),
                        online: p.online,
                        endpoints: p.endpoints.clone(),
                        home_derp: p.home_derp_region().and_then(|r| u16::try_from(r).ok()),
                        disco_key: (!p.disco_key.is_zero()).then(|| *p.disco_key.as_bytes()),
                    },
                )
            })
            .collect()
    }

    fn replace_peers(&mut self, peers: Vec<Node>, changes: &mut Changes) {
        let mut new: BTreeMap<NodeId, Node> = BTreeMap::new();
        for node in peers {
            new.insert(node.id, node);
        }
        for (id, node) in &new {
            match self.peers.get(id) {
                None => {
                    changes.peers_added.insert(*id);
                }
                Some(old) if old != node => {
                    changes.peers_changed.insert(*id);
                }
                Some(_) => {}
            }
        }
        for id in self.peers.keys() {
            if !new.contains_key(id) {
                changes.peers_removed.insert(*id);
            }
        }
        self.peers = new;
    }

    /// Runs `f` on a known peer and records a change if it made one; unknown IDs are ignored.
    fn modify_peer(&mut self, id: NodeId, changes: &mut Changes, f: impl FnOnce(&mut Node)) {
        let Some(peer) = self.peers.get_mut(&id) else {
            tracing::debug!(node = id, "map delta for an unknown peer ignored");
            return;
        };
        let before = peer.clone();
        f(peer);
        if *peer != before && !changes.peers_added.contains(&id) {
            changes.peers_changed.insert(id);
        }
    }

    fn apply_filters(
        &mut self,
        base: Option<Vec<FilterRule>>,
        named: Option<BTreeMap<String, Option<Vec<FilterRule>>>>,
    ) -> bool {
        if base.is_none() && named.is_none() {
            return false;
        }
        let mut named = named.unwrap_or_default();
        if let Some(None) = named.get("*") {
            named.remove("*");
            self.packet_filters.clear();
        }
        if let Some(rules) = base {
            self.packet_filters.insert(BASE_FILTER.to_owned(), rules);
        }
        for (name, rules) in named {
            match rules {
                Some(rules) => {
                    self.packet_filters.insert(name, rules);
                }
                None => {
                    self.packet_filters.remove(&name);
                }
            }
        }
        let effective: Vec<FilterRule> = self.packet_filters.values().flatten().cloned().collect();
        replace(&mut self.packet_filter, Some(effective))
    }
}

/// Sets `slot` to `value`; returns whether it differed.
fn replace<T: PartialEq>(slot: &mut T, value: T) -> bool {
    let changed = *slot != value;
    *slot = value;
    changed
}

/// Sets the fields a `PeerChange` carries; the others stay.
fn apply_patch(peer: &mut Node, patch: PeerChange) {
    if patch.derp_region != 0 {
        peer.home_derp = patch.derp_region;
    }
    if patch.cap != 0 {
        peer.cap = patch.cap;
    }
    if let Some(cap_map) = patch.cap_map {
        peer.cap_map = cap_map;
    }
    if let Some(endpoints) = patch.endpoints {
        peer.endpoints = endpoints;
    }
    if let Some(key) = patch.key {
        peer.key = key;
    }
    if !patch.key_signature.is_empty() {
        peer.key_signature = patch.key_signature;
    }
    if let Some(disco) = patch.disco_key {
        peer.disco_key = disco;
    }
    if let Some(online) = patch.online {
        peer.online = Some(online);
    }
    if let Some(last_seen) = patch.last_seen {
        peer.last_seen = Some(last_seen);
    }
    if let Some(expiry) = patch.key_expiry {
        peer.key_expiry = expiry;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_tailcfg::{DiscoPublic, NodePublic};
    use std::net::SocketAddr;

    fn node(id: NodeId) -> Node {
        Node {
            id,
            name: format!("n{id}.example.ts.net."),
            key: NodePublic::from_bytes([id as u8; 32]),
            addresses: vec![format!("100.64.0.{id}/32").parse().unwrap()],
            ..Node::default()
        }
    }

    fn ep(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn rule(src: &str) -> FilterRule {
        FilterRule {
            src_ips: vec![src.to_owned()],
            ..FilterRule::default()
        }
    }

    fn full(ids: &[NodeId]) -> MapResponse {
        MapResponse {
            node: Some(node(100)),
            peers: Some(ids.iter().map(|i| node(*i)).collect()),
            ..MapResponse::default()
        }
    }

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn full_peer_list_replaces_and_reports_the_difference() {
        let mut nm = NetMap::new();
        let c = nm.apply(full(&[1, 2, 3]));
        assert!(c.self_node);
        assert_eq!(c.peers_added, set(&[1, 2, 3]));
        assert_eq!(nm.self_node, Some(node(100)));

        let mut two = node(2);
        two.endpoints = vec![ep("192.0.2.2:41641")];
        let c = nm.apply(MapResponse {
            peers: Some(vec![node(4), two.clone(), node(1)]),
            ..MapResponse::default()
        });
        assert!(!c.self_node);
        assert_eq!(c.peers_added, set(&[4]));
        assert_eq!(c.peers_changed, set(&[2]));
        assert_eq!(c.peers_removed, set(&[3]));
        assert_eq!(nm.peers.keys().copied().collect::<Vec<_>>(), vec![1, 2, 4]);
        assert_eq!(nm.peers[&2], two);
    }

    #[test]
    fn full_peer_list_ignores_delta_fields() {
        let mut nm = NetMap::new();
        nm.apply(full(&[1, 2]));
        let c = nm.apply(MapResponse {
            peers: Some(vec![node(1), node(2)]),
            peers_changed: vec![node(9)],
            peers_removed: vec![1],
            peers_changed_patch: vec![PeerChange {
                node_id: 2,
                online: Some(true),
                ..PeerChange::default()
            }],
            online_change: [(1, true)].into(),
            peer_seen_change: [(2, true)].into(),
            ..MapResponse::default()
        });
        assert!(c.is_empty(), "{c:?}");
        assert_eq!(nm.peers.keys().copied().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(nm.peers[&2].online, None);
        assert_eq!(nm.peers[&1].online, None);
    }

    #[test]
    fn empty_full_list_removes_all_peers() {
        let mut nm = NetMap::new();
        nm.apply(full(&[1, 2]));
        let c = nm.apply(MapResponse {
            peers: Some(vec![]),
            ..MapResponse::default()
        });
        assert_eq!(c.peers_removed, set(&[1, 2]));
        assert!(nm.peers.is_empty());
    }

    #[test]
    fn peers_changed_adds_and_replaces_whole() {
        let mut nm = NetMap::new();
        let mut one = node(1);
        one.online = Some(true);
        one.endpoints = vec![ep("192.0.2.1:1")];
        nm.apply(MapResponse {
            peers: Some(vec![one, node(2)]),
            ..MapResponse::default()
        });
        let c = nm.apply(MapResponse {
            peers_changed: vec![node(1), node(3), node(2)],
            ..MapResponse::default()
        });
        assert_eq!(c.peers_added, set(&[3]));
        assert_eq!(c.peers_changed, set(&[1]));
        assert!(c.peers_removed.is_empty());
        // Replaced whole: the fields the new node lacks are gone.
        assert_eq!(nm.peers[&1], node(1));
        assert_eq!(nm.peers.len(), 3);
    }

    #[test]
    fn peers_removed_deletes_and_ignores_unknown() {
        let mut nm = NetMap::new();
        nm.apply(full(&[1, 2, 3]));
        let c = nm.apply(MapResponse {
            peers_removed: vec![2, 42],
            ..MapResponse::default()
        });
        assert_eq!(c.peers_removed, set(&[2]));
        assert_eq!(nm.peers.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
    }

    #[test]
    fn removed_then_changed_in_one_message_keeps_the_new_node() {
        let mut nm = NetMap::new();
        nm.apply(full(&[1]));
        let mut new1 = node(1);
        new1.name = "renamed.".into();
        let c = nm.apply(MapResponse {
            peers_removed: vec![1],
            peers_changed: vec![new1.clone()],
            ..MapResponse::default()
        });
        assert_eq!(nm.peers[&1], new1);
        assert_eq!(c.peers_added, set(&[1]));
        assert!(c.peers_removed.is_empty());
    }

    #[test]
    fn patch_sets_only_present_fields() {
        let mut nm = NetMap::new();
        let mut one = node(1);
        one.endpoints = vec![ep("192.0.2.1:1")];
        one.home_derp = 3;
        one.cap = 100;
        one.online = Some(false);
        nm.apply(MapResponse {
            peers: Some(vec![one.clone(), node(2)]),
            ..MapResponse::default()
        });

        // Only endpoints.
        let c = nm.apply(MapResponse {
            peers_changed_patch: vec![PeerChange {
                node_id: 1,
                endpoints: Some(vec![ep("198.51.100.1:41641"), ep("[2001:db8::1]:41641")]),
                ..PeerChange::default()
            }],
            ..MapResponse::default()
        });
        assert_eq!(c.peers_changed, set(&[1]));
        let p = &nm.peers[&1];
        assert_eq!(p.endpoints.len(), 2);
        assert_eq!((p.home_derp, p.cap, p.online), (3, 100, Some(false)));
        assert_eq!(p.key, one.key);

        // Everything else.
        let key = NodePublic::from_bytes([0xaa; 32]);
        let disco = DiscoPublic::from_bytes([0xbb; 32]);
        let seen = Time::from_unix(1_700_000_000, 0);
        let expiry = Time::from_unix(1_800_000_000, 0);
        nm.apply(MapResponse {
            peers_changed_patch: vec![PeerChange {
                node_id: 1,
                derp_region: 7,
                cap: 130,
                cap_map: Some([("cap/x".to_owned(), serde_json::Value::Null)].into()),
                key: Some(key),
                key_signature: "c2ln".into(),
                disco_key: Some(disco),
                online: Some(true),
                last_seen: Some(seen),
                key_expiry: Some(expiry),
                ..PeerChange::default()
            }],
            ..MapResponse::default()
        });
        let p = &nm.peers[&1];
        assert_eq!(p.home_derp_region(), Some(7));
        assert_eq!(p.cap, 130);
        assert!(p.cap_map.contains_key("cap/x"));
        assert_eq!(p.key, key);
        assert_eq!(p.key_signature, "c2ln");
        assert_eq!(p.disco_key, disco);
        assert_eq!(p.online, Some(true));
        assert_eq!(p.last_seen, Some(seen));
        assert_eq!(p.key_expiry, expiry);
        assert_eq!(p.endpoints.len(), 2, "untouched by the second patch");
        assert_eq!(p.addresses, one.addresses);
        assert_eq!(nm.peers[&2], node(2), "other peers untouched");

        // An explicit empty endpoint list clears; a patch for an unknown node is ignored.
        let c = nm.apply(MapResponse {
            peers_changed_patch: vec![
                PeerChange {
                    node_id: 1,
                    endpoints: Some(vec![]),
                    ..PeerChange::default()
                },
                PeerChange {
                    node_id: 99,
                    online: Some(true),
                    ..PeerChange::default()
                },
            ],
            ..MapResponse::default()
        });
        assert!(nm.peers[&1].endpoints.is_empty());
        assert_eq!(c.peers_changed, set(&[1]));
        assert!(!nm.peers.contains_key(&99));
    }

    #[test]
    fn seen_and_online_changes() {
        let mut nm = NetMap::new();
        nm.apply(full(&[1, 2]));
        let now = Time::from_unix(1_750_000_000, 5);
        let c = nm.apply_at(
            MapResponse {
                peer_seen_change: [(1, true), (2, false), (7, true)].into(),
                online_change: [(2, true), (8, false)].into(),
                ..MapResponse::default()
            },
            now,
        );
        assert_eq!(nm.peers[&1].last_seen, Some(now));
        assert_eq!(nm.peers[&2].last_seen, None);
        assert_eq!(nm.peers[&2].online, Some(true));
        assert_eq!(nm.peers[&1].online, None);
        // Peer 2's LastSeen was already unset: only its online flag changed it.
        assert_eq!(c.peers_changed, set(&[1, 2]));
        let c = nm.apply_at(
            MapResponse {
                peer_seen_change: [(1, false)].into(),
                online_change: [(2, false)].into(),
                ..MapResponse::default()
            },
            now,
        );
        assert_eq!(nm.peers[&1].last_seen, None);
        assert_eq!(nm.peers[&2].online, Some(false));
        assert_eq!(c.peers_changed, set(&[1, 2]));
    }

    #[test]
    fn absent_fields_leave_derp_dns_node_domain_unchanged() {
        let mut nm = NetMap::new();
        let derp = DerpMap::default();
        let dns = DnsConfig {
            domains: vec!["example.ts.net".into()],
            ..DnsConfig::default()
        };
        let c = nm.apply(MapResponse {
            node: Some(node(100)),
            derp_map: Some(derp.clone()),
            dns_config: Some(dns.clone()),
            domain: "example.ts.net".into(),
            ..MapResponse::default()
        });
        assert!(c.self_node && c.derp_map && c.dns_config && c.domain);
        let c = nm.apply(MapResponse {
            peers_changed: vec![node(1)],
            ..MapResponse::default()
        });
        assert!(!(c.self_node || c.derp_map || c.dns_config || c.domain));
        assert_eq!(nm.self_node, Some(node(100)));
        assert_eq!(nm.derp_map, Some(derp));
        assert_eq!(nm.dns_config, Some(dns));
        assert_eq!(nm.domain, "example.ts.net");

        // Present: replaced whole.
        let mut me = node(100);
        me.addresses.push("fd7a:115c:a1e0::64/128".parse().unwrap());
        let c = nm.apply(MapResponse {
            node: Some(me.clone()),
            dns_config: Some(DnsConfig::default()),
            domain: "other.ts.net".into(),
            ..MapResponse::default()
        });
        assert!(c.self_node && c.dns_config && c.domain && !c.derp_map);
        assert_eq!(nm.self_node, Some(me));
        assert_eq!(nm.dns_config, Some(DnsConfig::default()));
        assert_eq!(nm.domain, "other.ts.net");
        assert_eq!(nm.self_addresses().len(), 2);
    }

    #[test]
    fn packet_filter_nil_unchanged_empty_denies_all() {
        let mut nm = NetMap::new();
        assert_eq!(nm.packet_filter, None);
        let c = nm.apply(MapResponse {
            packet_filter: Some(vec![rule("*")]),
            ..MapResponse::default()
        });
        assert!(c.packet_filter);
        assert_eq!(nm.packet_filter, Some(vec![rule("*")]));

        let c = nm.apply(MapResponse {
            peers_changed: vec![node(1)],
            ..MapResponse::default()
        });
        assert!(!c.packet_filter);
        assert_eq!(nm.packet_filter, Some(vec![rule("*")]));

        let c = nm.apply(MapResponse {
            packet_filter: Some(vec![]),
            ..MapResponse::default()
        });
        assert!(c.packet_filter);
        assert_eq!(nm.packet_filter, Some(vec![]), "deny all, not unchanged");
    }

    #[test]
    fn packet_filters_map_semantics() {
        let mut nm = NetMap::new();
        nm.apply(MapResponse {
            packet_filter: Some(vec![rule("100.64.0.1")]),
            packet_filters: Some(
                [
                    ("b-extra".to_owned(), Some(vec![rule("100.64.0.2")])),
                    ("a-first".to_owned(), Some(vec![rule("100.64.0.3")])),
                ]
                .into(),
            ),
            ..MapResponse::default()
        });
        // Concatenated in name order: a-first, b-extra, base.
        assert_eq!(
            nm.packet_filter,
            Some(vec![
                rule("100.64.0.3"),
                rule("100.64.0.2"),
                rule("100.64.0.1")
            ])
        );

        // A null value deletes one set; "base" in the map is PacketFilter.
        let c = nm.apply(MapResponse {
            packet_filters: Some(
                [
                    ("b-extra".to_owned(), None),
                    ("base".to_owned(), Some(vec![rule("100.64.0.9")])),
                ]
                .into(),
            ),
            ..MapResponse::default()
        });
        assert!(c.packet_filter);
        assert_eq!(
            nm.packet_filter,
            Some(vec![rule("100.64.0.3"), rule("100.64.0.9")])
        );

        // "*": null clears everything before the other entries apply.
        nm.apply(MapResponse {
            packet_filters: Some(
                [
                    ("*".to_owned(), None),
                    ("c".to_owned(), Some(vec![rule("10.0.0.1")])),
                ]
                .into(),
            ),
            ..MapResponse::default()
        });
        assert_eq!(nm.packet_filter, Some(vec![rule("10.0.0.1")]));
        assert_eq!(nm.packet_filters.keys().collect::<Vec<_>>(), vec!["c"]);

        // Clearing all leaves an empty effective filter: deny all.
        let c = nm.apply(MapResponse {
            packet_filters: Some([("*".to_owned(), None)].into()),
            ..MapResponse::default()
        });
        assert!(c.packet_filter);
        assert_eq!(nm.packet_filter, Some(vec![]));
    }

    #[test]
    fn user_profiles_accumulate() {
        let mut nm = NetMap::new();
        let alice = UserProfile {
            id: 1,
            login_name: "alice@example.com".into(),
            ..UserProfile::default()
        };
        let bob = UserProfile {
            id: 2,
            login_name: "bob@example.com".into(),
            ..UserProfile::default()
        };
        assert!(
            nm.apply(MapResponse {
                user_profiles: vec![alice.clone()],
                ..MapResponse::default()
            })
            .user_profiles
        );
        assert!(
            nm.apply(MapResponse {
                user_profiles: vec![bob.clone(), alice.clone()],
                ..MapResponse::default()
            })
            .user_profiles
        );
        assert_eq!(nm.user_profiles.len(), 2);
        assert!(
            !nm.apply(MapResponse {
                user_profiles: vec![bob],
                ..MapResponse::default()
            })
            .user_profiles
        );
    }

    #[test]
    fn keep_alive_changes_nothing() {
        let mut nm = NetMap::new();
        nm.apply(full(&[1, 2]));
        let before = nm.clone();
        let c = nm.apply(MapResponse::keep_alive());
        assert!(c.is_empty());
        assert_eq!(nm, before);
        let c = nm.apply(MapResponse::default());
        assert!(c.is_empty());
        assert_eq!(nm, before);
    }

    #[test]
    fn decoded_json_delta_applies() {
        // The same rules from wire JSON, as Go sends it (nulls included).
        let mut nm = NetMap::new();
        nm.apply(full(&[1, 2]));
        let json = r#"{"PeersRemoved":[2],"PeersChanged":null,"PacketFilter":null,
            "PeersChangedPatch":[{"NodeID":1,"Endpoints":["192.0.2.7:41641"],"Online":true}]}"#;
        let resp: MapResponse = serde_json::from_str(json).unwrap();
        let c = nm.apply(resp);
        assert_eq!(c.peers_removed, set(&[2]));
        assert_eq!(c.peers_changed, set(&[1]));
        assert!(!c.packet_filter);
        assert_eq!(nm.peers[&1].endpoints, vec![ep("192.0.2.7:41641")]);
        assert_eq!(nm.peers[&1].online, Some(true));
    }

    #[test]
    fn peer_directory_names_without_trailing_dot() {
        let mut nm = NetMap::new();
        let mut a = node(1);
        a.online = Some(true);
        let mut keyless = node(2);
        keyless.key = Default::default();
        nm.apply(MapResponse {
            peers: Some(vec![a.clone(), keyless]),
            ..MapResponse::default()
        });
        let dir = nm.peer_directory();
        assert_eq!(dir.len(), 1);
        let info = &dir[a.key.as_bytes()];
        assert_eq!(info.name, "n1.example.ts.net");
        assert_eq!(
            info.tailnet_ips,
            ["100.64.0.1".parse::<std::net::IpAddr>().unwrap()]
        );
        assert_eq!(info.online, Some(true));
    }
}
