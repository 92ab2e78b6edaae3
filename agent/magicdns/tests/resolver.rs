//! The tokio resolver on loopback, against a fake upstream resolver.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use meshgate_magicdns::{Domains, Records, Resolver, ResolverConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// Bounds every wait on the network in these tests.
const WAIT: Duration = Duration::from_secs(5);
const UPSTREAM_ANSWER: &str = "203.0.113.9";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn query(id: u16, name: &str, qtype: RecordType) -> Vec<u8> {
    let mut msg = Message::query();
    msg.metadata.id = id;
    msg.metadata.recursion_desired = true;
    msg.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    msg.to_vec().unwrap()
}

fn addresses(reply: &Message) -> Vec<IpAddr> {
    reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(a) => Some(IpAddr::V6(a.0)),
            _ => None,
        })
        .collect()
}

/// The fake upstream's answer: one A record, UPSTREAM_ANSWER, for whatever was asked.
fn upstream_reply(query: &[u8]) -> Vec<u8> {
    let req = Message::from_vec(query).unwrap();
    let mut resp = Message::response(req.metadata.id, req.metadata.op_code);
    resp.metadata.recursion_available = true;
    resp.add_queries(req.queries.iter().cloned());
    let name = req.queries[0].name().clone();
    resp.add_answer(Record::from_rdata(
        name,
        60,
        RData::A(A(UPSTREAM_ANSWER.parse().unwrap())),
    ));
    resp.to_vec().unwrap()
}

/// A tiny upstream on 127.0.0.1 (UDP and TCP on the same port) counting the queries it gets.
struct FakeUpstream {
    addr: SocketAddr,
    queries: Arc<AtomicUsize>,
    tasks: Vec<JoinHandle<()>>,
}

