//! The sans-I/O core (DESIGN decision 10): from the tailnet's settings and a snapshot of the
//! store, the map each node gets, and the delta between two maps. No I/O, no clock: `now` is
//! an input.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;
use meshgate_coordinator_store as store;
use meshgate_policy::{NodeView, Policy};
use meshgate_tailcfg::{
    DerpMap, DiscoPublic, DnsConfig, FilterRule, Hostinfo, MapResponse, Node, NodeId, PeerChange,
    Resolver, Time, UserProfile,
};

pub mod primary;

pub use primary::{Candidate, Primaries, choose_primaries, is_exit_route};

/// DNS settings sent to every node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// MagicDNS base domain, without dots at either end (`tailnet.meshgate`): node `gw` is
    /// `gw.tailnet.meshgate.`. Also sent as `Domain` and as the search domain.
    pub base_domain: String,
    /// Whether clients answer MagicDNS names themselves (`DNSConfig.Proxied`).
    pub magic_dns: bool,
    /// Upstream resolvers (`DNSConfig.Resolvers`); empty: the client keeps the host's.
    pub resolvers: Vec<Resolver>,
}

impl Default for DnsSettings {
    fn default() -> Self {
        DnsSettings {
            base_domain: "tailnet.meshgate".into(),
            magic_dns: true,
            resolvers: Vec::new(),
        }
    }
}

/// The tailnet-wide settings a map is computed from.
#[derive(Clone, Debug, Default)]
pub struct Tailnet {
    pub policy: Policy,
    pub derp_map: DerpMap,
    pub dns: DnsSettings,
}

/// One node as the store has it, with its owner and routes.
#[derive(Clone, Debug)]
pub struct NodeRecord {
    pub node: store::Node,
    pub user: store::User,
    pub routes: store::NodeRoutes,
}

impl NodeRecord {
    /// The node's /32 and /128.
    pub fn addresses(&self) -> Vec<IpNet> {
        vec![
            IpNet::new(IpAddr::V4(self.node.ipv4), 32).expect("/32 is valid"),
            IpNet::new(IpAddr::V6(self.node.ipv6), 128).expect("/128 is valid"),
        ]
    }

    /// What the policy knows of this node (approved routes = advertised and approved).
    pub fn view(&self) -> NodeView {
        NodeView {
            id: self.node.id,
            user: self.user.name.clone(),
            tags: self.node.tags.clone(),
            addresses: vec![IpAddr::V4(self.node.ipv4), IpAddr::V6(self.node.ipv6)],
            approved_routes: self.routes.served(),
        }
    }

    /// This node as a primary-router candidate at `now`.
    pub fn candidate(&self, now: SystemTime) -> Candidate {
        Candidate {
            id: self.node.id,
            online: self.node.online,
            expired: self.node.is_expired(now),
            served: self.routes.served(),
        }
    }
}

/// The tailnet at one moment: settings plus every node. Build once per change and share (it
/// is immutable); every stream computes its own map from it.
#[derive(Debug)]
pub struct Snapshot {
    tailnet: Arc<Tailnet>,
    records: Vec<NodeRecord>,
    views: Vec<NodeView>,
    /// Each record as `tailcfg::Node`, built once per snapshot and shared by every map. A node
    /// that did not change since the previous snapshot is the previous snapshot's `Arc`, so a
    /// diff tells it unchanged by pointer instead of comparing it field by field.
    nodes: Vec<Arc<Node>>,
    index: HashMap<NodeId, usize>,
    /// The primary router of every subnet prefix, as of this snapshot.
    primaries: Primaries,
    now: SystemTime,
}

impl Snapshot {
    /// `records` in any order (they are sorted by node id). Primaries are chosen as if there
    /// had been none before (see [`Snapshot::after`]).
    pub fn new(tailnet: Arc<Tailnet>, records: Vec<NodeRecord>, now: SystemTime) -> Snapshot {
        Snapshot::after(None, tailnet, records, now)
    }

