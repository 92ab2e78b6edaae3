//! Tailnet address allocation (reference §7.6, ts:net/tsaddr).
//!
//! IPv4 comes from the CGNAT range `100.64.0.0/10`, minus its first and last address, the
//! service IP `100.100.100.100` and ChromeOS's `100.115.92.0/23`. Addresses are handed out in
//! order from a persistent cursor, so an address that was ever given out is not given out again
//! until the cursor has reached the end of the range; only then are free addresses (those of
//! deleted nodes) reused, lowest first. A live node's address is never reused.
//!
//! IPv6 is derived from IPv4 exactly as Tailscale's `Tailscale4To6` does: the low 24 bits of the
//! IPv4 address go into `fd7a:115c:a1e0:ab12:4843:cd96:6200::/104` (every tailnet IPv4 starts
//! with 100, so the mapping is one-to-one).

use std::net::{Ipv4Addr, Ipv6Addr};

/// An inclusive range of IPv4 addresses, as `u32`, to allocate from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct V4Range {
    pub first: u32,
    pub last: u32,
}

/// `100.64.0.1` ..= `100.127.255.254`.
pub(crate) const CGNAT: V4Range = V4Range {
    first: u32::from_be_bytes([100, 64, 0, 1]),
    last: u32::from_be_bytes([100, 127, 255, 254]),
};

const SERVICE_V4: u32 = u32::from_be_bytes([100, 100, 100, 100]);
const CHROMEOS_NET: u32 = u32::from_be_bytes([100, 115, 92, 0]);
const CHROMEOS_MASK: u32 = 0xffff_fe00; // /23

/// The 4to6 prefix `fd7a:115c:a1e0:ab12:4843:cd96:6200::/104`, its 13 fixed bytes.
const V6_PREFIX: [u8; 13] = [
    0xfd, 0x7a, 0x11, 0x5c, 0xa1, 0xe0, 0xab, 0x12, 0x48, 0x43, 0xcd, 0x96, 0x62,
];

/// Addresses inside the range that are never handed out.
pub(crate) fn is_reserved(a: u32) -> bool {
    a == SERVICE_V4 || a & CHROMEOS_MASK == CHROMEOS_NET
}

/// The node IPv6 address that goes with a tailnet IPv4 address.
pub fn v6_for_v4(v4: Ipv4Addr) -> Ipv6Addr {
    let mut b = [0u8; 16];
    b[..13].copy_from_slice(&V6_PREFIX);
    b[13..].copy_from_slice(&v4.octets()[1..]);
    Ipv6Addr::from(b)
}

