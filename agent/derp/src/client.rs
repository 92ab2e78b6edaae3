//! The tokio DERP client: connect (TCP, optional TLS), `GET /derp` upgrade, handshake, then a
//! reader task (events, Pong replies, read deadline) and a writer task (batched frames).
//! No reconnect: the owner of the client decides when to dial again.
//!
//! [`ClientOptions::fwmark`] marks the TCP socket (SO_MARK) before it connects: with
//! WireGuard's mark, the tailnet table's `not fwmark` rule lets DERP bypass an exit node.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meshgate_tailcfg::{DerpNode, NodePrivate, NodePublic};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

use crate::frame::{
    self, CLIENT_MAX_FRAME, Frame, MAX_PACKET_SIZE, PeerGoneReason, PeerPresentFlags,
};
use crate::handshake::{self, ClientInfo, ServerInfo};
use crate::{Error, http};

/// A byte stream to a DERP server (plain TCP or TLS).
trait DerpStream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> DerpStream for T {}
type BoxStream = Box<dyn DerpStream>;

/// Where and how to connect.
#[derive(Clone)]
pub struct DerpTarget {
    /// Address to dial (`host:port`, IPv6 bracketed).
    dial: String,
    /// Host header value.
    host_header: String,
    /// `Some((SNI name, config))` for TLS.
    tls: Option<(ServerName<'static>, Arc<rustls::ClientConfig>)>,
}

impl fmt::Debug for DerpTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DerpTarget")
            .field("dial", &self.dial)
            .field("tls", &self.tls.as_ref().map(|(n, _)| n))
            .finish()
    }
}

fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl DerpTarget {
    /// `https://host[:port][/derp]` (TLS) or `http://host[:port][/derp]` (plain, tests/debug).
    /// `cert_name` as in a DerpNode (`sha256-raw:<hex>` pins); `extra_ca_pem` is trusted
    /// besides the public roots.
    pub fn from_url(
        url: &str,
        cert_name: &str,
        extra_ca_pem: Option<&[u8]>,
    ) -> Result<DerpTarget, Error> {
        let bad = |why: &str| Error::Target(format!("{url:?}: {why}"));
        let (tls, rest, default_port) = if let Some(r) = url.strip_prefix("https://") {
            (true, r, 443)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r, 80)
        } else {
            return Err(bad("expected http:// or https://"));
        };
        let authority = rest
            .strip_suffix("/derp")
            .or_else(|| rest.strip_suffix('/'))
            .unwrap_or(rest);
        if authority.is_empty() || authority.contains(['/', '?', '#', '@', ' ']) {
            return Err(bad("expected scheme://host[:port][/derp]"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            let port = match after.strip_prefix(':') {
                Some(p) => p.parse().map_err(|_| bad("bad port"))?,
                None if after.is_empty() => default_port,
                None => return Err(bad("junk after ]")),
            };
            (h.to_owned(), port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h.to_owned(), p.parse().map_err(|_| bad("bad port"))?),
                None => (authority.to_owned(), default_port),
            }
        };
        Self::build(&host, &host, port, tls, cert_name, extra_ca_pem)
    }

    /// A DERP map node: dials `IPv4` (else `IPv6`, else `HostName`) on `DERPPort`, TLS with
    /// SNI = `HostName` and `CertName` checking, or plain HTTP when `InsecureForTests` is set.
    pub fn from_node(node: &DerpNode, extra_ca_pem: Option<&[u8]>) -> Result<DerpTarget, Error> {
        let usable = |s: &str| !s.is_empty() && s != "none";
        let dial_host = if usable(&node.ipv4) {
            node.ipv4.clone()
        } else if usable(&node.ipv6) {
            node.ipv6.clone()
        } else if !node.host_name.is_empty() {
            node.host_name.clone()
        } else {
            return Err(Error::Target(format!("node {:?}: no address", node.name)));
        };
        if node.stun_only {
            return Err(Error::Target(format!("node {:?} is STUN-only", node.name)));
        }
        let sni = if node.host_name.is_empty() {
            dial_host.clone()
        } else {
            node.host_name.clone()
        };
        Self::build(
            &dial_host,
            &sni,
            node.effective_derp_port(),
            !node.insecure_for_tests,
            &node.cert_name,
            extra_ca_pem,
        )
    }

    fn build(
        dial_host: &str,
        sni: &str,
        port: u16,
        tls: bool,
        cert_name: &str,
        extra_ca_pem: Option<&[u8]>,
    ) -> Result<DerpTarget, Error> {
        let tls = if tls {
            let name = ServerName::try_from(sni.to_owned())
                .map_err(|e| Error::Target(format!("TLS name {sni:?}: {e}")))?;
            Some((name, crate::tls::client_config(cert_name, extra_ca_pem)?))
        } else {
            None
        };
        Ok(DerpTarget {
            dial: join_host_port(dial_host, port),
            host_header: join_host_port(sni, port),
            tls,
        })
    }

    /// Whether the connection uses TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}

/// Connection settings.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// TCP connect + TLS handshake.
    pub connect_timeout: Duration,
    /// HTTP upgrade and DERP handshake.
    pub handshake_timeout: Duration,
    /// Nothing (not even a KeepAlive) from the server for this long closes the connection.
    pub read_timeout: Duration,
    /// A stuck write for this long closes the connection.
    pub write_timeout: Duration,
    /// Outgoing frames buffered before `send` waits (`try_send` reports full).
    pub send_queue: usize,
    /// Events buffered before the reader stops reading (TCP back-pressure).
    pub event_queue: usize,
    /// If set, the server must present this key (header and ServerKey frame).
    pub expected_server_key: Option<NodePublic>,
    /// `Ideal-Node` header value.
    pub ideal_node: Option<String>,
    /// SO_MARK for the TCP socket, set before it connects; 0 = none. Needs CAP_NET_ADMIN:
    /// without it the connection is made unmarked, with a warning.
    pub fwmark: u32,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(120),
            write_timeout: Duration::from_secs(10),
            send_queue: 256,
            event_queue: 256,
            expected_server_key: None,
            ideal_node: None,
            fwmark: 0,
        }
    }
}

