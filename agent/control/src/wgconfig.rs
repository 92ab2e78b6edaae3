//! From a [`NetMap`] to the WireGuard interface we want ([`meshgate_wg::InterfaceConfig`]),
//! pure: reference §7.1–7.3, DESIGN decisions 2 and 6.

use std::collections::BTreeSet;

use ipnet::IpNet;
use meshgate_tailcfg::{Node, NodePrivate, Time};
use meshgate_wg::{
    DeviceConfig, Family, InterfaceConfig, NetConfig, PeerConfig, PrivateKey, PublicKey, Route,
    Rule,
};

use crate::netmap::NetMap;

/// Local choices that shape the WireGuard configuration (defaults: Tailscale's Linux values).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WgOptions {
    /// Interface name.
    pub interface: String,
    /// WireGuard's UDP port (0 = kernel's choice).
    pub listen_port: u16,
    /// WireGuard marks its own packets with this (`0x80000`); 0 = no mark and no ip rules.
    pub fwmark: u32,
    /// Routing table for the peers' allowed IPs (52).
    pub table: u32,
    /// Priority of the `not fwmark … lookup <table>` rule (5270).
    pub rule_priority: u32,
    /// `--accept-routes`: also route peers' approved subnet routes (never exit routes).
    pub accept_routes: bool,
    pub mtu: Option<u32>,
    /// Seconds (25).
    pub persistent_keepalive: u16,
    /// `--exit-node`: the peer (a tailnet IP, or its MagicDNS name, with or without the
    /// domain) whose default routes `0.0.0.0/0` and `::/0` we route through.
    pub exit_node: Option<String>,
    /// While an exit node is in use, prefixes kept out of the tunnel: throw routes in `table`,
    /// so their lookup falls through to the main table (`--exit-node-allow-lan-access`).
    pub exit_node_bypass: Vec<IpNet>,
}

impl Default for WgOptions {
    fn default() -> Self {
        WgOptions {
            interface: "meshgate0".to_owned(),
            listen_port: 41641,
            fwmark: 0x80000,
            table: 52,
            rule_priority: 5270,
            accept_routes: false,
            mtu: Some(1280),
            persistent_keepalive: 25,
            exit_node: None,
            exit_node_bypass: Vec::new(),
        }
    }
}

/// The interface configuration for `netmap`, with `key` as our WireGuard key and expiry judged
/// at `now`.
///
/// - Addresses: the self node's `Addresses`, as host prefixes (/32, /128).
/// - One peer per usable peer node, in node-ID order: public key = its `Key`; endpoint = the
///   first of its `Endpoints` (path selection by disco/DERP comes later); allowed IPs = its
///   `Addresses`, plus, with `accept_routes`, the other prefixes of its `AllowedIPs` except the
///   exit routes `0.0.0.0/0` and `::/0` (those need an explicit exit-node choice); persistent
///   keepalive.
/// - Left out: peers flagged `Expired` or whose `KeyExpiry` is past, peers with a zero key or
///   our own key. A prefix claimed by an earlier peer (lower node ID) is not given to a later
///   one (the kernel would silently move it).
/// - A route into `table` for every allowed IP; with a fwmark, the rule
///   `pref <rule_priority> not fwmark <mark>/<mark> lookup <table>` for IPv4 and IPv6 (the
///   single-rule form of reference §7.2, as `wgconf` writes it).
pub fn interface_config(
    netmap: &NetMap,
    key: &NodePrivate,
    opts: &WgOptions,
    now: Time,
) -> InterfaceConfig {
    let private = PrivateKey::from_bytes(*key.as_secret_bytes());
    let own = private.public_key();
    let mut device = DeviceConfig {
        private_key: Some(private),
        listen_port: opts.listen_port,
        fwmark: opts.fwmark,
        ..DeviceConfig::default()
    };
    let mut net = NetConfig {
        mtu: opts.mtu,
        addresses: netmap
            .self_addresses()
            .iter()
            .map(|a| host_prefix(*a))
            .collect(),
        ..NetConfig::default()
    };
    let mut claimed: BTreeSet<IpNet> = BTreeSet::new();
    for peer in netmap.peers.values() {
        if !usable(peer, now) {
            continue;
        }
        let public = PublicKey::from_bytes(*peer.key.as_bytes());
        if public == own || device.peers.contains_key(&public) {
            tracing::warn!(
                node = peer.id,
                "peer with our own or a duplicate key left out"
            );
            continue;
        }
        let mut allowed: BTreeSet<IpNet> = BTreeSet::new();
        for a in &peer.addresses {
            allowed.insert(host_prefix(*a));
        }
        let exit = opts
            .exit_node
            .as_deref()
            .is_some_and(|choice| is_exit_choice(peer, choice));
        if exit {
            for p in peer.allowed_ips().iter().filter(|p| p.prefix_len() == 0) {
                allowed.insert(p.trunc());
            }
        }
        if opts.accept_routes {
            for p in peer.allowed_ips() {
                let p = p.trunc();
                if p.prefix_len() != 0 {
                    allowed.insert(p);
                }
            }
        }
        allowed.retain(|p| {
            let free = !claimed.contains(p);
            if !free {
                tracing::warn!(node = peer.id, prefix = %p, "prefix already routed to another peer");
            }
            free
        });
        for p in &allowed {
            claimed.insert(*p);
            net.routes.insert(Route {
                destination: *p,
                table: opts.table,
            });
        }
        device.peers.insert(
            public,
            PeerConfig {
                preshared_key: None,
                endpoint: peer.endpoints.first().copied(),
                allowed_ips: allowed,
                persistent_keepalive: opts.persistent_keepalive,
            },
        );
    }
    if opts.exit_node.as_deref().is_some_and(|c| !c.is_empty()) {
        // Both default routes whether or not the chosen exit node is there and offers them
        // (reference §7.3): while it is away, or has no IPv6, traffic for the internet finds
        // no WireGuard peer and is refused rather than leaking out of the host's own uplink.
        for destination in [IpNet::V4(Default::default()), IpNet::V6(Default::default())] {
            net.routes.insert(Route {
                destination,
                table: opts.table,
            });
        }
        for p in &opts.exit_node_bypass {
            net.throw_routes.insert(Route {
                destination: p.trunc(),
                table: opts.table,
            });
        }
    }
    if opts.fwmark != 0 {
        for family in [Family::V4, Family::V6] {
            net.rules.insert(Rule {
                family,
                priority: opts.rule_priority,
                fwmark: Some((opts.fwmark, opts.fwmark)),
                invert: true,
                table: opts.table,
            });
        }
    }
    InterfaceConfig {
        name: opts.interface.clone(),
        device,
        net,
    }
}

