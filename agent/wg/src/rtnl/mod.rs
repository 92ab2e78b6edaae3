//! Links, addresses, routes and rules over rtnetlink.

pub mod types;

use std::collections::BTreeSet;
use std::io;
use std::net::IpAddr;

use futures::{StreamExt, TryStreamExt};
use ipnet::IpNet;
use netlink_packet_route::address::AddressAttribute;
use netlink_packet_route::link::{InfoKind, LinkAttribute, LinkFlags, LinkInfo};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::rule::{RuleAction, RuleAttribute, RuleFlags, RuleMessage};
use rtnetlink::{Handle, IpVersion, LinkUnspec, LinkWireguard, RouteMessageBuilder};

use crate::error::Error;
use types::{Family, Route, Rule};

/// What we need to know about an existing link.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    /// `wireguard`, `tun`, ...; `None` for links without a kind (loopback, physical NICs).
    pub kind: Option<String>,
    pub mtu: u32,
    pub up: bool,
}

#[derive(Debug, Clone)]
pub struct Rtnl {
    handle: Handle,
}

fn rtnl_error(context: impl Into<String>, error: rtnetlink::Error) -> Error {
    let source = match error {
        rtnetlink::Error::NetlinkError(message) => message.to_io(),
        other => io::Error::other(other.to_string()),
    };
    Error::netlink(context, source)
}

