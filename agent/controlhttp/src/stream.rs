//! [`NoiseStream`]: `AsyncRead + AsyncWrite` over ts2021 transport records.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use meshgate_controlbase::messages::{MAX_MESSAGE_LEN, MAX_PLAINTEXT_LEN};
use meshgate_controlbase::{RecordDecoder, RecordEncoder, SessionInfo, Transport};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most plaintext one `poll_write` takes: 16 records (about 64 KiB), so that the pending
/// ciphertext stays bounded.
pub const MAX_WRITE_CHUNK: usize = 16 * MAX_PLAINTEXT_LEN;

/// Bytes read from the inner stream at a time: one largest record. The decoder is drained
/// after every read, so it never holds more than two records' worth of undecrypted input.
const READ_CHUNK: usize = MAX_MESSAGE_LEN;

/// A byte stream carried in ts2021 Noise records over `S` (a TCP stream, or TLS over TCP).
///
/// - Writes are encrypted at once into records of at most 4077 plaintext bytes; a single
///   `poll_write` takes at most [`MAX_WRITE_CHUNK`] bytes. `poll_flush` pushes any ciphertext
///   still pending to `S` and flushes `S`.
/// - Reads decrypt record by record; plaintext that does not fit the caller's buffer stays
///   here for the next read. At most one record of ciphertext is read from `S` before it is
///   decrypted, so memory use is bounded whatever the peer sends.
/// - A Noise failure (tampered, replayed or malformed record, nonce exhaustion) is returned
///   as `io::Error` of kind `InvalidData` carrying the message; the stream is dead after it
///   (every later read and write fails the same way).
/// - End of `S` on a record boundary is end of stream; in the middle of a record it is
///   `UnexpectedEof`.
#[derive(Debug)]
pub struct NoiseStream<S> {
    inner: S,
    encoder: RecordEncoder,
    decoder: RecordDecoder,
    info: SessionInfo,
    /// Decrypted plaintext not yet handed out: `plain[plain_pos..]`.
    plain: Vec<u8>,
    plain_pos: usize,
    /// Encrypted bytes not yet written to `inner`: `wire[wire_pos..]`.
    wire: Vec<u8>,
    wire_pos: usize,
    /// Set by the first Noise error; every later operation repeats it.
    broken: Option<String>,
    read_eof: bool,
}

impl<S> NoiseStream<S> {
    /// Wraps `inner` with an established `transport`. Bytes already pushed into the
    /// transport's decoder are decrypted first.
    pub fn new(inner: S, transport: Transport) -> Self {
        let info = *transport.info();
        let (encoder, decoder) = transport.into_split();
        Self {
            inner,
            encoder,
            decoder,
            info,
            plain: Vec::new(),
            plain_pos: 0,
            wire: Vec::new(),
            wire_pos: 0,
            broken: None,
            read_eof: false,
        }
    }

    /// What the handshake agreed: protocol version, the peer's static key, handshake hash.
    #[must_use]
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The underlying stream (for its addresses; reading or writing it corrupts the session).
    #[must_use]
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Puts plaintext back in front of what is still unread (the bytes after an EarlyNoise
    /// payload belong to HTTP/2).
    pub(crate) fn unread(&mut self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut v = Vec::with_capacity(bytes.len() + self.plain.len() - self.plain_pos);
        v.extend_from_slice(bytes);
        v.extend_from_slice(&self.plain[self.plain_pos..]);
        self.plain = v;
        self.plain_pos = 0;
    }

    fn fail(&mut self, msg: String) -> io::Error {
        let err = io::Error::new(io::ErrorKind::InvalidData, msg.clone());
        self.broken = Some(msg);
        self.wire = Vec::new();
        self.wire_pos = 0;
        self.plain = Vec::new();
        self.plain_pos = 0;
        err
    }

    fn check_broken(&self) -> io::Result<()> {
        match &self.broken {
            Some(msg) => Err(io::Error::new(io::ErrorKind::InvalidData, msg.clone())),
            None => Ok(()),
        }
    }
}

impl<S: AsyncWrite + Unpin> NoiseStream<S> {
    /// Writes out pending ciphertext; `Ready(Ok)` once none is left.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.wire_pos < self.wire.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.wire[self.wire_pos..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.wire_pos += n;
        }
        self.wire.clear();
        self.wire_pos = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NoiseStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_broken()?;
        if buf.remaining() == 0 {
            return Poll::Ready(Ok(()));
        }
        loop {
            if this.plain_pos < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_pos);
                buf.put_slice(&this.plain[this.plain_pos..this.plain_pos + n]);
                this.plain_pos += n;
                if this.plain_pos == this.plain.len() {
                    this.plain.clear();
                    this.plain_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            match this.decoder.next_plaintext() {
                Some(Ok(p)) => {
                    this.plain = p;
                    this.plain_pos = 0;
                    continue;
                }
                Some(Err(e)) => return Poll::Ready(Err(this.fail(e.to_string()))),
                None => {}
            }
            if this.read_eof {
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; READ_CHUNK];
            let mut rb = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut rb))?;
            let got = rb.filled();
            if got.is_empty() {
                this.read_eof = true;
                // A partial record at the end is truncation, not a clean close.
                if this.decoder.buffered() > 0 {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "ts2021 stream ended inside a record",
                    )));
                }
                return Poll::Ready(Ok(()));
            }
            this.decoder.push(got);
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoiseStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_broken()?;
        ready!(this.poll_drain(cx))?;
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let n = buf.len().min(MAX_WRITE_CHUNK);
        match this.encoder.encrypt(&buf[..n]) {
            Ok(wire) => this.wire = wire,
            Err(e) => return Poll::Ready(Err(this.fail(e.to_string()))),
        }
        this.wire_pos = 0;
        // Start sending now; what the inner stream does not take yet goes out on the next
        // write or flush. The plaintext is accepted either way.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_broken()?;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_broken()?;
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}