/// Whether `peer` is the exit node `choice` names: one of its addresses, or its MagicDNS name
/// (full, with or without the trailing dot, or its first label), case-insensitive.
pub fn is_exit_choice(peer: &Node, choice: &str) -> bool {
    if let Ok(ip) = choice.parse::<std::net::IpAddr>() {
        return peer.addresses.iter().any(|a| a.addr() == ip);
    }
    let name = peer.name.trim_end_matches('.');
    let choice = choice.trim_end_matches('.');
    !choice.is_empty()
        && (name.eq_ignore_ascii_case(choice)
            || name
                .split('.')
                .next()
                .is_some_and(|host| host.eq_ignore_ascii_case(choice)))
}

/// Whether a peer can be configured: a key that has not expired.
pub fn usable(peer: &Node, now: Time) -> bool {
    !peer.expired && !peer.key.is_zero() && (peer.key_expiry.is_zero() || peer.key_expiry > now)
}

/// The address itself as a /32 or /128.
fn host_prefix(p: IpNet) -> IpNet {
    IpNet::from(p.addr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshgate_tailcfg::{MapResponse, NodePublic};
    use meshgate_wg::InterfaceConfig;

    const NOW: Time = Time::from_unix(1_750_000_000, 0);

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    fn peer(id: i64) -> Node {
        Node {
            id,
            key: NodePublic::from_bytes([id as u8; 32]),
            addresses: vec![
                net(&format!("100.64.0.{id}/32")),
                net(&format!("fd7a:115c:a1e0::{id}/128")),
            ],
            endpoints: vec![
                format!("192.0.2.{id}:41641").parse().unwrap(),
                format!("198.51.100.{id}:41641").parse().unwrap(),
            ],
            ..Node::default()
        }
    }

    fn netmap(peers: Vec<Node>) -> NetMap {
        let mut nm = NetMap::new();
        nm.apply(MapResponse {
            node: Some(Node {
                id: 100,
                addresses: vec![net("100.64.0.100/32"), net("fd7a:115c:a1e0::64/128")],
                ..Node::default()
            }),
            peers: Some(peers),
            ..MapResponse::default()
        });
        nm
    }

    fn build(nm: &NetMap, key: &NodePrivate, accept_routes: bool) -> InterfaceConfig {
        let opts = WgOptions {
            accept_routes,
            ..WgOptions::default()
        };
        interface_config(nm, key, &opts, NOW)
    }

    fn wg_key(n: &Node) -> PublicKey {
        PublicKey::from_bytes(*n.key.as_bytes())
    }

    #[test]
    fn interface_and_peers() {
        let key = NodePrivate::generate();
        let cfg = build(&netmap(vec![peer(1), peer(2)]), &key, false);
        assert_eq!(cfg.name, "meshgate0");
        assert_eq!(
            cfg.device
                .private_key
                .as_ref()
                .unwrap()
                .public_key()
                .as_bytes(),
            key.public().as_bytes()
        );
        assert_eq!(
            (cfg.device.listen_port, cfg.device.fwmark),
            (41641, 0x80000)
        );
        assert_eq!(
            cfg.net.addresses,
            [net("100.64.0.100/32"), net("fd7a:115c:a1e0::64/128")].into()
        );
        assert_eq!(cfg.net.mtu, Some(1280));
        assert_eq!(cfg.device.peers.len(), 2);
        let p1 = &cfg.device.peers[&wg_key(&peer(1))];
        assert_eq!(p1.endpoint, Some("192.0.2.1:41641".parse().unwrap()));
        assert_eq!(
            p1.allowed_ips,
            [net("100.64.0.1/32"), net("fd7a:115c:a1e0::1/128")].into()
        );
        assert_eq!(p1.persistent_keepalive, 25);
        assert_eq!(cfg.net.routes.len(), 4);
        assert!(cfg.net.routes.contains(&Route {
            destination: net("fd7a:115c:a1e0::2/128"),
            table: 52
        }));
        let rules: Vec<_> = cfg.net.rules.iter().copied().collect();
        assert_eq!(rules.len(), 2);
        for r in rules {
            assert_eq!(
                (r.priority, r.fwmark, r.invert, r.table),
                (5270, Some((0x80000, 0x80000)), true, 52)
            );
        }
        cfg.device.validate().unwrap();
    }

    #[test]
    fn self_addresses_become_host_prefixes() {
        let mut nm = netmap(vec![]);
        nm.self_node.as_mut().unwrap().addresses = vec![net("100.64.0.100/10")];
        let cfg = build(&nm, &NodePrivate::generate(), false);
        assert_eq!(cfg.net.addresses, [net("100.64.0.100/32")].into());
    }

    #[test]
    fn exit_node_by_address_or_name_gets_the_default_routes_and_the_lan_stays_out() {
        let mut exit = peer(1);
        exit.name = "cloud-vm.tailnet.example.".into();
        exit.allowed_ips = Some(vec![
            net("100.64.0.1/32"),
            net("fd7a:115c:a1e0::1/128"),
            net("0.0.0.0/0"),
            net("::/0"),
        ]);
        let nm = netmap(vec![exit.clone(), peer(2)]);
        let key = NodePrivate::generate();
        for choice in [
            "100.64.0.1",
            "fd7a:115c:a1e0::1",
            "cloud-vm",
            "Cloud-VM.tailnet.example.",
        ] {
            let opts = WgOptions {
                exit_node: Some(choice.into()),
                exit_node_bypass: vec![net("192.168.1.0/24")],
                ..WgOptions::default()
            };
            let cfg = interface_config(&nm, &key, &opts, NOW);
            let allowed = &cfg.device.peers[&wg_key(&exit)].allowed_ips;
            assert!(
                allowed.contains(&net("0.0.0.0/0")) && allowed.contains(&net("::/0")),
                "{choice}"
            );
            assert!(cfg.net.routes.contains(&Route {
                destination: net("0.0.0.0/0"),
                table: 52
            }));
            assert!(cfg.net.routes.contains(&Route {
                destination: net("::/0"),
                table: 52
            }));
            assert_eq!(
                cfg.net.throw_routes,
                [Route {
                    destination: net("192.168.1.0/24"),
                    table: 52
                }]
                .into()
            );
            assert_eq!(cfg.device.peers[&wg_key(&peer(2))].allowed_ips.len(), 2);
        }
        // Another peer, an unknown name (or the exit node gone from the netmap): no peer
        // carries the default routes, yet they stay, so traffic is refused instead of leaking
        // out of the host's own uplink. No choice at all: no default routes.
        for (choice, blocked) in [("100.64.0.2", true), ("nosuch", true), ("", false)] {
            let opts = WgOptions {
                exit_node: Some(choice.into()),
                exit_node_bypass: vec![net("192.168.1.0/24")],
                ..WgOptions::default()
            };
            let cfg = interface_config(&nm, &key, &opts, NOW);
            assert!(
                cfg.device
                    .peers
                    .values()
                    .all(|p| p.allowed_ips.iter().all(|a| a.prefix_len() != 0)),
                "{choice}"
            );
            let defaults: Vec<_> = cfg
                .net
                .routes
                .iter()
                .filter(|r| r.destination.prefix_len() == 0)
                .map(|r| r.destination)
                .collect();
            let expected = if blocked {
                vec![net("0.0.0.0/0"), net("::/0")]
            } else {
                vec![]
            };
            assert_eq!(defaults, expected, "{choice}");
            assert_eq!(cfg.net.throw_routes.len(), usize::from(blocked), "{choice}");
        }
    }

    #[test]
    fn routes_only_when_accepted_and_never_exit_routes() {
        let mut router = peer(1);
        router.allowed_ips = Some(vec![
            net("100.64.0.1/32"),
            net("fd7a:115c:a1e0::1/128"),
            net("10.1.0.0/16"),
            net("192.168.7.1/24"),
            net("0.0.0.0/0"),
            net("::/0"),
        ]);
        router.primary_routes = vec![net("10.1.0.0/16")];
        let nm = netmap(vec![router.clone(), peer(2)]);
        let key = NodePrivate::generate();

        let cfg = build(&nm, &key, false);
        assert_eq!(cfg.device.peers[&wg_key(&router)].allowed_ips.len(), 2);
        assert!(
            !cfg.net
                .routes
                .iter()
                .any(|r| r.destination == net("10.1.0.0/16"))
        );

        let cfg = build(&nm, &key, true);
        let allowed = &cfg.device.peers[&wg_key(&router)].allowed_ips;
        assert_eq!(
            *allowed,
            [
                net("100.64.0.1/32"),
                net("fd7a:115c:a1e0::1/128"),
                net("10.1.0.0/16"),
                net("192.168.7.0/24"),
            ]
            .into()
        );
        assert!(cfg.net.routes.contains(&Route {
            destination: net("10.1.0.0/16"),
            table: 52
        }));
        assert!(
            !cfg.net
                .routes
                .iter()
                .any(|r| r.destination.prefix_len() == 0)
        );
        cfg.device.validate().unwrap();
    }

    #[test]
    fn expired_and_keyless_peers_are_left_out() {
        let mut flagged = peer(1);
        flagged.expired = true;
        let mut past = peer(2);
        past.key_expiry = Time::from_unix(NOW.unix_secs() - 1, 0);
        let mut future = peer(3);
        future.key_expiry = Time::from_unix(NOW.unix_secs() + 3600, 0);
        let mut keyless = peer(4);
        keyless.key = NodePublic::default();
        let cfg = build(
            &netmap(vec![flagged, past, future.clone(), keyless, peer(5)]),
            &NodePrivate::generate(),
            false,
        );
        let keys: Vec<_> = cfg.device.peers.keys().copied().collect();
        assert_eq!(keys, vec![wg_key(&future), wg_key(&peer(5))]);
        assert_eq!(cfg.net.routes.len(), 4);
    }

    #[test]
    fn no_endpoint_and_own_key() {
        let key = NodePrivate::generate();
        let mut quiet = peer(1);
        quiet.endpoints.clear();
        let mut me = peer(2);
        me.key = key.public();
        let cfg = build(&netmap(vec![quiet.clone(), me]), &key, false);
        assert_eq!(cfg.device.peers.len(), 1);
        assert_eq!(cfg.device.peers[&wg_key(&quiet)].endpoint, None);
    }

    #[test]
    fn a_prefix_goes_to_one_peer_only() {
        let mut a = peer(1);
        a.allowed_ips = Some(vec![net("100.64.0.1/32"), net("10.9.0.0/16")]);
        let mut b = peer(2);
        b.allowed_ips = Some(vec![net("100.64.0.2/32"), net("10.9.0.0/16")]);
        let cfg = build(
            &netmap(vec![a.clone(), b.clone()]),
            &NodePrivate::generate(),
            true,
        );
        assert!(
            cfg.device.peers[&wg_key(&a)]
                .allowed_ips
                .contains(&net("10.9.0.0/16"))
        );
        assert!(
            !cfg.device.peers[&wg_key(&b)]
                .allowed_ips
                .contains(&net("10.9.0.0/16"))
        );
        cfg.device.validate().unwrap();
    }

    #[test]
    fn no_fwmark_no_rules_and_custom_table() {
        let opts = WgOptions {
            fwmark: 0,
            table: 100,
            ..WgOptions::default()
        };
        let cfg = interface_config(&netmap(vec![peer(1)]), &NodePrivate::generate(), &opts, NOW);
        assert!(cfg.net.rules.is_empty());
        assert!(cfg.net.routes.iter().all(|r| r.table == 100));
    }
}
