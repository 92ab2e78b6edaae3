//! ts2021's Noise layer (Tailscale's `controlbase`), sans-I/O: bytes in, bytes out.
//!
//! - [`ClientHandshake`] / [`ServerHandshake`]: `Noise_IK_25519_ChaChaPoly_BLAKE2s` with the
//!   prologue `"Tailscale Control Protocol v<version>"`, framed as the 101-byte initiation and
//!   51-byte response (or a type 0x03 error message).
//! - [`Transport`]: type 0x04 records, ChaCha20-Poly1305 with the **big-endian** nonce
//!   counter Tailscale uses (not Noise's little-endian one).
//! - [`early`]: the optional EarlyNoise payload before HTTP/2.
//! - [`upgrade`]: the `POST /ts2021` HTTP/1.1 upgrade that carries the initiation.
//!
//! No sockets, no async runtime: a thin shell reads and writes the bytes.
//!
//! Formats, the nonce quirk and a usage sketch: this crate's README.md.
//!
//! ```
//! use meshgate_controlbase::{ClientHandshake, MachinePrivate, ServerHandshake};
//!
//! let server = ServerHandshake::new(MachinePrivate::generate()?, 113..=145);
//! let machine = MachinePrivate::generate()?;
//! let (mut client, initiation) = ClientHandshake::new(&machine, &server.public(), 145)?;
//!
//! let mut accepted = server.accept(&initiation)?;
//! assert_eq!(accepted.machine_key, machine.public());
//! let mut client = client.read_response(&accepted.response)?.expect("whole response");
//!
//! let wire = client.encrypt(b"hello")?;
//! accepted.transport.push(&wire);
//! assert_eq!(accepted.transport.next_plaintext(), Some(Ok(b"hello".to_vec())));
//! # Ok::<(), meshgate_controlbase::Error>(())
//! ```

mod error;
mod handshake;
mod keys;
pub mod messages;
mod transport;

pub mod early;
pub mod upgrade;

pub use error::Error;
pub use handshake::{
    Accepted, ClientHandshake, PROLOGUE_PREFIX, PROTOCOL_NAME, ServerHandshake, prologue,
};
pub use keys::{MachinePrivate, MachinePublic};
pub use transport::{RecordDecoder, RecordEncoder, SessionInfo, Transport};

#[cfg(test)]
mod tests;
