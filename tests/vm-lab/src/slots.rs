//! A host-wide budget of virtual CPUs, so that parallel tests do not oversubscribe the host.
//!
//! TCG emulates each virtual CPU with a host thread at full load. Two-core CI machines running
//! several VM tests at once would make every one of them slow enough to hit its timeout, so a
//! run first takes one slot per virtual CPU out of `available_parallelism` slots (or
//! `$MESHGATE_VMLAB_JOBS`). Slots are lock files under the cache; the kernel releases the locks
//! when a process dies, so a crashed test never leaks one.
//!
//! Only the holder of the gate lock takes slots, keeping what it has until it has enough.
//! Without the gate, two runs that each grab part of what they need and back off in step can
//! starve each other for as long as the lockstep lasts (20 minutes was seen).

use std::fs::{File, OpenOptions, TryLockError};
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext};

const JOBS_ENV: &str = "MESHGATE_VMLAB_JOBS";
const POLL: Duration = Duration::from_millis(100);
/// After this long in the queue, say on stderr who holds the slots.
const NOTE_AFTER: Duration = Duration::from_secs(30);

/// Held slots; dropping it releases them.
#[derive(Debug)]
pub(crate) struct Slots {
    _locks: Vec<File>,
}

/// Blocks until `wanted` slots (capped at the budget) are free, and takes them.
pub(crate) fn acquire(cache_dir: &Path, wanted: u32) -> Result<Slots, Error> {
    acquire_from(cache_dir, wanted, budget())
}

fn acquire_from(cache_dir: &Path, wanted: u32, budget: usize) -> Result<Slots, Error> {
    let wanted = (wanted as usize).clamp(1, budget);
    let dir = cache_dir.join("slots");
    std::fs::create_dir_all(&dir).context(|| format!("creating {}", dir.display()))?;
    let open = |name: String| {
        let path = dir.join(name);
        OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&path)
            .context(|| format!("opening {}", path.display()))
    };
    let gate = open("gate.lock".to_owned())?;
    let mut free: Vec<File> = (0..budget)
        .map(|i| open(format!("cpu-{i}.lock")))
        .collect::<Result<_, _>>()?;
    let mut queue = Queue {
        began: Instant::now(),
        noted: false,
        dir: &dir,
        wanted,
        budget,
    };

    while !try_lock(&gate)? {
        queue.wait();
    }
    let mut held = Vec::with_capacity(wanted);
    loop {
        let mut i = 0;
        while i < free.len() && held.len() < wanted {
            if try_lock(&free[i])? {
                held.push(free.swap_remove(i));
            } else {
                i += 1;
            }
        }
        if held.len() == wanted {
            break;
        }
        queue.wait();
    }
    let _ = gate.unlock();
    let me = holder_description();
    for file in &mut held {
        // Only for the note of whoever queues behind this run.
        let _ = file.set_len(0).and_then(|()| file.write_all(me.as_bytes()));
    }
    Ok(Slots { _locks: held })
}

fn try_lock(file: &File) -> Result<bool, Error> {
    match file.try_lock() {
        Ok(()) => Ok(true),
        Err(TryLockError::WouldBlock) => Ok(false),
        Err(TryLockError::Error(e)) => Err(Error::io("locking a VM lab CPU slot", e)),
    }
}

struct Queue<'a> {
    began: Instant,
    noted: bool,
    dir: &'a Path,
    wanted: usize,
    budget: usize,
}

impl Queue<'_> {
    fn wait(&mut self) {
        if !self.noted && self.began.elapsed() >= NOTE_AFTER {
            self.noted = true;
            let holders: Vec<String> = (0..self.budget)
                .filter_map(|i| {
                    std::fs::read_to_string(self.dir.join(format!("cpu-{i}.lock"))).ok()
                })
                .filter(|s| !s.is_empty())
                .collect();
            // Straight to stderr, past libtest's capture: a silent wait looks like a hang.
            let _ = writeln!(
                std::io::stderr(),
                "meshgate-vm-lab: waited {} s for {} of {} CPU slots ({JOBS_ENV}); last holders: {}",
                self.began.elapsed().as_secs(),
                self.wanted,
                self.budget,
                holders.join("; ")
            );
        }
        std::thread::sleep(POLL);
    }
}

fn holder_description() -> String {
    let args: Vec<String> = std::env::args().take(4).collect();
    format!("pid {} {}", std::process::id(), args.join(" "))
}

fn budget() -> usize {
    std::env::var(JOBS_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tempdir::TempDir;

    /// Runs wanting the whole budget and runs wanting part of it, all at once and again and
    /// again: everyone gets through, quickly.
    #[test]
    fn mixed_demands_all_get_through() {
        let cache = TempDir::new("meshgate-vmlab-slots-test").unwrap();
        let started = Instant::now();
        std::thread::scope(|s| {
            for wanted in [2, 2, 1, 1] {
                let dir = cache.path();
                s.spawn(move || {
                    for _ in 0..5 {
                        let slots = acquire_from(dir, wanted, 2).unwrap();
                        std::thread::sleep(Duration::from_millis(20));
                        drop(slots);
                    }
                });
            }
        });
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }
}