/// What the server told us.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Packet {
        src: NodePublic,
        data: Bytes,
    },
    PeerGone {
        key: NodePublic,
        reason: PeerGoneReason,
    },
    PeerPresent {
        key: NodePublic,
        addr: Option<std::net::SocketAddr>,
        flags: Option<PeerPresentFlags>,
    },
    /// Empty = healthy again.
    Health {
        problem: String,
    },
    Restarting {
        reconnect_in_ms: u32,
        try_for_ms: u32,
    },
    /// The answer to one of our [`DerpClient::ping`]s.
    Pong([u8; 8]),
}

enum Outgoing {
    Packet { dst: NodePublic, data: Bytes },
    Frame(Frame),
}

/// Why the connection ended, shared by the two tasks and read by [`DerpEvents::recv`].
type CloseReason = Arc<Mutex<Option<Error>>>;

fn set_reason(reason: &CloseReason, e: Error) {
    if let Ok(mut r) = reason.lock()
        && r.is_none()
    {
        *r = Some(e);
    }
}

/// Handle to send on a connection. Cloneable; the connection closes when every handle is dropped
/// or [`DerpClient::close`] is called.
#[derive(Clone, Debug)]
pub struct DerpClient {
    tx: mpsc::Sender<Outgoing>,
    dead: watch::Sender<bool>,
    public: NodePublic,
    server_key: NodePublic,
    server_info: ServerInfo,
}

impl fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outgoing::Packet { dst, data } => write!(f, "Packet({dst}, {} B)", data.len()),
            Outgoing::Frame(fr) => write!(f, "{fr:?}"),
        }
    }
}

