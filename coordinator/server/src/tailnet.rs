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
    DerpMap, DiscoPublic, DnsConfig, Hostinfo, MapResponse, Node, NodeId, PeerChange, Resolver,
    Time, UserProfile,
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
    /// Each record as `tailcfg::Node`, built once per snapshot (every map clones from here
    /// instead of re-deriving names and re-parsing Hostinfo per stream).
    nodes: Vec<Node>,
    index: HashMap<NodeId, usize>,
    /// The primary router of every subnet prefix, as of this snapshot.
    primaries: Primaries,
    now: SystemTime,
}

impl Snapshot {
    /// `records` in any order (they are sorted by node id). Primaries are chosen as if there
    /// had been none before (see [`Snapshot::after`]).
    pub fn new(tailnet: Arc<Tailnet>, records: Vec<NodeRecord>, now: SystemTime) -> Snapshot {
        Snapshot::after(&Primaries::new(), tailnet, records, now)
    }

    /// Like [`Snapshot::new`], choosing each subnet's primary router from `previous` (the
    /// primaries of the last snapshot) with [`choose_primaries`], so a primary is kept while
    /// it is online.
    pub fn after(
        previous: &Primaries,
        tailnet: Arc<Tailnet>,
        mut records: Vec<NodeRecord>,
        now: SystemTime,
    ) -> Snapshot {
        records.sort_by_key(|r| r.node.id);
        let candidates: Vec<Candidate> = records.iter().map(|r| r.candidate(now)).collect();
        let primaries = choose_primaries(previous, &candidates);
        let views = records.iter().map(NodeRecord::view).collect();
        let index = records
            .iter()
            .enumerate()
            .map(|(i, r)| (r.node.id, i))
            .collect();
        let nodes = records
            .iter()
            .map(|r| to_tailcfg(&tailnet, r, &primaries, now))
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
        self.index.get(&id).map(|&i| self.nodes[i].clone())
    }

    /// The full map for node `id` (`None` if there is no such node): self `Node`, the peers the
    /// policy lets it see (sorted by id), its packet filter (`Some(vec![])` = deny all), the
    /// DERP map, DNS config, `Domain` and the user profiles of itself and its peers.
    pub fn map_for(&self, id: NodeId) -> Option<MapResponse> {
        let &i = self.index.get(&id)?;
        let me = &self.records[i];
        let view = &self.views[i];
        let policy = &self.tailnet.policy;
        let peers: Vec<Node> = policy
            .visible_peers(view, &self.views)
            .iter()
            .filter_map(|p| self.index.get(p))
            .map(|&j| self.nodes[j].clone())
            .collect();
        let mut profiles = BTreeMap::new();
        for r in std::iter::once(me).chain(peers.iter().filter_map(|p| self.record(p.id))) {
            profiles.entry(r.user.id).or_insert_with(|| UserProfile {
                id: r.user.id,
                login_name: r.user.name.clone(),
                display_name: r.user.name.clone(),
                ..UserProfile::default()
            });
        }
        let dns = &self.tailnet.dns;
        let domain = dns.base_domain.trim_matches('.').to_owned();
        Some(MapResponse {
            node: Some(self.nodes[i].clone()),
            peers: Some(peers),
            packet_filter: Some(policy.filter_for(view, &self.views)),
            derp_map: Some(self.tailnet.derp_map.clone()),
            dns_config: Some(DnsConfig {
                resolvers: dns.resolvers.clone(),
                domains: if domain.is_empty() {
                    Vec::new()
                } else {
                    vec![domain.clone()]
                },
                proxied: dns.magic_dns,
                ..DnsConfig::default()
            }),
            domain,
            user_profiles: profiles.into_values().collect(),
            ..MapResponse::default()
        })
    }
}

/// The delta that takes a client from `old` (the last full map it was sent, with `Peers` set)
/// to `new` (a full map), or `None` if nothing changed:
///
/// - `Node`, `DERPMap`, `DNSConfig`, `Domain`, `PacketFilter` only when they changed
///   (`PacketFilter` as `Some`, so an empty list means deny all);
/// - peers gone: `PeersRemoved`; new peers: `PeersChanged`; a peer that differs only in
///   endpoints, home DERP, online, last seen or disco key: `PeersChangedPatch` with just those
///   fields; any other difference: the whole node in `PeersChanged`;
/// - `UserProfiles`: the new or changed ones.
pub fn diff(old: &MapResponse, new: &MapResponse) -> Option<MapResponse> {
    let mut d = MapResponse::default();
    if new.node != old.node {
        d.node.clone_from(&new.node);
    }
    if new.derp_map != old.derp_map {
        d.derp_map.clone_from(&new.derp_map);
    }
    if new.dns_config != old.dns_config {
        d.dns_config.clone_from(&new.dns_config);
    }
    if new.domain != old.domain {
        d.domain.clone_from(&new.domain);
    }
    if new.packet_filter != old.packet_filter {
        d.packet_filter = Some(new.packet_filter.clone().unwrap_or_default());
    }
    let old_peers: BTreeMap<NodeId, &Node> =
        old.peers.iter().flatten().map(|n| (n.id, n)).collect();
    let new_peers: BTreeMap<NodeId, &Node> =
        new.peers.iter().flatten().map(|n| (n.id, n)).collect();
    d.peers_removed = old_peers
        .keys()
        .filter(|id| !new_peers.contains_key(id))
        .copied()
        .collect();
    for (id, &n) in &new_peers {
        match old_peers.get(id) {
            None => d.peers_changed.push(n.clone()),
            Some(&o) if o == n => {}
            Some(&o) => match patch(o, n) {
                Some(p) => d.peers_changed_patch.push(p),
                None => d.peers_changed.push(n.clone()),
            },
        }
    }
    d.user_profiles = new
        .user_profiles
        .iter()
        .filter(|p| !old.user_profiles.contains(p))
        .cloned()
        .collect();
    (d != MapResponse::default()).then_some(d)
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
mod tests;
