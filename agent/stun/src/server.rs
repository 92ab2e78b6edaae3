//! A STUN server for `meshgate derp --stun-port`: answers valid Tailscale Binding requests with
//! the sender's address and counts everything else.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::net::UdpSocket;

use crate::{binding_response, parse_binding_request};

/// Counters, shared with whoever reports metrics.
#[derive(Debug, Default)]
pub struct ServerStats {
    answered: AtomicU64,
    not_stun: AtomicU64,
    rejected: AtomicU64,
    recv_errors: AtomicU64,
    send_errors: AtomicU64,
}

/// A point-in-time copy of [`ServerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Valid Binding requests answered.
    pub answered: u64,
    /// Datagrams that are not STUN at all.
    pub not_stun: u64,
    /// STUN datagrams that failed [`parse_binding_request`]'s checks.
    pub rejected: u64,
    /// Transient receive errors (the server kept going).
    pub recv_errors: u64,
    /// Responses the kernel refused to send.
    pub send_errors: u64,
}

impl ServerStats {
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            answered: self.answered.load(Ordering::Relaxed),
            not_stun: self.not_stun.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
            recv_errors: self.recv_errors.load(Ordering::Relaxed),
            send_errors: self.send_errors.load(Ordering::Relaxed),
        }
    }
}

/// Larger than any request we accept; longer datagrams are truncated by the kernel and then fail
/// the length check, which is what we want.
const RECV_BUF: usize = 1500;

/// Serves until a non-transient receive error, which it returns. Cancel by dropping the future
/// (e.g. aborting its task).
pub async fn serve(socket: UdpSocket, stats: Arc<ServerStats>) -> io::Result<()> {
    let mut buf = [0u8; RECV_BUF];
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) if is_transient(&e) => {
                stats.recv_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            Err(e) => return Err(e),
        };
        let pkt = buf.get(..n).unwrap_or_default();
        if !crate::is_stun(pkt) {
            stats.not_stun.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let Ok(tx) = parse_binding_request(pkt) else {
            stats.rejected.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        let resp = binding_response(tx, from);
        // One unreachable client must not stop the server.
        match socket.send_to(&resp, from).await {
            Ok(_) => stats.answered.fetch_add(1, Ordering::Relaxed),
            Err(_) => stats.send_errors.fetch_add(1, Ordering::Relaxed),
        };
    }
}

/// Errors a UDP socket reports for one earlier datagram (ICMP feedback) or interruption; the
/// socket itself is still fine.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
    )
}
