//! Forwarding a query to the upstream resolvers (the I/O half of the `Forward` decision).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::{Instant, timeout_at};

/// Datagrams read from one upstream before giving up on a matching reply: stray or spoofed
/// answers must not keep us reading forever.
const MAX_STRAY_DATAGRAMS: usize = 8;
const MAX_UDP_REPLY: usize = 65_535;

/// Tries the upstreams in order, each for at most `per_upstream`, returning the first reply
/// whose ID matches the query. `None` when all failed.
pub(crate) async fn forward_udp(
    query: &[u8],
    upstreams: &[SocketAddr],
    per_upstream: Duration,
) -> Option<Vec<u8>> {
    for &upstream in upstreams {
        let deadline = Instant::now() + per_upstream;
        match timeout_at(deadline, udp_exchange(query, upstream)).await {
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(err)) => tracing::debug!(%upstream, %err, "magicdns: udp upstream failed"),
            Err(_) => tracing::debug!(%upstream, "magicdns: udp upstream timed out"),
        }
    }
    None
}

/// As [`forward_udp`], over TCP (for queries that came over TCP, e.g. after a truncated reply).
pub(crate) async fn forward_tcp(
    query: &[u8],
    upstreams: &[SocketAddr],
    per_upstream: Duration,
) -> Option<Vec<u8>> {
    for &upstream in upstreams {
        let deadline = Instant::now() + per_upstream;
        match timeout_at(deadline, tcp_exchange(query, upstream)).await {
            Ok(Ok(reply)) => return Some(reply),
            Ok(Err(err)) => tracing::debug!(%upstream, %err, "magicdns: tcp upstream failed"),
            Err(_) => tracing::debug!(%upstream, "magicdns: tcp upstream timed out"),
        }
    }
    None
}

async fn udp_exchange(query: &[u8], upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    // A fresh socket per query: a random source port, and connect() filters other senders
    // and turns ICMP port-unreachable into a quick error instead of a timeout.
    let sock = UdpSocket::bind(local).await?;
    sock.connect(upstream).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; MAX_UDP_REPLY];
    for _ in 0..MAX_STRAY_DATAGRAMS {
        let n = sock.recv(&mut buf).await?;
        let reply = buf.get(..n).unwrap_or_default();
        if answers(query, reply) {
            return Ok(reply.to_vec());
        }
    }
    Err(std::io::Error::other("no matching reply"))
}

async fn tcp_exchange(query: &[u8], upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    let mut stream = TcpStream::connect(upstream).await?;
    let mut framed = Vec::with_capacity(query.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(query);
    stream.write_all(&framed).await?;
    let reply = read_frame(&mut stream).await?;
    if answers(query, &reply) {
        Ok(reply)
    } else {
        Err(std::io::Error::other("reply does not match the query"))
    }
}

/// Reads one length-prefixed DNS message (RFC 1035 4.2.2); at most 64 KiB by construction.
pub(crate) async fn read_frame<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len).await?;
    let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
    r.read_exact(&mut msg).await?;
    Ok(msg)
}

/// Whether `reply` is a response carrying the query's ID.
fn answers(query: &[u8], reply: &[u8]) -> bool {
    match (query.get(..2), reply.get(..3)) {
        (Some(qid), Some(head)) => {
            head.get(..2) == Some(qid) && head.get(2).is_some_and(|flags| flags & 0x80 != 0)
        }
        _ => false,
    }
}
