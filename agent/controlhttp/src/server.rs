//! Server side: one plain HTTP/1.1 request, either the ts2021 upgrade or `GET /key`.

use meshgate_controlbase::{MachinePublic, ServerHandshake, early, upgrade};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::{Error, NoiseStream, excerpt};

/// Largest request head [`accept`] reads; a larger one is answered with 431.
pub const MAX_REQUEST_HEAD_LEN: usize = 8 * 1024;
/// Most request headers [`accept`] parses; more is answered with 431.
pub const MAX_REQUEST_HEADERS: usize = 32;

/// What [`accept`] did with a connection.
#[derive(Debug)]
pub enum Accepted<S> {
    /// A ts2021 session is up: serve HTTP/2 on `stream` (e.g. `h2::server::handshake`).
    /// Boxed: the session state is a few hundred bytes, the other variant a few.
    Noise(Box<ServerConn<S>>),
    /// `GET /key` was answered and the connection is finished (`Connection: close`): drop it.
    KeyServed {
        /// The `v` query parameter, if present and a number.
        version: Option<u16>,
    },
}

/// An accepted ts2021 session.
#[derive(Debug)]
pub struct ServerConn<S> {
    /// The Noise stream; HTTP/2 (prior knowledge) comes next, after any EarlyNoise sent.
    pub stream: NoiseStream<S>,
    /// The client's machine key, authenticated by the handshake.
    pub machine_key: MachinePublic,
    /// The client's protocol (capability) version, authenticated by the prologue.
    pub version: u16,
}

/// The body of `GET /key?v=N` for a control server with public key `key`
/// (`tailcfg.OverTLSPublicKeyResponse`; the legacy key is all zero).
#[must_use]
pub fn key_response_json(key: &MachinePublic) -> String {
    let zero = MachinePublic::from_bytes([0; 32]);
    format!(r#"{{"legacyPublicKey":"{zero}","publicKey":"{key}"}}"#)
}

/// Serves one HTTP/1.1 request on `stream` (plain TCP, or TLS already accepted):
///
/// - `POST /ts2021` with `Upgrade: tailscale-control-protocol` and `X-Tailscale-Handshake`:
///   runs `server`'s Noise handshake and answers `101 Switching Protocols` plus the Noise
///   response, then `early_json` as an EarlyNoise payload if given (`tailcfg::EarlyNoise` JSON,
///   e.g. `{"nodeKeyChallenge":"chalpub:…"}`). Returns [`Accepted::Noise`].
/// - `GET /key[?v=N]`: answers 200 with [`key_response_json`] and `Connection: close`.
///   Returns [`Accepted::KeyServed`]. (Over HTTPS a real server usually serves `/key` from its
///   ordinary HTTP stack instead; this is for a plain-HTTP port.)
///
/// Anything else is an error for this connection only, after a best-effort HTTP answer:
/// 400 for a malformed request or upgrade, 404 for another path, 405 for another method,
/// 431 for a head over [`MAX_REQUEST_HEAD_LEN`] bytes or [`MAX_REQUEST_HEADERS`] headers.
/// A version refused by `server` is answered, as Tailscale's server does, with `101` and a
/// Noise error message (the client sees `ServerRefused`); a failed authentication (client
/// using the wrong control key) is answered by closing.
///
/// No timeouts here: wrap the call in `tokio::time::timeout` so that a silent client cannot
/// hold the task.
///
/// # Errors
/// [`Error::Http`] for the refused requests above, [`Error::Noise`] for a refused handshake,
/// [`Error::Io`] if the stream fails or closes before the head is complete.
pub async fn accept<S>(
    mut stream: S,
    server: &ServerHandshake,
    early_json: Option<&[u8]>,
) -> Result<Accepted<S>, Error>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = Vec::with_capacity(1024);
    let (head, head_len) = loop {
        match parse_head(&buf) {
            Ok(Some(parsed)) => break parsed,
            Ok(None) => {}
            Err(Refusal { status, text }) => return Err(refuse(&mut stream, status, text).await),
        }
        let mut chunk = [0u8; 2048];
        let want = chunk.len().min(MAX_REQUEST_HEAD_LEN + 1 - buf.len());
        let n = stream.read(&mut chunk[..want]).await?;
        if n == 0 {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "client closed the connection before the request head was complete",
            )));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let (path, query) = head
        .target
        .split_once('?')
        .unwrap_or((head.target.as_str(), ""));
    match (head.method.as_str(), path) {
        ("POST", upgrade::PATH) => {}
        ("GET", "/key") => {
            let version = query
                .split('&')
                .find_map(|kv| kv.strip_prefix("v="))
                .and_then(|v| v.parse().ok());
            let body = key_response_json(&server.public());
            let reply = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            stream.write_all(reply.as_bytes()).await?;
            stream.flush().await?;
            // A client that already closed its side must not turn a served reply into an error.
            let _ = stream.shutdown().await;
            return Ok(Accepted::KeyServed { version });
        }
        (_, upgrade::PATH | "/key") => {
            let text = format!(
                "method {} not allowed on {path}",
                excerpt(head.method.as_bytes())
            );
            return Err(refuse(&mut stream, 405, text).await);
        }
        _ => {
            let text = format!("no such path {:?}", excerpt(path.as_bytes()));
            return Err(refuse(&mut stream, 404, text).await);
        }
    }

    let initiation = match upgrade::initiation_from_headers(
        head.headers.iter().map(|(n, v)| (n.as_str(), v.as_str())),
    ) {
        Ok(i) => i,
        Err(e) => return Err(refuse(&mut stream, 400, e.to_string()).await),
    };
    let early = early_json.map(early::encode).transpose()?;
    let mut accepted = match server.accept(&initiation) {
        Ok(a) => a,
        Err(e) => {
            if let Some(reply) = e.reply_for_client() {
                let mut out = upgrade::server_response().as_bytes().to_vec();
                out.extend_from_slice(&reply);
                // Best effort: the client may already be gone.
                let _ = stream.write_all(&out).await;
                let _ = stream.flush().await;
            }
            return Err(Error::Noise(e));
        }
    };
    let mut out = upgrade::server_response().as_bytes().to_vec();
    out.extend_from_slice(&accepted.response);
    if let Some(payload) = early {
        out.extend_from_slice(&accepted.transport.encrypt(&payload)?);
    }
    stream.write_all(&out).await?;
    stream.flush().await?;
    // A client cannot send records before it has our response, but keep whatever came.
    accepted.transport.push(&buf[head_len..]);
    Ok(Accepted::Noise(Box::new(ServerConn {
        stream: NoiseStream::new(stream, accepted.transport),
        machine_key: accepted.machine_key,
        version: accepted.version,
    })))
}

