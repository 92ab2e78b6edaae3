//! STUN binding requests and responses as Tailscale sends and checks them (reference §3.1), and a
//! small tokio STUN server. The codec is sans-I/O and hand-written; see README.md for why.

mod error;
mod request;
mod response;
mod server;
mod wire;

pub use error::Error;
pub use request::{REQUEST_LEN, binding_request, parse_binding_request};
pub use response::{binding_response, parse_binding_response};
pub use server::{ServerStats, StatsSnapshot, serve};
pub use wire::{
    ATTR_FINGERPRINT, ATTR_MAPPED_ADDRESS, ATTR_SOFTWARE, ATTR_XOR_MAPPED_ADDRESS,
    ATTR_XOR_MAPPED_ADDRESS_OLD, FINGERPRINT_XOR, HEADER_LEN, MAGIC_COOKIE, SOFTWARE, TxId,
    is_binding, is_stun,
};
