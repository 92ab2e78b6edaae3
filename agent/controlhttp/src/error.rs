//! The one error type of this crate.

/// What can go wrong while setting up a ts2021 connection.
///
/// Once a [`crate::NoiseStream`] exists, its failures are `std::io::Error`s instead (that is
/// what `AsyncRead`/`AsyncWrite` speak); a Noise failure there has kind `InvalidData`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Reading or writing the underlying stream failed, or it closed too early.
    #[error("ts2021 i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The Noise layer refused something: handshake failure, version refused by the server
    /// ([`meshgate_controlbase::Error::ServerRefused`]), bad records, bad EarlyNoise.
    #[error(transparent)]
    Noise(#[from] meshgate_controlbase::Error),
    /// The HTTP/1.1 part went wrong: the server answered with another status than 101
    /// (status line and a body excerpt in the text), or (server side) the request was
    /// malformed, too large, or for an unknown method or path.
    #[error("ts2021 HTTP/1.1: {0}")]
    Http(String),
}
