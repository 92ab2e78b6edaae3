//! The relay over loopback with real clients.

mod common;

use bytes::{Bytes, BytesMut};
use common::*;
use meshgate_derp::frame::{self, types};
use meshgate_derp::handshake::{self, ClientInfo};
use meshgate_derp::{ClientOptions, DerpTarget, Error, Event, Frame, PeerGoneReason};
use meshgate_relay::{Config, DISCO_MAGIC, TlsMode};
use meshgate_tailcfg::{NodePrivate, NodePublic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_clients_exchange_over_plain_http() {
    let (relay, addr) = start(Config::default()).await;
    let t = plain(addr);
    let (a, mut aev, _) = client(&t).await;
    let (b, mut bev, _) = client(&t).await;
    assert_eq!(a.server_key(), relay.public_key());
    assert_eq!(a.server_info().version, 2);
    exchange(&a, &b, &mut bev, b"a to b").await;
    exchange(&b, &a, &mut aev, b"b to a").await;
    a.note_preferred(true).await.unwrap();
    a.ping(*b"12345678").await.unwrap();
    let ev = timeout(T, aev.recv()).await.unwrap().unwrap();
    assert_eq!(ev, Event::Pong(*b"12345678"));
    let s = relay.stats();
    assert_eq!(s.clients_connected, 2);
    assert_eq!(s.packets_received, 2);
    assert_eq!(s.notes_preferred, 1);
    eventually("forwarded count", || relay.stats().packets_forwarded == 2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_pinned_self_signed_cert() {
    let (relay, addr) = start(Config {
        tls: TlsMode::SelfSigned {
            names: vec!["localhost".into()],
        },
        ..Config::default()
    })
    .await;
    let pin = relay.cert_name().unwrap().to_owned();
    assert!(pin.starts_with("sha256-raw:"));
    let t =
        DerpTarget::from_url(&format!("https://localhost:{}", addr.port()), &pin, None).unwrap();
    assert!(t.is_tls());
    let (a, mut aev, _) = client(&t).await;
    let (b, mut bev, _) = client(&t).await;
    exchange(&a, &b, &mut bev, b"over tls").await;
    exchange(&b, &a, &mut aev, b"and back").await;

    // Wrong pin: refused at the TLS layer.
    let wrong = format!("sha256-raw:{}", "00".repeat(32));
    let t =
        DerpTarget::from_url(&format!("https://localhost:{}", addr.port()), &wrong, None).unwrap();
    let err = meshgate_derp::connect(&t, NodePrivate::generate(), &ClientOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    // No pin: the self-signed certificate is not trusted by the public roots.
    let t = DerpTarget::from_url(&format!("https://localhost:{}", addr.port()), "", None).unwrap();
    assert!(
        meshgate_derp::connect(&t, NodePrivate::generate(), &ClientOptions::default())
            .await
            .is_err()
    );
    // From a DerpNode with the pin as CertName.
    let node: meshgate_tailcfg::DerpNode = serde_json::from_value(serde_json::json!({
        "Name": "1a", "RegionID": 1, "HostName": "localhost", "IPv4": "127.0.0.1",
        "DERPPort": addr.port(), "CertName": pin,
    }))
    .unwrap();
    let t = DerpTarget::from_node(&node, None).unwrap();
    let (c, _cev, _) = client(&t).await;
    exchange(&c, &b, &mut bev, b"from node").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_unexpected_server_key() {
    let (_relay, addr) = start(Config::default()).await;
    let opts = ClientOptions {
        expected_server_key: Some(NodePrivate::generate().public()),
        ..ClientOptions::default()
    };
    let err = meshgate_derp::connect(&plain(addr), NodePrivate::generate(), &opts)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::ServerKeyMismatch(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_refuses_server_key_frame_differing_from_header() {
    // A fake server whose ServerKey frame disagrees with its Derp-Public-Key header.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut b = [0u8; 1024];
        let _ = s.read(&mut b).await;
        let header_key = NodePublic::from_bytes([1; 32]);
        let mut out = BytesMut::new();
        out.extend_from_slice(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Public-Key: {}\r\n\r\n",
                meshgate_derp::http::key_hex(&header_key)
            )
            .as_bytes(),
        );
        frame::encode(
            &Frame::ServerKey {
                key: NodePublic::from_bytes([2; 32]),
            },
            &mut out,
        );
        let _ = s.write_all(&out).await;
        let _ = s.read(&mut b).await;
    });
    let err = meshgate_derp::connect(
        &plain(addr),
        NodePrivate::generate(),
        &ClientOptions::default(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, Error::ServerKeyMismatch(_)), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_info_sealed_to_wrong_key_is_refused_alone() {
    let (relay, addr) = start(Config::default()).await;
    let t = plain(addr);
    let (a, _aev, _) = client(&t).await;
    let (b, mut bev, _) = client(&t).await;

    let (mut s, _buf, _server) = raw_upgrade(addr).await;
    let me = NodePrivate::generate();
    let wrong_server = NodePrivate::generate().public();
    let mut out = BytesMut::new();
    frame::encode(
        &handshake::client_info_frame(&me, &wrong_server, &ClientInfo::ours()),
        &mut out,
    );
    s.write_all(&out).await.unwrap();
    expect_closed(&mut s).await;
    assert_eq!(relay.stats().handshake_failures, 1);
    assert_eq!(relay.stats().clients_connected, 2);
    exchange(&a, &b, &mut bev, b"still fine").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_sender_is_dropped_while_others_continue() {
    let (relay, addr) = start(Config::default()).await;
    let t = plain(addr);
    let (a, mut aev, _) = client(&t).await;
    let (b, mut bev, _) = client(&t).await;

    // Oversized frame header.
    let (mut s1, _) = raw_client(addr, &NodePrivate::generate()).await;
    s1.write_all(&[types::SEND_PACKET, 0xff, 0xff, 0xff, 0xff])
        .await
        .unwrap();
    // A packet frame too short for its key.
    let (mut s2, _) = raw_client(addr, &NodePrivate::generate()).await;
    s2.write_all(&[types::SEND_PACKET, 0, 0, 0, 3, 1, 2, 3])
        .await
        .unwrap();
    // A server-only frame.
    let (mut s3, _) = raw_client(addr, &NodePrivate::generate()).await;
    let mut out = BytesMut::new();
    frame::encode(&Frame::KeepAlive, &mut out);
    s3.write_all(&out).await.unwrap();
    // A mesh frame without a mesh key.
    let (mut s4, _) = raw_client(addr, &NodePrivate::generate()).await;
    let mut out = BytesMut::new();
    frame::encode(&Frame::WatchConns, &mut out);
    s4.write_all(&out).await.unwrap();
    for s in [&mut s1, &mut s2, &mut s3, &mut s4] {
        expect_closed(s).await;
    }
    eventually("drops counted", || {
        relay.stats().clients_dropped_bad_frame == 4
    })
    .await;
    assert_eq!(relay.stats().mesh_refused, 1);
    eventually("garbage clients gone", || {
        relay.stats().clients_connected == 2
    })
    .await;
    exchange(&a, &b, &mut bev, b"a-b").await;
    exchange(&b, &a, &mut aev, b"b-a").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_gone_after_disconnect_and_not_here_for_disco() {
    let (relay, addr) = start(Config::default()).await;
    let t = plain(addr);
    let (a, _aev, _) = client(&t).await;
    let (b, mut bev, _) = client(&t).await;
    exchange(&a, &b, &mut bev, b"hi").await;
    let a_key = a.public_key();
    a.close();
    drop(a);
    let ev = timeout(T, bev.recv()).await.unwrap().unwrap();
    assert_eq!(
        ev,
        Event::PeerGone {
            key: a_key,
            reason: PeerGoneReason::Disconnected
        }
    );

    // Unknown destination: plain packets are dropped silently, disco packets get NotHere.
    let nobody = NodePrivate::generate().public();
    b.send(nobody, Bytes::from_static(b"plain")).await.unwrap();
    let mut disco = DISCO_MAGIC.to_vec();
    disco.extend_from_slice(&[0u8; 32 + 24 + 16]);
    b.send(nobody, Bytes::from(disco)).await.unwrap();
    let ev = timeout(T, bev.recv()).await.unwrap().unwrap();
    assert_eq!(
        ev,
        Event::PeerGone {
            key: nobody,
            reason: PeerGoneReason::NotHere
        }
    );
    let s = relay.stats();
    assert_eq!(s.drop_unknown_dest, 2);
    assert_eq!(s.disco_received, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn duplicate_key_newest_connection_wins() {
    let (relay, addr) = start(Config::default()).await;
    let t = plain(addr);
    let (a, _aev, _) = client(&t).await;
    let key = NodePrivate::generate();
    let (old, mut old_ev) = meshgate_derp::connect(&t, key.clone(), &ClientOptions::default())
        .await
        .unwrap();
    let (new, mut new_ev) = meshgate_derp::connect(&t, key.clone(), &ClientOptions::default())
        .await
        .unwrap();
    assert_eq!(old.public_key(), new.public_key());
    // The older connection is closed by the server.
    let end = timeout(T, old_ev.recv()).await.unwrap();
    assert!(end.is_err(), "{end:?}");
    exchange(&a, &new, &mut new_ev, b"to the newest").await;
    let s = relay.stats();
    assert_eq!((s.clients_connected, s.duplicate_replaced), (2, 1));
    // The old connection leaving does not make the key gone.
    drop(old);
    exchange(&a, &new, &mut new_ev, b"still there").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_drops_oldest_without_stalling_others() {
    let (relay, addr) = start(Config::default()).await;
    let t = plain(addr);
    let (a, _aev, _) = client(&t).await;
    let (b, mut bev, _) = client(&t).await;
    let (c, mut cev, _) = client(&t).await;
    // A receiver that completes the handshake and never reads.
    let stuck_key = NodePrivate::generate();
    let (_stuck, _) = raw_client(addr, &stuck_key).await;

    let big = Bytes::from(vec![7u8; 60_000]);
    let n = 400u64; // 24 MB: far beyond the socket buffers plus the 32-packet queue.
    let flood = {
        let a = a.clone();
        let dst = stuck_key.public();
        tokio::spawn(async move {
            for _ in 0..n {
                a.send(dst, big.clone()).await.unwrap();
            }
        })
    };
    // Meanwhile b and c keep exchanging, each message within the timeout.
    for _ in 0..20 {
        exchange(&b, &c, &mut cev, b"b-c").await;
        exchange(&c, &b, &mut bev, b"c-b").await;
    }
    timeout(T, flood).await.unwrap().unwrap();
    eventually("queue-full drops", || relay.stats().drop_queue_full > 0).await;
    // The stuck receiver is disconnected by the 2 s write timeout.
    eventually("write timeout", || relay.stats().write_timeouts == 1).await;
    eventually("stuck client gone", || relay.stats().clients_connected == 3).await;
    // Every packet is accounted for: written to a receiver, or counted as dropped.
    eventually("all accounted", || {
        let s = relay.stats();
        s.packets_received == s.packets_forwarded + s.dropped()
    })
    .await;
    let s = relay.stats();
    assert_eq!(s.packets_received, n + 40);
    assert!(s.dropped() >= s.drop_queue_full && s.drop_queue_full > 0);
    exchange(&b, &c, &mut cev, b"after").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_endpoints() {
    let (_relay, addr) = start(Config::default()).await;
    let r = http(
        addr,
        "GET /generate_204 HTTP/1.1\r\nHost: x\r\nX-Tailscale-Challenge: chal-123\r\n\r\n",
    )
    .await;
    assert!(r.starts_with("HTTP/1.1 204 "), "{r}");
    assert!(
        r.contains("X-Tailscale-Response: response chal-123\r\n"),
        "{r}"
    );
    let r = http(addr, "GET /derp HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 426 "), "{r}");
    let r = http(addr, "GET /derp/probe HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 200 "), "{r}");
    let r = http(addr, "GET /nope HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 404 "), "{r}");
    let r = http(addr, "BLAH\x01 \r\n\r\n").await;
    assert!(r.starts_with("HTTP/1.1 400 "), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_are_sent_and_pings_answered() {
    let (_relay, addr) = start(Config {
        keepalive: std::time::Duration::from_millis(120),
        ..Config::default()
    })
    .await;
    let (mut s, mut buf) = raw_client(addr, &NodePrivate::generate()).await;
    let mut out = BytesMut::new();
    frame::encode(&Frame::Ping(*b"pingping"), &mut out);
    s.write_all(&out).await.unwrap();
    let mut seen_pong = false;
    let mut keepalives = 0;
    timeout(T, async {
        while !(seen_pong && keepalives >= 2) {
            match frame::decode(&mut buf, frame::CLIENT_MAX_FRAME).unwrap() {
                Some(Frame::Pong(d)) => {
                    assert_eq!(&d, b"pingping");
                    seen_pong = true;
                }
                Some(Frame::KeepAlive) => keepalives += 1,
                Some(other) => panic!("{other:?}"),
                None => assert!(s.read_buf(&mut buf).await.unwrap() > 0),
            }
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_delays_a_fast_sender() {
    let (_relay, addr) = start(Config {
        rate_limit: Some(meshgate_relay::RateLimit {
            bytes_per_sec: 200_000,
            burst_bytes: 0,
        }),
        ..Config::default()
    })
    .await;
    let t = plain(addr);
    let (a, _aev, _) = client(&t).await;
    let (b, mut bev, _) = client(&t).await;
    let info = a.server_info();
    assert_eq!(info.token_bucket_bytes_per_second, 200_000);
    // The burst is raised to one full packet.
    assert_eq!(info.token_bucket_bytes_burst, 64 * 1024 + 32);
    let started = std::time::Instant::now();
    for _ in 0..20 {
        a.send(b.public_key(), Bytes::from(vec![1u8; 30_000]))
            .await
            .unwrap();
    }
    for _ in 0..20 {
        next_packet(&mut bev).await;
    }
    // 600 000 B minus a 65 568 B burst at 200 000 B/s: at least 2.6 s.
    let took = started.elapsed();
    assert!(took >= std::time::Duration::from_millis(2500), "{took:?}");
}
