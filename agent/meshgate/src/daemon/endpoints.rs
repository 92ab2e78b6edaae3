//! The host's own addresses: the endpoints the daemon tells control about.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

pub(super) fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// Tailnet ranges: never advertised as endpoints.
fn is_tailnet(ip: IpAddr) -> bool {
    let ranges: [IpNet; 2] = [
        "100.64.0.0/10".parse().expect("valid"),
        "fd7a:115c:a1e0::/48".parse().expect("valid"),
    ];
    ranges.iter().any(|r| r.contains(&ip))
}

/// Whether `ip` can serve as a WireGuard endpoint for peers: not loopback, link-local,
/// unspecified, multicast or in the tailnet ranges.
fn endpoint_candidate(ip: IpAddr) -> bool {
    let link_local = match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => v6.segments()[0] & 0xffc0 == 0xfe80,
    };
    !(ip.is_loopback() || ip.is_unspecified() || ip.is_multicast() || link_local || is_tailnet(ip))
}

/// The host's addresses (interfaces that are up, except loopback and our own `iface`) with the
/// WireGuard port: the endpoints we tell control about, IPv4 first (peers use the first one
/// until disco picks paths).
pub(super) fn local_endpoints(port: u16, iface: &str) -> Vec<SocketAddr> {
    let mut found: Vec<SocketAddr> = host_prefixes(iface)
        .into_iter()
        .map(|net| net.addr())
        .filter(|ip| endpoint_candidate(*ip))
        .map(|ip| SocketAddr::new(ip, port))
        .collect();
    found.sort_by_key(|e| (e.is_ipv6(), *e));
    found.dedup();
    found
}

/// The networks the host is directly on (not loopback, link-local or tailnet, not `iface`):
/// what `--exit-node-allow-lan-access` keeps out of the tunnel.
pub(super) fn local_networks(iface: &str) -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = host_prefixes(iface)
        .into_iter()
        .filter(|net| endpoint_candidate(net.addr()))
        .map(|net| net.trunc())
        .collect();
    nets.sort();
    nets.dedup();
    nets
}

/// Every address of an interface that is up (except loopback and `iface`), with its prefix
/// length.
fn host_prefixes(iface: &str) -> Vec<IpNet> {
    let mut found = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        tracing::warn!(
            "getifaddrs: {}; no host addresses",
            std::io::Error::last_os_error()
        );
        return found;
    }
    let mut cursor = head;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        let flags = entry.ifa_flags;
        if entry.ifa_addr.is_null()
            || flags & libc::IFF_UP as libc::c_uint == 0
            || flags & libc::IFF_LOOPBACK as libc::c_uint != 0
        {
            continue;
        }
        // SAFETY: ifa_name is a NUL-terminated string owned by the list.
        let name = unsafe { std::ffi::CStr::from_ptr(entry.ifa_name) };
        if name.to_bytes() == iface.as_bytes() {
            continue;
        }
        // SAFETY: ifa_addr is non-null; its family says which sockaddr it is.
        let Some(ip) = (unsafe { sockaddr_ip(entry.ifa_addr) }) else {
            continue;
        };
        // SAFETY: as for ifa_addr; a null netmask means a host prefix.
        let mask = unsafe { sockaddr_ip(entry.ifa_netmask) };
        let len = match mask {
            Some(IpAddr::V4(m)) => u32::from(m).count_ones() as u8,
            Some(IpAddr::V6(m)) => u128::from(m).count_ones() as u8,
            None => {
                if ip.is_ipv4() {
                    32
                } else {
                    128
                }
            }
        };
        if let Ok(net) = IpNet::new(ip, len) {
            found.push(net);
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

/// The IP of an AF_INET or AF_INET6 sockaddr; `None` for null or another family.
///
/// # Safety
/// `addr` is null or points to a sockaddr of the size its family implies.
unsafe fn sockaddr_ip(addr: *const libc::sockaddr) -> Option<IpAddr> {
    if addr.is_null() {
        return None;
    }
    // SAFETY: the caller's promise: a valid sockaddr of the size its family says.
    unsafe {
        match i32::from((*addr).sa_family) {
            libc::AF_INET => {
                let sin = &*(addr as *const libc::sockaddr_in);
                Some(IpAddr::from(
                    u32::from_be(sin.sin_addr.s_addr).to_be_bytes(),
                ))
            }
            libc::AF_INET6 => {
                let sin6 = &*(addr as *const libc::sockaddr_in6);
                Some(IpAddr::from(sin6.sin6_addr.s6_addr))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_candidates() {
        for ok in ["203.0.113.2", "10.1.0.2", "2001:db8::1"] {
            assert!(endpoint_candidate(ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "127.0.0.1",
            "::1",
            "169.254.1.1",
            "fe80::1",
            "100.64.0.7",
            "fd7a:115c:a1e0::1",
            "0.0.0.0",
            "224.0.0.1",
        ] {
            assert!(!endpoint_candidate(no.parse().unwrap()), "{no}");
        }
    }

    #[test]
    fn local_endpoints_skip_loopback_and_carry_the_port() {
        for endpoint in local_endpoints(41641, "meshgate-none") {
            assert_eq!(endpoint.port(), 41641);
            assert!(!endpoint.ip().is_loopback());
        }
    }
}
