//! Creating, entering and deleting one network namespace.
//!
//! Namespaces are made with `ip netns add`, so each is pinned at `/run/netns/<name>`: `ip netns
//! exec`, `ip -n` and a human debugging a stuck test can all reach it by name.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::cmd;
use crate::error::{Error, Result};

/// Where `ip netns` pins named namespaces.
pub(crate) const RUN_DIR: &str = "/run/netns";

/// The pinned path of namespace `name`.
pub(crate) fn path(name: &str) -> PathBuf {
    Path::new(RUN_DIR).join(name)
}

/// Creates namespace `name` with its loopback up (many tools expect 127.0.0.1 to work) and
/// IPv6 duplicate address detection off: lab addresses are unique by construction, and DAD
/// would keep each new link-local address unusable for a second.
pub(crate) fn create(name: &str) -> Result<()> {
    cmd::ip(["netns", "add", name])?;
    cmd::ip(["-n", name, "link", "set", "lo", "up"])?;
    run_in(name, || {
        for scope in ["all", "default"] {
            let path = format!("/proc/sys/net/ipv6/conf/{scope}/accept_dad");
            std::fs::write(&path, "0").map_err(|e| Error::io(format!("{path} in {name}"), e))?;
        }
        Ok(())
    })?
}

/// Unpins namespace `name`. The kernel frees it (and with it its interfaces, veth peers and
/// nftables tables) once no process, thread or socket holds it any more.
pub(crate) fn delete(name: &str) -> Result<()> {
    cmd::ip(["netns", "delete", name])?;
    Ok(())
}

/// Moves the calling thread into namespace `name`. Only this thread moves; threads and processes
/// it creates afterwards start in the namespace too.
pub(crate) fn enter(name: &str) -> Result<()> {
    let file = File::open(path(name)).map_err(|e| Error::io(format!("opening netns {name}"), e))?;
    // SAFETY: setns takes a valid open descriptor (the file lives until the end of this
    // function) and a namespace type flag; it changes only the calling thread.
    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(Error::io(
            format!("setns into netns {name}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Runs `f` on a new thread that lives in namespace `name`, and returns its result. A panic in
/// `f` is passed on to the caller.
pub(crate) fn run_in<F, R>(name: &str, f: F) -> Result<R>
where
    F: FnOnce() -> R + Send,
    R: Send,
{
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn_scoped(scope, || {
                enter(name)?;
                Ok(f())
            })
            .map_err(|e| Error::io("spawning a thread", e))?;
        match thread.join() {
            Ok(result) => result,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}
