//! SharedPort against the real kernel, each test in a fresh network namespace (loopback only).
//! Needs root: the namespace, raw sockets, SO_MARK and nftables.
//!
//! Negative cases ("X does not reach us") send X first and then a marker that must reach us
//! through the same path; receiving the marker first shows X was dropped, without relying on
//! a sleep. A short bounded wait afterwards checks nothing else turns up late.

use std::future::Future;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdp};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::Duration;

use io::Write as _;
use meshgate_sharedport::{Datagram, SharedPort, wire};
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;
use tokio::time::timeout;

const P: u16 = 41641;
const FWMARK: u32 = 0x80000;
const WAIT: Duration = Duration::from_secs(5);
const QUIET: Duration = Duration::from_millis(200);

const DISCO: &[u8] = b"TS\xf0\x9f\x92\xac\x01\x02\x03\x04\x05\x06\x07\x08\x09\x0a\x0b\x0c\x0d\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f\x20sealed";
const MARKER: &[u8] = b"TS\xf0\x9f\x92\xacmarker-after-the-negative-case-000000";
const STUN: &[u8] = &[
    0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,
];

/// Runs `body` on a thread of its own that has entered a new network namespace with `lo` up.
/// The namespace goes away when the thread and its sockets do.
fn in_netns<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()>,
{
    let handle = std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers; CLONE_NEWNET affects this thread only.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(
            rc,
            0,
            "unshare(CLONE_NEWNET) (these tests need root): {}",
            io::Error::last_os_error()
        );
        run("ip", &["link", "set", "lo", "up"], None);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            timeout(Duration::from_secs(30), body())
                .await
                .expect("test body timed out");
        });
    });
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
}

/// Runs a command (in the calling thread's namespace), asserting success; returns stdout.
fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> String {
    let mut child = Command::new(cmd)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"));
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("wait");
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nft(script: &str) {
    run("nft", &["-f", "-"], Some(script));
}

fn nft_packets(chain: &str) -> String {
    run("nft", &["list", "chain", "inet", "sp", chain], None)
}

/// A counter from the `Ip:` lines of this thread's namespace's /proc/net/snmp.
fn ip_counter(name: &str) -> u64 {
    let snmp = std::fs::read_to_string("/proc/thread-self/net/snmp").expect("snmp");
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (names, values) = (ip.next().expect("names"), ip.next().expect("values"));
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .find(|(n, _)| *n == name)
        .and_then(|(_, v)| v.parse().ok())
        .expect("counter present")
}

fn has_ipv6() -> bool {
    StdUdp::bind((Ipv6Addr::LOCALHOST, 0)).is_ok()
}

fn tokio_udp(sock: Socket) -> UdpSocket {
    let std: StdUdp = sock.into();
    std.set_nonblocking(true).expect("nonblocking");
    UdpSocket::from_std(std).expect("tokio socket")
}

/// Stand-ins for kernel WireGuard: plain UDP sockets on P for each family.
fn wireguard_stand_ins(v6: bool) -> (UdpSocket, Option<UdpSocket>) {
    let s4 = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
    s4.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, P)).into())
        .expect("bind 0.0.0.0:P");
    let s6 = v6.then(|| {
        let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        s.set_only_v6(true).expect("v6only");
        s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, P)).into())
            .expect("bind [::]:P");
        tokio_udp(s)
    });
    (tokio_udp(s4), s6)
}

async fn client(ip: IpAddr) -> UdpSocket {
    UdpSocket::bind(SocketAddr::new(ip, 0))
        .await
        .expect("bind client")
}

async fn recv(sp: &SharedPort) -> Datagram {
    timeout(WAIT, sp.recv())
        .await
        .expect("SharedPort::recv timed out")
        .expect("SharedPort::recv failed")
}

/// Nothing more arrives, and nothing was dropped in userspace: the kernel filter did the work.
async fn assert_quiet(sp: &SharedPort) {
    if let Ok(got) = timeout(QUIET, sp.recv()).await {
        panic!("unexpected datagram: {got:?}");
    }
    assert_eq!(
        sp.skipped(),
        0,
        "datagrams reached userspace only to be dropped"
    );
}

async fn recv_plain(sock: &UdpSocket) -> (Vec<u8>, SocketAddr) {
    let mut buf = vec![0u8; 2048];
    let (n, from) = timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("plain recv timed out")
        .expect("plain recv failed");
    buf.truncate(n);
    (buf, from)
}

fn wireguard_like() -> Vec<u8> {
    let mut wg = vec![0u8; 148];
    wg[0] = 1;
    wg
}

