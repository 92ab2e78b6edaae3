//! DERP frames (reference §2.2–2.3): `type(1) ‖ length u32 BE ‖ payload`, as typed values, with a
//! sans-I/O encoder into a `BytesMut` and a decoder that reads from one.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use meshgate_tailcfg::NodePublic;
use meshgate_tailcfg::key::KEY_LEN;

use crate::Error;

/// Frame header: type byte and u32 big-endian length.
pub const HEADER_LEN: usize = 5;
/// Largest packet (SendPacket/RecvPacket data) a server relays (`MaxPacketSize`).
pub const MAX_PACKET_SIZE: usize = 64 << 10;
/// A client refuses any frame whose payload is larger than this.
pub const CLIENT_MAX_FRAME: u32 = 1 << 20;
/// A server accepts a ClientInfo payload up to this size.
pub const SERVER_MAX_CLIENT_INFO: u32 = 256 << 10;
/// After the handshake a server accepts frames up to one packet plus its destination key.
pub const SERVER_MAX_FRAME: u32 = (MAX_PACKET_SIZE + KEY_LEN) as u32;
/// Largest Ping payload accepted (only the first 8 bytes are echoed).
pub const MAX_PING_PAYLOAD: usize = 1000;
/// `"DERP🔑"`, the start of the ServerKey frame.
pub const SERVER_KEY_MAGIC: &[u8; 8] = b"DERP\xf0\x9f\x94\x91";
/// Length of the handshake box nonces.
pub const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag in front of a box's ciphertext.
pub const TAG_LEN: usize = 16;

/// Frame type bytes (reference §2.3).
pub mod types {
    pub const SERVER_KEY: u8 = 0x01;
    pub const CLIENT_INFO: u8 = 0x02;
    pub const SERVER_INFO: u8 = 0x03;
    pub const SEND_PACKET: u8 = 0x04;
    pub const RECV_PACKET: u8 = 0x05;
    pub const KEEP_ALIVE: u8 = 0x06;
    pub const NOTE_PREFERRED: u8 = 0x07;
    pub const PEER_GONE: u8 = 0x08;
    pub const PEER_PRESENT: u8 = 0x09;
    pub const FORWARD_PACKET: u8 = 0x0a;
    pub const WATCH_CONNS: u8 = 0x10;
    pub const CLOSE_PEER: u8 = 0x11;
    pub const PING: u8 = 0x12;
    pub const PONG: u8 = 0x13;
    pub const HEALTH: u8 = 0x14;
    pub const RESTARTING: u8 = 0x15;
}

/// Why a PeerGone was sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PeerGoneReason {
    /// The peer's last connection to this server closed (0x00; also when the byte is absent).
    Disconnected,
    /// A packet was sent to a key that is not connected here (0x01).
    NotHere,
    /// Any other reason byte, kept as received.
    Other(u8),
}

impl PeerGoneReason {
    pub fn to_byte(self) -> u8 {
        match self {
            PeerGoneReason::Disconnected => 0,
            PeerGoneReason::NotHere => 1,
            PeerGoneReason::Other(b) => b,
        }
    }

    pub fn from_byte(b: u8) -> Self {
        match b {
            0 => PeerGoneReason::Disconnected,
            1 => PeerGoneReason::NotHere,
            b => PeerGoneReason::Other(b),
        }
    }
}

/// PeerPresent flag bits.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PeerPresentFlags(pub u8);

impl PeerPresentFlags {
    pub const REGULAR: u8 = 1;
    pub const MESH_PEER: u8 = 2;
    pub const PROBER: u8 = 4;
    pub const NOT_IDEAL: u8 = 8;
}

