//! `/machine/map` bodies (reference §5.6; ts:tailcfg/tailcfg.go `MapRequest`, `MapResponse`).

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::capver::CapabilityVersion;
use crate::derp::{DerpMap, RegionId};
use crate::dns::DnsConfig;
use crate::filter::FilterRule;
use crate::hostinfo::Hostinfo;
use crate::key::{DiscoPublic, NodePublic};
use crate::node::{CapMap, Node, NodeId, UserProfile};
use crate::serde_util::{is_false, is_zero, nullable, opt_ip};
use crate::time::Time;

/// `MapRequest.Compress` value asking for zstd-compressed response bodies.
pub const COMPRESS_ZSTD: &str = "zstd";

/// `POST /machine/map`.
///
/// Long poll: `Stream = true`, `OmitPeers = false`. Since capability version 68 the server
/// ignores `Hostinfo`/`Endpoints` on streaming requests; push those with a separate "lite"
/// request (`Stream = false`, `OmitPeers = true`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MapRequest {
    pub version: CapabilityVersion,
    /// `"zstd"` ([`COMPRESS_ZSTD`]) or empty.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub compress: String,
    /// Whether the client accepts keep-alive messages.
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_alive: bool,
    pub node_key: NodePublic,
    #[serde(default, skip_serializing_if = "DiscoPublic::is_zero")]
    pub disco_key: DiscoPublic,
    #[serde(default, skip_serializing_if = "is_false")]
    pub stream: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostinfo: Option<Hostinfo>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub map_session_handle: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub map_session_seq: i64,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub endpoints: Vec<SocketAddr>,
    /// One [`EndpointType`] value per entry of `Endpoints`.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub endpoint_types: Vec<i32>,
    #[serde(rename = "TKAHead", default, skip_serializing_if = "String::is_empty")]
    pub tka_head: String,
    #[serde(default, skip_serializing_if = "is_false")]
    pub read_only: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub omit_peers: bool,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub debug_flags: Vec<String>,
}

/// How an endpoint was discovered (`MapRequest.EndpointTypes`; reference §3.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i32)]
pub enum EndpointType {
    Unknown = 0,
    Local = 1,
    Stun = 2,
    Portmapped = 3,
    Stun4LocalPort = 4,
    ExplicitConf = 5,
}

impl From<EndpointType> for i32 {
    fn from(t: EndpointType) -> i32 {
        t as i32
    }
}

/// One message of the map stream. Absent fields mean "unchanged" (see each field); a message
/// with only `KeepAlive` is a no-op.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MapResponse {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub map_session_handle: String,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub seq: i64,
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_alive: bool,
    /// The client must answer (by default an HTTP HEAD to `URL`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ping_request: Option<PingRequest>,
    #[serde(
        rename = "PopBrowserURL",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub pop_browser_url: String,
    /// The self node; `None` = unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<Node>,
    /// `None` = unchanged.
    #[serde(rename = "DERPMap", default, skip_serializing_if = "Option::is_none")]
    pub derp_map: Option<DerpMap>,
    /// The complete peer list, sorted by ID. When `Some`, it replaces all peers and the delta
    /// fields (`PeersChanged`, `PeersRemoved`, `PeersChangedPatch`, `PeerSeenChange`,
    /// `OnlineChange`) are ignored. Go omits an empty list, so `Some(empty)` only arises from
    /// servers that mean "no peers" explicitly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<Node>>,
    /// Peers added or replaced whole.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub peers_changed: Vec<Node>,
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub peers_removed: Vec<NodeId>,
    /// Field-level changes to existing peers.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub peers_changed_patch: Vec<PeerChange>,
    /// Node ID → whether `LastSeen` should be set to now (`true`) or cleared (`false`).
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub peer_seen_change: BTreeMap<NodeId, bool>,
    /// Node ID → online.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub online_change: BTreeMap<NodeId, bool>,
    /// `None` = unchanged.
    #[serde(rename = "DNSConfig", default, skip_serializing_if = "Option::is_none")]
    pub dns_config: Option<DnsConfig>,
    /// Tailnet name; empty = unchanged.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    /// `None` (absent or `null`) = unchanged; `Some(vec![])` = **deny all** (serialized as
    /// `[]`, which Go's own `omitempty` type cannot produce). Same as `PacketFilters["base"]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet_filter: Option<Vec<FilterRule>>,
    /// Named rule sets, merged: a `None` (`null`) value deletes that set, and the key `"*"`
    /// with `null` clears all sets before the others apply. `None` = unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub packet_filters: Option<BTreeMap<String, Option<Vec<FilterRule>>>>,
    /// New or changed users only.
    #[serde(
        default,
        deserialize_with = "nullable",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub user_profiles: Vec<UserProfile>,
    /// Control's clock, to adjust key-expiry checks for skew.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control_time: Option<Time>,
    #[serde(
        rename = "DomainDataPlaneAuditLogID",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub domain_data_plane_audit_log_id: String,
}

