//! The crate's one error type.

use std::io;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("relay I/O: {0}")]
    Io(#[from] io::Error),
    /// The server key file is malformed or too open.
    #[error("relay key file {}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    /// Certificate/key files or the self-signed certificate.
    #[error("relay TLS: {0}")]
    Tls(String),
    /// A protocol error on one client connection (that client is dropped).
    #[error(transparent)]
    Derp(#[from] meshgate_derp::Error),
}
