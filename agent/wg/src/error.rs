use std::io;

/// Everything the WireGuard data plane can fail with.
///
/// Messages say what was wrong and, where there is one, what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {what}: {reason}")]
    InvalidKey { what: &'static str, reason: String },

    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    #[error("{path}:{line}: {reason}")]
    ConfigSyntax {
        path: String,
        line: usize,
        reason: String,
    },

    #[error("interface {0} does not exist")]
    NoSuchInterface(String),

    #[error("interface {name} exists but is not a WireGuard interface (kind {kind})")]
    NotWireGuard { name: String, kind: String },

    #[error(
        "this kernel has no WireGuard support and the userspace fallback is unavailable: {0} \
         (install Debian's wireguard-go, or load the wireguard module)"
    )]
    NoWireGuard(String),

    #[error("netlink: {context}: {source}")]
    Netlink {
        context: String,
        #[source]
        source: io::Error,
    },

    #[error("netlink: {context}: unexpected reply: {reason}")]
    NetlinkReply { context: String, reason: String },

    #[error("userspace WireGuard ({socket}): {reason}")]
    Uapi { socket: String, reason: String },

    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    #[error("{error}; the previous state was restored")]
    RolledBack { error: Box<Error> },

    #[error("{error}; restoring the previous state also failed: {rollback}")]
    RollbackFailed {
        error: Box<Error>,
        rollback: Box<Error>,
    },
}

impl Error {
    pub(crate) fn netlink(context: impl Into<String>, source: io::Error) -> Self {
        Error::Netlink {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// `error`, saying whether undoing what it left half-done worked.
    pub(crate) fn after_rollback(error: Error, rollback: Result<(), Error>) -> Self {
        match rollback {
            Ok(()) => Error::RolledBack {
                error: Box::new(error),
            },
            Err(rollback) => Error::RollbackFailed {
                error: Box::new(error),
                rollback: Box::new(rollback),
            },
        }
    }

    /// The OS error number behind this error, if the kernel returned one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            Error::Netlink { source, .. } | Error::Io { source, .. } => source.raw_os_error(),
            Error::RolledBack { error } | Error::RollbackFailed { error, .. } => {
                error.raw_os_error()
            }
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
