//! The one error type of this crate.

use crate::messages::{INITIATION_LEN, INITIATION_PAYLOAD_LEN, RESPONSE_PAYLOAD_LEN};

/// Everything that can go wrong in the ts2021 Noise layer.
///
/// Bytes from the network never panic this crate: every malformed, truncated, oversized,
/// tampered or replayed input ends up as one of these.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The handshake initiation is not exactly [`INITIATION_LEN`] bytes.
    #[error("handshake initiation is {0} bytes, want {INITIATION_LEN}")]
    InitiationSize(usize),
    /// A frame has a type byte other than the one expected at this point.
    #[error("unexpected message type {got:#04x} (want {want:#04x})")]
    UnexpectedType {
        /// The type byte received.
        got: u8,
        /// The type byte expected.
        want: u8,
    },
    /// The initiation's length field is not [`INITIATION_PAYLOAD_LEN`].
    #[error("handshake initiation length field is {0}, want {INITIATION_PAYLOAD_LEN}")]
    InitiationLength(u16),
    /// The response's length field is not [`RESPONSE_PAYLOAD_LEN`].
    #[error("handshake response length field is {0}, want {RESPONSE_PAYLOAD_LEN}")]
    ResponseLength(u16),
    /// The client speaks a protocol version this server does not accept.
    #[error("unsupported protocol version {0}")]
    UnsupportedVersion(u16),
    /// The server answered the initiation with an error message (type 0x03). The text is
    /// neither encrypted nor authenticated: treat it as a hint.
    #[error("server refused the handshake: {0:?}")]
    ServerRefused(String),
    /// A handshake message failed authentication: wrong control key, wrong machine key,
    /// mismatched prologue (protocol version) or a tampered message.
    #[error("handshake message failed authentication (wrong key, version mismatch or tampering)")]
    HandshakeAuth,
    /// A Diffie-Hellman result was all zeros: the peer sent a low-order public key.
    #[error("Diffie-Hellman produced an all-zero secret (low-order public key)")]
    WeakKey,
    /// Any other failure inside the Noise handshake machinery (RNG, internal state).
    #[error("noise handshake: {0}")]
    Noise(String),
    /// [`crate::ClientHandshake::read_response`] was called again after it finished or failed.
    #[error("handshake already finished or failed")]
    HandshakeFinished,
    /// A transport record's length field is outside 16..=4093.
    #[error("transport record length {0} out of range (16..=4093)")]
    RecordLength(u16),
    /// A transport record failed to decrypt: tampered, truncated inside, replayed or reordered.
    #[error("transport record failed authentication (tampered, replayed or reordered)")]
    Decrypt,
    /// The 64-bit nonce counter of one direction is used up; the session must be replaced.
    #[error("transport nonce counter exhausted; reconnect to get fresh keys")]
    NonceExhausted,
    /// The record decoder already failed; the stream cannot be trusted any more.
    #[error("transport stream unusable after an earlier error")]
    Broken,
    /// An early payload announces more JSON than allowed.
    #[error("early payload of {len} bytes exceeds the limit of {max}")]
    EarlyTooLarge {
        /// Announced (or given) JSON length.
        len: u64,
        /// The limit in force.
        max: usize,
    },
    /// An HTTP upgrade request or response is malformed or refused.
    #[error("ts2021 HTTP upgrade: {0}")]
    Upgrade(String),
}

impl Error {
    /// For a server: the error message frame (type 0x03) to send back to the client before
    /// closing, if this error is a refusal worth explaining. The text is fixed per error kind
    /// (never echoes client input). `None` for failures the client learns nothing from
    /// (authentication failures are answered by closing the connection, as Tailscale does).
    #[must_use]
    pub fn reply_for_client(&self) -> Option<Vec<u8>> {
        let text = match self {
            Error::InitiationSize(_) => "wrong handshake initiation size",
            Error::UnexpectedType { .. } => "unexpected handshake message type",
            Error::InitiationLength(_) => "wrong handshake initiation length",
            Error::UnsupportedVersion(_) => "unsupported protocol version",
            _ => return None,
        };
        Some(crate::messages::encode_error_message(text))
    }
}

impl From<snow::Error> for Error {
    fn from(e: snow::Error) -> Self {
        match e {
            snow::Error::Decrypt => Error::HandshakeAuth,
            snow::Error::Dh => Error::WeakKey,
            other => Error::Noise(other.to_string()),
        }
    }
}
