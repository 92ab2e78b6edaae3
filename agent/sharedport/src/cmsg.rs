//! Reads `IPV6_PKTINFO` out of a received control buffer, in safe code.
//!
//! The layout is the kernel's (`struct cmsghdr`: `size_t len; int level; int type;`, data
//! aligned to `size_t`), so it is parsed by hand instead of through the `CMSG_*` pointer macros.

use std::net::Ipv6Addr;

const ALIGN: usize = size_of::<usize>();
const INT: usize = size_of::<libc::c_int>();
/// `sizeof(struct in6_pktinfo)`: 16-byte address then a 32-bit interface index.
const IN6_PKTINFO_LEN: usize = 20;

const fn align(n: usize) -> usize {
    (n + ALIGN - 1) & !(ALIGN - 1)
}

/// `CMSG_LEN(0)` aligned: where the data of a control message starts.
const HDR: usize = align(ALIGN + 2 * INT);

/// Room for one `IPV6_PKTINFO` message (`CMSG_SPACE(20)`), with slack for others.
pub const CONTROL_LEN: usize = 2 * (HDR + align(IN6_PKTINFO_LEN));

/// The destination address and receiving interface from `IPV6_PKTINFO`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pktinfo6 {
    /// The packet's destination address.
    pub addr: Ipv6Addr,
    /// The interface it arrived on.
    pub ifindex: u32,
}

fn native_usize(b: &[u8]) -> Option<usize> {
    Some(usize::from_ne_bytes(b.get(..ALIGN)?.try_into().ok()?))
}

fn native_int(b: &[u8]) -> Option<libc::c_int> {
    Some(libc::c_int::from_ne_bytes(b.get(..INT)?.try_into().ok()?))
}

/// Finds the first `IPV6_PKTINFO` message in `control` (the bytes the kernel filled in).
pub fn find_pktinfo6(control: &[u8]) -> Option<Pktinfo6> {
    let mut at = 0usize;
    // Each message is at least HDR bytes, so this bounds the walk.
    for _ in 0..=control.len() / HDR {
        let rest = control.get(at..)?;
        let len = native_usize(rest)?;
        if len < HDR || len > rest.len() {
            return None;
        }
        let level = native_int(rest.get(ALIGN..)?)?;
        let kind = native_int(rest.get(ALIGN + INT..)?)?;
        if level == libc::IPPROTO_IPV6 && kind == libc::IPV6_PKTINFO {
            let data = rest.get(HDR..len)?;
            let addr: [u8; 16] = data.get(..16)?.try_into().ok()?;
            let ifindex = u32::from_ne_bytes(data.get(16..20)?.try_into().ok()?);
            return Some(Pktinfo6 {
                addr: Ipv6Addr::from(addr),
                ifindex,
            });
        }
        at = at.checked_add(align(len))?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(level: libc::c_int, kind: libc::c_int, data: &[u8]) -> Vec<u8> {
        let mut m = (HDR + data.len()).to_ne_bytes().to_vec();
        m.extend_from_slice(&level.to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.resize(HDR, 0);
        m.extend_from_slice(data);
        m.resize(align(m.len()), 0);
        m
    }

    #[test]
    fn finds_pktinfo_after_another_message() {
        let mut data = Ipv6Addr::LOCALHOST.octets().to_vec();
        data.extend_from_slice(&7u32.to_ne_bytes());
        let mut buf = message(libc::SOL_SOCKET, libc::SO_TIMESTAMP, &[0; 16]);
        buf.extend(message(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &data));
        assert!(buf.len() <= CONTROL_LEN);
        assert_eq!(
            find_pktinfo6(&buf),
            Some(Pktinfo6 {
                addr: Ipv6Addr::LOCALHOST,
                ifindex: 7
            })
        );
    }

    #[test]
    fn garbage_does_not_panic() {
        assert_eq!(find_pktinfo6(&[]), None);
        assert_eq!(find_pktinfo6(&[0xff; 64]), None);
        assert_eq!(find_pktinfo6(&[0; 64]), None);
        let short = message(libc::IPPROTO_IPV6, libc::IPV6_PKTINFO, &[0; 4]);
        assert_eq!(find_pktinfo6(&short), None);
    }
}
