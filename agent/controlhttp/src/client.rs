//! Client side: `POST /ts2021` upgrade, Noise handshake, optional EarlyNoise.

use meshgate_controlbase::early::{self, Early};
use meshgate_controlbase::messages::MAX_MESSAGE_LEN;
use meshgate_controlbase::{ClientHandshake, MachinePrivate, MachinePublic, upgrade};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Error, NoiseStream, excerpt};

/// Largest EarlyNoise JSON [`connect`] accepts (Tailscale's client limit, 10 MiB).
pub const MAX_EARLY_JSON_LEN: usize = early::MAX_JSON_LEN;

/// Opens a ts2021 session over `stream` (already connected to the control server, plain TCP
/// or TLS) as the client.
///
/// Writes the HTTP/1.1 `POST /ts2021` upgrade for `host` (the `Host` header, with port if not
/// the default) carrying the Noise initiation for `machine` towards the control key
/// `control` at protocol (capability) `version`; reads the `101 Switching Protocols` head
/// (at most [`upgrade::MAX_HEAD_LEN`] bytes) and the Noise response; then reads the first
/// plaintext bytes to see whether the server sent an EarlyNoise payload. Returns the stream,
/// positioned where HTTP/2 starts (bytes read past the payload are kept for the next read),
/// and the EarlyNoise JSON, undecoded (`tailcfg::EarlyNoise`), if there was one.
///
/// Waiting for those first plaintext bytes relies on the server speaking first: it sends
/// either the EarlyNoise payload or its HTTP/2 SETTINGS frame without waiting for the
/// client's preface, as Go's `http2.Server` and the `h2` crate do.
///
/// There are no timeouts here: wrap the call in `tokio::time::timeout` (a stalled server
/// otherwise keeps it waiting forever).
///
/// # Errors
/// - [`Error::Http`]: another status than 101 (status line and the start of the body), a
///   malformed or oversized head, a wrong `Upgrade`.
/// - [`Error::Noise`]: `ServerRefused(text)` when the server refuses (e.g. an unsupported
///   version), `HandshakeAuth` when `control` is not the server's key, a malformed response,
///   an oversized EarlyNoise.
/// - [`Error::Io`]: the stream failed or closed early, or a record failed afterwards.
pub async fn connect<S>(
    mut stream: S,
    host: &str,
    machine: &MachinePrivate,
    control: &MachinePublic,
    version: u16,
) -> Result<(NoiseStream<S>, Option<Vec<u8>>), Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut hs, initiation) = ClientHandshake::new(machine, control, version)?;
    let request = upgrade::client_request(host, &initiation)?;
    stream.write_all(request.as_bytes()).await?;
    stream.flush().await?;

    // The 101 head, then the Noise response (or error message) right behind it.
    let mut buf = Vec::with_capacity(1024);
    let head_len = loop {
        match upgrade::parse_response(&buf) {
            Ok(Some(n)) => break n,
            Ok(None) => {}
            Err(e) => return Err(http_refusal(e, &buf)),
        }
        if read_some(&mut stream, &mut buf).await? == 0 {
            return Err(eof("before the upgrade response was complete"));
        }
    };
    let transport = loop {
        if let Some(t) = hs.read_response(&buf[head_len..])? {
            break t;
        }
        if read_some(&mut stream, &mut buf).await? == 0 {
            return Err(eof("before the Noise handshake response was complete"));
        }
    };
    drop(buf);

    let mut noise = NoiseStream::new(stream, transport);
    let early = read_early(&mut noise).await?;
    Ok((noise, early))
}

/// Reads plaintext until it is clear whether an EarlyNoise payload comes first; puts back
/// whatever belongs to HTTP/2.
async fn read_early<S: AsyncRead + AsyncWrite + Unpin>(
    noise: &mut NoiseStream<S>,
) -> Result<Option<Vec<u8>>, Error> {
    let mut acc = Vec::new();
    let mut chunk = vec![0u8; MAX_MESSAGE_LEN];
    loop {
        match early::decode(&acc, MAX_EARLY_JSON_LEN)? {
            Early::NeedMore => {}
            Early::Absent => {
                noise.unread(&acc);
                return Ok(None);
            }
            Early::Payload { json, consumed } => {
                let json = json.to_vec();
                noise.unread(&acc[consumed..]);
                return Ok(Some(json));
            }
        }
        let n = noise.read(&mut chunk).await?;
        if n == 0 {
            return Err(eof("before HTTP/2 started"));
        }
        acc.extend_from_slice(&chunk[..n]);
    }
}

/// Appends one read's worth (at most 4 KiB) to `buf`.
async fn read_some<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut Vec<u8>,
) -> Result<usize, Error> {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await?;
    buf.extend_from_slice(&chunk[..n]);
    Ok(n)
}

fn eof(when: &str) -> Error {
    Error::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        format!("control server closed the connection {when}"),
    ))
}

/// Turns a refused upgrade into [`Error::Http`], adding the start of the body if the server
/// sent one along with its head.
fn http_refusal(e: meshgate_controlbase::Error, buf: &[u8]) -> Error {
    let meshgate_controlbase::Error::Upgrade(text) = e else {
        return Error::Noise(e);
    };
    let body = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|end| &buf[end + 4..])
        .unwrap_or_default();
    if body.is_empty() {
        Error::Http(text)
    } else {
        Error::Http(format!("{text}; body: {:?}", excerpt(body)))
    }
}