/// One DERP frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// S→C: the server's public key (bytes after it are ignored).
    ServerKey {
        key: NodePublic,
    },
    /// C→S: the client's key and `nonce ‖ box(JSON ClientInfo)` (see [`crate::handshake`]).
    ClientInfo {
        key: NodePublic,
        sealed: Bytes,
    },
    /// S→C: `nonce ‖ box(JSON ServerInfo)`.
    ServerInfo {
        sealed: Bytes,
    },
    /// C→S: a packet for `dst`.
    SendPacket {
        dst: NodePublic,
        data: Bytes,
    },
    /// S→C: a packet from `src`.
    RecvPacket {
        src: NodePublic,
        data: Bytes,
    },
    KeepAlive,
    /// C→S: whether this server is the client's home (stats only).
    NotePreferred {
        preferred: bool,
    },
    /// S→C: `key` is gone (an absent reason byte, from old servers, means Disconnected).
    PeerGone {
        key: NodePublic,
        reason: PeerGoneReason,
    },
    /// S→C (mesh watchers): `key` is connected; older servers omit the address and/or flags.
    PeerPresent {
        key: NodePublic,
        addr: Option<SocketAddr>,
        flags: Option<PeerPresentFlags>,
    },
    /// Mesh C→S: a packet forwarded from another server in the region.
    ForwardPacket {
        src: NodePublic,
        dst: NodePublic,
        data: Bytes,
    },
    /// Mesh C→S: subscribe to PeerPresent/PeerGone.
    WatchConns,
    /// Mesh C→S: close `key`'s connection.
    ClosePeer {
        key: NodePublic,
    },
    Ping([u8; 8]),
    Pong([u8; 8]),
    /// S→C: a health problem; empty means healthy again.
    Health {
        problem: String,
    },
    /// S→C: the server is restarting; reconnect after `reconnect_in_ms`, trying for `try_for_ms`.
    Restarting {
        reconnect_in_ms: u32,
        try_for_ms: u32,
    },
    /// A frame type this side does not know; its payload was skipped.
    Unknown {
        frame_type: u8,
    },
}

impl Frame {
    /// The type byte this frame is sent with.
    pub fn frame_type(&self) -> u8 {
        use types::*;
        match self {
            Frame::ServerKey { .. } => SERVER_KEY,
            Frame::ClientInfo { .. } => CLIENT_INFO,
            Frame::ServerInfo { .. } => SERVER_INFO,
            Frame::SendPacket { .. } => SEND_PACKET,
            Frame::RecvPacket { .. } => RECV_PACKET,
            Frame::KeepAlive => KEEP_ALIVE,
            Frame::NotePreferred { .. } => NOTE_PREFERRED,
            Frame::PeerGone { .. } => PEER_GONE,
            Frame::PeerPresent { .. } => PEER_PRESENT,
            Frame::ForwardPacket { .. } => FORWARD_PACKET,
            Frame::WatchConns => WATCH_CONNS,
            Frame::ClosePeer { .. } => CLOSE_PEER,
            Frame::Ping(_) => PING,
            Frame::Pong(_) => PONG,
            Frame::Health { .. } => HEALTH,
            Frame::Restarting { .. } => RESTARTING,
            Frame::Unknown { frame_type } => *frame_type,
        }
    }
}

fn put_header(out: &mut BytesMut, frame_type: u8, len: usize) {
    out.put_u8(frame_type);
    // Frames are built from bounded inputs; a payload over 4 GiB cannot be expressed, and the
    // peer would refuse it anyway, so saturate instead of wrapping.
    out.put_u32(u32::try_from(len).unwrap_or(u32::MAX));
}

