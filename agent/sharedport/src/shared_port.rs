//! The tokio shell: two raw sockets behind `AsyncFd`, one receive and one send entry point.

use std::future::poll_fn;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use socket2::Socket;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use crate::{cmsg, route, socket, sys, wire};

/// Big enough for any IPv4 packet or IPv6 UDP segment (both lengths are 16-bit).
const RECV_BUF_LEN: usize = 65536;
/// Packets skipped (malformed or not ours) in one poll before yielding to the runtime.
const MAX_SKIPS_PER_POLL: usize = 64;

/// One disco or STUN datagram received on the shared port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Datagram {
    /// The sender's address and port.
    pub src: SocketAddr,
    /// Our address it was sent to, and the shared port.
    pub dst: SocketAddr,
    /// The UDP payload (starts with the disco magic or is a STUN message).
    pub payload: Bytes,
}

/// Receive and send disco/STUN on the UDP port kernel WireGuard owns, without taking it.
#[derive(Debug)]
pub struct SharedPort {
    port: u16,
    fwmark: u32,
    v4: AsyncFd<Socket>,
    v6: Option<AsyncFd<Socket>>,
    /// Which family to poll first, alternated so a busy one cannot starve the other.
    v6_first: AtomicBool,
    /// Datagrams the kernel filter passed but userspace refused.
    skipped: AtomicU64,
}

type RecvOne = fn(&Socket, u16, &mut [u8]) -> io::Result<Option<Datagram>>;

impl SharedPort {
    /// Opens the raw sockets for `port`; sends carry `fwmark` (WireGuard's; 0 for none).
    /// IPv6 is skipped when the host has no IPv6. Needs CAP_NET_RAW (and CAP_NET_ADMIN for a
    /// non-zero mark) and a tokio runtime with I/O enabled.
    pub fn open(port: u16, fwmark: u32) -> io::Result<SharedPort> {
        let v4 = sys::register(socket::open_v4(port, fwmark)?)?;
        let v6 = match socket::open_v6(port, fwmark)? {
            Some(s) => Some(sys::register(s)?),
            None => None,
        };
        Ok(SharedPort {
            port,
            fwmark,
            v4,
            v6,
            v6_first: AtomicBool::new(false),
            skipped: AtomicU64::new(0),
        })
    }

    /// The shared UDP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// How many received datagrams were dropped in userspace (malformed, or queued before the
    /// filter was attached). Non-zero in steady state would mean the kernel filter lets through
    /// what it should not.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Whether the IPv6 socket is open.
    pub fn has_ipv6(&self) -> bool {
        self.v6.is_some()
    }

    /// The next disco or STUN datagram sent to the port, from either family. Datagrams that
    /// do not parse are skipped.
    pub async fn recv(&self) -> io::Result<Datagram> {
        let mut buf = vec![0u8; RECV_BUF_LEN];
        poll_fn(|cx| self.poll_recv(cx, &mut buf)).await
    }

    fn poll_recv(&self, cx: &mut Context<'_>, buf: &mut [u8]) -> Poll<io::Result<Datagram>> {
        let v6_first = self.v6_first.fetch_xor(true, Ordering::Relaxed);
        let v4: (&AsyncFd<Socket>, RecvOne) = (&self.v4, recv_one_v4);
        let order = match (&self.v6, v6_first) {
            (Some(v6), true) => [Some((v6, recv_one_v6 as RecvOne)), Some(v4)],
            (Some(v6), false) => [Some(v4), Some((v6, recv_one_v6 as RecvOne))],
            (None, _) => [Some(v4), None],
        };
        for (fd, recv_one) in order.into_iter().flatten() {
            if let Poll::Ready(r) = poll_family(fd, recv_one, self, cx, buf) {
                return Poll::Ready(r);
            }
        }
        Poll::Pending
    }

