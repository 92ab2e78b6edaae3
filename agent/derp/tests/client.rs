//! The client against a scripted fake server: Ping answered with Pong, events passed through,
//! unknown frames skipped, read deadline, refused upgrades and handshakes.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meshgate_derp::frame::{self, SERVER_MAX_CLIENT_INFO};
use meshgate_derp::handshake::{self, ServerInfo};
use meshgate_derp::http::key_hex;
use meshgate_derp::{
    ClientOptions, DerpTarget, Error, Event, Frame, PeerGoneReason, PeerPresentFlags, connect,
};
use meshgate_tailcfg::{NodePrivate, NodePublic};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::timeout;

const T: Duration = Duration::from_secs(10);

async fn read_frame(s: &mut TcpStream, buf: &mut BytesMut) -> Option<Frame> {
    loop {
        if let Some(f) = frame::decode(buf, SERVER_MAX_CLIENT_INFO).unwrap() {
            return Some(f);
        }
        match timeout(T, s.read_buf(buf)).await.ok()? {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Accepts one client, upgrades and completes the handshake as `server`; returns the stream,
/// the buffer, and the client's key.
async fn fake_accept(l: &TcpListener, server: &NodePrivate) -> (TcpStream, BytesMut, NodePublic) {
    let (mut s, _) = l.accept().await.unwrap();
    let mut buf = BytesMut::new();
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        assert!(s.read_buf(&mut buf).await.unwrap() > 0);
    }
    let head = String::from_utf8_lossy(&buf).into_owned();
    assert!(head.starts_with("GET /derp HTTP/1.1\r\n"), "{head}");
    assert!(head.contains("Upgrade: DERP\r\n"));
    buf.clear();
    let mut out = BytesMut::new();
    out.extend_from_slice(
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nConnection: Upgrade\r\nDerp-Version: 2\r\nDerp-Public-Key: {}\r\n\r\n",
            key_hex(&server.public())
        )
        .as_bytes(),
    );
    frame::encode(
        &Frame::ServerKey {
            key: server.public(),
        },
        &mut out,
    );
    s.write_all(&out).await.unwrap();
    let Some(Frame::ClientInfo { key, sealed }) = read_frame(&mut s, &mut buf).await else {
        panic!("no ClientInfo")
    };
    let info = handshake::open_client_info(server, &key, &sealed).unwrap();
    assert!(info.can_ack_pings && info.version == 2);
    out.clear();
    frame::encode(
        &handshake::server_info_frame(
            server,
            &key,
            &ServerInfo {
                version: 2,
                ..ServerInfo::default()
            },
        ),
        &mut out,
    );
    s.write_all(&out).await.unwrap();
    (s, buf, key)
}

async fn send(s: &mut TcpStream, frames: &[Frame]) {
    let mut out = BytesMut::new();
    for f in frames {
        frame::encode(f, &mut out);
    }
    s.write_all(&out).await.unwrap();
}

fn target(l: &TcpListener) -> DerpTarget {
    DerpTarget::from_url(
        &format!("http://{}/derp", l.local_addr().unwrap()),
        "",
        None,
    )
    .unwrap()
}

#[tokio::test]
async fn answers_pings_and_passes_events_through() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = NodePrivate::generate();
    let t = target(&l);
    let me = NodePrivate::generate();
    let default_opts = ClientOptions::default();
    let (srv, conn) = tokio::join!(
        fake_accept(&l, &server),
        connect(&t, me.clone(), &default_opts)
    );
    let (mut s, mut buf, client_key) = srv;
    let (c, mut ev) = conn.unwrap();
    assert_eq!(client_key, me.public());
    assert_eq!(c.server_key(), server.public());

    let peer = NodePublic::from_bytes([9; 32]);
    let mut unknown = BytesMut::new();
    unknown.extend_from_slice(&[0x55, 0, 0, 0, 2, 1, 2]);
    s.write_all(&unknown).await.unwrap();
    send(
        &mut s,
        &[
            Frame::KeepAlive,
            Frame::Ping(*b"abcdefgh"),
            Frame::RecvPacket {
                src: peer,
                data: Bytes::from_static(b"pkt"),
            },
            Frame::PeerGone {
                key: peer,
                reason: PeerGoneReason::NotHere,
            },
            Frame::PeerPresent {
                key: peer,
                addr: Some("10.0.0.1:1".parse().unwrap()),
                flags: Some(PeerPresentFlags(1)),
            },
            Frame::Health {
                problem: "bad".into(),
            },
            Frame::Restarting {
                reconnect_in_ms: 5,
                try_for_ms: 6,
            },
            Frame::Pong(*b"zzzzzzzz"),
        ],
    )
    .await;
    assert_eq!(
        read_frame(&mut s, &mut buf).await,
        Some(Frame::Pong(*b"abcdefgh"))
    );
    let mut got = Vec::new();
    for _ in 0..6 {
        got.push(timeout(T, ev.recv()).await.unwrap().unwrap());
    }
    assert_eq!(
        got,
        vec![
            Event::Packet {
                src: peer,
                data: Bytes::from_static(b"pkt")
            },
            Event::PeerGone {
                key: peer,
                reason: PeerGoneReason::NotHere
            },
            Event::PeerPresent {
                key: peer,
                addr: Some("10.0.0.1:1".parse().unwrap()),
                flags: Some(PeerPresentFlags(1))
            },
            Event::Health {
                problem: "bad".into()
            },
            Event::Restarting {
                reconnect_in_ms: 5,
                try_for_ms: 6
            },
            Event::Pong(*b"zzzzzzzz"),
        ]
    );

    // Sends go out as SendPacket / NotePreferred / Ping frames.
    c.send(peer, Bytes::from_static(b"out")).await.unwrap();
    c.note_preferred(true).await.unwrap();
    c.ping(*b"12345678").await.unwrap();
    assert_eq!(
        read_frame(&mut s, &mut buf).await,
        Some(Frame::SendPacket {
            dst: peer,
            data: Bytes::from_static(b"out")
        })
    );
    assert_eq!(
        read_frame(&mut s, &mut buf).await,
        Some(Frame::NotePreferred { preferred: true })
    );
    assert_eq!(
        read_frame(&mut s, &mut buf).await,
        Some(Frame::Ping(*b"12345678"))
    );
    assert!(
        c.send(peer, Bytes::from(vec![0; 64 * 1024 + 1]))
            .await
            .is_err()
    );

    // A frame over the client's 1 MiB limit ends the connection with that error.
    s.write_all(&[0x05, 0x00, 0x10, 0x00, 0x01]).await.unwrap();
    let end = timeout(T, ev.recv()).await.unwrap().unwrap_err();
    assert!(matches!(end, Error::FrameTooLarge { .. }), "{end}");
    timeout(T, async {
        while !c.is_closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .unwrap();
    assert!(matches!(
        c.send(peer, Bytes::new()).await,
        Err(Error::Closed)
    ));
}

#[tokio::test]
async fn read_deadline_closes_a_silent_connection() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let server = NodePrivate::generate();
    let t = target(&l);
    let opts = ClientOptions {
        read_timeout: Duration::from_millis(300),
        ..ClientOptions::default()
    };
    let (srv, conn) = tokio::join!(
        fake_accept(&l, &server),
        connect(&t, NodePrivate::generate(), &opts)
    );
    let (mut s, _buf, _) = srv;
    let (_c, mut ev) = conn.unwrap();
    // KeepAlives keep it alive past the deadline...
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        send(&mut s, &[Frame::KeepAlive]).await;
    }
    send(
        &mut s,
        &[Frame::Health {
            problem: String::new(),
        }],
    )
    .await;
    assert!(matches!(
        timeout(T, ev.recv()).await.unwrap(),
        Ok(Event::Health { .. })
    ));
    // ...silence does not.
    let end = timeout(T, ev.recv()).await.unwrap().unwrap_err();
    assert!(matches!(end, Error::Timeout("read")), "{end}");
}

