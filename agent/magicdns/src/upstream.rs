//! Choosing upstream resolvers: from DNSConfig, else from /etc/resolv.conf.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// MagicDNS's IPv4 address (Quad100).
pub const QUAD100_V4: Ipv4Addr = Ipv4Addr::new(100, 100, 100, 100);
/// MagicDNS's IPv6 address.
pub const QUAD100_V6: Ipv6Addr = Ipv6Addr::new(0xfd7a, 0x115c, 0xa1e0, 0, 0, 0, 0, 0x53);
/// The system resolver configuration read when DNSConfig has no resolvers.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";

const DNS_PORT: u16 = 53;

/// Parses one DNSConfig resolver address (`tailcfg::Resolver.addr`): an IP (port 53),
/// `ip:port` or `[v6]:port`. DoH (`https://…`) and peer-API (`http://…`) resolvers are not
/// supported and give `None`.
pub fn parse_upstream(addr: &str) -> Option<SocketAddr> {
    let addr = addr.trim();
    if let Ok(ip) = addr.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DNS_PORT));
    }
    addr.parse::<SocketAddr>().ok()
}

/// The `nameserver` addresses of a resolv.conf text, port 53. Scoped IPv6 addresses
/// (`fe80::1%eth0`) are skipped: the scope cannot be carried in a plain address.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver")).then(|| words.next())?
        })
        .filter_map(|word| word.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, DNS_PORT))
        .collect()
}

/// The upstreams to forward to: the DNSConfig resolvers (`DnsConfig.resolvers[].addr`) when
/// any is usable, else the nameservers of `resolv_conf`; Quad100 itself is dropped either way
/// (forwarding to ourselves would loop). Duplicates are removed, order kept.
pub fn choose_upstreams<'a>(
    config_addrs: impl IntoIterator<Item = &'a str>,
    resolv_conf: &str,
) -> Vec<SocketAddr> {
    let from_config = without_loops(config_addrs.into_iter().filter_map(parse_upstream), &[]);
    if !from_config.is_empty() {
        return from_config;
    }
    without_loops(parse_resolv_conf(resolv_conf), &[])
}

/// Drops Quad100 and our own listen addresses, and duplicates.
pub(crate) fn without_loops(
    upstreams: impl IntoIterator<Item = SocketAddr>,
    own: &[SocketAddr],
) -> Vec<SocketAddr> {
    let mut out: Vec<SocketAddr> = Vec::new();
    for up in upstreams {
        let quad100 = up.ip() == IpAddr::V4(QUAD100_V4) || up.ip() == IpAddr::V6(QUAD100_V6);
        if !quad100 && !own.contains(&up) && !out.contains(&up) {
            out.push(up);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn resolver_addresses() {
        assert_eq!(parse_upstream("1.1.1.1"), Some(sa("1.1.1.1:53")));
        assert_eq!(parse_upstream("10.0.0.53:5353"), Some(sa("10.0.0.53:5353")));
        assert_eq!(
            parse_upstream("2606:4700::1111"),
            Some(sa("[2606:4700::1111]:53"))
        );
        assert_eq!(parse_upstream("[::1]:5300"), Some(sa("[::1]:5300")));
        assert_eq!(parse_upstream("https://dns.example/dns-query"), None);
        assert_eq!(parse_upstream("http://100.64.0.1:8080/dns-query"), None);
        assert_eq!(parse_upstream(""), None);
    }

    #[test]
    fn resolv_conf_nameservers() {
        let text = "# comment\nsearch example.com\nnameserver 9.9.9.9\n  nameserver   ::1 \n\
                    nameserver fe80::1%eth0\nnameserver\nnameservers 8.8.8.8\noptions edns0\n";
        assert_eq!(parse_resolv_conf(text), [sa("9.9.9.9:53"), sa("[::1]:53")]);
    }

    #[test]
    fn config_wins_and_quad100_is_dropped() {
        let conf = "nameserver 100.100.100.100\nnameserver 192.0.2.1\n";
        assert_eq!(
            choose_upstreams(["1.1.1.1", "1.1.1.1", "100.100.100.100"], conf),
            [sa("1.1.1.1:53")]
        );
        assert_eq!(
            choose_upstreams(["https://doh.example/"], conf),
            [sa("192.0.2.1:53")]
        );
        assert_eq!(
            choose_upstreams([], "nameserver fd7a:115c:a1e0::53\n"),
            Vec::<SocketAddr>::new()
        );
        assert_eq!(
            without_loops(
                [sa("127.0.0.1:53"), sa("127.0.0.2:53")],
                &[sa("127.0.0.1:53")]
            ),
            [sa("127.0.0.2:53")]
        );
    }
}
