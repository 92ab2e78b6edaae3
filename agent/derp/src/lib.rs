//! DERP relay protocol (reference §2): wire frames and their sans-I/O codec, the
//! ClientInfo/ServerInfo handshake boxes, and a tokio client.
//!
//! See README.md for the API in brief and what is not done.

pub mod client;
mod error;
pub mod frame;
pub mod handshake;
pub mod http;
pub mod tls;

pub use client::{ClientOptions, DerpClient, DerpEvents, DerpTarget, Event, connect};
pub use error::Error;
pub use frame::{Frame, PeerGoneReason, PeerPresentFlags, decode, encode};
pub use handshake::{ClientInfo, ServerInfo};

/// DERP protocol version spoken and advertised (`ProtocolVersion`).
pub const PROTOCOL_VERSION: u32 = 2;
