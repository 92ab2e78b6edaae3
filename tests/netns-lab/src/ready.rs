//! Waiting until new interfaces can carry traffic.
//!
//! `ip link set up` returns before the kernel's link watcher has handled the carrier change,
//! and until it has, the device's queueing discipline drops every packet it sends. The watcher
//! runs at once for "urgent" changes but batches the others up to a second later: a router's
//! LAN bridge is one of those, so on a busy machine the first ping through a new LAN was lost.
//! The watcher marks the device operationally up (IFF_RUNNING) in the same pass in which it
//! starts the queue, so that flag is what is waited for.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::netns;

/// Longer than the link watcher's one-second batching, with room for a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(5);

/// Waits until each of `ifaces` in namespace `netns` is operationally up.
pub(crate) fn wait_running(netns: &str, ifaces: &[&str]) -> Result<()> {
    netns::run_in(netns, || {
        // Any socket of the namespace serves for interface ioctls.
        // SAFETY: socket() has no preconditions; a non-negative result is a descriptor we own.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(Error::io(
                "opening a socket",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: fd is a fresh descriptor nothing else owns.
        let socket = unsafe { OwnedFd::from_raw_fd(fd) };
        let deadline = Instant::now() + TIMEOUT;
        for iface in ifaces {
            while !running(&socket, iface)? {
                if Instant::now() > deadline {
                    return Err(Error::LinkNotUp {
                        netns: netns.to_owned(),
                        iface: (*iface).to_owned(),
                    });
                }
                std::thread::sleep(POLL);
            }
        }
        Ok(())
    })?
}

fn running(socket: &OwnedFd, iface: &str) -> Result<bool> {
    // SAFETY: ifreq is plain data, for which all zeroes is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    // Interface names are ASCII and at most 15 bytes: the name stays NUL-terminated.
    for (dst, src) in request
        .ifr_name
        .iter_mut()
        .zip(iface.bytes().take(libc::IFNAMSIZ - 1))
    {
        *dst = src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS reads the name from and writes the flags into the ifreq we pass,
    // which lives across the call.
    let rc = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS, &mut request) };
    if rc != 0 {
        return Err(Error::io(
            format!("reading the flags of {iface}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: SIOCGIFFLAGS filled in the flags member of the union.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    Ok(i32::from(flags) & libc::IFF_RUNNING != 0)
}
