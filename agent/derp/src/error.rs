//! The crate's one error type.

use std::io;

/// Everything that can go wrong decoding DERP frames, running the handshake or talking to a
/// DERP server.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A frame header announces more bytes than this side accepts (checked before buffering).
    #[error("DERP frame type {frame_type:#04x} of {len} bytes exceeds the limit of {max}")]
    FrameTooLarge { frame_type: u8, len: u32, max: u32 },
    /// A frame's payload is shorter than its type needs.
    #[error("DERP frame type {frame_type:#04x}: payload of {len} bytes, need at least {need}")]
    FrameTooShort {
        frame_type: u8,
        len: usize,
        need: usize,
    },
    /// The ServerKey frame does not start with `"DERP🔑"`.
    #[error("DERP ServerKey frame has a bad magic")]
    BadMagic,
    /// A frame arrived that is not valid at this point of the protocol.
    #[error("unexpected DERP frame: {0}")]
    UnexpectedFrame(&'static str),
    /// A ClientInfo/ServerInfo box did not open (wrong key or tampered).
    #[error("DERP handshake box did not open (wrong key?)")]
    BoxOpen,
    /// The JSON inside a handshake box is malformed.
    #[error("DERP handshake JSON: {0}")]
    HandshakeJson(#[from] serde_json::Error),
    /// The server's key (Derp-Public-Key header or ServerKey frame) is not the expected one,
    /// or the two disagree.
    #[error("DERP server key mismatch: {0}")]
    ServerKeyMismatch(String),
    /// TCP/TLS connect to the server failed.
    #[error("DERP connect to {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: io::Error,
    },
    /// The server answered the `GET /derp` upgrade with something other than 101 DERP.
    #[error("DERP upgrade refused: {0}")]
    UpgradeRefused(String),
    /// A bad target (URL, DerpNode, CertName or CA file).
    #[error("DERP target: {0}")]
    Target(String),
    /// Nothing arrived from the server within the read deadline.
    #[error("DERP connection timed out ({0})")]
    Timeout(&'static str),
    /// The connection is closed (by the peer, or by us).
    #[error("DERP connection closed")]
    Closed,
    /// Another I/O error on an established connection.
    #[error("DERP I/O: {0}")]
    Io(#[from] io::Error),
}
