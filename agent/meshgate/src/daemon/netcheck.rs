//! What the steering learns of the network: netcheck (STUN to the DERP regions, over
//! WireGuard's shared port when it is open: home region, NetInfo, our mapped endpoint) and the
//! port mapping of WireGuard's port on the gateway.

use std::net::SocketAddr;
use std::time::Duration;

use meshgate_netcheck::{History, PlanOptions, Report, run_once, run_over};
use meshgate_portmap::{Mapping, PortMapper, default_gateway};
use meshgate_tailcfg::{DerpMap, NetInfo};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use super::disco::PortTransport;

/// How often netcheck runs (Tailscale re-STUNs every 20–26 s).
const NETCHECK_EVERY: Duration = Duration::from_secs(30);
const NETCHECK_TIMEOUT: Duration = Duration::from_secs(5);

/// Where netcheck sends its STUN requests.
pub(super) enum Transport {
    /// WireGuard's shared port: the mapped address is WireGuard's.
    Port(PortTransport),
    /// A socket of its own (no raw sockets): latencies only, the mapped address is not ours to
    /// advertise.
    OwnSocket,
}

/// What netcheck publishes.
pub(super) struct NetcheckOut {
    pub net_info: watch::Sender<Option<NetInfo>>,
    pub home: watch::Sender<Option<u16>>,
    pub stun: watch::Sender<Option<SocketAddr>>,
    pub report: watch::Sender<Option<(Report, std::time::SystemTime)>>,
}

/// Measures the DERP regions of the latest map every [`NETCHECK_EVERY`] (and when the map
/// changes), publishing NetInfo for control, the home region for the relay and, over the
/// shared port, our STUN-mapped endpoint.
pub(super) async fn netcheck_loop(
    mut transport: Transport,
    mut derp_map: watch::Receiver<Option<DerpMap>>,
    out: NetcheckOut,
) {
    let NetcheckOut {
        net_info,
        home,
        stun,
        report: reports,
    } = out;
    let own_socket = match &transport {
        Transport::Port(_) => None,
        Transport::OwnSocket => match UdpSocket::bind("0.0.0.0:0").await {
            Ok(socket) => Some(socket),
            Err(e) => {
                tracing::warn!("netcheck: no UDP socket ({e}); no home DERP region");
                return;
            }
        },
    };
    let mut history = History::new();
    loop {
        let map = derp_map.borrow_and_update().clone();
        if let Some(map) = map.filter(|m| !m.regions.is_empty()) {
            let result = match (&mut transport, &own_socket) {
                (Transport::Port(port), _) => {
                    let opts = PlanOptions {
                        ipv4: true,
                        ipv6: true,
                    };
                    run_over(port, opts, &map, &mut history, NETCHECK_TIMEOUT).await
                }
                (Transport::OwnSocket, Some(socket)) => {
                    run_once(socket, &map, &mut history, NETCHECK_TIMEOUT).await
                }
                (Transport::OwnSocket, None) => return,
            };
            match result {
                Ok(mut report) => {
                    if report.preferred_derp == 0 {
                        // UDP found no region: keep a home anyway, or no peer could reach us
                        // over DERP. Tailscale picks at random; the lowest ID is as good and
                        // steady.
                        if let Some(first) = fallback_region(&map) {
                            history.set_home(first);
                            report.preferred_derp = first;
                        }
                    }
                    let preferred = u16::try_from(report.preferred_derp)
                        .ok()
                        .filter(|r| *r != 0);
                    tracing::debug!(udp = report.udp, home = ?preferred, mapped = ?report.global_v4, latencies = ?report.region_latency, "netcheck");
                    net_info.send_if_modified(|current| {
                        let new = Some(report.net_info());
                        // Latencies move every run; only a new home or UDP verdict is news.
                        let changed = current.as_ref().map(|c| (c.preferred_derp, c.working_udp))
                            != new.as_ref().map(|n| (n.preferred_derp, n.working_udp));
                        if changed {
                            *current = new;
                        }
                        changed
                    });
                    home.send_if_modified(|current| {
                        let changed = *current != preferred;
                        *current = preferred;
                        changed
                    });
                    if matches!(transport, Transport::Port(_)) && report.global_v4.is_some() {
                        stun.send_if_modified(|current| {
                            let changed = *current != report.global_v4;
                            *current = report.global_v4;
                            changed
                        });
                    }
                    reports.send_replace(Some((report, std::time::SystemTime::now())));
                }
                Err(e) => tracing::warn!("netcheck: {e}"),
            }
        }
        tokio::select! {
            changed = derp_map.changed() => if changed.is_err() { return },
            () = tokio::time::sleep(NETCHECK_EVERY) => {}
        }
    }
}

/// Maps WireGuard's port on the default gateway (UPnP, NAT-PMP or PCP, whichever answers), from
/// the address that routes to it; none without a default IPv4 gateway.
pub(super) fn start_portmap(
    wg_port: u16,
) -> Option<(PortMapper, watch::Receiver<Option<Mapping>>)> {
    let gateway = match default_gateway() {
        Ok(gateway) => gateway,
        Err(e) => {
            tracing::info!("no port mapping: {e}");
            return None;
        }
    };
    let local = std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect((gateway, 5351))?;
            s.local_addr()
        })
        .ok()
        .and_then(|a| match a.ip() {
            std::net::IpAddr::V4(v4) => Some(v4),
            std::net::IpAddr::V6(_) => None,
        })?;
    // No fixed gateway: the mapper follows the default route as it changes.
    match PortMapper::start(wg_port, None, local) {
        Ok(started) => Some(started),
        Err(e) => {
            tracing::info!("no port mapping: {e}");
            None
        }
    }
}

fn fallback_region(map: &DerpMap) -> Option<i32> {
    map.regions
        .iter()
        .filter(|(_, r)| !r.no_measure_no_home && !r.nodes.is_empty())
        .map(|(id, _)| *id)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fallback_home_is_the_lowest_usable_region() {
        let map: DerpMap = serde_json::from_str(
            r#"{"Regions": {
                "5": {"RegionID": 5, "Nodes": [{"Name": "5a", "RegionID": 5, "HostName": "x"}]},
                "2": {"RegionID": 2, "NoMeasureNoHome": true,
                      "Nodes": [{"Name": "2a", "RegionID": 2, "HostName": "y"}]},
                "9": {"RegionID": 9, "Nodes": []}
            }}"#,
        )
        .unwrap();
        assert_eq!(fallback_region(&map), Some(5));
        assert_eq!(fallback_region(&DerpMap::default()), None);
    }
}