async fn disco_and_stun_arrive(ip: IpAddr, wg: &UdpSocket, sp: &SharedPort) {
    let c = client(ip).await;
    let to = SocketAddr::new(ip, P);
    c.send_to(DISCO, to).await.expect("send disco");
    c.send_to(STUN, to).await.expect("send stun");
    let src = c.local_addr().expect("local addr");
    let d = recv(sp).await;
    assert_eq!((d.src, d.dst, &d.payload[..]), (src, to, DISCO));
    let s = recv(sp).await;
    assert_eq!((s.src, s.dst, &s.payload[..]), (src, to, STUN));
    // WireGuard's socket gets its copies too: we share, not steal.
    assert_eq!(recv_plain(wg).await, (DISCO.to_vec(), src));
    assert_eq!(recv_plain(wg).await, (STUN.to_vec(), src));
}

#[test]
fn disco_and_stun_reach_us_and_wireguard() {
    in_netns(|| async {
        let v6 = has_ipv6();
        let (wg4, wg6) = wireguard_stand_ins(v6);
        let sp = SharedPort::open(P, FWMARK).expect("open");
        assert_eq!(sp.has_ipv6(), v6);
        disco_and_stun_arrive(Ipv4Addr::LOCALHOST.into(), &wg4, &sp).await;
        match &wg6 {
            Some(wg6) => disco_and_stun_arrive(Ipv6Addr::LOCALHOST.into(), wg6, &sp).await,
            None => eprintln!("no IPv6 in the namespace: IPv6 half skipped"),
        }
        assert_quiet(&sp).await;
    });
}

async fn wireguard_does_not_wake_us(ip: IpAddr, wg: &UdpSocket, sp: &SharedPort) {
    let c = client(ip).await;
    let to = SocketAddr::new(ip, P);
    c.send_to(&wireguard_like(), to).await.expect("send wg");
    c.send_to(MARKER, to).await.expect("send marker");
    assert_eq!(&recv(sp).await.payload[..], MARKER);
    // It was sent to P: WireGuard's socket saw it.
    assert_eq!(recv_plain(wg).await.0, wireguard_like());
}

#[test]
fn wireguard_packets_do_not_reach_us() {
    in_netns(|| async {
        let v6 = has_ipv6();
        let (wg4, wg6) = wireguard_stand_ins(v6);
        let sp = SharedPort::open(P, FWMARK).expect("open");
        wireguard_does_not_wake_us(Ipv4Addr::LOCALHOST.into(), &wg4, &sp).await;
        if let Some(wg6) = &wg6 {
            wireguard_does_not_wake_us(Ipv6Addr::LOCALHOST.into(), wg6, &sp).await;
        }
        assert_quiet(&sp).await;
    });
}

async fn other_port_does_not_reach_us(ip: IpAddr, sp: &SharedPort) {
    let other = UdpSocket::bind(SocketAddr::new(ip, P + 1))
        .await
        .expect("bind P+1");
    let c = client(ip).await;
    c.send_to(DISCO, SocketAddr::new(ip, P + 1))
        .await
        .expect("send");
    c.send_to(MARKER, SocketAddr::new(ip, P))
        .await
        .expect("send marker");
    assert_eq!(&recv(sp).await.payload[..], MARKER);
    assert_eq!(recv_plain(&other).await.0, DISCO);
}

#[test]
fn disco_to_another_port_does_not_reach_us() {
    in_netns(|| async {
        let v6 = has_ipv6();
        let (_wg4, _wg6) = wireguard_stand_ins(v6);
        let sp = SharedPort::open(P, FWMARK).expect("open");
        other_port_does_not_reach_us(Ipv4Addr::LOCALHOST.into(), &sp).await;
        if v6 {
            other_port_does_not_reach_us(Ipv6Addr::LOCALHOST.into(), &sp).await;
        }
        assert_quiet(&sp).await;
    });
}

