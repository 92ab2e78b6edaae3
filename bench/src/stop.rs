//! Ctrl-C and SIGTERM as a flag: the handlers only set it (async-signal-safe), and every loop
//! of the bench checks it, so an interrupted run unwinds normally and drops its lab. A second
//! Ctrl-C while the flag is already set exits at once (code 130), for a run stuck in a command.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};

use crate::error::Error;

/// Set once a stop was asked for.
#[derive(Debug, Clone, Default)]
pub struct Stop(Arc<AtomicBool>);

impl Stop {
    /// A flag that SIGINT and SIGTERM set. The handlers stay installed for the process's life
    /// (signal-hook cannot remove them safely); a later run installs its own next to them.
    pub fn on_signals() -> Result<Self, Error> {
        let stop = Stop::default();
        for sig in [SIGINT, SIGTERM] {
            // Order matters: the conditional exit sees the flag before this signal sets it.
            signal_hook::flag::register_conditional_shutdown(sig, 130, Arc::clone(&stop.0))
                .map_err(Error::Signal)?;
            signal_hook::flag::register(sig, Arc::clone(&stop.0)).map_err(Error::Signal)?;
        }
        Ok(stop)
    }

    pub fn is_set(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// The flag itself, for the traffic generator's loop.
    pub fn flag(&self) -> &AtomicBool {
        &self.0
    }

    /// `Err(Interrupted)` once set.
    pub fn check(&self) -> Result<(), Error> {
        if self.is_set() {
            Err(Error::Interrupted)
        } else {
            Ok(())
        }
    }

    /// Waits `d` (a timed phase of the measurement, not a synchronisation), waking every 50 ms
    /// to notice a stop.
    pub fn sleep(&self, d: Duration) -> Result<(), Error> {
        let end = Instant::now() + d;
        loop {
            self.check()?;
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(50)));
        }
    }
}
