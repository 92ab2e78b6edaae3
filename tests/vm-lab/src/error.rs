use std::path::PathBuf;
use std::process::ExitStatus;

/// Everything that can keep the lab from booting a scenario.
///
/// A scenario that boots and then fails is not an error: it is a [`VmOutcome`](crate::VmOutcome)
/// that did not pass.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The unpacked Debian kernel is not where the lab looks for it.
    #[error(
        "no Debian kernel in {}: {detail} (run `scripts/setup.sh` as root, or set MESHGATE_KERNEL_CACHE)",
        cache.display()
    )]
    KernelNotFound { cache: PathBuf, detail: String },

    /// A host program the lab needs is not installed.
    #[error("`{tool}` not found ({detail}): run `scripts/setup.sh` as root")]
    ToolNotFound { tool: String, detail: String },

    /// A kernel module the lab needs cannot be resolved or read.
    #[error("kernel module `{module}`: {detail}")]
    Module { module: String, detail: String },

    /// A host command the lab runs while preparing a boot failed.
    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: ExitStatus,
        stderr: String,
    },

    /// The scenario cannot be expressed inside the VM (empty argv, NUL bytes, relative cwd...).
    #[error("invalid scenario: {0}")]
    InvalidScenario(String),

    /// qemu exited before the VM reached the scenario, e.g. on a bad option.
    #[error("qemu exited with {status} before the scenario started: {stderr}")]
    Qemu { status: ExitStatus, stderr: String },

    /// A file operation on the host failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Attaches a description of what was being done to an I/O error.
pub(crate) trait IoContext<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, Error>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn context(self, context: impl FnOnce() -> String) -> Result<T, Error> {
        self.map_err(|e| Error::io(context(), e))
    }
}
