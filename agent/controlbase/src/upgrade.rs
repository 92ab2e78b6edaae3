//! The HTTP/1.1 upgrade that carries the Noise initiation (pure text, no I/O).
//!
//! ```text
//! POST /ts2021 HTTP/1.1
//! Host: <control>
//! Upgrade: tailscale-control-protocol
//! Connection: upgrade
//! X-Tailscale-Handshake: <base64-std of the 101-byte initiation>
//!
//! HTTP/1.1 101 Switching Protocols
//! Upgrade: tailscale-control-protocol
//! Connection: upgrade
//! ```
//! After the blank line both directions carry raw controlbase frames.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use crate::Error;
use crate::messages::INITIATION_LEN;

/// Request path of the upgrade.
pub const PATH: &str = "/ts2021";
/// Value of the `Upgrade` header.
pub const UPGRADE_PROTOCOL: &str = "tailscale-control-protocol";
/// Header that carries the base64 initiation.
pub const HANDSHAKE_HEADER: &str = "X-Tailscale-Handshake";
/// Largest response head [`parse_response`] accepts before giving up.
pub const MAX_HEAD_LEN: usize = 16 * 1024;

/// Builds the client's upgrade request for `host` (as in the `Host` header, with a port if
/// not the default one).
///
/// # Errors
/// [`Error::Upgrade`] if `host` is empty or holds whitespace or control characters.
pub fn client_request(host: &str, initiation: &[u8; INITIATION_LEN]) -> Result<String, Error> {
    if host.is_empty()
        || host
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
    {
        return Err(Error::Upgrade(format!("invalid host {host:?}")));
    }
    Ok(format!(
        "POST {PATH} HTTP/1.1\r\nHost: {host}\r\nUpgrade: {UPGRADE_PROTOCOL}\r\n\
         Connection: upgrade\r\n{HANDSHAKE_HEADER}: {}\r\nContent-Length: 0\r\n\r\n",
        STANDARD.encode(initiation)
    ))
}

/// Parses the server's reply to the upgrade from the bytes received so far. `Ok(None)`: the
/// head is not complete yet. `Ok(Some(n))`: a valid `101` head of `n` bytes; what follows in
/// `buf` is the Noise response (feed it to the handshake).
///
/// # Errors
/// [`Error::Upgrade`] for another status (with status line), a missing or wrong `Upgrade`
/// header, a malformed head, or no end of head within [`MAX_HEAD_LEN`].
pub fn parse_response(buf: &[u8]) -> Result<Option<usize>, Error> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD_LEN {
            return Err(Error::Upgrade("response head too long".into()));
        }
        return Ok(None);
    };
    if end > MAX_HEAD_LEN {
        return Err(Error::Upgrade("response head too long".into()));
    }
    let head = std::str::from_utf8(&buf[..end])
        .map_err(|_| Error::Upgrade("response head is not UTF-8".into()))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let proto = parts.next().unwrap_or_default();
    let status = parts.next().unwrap_or_default();
    if !proto.starts_with("HTTP/1.") {
        return Err(Error::Upgrade(format!(
            "not an HTTP/1 response: {:?}",
            truncate(status_line)
        )));
    }
    if status != "101" {
        return Err(Error::Upgrade(format!(
            "server did not switch protocols: {:?}",
            truncate(status_line)
        )));
    }
    let upgrade = lines
        .filter_map(split_header)
        .find(|(name, _)| name.eq_ignore_ascii_case("upgrade"));
    match upgrade {
        Some((_, value)) if value.eq_ignore_ascii_case(UPGRADE_PROTOCOL) => Ok(Some(end + 4)),
        Some((_, value)) => Err(Error::Upgrade(format!(
            "server upgraded to {:?}",
            truncate(value)
        ))),
        None => Err(Error::Upgrade("101 response without Upgrade header".into())),
    }
}

/// Server side: finds and checks the upgrade in request headers (name, value pairs, names in
/// any case) and returns the decoded 101-byte initiation.
///
/// # Errors
/// [`Error::Upgrade`] if the `Upgrade` header is missing or names another protocol, or the
/// handshake header is missing, not base64, or not 101 bytes.
pub fn initiation_from_headers<'a, I>(headers: I) -> Result<[u8; INITIATION_LEN], Error>
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut upgrade = None;
    let mut handshake = None;
    for (name, value) in headers {
        if name.eq_ignore_ascii_case("upgrade") {
            upgrade = Some(value.trim());
        } else if name.eq_ignore_ascii_case(HANDSHAKE_HEADER) {
            handshake = Some(value.trim());
        }
    }
    match upgrade {
        Some(v) if v.eq_ignore_ascii_case(UPGRADE_PROTOCOL) => {}
        Some(v) => {
            return Err(Error::Upgrade(format!(
                "unsupported upgrade {:?}",
                truncate(v)
            )));
        }
        None => return Err(Error::Upgrade("no Upgrade header".into())),
    }
    let b64 = handshake.ok_or_else(|| Error::Upgrade(format!("no {HANDSHAKE_HEADER} header")))?;
    if b64.len() > 4 * INITIATION_LEN {
        return Err(Error::Upgrade("handshake header too long".into()));
    }
    let bytes = STANDARD
        .decode(b64)
        .map_err(|_| Error::Upgrade("handshake header is not valid base64".into()))?;
    bytes.try_into().map_err(|b: Vec<u8>| {
        Error::Upgrade(format!(
            "handshake is {} bytes, want {INITIATION_LEN}",
            b.len()
        ))
    })
}

/// The server's `101 Switching Protocols` head; write it, then the Noise response.
#[must_use]
pub fn server_response() -> &'static str {
    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: tailscale-control-protocol\r\nConnection: upgrade\r\n\r\n"
}

fn split_header(line: &str) -> Option<(&str, &str)> {
    let (name, value) = line.split_once(':')?;
    Some((name.trim(), value.trim()))
}

/// Caps text taken from the peer before it goes into an error message.
fn truncate(s: &str) -> &str {
    let mut end = s.len().min(80);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}
