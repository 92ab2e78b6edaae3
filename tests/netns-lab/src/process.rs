//! Processes started in a lab host, killed when their handle goes away.

use std::process::{Child, ExitStatus};

use crate::error::{Error, Result};

/// A process started by [`Host::spawn`](crate::Host::spawn). Dropping it kills its whole
/// process group (SIGKILL) and reaps it, so a test that fails half-way leaves nothing running.
#[derive(Debug)]
pub struct Proc {
    child: Child,
    command: String,
}

impl Proc {
    pub(crate) fn new(child: Child, command: String) -> Self {
        Proc { child, command }
    }

    /// The process id (also its process group id).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The underlying child, for its pipes (`stdout`, `stdin`, ...) or `try_wait`.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// Whether the process has exited (without waiting).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .map_err(|e| Error::io(format!("polling `{}`", self.command), e))
    }

    /// Kills the process group and waits for the leader.
    pub fn kill(mut self) -> Result<ExitStatus> {
        self.kill_group();
        self.child
            .wait()
            .map_err(|e| Error::io(format!("waiting for `{}`", self.command), e))
    }

    fn kill_group(&mut self) {
        if let Ok(pgid) = i32::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions. The group id stays reserved while
            // the leader is our unreaped child or any member lives; after that it is ESRCH.
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill_group();
        let _ = self.child.wait();
    }
}
