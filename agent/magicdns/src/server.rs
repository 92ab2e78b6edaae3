//! The tokio shell: listening sockets, the current records, forwarding with limits.

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::answer::{Decision, Transport, answer, servfail};
use crate::error::Error;
use crate::forward::{forward_tcp, forward_udp, read_frame};
use crate::records::{Domains, Records};
use crate::upstream::{QUAD100_V4, QUAD100_V6, without_loops};

/// Queries served on one TCP connection before it is closed (bounds a connection's life).
const MAX_QUERIES_PER_TCP_CONNECTION: usize = 256;
const MAX_UDP_QUERY: usize = 65_535;
/// Fresh port picks tried for a port-0 listen address whose UDP port is taken for TCP.
const BIND_ATTEMPTS: usize = 16;

/// Where and how the resolver runs.
#[derive(Clone, Debug)]
pub struct ResolverConfig {
    /// Addresses to serve on, UDP and TCP each. The addresses must be local already (the
    /// daemon puts 100.100.100.100 on a loopback/dummy link first). Port 0 picks a free port,
    /// the same for UDP and TCP.
    pub listen: Vec<SocketAddr>,
    /// How long one upstream gets to answer before the next is tried.
    pub upstream_timeout: Duration,
    /// Forwarded UDP queries in flight at once; further ones are dropped (clients retry).
    pub max_in_flight: usize,
    /// TCP connections served at once; further ones are closed at once.
    pub max_tcp_connections: usize,
    /// A TCP connection idle this long (or slower to send a query) is closed.
    pub tcp_idle_timeout: Duration,
}

