//! The crate's one error type, and the exit code each kind maps to.

/// Why `meshgate bench` stopped.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A setting that cannot be measured (refused before anything runs).
    #[error("invalid setting: {0}")]
    Invalid(String),
    /// Ctrl-C or SIGTERM: the lab was torn down, nothing was reported.
    #[error("interrupted: the lab was removed, nothing measured is reported")]
    Interrupted,
    /// Building or changing the namespace lab failed.
    #[error("lab: {0}")]
    Lab(#[from] meshgate_netns_lab::Error),
    /// A command (nft, wg, wireguard-go, tc) failed.
    #[error("{0}")]
    Setup(String),
    /// The policy model refused the generated rules.
    #[error("policy: {0}")]
    Policy(String),
    /// Our BPF enforcer failed to attach, load a policy or detach.
    #[error("bpf enforcer: {0}")]
    Ebpf(#[from] meshgate_ebpf::Error),
    /// A variant let denied traffic through, or delivered nothing.
    #[error("check failed: {0}")]
    Check(String),
    /// Reading counters, sockets, writing output files.
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
    /// The signal handler could not be installed.
    #[error("installing the Ctrl-C handler: {0}")]
    Signal(std::io::Error),
}

impl Error {
    /// 2 for a refused setting (like clap's usage errors), 130 for Ctrl-C, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Invalid(_) => 2,
            Error::Interrupted => 130,
            _ => 1,
        }
    }

    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}