impl MapResponse {
    /// The keep-alive message, `{"KeepAlive":true}`.
    pub fn keep_alive() -> MapResponse {
        MapResponse {
            keep_alive: true,
            ..MapResponse::default()
        }
    }

    /// Whether the message carries nothing but (possibly) the keep-alive flag.
    pub fn is_keep_alive_only(&self) -> bool {
        *self
            == MapResponse {
                keep_alive: self.keep_alive,
                ..MapResponse::default()
            }
    }
}

/// A field-level change to one existing peer (`MapResponse.PeersChangedPatch`). `None`/empty
/// fields are unchanged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PeerChange {
    #[serde(rename = "NodeID")]
    pub node_id: NodeId,
    #[serde(rename = "DERPRegion", default, skip_serializing_if = "is_zero")]
    pub derp_region: RegionId,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cap: CapabilityVersion,
    /// Replaces the whole `CapMap` when `Some`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_map: Option<CapMap>,
    /// Replaces the whole endpoint list when `Some`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Vec<SocketAddr>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<NodePublic>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub key_signature: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disco_key: Option<DiscoPublic>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub online: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_seen: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_expiry: Option<Time>,
}

/// Control asks the client to prove reachability (`MapResponse.PingRequest`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct PingRequest {
    #[serde(rename = "URL")]
    pub url: String,
    /// Send the request over the Noise connection to control.
    #[serde(rename = "URLIsNoise", default, skip_serializing_if = "is_false")]
    pub url_is_noise: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub log: bool,
    /// `""` (HTTP HEAD to `URL`), `"c2n"`, or a comma list of `disco`, `TSMP`, `ICMP`, `peerapi`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub types: String,
    /// Target of a disco/TSMP/ICMP/peerapi ping (Go sends `""` when unset).
    #[serde(
        rename = "IP",
        default,
        deserialize_with = "opt_ip",
        skip_serializing_if = "Option::is_none"
    )]
    pub ip: Option<IpAddr>,
    /// c2n request body (base64), carried opaquely.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub payload: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostinfo::{NetInfo, Service};
    use crate::map::EndpointType;

    const NK: &str = "nodekey:1111111111111111111111111111111111111111111111111111111111111111";
    const NK2: &str = "nodekey:2222222222222222222222222222222222222222222222222222222222222222";
    const MK: &str = "mkey:3333333333333333333333333333333333333333333333333333333333333333";
    const DK: &str = "discokey:4444444444444444444444444444444444444444444444444444444444444444";

    /// A full first message, shaped like Go's output: nil slices as `null`, zero times, the
    /// legacy `DERP` string, and fields this crate does not model (which must be ignored).
    fn full_fixture() -> String {
        format!(
            r#"{{
  "KeepAlive": false,
  "Node": {{
    "ID": 1, "StableID": "nStable1", "Name": "gw.example.ts.net.", "User": 10,
    "Key": "{NK}", "KeyExpiry": "2027-01-02T03:04:05.5Z", "Machine": "{MK}", "DiscoKey": "{DK}",
    "Addresses": ["100.64.0.1/32", "fd7a:115c:a1e0::1/128"], "AllowedIPs": null,
    "Endpoints": null, "DERP": "127.3.3.40:1", "HomeDERP": 0,
    "Hostinfo": {{"Hostname": "gw", "OS": "linux", "GoVersion": "go1.99", "RoutableIPs": ["10.0.0.0/24"]}},
    "Created": "0001-01-01T00:00:00Z", "Cap": 130, "Tags": null, "PrimaryRoutes": ["10.0.0.0/24"],
    "MachineAuthorized": true, "CapMap": {{"https://tailscale.com/cap/ssh": null, "funnel": [{{"a": 1}}]}},
    "ComputedName": "gw", "SomeFutureNodeField": {{"x": [1, 2]}}
  }},
  "DERPMap": {{
    "HomeParams": {{"RegionScore": {{"1": 0.8}}}},
    "Regions": {{
      "1": {{"RegionID": 1, "RegionCode": "home", "RegionName": "Home", "Nodes": [
        {{"Name": "1a", "RegionID": 1, "HostName": "derp.example.com", "IPv4": "192.0.2.1",
          "IPv6": "none", "STUNPort": -1, "DERPPort": 8443, "CanPort80": true}}]}},
      "900": {{"RegionID": 900, "RegionCode": "relay", "RegionName": "Relay",
               "NoMeasureNoHome": true, "Nodes": null}}
    }},
    "omitDefaultRegions": true
  }},
  "Peers": [{{
    "ID": 2, "StableID": "nStable2", "Name": "pc.example.ts.net.", "User": 11,
    "Key": "{NK2}", "KeyExpiry": "0001-01-01T00:00:00Z",
    "Machine": "mkey:0000000000000000000000000000000000000000000000000000000000000000",
    "DiscoKey": "{DK}", "Addresses": ["100.64.0.2/32"], "AllowedIPs": ["100.64.0.2/32", "192.168.1.0/24"],
    "Endpoints": ["198.51.100.7:41641", "[2001:db8::7]:41641"], "HomeDERP": 1,
    "Hostinfo": null, "Online": true, "LastSeen": "2026-08-22T10:00:00Z", "Expired": false,
    "SelfNodeV4MasqAddrForThisPeer": "100.99.0.1", "IsWireGuardOnly": false
  }}],
  "DNSConfig": {{
    "Resolvers": [{{"Addr": "1.1.1.1"}}, {{"Addr": "https://dns.example/dns-query", "BootstrapResolution": ["192.0.2.53"]}}],
    "Routes": {{"example.ts.net.": null, "corp.example.": [{{"Addr": "10.0.0.53"}}]}},
    "Domains": ["example.ts.net"], "Proxied": true,
    "ExtraRecords": [{{"Name": "db.example.ts.net.", "Value": "100.64.0.9"}}]
  }},
  "Domain": "example.ts.net",
  "PacketFilter": [
    {{"SrcIPs": ["100.64.0.2", "fd7a:115c:a1e0::2"], "DstPorts": [{{"IP": "*", "Ports": {{"First": 22, "Last": 22}}}}], "IPProto": null}}
  ],
  "PacketFilters": {{"base": [{{"SrcIPs": ["*"], "DstPorts": [{{"IP": "100.64.0.1", "Ports": {{"First": 0, "Last": 65535}}}}]}}], "old": null}},
  "UserProfiles": [{{"ID": 10, "LoginName": "alice@example.com", "DisplayName": "Alice", "Roles": []}}],
  "SSHPolicy": {{"rules": []}}, "Health": null, "Debug": {{"Whatever": 1}},
  "ControlTime": "2026-08-22T10:11:12.123456789Z",
  "CollectServices": true, "ClientVersion": {{"RunningLatest": true}}
}}"#
        )
    }

    #[test]
    fn full_response_parses() {
        let m: MapResponse = serde_json::from_str(&full_fixture()).unwrap();
        let node = m.node.as_ref().unwrap();
        assert_eq!(node.id, 1);
        assert_eq!(node.key.to_string(), NK);
        assert_eq!(node.key_expiry.to_string(), "2027-01-02T03:04:05.5Z");
        assert!(node.created.is_zero());
        assert_eq!(node.allowed_ips, None, "null AllowedIPs = Addresses");
        assert_eq!(node.allowed_ips(), &node.addresses[..]);
        assert!(node.endpoints.is_empty());
        assert_eq!(
            node.home_derp_region(),
            Some(1),
            "from the legacy DERP string"
        );
        assert_eq!(node.cap, 130);
        let hi = node.hostinfo.as_ref().unwrap();
        assert_eq!(
            (hi.os.as_str(), hi.routable_ips[0].to_string().as_str()),
            ("linux", "10.0.0.0/24")
        );
        assert_eq!(node.cap_map.len(), 2);
        assert!(node.machine_authorized);

        let peer = &m.peers.as_ref().unwrap()[0];
        assert!(peer.key_expiry.is_zero());
        assert!(peer.machine.is_zero());
        assert_eq!(peer.allowed_ips().len(), 2);
        assert_eq!(peer.endpoints[1], "[2001:db8::7]:41641".parse().unwrap());
        assert_eq!(peer.home_derp_region(), Some(1));
        assert_eq!(peer.online, Some(true));
        assert_eq!(peer.last_seen.unwrap().to_string(), "2026-08-22T10:00:00Z");
        assert_eq!(
            peer.self_node_v4_masq_addr_for_this_peer,
            Some("100.99.0.1".parse().unwrap())
        );

        let derp = m.derp_map.as_ref().unwrap();
        assert!(derp.omit_default_regions);
        assert_eq!(derp.home_params.as_ref().unwrap().region_score[&1], 0.8);
        let n = &derp.regions[&1].nodes[0];
        assert_eq!(
            (n.effective_stun_port(), n.effective_derp_port()),
            (None, 8443)
        );
        assert!(derp.regions[&900].nodes.is_empty() && derp.regions[&900].no_measure_no_home);

        let dns = m.dns_config.as_ref().unwrap();
        assert!(dns.proxied);
        assert!(dns.routes["example.ts.net."].is_empty());
        assert_eq!(dns.routes["corp.example."][0].addr, "10.0.0.53");
        assert_eq!(dns.resolvers[1].bootstrap_resolution.len(), 1);
        assert_eq!(dns.extra_records[0].r#type, "");

        let pf = m.packet_filter.as_ref().unwrap();
        assert_eq!(pf[0].dst_ports[0].ports.first, 22);
        assert!(pf[0].ip_proto.is_empty());
        let pfs = m.packet_filters.as_ref().unwrap();
        assert!(pfs["base"].is_some() && pfs["old"].is_none());
        assert_eq!(m.user_profiles[0].login_name, "alice@example.com");
        assert_eq!(m.control_time.unwrap().subsec_nanos(), 123_456_789);
        assert_eq!(m.domain, "example.ts.net");
        assert!(!m.keep_alive);
    }

    #[test]
    fn full_response_round_trips_with_go_names() {
        let m: MapResponse = serde_json::from_str(&full_fixture()).unwrap();
        let out = serde_json::to_string(&m).unwrap();
        for name in [
            r#""Node":{"ID":1,"StableID":"nStable1""#,
            r#""DERPMap":{"#,
            r#""omitDefaultRegions":true"#,
            r#""RegionID":1"#,
            r#""IPv6":"none""#,
            r#""STUNPort":-1"#,
            r#""DERPPort":8443"#,
            r#""CanPort80":true"#,
            r#""NoMeasureNoHome":true"#,
            r#""DNSConfig":{"#,
            r#""PacketFilter":[{"SrcIPs":["100.64.0.2""#,
            r#""PacketFilters":{"base":[{"#,
            r#""old":null"#,
            r#""UserProfiles":[{"ID":10"#,
            r#""AllowedIPs":["100.64.0.2/32","192.168.1.0/24"]"#,
            r#""Endpoints":["198.51.100.7:41641","[2001:db8::7]:41641"]"#,
            r#""HomeDERP":1"#,
            r#""DERP":"127.3.3.40:1""#,
            r#""SelfNodeV4MasqAddrForThisPeer":"100.99.0.1""#,
            r#""KeyExpiry":"0001-01-01T00:00:00Z""#,
            r#""ControlTime":"2026-08-22T10:11:12.123456789Z""#,
            r#""MachineAuthorized":true"#,
            r#""RoutableIPs":["10.0.0.0/24"]"#,
        ] {
            assert!(out.contains(name), "{name} missing in {out}");
        }
        for absent in [
            "KeepAlive",
            "SSHPolicy",
            "ComputedName",
            "SomeFutureNodeField",
            "\"Tags\"",
            "Health",
            "null,",
        ] {
            assert!(!out.contains(absent), "{absent} in {out}");
        }
        let back: MapResponse = serde_json::from_str(&out).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn delta_message() {
        let json = format!(
            r#"{{"Seq": 3, "MapSessionHandle": "h1",
                "PeersChanged": [{{"ID": 5, "Key": "{NK2}", "Addresses": ["100.64.0.5/32"], "KeyExpiry": "0001-01-01T00:00:00Z"}}],
                "PeersRemoved": [2, 3],
                "PeersChangedPatch": [
                    {{"NodeID": 4, "DERPRegion": 2, "Endpoints": ["192.0.2.4:41641"], "Online": false}},
                    {{"NodeID": 6, "Key": "{NK}", "DiscoKey": "{DK}", "LastSeen": "2026-08-22T10:00:00Z", "Cap": 140, "CapMap": {{}}}}
                ],
                "PeerSeenChange": {{"7": true, "8": false}},
                "OnlineChange": {{"9": true}},
                "PingRequest": {{"URL": "https://control/ping/abc", "URLIsNoise": true, "IP": ""}}
            }}"#
        );
        let m: MapResponse = serde_json::from_str(&json).unwrap();
        assert_eq!((m.seq, m.map_session_handle.as_str()), (3, "h1"));
        assert!(m.peers.is_none() && m.node.is_none() && m.derp_map.is_none());
        assert!(m.packet_filter.is_none() && m.dns_config.is_none());
        assert_eq!(m.peers_changed[0].id, 5);
        assert_eq!(m.peers_removed, vec![2, 3]);
        let p = &m.peers_changed_patch;
        assert_eq!(p[0].derp_region, 2);
        assert_eq!(p[0].online, Some(false));
        assert_eq!(p[0].endpoints.as_ref().unwrap().len(), 1);
        assert!(p[0].key.is_none() && p[0].cap_map.is_none());
        assert_eq!(p[1].key.unwrap().to_string(), NK);
        assert_eq!(p[1].cap, 140);
        assert_eq!(
            p[1].cap_map,
            Some(CapMap::new()),
            "empty CapMap replaces, unlike absent"
        );
        assert!(m.peer_seen_change[&7]);
        assert!(!m.peer_seen_change[&8]);
        assert!(m.online_change[&9]);
        let ping = m.ping_request.as_ref().unwrap();
        assert!(ping.url_is_noise && ping.ip.is_none());

        let out = serde_json::to_string(&m).unwrap();
        assert!(
            out.contains(r#""PeerSeenChange":{"7":true,"8":false}"#),
            "{out}"
        );
        assert!(out.contains(r#""PeersChangedPatch":[{"NodeID":4,"DERPRegion":2,"Endpoints":["192.0.2.4:41641"],"Online":false}"#), "{out}");
        assert!(out.contains(r#""CapMap":{}"#), "{out}");
        assert!(!out.contains(r#""IP""#), "{out}");
        assert_eq!(serde_json::from_str::<MapResponse>(&out).unwrap(), m);
    }

    #[test]
    fn packet_filter_nil_vs_empty() {
        let absent: MapResponse = serde_json::from_str("{}").unwrap();
        let null: MapResponse = serde_json::from_str(r#"{"PacketFilter":null}"#).unwrap();
        let empty: MapResponse = serde_json::from_str(r#"{"PacketFilter":[]}"#).unwrap();
        assert_eq!(absent.packet_filter, None, "absent = unchanged");
        assert_eq!(null.packet_filter, None, "null = unchanged");
        assert_eq!(empty.packet_filter, Some(vec![]), "[] = deny all");
        assert_eq!(serde_json::to_string(&absent).unwrap(), "{}");
        assert_eq!(
            serde_json::to_string(&empty).unwrap(),
            r#"{"PacketFilter":[]}"#
        );
        // Through the framing too.
        let mut dec = crate::framing::MapFrameDecoder::new();
        dec.push(&crate::framing::encode(&empty, true));
        dec.push(&crate::framing::encode(&absent, false));
        assert_eq!(dec.next().unwrap().unwrap().packet_filter, Some(vec![]));
        assert_eq!(dec.next().unwrap().unwrap().packet_filter, None);

        let clear_all: MapResponse =
            serde_json::from_str(r#"{"PacketFilters":{"*":null}}"#).unwrap();
        assert_eq!(clear_all.packet_filters.as_ref().unwrap()["*"], None);
        assert_eq!(
            serde_json::to_string(&clear_all).unwrap(),
            r#"{"PacketFilters":{"*":null}}"#
        );
    }

    #[test]
    fn keep_alive_message() {
        let m: MapResponse = serde_json::from_str(r#"{"KeepAlive":true}"#).unwrap();
        assert!(m.keep_alive && m.is_keep_alive_only());
        assert_eq!(m, MapResponse::keep_alive());
        assert!(
            !MapResponse {
                seq: 1,
                ..MapResponse::keep_alive()
            }
            .is_keep_alive_only()
        );
    }

    #[test]
    fn map_request_is_minimal_and_round_trips() {
        let req = MapRequest {
            version: 130,
            compress: COMPRESS_ZSTD.into(),
            keep_alive: true,
            node_key: NK.parse().unwrap(),
            disco_key: DK.parse().unwrap(),
            stream: true,
            ..MapRequest::default()
        };
        assert_eq!(
            serde_json::to_string(&req).unwrap(),
            format!(
                r#"{{"Version":130,"Compress":"zstd","KeepAlive":true,"NodeKey":"{NK}","DiscoKey":"{DK}","Stream":true}}"#
            )
        );

        let lite = MapRequest {
            version: 130,
            node_key: NK.parse().unwrap(),
            omit_peers: true,
            endpoints: vec![
                "192.0.2.1:41641".parse().unwrap(),
                "[2001:db8::1]:41641".parse().unwrap(),
            ],
            endpoint_types: vec![EndpointType::Local.into(), EndpointType::Stun.into()],
            hostinfo: Some(Hostinfo {
                hostname: "gw".into(),
                os: "linux".into(),
                ipn_version: "meshgate 0.1.0".into(),
                routable_ips: vec!["0.0.0.0/0".parse().unwrap(), "::/0".parse().unwrap()],
                request_tags: vec!["tag:router".into()],
                services: vec![Service {
                    proto: "peerapi4".into(),
                    port: 12345,
                    ..Service::default()
                }],
                net_info: Some(NetInfo {
                    working_udp: Some(true),
                    working_ipv6: Some(false),
                    preferred_derp: 1,
                    derp_latency: [("1-v4".to_string(), 0.012)].into(),
                    ..NetInfo::default()
                }),
                ..Hostinfo::default()
            }),
            ..MapRequest::default()
        };
        let out = serde_json::to_string(&lite).unwrap();
        for name in [
            r#""Hostinfo":{"IPNVersion":"meshgate 0.1.0","OS":"linux","Hostname":"gw","RoutableIPs":["0.0.0.0/0","::/0"],"RequestTags":["tag:router"],"Services":[{"Proto":"peerapi4","Port":12345}],"NetInfo":{"#,
            r#""NetInfo":{"WorkingIPv6":false,"WorkingUDP":true,"PreferredDERP":1,"DERPLatency":{"1-v4":0.012}}"#,
            r#""Endpoints":["192.0.2.1:41641","[2001:db8::1]:41641"],"EndpointTypes":[1,2]"#,
            r#""OmitPeers":true"#,
        ] {
            assert!(out.contains(name), "{name} missing in {out}");
        }
        assert!(
            !out.contains("Stream") && !out.contains("Compress"),
            "{out}"
        );
        assert_eq!(serde_json::from_str::<MapRequest>(&out).unwrap(), lite);

        // What a Go client sends, with nulls and fields we don't model.
        let go = format!(
            r#"{{"Version":145,"Compress":"zstd","KeepAlive":true,"NodeKey":"{NK}","DiscoKey":"{DK}",
                "Stream":true,"Hostinfo":{{"OS":"linux","Userspace":false,"sshHostKeys":["ssh-ed25519 AAAA"],
                "NetInfo":{{"MappingVariesByDestIP":null,"HairPinning":null,"PreferredDERP":2,"LinkType":"wired"}}}},
                "Endpoints":null,"EndpointTypes":null,"TKAHead":"","DebugFlags":null}}"#
        );
        let r: MapRequest = serde_json::from_str(&go).unwrap();
        assert_eq!(r.version, 145);
        let ni = r.hostinfo.unwrap().net_info.unwrap();
        assert_eq!(
            (
                ni.mapping_varies_by_dest_ip,
                ni.preferred_derp,
                ni.link_type.as_str()
            ),
            (None, 2, "wired")
        );
    }

    #[test]
    fn bad_values_are_errors() {
        assert!(
            serde_json::from_str::<MapResponse>(r#"{"Node":{"ID":1,"Key":"mkey:00"}}"#).is_err()
        );
        assert!(serde_json::from_str::<MapResponse>(r#"{"ControlTime":"yesterday"}"#).is_err());
        assert!(
            serde_json::from_str::<MapResponse>(
                r#"{"Peers":[{"ID":1,"Addresses":["100.64.0.999/32"]}]}"#
            )
            .is_err()
        );
        assert!(
            serde_json::from_str::<MapResponse>(r#"{"PingRequest":{"URL":"u","IP":"nope"}}"#)
                .is_err()
        );
    }
}
