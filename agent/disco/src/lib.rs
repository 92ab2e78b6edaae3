//! Tailscale's disco protocol (reference §1): the sealed outer packet and the Ping, Pong and
//! CallMeMaybe messages inside it. Sans-I/O: bytes in, bytes out; no sockets, no clocks.
//! See README.md.

mod addr;
mod call_me_maybe;
mod error;
mod message;
mod packet;
mod ping;
mod pong;
mod shared;

pub use call_me_maybe::CallMeMaybe;
pub use error::Error;
pub use meshgate_tailcfg::{DiscoPrivate, DiscoPublic, NodePublic};
pub use message::{Message, TYPE_CALL_ME_MAYBE, TYPE_PING, TYPE_PONG, VERSION};
pub use packet::{
    HEADER_LEN, MAGIC, NONCE_LEN, Nonce, OVERHEAD, TAG_LEN, looks_like_disco, open, random_nonce,
    seal, sender,
};
pub use ping::{MAX_PADDING, Ping, STANDARD_PING_SIZE};
pub use pong::Pong;
pub use shared::SharedKey;
