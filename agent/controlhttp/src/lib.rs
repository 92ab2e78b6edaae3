//! ts2021 over tokio: the thin I/O shell around the sans-I/O Noise layer
//! ([`meshgate_controlbase`]), for both the agent (client) and the coordinator (server).
//!
//! Layers, bottom up: TCP (or TLS) → HTTP/1.1 `POST /ts2021` upgrade → Noise IK handshake →
//! Noise transport records ([`NoiseStream`], `AsyncRead + AsyncWrite`) → optional EarlyNoise
//! payload (server → client) → HTTP/2 with prior knowledge (`h2::client::handshake` /
//! `h2::server::handshake` on the [`NoiseStream`]).
//!
//! - [`connect`]: client side; returns the stream and the EarlyNoise JSON, if any.
//! - [`accept`]: server side; one HTTP/1.1 request, the upgrade or `GET /key`.
//!
//! No timeouts inside: callers wrap [`connect`] and [`accept`] in `tokio::time::timeout`.
//! Details and limits: this crate's README.md.

mod client;
mod error;
mod server;
mod stream;

pub use client::{MAX_EARLY_JSON_LEN, connect};
pub use error::Error;
pub use server::{
    Accepted, MAX_REQUEST_HEAD_LEN, MAX_REQUEST_HEADERS, ServerConn, accept, key_response_json,
};
pub use stream::{MAX_WRITE_CHUNK, NoiseStream};

/// Peer-supplied bytes as short text for an error message (at most 120 bytes, lossy UTF-8).
pub(crate) fn excerpt(bytes: &[u8]) -> String {
    String::from_utf8_lossy(&bytes[..bytes.len().min(120)]).into_owned()
}
