//! The crate's one error type.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },
    #[error("{0} not found: run scripts/setup.sh as root")]
    Missing(PathBuf),
    #[error("timed out after {seconds} s waiting for {what}; console tail:\n{tail}")]
    Timeout {
        what: String,
        seconds: u64,
        tail: String,
    },
    #[error("the appliance VM exited: {0}")]
    VmGone(String),
    #[error("lab: {0}")]
    Lab(#[from] meshgate_netns_lab::Error),
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

pub type Result<T> = std::result::Result<T, Error>;
