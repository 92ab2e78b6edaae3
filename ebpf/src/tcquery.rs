//! The few kernel calls aya does not offer: "is our tc filter there?" (one RTM_GETTFILTER),
//! "is this a bpffs?" (statfs) and mounting bpffs.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const ETH_P_ALL_BE: u32 = 0x0003_u16.to_be() as u32;
const NLMSG_HDR_LEN: usize = 16;

/// Whether a filter with exactly this priority and handle sits on `parent` of `ifindex`.
pub(crate) fn filter_present(
    ifindex: u32,
    parent: u32,
    prio: u16,
    handle: u32,
) -> io::Result<bool> {
    // SAFETY: plain syscall with constant arguments; the fd is owned right after.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let timeout = libc::timeval {
        tv_sec: 2,
        tv_usec: 0,
    };
    // SAFETY: the pointer and length describe `timeout`, alive for the call.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const timeout).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }

    let mut req = Vec::with_capacity(36);
    req.extend_from_slice(&36u32.to_ne_bytes());
    req.extend_from_slice(&libc::RTM_GETTFILTER.to_ne_bytes());
    req.extend_from_slice(&(libc::NLM_F_REQUEST as u16).to_ne_bytes());
    req.extend_from_slice(&1u32.to_ne_bytes()); // seq
    req.extend_from_slice(&0u32.to_ne_bytes()); // pid
    req.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    req.extend_from_slice(&(ifindex as i32).to_ne_bytes());
    req.extend_from_slice(&handle.to_ne_bytes());
    req.extend_from_slice(&parent.to_ne_bytes());
    req.extend_from_slice(&((u32::from(prio) << 16) | ETH_P_ALL_BE).to_ne_bytes());
    // SAFETY: the pointer and length describe `req`, alive for the call.
    let sent = unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) };
    if sent < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 16384];
    // SAFETY: the pointer and length describe `buf`, alive for the call.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let reply = buf.get(..n as usize).unwrap_or_default();
    let Some(kind) = reply.get(4..6) else {
        return Err(io::Error::other("short netlink reply"));
    };
    let kind = u16::from_ne_bytes([kind[0], kind[1]]);
    if kind == libc::RTM_NEWTFILTER {
        return Ok(true);
    }
    if kind == libc::NLMSG_ERROR as u16 {
        let code = reply
            .get(NLMSG_HDR_LEN..NLMSG_HDR_LEN + 4)
            .map(|b| i32::from_ne_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0);
        return match -code {
            // No such filter, priority, qdisc or device.
            libc::ENOENT | libc::EINVAL | libc::ENODEV => Ok(false),
            0 => Ok(false),
            e => Err(io::Error::from_raw_os_error(e)),
        };
    }
    Err(io::Error::other(format!(
        "unexpected netlink reply type {kind}"
    )))
}

/// Whether `path` lies on a bpffs.
pub(crate) fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is NUL-terminated and `st` is a valid out-pointer, both alive for the call.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

/// Mounts bpffs on `path`.
pub(crate) fn mount_bpffs(path: &Path) -> io::Result<()> {
    let target = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: all pointers are NUL-terminated strings alive for the call; data may be null.
    let rc = unsafe {
        libc::mount(
            c"bpf".as_ptr(),
            target.as_ptr(),
            c"bpf".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