    /// Like [`Snapshot::new`], choosing each subnet's primary router from `previous`'s
    /// primaries with [`choose_primaries`], so a primary is kept while it is online, and
    /// sharing `previous`'s nodes where they did not change.
    pub fn after(
        previous: Option<&Snapshot>,
        tailnet: Arc<Tailnet>,
        mut records: Vec<NodeRecord>,
        now: SystemTime,
    ) -> Snapshot {
        records.sort_by_key(|r| r.node.id);
        let candidates: Vec<Candidate> = records.iter().map(|r| r.candidate(now)).collect();
        let no_primaries = Primaries::new();
        let primaries = choose_primaries(
            previous.map_or(&no_primaries, |p| &p.primaries),
            &candidates,
        );
        let views = records.iter().map(NodeRecord::view).collect();
        let index = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.node.id, i))
            .collect();
        let nodes = records
            .iter()
            .map(|r| {
                let node = to_tailcfg(&tailnet, r, &primaries, now);
                match previous.and_then(|p| p.shared_node(node.id)) {
                    Some(same) if **same == node => same.clone(),
                    _ => Arc::new(node),
                }
            })
            .collect();
        Snapshot {
            tailnet,
            records,
            views,
            nodes,
            index,
            primaries,
            now,
        }
    }

    /// The primary router of every subnet prefix (input to the next snapshot's choice).
    pub fn primaries(&self) -> &Primaries {
        &self.primaries
    }

    pub fn tailnet(&self) -> &Arc<Tailnet> {
        &self.tailnet
    }

    pub fn record(&self, id: NodeId) -> Option<&NodeRecord> {
        self.index.get(&id).map(|&i| &self.records[i])
    }

    /// The earliest node key expiry after this snapshot's time (when some map next changes
    /// by the clock alone).
    pub fn next_key_expiry(&self) -> Option<SystemTime> {
        self.records
            .iter()
            .filter_map(|r| r.node.key_expiry)
            .filter(|&t| t > self.now)
            .min()
    }

    /// The node as `tailcfg::Node` (the same form for the node itself and for its peers).
    pub fn node(&self, id: NodeId) -> Option<Node> {
        self.shared_node(id).map(|n| (**n).clone())
    }

    fn shared_node(&self, id: NodeId) -> Option<&Arc<Node>> {
        self.index.get(&id).map(|&i| &self.nodes[i])
    }

    /// The full map for node `id` (`None` if there is no such node): self `Node`, the peers the
    /// policy lets it see (sorted by id), its packet filter (empty = deny all), and the user
    /// profiles of itself and its peers; [`NodeMap::response`] adds the DERP map, DNS config
    /// and `Domain`.
    pub fn map_for(&self, id: NodeId) -> Option<NodeMap> {
        let &i = self.index.get(&id)?;
        let me = &self.records[i];
        let view = &self.views[i];
        let policy = &self.tailnet.policy;
        let visible: Vec<usize> = policy
            .visible_peers(view, &self.views)
            .iter()
            .filter_map(|p| self.index.get(p).copied())
            .collect();
        let mut profiles = BTreeMap::new();
        for r in std::iter::once(me).chain(visible.iter().map(|&j| &self.records[j])) {
            profiles.entry(r.user.id).or_insert_with(|| UserProfile {
                id: r.user.id,
                login_name: r.user.name.clone(),
                display_name: r.user.name.clone(),
                ..UserProfile::default()
            });
        }
        Some(NodeMap {
            tailnet: self.tailnet.clone(),
            node: self.nodes[i].clone(),
            peers: visible.iter().map(|&j| self.nodes[j].clone()).collect(),
            packet_filter: policy.filter_for(view, &self.views),
            user_profiles: profiles.into_values().collect(),
        })
    }
}

/// One node's full map as of a snapshot, holding the snapshot's shared nodes: what a map
/// stream keeps to diff the next map against (pointers, not a copy of every peer).
#[derive(Clone, Debug)]
pub struct NodeMap {
    tailnet: Arc<Tailnet>,
    node: Arc<Node>,
    /// Sorted by id.
    peers: Vec<Arc<Node>>,
    packet_filter: Vec<FilterRule>,
    user_profiles: Vec<UserProfile>,
}

