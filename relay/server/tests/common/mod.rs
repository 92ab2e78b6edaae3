//! Test helpers: a relay on loopback, clients, raw connections.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meshgate_derp::frame::{self, CLIENT_MAX_FRAME};
use meshgate_derp::handshake::{self, ClientInfo};
use meshgate_derp::{ClientOptions, DerpClient, DerpEvents, DerpTarget, Event, Frame};
use meshgate_relay::{Config, Relay};
use meshgate_tailcfg::{NodePrivate, NodePublic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

pub const T: Duration = Duration::from_secs(10);

pub async fn start(config: Config) -> (Relay, SocketAddr) {
    let relay = Relay::new(config).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let r = relay.clone();
    tokio::spawn(async move { r.serve(listener).await });
    (relay, addr)
}

pub fn plain(addr: SocketAddr) -> DerpTarget {
    DerpTarget::from_url(&format!("http://{addr}"), "", None).unwrap()
}

pub async fn client(target: &DerpTarget) -> (DerpClient, DerpEvents, NodePrivate) {
    let key = NodePrivate::generate();
    let (c, e) = meshgate_derp::connect(target, key.clone(), &ClientOptions::default())
        .await
        .unwrap();
    (c, e, key)
}

/// The next packet event (other events are skipped), within `T`.
pub async fn next_packet(ev: &mut DerpEvents) -> (NodePublic, Bytes) {
    timeout(T, async {
        loop {
            match ev.recv().await.unwrap() {
                Event::Packet { src, data } => return (src, data),
                _ => continue,
            }
        }
    })
    .await
    .expect("no packet in time")
}

/// Sends `msg` from `a` to `b` and checks that it arrives from `a`.
pub async fn exchange(a: &DerpClient, b: &DerpClient, bev: &mut DerpEvents, msg: &'static [u8]) {
    a.send(b.public_key(), Bytes::from_static(msg))
        .await
        .unwrap();
    let (src, data) = next_packet(bev).await;
    assert_eq!((src, &data[..]), (a.public_key(), msg));
}

/// A raw connection: HTTP upgrade and ServerKey read; returns the stream, leftover buffer and
/// server key.
pub async fn raw_upgrade(addr: SocketAddr) -> (TcpStream, BytesMut, NodePublic) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&meshgate_derp::http::upgrade_request("x", None))
        .await
        .unwrap();
    let mut buf = BytesMut::new();
    let (n, key) = loop {
        if let Some(r) = meshgate_derp::http::parse_upgrade_response(&buf).unwrap() {
            break r;
        }
        assert!(timeout(T, s.read_buf(&mut buf)).await.unwrap().unwrap() > 0);
    };
    let _ = buf.split_to(n);
    let f = loop {
        if let Some(f) = frame::decode(&mut buf, CLIENT_MAX_FRAME).unwrap() {
            break f;
        }
        assert!(timeout(T, s.read_buf(&mut buf)).await.unwrap().unwrap() > 0);
    };
    assert_eq!(f, Frame::ServerKey { key });
    (s, buf, key)
}

/// A raw client through the handshake, sealing ClientInfo to `seal_to` (the server key, or a
/// wrong one).
pub async fn raw_client(addr: SocketAddr, key: &NodePrivate) -> (TcpStream, BytesMut) {
    let (mut s, mut buf, server) = raw_upgrade(addr).await;
    let mut out = BytesMut::new();
    frame::encode(
        &handshake::client_info_frame(key, &server, &ClientInfo::ours()),
        &mut out,
    );
    s.write_all(&out).await.unwrap();
    let f = loop {
        if let Some(f) = frame::decode(&mut buf, CLIENT_MAX_FRAME).unwrap() {
            break f;
        }
        assert!(timeout(T, s.read_buf(&mut buf)).await.unwrap().unwrap() > 0);
    };
    assert!(matches!(f, Frame::ServerInfo { .. }), "{f:?}");
    (s, buf)
}

/// Reads until EOF (or a reset), within `T`; panics if the server keeps the connection open.
pub async fn expect_closed(s: &mut TcpStream) {
    let mut sink = vec![0u8; 64 << 10];
    timeout(T, async {
        loop {
            match s.read(&mut sink).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await
    .expect("server did not close the connection");
}

/// Raw HTTP request; returns the whole response (the server closes after replying).
pub async fn http(addr: SocketAddr, req: &str) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    timeout(T, s.read_to_end(&mut out)).await.unwrap().unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Polls `f` until true (bounded: 10 s).
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + T;
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
