//! The crate's error enum: why a packet could not be parsed or built, or a filter assembled.

use std::io;

/// What went wrong in this crate; I/O errors from the kernel stay `io::Error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The packet is shorter than the header or length field says it must be.
    #[error("packet truncated: {0}")]
    Truncated(&'static str),
    /// A header field holds a value we do not accept (wrong version, protocol, length...).
    #[error("malformed packet: {0}")]
    Malformed(&'static str),
    /// The packet is an IPv4 fragment; only whole datagrams are ours.
    #[error("IPv4 fragment")]
    Fragment,
    /// The payload does not fit in one IP datagram.
    #[error("payload of {0} bytes is too large for one datagram")]
    PayloadTooLarge(usize),
    /// The source and destination address families differ.
    #[error("address family mismatch")]
    FamilyMismatch,
    /// The cBPF program could not be assembled (a compile-time fact, not network input).
    #[error("cBPF assembly: {0}")]
    Assembly(&'static str),
}

impl From<Error> for io::Error {
    fn from(e: Error) -> Self {
        let kind = match e {
            Error::PayloadTooLarge(_) | Error::FamilyMismatch => io::ErrorKind::InvalidInput,
            Error::Assembly(_) => io::ErrorKind::Other,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, e)
    }
}
