//! MagicDNS in the daemon: while control turns it on (`DNSConfig.Proxied`), 100.100.100.100
//! and fd7a:115c:a1e0::53 are addresses of the mesh interface and the resolver
//! (`meshgate-magicdns`) serves them: tailnet names from the netmap, everything else to the
//! upstreams control names, or to the host's own resolv.conf servers (the file as the host
//! has it, even while `--accept-dns` points it at us: see `host_dns`).

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;
use meshgate_control::netmap::{DnsView, PeerDirectory};
use meshgate_magicdns::{Domains, QUAD100_V4, QUAD100_V6, Records, Resolver, ResolverConfig};
use meshgate_wg::InterfaceConfig;

pub(super) struct MagicDns {
    view: Option<DnsView>,
    resolver: Option<Resolver>,
    /// The host's own resolv.conf text (never ours).
    resolv_conf: String,
    error: Option<String>,
}

impl MagicDns {
    /// `resolv_conf`: the host's own resolv.conf text, for upstreams.
    pub(super) fn new(resolv_conf: String) -> MagicDns {
        MagicDns {
            view: None,
            resolver: None,
            resolv_conf,
            error: None,
        }
    }

    pub(super) fn enabled(&self) -> bool {
        self.view.as_ref().is_some_and(|v| v.config.proxied)
    }

    /// The search domains while the resolver serves.
    pub(super) fn serving_domains(&self) -> Option<&[String]> {
        let view = self.view.as_ref().filter(|_| self.resolver.is_some())?;
        Some(&view.config.domains)
    }

    /// The host's resolv.conf changed (a DHCP renewal): upstreams from it at the next update.
    pub(super) fn set_resolv_conf(&mut self, text: String) {
        self.resolv_conf = text;
    }

    /// Control's DNS configuration changed; true when MagicDNS was turned on or off (the
    /// interface's addresses change).
    pub(super) fn set_view(&mut self, view: Option<DnsView>) -> bool {
        let was = self.enabled();
        self.view = view;
        if !self.enabled() {
            self.resolver = None;
        }
        was != self.enabled()
    }

    /// `config` with the resolver's addresses on the interface while MagicDNS is on.
    pub(super) fn with_addresses(&self, mut config: InterfaceConfig) -> InterfaceConfig {
        if self.enabled() {
            config.net.addresses.extend(quad100());
        }
        config
    }

    /// Starts the resolver once its addresses are on the interface (after an apply), and
    /// gives it the current names.
    pub(super) async fn ensure(&mut self, peers: &PeerDirectory) {
        if !self.enabled() {
            return;
        }
        if self.resolver.is_none() {
            let config = ResolverConfig {
                listen: vec![
                    SocketAddr::new(IpAddr::V4(QUAD100_V4), 53),
                    SocketAddr::new(IpAddr::V6(QUAD100_V6), 53),
                ],
                ..ResolverConfig::default()
            };
            match Resolver::bind(config).await {
                Ok(resolver) => {
                    tracing::info!("MagicDNS serving on 100.100.100.100 and fd7a:115c:a1e0::53");
                    self.resolver = Some(resolver);
                    self.error = None;
                }
                Err(e) => {
                    // Retried after the next apply or reconcile.
                    self.error = Some(e.to_string());
                    tracing::debug!("MagicDNS not up yet: {e}");
                    return;
                }
            }
        }
        self.update(peers);
    }

    /// Hands the resolver the names of `peers` and ourselves.
    pub(super) fn update(&self, peers: &PeerDirectory) {
        let (Some(resolver), Some(view)) = (&self.resolver, &self.view) else {
            return;
        };
        let mut names: Vec<(String, Vec<IpAddr>)> = peers
            .values()
            .filter(|p| !p.name.is_empty())
            .map(|p| (p.name.clone(), p.tailnet_ips.clone()))
            .collect();
        if !view.self_name.is_empty() {
            names.push((view.self_name.clone(), view.self_ips.clone()));
        }
        let resolvers = view.config.resolvers.iter().map(|r| r.addr.as_str());
        let upstreams = meshgate_magicdns::choose_upstreams(resolvers, &self.resolv_conf);
        resolver.update(
            Records::new(names),
            Domains::new(&view.config.domains),
            upstreams,
        );
    }

    /// One line for status: where it serves, or why not.
    pub(super) fn status(&self) -> Option<String> {
        if !self.enabled() {
            return None;
        }
        Some(match (&self.resolver, &self.error) {
            (Some(_), _) => "100.100.100.100, fd7a:115c:a1e0::53".to_owned(),
            (None, Some(e)) => format!("not serving: {e}"),
            (None, None) => "starting".to_owned(),
        })
    }
}

fn quad100() -> [IpNet; 2] {
    [
        IpNet::from(IpAddr::V4(QUAD100_V4)),
        IpNet::from(IpAddr::V6(QUAD100_V6)),
    ]
}

/// `config` without the resolver's addresses (what `down` leaves).
pub(super) fn without_quad100(mut config: InterfaceConfig) -> InterfaceConfig {
    for a in quad100() {
        config.net.addresses.remove(&a);
    }
    config
}