fn check_len(data: &Bytes) -> Result<(), Error> {
    if data.len() > MAX_PACKET_SIZE {
        return Err(Error::FrameTooLarge {
            frame_type: frame::types::SEND_PACKET,
            len: u32::try_from(data.len()).unwrap_or(u32::MAX),
            max: MAX_PACKET_SIZE as u32,
        });
    }
    Ok(())
}

impl DerpClient {
    /// Queues a packet for `dst`, waiting while the send queue is full.
    pub async fn send(&self, dst: NodePublic, data: Bytes) -> Result<(), Error> {
        check_len(&data)?;
        self.tx
            .send(Outgoing::Packet { dst, data })
            .await
            .map_err(|_| Error::Closed)
    }

    /// Queues a packet without waiting: `Ok(false)` if the send queue is full (packet dropped).
    pub fn try_send(&self, dst: NodePublic, data: Bytes) -> Result<bool, Error> {
        check_len(&data)?;
        match self.tx.try_send(Outgoing::Packet { dst, data }) {
            Ok(()) => Ok(true),
            Err(mpsc::error::TrySendError::Full(_)) => Ok(false),
            Err(mpsc::error::TrySendError::Closed(_)) => Err(Error::Closed),
        }
    }

    /// Tells the server whether it is our home region (stats only).
    pub async fn note_preferred(&self, preferred: bool) -> Result<(), Error> {
        self.frame(Frame::NotePreferred { preferred }).await
    }

    /// Sends a Ping; the server's Pong arrives as [`Event::Pong`].
    pub async fn ping(&self, data: [u8; 8]) -> Result<(), Error> {
        self.frame(Frame::Ping(data)).await
    }

    async fn frame(&self, f: Frame) -> Result<(), Error> {
        self.tx
            .send(Outgoing::Frame(f))
            .await
            .map_err(|_| Error::Closed)
    }

    /// Our node key.
    pub fn public_key(&self) -> NodePublic {
        self.public
    }

    /// The server's key (checked against the header and the ServerKey frame).
    pub fn server_key(&self) -> NodePublic {
        self.server_key
    }

    /// What the server sent in ServerInfo.
    pub fn server_info(&self) -> &ServerInfo {
        &self.server_info
    }

    /// Closes the connection (both tasks stop; queued frames may be lost).
    pub fn close(&self) {
        let _ = self.dead.send(true);
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        *self.dead.borrow() || self.tx.is_closed()
    }
}

/// The events of one connection, in order.
#[derive(Debug)]
pub struct DerpEvents {
    rx: mpsc::Receiver<Event>,
    reason: CloseReason,
}

impl DerpEvents {
    /// The next event; after the connection ends, the reason (or [`Error::Closed`]).
    pub async fn recv(&mut self) -> Result<Event, Error> {
        match self.rx.recv().await {
            Some(e) => Ok(e),
            None => Err(self
                .reason
                .lock()
                .ok()
                .and_then(|mut r| r.take())
                .unwrap_or(Error::Closed)),
        }
    }
}

async fn dial(target: &DerpTarget, fwmark: u32) -> Result<BoxStream, Error> {
    let connect_err = |source| Error::Connect {
        addr: target.dial.clone(),
        source,
    };
    let tcp = meshgate_netns::connect_tcp(&target.dial, fwmark, "DERP")
        .await
        .map_err(connect_err)?;
    let _ = tcp.set_nodelay(true);
    match &target.tls {
        None => Ok(Box::new(tcp)),
        Some((name, config)) => {
            let tls = tokio_rustls::TlsConnector::from(config.clone())
                .connect(name.clone(), tcp)
                .await
                .map_err(connect_err)?;
            Ok(Box::new(tls))
        }
    }
}

/// Reads until `buf` holds at least one more byte; EOF is [`Error::Closed`].
async fn fill(stream: &mut (impl AsyncRead + Unpin), buf: &mut BytesMut) -> Result<(), Error> {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 << 10);
    }
    match stream.read_buf(buf).await? {
        0 => Err(Error::Closed),
        _ => Ok(()),
    }
}