impl NodeMap {
    /// The map as sent in full (the first frame of a stream, or a non-streaming request).
    pub fn response(&self) -> MapResponse {
        let (dns_config, domain) = dns_config(&self.tailnet.dns);
        MapResponse {
            node: Some((*self.node).clone()),
            peers: Some(self.peers.iter().map(|n| (**n).clone()).collect()),
            packet_filter: Some(self.packet_filter.clone()),
            derp_map: Some(self.tailnet.derp_map.clone()),
            dns_config: Some(dns_config),
            domain,
            user_profiles: self.user_profiles.clone(),
            ..MapResponse::default()
        }
    }
}

/// `DNSConfig` and `Domain` as every node gets them.
fn dns_config(dns: &DnsSettings) -> (DnsConfig, String) {
    let domain = dns.base_domain.trim_matches('.').to_owned();
    let config = DnsConfig {
        resolvers: dns.resolvers.clone(),
        domains: if domain.is_empty() {
            Vec::new()
        } else {
            vec![domain.clone()]
        },
        proxied: dns.magic_dns,
        ..DnsConfig::default()
    };
    (config, domain)
}

/// The delta that takes a client from `old` (the last map it was sent) to `new`, or `None` if
/// nothing changed:
///
/// - `Node`, `DERPMap`, `DNSConfig`, `Domain`, `PacketFilter` only when they changed
///   (`PacketFilter` as `Some`, so an empty list means deny all);
/// - peers gone: `PeersRemoved`; new peers: `PeersChanged`; a peer that differs only in
///   endpoints, home DERP, online, last seen or disco key: `PeersChangedPatch` with just those
///   fields; any other difference: the whole node in `PeersChanged`;
/// - `UserProfiles`: the new or changed ones.
pub fn diff(old: &NodeMap, new: &NodeMap) -> Option<MapResponse> {
    let mut d = MapResponse::default();
    if !same_node(&old.node, &new.node) {
        d.node = Some((*new.node).clone());
    }
    if !Arc::ptr_eq(&old.tailnet, &new.tailnet) {
        if new.tailnet.derp_map != old.tailnet.derp_map {
            d.derp_map = Some(new.tailnet.derp_map.clone());
        }
        let (old_dns, old_domain) = dns_config(&old.tailnet.dns);
        let (new_dns, new_domain) = dns_config(&new.tailnet.dns);
        if new_dns != old_dns {
            d.dns_config = Some(new_dns);
        }
        if new_domain != old_domain {
            d.domain = new_domain;
        }
    }
    if new.packet_filter != old.packet_filter {
        d.packet_filter = Some(new.packet_filter.clone());
    }
    diff_peers(&old.peers, &new.peers, &mut d);
    d.user_profiles = new
        .user_profiles
        .iter()
        .filter(|p| !old.user_profiles.contains(p))
        .cloned()
        .collect();
    (d != MapResponse::default()).then_some(d)
}

/// Walks both peer lists (sorted by id) side by side into `d`'s removed, changed and patched
/// peers.
fn diff_peers(old: &[Arc<Node>], new: &[Arc<Node>], d: &mut MapResponse) {
    let (mut o, mut n) = (old.iter().peekable(), new.iter().peekable());
    loop {
        match (o.peek(), n.peek()) {
            (None, None) => break,
            (Some(gone), None) => {
                d.peers_removed.push(gone.id);
                o.next();
            }
            (Some(gone), Some(now)) if gone.id < now.id => {
                d.peers_removed.push(gone.id);
                o.next();
            }
            (None, Some(added)) => {
                d.peers_changed.push(Node::clone(added));
                n.next();
            }
            (Some(was), Some(added)) if added.id < was.id => {
                d.peers_changed.push(Node::clone(added));
                n.next();
            }
            (Some(was), Some(now)) => {
                if !same_node(was, now) {
                    match patch(was, now) {
                        Some(p) => d.peers_changed_patch.push(p),
                        None => d.peers_changed.push(Node::clone(now)),
                    }
                }
                o.next();
                n.next();
            }
        }
    }
}

/// Equal nodes, found by pointer when the snapshot shared an unchanged one.
fn same_node(a: &Arc<Node>, b: &Arc<Node>) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

