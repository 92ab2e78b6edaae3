//! Tearing namespaces down: killing what runs inside, unpinning them, and sweeping the leftovers
//! of runs that crashed before they could clean up.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::{names, netns};

/// How long to wait for killed processes to go away before unpinning their namespaces anyway.
const KILL_GRACE: Duration = Duration::from_secs(3);
/// How long daemons get to clean up after SIGTERM before they are killed.
const TERM_GRACE: Duration = Duration::from_millis(500);

/// Kills every process in `namespaces` (except this one) and deletes the namespaces. Goes on
/// past failures, so that one stuck namespace does not leave the others behind, and returns the
/// first error.
pub(crate) fn teardown(namespaces: &[String]) -> Result<()> {
    kill_processes(namespaces);
    let mut first = None;
    for name in namespaces {
        if let Err(e) = netns::delete(name) {
            first.get_or_insert(e);
        }
    }
    first.map_or(Ok(()), Err)
}

/// Deletes the lab namespaces whose creating process no longer exists. Returns their names.
///
/// Such leftovers come from test binaries that were killed or aborted before `Drop` ran. A
/// namespace of a live process is never touched, so parallel test binaries are safe.
pub fn sweep_leftovers() -> Result<Vec<String>> {
    let entries = match fs::read_dir(netns::RUN_DIR) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", netns::RUN_DIR), e)),
    };
    let orphans: Vec<String> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| names::owner_pid(name).is_some_and(|pid| !process_exists(pid)))
        .collect();
    teardown(&orphans)?;
    Ok(orphans)
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Sends SIGKILL to every process whose network namespace is one of `namespaces`, then waits
/// (bounded) until they are gone, so that "drop the lab" really means "nothing of it runs".
fn kill_processes(namespaces: &[String]) {
    // A namespace is identified by the inode of its nsfs file; /proc/<pid>/ns/net links to it.
    let inodes: HashMap<u64, &str> = namespaces
        .iter()
        .filter_map(|name| Some((fs::metadata(netns::path(name)).ok()?.ino(), name.as_str())))
        .collect();
    if inodes.is_empty() {
        return;
    }
    // SIGTERM first: daemons such as wireguard-go then remove their sockets (which live
    // outside the namespace, in /var/run/wireguard) instead of leaving them stale.
    let polite = Instant::now() + TERM_GRACE;
    let mut pids = pids_in(&inodes);
    for &pid in &pids {
        // SAFETY: kill has no memory-safety preconditions; a vanished pid yields ESRCH.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    while !pids.is_empty() && Instant::now() < polite {
        std::thread::sleep(Duration::from_millis(10));
        pids = pids_in(&inodes);
    }
    let deadline = Instant::now() + KILL_GRACE;
    loop {
        let pids = pids_in(&inodes);
        if pids.is_empty() || Instant::now() > deadline {
            return;
        }
        for pid in pids {
            // SAFETY: kill has no memory-safety preconditions; a vanished pid yields ESRCH.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Live processes (not this one) whose network namespace inode is in `inodes`. Zombies have
/// left their namespaces already, and their ns links no longer resolve, so they are not listed.
fn pids_in(inodes: &HashMap<u64, &str>) -> Vec<i32> {
    let own = std::process::id();
    let Ok(proc_dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc_dir
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != own)
        .filter(|pid| {
            fs::metadata(format!("/proc/{pid}/ns/net"))
                .is_ok_and(|meta| inodes.contains_key(&meta.ino()))
        })
        .filter_map(|pid| i32::try_from(pid).ok())
        .collect()
}