async fn read_frame(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
    max: u32,
) -> Result<Frame, Error> {
    loop {
        if let Some(f) = frame::decode(buf, max)? {
            return Ok(f);
        }
        fill(stream, buf).await?;
    }
}

/// Upgrade + handshake on a connected stream; returns the leftover read buffer.
async fn handshake(
    stream: &mut BoxStream,
    target: &DerpTarget,
    key: &NodePrivate,
    opts: &ClientOptions,
) -> Result<(BytesMut, NodePublic, ServerInfo), Error> {
    stream
        .write_all(&http::upgrade_request(
            &target.host_header,
            opts.ideal_node.as_deref(),
        ))
        .await?;
    stream.flush().await?;
    let mut buf = BytesMut::with_capacity(4096);
    let header_key = loop {
        if let Some((n, k)) = http::parse_upgrade_response(&buf)? {
            let _ = buf.split_to(n);
            break k;
        }
        fill(stream, &mut buf).await?;
    };
    if let Some(want) = opts.expected_server_key
        && want != header_key
    {
        return Err(Error::ServerKeyMismatch(format!(
            "Derp-Public-Key is {header_key}, expected {want}"
        )));
    }
    let server_key = match read_frame(stream, &mut buf, CLIENT_MAX_FRAME).await? {
        Frame::ServerKey { key } => key,
        _ => return Err(Error::UnexpectedFrame("expected ServerKey")),
    };
    if server_key != header_key {
        return Err(Error::ServerKeyMismatch(format!(
            "ServerKey frame {server_key} differs from Derp-Public-Key {header_key}"
        )));
    }
    let mut out = BytesMut::new();
    frame::encode(
        &handshake::client_info_frame(key, &server_key, &ClientInfo::ours()),
        &mut out,
    );
    stream.write_all(&out).await?;
    stream.flush().await?;
    let info = loop {
        match read_frame(stream, &mut buf, CLIENT_MAX_FRAME).await? {
            Frame::ServerInfo { sealed } => {
                break handshake::open_server_info(key, &server_key, &sealed)?;
            }
            // Anything else before ServerInfo (e.g. a KeepAlive) is tolerated and skipped.
            _ => continue,
        }
    };
    Ok((buf, server_key, info))
}

/// Connects to `target` as `key` and completes the DERP handshake.
///
/// Errors: [`Error::Connect`] (TCP/TLS, including a refused pin), [`Error::UpgradeRefused`],
/// [`Error::ServerKeyMismatch`], [`Error::BoxOpen`]/[`Error::Closed`] (handshake refused),
/// [`Error::Timeout`].
pub async fn connect(
    target: &DerpTarget,
    key: NodePrivate,
    opts: &ClientOptions,
) -> Result<(DerpClient, DerpEvents), Error> {
    let mut stream = timeout(opts.connect_timeout, dial(target, opts.fwmark))
        .await
        .map_err(|_| Error::Timeout("connect"))??;
    let (buf, server_key, server_info) = timeout(
        opts.handshake_timeout,
        handshake(&mut stream, target, &key, opts),
    )
    .await
    .map_err(|_| Error::Timeout("handshake"))??;
    let (rd, wr) = tokio::io::split(stream);
    let (tx, out_rx) = mpsc::channel(opts.send_queue.max(1));
    let (ev_tx, ev_rx) = mpsc::channel(opts.event_queue.max(1));
    let (dead, dead_rx) = watch::channel(false);
    let reason: CloseReason = Arc::default();
    tokio::spawn(writer(
        wr,
        out_rx,
        dead.clone(),
        reason.clone(),
        opts.write_timeout,
    ));
    tokio::spawn(reader(
        rd,
        buf,
        ev_tx,
        tx.downgrade(),
        dead.clone(),
        dead_rx,
        reason.clone(),
        opts.read_timeout,
    ));
    Ok((
        DerpClient {
            tx,
            dead,
            public: key.public(),
            server_key,
            server_info,
        },
        DerpEvents { rx: ev_rx, reason },
    ))
}