/// The parts of a request head this server looks at.
struct Head {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
}

struct Refusal {
    status: u16,
    text: String,
}

/// `Ok(None)`: incomplete so far.
fn parse_head(buf: &[u8]) -> Result<Option<(Head, usize)>, Refusal> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_REQUEST_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => {
            let mut out = Vec::with_capacity(req.headers.len());
            for h in req.headers.iter() {
                let value = std::str::from_utf8(h.value).map_err(|_| Refusal {
                    status: 400,
                    text: format!("header {} is not UTF-8", excerpt(h.name.as_bytes())),
                })?;
                out.push((h.name.to_owned(), value.to_owned()));
            }
            Ok(Some((
                Head {
                    method: req.method.unwrap_or_default().to_owned(),
                    target: req.path.unwrap_or_default().to_owned(),
                    headers: out,
                },
                n,
            )))
        }
        Ok(httparse::Status::Partial) if buf.len() > MAX_REQUEST_HEAD_LEN => Err(Refusal {
            status: 431,
            text: format!("request head longer than {MAX_REQUEST_HEAD_LEN} bytes"),
        }),
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(Refusal {
            status: 431,
            text: format!("more than {MAX_REQUEST_HEADERS} request headers"),
        }),
        Err(e) => Err(Refusal {
            status: 400,
            text: format!("malformed HTTP/1.1 request: {e}"),
        }),
    }
}

/// Answers with `status` and `text` (best effort) and returns the error for the caller.
async fn refuse<S: AsyncWrite + Unpin>(stream: &mut S, status: u16, text: String) -> Error {
    let reason = match status {
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let body = format!("{text}\n");
    let reply = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
    Error::Http(format!("{status} {reason}: {text}"))
}
