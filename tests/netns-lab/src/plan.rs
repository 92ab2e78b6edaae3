//! The default address plan: which subnet a segment gets when the caller names none.
//!
//! "Public" segments use the documentation ranges (RFC 5737), LANs use 10.x. Every lab has the
//! whole plan to itself: two labs may use the same addresses, since they share no namespace.

use std::net::Ipv4Addr;

use ipnet::{IpNet, Ipv4Net};

use crate::error::{Error, Result};

/// Subnets handed to switches ("the internet", a provider's network), in order.
pub const SWITCH_SUBNETS: [&str; 2] = ["203.0.113.0/24", "198.51.100.0/24"];
/// Point-to-point links get consecutive /30s out of this range.
pub const LINK_RANGE: &str = "192.0.2.0/24";
/// LAN number n (from 1) gets 10.n.0.0/24.
pub const LAN_PREFIX_LEN: u8 = 24;

/// What a lab has handed out so far.
#[derive(Debug, Default)]
pub(crate) struct AddressPlan {
    switches: usize,
    links: u32,
    lans: u8,
}

impl AddressPlan {
    pub(crate) fn next_switch(&mut self) -> Result<IpNet> {
        let subnet = SWITCH_SUBNETS
            .get(self.switches)
            .ok_or(Error::NoFreeSubnet { what: "switch" })?;
        self.switches += 1;
        Ok(subnet.parse().expect("valid constant"))
    }

    pub(crate) fn next_link(&mut self) -> Result<IpNet> {
        let range: Ipv4Net = LINK_RANGE.parse().expect("valid constant");
        let subnet = range
            .subnets(30)
            .expect("/30 fits in the range")
            .nth(self.links as usize)
            .ok_or(Error::NoFreeSubnet { what: "link" })?;
        self.links += 1;
        Ok(subnet.into())
    }

    pub(crate) fn next_lan(&mut self) -> Result<IpNet> {
        let n = self
            .lans
            .checked_add(1)
            .ok_or(Error::NoFreeSubnet { what: "LAN" })?;
        self.lans = n;
        let net = Ipv4Net::new(Ipv4Addr::new(10, n, 0, 0), LAN_PREFIX_LEN).expect("valid prefix");
        Ok(net.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hands_out_distinct_subnets_then_refuses() {
        let mut plan = AddressPlan::default();
        assert_eq!(plan.next_switch().unwrap().to_string(), "203.0.113.0/24");
        assert_eq!(plan.next_switch().unwrap().to_string(), "198.51.100.0/24");
        assert!(plan.next_switch().is_err());
        assert_eq!(plan.next_link().unwrap().to_string(), "192.0.2.0/30");
        assert_eq!(plan.next_link().unwrap().to_string(), "192.0.2.4/30");
        assert_eq!(plan.next_lan().unwrap().to_string(), "10.1.0.0/24");
        assert_eq!(plan.next_lan().unwrap().to_string(), "10.2.0.0/24");
    }
}