impl Default for ResolverConfig {
    fn default() -> Self {
        Self {
            listen: vec![
                SocketAddr::new(IpAddr::V4(QUAD100_V4), 53),
                SocketAddr::new(IpAddr::V6(QUAD100_V6), 53),
            ],
            upstream_timeout: Duration::from_secs(2),
            max_in_flight: 256,
            max_tcp_connections: 64,
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}

/// What the resolver answers with; replaced whole on every update.
#[derive(Debug, Default)]
struct Snapshot {
    records: Records,
    domains: Domains,
    upstreams: Vec<SocketAddr>,
}

/// The running resolver. Dropping it stops the listeners (forwards in flight finish within
/// their timeout).
#[derive(Debug)]
pub struct Resolver {
    state: watch::Sender<Arc<Snapshot>>,
    local: Vec<SocketAddr>,
    tasks: Vec<JoinHandle<()>>,
}

impl Resolver {
    /// Binds every listen address (UDP and TCP) and starts serving, with no records and no
    /// upstreams until [`Resolver::update`] (forwarded queries get SERVFAIL meanwhile).
    pub async fn bind(config: ResolverConfig) -> Result<Self, Error> {
        if config.listen.is_empty() {
            return Err(Error::NoListenAddress);
        }
        let (state, _) = watch::channel(Arc::new(Snapshot::default()));
        let in_flight = Arc::new(Semaphore::new(config.max_in_flight));
        let connections = Arc::new(Semaphore::new(config.max_tcp_connections));
        let mut resolver = Self {
            state,
            local: Vec::new(),
            tasks: Vec::new(),
        };
        for &addr in &config.listen {
            let (udp, tcp, local) = bind_pair(addr).await?;
            resolver.local.push(local);
            resolver.tasks.push(tokio::spawn(serve_udp(
                Arc::new(udp),
                resolver.state.subscribe(),
                in_flight.clone(),
                config.upstream_timeout,
            )));
            resolver.tasks.push(tokio::spawn(serve_tcp(
                tcp,
                resolver.state.subscribe(),
                connections.clone(),
                config.clone(),
            )));
        }
        Ok(resolver)
    }

    /// The bound addresses (with the ports chosen for port 0).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// Replaces the records, MagicDNS domains and upstreams; the next query sees them. Upstreams
    /// that are Quad100 or one of our listen addresses are dropped (they would loop).
    pub fn update(&self, records: Records, domains: Domains, upstreams: Vec<SocketAddr>) {
        let upstreams = without_loops(upstreams, &self.local);
        self.state.send_replace(Arc::new(Snapshot {
            records,
            domains,
            upstreams,
        }));
    }
}

/// Binds UDP and TCP on one port. With port 0 the port the kernel picks for UDP may be taken
/// for TCP (e.g. by an outgoing connection); a few fresh picks are tried before giving up.
async fn bind_pair(addr: SocketAddr) -> Result<(UdpSocket, TcpListener, SocketAddr), Error> {
    let attempts = if addr.port() == 0 { BIND_ATTEMPTS } else { 1 };
    let mut attempt = 1;
    loop {
        let udp_err = |source| Error::Bind {
            proto: "udp",
            addr,
            source,
        };
        let udp = UdpSocket::bind(addr).await.map_err(udp_err)?;
        let local = udp.local_addr().map_err(udp_err)?;
        match TcpListener::bind(local).await {
            Ok(tcp) => return Ok((udp, tcp, local)),
            Err(source) if attempt < attempts && source.kind() == ErrorKind::AddrInUse => {
                attempt += 1;
            }
            Err(source) => {
                return Err(Error::Bind {
                    proto: "tcp",
                    addr: local,
                    source,
                });
            }
        }
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

async fn serve_udp(
    sock: Arc<UdpSocket>,
    state: watch::Receiver<Arc<Snapshot>>,
    in_flight: Arc<Semaphore>,
    upstream_timeout: Duration,
) {
    let mut buf = vec![0u8; MAX_UDP_QUERY];
    loop {
        let (n, client) = match sock.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(err) => {
                // Errors here are per-datagram (e.g. ICMP reports); keep serving.
                tracing::debug!(%err, "magicdns: udp receive failed");
                continue;
            }
        };
        let query = buf.get(..n).unwrap_or_default();
        let snap = state.borrow().clone();
        match answer(query, &snap.records, &snap.domains, Transport::Udp) {
            Decision::Reply(reply) => send_udp(&sock, &reply, client).await,
            Decision::Drop => {}
            Decision::Forward => {
                let Ok(permit) = in_flight.clone().try_acquire_owned() else {
                    tracing::debug!(%client, "magicdns: too many queries in flight, dropping");
                    continue;
                };
                let sock = sock.clone();
                let query = query.to_vec();
                tokio::spawn(async move {
                    let reply = match forward_udp(&query, &snap.upstreams, upstream_timeout).await {
                        Some(reply) => Some(reply),
                        None => servfail(&query),
                    };
                    if let Some(reply) = reply {
                        send_udp(&sock, &reply, client).await;
                    }
                    drop(permit);
                });
            }
        }
    }
}

async fn send_udp(sock: &UdpSocket, reply: &[u8], client: SocketAddr) {
    if let Err(err) = sock.send_to(reply, client).await {
        tracing::debug!(%client, %err, "magicdns: udp send failed");
    }
}

async fn serve_tcp(
    listener: TcpListener,
    state: watch::Receiver<Arc<Snapshot>>,
    connections: Arc<Semaphore>,
    config: ResolverConfig,
) {
    loop {
        let (stream, client) = match listener.accept().await {
            Ok(got) => got,
            Err(err) => {
                tracing::debug!(%err, "magicdns: tcp accept failed");
                // Usually EMFILE: give descriptors a moment to free up instead of spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            tracing::debug!(%client, "magicdns: too many tcp connections, closing");
            continue;
        };
        let state = state.clone();
        let config = config.clone();
        tokio::spawn(async move {
            serve_tcp_connection(stream, state, &config).await;
            drop(permit);
        });
    }
}

async fn serve_tcp_connection(
    mut stream: TcpStream,
    state: watch::Receiver<Arc<Snapshot>>,
    config: &ResolverConfig,
) {
    for _ in 0..MAX_QUERIES_PER_TCP_CONNECTION {
        let query = match timeout(config.tcp_idle_timeout, read_frame(&mut stream)).await {
            Ok(Ok(query)) => query,
            _ => return,
        };
        let snap = state.borrow().clone();
        let reply = match answer(&query, &snap.records, &snap.domains, Transport::Tcp) {
            Decision::Reply(reply) => Some(reply),
            Decision::Drop => None,
            Decision::Forward => {
                match forward_tcp(&query, &snap.upstreams, config.upstream_timeout).await {
                    Some(reply) => Some(reply),
                    None => servfail(&query),
                }
            }
        };
        let Some(reply) = reply else { return };
        let Ok(len) = u16::try_from(reply.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(reply.len() + 2);
        framed.extend_from_slice(&len.to_be_bytes());
        framed.extend_from_slice(&reply);
        let write = timeout(config.tcp_idle_timeout, stream.write_all(&framed)).await;
        if !matches!(write, Ok(Ok(()))) {
            return;
        }
    }
}