#[test]
fn send_to_leaves_from_the_shared_port_with_the_fwmark() {
    in_netns(|| async {
        let v6 = has_ipv6();
        let (_wg4, _wg6) = wireguard_stand_ins(v6);
        nft(&format!(
            "table inet sp {{\n chain out {{\n type filter hook output priority 0;\n \
             udp sport {P} meta mark {FWMARK:#x} counter accept\n }}\n }}\n"
        ));
        let sp = SharedPort::open(P, FWMARK).expect("open");
        let mut ips: Vec<IpAddr> = vec![Ipv4Addr::LOCALHOST.into()];
        if v6 {
            ips.push(Ipv6Addr::LOCALHOST.into());
        }
        for ip in &ips {
            let rx = client(*ip).await;
            let to = rx.local_addr().expect("addr");
            // Odd length on purpose: checksum padding must be right for the receiver to keep it.
            sp.send_to(&DISCO[..41], to).await.expect("send_to");
            let (payload, from) = recv_plain(&rx).await;
            assert_eq!(payload, &DISCO[..41]);
            assert_eq!(from, SocketAddr::new(*ip, P), "source is the shared port");
        }
        // An IPv4-mapped destination goes out as IPv4.
        let rx = client(Ipv4Addr::LOCALHOST.into()).await;
        let port = rx.local_addr().expect("addr").port();
        let mapped = SocketAddr::new(Ipv4Addr::LOCALHOST.to_ipv6_mapped().into(), port);
        if v6 {
            sp.send_to(STUN, mapped).await.expect("send_to mapped");
            assert_eq!(recv_plain(&rx).await.0, STUN);
        }
        let expect = ips.len() + usize::from(v6);
        let listing = nft_packets("out");
        assert!(
            listing.contains(&format!("packets {expect} ")),
            "every send carried the fwmark: {listing}"
        );
    });
}

#[test]
fn firewall_input_drop_applies_to_us() {
    in_netns(|| async {
        let v6 = has_ipv6();
        let (_wg4, _wg6) = wireguard_stand_ins(v6);
        let sp = SharedPort::open(P, FWMARK).expect("open");
        let blocked = client(Ipv4Addr::LOCALHOST.into()).await;
        let bport = blocked.local_addr().expect("addr").port();
        nft(&format!(
            "table inet sp {{\n chain in {{\n type filter hook input priority 0;\n \
             udp dport {P} udp sport {bport} counter drop\n }}\n }}\n"
        ));
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, P));
        blocked.send_to(DISCO, to).await.expect("send");
        let marker = client(Ipv4Addr::LOCALHOST.into()).await;
        marker.send_to(MARKER, to).await.expect("send marker");
        assert_eq!(&recv(&sp).await.payload[..], MARKER);
        assert_quiet(&sp).await;
        let listing = nft_packets("in");
        assert!(listing.contains("packets 1 "), "rule matched: {listing}");
    });
}

#[test]
fn firewall_output_drop_stops_our_sends() {
    in_netns(|| async {
        let (_wg4, _wg6) = wireguard_stand_ins(false);
        let sp = SharedPort::open(P, FWMARK).expect("open");
        let rx = client(Ipv4Addr::LOCALHOST.into()).await;
        let to = rx.local_addr().expect("addr");
        nft(&format!(
            "table inet sp {{\n chain out {{\n type filter hook output priority 0;\n \
             udp sport {P} udp dport {} counter drop\n }}\n }}\n",
            to.port()
        ));
        // A netfilter drop on output surfaces as EPERM from the raw send; either way nothing
        // may arrive.
        match sp.send_to(DISCO, to).await {
            Ok(()) => {}
            Err(e) => assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}"),
        }
        let marker = client(Ipv4Addr::LOCALHOST.into()).await;
        marker.send_to(MARKER, to).await.expect("send marker");
        assert_eq!(recv_plain(&rx).await.0, MARKER);
        let listing = nft_packets("out");
        assert!(listing.contains("packets 1 "), "rule matched: {listing}");
    });
}

#[test]
fn ipv4_with_options_is_matched() {
    in_netns(|| async {
        let (_wg4, _wg6) = wireguard_stand_ins(false);
        let sp = SharedPort::open(P, FWMARK).expect("open");
        // An unfiltered raw socket shows what was really on the wire.
        let tap = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).expect("tap");
        tap.set_read_timeout(Some(WAIT)).expect("timeout");
        let c = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        c.bind(&SocketAddr::from((Ipv4Addr::LOCALHOST, 0)).into())
            .expect("bind");
        let opts: [u8; 4] = [1, 1, 1, 0]; // NOP NOP NOP EOL: IHL becomes 6.
        // SAFETY: the fd is live; pointer and length describe `opts`.
        let rc = unsafe {
            libc::setsockopt(
                c.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_OPTIONS,
                opts.as_ptr().cast(),
                opts.len() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "IP_OPTIONS: {}", io::Error::last_os_error());
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, P));
        c.send_to(STUN, &to.into()).expect("send");
        let mut buf = [0u8; 2048];
        let mut ihl = None;
        for _ in 0..16 {
            let n = (&tap).read(&mut buf).expect("tap read");
            let Ok(v) = wire::parse_ipv4(&buf[..n]) else {
                continue;
            };
            if v.dst.port() == P {
                ihl = Some(buf[0] & 0x0f);
                break;
            }
        }
        assert_eq!(ihl, Some(6), "the packet carried IP options");
        let d = recv(&sp).await;
        assert_eq!(&d.payload[..], STUN);
        assert_eq!(d.dst, to);
        assert_quiet(&sp).await;
    });
}

