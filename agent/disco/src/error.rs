use thiserror::Error;

/// Everything that can go wrong decoding a disco packet. All of these mean "drop the packet
/// silently" to a Tailscale-compatible receiver; they are distinct for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum Error {
    /// Shorter than magic ‖ sender key ‖ nonce, or not starting with the disco magic.
    #[error("not a disco packet")]
    NotDisco,
    /// Shorter than the header plus the Poly1305 tag.
    #[error("disco packet truncated before the end of the box tag")]
    Truncated,
    /// The box did not authenticate under the shared key (wrong key or tampered bytes).
    #[error("disco box failed to open")]
    BoxOpen,
    /// A [`crate::SharedKey`] was asked to open a packet whose header names another sender.
    #[error("disco packet from {got}, expected {expected}")]
    UnexpectedSender {
        expected: meshgate_tailcfg::DiscoPublic,
        got: meshgate_tailcfg::DiscoPublic,
    },
    /// The plaintext (or a message payload) is shorter than its type requires.
    #[error("disco {what} message too short")]
    Short { what: &'static str },
    /// A message type this protocol version does not define; Tailscale ignores these.
    #[error("unknown disco message type 0x{0:02x}")]
    UnknownType(u8),
}