/// Appends a frame to `out`. `Unknown` is written with an empty payload.
pub fn encode(frame: &Frame, out: &mut BytesMut) {
    let t = frame.frame_type();
    match frame {
        Frame::ServerKey { key } => {
            put_header(out, t, SERVER_KEY_MAGIC.len() + KEY_LEN);
            out.put_slice(SERVER_KEY_MAGIC);
            out.put_slice(key.as_bytes());
        }
        Frame::ClientInfo { key, sealed } => {
            put_header(out, t, KEY_LEN + sealed.len());
            out.put_slice(key.as_bytes());
            out.put_slice(sealed);
        }
        Frame::ServerInfo { sealed } => {
            put_header(out, t, sealed.len());
            out.put_slice(sealed);
        }
        Frame::SendPacket { dst: key, data } | Frame::RecvPacket { src: key, data } => {
            put_header(out, t, KEY_LEN + data.len());
            out.put_slice(key.as_bytes());
            out.put_slice(data);
        }
        Frame::KeepAlive | Frame::WatchConns | Frame::Unknown { .. } => put_header(out, t, 0),
        Frame::NotePreferred { preferred } => {
            put_header(out, t, 1);
            out.put_u8(u8::from(*preferred));
        }
        Frame::PeerGone { key, reason } => {
            put_header(out, t, KEY_LEN + 1);
            out.put_slice(key.as_bytes());
            out.put_u8(reason.to_byte());
        }
        Frame::PeerPresent { key, addr, flags } => {
            let len = KEY_LEN
                + if addr.is_some() || flags.is_some() {
                    18
                } else {
                    0
                }
                + usize::from(flags.is_some());
            put_header(out, t, len);
            out.put_slice(key.as_bytes());
            if addr.is_some() || flags.is_some() {
                let (ip, port) = match addr {
                    Some(a) => (
                        match a.ip() {
                            IpAddr::V4(v4) => v4.to_ipv6_mapped(),
                            IpAddr::V6(v6) => v6,
                        },
                        a.port(),
                    ),
                    None => (Ipv6Addr::UNSPECIFIED, 0),
                };
                out.put_slice(&ip.octets());
                out.put_u16(port);
            }
            if let Some(f) = flags {
                out.put_u8(f.0);
            }
        }
        Frame::ForwardPacket { src, dst, data } => {
            put_header(out, t, 2 * KEY_LEN + data.len());
            out.put_slice(src.as_bytes());
            out.put_slice(dst.as_bytes());
            out.put_slice(data);
        }
        Frame::ClosePeer { key } => {
            put_header(out, t, KEY_LEN);
            out.put_slice(key.as_bytes());
        }
        Frame::Ping(d) | Frame::Pong(d) => {
            put_header(out, t, 8);
            out.put_slice(d);
        }
        Frame::Health { problem } => {
            put_header(out, t, problem.len());
            out.put_slice(problem.as_bytes());
        }
        Frame::Restarting {
            reconnect_in_ms,
            try_for_ms,
        } => {
            put_header(out, t, 8);
            out.put_u32(*reconnect_in_ms);
            out.put_u32(*try_for_ms);
        }
    }
}

/// Appends a SendPacket/RecvPacket header and key without copying the data; the caller
/// appends `data_len` bytes. Lets a writer batch packets without building `Frame`s.
pub fn encode_packet_header(out: &mut BytesMut, frame_type: u8, key: &NodePublic, data_len: usize) {
    put_header(out, frame_type, KEY_LEN + data_len);
    out.put_slice(key.as_bytes());
}

/// Decodes one frame from the front of `buf`.
///
/// Returns `Ok(None)` when `buf` does not yet hold a whole frame (nothing is consumed; call again
/// with more bytes), `Ok(Some(frame))` after consuming it. A header announcing more than
/// `max_payload` bytes is refused from the header alone, before anything is buffered for it.
pub fn decode(buf: &mut BytesMut, max_payload: u32) -> Result<Option<Frame>, Error> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let frame_type = header[0];
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]);
    if len > max_payload {
        return Err(Error::FrameTooLarge {
            frame_type,
            len,
            max: max_payload,
        });
    }
    let len = len as usize;
    if buf.len() < HEADER_LEN + len {
        // Reserve only up to the announced (already bounded) length.
        buf.reserve(HEADER_LEN + len - buf.len());
        return Ok(None);
    }
    buf.advance(HEADER_LEN);
    let payload = buf.split_to(len).freeze();
    parse_payload(frame_type, payload).map(Some)
}

fn need(frame_type: u8, payload: &Bytes, n: usize) -> Result<(), Error> {
    if payload.len() < n {
        Err(Error::FrameTooShort {
            frame_type,
            len: payload.len(),
            need: n,
        })
    } else {
        Ok(())
    }
}

fn key_at(payload: &[u8], at: usize) -> NodePublic {
    let mut k = [0u8; KEY_LEN];
    // Callers checked the length first; a short slice would leave zeros rather than panic.
    if let Some(src) = payload.get(at..at + KEY_LEN) {
        k.copy_from_slice(src);
    }
    NodePublic::from_bytes(k)
}

