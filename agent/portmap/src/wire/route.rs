//! The default IPv4 gateway from `/proc/net/route`.

use std::net::Ipv4Addr;

/// Finds the first default route (destination 0, mask 0, flag RTF_GATEWAY) and returns its
/// gateway. The file prints addresses as host-byte-order hex of the network-order bytes, so on
/// little-endian machines "0100000A" is 10.0.0.1.
pub fn default_gateway(proc_net_route: &str) -> Option<Ipv4Addr> {
    const RTF_UP: u16 = 0x1;
    const RTF_GATEWAY: u16 = 0x2;
    proc_net_route.lines().skip(1).find_map(|line| {
        let mut f = line.split_whitespace();
        let _iface = f.next()?;
        let dest = u32::from_str_radix(f.next()?, 16).ok()?;
        let gw = u32::from_str_radix(f.next()?, 16).ok()?;
        let flags = u16::from_str_radix(f.next()?, 16).ok()?;
        let mask = u32::from_str_radix(f.nth(3)?, 16).ok()?;
        let wanted = RTF_UP | RTF_GATEWAY;
        (dest == 0 && mask == 0 && flags & wanted == wanted && gw != 0)
            .then(|| Ipv4Addr::from(gw.to_ne_bytes()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n";

    fn hex(ip: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip))
    }

    #[test]
    fn finds_default_route() {
        let text = format!(
            "{HEADER}eth0\t{}\t00000000\t0001\t0\t0\t0\t{}\t0\t0\t0\neth0\t00000000\t{}\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
            hex([10, 1, 0, 0]),
            hex([255, 255, 255, 0]),
            hex([10, 1, 0, 1])
        );
        assert_eq!(default_gateway(&text), Some(Ipv4Addr::new(10, 1, 0, 1)));
    }

    #[test]
    fn garbage_and_missing() {
        assert_eq!(default_gateway(""), None);
        assert_eq!(default_gateway(HEADER), None);
        assert_eq!(default_gateway(&format!("{HEADER}eth0 zz yy 3")), None);
        // A default route without RTF_GATEWAY (on-link) has no gateway to ask.
        let onlink =
            format!("{HEADER}eth0\t00000000\t00000000\t0001\t0\t0\t0\t00000000\t0\t0\t0\n");
        assert_eq!(default_gateway(&onlink), None);
    }
}
