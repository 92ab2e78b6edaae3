//! Routers: hosts that forward between a WAN segment and LANs, optionally through a NAT.

use std::net::{IpAddr, Ipv4Addr};
use std::ops::Deref;

use ipnet::IpNet;

use crate::cmd;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::link;
use crate::nat::{self, Nat, NatKind};
use crate::segment::{Iface, Kind, Segment, nth_host};

/// A host that forwards IPv4 and IPv6 between its WAN segment and its LANs, with a NAT in
/// between. Dereferences to its [`Host`].
#[derive(Clone, Debug)]
pub struct Router {
    host: Host,
    wan: Segment,
    nat: Nat,
}

impl Router {
    /// Attaches `host` to `wan`, turns forwarding on and installs `nat`.
    pub(crate) fn setup(host: Host, wan: &Segment, nat: Nat) -> Result<Self> {
        let wan_iface = wan.attach(&host)?;
        host.set_sysctl("net.ipv4.ip_forward", "1")?;
        host.set_sysctl("net.ipv6.conf.all.forwarding", "1")?;
        let router = Router {
            host,
            wan: wan.clone(),
            nat,
        };
        if nat.kind != NatKind::None {
            let wan_addr = router.wan_ipv4().ok_or_else(|| Error::NoIpv4Wan {
                router: router.host.name().to_owned(),
            })?;
            if let Some(script) = nat::ruleset(nat, &wan_iface.name, wan_addr) {
                cmd::checked(router.host.command("nft").args(["-f", "-"]), Some(&script))?;
            }
        }
        Ok(router)
    }

    /// Adds a LAN: a bridge inside the router's namespace carrying host number 1 of each subnet
    /// (the gateway). Hosts join it with [`Segment::attach`] and get numbers from 2.
    pub(crate) fn add_lan(&self, subnets: Vec<IpNet>) -> Result<Segment> {
        let index = self
            .host
            .ifaces()
            .iter()
            .filter(|i| i.name.starts_with("lan"))
            .count();
        let bridge = format!("lan{index}");
        let addrs = subnets
            .iter()
            .map(|s| nth_host(*s, 1))
            .collect::<Result<Vec<_>>>()?;
        link::create_bridge(self.host.netns(), &bridge, &addrs)?;
        let lan = Segment::new(
            &format!("{}-{bridge}", self.host.name()),
            subnets,
            Kind::Switch {
                netns: self.host.netns().to_owned(),
                bridge: bridge.clone(),
            },
            2,
            addrs.iter().map(IpNet::addr).collect(),
        );
        self.host.record_iface(Iface {
            name: bridge,
            addrs,
            segment: lan.id(),
        });
        Ok(lan)
    }

    /// The router as a plain host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The segment on the router's WAN side.
    pub fn wan(&self) -> &Segment {
        &self.wan
    }

    /// The NAT the router was made with.
    pub fn nat(&self) -> Nat {
        self.nat
    }

    /// The router's IPv4 address on its WAN segment: the external address of its NAT.
    pub fn wan_ipv4(&self) -> Option<Ipv4Addr> {
        self.host
            .addrs_on(&self.wan)
            .into_iter()
            .find_map(|a| match a {
                IpAddr::V4(v4) => Some(v4),
                IpAddr::V6(_) => None,
            })
    }
}

impl Deref for Router {
    type Target = Host;

    fn deref(&self) -> &Host {
        &self.host
    }
}
