//! Which of two direct addresses is the better path (Tailscale's `betterAddr`, reference §1.6):
//! latency first, as a percentage, with a bonus for addresses that tend to stay up (loopback,
//! link-local, private) and for IPv6, and a one-point lead required so two near-equal paths do
//! not flap.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

/// A direct address and the round trip its last pong took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Probed {
    pub addr: SocketAddr,
    pub latency: Duration,
}

/// Whether `a` should replace `b`.
pub fn better(a: Probed, b: Probed) -> bool {
    if a.addr == b.addr {
        return false;
    }
    let mut a_points = bonus(a.addr.ip());
    let mut b_points = bonus(b.addr.ip());
    let (fast, slow) = (a.latency.min(b.latency), a.latency.max(b.latency));
    if !slow.is_zero() {
        let gain = (slow - fast).as_secs_f64() / slow.as_secs_f64() * 100.0;
        if a.latency < b.latency {
            a_points += gain;
        } else if b.latency < a.latency {
            b_points += gain;
        }
    }
    a_points > b_points + 1.0
}

fn bonus(ip: IpAddr) -> f64 {
    let mut points = 0.0;
    if ip.is_loopback() {
        points += 50.0;
    }
    let (link_local, private) = match ip {
        IpAddr::V4(v4) => (v4.is_link_local(), v4.is_private()),
        IpAddr::V6(v6) => (v6.is_unicast_link_local(), v6.is_unique_local()),
    };
    if link_local {
        points += 30.0;
    }
    if private {
        points += 20.0;
    }
    if ip.is_ipv6() {
        points += 10.0;
    }
    points
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probed(addr: &str, ms: u64) -> Probed {
        Probed {
            addr: addr.parse().unwrap(),
            latency: Duration::from_millis(ms),
        }
    }

    #[test]
    fn faster_wins_by_more_than_a_point_and_near_equal_paths_do_not_flap() {
        assert!(better(
            probed("198.51.100.1:1", 10),
            probed("203.0.113.1:1", 20)
        ));
        assert!(!better(
            probed("203.0.113.1:1", 20),
            probed("198.51.100.1:1", 10)
        ));
        // 1 % faster is not enough to move.
        assert!(!better(
            probed("198.51.100.1:1", 99),
            probed("203.0.113.1:1", 100)
        ));
        assert!(!better(
            probed("198.51.100.1:1", 5),
            probed("198.51.100.1:1", 50)
        ));
    }

    #[test]
    fn a_private_address_beats_a_slightly_faster_public_one() {
        // 10 % slower but +20 for being private.
        assert!(better(
            probed("10.0.0.2:1", 11),
            probed("203.0.113.1:1", 10)
        ));
        assert!(!better(
            probed("203.0.113.1:1", 10),
            probed("10.0.0.2:1", 11)
        ));
        assert!(better(
            probed("[2001:db8::1]:1", 10),
            probed("203.0.113.1:1", 10)
        ));
    }
}