impl Rtnl {
    /// Opens an rtnetlink socket in the calling thread's network namespace; needs a tokio
    /// runtime.
    pub fn connect() -> Result<Self, Error> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|e| Error::netlink("opening rtnetlink", e))?;
        tokio::spawn(connection);
        Ok(Rtnl { handle })
    }

    pub async fn link(&self, name: &str) -> Result<Option<Link>, Error> {
        let mut links = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute();
        match links.try_next().await {
            Ok(Some(message)) => Ok(Some(link_from(message))),
            Ok(None) => Ok(None),
            Err(rtnetlink::Error::NetlinkError(e))
                if e.to_io().raw_os_error() == Some(libc::ENODEV) =>
            {
                Ok(None)
            }
            Err(e) => Err(rtnl_error(format!("looking up link {name}"), e)),
        }
    }

    pub async fn create_wireguard(&self, name: &str) -> Result<(), Error> {
        self.handle
            .link()
            .add(LinkWireguard::new(name).build())
            .execute()
            .await
            .map_err(|e| rtnl_error(format!("creating WireGuard link {name}"), e))
    }

    pub async fn delete_link(&self, link: &Link) -> Result<(), Error> {
        self.handle
            .link()
            .del(link.index)
            .execute()
            .await
            .map_err(|e| rtnl_error(format!("deleting link {}", link.name), e))
    }

    pub async fn set_link(&self, link: &Link, mtu: Option<u32>, up: bool) -> Result<(), Error> {
        let mut builder = LinkUnspec::new_with_index(link.index);
        if let Some(mtu) = mtu {
            builder = builder.mtu(mtu);
        }
        builder = if up { builder.up() } else { builder.down() };
        self.handle
            .link()
            .set(builder.build())
            .execute()
            .await
            .map_err(|e| rtnl_error(format!("setting link {} mtu/state", link.name), e))
    }

    pub async fn addresses(&self, link: &Link) -> Result<BTreeSet<IpNet>, Error> {
        let context = format!("listing addresses of {}", link.name);
        let mut request = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index);
        request.message_mut().header.index = link.index;
        let messages: Vec<_> = request
            .execute()
            .try_collect()
            .await
            .map_err(|e| rtnl_error(&context, e))?;
        let mut out = BTreeSet::new();
        for message in messages {
            if message.header.index != link.index {
                continue;
            }
            let address = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Address(ip) => Some(*ip),
                _ => None,
            });
            if let Some(ip) = address {
                // Link-local IPv6 belongs to the kernel, not to our configuration.
                if matches!(ip, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80) {
                    continue;
                }
                if let Ok(net) = IpNet::new(ip, message.header.prefix_len) {
                    out.insert(net);
                }
            }
        }
        Ok(out)
    }

    pub async fn add_address(&self, link: &Link, net: IpNet) -> Result<(), Error> {
        self.handle
            .address()
            .add(link.index, net.addr(), net.prefix_len())
            .execute()
            .await
            .map_err(|e| rtnl_error(format!("adding address {net} to {}", link.name), e))
    }

    pub async fn remove_address(&self, link: &Link, net: IpNet) -> Result<(), Error> {
        let context = format!("removing address {net} from {}", link.name);
        let messages: Vec<_> = self
            .handle
            .address()
            .get()
            .set_link_index_filter(link.index)
            .set_address_filter(net.addr())
            .set_prefix_length_filter(net.prefix_len())
            .execute()
            .try_collect()
            .await
            .map_err(|e| rtnl_error(&context, e))?;
        for message in messages {
            self.handle
                .address()
                .del(message)
                .execute()
                .await
                .map_err(|e| rtnl_error(&context, e))?;
        }
        Ok(())
    }

    /// Our routes through `link`, in every table.
    pub async fn routes(&self, link: &Link) -> Result<BTreeSet<Route>, Error> {
        let mut out = BTreeSet::new();
        for message in self.route_messages(link).await? {
            if let Some(route) = route_from(&message) {
                out.insert(route);
            }
        }
        Ok(out)
    }

    /// Ours (protocol [`types::ROUTE_PROTOCOL`]) through `link`: unicast routes bound to it.
    async fn route_messages(&self, link: &Link) -> Result<Vec<RouteMessage>, Error> {
        let context = format!("listing routes through {}", link.name);
        let mut out = self.our_route_messages(&context).await?;
        out.retain(|message| {
            message.header.kind != RouteType::Throw
                && message
                    .attributes
                    .iter()
                    .any(|a| matches!(a, RouteAttribute::Oif(i) if *i == link.index))
        });
        Ok(out)
    }

    /// Ours of type `throw` in `tables`. They belong to no device (IPv6 ones show `dev lo`),
    /// so the table is what ties them to an interface.
    async fn throw_route_messages(
        &self,
        tables: &BTreeSet<u32>,
    ) -> Result<Vec<RouteMessage>, Error> {
        let mut out = self.our_route_messages("listing throw routes").await?;
        out.retain(|message| {
            message.header.kind == RouteType::Throw
                && route_from(message).is_some_and(|route| tables.contains(&route.table))
        });
        Ok(out)
    }

    /// Every route, IPv4 and IPv6, in every table, that carries our protocol number.
    async fn our_route_messages(&self, context: &str) -> Result<Vec<RouteMessage>, Error> {
        let mut out = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let request = match version {
                IpVersion::V4 => RouteMessageBuilder::<std::net::Ipv4Addr>::new().build(),
                IpVersion::V6 => RouteMessageBuilder::<std::net::Ipv6Addr>::new().build(),
            };
            let mut stream = self.handle.route().get(request).execute();
            while let Some(message) = stream.next().await {
                let message = message.map_err(|e| rtnl_error(context, e))?;
                if message.header.protocol == RouteProtocol::Other(ROUTE_PROTOCOL) {
                    out.push(message);
                }
            }
        }
        Ok(out)
    }

    /// Our throw routes in `tables`.
    pub async fn throw_routes(&self, tables: &BTreeSet<u32>) -> Result<BTreeSet<Route>, Error> {
        if tables.is_empty() {
            return Ok(BTreeSet::new());
        }
        Ok(self
            .throw_route_messages(tables)
            .await?
            .iter()
            .filter_map(route_from)
            .collect())
    }

    /// `ip route add throw <destination> table <table> proto 109`.
    pub async fn add_throw_route(&self, route: Route) -> Result<(), Error> {
        let message = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(route.destination.addr(), route.destination.prefix_len())
            .map_err(|e| Error::InvalidConfig(e.to_string()))?
            .table_id(route.table)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .scope(RouteScope::Universe)
            .kind(RouteType::Throw)
            .build();
        self.handle
            .route()
            .add(message)
            .execute()
            .await
            .map_err(|e| {
                rtnl_error(
                    format!(
                        "adding route throw {} table {}",
                        route.destination, route.table
                    ),
                    e,
                )
            })
    }

    /// Removes our throw routes among `routes` with one dump.
    pub async fn remove_throw_routes(&self, routes: &[Route]) -> Result<(), Error> {
        if routes.is_empty() {
            return Ok(());
        }
        let doomed: BTreeSet<Route> = routes.iter().copied().collect();
        let tables: BTreeSet<u32> = doomed.iter().map(|r| r.table).collect();
        for message in self.throw_route_messages(&tables).await? {
            let Some(route) = route_from(&message).filter(|r| doomed.contains(r)) else {
                continue;
            };
            self.handle
                .route()
                .del(message)
                .execute()
                .await
                .map_err(|e| {
                    rtnl_error(
                        format!(
                            "removing route throw {} table {}",
                            route.destination, route.table
                        ),
                        e,
                    )
                })?;
        }
        Ok(())
    }

    pub async fn add_route(&self, link: &Link, route: Route) -> Result<(), Error> {
        let message = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(route.destination.addr(), route.destination.prefix_len())
            .map_err(|e| Error::InvalidConfig(e.to_string()))?
            .output_interface(link.index)
            .table_id(route.table)
            .protocol(RouteProtocol::Other(ROUTE_PROTOCOL))
            .scope(RouteScope::Link)
            .build();
        self.handle
            .route()
            .add(message)
            .execute()
            .await
            .map_err(|e| {
                rtnl_error(
                    format!(
                        "adding route {} dev {} table {}",
                        route.destination, link.name, route.table
                    ),
                    e,
                )
            })
    }

    /// Removes `routes` with one dump, however many there are.
    pub async fn remove_routes(&self, link: &Link, routes: &[Route]) -> Result<(), Error> {
        if routes.is_empty() {
            return Ok(());
        }
        let doomed: BTreeSet<Route> = routes.iter().copied().collect();
        for message in self.route_messages(link).await? {
            let Some(route) = route_from(&message).filter(|r| doomed.contains(r)) else {
                continue;
            };
            self.handle
                .route()
                .del(message)
                .execute()
                .await
                .map_err(|e| {
                    rtnl_error(
                        format!("removing route {} dev {}", route.destination, link.name),
                        e,
                    )
                })?;
        }
        Ok(())
    }

    /// Our rules (those carrying [`types::ROUTE_PROTOCOL`]).
    pub async fn rules(&self) -> Result<BTreeSet<Rule>, Error> {
        Ok(self
            .rule_messages()
            .await?
            .iter()
            .filter_map(rule_from)
            .collect())
    }

    async fn rule_messages(&self) -> Result<Vec<RuleMessage>, Error> {
        let mut out = Vec::new();
        for version in [IpVersion::V4, IpVersion::V6] {
            let messages: Vec<RuleMessage> = self
                .handle
                .rule()
                .get(version)
                .execute()
                .try_collect()
                .await
                .map_err(|e| rtnl_error("listing ip rules", e))?;
            out.extend(messages.into_iter().filter(|m| {
                m.attributes.iter().any(
                    |a| matches!(a, RuleAttribute::Protocol(RouteProtocol::Other(p)) if *p == ROUTE_PROTOCOL),
                )
            }));
        }
        Ok(out)
    }

    pub async fn add_rule(&self, rule: Rule) -> Result<(), Error> {
        let mut request = self
            .handle
            .rule()
            .add()
            .table_id(rule.table)
            .priority(rule.priority);
        let message = request.message_mut();
        message.header.family = match rule.family {
            Family::V4 => netlink_packet_route::AddressFamily::Inet,
            Family::V6 => netlink_packet_route::AddressFamily::Inet6,
        };
        message.header.action = RuleAction::ToTable;
        if rule.invert {
            message.header.flags |= RuleFlags::Invert;
        }
        if let Some((mark, mask)) = rule.fwmark {
            message.attributes.push(RuleAttribute::FwMark(mark));
            message.attributes.push(RuleAttribute::FwMask(mask));
        }
        message
            .attributes
            .push(RuleAttribute::Protocol(RouteProtocol::Other(
                ROUTE_PROTOCOL,
            )));
        request
            .execute()
            .await
            .map_err(|e| rtnl_error(format!("adding ip rule {rule:?}"), e))
    }

    /// Removes `rules` with one dump.
    pub async fn remove_rules(&self, rules: &[Rule]) -> Result<(), Error> {
        if rules.is_empty() {
            return Ok(());
        }
        let doomed: BTreeSet<Rule> = rules.iter().copied().collect();
        for message in self.rule_messages().await? {
            let Some(rule) = rule_from(&message).filter(|r| doomed.contains(r)) else {
                continue;
            };
            self.handle
                .rule()
                .del(message)
                .execute()
                .await
                .map_err(|e| rtnl_error(format!("removing ip rule {rule:?}"), e))?;
        }
        Ok(())
    }
}

