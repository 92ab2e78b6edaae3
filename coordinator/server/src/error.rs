//! The server's error type (start-up and the accept loop; request failures are HTTP answers).

use std::path::PathBuf;

/// What can stop the server from starting or serving.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
    #[error("store: {0}")]
    Store(#[from] meshgate_coordinator_store::StoreError),
    #[error("control key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("ts2021: {0}")]
    Control(#[from] meshgate_controlhttp::Error),
    #[error("HTTP/2: {0}")]
    Http2(#[from] h2::Error),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("background task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}
