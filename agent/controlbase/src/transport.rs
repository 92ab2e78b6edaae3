//! Transport records after the handshake, with ts2021's big-endian nonce.
//!
//! Noise puts the 64-bit counter little-endian into bytes 4..12 of the ChaCha20-Poly1305
//! nonce; Tailscale's controlbase puts it big-endian. The two agree only on counter 0, so
//! this layer is done here rather than by `snow`.

use std::fmt;

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce, Tag};

use crate::Error;
use crate::keys::MachinePublic;
use crate::messages::{
    HEADER_LEN, MAX_CIPHERTEXT_LEN, MAX_PLAINTEXT_LEN, MSG_RECORD, TAG_LEN, be16,
};

/// What both ends agreed on in the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionInfo {
    /// Protocol (capability) version from the initiation, bound by the prologue.
    pub version: u16,
    /// The other side's static key: the control key for a client, the machine key for a server.
    pub peer: MachinePublic,
    /// The final Noise handshake hash (unique per session; usable for channel binding).
    pub handshake_hash: [u8; 32],
}

/// The nonce of one direction: 4 zero bytes, then the counter big-endian.
fn nonce(counter: u64) -> Nonce {
    let mut n = [0u8; 12];
    n[4..].copy_from_slice(&counter.to_be_bytes());
    n.into()
}

/// Counter value that is never used: exhaustion is reached before it, as in Tailscale.
const INVALID_NONCE: u64 = u64::MAX;

/// Encrypts outgoing plaintext into records (one direction of a [`Transport`]).
pub struct RecordEncoder {
    cipher: ChaCha20Poly1305,
    counter: u64,
}

impl fmt::Debug for RecordEncoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordEncoder")
            .field("counter", &self.counter)
            .finish_non_exhaustive()
    }
}

impl RecordEncoder {
    fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
            counter: 0,
        }
    }

    /// Encrypts `plaintext` as one or more records (at most 4077 plaintext bytes each) and
    /// returns their bytes, ready to write. Empty plaintext gives no records.
    ///
    /// # Errors
    /// [`Error::NonceExhausted`] if the records would run the counter out; nothing is
    /// encrypted then.
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        let records = plaintext.len().div_ceil(MAX_PLAINTEXT_LEN) as u64;
        if INVALID_NONCE - self.counter < records {
            return Err(Error::NonceExhausted);
        }
        let mut out =
            Vec::with_capacity(plaintext.len() + records as usize * (HEADER_LEN + TAG_LEN));
        for chunk in plaintext.chunks(MAX_PLAINTEXT_LEN) {
            out.push(MSG_RECORD);
            // chunk.len() + TAG_LEN <= 4093.
            out.extend_from_slice(&((chunk.len() + TAG_LEN) as u16).to_be_bytes());
            let start = out.len();
            out.extend_from_slice(chunk);
            let tag = self
                .cipher
                .encrypt_in_place_detached(&nonce(self.counter), &[], &mut out[start..])
                .map_err(|_| Error::Noise("record encryption failed".into()))?;
            out.extend_from_slice(&tag);
            self.counter += 1;
        }
        Ok(out)
    }

    /// Number of records sent so far (the next nonce counter).
    #[must_use]
    pub fn counter(&self) -> u64 {
        self.counter
    }

    #[cfg(test)]
    pub(crate) fn set_counter_for_test(&mut self, counter: u64) {
        self.counter = counter;
    }
}

/// Decrypts incoming records, fed in pieces of any size (one direction of a [`Transport`]).
pub struct RecordDecoder {
    cipher: ChaCha20Poly1305,
    counter: u64,
    buf: Vec<u8>,
    start: usize,
    broken: bool,
}

