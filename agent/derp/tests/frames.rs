//! Codec tests: every frame type round-trips, partial input, limits, unknown types, short payloads.

use bytes::{BufMut, Bytes, BytesMut};
use meshgate_derp::frame::{self, CLIENT_MAX_FRAME, types};
use meshgate_derp::{Error, Frame, PeerGoneReason, PeerPresentFlags, decode, encode};
use meshgate_tailcfg::NodePublic;

fn k(b: u8) -> NodePublic {
    NodePublic::from_bytes([b; 32])
}

fn all_frames() -> Vec<Frame> {
    vec![
        Frame::ServerKey { key: k(1) },
        Frame::ClientInfo {
            key: k(2),
            sealed: Bytes::from(vec![9u8; 24 + 16 + 30]),
        },
        Frame::ServerInfo {
            sealed: Bytes::from(vec![8u8; 24 + 16 + 12]),
        },
        Frame::SendPacket {
            dst: k(3),
            data: Bytes::from_static(b"hello"),
        },
        Frame::SendPacket {
            dst: k(3),
            data: Bytes::new(),
        },
        Frame::RecvPacket {
            src: k(4),
            data: Bytes::from(vec![0xab; 1500]),
        },
        Frame::KeepAlive,
        Frame::NotePreferred { preferred: true },
        Frame::NotePreferred { preferred: false },
        Frame::PeerGone {
            key: k(5),
            reason: PeerGoneReason::Disconnected,
        },
        Frame::PeerGone {
            key: k(5),
            reason: PeerGoneReason::NotHere,
        },
        Frame::PeerGone {
            key: k(5),
            reason: PeerGoneReason::Other(0xf0),
        },
        Frame::PeerPresent {
            key: k(6),
            addr: Some("192.0.2.1:41641".parse().unwrap()),
            flags: Some(PeerPresentFlags(PeerPresentFlags::REGULAR)),
        },
        Frame::PeerPresent {
            key: k(6),
            addr: Some("[2001:db8::1]:3340".parse().unwrap()),
            flags: None,
        },
        Frame::PeerPresent {
            key: k(6),
            addr: None,
            flags: None,
        },
        Frame::ForwardPacket {
            src: k(7),
            dst: k(8),
            data: Bytes::from_static(b"fwd"),
        },
        Frame::WatchConns,
        Frame::ClosePeer { key: k(9) },
        Frame::Ping(*b"pingpong"),
        Frame::Pong(*b"12345678"),
        Frame::Health {
            problem: "disk full".into(),
        },
        Frame::Health {
            problem: String::new(),
        },
        Frame::Restarting {
            reconnect_in_ms: 1000,
            try_for_ms: 60_000,
        },
    ]
}

#[test]
fn every_frame_round_trips_whole_and_byte_by_byte() {
    let frames = all_frames();
    let mut wire = BytesMut::new();
    for f in &frames {
        encode(f, &mut wire);
    }
    let wire = wire.freeze();
    // Whole buffer.
    let mut buf = BytesMut::from(&wire[..]);
    for f in &frames {
        assert_eq!(
            decode(&mut buf, CLIENT_MAX_FRAME).unwrap().as_ref(),
            Some(f)
        );
    }
    assert!(buf.is_empty());
    assert_eq!(decode(&mut buf, CLIENT_MAX_FRAME).unwrap(), None);

    // Byte by byte: "need more" until each frame is complete, nothing consumed meanwhile.
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    for b in wire.iter() {
        buf.put_u8(*b);
        while let Some(f) = decode(&mut buf, CLIENT_MAX_FRAME).unwrap() {
            got.push(f);
        }
    }
    assert_eq!(got, frames);
    assert!(buf.is_empty());
}

#[test]
fn truncated_input_needs_more_without_consuming() {
    let mut wire = BytesMut::new();
    encode(
        &Frame::SendPacket {
            dst: k(1),
            data: Bytes::from_static(b"abc"),
        },
        &mut wire,
    );
    for cut in 0..wire.len() {
        let mut buf = BytesMut::from(&wire[..cut]);
        assert_eq!(decode(&mut buf, CLIENT_MAX_FRAME).unwrap(), None);
        assert_eq!(buf.len(), cut, "nothing consumed at {cut}");
    }
}

