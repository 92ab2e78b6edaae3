//! Options of accepted control connections: prompt deltas and prompt dead-peer detection.
//!
//! A router whose host vanishes (link cut, power loss: no FIN, no RST) would otherwise keep
//! its map stream, and with it its online state and its subnets, for TCP's minutes of
//! retransmissions (~15 min) or, when idle, for ever. Two kernel mechanisms bound that:
//!
//! - `TCP_USER_TIMEOUT`: data (a delta, a keep-alive) unacknowledged for this long aborts the
//!   connection;
//! - TCP keepalive probes after [`TCP_KEEPALIVE_IDLE`] of silence, every
//!   [`TCP_KEEPALIVE_INTERVAL`]: with `TCP_USER_TIMEOUT` set, Linux aborts an idle connection
//!   once probes are out and nothing was received for the user timeout.
//!
//! So a dead peer is dropped about `TCP_USER_TIMEOUT` after it last answered, whether or not
//! the server had anything to send; live peers answer the probes and are not affected. A
//! client that stops reading but whose kernel still acknowledges (a stalled client, zero
//! window) is not dropped by this.

use std::io;
use std::time::Duration;

use socket2::{SockRef, TcpKeepalive};
use tokio::net::TcpStream;

/// Default `TCP_USER_TIMEOUT`: how long a peer may leave everything unacknowledged.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(10);
/// Default idle time before the first keepalive probe. Live idle clients cost one probe and
/// one ACK per this period.
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(5);
/// Time between keepalive probes once they started (the kernel's unit is whole seconds).
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);

/// Sets `TCP_NODELAY` (map deltas are small writes: Nagle + delayed ACK held some for 40 ms),
/// `TCP_USER_TIMEOUT` = `user_timeout` and keepalive probes after `keepalive_idle` (at least
/// 1 s) every [`TCP_KEEPALIVE_INTERVAL`].
///
/// # Errors
/// The first option the kernel refused.
pub(crate) fn prepare(
    tcp: &TcpStream,
    user_timeout: Duration,
    keepalive_idle: Duration,
) -> io::Result<()> {
    tcp.set_nodelay(true)?;
    let sock = SockRef::from(tcp);
    sock.set_tcp_user_timeout(Some(user_timeout))?;
    let idle = keepalive_idle.max(Duration::from_secs(1));
    // The user timeout decides when to give up; the count only matters were it unset.
    let after_idle = user_timeout.saturating_sub(idle).as_secs();
    let retries = u32::try_from(after_idle / TCP_KEEPALIVE_INTERVAL.as_secs())
        .unwrap_or(u32::MAX)
        .clamp(1, 127);
    let keepalive = TcpKeepalive::new()
        .with_time(idle)
        .with_interval(TCP_KEEPALIVE_INTERVAL)
        .with_retries(retries);
    sock.set_tcp_keepalive(&keepalive)?;
    sock.set_keepalive(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn options_are_set_on_the_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (server_side, _) = accepted.unwrap();
        let _client = client.unwrap();
        prepare(&server_side, Duration::from_secs(7), Duration::from_secs(3)).unwrap();

        let sock = SockRef::from(&server_side);
        assert!(server_side.nodelay().unwrap());
        assert_eq!(
            sock.tcp_user_timeout().unwrap(),
            Some(Duration::from_secs(7))
        );
        assert!(sock.keepalive().unwrap());
        assert_eq!(sock.tcp_keepalive_time().unwrap(), Duration::from_secs(3));
        assert_eq!(
            sock.tcp_keepalive_interval().unwrap(),
            TCP_KEEPALIVE_INTERVAL
        );
        assert_eq!(sock.tcp_keepalive_retries().unwrap(), 4);
    }
}