/// A `PeerChange` taking `old` to `new`, if they differ only in fields a patch can carry.
fn patch(old: &Node, new: &Node) -> Option<PeerChange> {
    let strip = |n: &Node| Node {
        endpoints: Vec::new(),
        home_derp: 0,
        legacy_derp: String::new(),
        online: None,
        last_seen: None,
        disco_key: DiscoPublic::default(),
        ..n.clone()
    };
    if strip(old) != strip(new) || new.legacy_derp != old.legacy_derp {
        return None;
    }
    // A patch cannot say "no home DERP", "online unknown" or "never seen".
    if (new.home_derp == 0 && old.home_derp != 0)
        || (new.online.is_none() && old.online.is_some())
        || (new.last_seen.is_none() && old.last_seen.is_some())
    {
        return None;
    }
    let mut c = PeerChange {
        node_id: new.id,
        ..PeerChange::default()
    };
    if old.endpoints != new.endpoints {
        c.endpoints = Some(new.endpoints.clone());
    }
    if old.home_derp != new.home_derp {
        c.derp_region = new.home_derp;
    }
    if old.online != new.online {
        c.online = new.online;
    }
    if old.last_seen != new.last_seen {
        c.last_seen = new.last_seen;
    }
    if old.disco_key != new.disco_key {
        c.disco_key = Some(new.disco_key);
    }
    Some(c)
}

/// `r` as `tailcfg::Node` at `now` (the same form for the node itself and for its peers).
/// Its `AllowedIPs` and `PrimaryRoutes` carry only the subnet prefixes it is primary for
/// (a secondary router lists them in neither; its Hostinfo still shows what it advertises);
/// served exit routes go in `AllowedIPs` of every exit node.
fn to_tailcfg(tailnet: &Tailnet, r: &NodeRecord, primaries: &Primaries, now: SystemTime) -> Node {
    let n = &r.node;
    let addresses = r.addresses();
    let expired = n.is_expired(now);
    let served = r.routes.served();
    let is_primary = |p: &IpNet| primaries.get(&p.trunc()) == Some(&n.id);
    let mut allowed = addresses.clone();
    allowed.extend(
        served
            .iter()
            .filter(|p| is_primary(p) || (is_exit_route(p) && !expired))
            .copied(),
    );
    let primary_routes: Vec<IpNet> = served.iter().filter(|p| is_primary(p)).copied().collect();
    let hostinfo: Option<Hostinfo> = n
        .hostinfo
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok());
    let home_derp = hostinfo
        .as_ref()
        .and_then(|h| h.net_info.as_ref())
        .map_or(0, |ni| ni.preferred_derp);
    // NetInfo (latencies, NAT details) changes with every netcheck; peers do not need it,
    // and leaving it out keeps such changes from reaching every stream.
    let hostinfo = hostinfo.map(|h| Hostinfo {
        net_info: None,
        ..h
    });
    let domain = tailnet.dns.base_domain.trim_matches('.');
    let name = if domain.is_empty() {
        format!("{}.", n.given_name)
    } else {
        format!("{}.{domain}.", n.given_name)
    };
    Node {
        id: n.id,
        stable_id: n.stable_id.clone(),
        name,
        user: n.user,
        key: n.node_key,
        key_expiry: n.key_expiry.map_or(Time::ZERO, Time::from),
        machine: n.machine_key,
        disco_key: n.disco_key.unwrap_or_default(),
        addresses,
        allowed_ips: Some(allowed),
        endpoints: n.endpoints.clone(),
        home_derp,
        hostinfo,
        created: Time::from(n.created),
        tags: n.tags.clone(),
        primary_routes,
        last_seen: n.last_seen.map(Time::from),
        online: Some(n.online),
        machine_authorized: true,
        expired,
        ..Node::default()
    }
}

/// A placeholder user for a node whose user row is missing (never expected).
pub(crate) fn unknown_user(id: meshgate_tailcfg::UserId) -> store::User {
    store::User {
        id,
        name: String::new(),
        created: UNIX_EPOCH,
    }
}

#[cfg(test)]
mod sequence_tests;
#[cfg(test)]
mod tests;