/// Picks the next IPv4 address.
///
/// `cursor` is the lowest address never handed out (may be `range.last + 1`: exhausted);
/// `in_use` answers whether a live node holds an address; `used_sorted` lists, ascending, every
/// address live nodes hold (only called once the cursor is exhausted). Returns the address and
/// the new cursor, or `None` when every address is taken.
pub(crate) fn next_v4<E>(
    range: V4Range,
    cursor: u32,
    mut in_use: impl FnMut(u32) -> Result<bool, E>,
    used_sorted: impl FnOnce() -> Result<Vec<u32>, E>,
) -> Result<Option<(u32, u32)>, E> {
    let mut a = cursor.max(range.first);
    while a <= range.last {
        if !is_reserved(a) && !in_use(a)? {
            return Ok(Some((a, a + 1)));
        }
        a += 1;
    }
    // The cursor has run off the end: reuse the lowest free address.
    let used = used_sorted()?;
    let mut used = used.iter().copied().peekable();
    for a in range.first..=range.last {
        while used.next_if(|&u| u < a).is_some() {}
        if is_reserved(a) || used.next_if_eq(&a).is_some() {
            continue;
        }
        return Ok(Some((a, cursor)));
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::convert::Infallible;

    fn ip(a: u32) -> Ipv4Addr {
        Ipv4Addr::from(a)
    }

    #[test]
    fn v6_mapping_matches_tailscale() {
        // A real Tailscale node: 100.107.67.11 <-> fd7a:115c:a1e0:ab12:4843:cd96:626b:430b.
        let v6 = v6_for_v4("100.107.67.11".parse().unwrap());
        assert_eq!(
            v6,
            "fd7a:115c:a1e0:ab12:4843:cd96:626b:430b"
                .parse::<Ipv6Addr>()
                .unwrap()
        );
    }

    #[test]
    fn reserved_addresses() {
        assert!(is_reserved(u32::from(Ipv4Addr::new(100, 100, 100, 100))));
        assert!(is_reserved(u32::from(Ipv4Addr::new(100, 115, 92, 0))));
        assert!(is_reserved(u32::from(Ipv4Addr::new(100, 115, 93, 255))));
        assert!(!is_reserved(u32::from(Ipv4Addr::new(100, 115, 94, 0))));
        assert!(!is_reserved(u32::from(Ipv4Addr::new(100, 115, 91, 255))));
        assert_eq!(ip(CGNAT.first), Ipv4Addr::new(100, 64, 0, 1));
        assert_eq!(ip(CGNAT.last), Ipv4Addr::new(100, 127, 255, 254));
    }

    #[test]
    fn skips_reserved_ranges() {
        let around = |start: Ipv4Addr| {
            let mut cursor = u32::from(start);
            let mut got = vec![];
            for _ in 0..3 {
                let (a, c) = next_v4::<Infallible>(CGNAT, cursor, |_| Ok(false), || Ok(vec![]))
                    .unwrap()
                    .unwrap();
                got.push(ip(a));
                cursor = c;
            }
            got
        };
        assert_eq!(
            around(Ipv4Addr::new(100, 100, 100, 99)),
            [
                Ipv4Addr::new(100, 100, 100, 99),
                Ipv4Addr::new(100, 100, 100, 101),
                Ipv4Addr::new(100, 100, 100, 102)
            ]
        );
        assert_eq!(
            around(Ipv4Addr::new(100, 115, 91, 255))[1],
            Ipv4Addr::new(100, 115, 94, 0)
        );
        assert_eq!(
            around(Ipv4Addr::new(0, 0, 0, 0))[0],
            Ipv4Addr::new(100, 64, 0, 1)
        );
    }

    #[test]
    fn reuses_freed_addresses_only_when_exhausted() {
        let range = V4Range {
            first: u32::from(Ipv4Addr::new(100, 64, 0, 1)),
            last: u32::from(Ipv4Addr::new(100, 64, 0, 4)),
        };
        let mut live: Vec<u32> = vec![];
        let mut cursor = range.first;
        let alloc = |live: &mut Vec<u32>, cursor: &mut u32| {
            let snapshot = live.clone();
            let r = next_v4::<Infallible>(
                range,
                *cursor,
                |a| Ok(snapshot.contains(&a)),
                || {
                    let mut s = snapshot.clone();
                    s.sort_unstable();
                    Ok(s)
                },
            )
            .unwrap();
            if let Some((a, c)) = r {
                live.push(a);
                *cursor = c;
            }
            r.map(|(a, _)| a & 0xff)
        };
        assert_eq!(alloc(&mut live, &mut cursor), Some(1));
        assert_eq!(alloc(&mut live, &mut cursor), Some(2));
        live.retain(|&a| a & 0xff != 1); // node with .1 deleted
        assert_eq!(alloc(&mut live, &mut cursor), Some(3)); // not .1 yet
        assert_eq!(alloc(&mut live, &mut cursor), Some(4));
        assert_eq!(alloc(&mut live, &mut cursor), Some(1)); // now reused
        assert_eq!(alloc(&mut live, &mut cursor), None); // full
        live.retain(|&a| a & 0xff != 3);
        assert_eq!(alloc(&mut live, &mut cursor), Some(3));
    }
}
