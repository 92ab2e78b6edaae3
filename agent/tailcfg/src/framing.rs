//! Map-response stream framing, sans I/O (reference §5.6; ts:control/controlclient/direct.go,
//! hs:hscontrol/poll.go).
//!
//! The `/machine/map` streaming body is a sequence of frames `[u32 LITTLE-endian length][body]`.
//! A body is a zstd frame of the JSON `MapResponse` when the request had `Compress: "zstd"`, else
//! the JSON itself. The keep-alive body is `{"KeepAlive":true}`.

use std::io::Read;

use crate::Error;
use crate::map::MapResponse;

/// Default maximum body length on the wire (compressed or not).
pub const MAX_FRAME_LEN: usize = 4 << 20;
/// Default maximum length of a decompressed body.
pub const MAX_DECOMPRESSED_LEN: usize = 64 << 20;
/// The first bytes of every zstd frame (a JSON body starts with `{` instead).
pub const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Frames an already-encoded body: `[u32 LE length][body]`.
///
/// # Panics
/// If `body` is 4 GiB or longer.
pub fn encode_frame(body: &[u8]) -> Vec<u8> {
    let len = u32::try_from(body.len()).expect("map response body below 4 GiB");
    let mut out = Vec::with_capacity(4 + body.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Encodes one map-stream frame: the JSON of `msg`, zstd-compressed if `compress`.
pub fn encode(msg: &MapResponse, compress: bool) -> Vec<u8> {
    // Cannot fail: every map key serializes as a string and non-finite floats become `null`.
    let json = serde_json::to_vec(msg).expect("MapResponse serializes");
    if compress {
        // In-memory compression only fails on allocation failure.
        let z = zstd::bulk::compress(&json, 0).expect("zstd compression of a buffer");
        encode_frame(&z)
    } else {
        encode_frame(&json)
    }
}

/// Decodes one frame body: zstd (detected by [`ZSTD_MAGIC`]) or plain JSON. Decompression stops
/// at `max_decompressed` bytes, and the zstd window is limited to that size too, so neither the
/// output nor the decoder's own buffers grow beyond it.
pub fn decode_body(body: &[u8], max_decompressed: usize) -> Result<MapResponse, Error> {
    if !body.starts_with(&ZSTD_MAGIC) {
        return Ok(serde_json::from_slice(body)?);
    }
    let mut dec = zstd::stream::read::Decoder::with_buffer(body).map_err(Error::Zstd)?;
    // Window log: the smallest power of two covering the limit, within zstd's accepted range.
    let window_log = max_decompressed
        .next_power_of_two()
        .trailing_zeros()
        .clamp(10, 31);
    dec.window_log_max(window_log).map_err(Error::Zstd)?;
    let mut json = Vec::with_capacity(body.len().saturating_mul(4).min(max_decompressed));
    dec.take(max_decompressed as u64 + 1)
        .read_to_end(&mut json)
        .map_err(Error::Zstd)?;
    if json.len() > max_decompressed {
        return Err(Error::DecompressedTooLarge {
            max: max_decompressed,
        });
    }
    Ok(serde_json::from_slice(&json)?)
}

/// Incremental decoder of a map-response stream: [`push`](Self::push) bytes as they arrive, then
/// drain the iterator, which yields one item per complete frame and `None` while a frame is
/// incomplete.
///
/// A bad body (zstd or JSON error, too large when decompressed) is an `Err` item for that
/// frame only; the stream stays in sync and later frames decode. A length above the frame limit
/// cannot be resynchronized: it yields one `Err`, after which the decoder is
/// [failed](Self::is_failed), ignores input and yields nothing; drop the connection.
/// No buffer is ever sized from a length the server announced.
#[derive(Debug)]
pub struct MapFrameDecoder {
    buf: Vec<u8>,
    max_frame_len: usize,
    max_decompressed_len: usize,
    failed: bool,
}

impl Default for MapFrameDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl MapFrameDecoder {
    /// A decoder with the default limits [`MAX_FRAME_LEN`] and [`MAX_DECOMPRESSED_LEN`].
    pub fn new() -> Self {
        Self::with_limits(MAX_FRAME_LEN, MAX_DECOMPRESSED_LEN)
    }

    /// A decoder with explicit limits. Uncompressed streams are bounded by `max_frame_len`
    /// alone, so raise it if you do not request compression.
    pub fn with_limits(max_frame_len: usize, max_decompressed_len: usize) -> Self {
        MapFrameDecoder {
            buf: Vec::new(),
            max_frame_len,
            max_decompressed_len,
            failed: false,
        }
    }

    /// Appends received bytes. Drain the iterator after each push: the frame limit is
    /// checked there.
    pub fn push(&mut self, bytes: &[u8]) {
        if !self.failed {
            self.buf.extend_from_slice(bytes);
        }
    }

    /// Bytes received but not yet decoded.
    pub fn buffered_len(&self) -> usize {
        self.buf.len()
    }

    /// Whether an oversized frame made the stream undecodable.
    pub fn is_failed(&self) -> bool {
        self.failed
    }
}

impl Iterator for MapFrameDecoder {
    type Item = Result<MapResponse, Error>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let header: [u8; 4] = self.buf.get(..4)?.try_into().expect("4 bytes");
        let len = u32::from_le_bytes(header) as usize;
        if len > self.max_frame_len {
            self.failed = true;
            self.buf = Vec::new();
            return Some(Err(Error::FrameTooLarge {
                len,
                max: self.max_frame_len,
            }));
        }
        let body = self.buf.get(4..4 + len)?;
        let msg = decode_body(body, self.max_decompressed_len);
        self.buf.drain(..4 + len);
        Some(msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::filter::FilterRule;

    fn sample() -> MapResponse {
        MapResponse {
            seq: 7,
            domain: "example.ts.net".into(),
            packet_filter: Some(vec![FilterRule {
                src_ips: vec!["*".into()],
                ..FilterRule::default()
            }]),
            ..MapResponse::default()
        }
    }

    #[test]
    fn plain_frame_layout_is_little_endian() {
        let f = encode(&MapResponse::keep_alive(), false);
        assert_eq!(&f[..4], &[18, 0, 0, 0]);
        assert_eq!(&f[4..], br#"{"KeepAlive":true}"#);
    }

    #[test]
    fn byte_by_byte_plain_and_zstd() {
        for compress in [false, true] {
            let mut stream = encode(&sample(), compress);
            stream.extend(encode(&MapResponse::keep_alive(), compress));
            if compress {
                assert_eq!(&stream[4..8], &ZSTD_MAGIC);
            }
            let mut dec = MapFrameDecoder::new();
            let mut got = Vec::new();
            for b in &stream {
                dec.push(std::slice::from_ref(b));
                got.extend(dec.by_ref().map(Result::unwrap));
            }
            assert_eq!(got.len(), 2, "compress={compress}");
            assert_eq!(got[0], sample());
            assert!(got[1].keep_alive && got[1].is_keep_alive_only());
            assert_eq!(dec.buffered_len(), 0);
        }
    }

    #[test]
    fn truncated_frame_waits() {
        let f = encode(&sample(), true);
        let mut dec = MapFrameDecoder::new();
        dec.push(&f[..2]);
        assert!(dec.next().is_none());
        dec.push(&f[2..f.len() - 1]);
        assert!(dec.next().is_none());
        assert!(!dec.is_failed());
        dec.push(&f[f.len() - 1..]);
        assert_eq!(dec.next().unwrap().unwrap(), sample());
        assert!(dec.next().is_none());
    }

    #[test]
    fn oversized_length_rejected_before_body_arrives() {
        let mut dec = MapFrameDecoder::new();
        dec.push(&u32::MAX.to_le_bytes());
        let err = dec.next().unwrap().unwrap_err();
        assert!(
            matches!(err, Error::FrameTooLarge { len, max: MAX_FRAME_LEN } if len == u32::MAX as usize)
        );
        assert!(dec.is_failed());
        dec.push(&encode(&MapResponse::keep_alive(), false));
        assert!(dec.next().is_none());
        assert_eq!(dec.buffered_len(), 0);

        let mut dec = MapFrameDecoder::with_limits(17, MAX_DECOMPRESSED_LEN);
        dec.push(&encode(&MapResponse::keep_alive(), false)); // 18 bytes
        assert!(matches!(
            dec.next(),
            Some(Err(Error::FrameTooLarge { len: 18, max: 17 }))
        ));
    }

    #[test]
    fn garbage_bodies_are_errors_and_stream_continues() {
        let mut dec = MapFrameDecoder::new();
        dec.push(&encode_frame(b"not json"));
        dec.push(&encode_frame(&[0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3, 4, 5]));
        dec.push(&encode_frame(b""));
        dec.push(&encode_frame(b"[1,2]"));
        dec.push(&encode(&MapResponse::keep_alive(), true));
        assert!(matches!(dec.next(), Some(Err(Error::Json(_)))));
        assert!(matches!(dec.next(), Some(Err(Error::Zstd(_)))));
        assert!(matches!(dec.next(), Some(Err(Error::Json(_)))));
        assert!(matches!(dec.next(), Some(Err(Error::Json(_)))));
        assert!(dec.next().unwrap().unwrap().keep_alive);
        assert!(dec.next().is_none());
        assert!(!dec.is_failed());
    }

    #[test]
    fn decompression_is_bounded() {
        // 2 MiB of JSON whitespace compresses to a few hundred bytes. Streaming compression
        // at level 1 leaves the size out of the header and uses a 512 KiB window, which the
        // 1 MiB limit admits: only the output bound stops it.
        let mut json = vec![b' '; 2 << 20];
        json.extend_from_slice(br#"{"KeepAlive":true}"#);
        let z = zstd::stream::encode_all(&json[..], 1).unwrap();
        assert!(z.len() < 4096, "{}", z.len());

        let mut dec = MapFrameDecoder::with_limits(MAX_FRAME_LEN, 1 << 20);
        dec.push(&encode_frame(&z));
        assert!(matches!(
            dec.next(),
            Some(Err(Error::DecompressedTooLarge { max })) if max == 1 << 20
        ));
        let mut dec = MapFrameDecoder::new();
        dec.push(&encode_frame(&z));
        assert!(dec.next().unwrap().unwrap().keep_alive);
    }

    #[test]
    fn zstd_window_above_limit_is_refused() {
        // A frame whose window (here: its whole 2 MiB content, single segment) exceeds the
        // limit's window is refused by zstd itself before it allocates the window.
        let mut json = vec![b' '; 2 << 20];
        json.extend_from_slice(b"{}");
        let z = zstd::bulk::compress(&json, 0).unwrap();
        let err = decode_body(&z, 64 << 10).unwrap_err();
        assert!(matches!(err, Error::Zstd(_)), "{err}");
        assert!(decode_body(&z, 4 << 20).is_ok());
    }
}