use types::ROUTE_PROTOCOL;

fn link_from(message: netlink_packet_route::link::LinkMessage) -> Link {
    let mut link = Link {
        index: message.header.index,
        name: String::new(),
        kind: None,
        mtu: 0,
        up: message.header.flags.contains(LinkFlags::Up),
    };
    for attribute in message.attributes {
        match attribute {
            LinkAttribute::IfName(name) => link.name = name,
            LinkAttribute::Mtu(mtu) => link.mtu = mtu,
            LinkAttribute::LinkInfo(infos) => {
                for info in infos {
                    if let LinkInfo::Kind(kind) = info {
                        link.kind = Some(match kind {
                            InfoKind::Wireguard => "wireguard".to_string(),
                            InfoKind::Tun => "tun".to_string(),
                            other => other.to_string(),
                        });
                    }
                }
            }
            _ => {}
        }
    }
    link
}

fn route_from(message: &RouteMessage) -> Option<Route> {
    let mut table = u32::from(message.header.table);
    let mut destination = None;
    for attribute in &message.attributes {
        match attribute {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                destination = Some(IpAddr::V4(*a))
            }
            RouteAttribute::Destination(RouteAddress::Inet6(a)) => {
                destination = Some(IpAddr::V6(*a))
            }
            _ => {}
        }
    }
    let destination = destination.unwrap_or(match message.header.address_family {
        netlink_packet_route::AddressFamily::Inet6 => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
    });
    Some(Route {
        destination: IpNet::new(destination, message.header.destination_prefix_length).ok()?,
        table,
    })
}

fn rule_from(message: &RuleMessage) -> Option<Rule> {
    let family = match message.header.family {
        netlink_packet_route::AddressFamily::Inet => Family::V4,
        netlink_packet_route::AddressFamily::Inet6 => Family::V6,
        _ => return None,
    };
    let mut rule = Rule {
        family,
        priority: 0,
        fwmark: None,
        invert: message.header.flags.contains(RuleFlags::Invert),
        table: u32::from(message.header.table),
    };
    let mut mark = None;
    let mut mask = u32::MAX;
    for attribute in &message.attributes {
        match attribute {
            RuleAttribute::Priority(p) => rule.priority = *p,
            RuleAttribute::Table(t) => rule.table = *t,
            RuleAttribute::FwMark(m) => mark = Some(*m),
            RuleAttribute::FwMask(m) => mask = *m,
            _ => {}
        }
    }
    rule.fwmark = mark.map(|m| (m, mask));
    Some(rule)
}
