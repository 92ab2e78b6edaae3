//! A thin tokio driver for [`Probe`]: on a given UDP socket, or over any [`StunTransport`].

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use meshgate_tailcfg::DerpMap;
use tokio::net::UdpSocket;
use tokio::time::Instant;

use crate::{Error, History, Plan, PlanOptions, Probe, Report};

/// Runs one full netcheck on `socket` and records it in `history`, which sets the report's
/// `preferred_derp`. Stops when the probe is done or after `timeout`, whichever is first.
/// Datagrams that are not replies to this run are dropped (the socket must be ours alone for
/// the duration). Send errors (e.g. no IPv6 route) are ignored: those probes just go unanswered.
pub async fn run_once(
    socket: &UdpSocket,
    derp_map: &DerpMap,
    history: &mut History,
    timeout: Duration,
) -> Result<Report, Error> {
    let local = socket.local_addr()?;
    let v6_socket = local.is_ipv6();
    let opts = match local.ip() {
        IpAddr::V4(_) => PlanOptions {
            ipv4: true,
            ipv6: false,
        },
        IpAddr::V6(v6) if v6.is_unspecified() => PlanOptions {
            ipv4: true,
            ipv6: true,
        },
        IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => PlanOptions {
            ipv4: true,
            ipv6: false,
        },
        IpAddr::V6(_) => PlanOptions {
            ipv4: false,
            ipv6: true,
        },
    };
    let mut transport = SocketTransport { socket, v6_socket };
    run_over(&mut transport, opts, derp_map, history, timeout).await
}

/// Where STUN requests go out and responses come in: a socket of our own
/// ([`run_once`]), or WireGuard's port shared with disco, whose reader hands us the STUN
/// datagrams it receives.
pub trait StunTransport {
    /// Sends `packet` to `dst`; errors are ignored (that probe goes unanswered).
    fn send(&mut self, dst: SocketAddr, packet: &[u8]) -> impl Future<Output = ()>;
    /// The next datagram (the driver drops what is not STUN). An error that is not transient
    /// ends the run.
    fn recv(&mut self) -> impl Future<Output = std::io::Result<(SocketAddr, Vec<u8>)>>;
}

struct SocketTransport<'a> {
    socket: &'a UdpSocket,
    v6_socket: bool,
}

impl StunTransport for SocketTransport<'_> {
    async fn send(&mut self, dst: SocketAddr, packet: &[u8]) {
        let dst = if self.v6_socket { to_v6(dst) } else { dst };
        let _ = self.socket.send_to(packet, dst).await;
    }

    async fn recv(&mut self) -> std::io::Result<(SocketAddr, Vec<u8>)> {
        let mut buf = [0u8; 1500];
        let (n, from) = self.socket.recv_from(&mut buf).await?;
        Ok((from, buf.get(..n).unwrap_or_default().to_vec()))
    }
}

/// Runs one full netcheck over `transport` (see [`run_once`]).
pub async fn run_over<T: StunTransport>(
    transport: &mut T,
    opts: PlanOptions,
    derp_map: &DerpMap,
    history: &mut History,
    timeout: Duration,
) -> Result<Report, Error> {
    let plan = Plan::full(derp_map, history.last_report(), opts);
    let start = Instant::now();
    let hard_deadline = start + timeout;
    let mut probe = Probe::new(plan, start.into_std());

    loop {
        let now = Instant::now();
        if now >= hard_deadline {
            break;
        }
        while let Some((dst, pkt)) = probe.poll_transmit(now.into_std()) {
            transport.send(dst, &pkt).await;
        }
        probe.handle_timeout(now.into_std());
        if probe.is_done() {
            break;
        }
        let wake = probe
            .poll_timeout()
            .map_or(hard_deadline, |t| Instant::from_std(t).min(hard_deadline));
        match tokio::time::timeout_at(wake, transport.recv()).await {
            Ok(Ok((from, pkt))) => {
                if meshgate_stun::is_stun(&pkt) {
                    probe.handle_response(from, &pkt, Instant::now().into_std());
                }
            }
            // ICMP feedback for an earlier datagram: the transport is still usable.
            Ok(Err(e)) if is_transient(&e) => {}
            Ok(Err(e)) => return Err(e.into()),
            Err(_elapsed) => {}
        }
    }
    let mut report = probe.report();
    history.add_report(&mut report, Instant::now().into_std(), derp_map, |_| false);
    Ok(report)
}

fn to_v6(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V4(v4) => SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), a.port()),
        IpAddr::V6(_) => a,
    }
}

fn is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::ConnectionRefused
            | K::ConnectionReset
            | K::Interrupted
            | K::WouldBlock
            | K::HostUnreachable
            | K::NetworkUnreachable
    )
}