fn u32_at(payload: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    if let Some(src) = payload.get(at..at + 4) {
        b.copy_from_slice(src);
    }
    u32::from_be_bytes(b)
}

fn eight(payload: &[u8]) -> [u8; 8] {
    let mut b = [0u8; 8];
    if let Some(src) = payload.get(..8) {
        b.copy_from_slice(src);
    }
    b
}

fn parse_payload(t: u8, mut p: Bytes) -> Result<Frame, Error> {
    use types::*;
    let frame = match t {
        SERVER_KEY => {
            need(t, &p, SERVER_KEY_MAGIC.len() + KEY_LEN)?;
            if !p.starts_with(SERVER_KEY_MAGIC) {
                return Err(Error::BadMagic);
            }
            Frame::ServerKey {
                key: key_at(&p, SERVER_KEY_MAGIC.len()),
            }
        }
        CLIENT_INFO => {
            need(t, &p, KEY_LEN + NONCE_LEN + TAG_LEN)?;
            let key = key_at(&p, 0);
            p.advance(KEY_LEN);
            Frame::ClientInfo { key, sealed: p }
        }
        SERVER_INFO => {
            need(t, &p, NONCE_LEN + TAG_LEN)?;
            Frame::ServerInfo { sealed: p }
        }
        SEND_PACKET | RECV_PACKET => {
            need(t, &p, KEY_LEN)?;
            let key = key_at(&p, 0);
            p.advance(KEY_LEN);
            if t == SEND_PACKET {
                Frame::SendPacket { dst: key, data: p }
            } else {
                Frame::RecvPacket { src: key, data: p }
            }
        }
        KEEP_ALIVE => Frame::KeepAlive,
        NOTE_PREFERRED => {
            need(t, &p, 1)?;
            Frame::NotePreferred {
                preferred: p.first().is_some_and(|b| *b != 0),
            }
        }
        PEER_GONE => {
            need(t, &p, KEY_LEN)?;
            Frame::PeerGone {
                key: key_at(&p, 0),
                reason: p.get(KEY_LEN).map_or(PeerGoneReason::Disconnected, |b| {
                    PeerGoneReason::from_byte(*b)
                }),
            }
        }
        PEER_PRESENT => {
            need(t, &p, KEY_LEN)?;
            let addr = p.get(KEY_LEN..KEY_LEN + 18).map(|b| {
                let mut ip = [0u8; 16];
                ip.copy_from_slice(&b[..16]);
                let ip = Ipv6Addr::from(ip);
                let ip = ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4);
                SocketAddr::new(ip, u16::from_be_bytes([b[16], b[17]]))
            });
            Frame::PeerPresent {
                key: key_at(&p, 0),
                addr,
                flags: p.get(KEY_LEN + 18).map(|f| PeerPresentFlags(*f)),
            }
        }
        FORWARD_PACKET => {
            need(t, &p, 2 * KEY_LEN)?;
            let src = key_at(&p, 0);
            let dst = key_at(&p, KEY_LEN);
            p.advance(2 * KEY_LEN);
            Frame::ForwardPacket { src, dst, data: p }
        }
        WATCH_CONNS => Frame::WatchConns,
        CLOSE_PEER => {
            need(t, &p, KEY_LEN)?;
            Frame::ClosePeer { key: key_at(&p, 0) }
        }
        PING | PONG => {
            need(t, &p, 8)?;
            if p.len() > MAX_PING_PAYLOAD {
                return Err(Error::FrameTooLarge {
                    frame_type: t,
                    len: u32::try_from(p.len()).unwrap_or(u32::MAX),
                    max: MAX_PING_PAYLOAD as u32,
                });
            }
            if t == PING {
                Frame::Ping(eight(&p))
            } else {
                Frame::Pong(eight(&p))
            }
        }
        HEALTH => Frame::Health {
            problem: String::from_utf8_lossy(&p).into_owned(),
        },
        RESTARTING => {
            need(t, &p, 8)?;
            Frame::Restarting {
                reconnect_in_ms: u32_at(&p, 0),
                try_for_ms: u32_at(&p, 4),
            }
        }
        frame_type => Frame::Unknown { frame_type },
    };
    Ok(frame)
}
