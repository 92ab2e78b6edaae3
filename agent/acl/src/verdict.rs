//! The policy's own verdict for one packet, by scanning the entries: the oracle that the
//! compiled backends (nftables sets, BPF tries) are tested against.

use std::net::IpAddr;

use crate::model::Policy;

const ICMP: u8 = 1;
const ICMPV6: u8 = 58;
const ICMP_ECHO_REQUEST: u16 = 8;
const ICMPV6_ECHO_REQUEST: u16 = 128;

impl Policy {
    /// Whether the policy lets a new packet from `src` reach `dst`. `port` is the destination
    /// port for TCP/UDP/SCTP, the ICMP type for ICMP/ICMPv6 and 0 otherwise. Only what the
    /// rules grant: ICMP replies and errors, and return traffic of flows this node started, are
    /// decided outside the policy.
    pub fn allows(&self, src: IpAddr, dst: IpAddr, proto: u8, port: u16) -> bool {
        let echo_request = match (proto, src) {
            (ICMP, IpAddr::V4(_)) => Some(port == ICMP_ECHO_REQUEST),
            (ICMPV6, IpAddr::V6(_)) => Some(port == ICMPV6_ECHO_REQUEST),
            (ICMP | ICMPV6, _) => Some(false),
            _ => None,
        };
        if let Some(echo_request) = echo_request {
            return echo_request
                && self
                    .echo()
                    .iter()
                    .any(|(s, d)| s.contains(&src) && d.contains(&dst));
        }
        self.entries().iter().any(|e| {
            e.proto == proto
                && (e.first_port..=e.last_port).contains(&port)
                && e.src.contains(&src)
                && e.dst.contains(&dst)
        })
    }
}

#[cfg(test)]
#[path = "verdict_tests.rs"]
mod tests;
