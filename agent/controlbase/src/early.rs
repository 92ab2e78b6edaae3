//! EarlyNoise: the optional payload a server sends before HTTP/2 starts.
//!
//! The first 9 plaintext bytes from server to client are either an HTTP/2 frame header
//! or `ff ff ff 'T' 'S' | len u32 BE`, followed by `len` bytes of JSON
//! (`tailcfg.EarlyNoise`, e.g. `{"nodeKeyChallenge":"chalpub:…"}`). The JSON stays bytes
//! here; decoding it is the caller's business.

use crate::Error;

/// The 5 bytes that start an early payload; no HTTP/2 frame header starts with them.
pub const MAGIC: [u8; 5] = [0xff, 0xff, 0xff, b'T', b'S'];
/// Length of the early payload header (and of an HTTP/2 frame header).
pub const HEADER_LEN: usize = 9;
/// Largest JSON accepted by default: Tailscale's client refuses more than 10 MiB.
pub const MAX_JSON_LEN: usize = 10 << 20;

/// Frames `json` as an early payload: magic, length u32 BE, JSON.
///
/// # Errors
/// [`Error::EarlyTooLarge`] if `json` is longer than [`MAX_JSON_LEN`].
pub fn encode(json: &[u8]) -> Result<Vec<u8>, Error> {
    if json.len() > MAX_JSON_LEN {
        return Err(Error::EarlyTooLarge {
            len: json.len() as u64,
            max: MAX_JSON_LEN,
        });
    }
    let mut out = Vec::with_capacity(HEADER_LEN + json.len());
    out.extend_from_slice(&MAGIC);
    // At most MAX_JSON_LEN, which fits u32.
    out.extend_from_slice(&(json.len() as u32).to_be_bytes());
    out.extend_from_slice(json);
    Ok(out)
}

/// What the start of the server-to-client plaintext holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Early<'a> {
    /// Not enough bytes yet to tell (or the announced JSON is still incomplete).
    NeedMore,
    /// No early payload: every byte (from the first) belongs to HTTP/2.
    Absent,
    /// An early payload. `json` is its body; bytes from `consumed` on belong to HTTP/2.
    Payload {
        /// The JSON body, undecoded.
        json: &'a [u8],
        /// Bytes of `buf` taken by the early payload (header + JSON).
        consumed: usize,
    },
}

/// Reads only the 9-byte header: `Ok(Some(len))` for an early payload of `len` JSON bytes,
/// `Ok(None)` if these bytes start HTTP/2 instead.
///
/// # Errors
/// [`Error::EarlyTooLarge`] if `len` exceeds `max_json_len`.
pub fn parse_header(
    header: &[u8; HEADER_LEN],
    max_json_len: usize,
) -> Result<Option<usize>, Error> {
    if header[..MAGIC.len()] != MAGIC {
        return Ok(None);
    }
    let len = u32::from_be_bytes([header[5], header[6], header[7], header[8]]);
    match usize::try_from(len) {
        Ok(n) if n <= max_json_len => Ok(Some(n)),
        _ => Err(Error::EarlyTooLarge {
            len: u64::from(len),
            max: max_json_len,
        }),
    }
}

/// Looks at the plaintext received so far (from its very first byte) and tells whether it
/// starts with an early payload, and where HTTP/2 begins.
///
/// # Errors
/// [`Error::EarlyTooLarge`] if the announced length exceeds `max_json_len`.
pub fn decode(buf: &[u8], max_json_len: usize) -> Result<Early<'_>, Error> {
    let seen = buf.len().min(MAGIC.len());
    if buf[..seen] != MAGIC[..seen] {
        return Ok(Early::Absent);
    }
    let Some(header) = buf.first_chunk::<HEADER_LEN>() else {
        return Ok(Early::NeedMore);
    };
    let Some(len) = parse_header(header, max_json_len)? else {
        return Ok(Early::Absent);
    };
    let end = HEADER_LEN + len;
    if buf.len() < end {
        return Ok(Early::NeedMore);
    }
    Ok(Early::Payload {
        json: &buf[HEADER_LEN..end],
        consumed: end,
    })
}