#[test]
fn kernel_fills_a_zero_ipv4_source_in_header_included_packets() {
    in_netns(|| async {
        let rx = client(Ipv4Addr::LOCALHOST.into()).await;
        let to = match rx.local_addr().expect("addr") {
            SocketAddr::V4(a) => a,
            SocketAddr::V6(_) => unreachable!(),
        };
        let raw = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::UDP)).expect("raw");
        raw.set_header_included_v4(true).expect("hdrincl");
        let mut pkt = wire::build_ipv4_udp(
            SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 5555),
            to,
            b"zero src",
        )
        .expect("build");
        // Our checksum covered 0.0.0.0; with no checksum (legal for IPv4) the receiver keeps it.
        pkt[26] = 0;
        pkt[27] = 0;
        let dst = SocketAddrV4::new(*to.ip(), 0);
        raw.send_to(&pkt, &dst.into()).expect("send");
        let (payload, from) = recv_plain(&rx).await;
        assert_eq!(payload, b"zero src");
        assert_eq!(from, SocketAddr::from((Ipv4Addr::LOCALHOST, 5555)));
    });
}

#[test]
fn ipv6_with_extension_headers_is_matched() {
    in_netns(|| async {
        if !has_ipv6() {
            eprintln!("no IPv6 in the namespace: skipped");
            return;
        }
        let (_wg4, _wg6) = wireguard_stand_ins(true);
        let sp = SharedPort::open(P, FWMARK).expect("open");
        // A raw socket for the destination-options header sees the packet from that header on
        // (the kernel offers each header in the chain to raw sockets of its protocol number).
        let tap = Socket::new(
            Domain::IPV6,
            Type::RAW,
            Some(Protocol::from(libc::IPPROTO_DSTOPTS)),
        )
        .expect("tap");
        tap.set_read_timeout(Some(WAIT)).expect("timeout");
        let c = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP)).expect("socket");
        c.bind(&SocketAddr::from((Ipv6Addr::LOCALHOST, 0)).into())
            .expect("bind");
        // Destination options: next header (filled by the kernel), length 0 (8 bytes), PadN.
        let dstopts: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
        // SAFETY: the fd is live; pointer and length describe `dstopts`.
        let rc = unsafe {
            libc::setsockopt(
                c.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_DSTOPTS,
                dstopts.as_ptr().cast(),
                dstopts.len() as libc::socklen_t,
            )
        };
        assert_eq!(rc, 0, "IPV6_DSTOPTS: {}", io::Error::last_os_error());
        let to = SocketAddr::from((Ipv6Addr::LOCALHOST, P));
        c.send_to(DISCO, &to.into()).expect("send");
        let mut buf = [0u8; 2048];
        let n = (&tap).read(&mut buf).expect("tap read");
        assert!(n > 16, "tap saw {n} bytes");
        assert_eq!(
            buf[0],
            libc::IPPROTO_UDP as u8,
            "dst options header, then UDP"
        );
        assert_eq!(u16::from_be_bytes([buf[10], buf[11]]), P);
        let d = recv(&sp).await;
        assert_eq!(&d.payload[..], DISCO);
        assert_eq!(d.dst, to);
        assert_quiet(&sp).await;
    });
}

#[test]
fn fragmented_ipv4_arrives_reassembled() {
    in_netns(|| async {
        // Local delivery reassembles before raw sockets run, so a fragmented disco datagram
        // reaches us once, whole (MF=0, offset 0), and never as pieces.
        run("ip", &["link", "set", "lo", "mtu", "1280"], None);
        let (_wg4, _wg6) = wireguard_stand_ins(false);
        let sp = SharedPort::open(P, FWMARK).expect("open");
        let mut big = DISCO.to_vec();
        big.resize(3000, 0xab);
        let c = client(Ipv4Addr::LOCALHOST.into()).await;
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, P));
        c.send_to(&big, to).await.expect("send");
        let d = recv(&sp).await;
        assert_eq!(d.payload.len(), 3000);
        assert_eq!(&d.payload[..], &big[..]);
        assert!(
            ip_counter("ReasmOKs") >= 1,
            "the datagram really was fragmented"
        );
        assert_quiet(&sp).await;
    });
}