impl FakeUpstream {
    async fn start() -> Self {
        // The UDP port picked may be taken for TCP: try a few (bounded) picks.
        let mut pair = None;
        for _ in 0..16 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let addr = udp.local_addr().unwrap();
            if let Ok(tcp) = TcpListener::bind(addr).await {
                pair = Some((udp, tcp, addr));
                break;
            }
        }
        let (udp, tcp, addr) = pair.expect("a port free for UDP and TCP");
        let queries = Arc::new(AtomicUsize::new(0));
        let counter = queries.clone();
        let udp_task = tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            while let Ok((n, from)) = udp.recv_from(&mut buf).await {
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = udp.send_to(&upstream_reply(&buf[..n]), from).await;
            }
        });
        let counter = queries.clone();
        let tcp_task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = tcp.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let Ok(q) = read_frame(&mut stream).await else {
                    continue;
                };
                let _ = write_frame(&mut stream, &upstream_reply(&q)).await;
            }
        });
        Self {
            addr,
            queries,
            tasks: vec![udp_task, tcp_task],
        }
    }

    fn count(&self) -> usize {
        self.queries.load(Ordering::SeqCst)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn read_frame(stream: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame(stream: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let mut framed = u16::try_from(msg.len()).unwrap().to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    stream.write_all(&framed).await
}

async fn udp_ask(server: SocketAddr, q: &[u8]) -> Message {
    let local = if server.is_ipv4() {
        "127.0.0.1:0"
    } else {
        "[::1]:0"
    };
    let sock = UdpSocket::bind(local).await.unwrap();
    sock.send_to(q, server).await.unwrap();
    let mut buf = vec![0u8; 65_535];
    let (n, from) = timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .expect("reply within the test's bound")
        .unwrap();
    assert_eq!(from, server);
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.metadata.id.to_be_bytes(), q[..2]);
    reply
}

async fn tcp_ask(server: SocketAddr, q: &[u8]) -> Message {
    let mut stream = timeout(WAIT, TcpStream::connect(server))
        .await
        .unwrap()
        .unwrap();
    write_frame(&mut stream, q).await.unwrap();
    let reply = timeout(WAIT, read_frame(&mut stream))
        .await
        .unwrap()
        .unwrap();
    let reply = Message::from_vec(&reply).unwrap();
    assert_eq!(reply.metadata.id.to_be_bytes(), q[..2]);
    reply
}

fn records() -> Records {
    Records::new([
        (
            "host.tail.ts.net.",
            vec![ip("100.64.0.1"), ip("fd7a:115c:a1e0::1")],
        ),
        ("peer.tail.ts.net.", vec![ip("100.64.0.2")]),
    ])
}

async fn start(upstream_timeout: Duration) -> Resolver {
    Resolver::bind(ResolverConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        upstream_timeout,
        ..ResolverConfig::default()
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn tailnet_names_locally_the_rest_upstream() {
    let upstream = FakeUpstream::start().await;
    let resolver = start(Duration::from_secs(2)).await;
    resolver.update(
        records(),
        Domains::new(["tail.ts.net."]),
        vec![upstream.addr],
    );
    let server = resolver.local_addrs()[0];
    assert_ne!(server.port(), 0);

    let reply = udp_ask(server, &query(1, "host.tail.ts.net.", RecordType::A)).await;
    assert_eq!(addresses(&reply), [ip("100.64.0.1")]);
    let reply = udp_ask(server, &query(2, "Host.Tail.TS.net.", RecordType::AAAA)).await;
    assert_eq!(addresses(&reply), [ip("fd7a:115c:a1e0::1")]);
    let reply = udp_ask(server, &query(3, "ghost.tail.ts.net.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(
        upstream.count(),
        0,
        "tailnet names never leave the resolver"
    );

    let reply = udp_ask(server, &query(4, "www.example.org.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(addresses(&reply), [ip(UPSTREAM_ANSWER)]);
    assert_eq!(upstream.count(), 1);
}

#[tokio::test]
async fn tcp_queries_are_answered_and_forwarded() {
    let upstream = FakeUpstream::start().await;
    let resolver = start(Duration::from_secs(2)).await;
    resolver.update(
        records(),
        Domains::new(["tail.ts.net"]),
        vec![upstream.addr],
    );
    let server = resolver.local_addrs()[0];

    let reply = tcp_ask(server, &query(10, "peer.tail.ts.net.", RecordType::A)).await;
    assert_eq!(addresses(&reply), [ip("100.64.0.2")]);
    let reply = tcp_ask(server, &query(11, "www.example.org.", RecordType::A)).await;
    assert_eq!(addresses(&reply), [ip(UPSTREAM_ANSWER)]);
    assert_eq!(upstream.count(), 1, "forwarded over TCP");

    // Two queries on one connection.
    let mut stream = TcpStream::connect(server).await.unwrap();
    for id in [12u16, 13] {
        write_frame(&mut stream, &query(id, "host.tail.ts.net.", RecordType::A))
            .await
            .unwrap();
        let reply = timeout(WAIT, read_frame(&mut stream))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(Message::from_vec(&reply).unwrap().metadata.id, id);
    }
}

#[tokio::test]
async fn upstream_down_gives_servfail_within_the_timeout() {
    // A socket that takes queries and never answers: only the timeout can end the wait.
    let blackhole = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let per_upstream = Duration::from_millis(300);
    let resolver = start(per_upstream).await;
    resolver.update(
        records(),
        Domains::new(["tail.ts.net"]),
        vec![blackhole.local_addr().unwrap()],
    );
    let server = resolver.local_addrs()[0];

    let started = Instant::now();
    let reply = udp_ask(server, &query(20, "www.example.org.", RecordType::A)).await;
    let took = started.elapsed();
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(
        took >= per_upstream,
        "answered before the timeout: {took:?}"
    );
    // Generous slack: the builders are shared and busy.
    assert!(
        took < per_upstream + Duration::from_secs(2),
        "SERVFAIL too late: {took:?}"
    );
    let mut buf = [0u8; 512];
    let (n, _) = blackhole.try_recv_from(&mut buf).unwrap();
    assert!(
        n >= 12 && buf[..2] == 20u16.to_be_bytes(),
        "the query reached the upstream"
    );

    // A dead upstream first, a live one second: the live one answers.
    let upstream = FakeUpstream::start().await;
    resolver.update(
        records(),
        Domains::new(["tail.ts.net"]),
        vec![blackhole.local_addr().unwrap(), upstream.addr],
    );
    let reply = udp_ask(server, &query(21, "www.example.org.", RecordType::A)).await;
    assert_eq!(addresses(&reply), [ip(UPSTREAM_ANSWER)]);

    // Over TCP, a closed port fails fast.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    resolver.update(records(), Domains::new(["tail.ts.net"]), vec![closed]);
    let reply = tcp_ask(server, &query(22, "www.example.org.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn no_upstreams_and_loops_give_servfail() {
    let resolver = start(Duration::from_millis(300)).await;
    let server = resolver.local_addrs()[0];
    let reply = udp_ask(server, &query(30, "www.example.org.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    // Ourselves as the upstream is dropped rather than looped through.
    resolver.update(records(), Domains::new(["tail.ts.net"]), vec![server]);
    let reply = udp_ask(server, &query(31, "www.example.org.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
}

#[tokio::test]
async fn record_updates_take_effect() {
    let resolver = start(Duration::from_secs(1)).await;
    let server = resolver.local_addrs()[0];
    let domains = || Domains::new(["tail.ts.net"]);
    resolver.update(records(), domains(), Vec::new());

    let reply = udp_ask(server, &query(40, "new.tail.ts.net.", RecordType::A)).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);

    resolver.update(
        Records::new([("new.tail.ts.net.", vec![ip("100.64.0.40")])]),
        domains(),
        Vec::new(),
    );
    let reply = udp_ask(server, &query(41, "new.tail.ts.net.", RecordType::A)).await;
    assert_eq!(addresses(&reply), [ip("100.64.0.40")]);
    let reply = udp_ask(server, &query(42, "host.tail.ts.net.", RecordType::A)).await;
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NXDomain,
        "old peer gone"
    );
}

#[tokio::test]
async fn garbage_gets_formerr_and_the_server_keeps_serving() {
    let resolver = start(Duration::from_secs(1)).await;
    resolver.update(records(), Domains::new(["tail.ts.net"]), Vec::new());
    let server = resolver.local_addrs()[0];
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    // Too short for a header: dropped silently.
    sock.send_to(&[1, 2, 3], server).await.unwrap();
    // A header claiming a question that is not there: FORMERR.
    let bad = [0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0x05];
    sock.send_to(&bad, server).await.unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = timeout(WAIT, sock.recv_from(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.metadata.id, 0xabcd);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    let reply = udp_ask(server, &query(50, "host.tail.ts.net.", RecordType::A)).await;
    assert_eq!(addresses(&reply), [ip("100.64.0.1")]);
}

#[tokio::test]
async fn serves_every_listen_address_including_ipv6_loopback() {
    let upstream = FakeUpstream::start().await;
    let resolver = Resolver::bind(ResolverConfig {
        listen: vec!["127.0.0.1:0".parse().unwrap(), "[::1]:0".parse().unwrap()],
        ..ResolverConfig::default()
    })
    .await
    .unwrap();
    resolver.update(
        records(),
        Domains::new(["tail.ts.net"]),
        vec![upstream.addr],
    );
    let [v4, v6] = resolver.local_addrs() else {
        panic!("two listen addresses: {:?}", resolver.local_addrs());
    };
    assert!(v4.is_ipv4() && v6.is_ipv6());
    for &server in [v4, v6] {
        let reply = udp_ask(server, &query(60, "host.tail.ts.net.", RecordType::AAAA)).await;
        assert_eq!(addresses(&reply), [ip("fd7a:115c:a1e0::1")]);
        let reply = tcp_ask(server, &query(61, "host.tail.ts.net.", RecordType::A)).await;
        assert_eq!(addresses(&reply), [ip("100.64.0.1")]);
    }
    let reply = udp_ask(*v6, &query(62, "www.example.org.", RecordType::A)).await;
    assert_eq!(addresses(&reply), [ip(UPSTREAM_ANSWER)]);
}
