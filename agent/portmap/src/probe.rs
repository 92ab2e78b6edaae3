//! Probing the gateway for NAT-PMP, PCP and UPnP at once from one ephemeral socket.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::Error;
use crate::mapper::Services;
use crate::wire::{natpmp, pcp, ssdp};

/// At most this many datagrams are looked at per probe, so a flood cannot keep us busy.
const MAX_DATAGRAMS: usize = 64;

/// Sends the three probes and collects answers for `window` (or until all three answered).
pub async fn probe(
    gateway: Ipv4Addr,
    local_ip: Ipv4Addr,
    window: Duration,
) -> Result<Services, Error> {
    let socket = UdpSocket::bind(SocketAddrV4::new(local_ip, 0)).await?;
    let pmp_dst = SocketAddr::from((gateway, natpmp::PORT));
    let ssdp_gw = SocketAddr::from((gateway, ssdp::MULTICAST.port()));
    let [all, igd] = ssdp::probe_requests();
    // Sending errors are not fatal: an unreachable multicast route must not hide NAT-PMP.
    let sends: [(&[u8], SocketAddr); 5] = [
        (&natpmp::PUBLIC_ADDRESS_REQUEST, pmp_dst),
        (&pcp::announce_request(local_ip), pmp_dst),
        (&all, ssdp_gw),
        (&all, SocketAddr::V4(ssdp::MULTICAST)),
        (&igd, SocketAddr::V4(ssdp::MULTICAST)),
    ];
    for (bytes, dst) in sends {
        if let Err(e) = socket.send_to(bytes, dst).await {
            tracing::debug!(%dst, error = %e, "probe send failed");
        }
    }
    let mut seen = Services::default();
    let deadline = tokio::time::Instant::now() + window;
    let mut buf = vec![0u8; ssdp::MAX_ANSWER + 1];
    for _ in 0..MAX_DATAGRAMS {
        if seen.natpmp && seen.pcp && seen.upnp {
            break;
        }
        let Ok(got) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await else {
            break;
        };
        let (n, from) = match got {
            Ok(x) => x,
            // ICMP port unreachable from an earlier send surfaces here on Linux; keep listening.
            Err(e) => {
                tracing::debug!(error = %e, "probe recv");
                continue;
            }
        };
        let data = buf.get(..n).unwrap_or_default();
        classify(&mut seen, data, from, gateway);
    }
    Ok(seen)
}

/// Records what one datagram proves. Anything not from the gateway is ignored.
pub fn classify(seen: &mut Services, data: &[u8], from: SocketAddr, gateway: Ipv4Addr) {
    if from.ip() != gateway {
        return;
    }
    match from.port() {
        natpmp::PORT => {
            if natpmp::parse_public_address(data).is_ok() {
                seen.natpmp = true;
            } else if pcp::parse_announce(data).is_ok() {
                seen.pcp = true;
            } else if natpmp::is_natpmp_answer(data) || pcp::is_pcp_answer(data) {
                tracing::debug!(len = data.len(), "gateway answered the probe with an error");
            }
        }
        _ => {
            if ssdp::parse_answer(data, from, gateway).is_ok() {
                seen.upnp = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);

    #[test]
    fn classification() {
        let mut s = Services::default();
        let pmp = [0, 0x80, 0, 0, 0, 0, 0, 1, 44, 0, 0, 1];
        classify(&mut s, &pmp, "10.1.0.9:5351".parse().unwrap(), GW);
        assert_eq!(s, Services::default(), "not from the gateway");
        classify(&mut s, &pmp, "10.1.0.1:5351".parse().unwrap(), GW);
        assert!(s.natpmp && !s.pcp && !s.upnp);
        let mut pcp = vec![2, 0x80, 0, 0];
        pcp.extend_from_slice(&[0; 20]);
        classify(&mut s, &pcp, "10.1.0.1:5351".parse().unwrap(), GW);
        assert!(s.pcp);
        // PCP "unsupported version" answer to our NAT-PMP probe is not NAT-PMP support.
        let mut only = Services::default();
        classify(
            &mut only,
            &[0, 0x80, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0],
            "10.1.0.1:5351".parse().unwrap(),
            GW,
        );
        assert_eq!(only, Services::default());
        classify(
            &mut only,
            b"HTTP/1.1 200 OK\r\nLOCATION: http://10.1.0.1:5000/r.xml\r\n\r\n",
            "10.1.0.1:1900".parse().unwrap(),
            GW,
        );
        assert!(only.upnp);
    }
}