/// Largest batch of frames written at once.
const WRITE_BATCH: usize = 64 << 10;

fn encode_outgoing(o: &Outgoing, out: &mut BytesMut) {
    match o {
        Outgoing::Packet { dst, data } => {
            frame::encode_packet_header(out, frame::types::SEND_PACKET, dst, data.len());
            out.extend_from_slice(data);
        }
        Outgoing::Frame(f) => frame::encode(f, out),
    }
}

async fn writer(
    mut wr: WriteHalf<BoxStream>,
    mut rx: mpsc::Receiver<Outgoing>,
    dead: watch::Sender<bool>,
    reason: CloseReason,
    write_timeout: Duration,
) {
    let mut dead_rx = dead.subscribe();
    let mut out = BytesMut::with_capacity(16 << 10);
    loop {
        let first = tokio::select! {
            o = rx.recv() => o,
            _ = dead_rx.wait_for(|d| *d) => None,
        };
        let Some(first) = first else { break };
        encode_outgoing(&first, &mut out);
        while out.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(o) => encode_outgoing(&o, &mut out),
                Err(_) => break,
            }
        }
        let write = async {
            wr.write_all(&out).await?;
            wr.flush().await
        };
        match timeout(write_timeout, write).await {
            Ok(Ok(())) => out.clear(),
            Ok(Err(e)) => {
                set_reason(&reason, Error::Io(e));
                break;
            }
            Err(_) => {
                set_reason(&reason, Error::Timeout("write"));
                break;
            }
        }
    }
    let _ = wr.shutdown().await;
    let _ = dead.send(true);
}

#[allow(clippy::too_many_arguments)]
async fn reader(
    mut rd: ReadHalf<BoxStream>,
    mut buf: BytesMut,
    events: mpsc::Sender<Event>,
    pong_tx: mpsc::WeakSender<Outgoing>,
    dead: watch::Sender<bool>,
    mut dead_rx: watch::Receiver<bool>,
    reason: CloseReason,
    read_timeout: Duration,
) {
    let run = async {
        loop {
            let f = match frame::decode(&mut buf, CLIENT_MAX_FRAME)? {
                Some(f) => f,
                None => {
                    // Any bytes (KeepAlive included) reset the deadline.
                    timeout(read_timeout, fill(&mut rd, &mut buf))
                        .await
                        .map_err(|_| Error::Timeout("read"))??;
                    continue;
                }
            };
            let ev = match f {
                Frame::RecvPacket { src, data } => Event::Packet { src, data },
                Frame::Ping(d) => {
                    if let Some(tx) = pong_tx.upgrade() {
                        tx.send(Outgoing::Frame(Frame::Pong(d)))
                            .await
                            .map_err(|_| Error::Closed)?;
                    }
                    continue;
                }
                Frame::Pong(d) => Event::Pong(d),
                Frame::PeerGone { key, reason } => Event::PeerGone { key, reason },
                Frame::PeerPresent { key, addr, flags } => Event::PeerPresent { key, addr, flags },
                Frame::Health { problem } => Event::Health { problem },
                Frame::Restarting {
                    reconnect_in_ms,
                    try_for_ms,
                } => Event::Restarting {
                    reconnect_in_ms,
                    try_for_ms,
                },
                Frame::KeepAlive => continue,
                other => {
                    tracing::debug!(
                        frame_type = other.frame_type(),
                        "DERP client: frame ignored"
                    );
                    continue;
                }
            };
            events.send(ev).await.map_err(|_| Error::Closed)?;
        }
    };
    let result: Result<(), Error> = tokio::select! {
        r = run => r,
        _ = dead_rx.wait_for(|d| *d) => Err(Error::Closed),
    };
    if let Err(e) = result {
        set_reason(&reason, e);
    }
    let _ = dead.send(true);
}