#[tokio::test]
async fn distinct_errors_for_refusals() {
    // Nothing listening: connect failed.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let t = target(&l);
    drop(l);
    let e = connect(&t, NodePrivate::generate(), &ClientOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Connect { .. }), "{e}");

    // A 404 instead of 101: upgrade refused.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let t = target(&l);
    tokio::spawn(async move {
        let (mut s, _) = l.accept().await.unwrap();
        let mut b = [0u8; 512];
        let _ = s.read(&mut b).await;
        let _ = s
            .write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
            .await;
    });
    let e = connect(&t, NodePrivate::generate(), &ClientOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::UpgradeRefused(_)), "{e}");

    // ServerInfo sealed by another key: the box does not open.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let t = target(&l);
    let server = NodePrivate::generate();
    let srv = async {
        let (mut s, mut buf) = {
            let (s, _) = l.accept().await.unwrap();
            (s, BytesMut::new())
        };
        while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
            assert!(s.read_buf(&mut buf).await.unwrap() > 0);
        }
        buf.clear();
        let mut out = BytesMut::new();
        out.extend_from_slice(
            format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: DERP\r\nDerp-Public-Key: {}\r\n\r\n",
                key_hex(&server.public())
            )
            .as_bytes(),
        );
        frame::encode(
            &Frame::ServerKey {
                key: server.public(),
            },
            &mut out,
        );
        s.write_all(&out).await.unwrap();
        let Some(Frame::ClientInfo { key, .. }) = read_frame(&mut s, &mut buf).await else {
            panic!()
        };
        out.clear();
        let impostor = NodePrivate::generate();
        frame::encode(
            &handshake::server_info_frame(&impostor, &key, &ServerInfo::default()),
            &mut out,
        );
        s.write_all(&out).await.unwrap();
        s
    };
    let default_opts = ClientOptions::default();
    let (_s, r) = tokio::join!(srv, connect(&t, NodePrivate::generate(), &default_opts));
    let e = r.unwrap_err();
    assert!(matches!(e, Error::BoxOpen), "{e}");

    // Bad targets.
    assert!(DerpTarget::from_url("ftp://x:1", "", None).is_err());
    assert!(DerpTarget::from_url("http://x:notaport", "", None).is_err());
    assert!(DerpTarget::from_url("https://x", "sha256-raw:00", None).is_err());
    let t = DerpTarget::from_url("http://[::1]:3340/derp", "", None).unwrap();
    assert!(!t.is_tls());
}