impl fmt::Debug for RecordDecoder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordDecoder")
            .field("counter", &self.counter)
            .field("buffered", &self.buffered())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl RecordDecoder {
    fn new(key: &[u8; 32]) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(key)),
            counter: 0,
            buf: Vec::new(),
            start: 0,
            broken: false,
        }
    }

    /// Appends bytes received from the stream. Drain with [`Self::next_plaintext`] after each
    /// push: at most one record (4096 bytes) is needed to make progress.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && (self.start == self.buf.len() || self.start >= 4096) {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes pushed but not yet consumed as whole records.
    #[must_use]
    pub fn buffered(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Number of records received so far (the next nonce counter).
    #[must_use]
    pub fn counter(&self) -> u64 {
        self.counter
    }

    /// The plaintext of the next complete record, `None` if more bytes are needed.
    ///
    /// After an error the stream is dead: every later call returns [`Error::Broken`].
    ///
    /// # Errors
    /// [`Error::UnexpectedType`] (not a record), [`Error::RecordLength`],
    /// [`Error::Decrypt`] (tampered, replayed, reordered), [`Error::NonceExhausted`].
    pub fn next_plaintext(&mut self) -> Option<Result<Vec<u8>, Error>> {
        if self.broken {
            return Some(Err(Error::Broken));
        }
        let result = self.try_next()?;
        if result.is_err() {
            self.broken = true;
            self.buf = Vec::new();
            self.start = 0;
        }
        Some(result)
    }

    fn try_next(&mut self) -> Option<Result<Vec<u8>, Error>> {
        let avail = &self.buf[self.start..];
        let &kind = avail.first()?;
        if kind != MSG_RECORD {
            return Some(Err(Error::UnexpectedType {
                got: kind,
                want: MSG_RECORD,
            }));
        }
        if avail.len() < HEADER_LEN {
            return None;
        }
        let len = be16(avail, 1);
        let n = usize::from(len);
        if !(TAG_LEN..=MAX_CIPHERTEXT_LEN).contains(&n) {
            return Some(Err(Error::RecordLength(len)));
        }
        if avail.len() < HEADER_LEN + n {
            return None;
        }
        if self.counter == INVALID_NONCE {
            return Some(Err(Error::NonceExhausted));
        }
        let body = &avail[HEADER_LEN..HEADER_LEN + n];
        let (ct, tag) = body.split_at(n - TAG_LEN);
        let mut plain = ct.to_vec();
        if self
            .cipher
            .decrypt_in_place_detached(&nonce(self.counter), &[], &mut plain, Tag::from_slice(tag))
            .is_err()
        {
            return Some(Err(Error::Decrypt));
        }
        self.counter += 1;
        self.start += HEADER_LEN + n;
        Some(Ok(plain))
    }

    #[cfg(test)]
    pub(crate) fn set_counter_for_test(&mut self, counter: u64) {
        self.counter = counter;
    }
}

/// An established ts2021 session: both directions plus what the handshake agreed.
#[derive(Debug)]
pub struct Transport {
    encoder: RecordEncoder,
    decoder: RecordDecoder,
    info: SessionInfo,
}

impl Transport {
    pub(crate) fn new(tx_key: &[u8; 32], rx_key: &[u8; 32], info: SessionInfo) -> Self {
        Self {
            encoder: RecordEncoder::new(tx_key),
            decoder: RecordDecoder::new(rx_key),
            info,
        }
    }

    /// See [`RecordEncoder::encrypt`].
    ///
    /// # Errors
    /// [`Error::NonceExhausted`].
    pub fn encrypt(&mut self, plaintext: &[u8]) -> Result<Vec<u8>, Error> {
        self.encoder.encrypt(plaintext)
    }

    /// See [`RecordDecoder::push`].
    pub fn push(&mut self, bytes: &[u8]) {
        self.decoder.push(bytes);
    }

    /// See [`RecordDecoder::next_plaintext`].
    pub fn next_plaintext(&mut self) -> Option<Result<Vec<u8>, Error>> {
        self.decoder.next_plaintext()
    }

    /// What the handshake agreed (version, peer key, handshake hash).
    #[must_use]
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// Splits into the sending and receiving halves (for separate reader and writer tasks).
    #[must_use]
    pub fn into_split(self) -> (RecordEncoder, RecordDecoder) {
        (self.encoder, self.decoder)
    }

    #[cfg(test)]
    pub(crate) fn halves_mut(&mut self) -> (&mut RecordEncoder, &mut RecordDecoder) {
        (&mut self.encoder, &mut self.decoder)
    }
}
