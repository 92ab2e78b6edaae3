//! Segments: the layer-2 networks hosts are attached to, and how their addresses are numbered.
//!
//! A host attached as the n-th member of a segment gets host number n in every subnet of the
//! segment (10.1.0.n, fd00:1::n), which keeps addresses predictable in tests and logs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;

use crate::error::{Error, Result};
use crate::host::Host;
use crate::link;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A layer-2 network: a switch (bridge) that any number of hosts can join, a LAN behind a
/// router, or a point-to-point link. Cheap to clone; clones are the same segment.
#[derive(Clone, Debug)]
pub struct Segment(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    id: u64,
    name: String,
    subnets: Vec<IpNet>,
    kind: Kind,
    /// Host number the next member gets.
    next_member: Mutex<u32>,
    /// The router's addresses, for a LAN.
    gateways: Vec<IpAddr>,
}

#[derive(Debug)]
pub(crate) enum Kind {
    /// Members hang off bridge `bridge` in namespace `netns` by veth pairs.
    Switch { netns: String, bridge: String },
    /// A veth pair whose two ends were assigned when it was made.
    Link,
}

impl Segment {
    pub(crate) fn new(
        name: &str,
        subnets: Vec<IpNet>,
        kind: Kind,
        first_member: u32,
        gateways: Vec<IpAddr>,
    ) -> Self {
        Segment(Arc::new(Inner {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: name.to_owned(),
            subnets,
            kind,
            next_member: Mutex::new(first_member),
            gateways,
        }))
    }

    /// The name given at creation.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// The segment's subnets (IPv4 and/or IPv6).
    pub fn subnets(&self) -> &[IpNet] {
        &self.0.subnets
    }

    /// The router's addresses on a LAN made by `Lab::add_lan` (empty for other segments).
    pub fn gateways(&self) -> &[IpAddr] {
        &self.0.gateways
    }

    /// The router's IPv4 address on a LAN, the usual default gateway.
    pub fn gateway_v4(&self) -> Option<Ipv4Addr> {
        self.0.gateways.iter().find_map(|a| match a {
            IpAddr::V4(v4) => Some(*v4),
            IpAddr::V6(_) => None,
        })
    }

    /// Attaches `host` to this switch or LAN by a new veth pair and gives it the next host
    /// number in every subnet. Fails on a point-to-point link (it has its two ends already).
    pub fn attach(&self, host: &Host) -> Result<Iface> {
        let Kind::Switch { netns, bridge } = &self.0.kind else {
            return Err(Error::LinkFull {
                segment: self.name().to_owned(),
            });
        };
        let member = self.take_member_number();
        let addrs = self.addresses_for(member)?;
        let iface = Iface {
            name: host.next_iface_name(),
            addrs,
            segment: self.id(),
        };
        let port = format!("{bridge}p{member}");
        let bridge_sends = !self.0.gateways.is_empty();
        link::attach_to_bridge(host.netns(), &iface, netns, bridge, &port, bridge_sends)?;
        host.record_iface(iface.clone());
        Ok(iface)
    }

    pub(crate) fn id(&self) -> u64 {
        self.0.id
    }

    pub(crate) fn take_member_number(&self) -> u32 {
        let mut next = self.0.next_member.lock().unwrap_or_else(|p| p.into_inner());
        let member = *next;
        *next += 1;
        member
    }

    /// Host number `member` in each subnet, with the subnet's prefix length.
    pub(crate) fn addresses_for(&self, member: u32) -> Result<Vec<IpNet>> {
        self.0
            .subnets
            .iter()
            .map(|subnet| nth_host(*subnet, member))
            .collect()
    }
}

impl PartialEq for Segment {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for Segment {}

/// One interface of a host: its name inside the host's namespace and its addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Iface {
    /// Interface name inside the host's namespace (`eth0`, `lan0`, ...).
    pub name: String,
    /// Addresses with the segment's prefix length.
    pub addrs: Vec<IpNet>,
    pub(crate) segment: u64,
}

/// Host number `n` of `subnet` (n = 1 is the first usable address), keeping the prefix length.
pub(crate) fn nth_host(subnet: IpNet, n: u32) -> Result<IpNet> {
    let full = || Error::SubnetFull { subnet };
    let addr = match subnet.trunc() {
        IpNet::V4(net) => {
            let host = u32::from(net.network()).checked_add(n).ok_or_else(full)?;
            let host = Ipv4Addr::from(host);
            // The broadcast address is not a host address (a /31 has none to spare).
            if n == 0 || !net.contains(&host) || (net.prefix_len() < 31 && host == net.broadcast())
            {
                return Err(full());
            }
            IpAddr::V4(host)
        }
        IpNet::V6(net) => {
            let host = u128::from(net.network())
                .checked_add(u128::from(n))
                .ok_or_else(full)?;
            let host = Ipv6Addr::from(host);
            if n == 0 || !net.contains(&host) {
                return Err(full());
            }
            IpAddr::V6(host)
        }
    };
    Ok(IpNet::new(addr, subnet.prefix_len()).expect("prefix length taken from a valid subnet"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn numbers_hosts_within_the_subnet() {
        assert_eq!(nth_host(net("10.1.0.0/24"), 1).unwrap(), net("10.1.0.1/24"));
        assert_eq!(
            nth_host(net("10.1.0.0/24"), 254).unwrap(),
            net("10.1.0.254/24")
        );
        assert!(nth_host(net("10.1.0.0/24"), 255).is_err(), "broadcast");
        assert!(nth_host(net("10.1.0.0/24"), 0).is_err(), "network address");
        assert_eq!(
            nth_host(net("192.0.2.4/30"), 2).unwrap(),
            net("192.0.2.6/30")
        );
        assert!(nth_host(net("192.0.2.4/30"), 3).is_err());
        assert_eq!(
            nth_host(net("fd00:1::/64"), 7).unwrap(),
            net("fd00:1::7/64")
        );
    }
}
