//! The only unsafe code in the crate: two socket options socket2 does not wrap, handing an
//! initialised byte buffer to socket2's `recvmsg` (which takes `MaybeUninit` slices), and
//! registering a socket with tokio (`AsyncFd::register*` is `unsafe` since tokio 1.5x).

use std::io;
use std::mem::MaybeUninit;
use std::net::{Ipv6Addr, SocketAddrV6};
use std::os::fd::AsRawFd;

use socket2::{MaybeUninitSlice, MsgHdrMut, SockAddr, Socket};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// `setsockopt(fd, level, name, &value, sizeof(int))`.
pub fn set_int_option(
    sock: &Socket,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>())
        .map_err(|_| io::Error::other("socklen"))?;
    // SAFETY: the fd is owned by `sock` and open for the duration of the call; the pointer and
    // length describe a live c_int.
    let rc = unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            level,
            name,
            (&raw const value).cast(),
            len,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn as_uninit(buf: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`; the view is only written by the kernel
    // (through socket2), which writes initialised bytes, so `buf` stays initialised.
    unsafe { &mut *(std::ptr::from_mut::<[u8]>(buf) as *mut [MaybeUninit<u8>]) }
}

/// What one `recvmsg` returned.
#[derive(Debug)]
pub struct Received {
    /// Bytes of data.
    pub len: usize,
    /// Bytes of control data.
    pub control_len: usize,
    /// The sender's address.
    pub from: SockAddr,
    /// Data was cut to the buffer.
    pub truncated: bool,
}

/// `recvmsg` into initialised buffers.
pub fn recvmsg(sock: &Socket, data: &mut [u8], control: &mut [u8]) -> io::Result<Received> {
    // Sized for sockaddr_in6, which is what an AF_INET6 socket returns; socket2 does not
    // shrink the length afterwards, so start with the family we expect.
    let mut from = SockAddr::from(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 0, 0, 0));
    let mut bufs = [MaybeUninitSlice::new(as_uninit(data))];
    let mut msg = MsgHdrMut::new()
        .with_addr(&mut from)
        .with_buffers(&mut bufs)
        .with_control(as_uninit(control));
    let len = sock.recvmsg(&mut msg, 0)?;
    let flags = msg.flags();
    let control_len = msg.control_len();
    Ok(Received {
        len,
        control_len,
        truncated: flags.is_truncated(),
        from,
    })
}

/// Registers a raw socket with the tokio reactor for read and write readiness.
pub fn register(sock: Socket) -> io::Result<AsyncFd<Socket>> {
    // SAFETY: `Socket` owns its descriptor, keeps it open until dropped and never swaps it, and
    // the `AsyncFd` takes ownership of the `Socket`, so the fd stays valid while registered.
    let fd =
        unsafe { AsyncFd::register_with_interest(sock, Interest::READABLE | Interest::WRITABLE) }?;
    Ok(fd)
}