#[test]
fn oversized_length_refused_from_header_alone() {
    let mut buf = BytesMut::new();
    buf.put_u8(types::RECV_PACKET);
    buf.put_u32(CLIENT_MAX_FRAME + 1);
    let cap_before = buf.capacity();
    match decode(&mut buf, CLIENT_MAX_FRAME) {
        Err(Error::FrameTooLarge { len, max, .. }) => {
            assert_eq!((len, max), (CLIENT_MAX_FRAME + 1, CLIENT_MAX_FRAME));
        }
        other => panic!("{other:?}"),
    }
    assert!(
        buf.capacity() <= cap_before.max(64),
        "no allocation for the body"
    );
    // u32::MAX too, with a server-sized limit.
    let mut buf = BytesMut::new();
    buf.put_u8(types::SEND_PACKET);
    buf.put_u32(u32::MAX);
    assert!(matches!(
        decode(&mut buf, frame::SERVER_MAX_FRAME),
        Err(Error::FrameTooLarge { .. })
    ));
    // Exactly at the limit is fine.
    let mut buf = BytesMut::new();
    encode(
        &Frame::SendPacket {
            dst: k(1),
            data: Bytes::from(vec![0; frame::MAX_PACKET_SIZE]),
        },
        &mut buf,
    );
    assert!(decode(&mut buf, frame::SERVER_MAX_FRAME).unwrap().is_some());
    // A ping body over 1000 bytes is refused.
    let mut buf = BytesMut::new();
    buf.put_u8(types::PING);
    buf.put_u32(1001);
    buf.put_slice(&[0; 1001]);
    assert!(decode(&mut buf, CLIENT_MAX_FRAME).is_err());
}

#[test]
fn unknown_type_is_skipped() {
    let mut buf = BytesMut::new();
    buf.put_u8(0x7f);
    buf.put_u32(3);
    buf.put_slice(b"xyz");
    encode(&Frame::KeepAlive, &mut buf);
    assert_eq!(
        decode(&mut buf, CLIENT_MAX_FRAME).unwrap(),
        Some(Frame::Unknown { frame_type: 0x7f })
    );
    assert_eq!(
        decode(&mut buf, CLIENT_MAX_FRAME).unwrap(),
        Some(Frame::KeepAlive)
    );
    assert!(buf.is_empty());
}

#[test]
fn short_payloads_refused_per_type() {
    for (t, need) in [
        (types::SERVER_KEY, 40),
        (types::CLIENT_INFO, 32 + 24 + 16),
        (types::SERVER_INFO, 24 + 16),
        (types::SEND_PACKET, 32),
        (types::RECV_PACKET, 32),
        (types::NOTE_PREFERRED, 1),
        (types::PEER_GONE, 32),
        (types::PEER_PRESENT, 32),
        (types::FORWARD_PACKET, 64),
        (types::CLOSE_PEER, 32),
        (types::PING, 8),
        (types::PONG, 8),
        (types::RESTARTING, 8),
    ] {
        let mut buf = BytesMut::new();
        buf.put_u8(t);
        buf.put_u32(need as u32 - 1);
        // A valid magic so ServerKey fails on length, not magic.
        let mut body = vec![0u8; need - 1];
        if t == types::SERVER_KEY {
            body[..8].copy_from_slice(frame::SERVER_KEY_MAGIC);
        }
        buf.put_slice(&body);
        match decode(&mut buf, CLIENT_MAX_FRAME) {
            Err(Error::FrameTooShort {
                frame_type,
                len,
                need: n,
            }) => {
                assert_eq!((frame_type, len, n), (t, need - 1, need), "type {t:#x}");
            }
            other => panic!("type {t:#x}: {other:?}"),
        }
    }
}

#[test]
fn bad_magic_and_old_short_forms() {
    let mut buf = BytesMut::new();
    buf.put_u8(types::SERVER_KEY);
    buf.put_u32(40);
    buf.put_slice(b"DERPKEY!");
    buf.put_slice(&[1; 32]);
    assert!(matches!(
        decode(&mut buf, CLIENT_MAX_FRAME),
        Err(Error::BadMagic)
    ));

    // Future bytes after the ServerKey are ignored.
    let mut buf = BytesMut::new();
    buf.put_u8(types::SERVER_KEY);
    buf.put_u32(44);
    buf.put_slice(frame::SERVER_KEY_MAGIC);
    buf.put_slice(&[1; 32]);
    buf.put_slice(b"more");
    assert_eq!(
        decode(&mut buf, CLIENT_MAX_FRAME).unwrap(),
        Some(Frame::ServerKey { key: k(1) })
    );

    // Old PeerGone without a reason = Disconnected; old PeerPresent with key only, or key+addr.
    let mut buf = BytesMut::new();
    buf.put_u8(types::PEER_GONE);
    buf.put_u32(32);
    buf.put_slice(&[5; 32]);
    buf.put_u8(types::PEER_PRESENT);
    buf.put_u32(32 + 18);
    buf.put_slice(&[6; 32]);
    buf.put_slice(
        &std::net::Ipv4Addr::new(10, 1, 2, 3)
            .to_ipv6_mapped()
            .octets(),
    );
    buf.put_u16(7);
    assert_eq!(
        decode(&mut buf, CLIENT_MAX_FRAME).unwrap(),
        Some(Frame::PeerGone {
            key: k(5),
            reason: PeerGoneReason::Disconnected
        })
    );
    assert_eq!(
        decode(&mut buf, CLIENT_MAX_FRAME).unwrap(),
        Some(Frame::PeerPresent {
            key: k(6),
            addr: Some("10.1.2.3:7".parse().unwrap()),
            flags: None
        })
    );
}