    /// Sends `payload` to `dst` from the shared port, marked with WireGuard's fwmark. The
    /// source address is the one the kernel's routing picks for `dst` under that mark.
    /// IPv4-mapped IPv6 destinations go out as IPv4.
    pub async fn send_to(&self, payload: &[u8], dst: SocketAddr) -> io::Result<()> {
        match unmap(dst) {
            SocketAddr::V4(dst) => {
                let src = match route::source_for(SocketAddr::V4(dst), self.fwmark)? {
                    IpAddr::V4(ip) => ip,
                    IpAddr::V6(_) => return Err(wire_err(crate::Error::FamilyMismatch)),
                };
                let pkt = wire::build_ipv4_udp(SocketAddrV4::new(src, self.port), dst, payload)
                    .map_err(wire_err)?;
                // Raw sockets take the port as the protocol; 0 means "this socket's".
                let to = SocketAddrV4::new(*dst.ip(), 0).into();
                send_all(&self.v4, &pkt, &to).await
            }
            SocketAddr::V6(dst) => {
                let Some(v6) = &self.v6 else {
                    return Err(io::Error::new(
                        io::ErrorKind::Unsupported,
                        "no IPv6 socket on this host",
                    ));
                };
                let header =
                    wire::udp_header(self.port, dst.port(), payload.len()).map_err(wire_err)?;
                let mut seg = Vec::with_capacity(header.len() + payload.len());
                seg.extend_from_slice(&header);
                seg.extend_from_slice(payload);
                let to = SocketAddrV6::new(*dst.ip(), 0, dst.flowinfo(), dst.scope_id()).into();
                send_all(v6, &seg, &to).await
            }
        }
    }
}

fn wire_err(e: crate::Error) -> io::Error {
    e.into()
}

fn unmap(dst: SocketAddr) -> SocketAddr {
    match dst {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(ip) => SocketAddr::V4(SocketAddrV4::new(ip, v6.port())),
            None => dst,
        },
        v4 => v4,
    }
}

async fn send_all(fd: &AsyncFd<Socket>, pkt: &[u8], to: &socket2::SockAddr) -> io::Result<()> {
    let n = fd
        .async_io(Interest::WRITABLE, |s| s.send_to(pkt, to))
        .await?;
    if n == pkt.len() {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::WriteZero,
            "raw socket sent a partial packet",
        ))
    }
}

fn poll_family(
    fd: &AsyncFd<Socket>,
    recv_one: RecvOne,
    sp: &SharedPort,
    cx: &mut Context<'_>,
    buf: &mut [u8],
) -> Poll<io::Result<Datagram>> {
    for _ in 0..MAX_SKIPS_PER_POLL {
        let mut guard = ready!(fd.poll_read_ready(cx))?;
        match guard.try_io(|inner| recv_one(inner.get_ref(), sp.port, buf)) {
            Ok(Ok(Some(d))) => return Poll::Ready(Ok(d)),
            Ok(Ok(None)) => {
                sp.skipped.fetch_add(1, Ordering::Relaxed);
            }
            Ok(Err(e)) => return Poll::Ready(Err(e)),
            // Readiness was cleared; the next poll_read_ready registers the waker.
            Err(_would_block) => {}
        }
    }
    cx.waker().wake_by_ref();
    Poll::Pending
}

fn ours(port: u16, dst_port: u16, payload: &[u8]) -> bool {
    dst_port == port && wire::is_disco_or_stun(payload)
}

fn recv_one_v4(sock: &Socket, port: u16, buf: &mut [u8]) -> io::Result<Option<Datagram>> {
    let n = (&*sock).read(buf)?;
    let Some(pkt) = buf.get(..n) else {
        return Ok(None);
    };
    Ok(match wire::parse_ipv4(pkt) {
        Ok(v) if ours(port, v.dst.port(), v.payload) => Some(Datagram {
            src: v.src.into(),
            dst: v.dst.into(),
            payload: Bytes::copy_from_slice(v.payload),
        }),
        _ => None,
    })
}

fn is_link_local(ip: &Ipv6Addr) -> bool {
    ip.segments()[0] & 0xffc0 == 0xfe80
}

fn recv_one_v6(sock: &Socket, port: u16, buf: &mut [u8]) -> io::Result<Option<Datagram>> {
    let mut control = [0u8; cmsg::CONTROL_LEN];
    let got = sys::recvmsg(sock, buf, &mut control)?;
    if got.truncated {
        return Ok(None);
    }
    let (Some(seg), Some(ctl)) = (buf.get(..got.len), control.get(..got.control_len)) else {
        return Ok(None);
    };
    let (Some(from), Some(info)) = (got.from.as_socket_ipv6(), cmsg::find_pktinfo6(ctl)) else {
        return Ok(None);
    };
    let Ok(udp) = wire::parse_udp(seg) else {
        return Ok(None);
    };
    if !ours(port, udp.dst_port, udp.payload) {
        return Ok(None);
    }
    let scope = if is_link_local(&info.addr) {
        info.ifindex
    } else {
        0
    };
    Ok(Some(Datagram {
        src: SocketAddrV6::new(*from.ip(), udp.src_port, 0, from.scope_id()).into(),
        dst: SocketAddrV6::new(info.addr, udp.dst_port, 0, scope).into(),
        payload: Bytes::copy_from_slice(udp.payload),
    }))
}
