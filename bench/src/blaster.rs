//! A UDP traffic generator for the forwarding benchmarks: `sendmmsg` batches on a few connected
//! sockets (one flow each), as fast as the kernel takes them, for a fixed time.
//!
//! Run it on a thread that has entered the sender's network namespace: the sockets belong to
//! the namespace of the thread that creates them.

use std::io;
use std::net::{SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

/// Datagrams per `sendmmsg` call (the calibration of reference/perf-anchors.md §7 used 64).
pub const BATCH: usize = 64;
/// UDP payload of a 64-byte Ethernet frame: 14 + 20 + 8 + 18 bytes, plus the 4-byte FCS.
pub const PAYLOAD_64B_FRAME: usize = 18;
const MAX_FLOWS: usize = 256;
const MAX_PAYLOAD: usize = 1472;

/// What to send.
#[derive(Clone, Copy, Debug)]
pub struct BlastConfig {
    /// Where every flow goes.
    pub dst: SocketAddrV4,
    /// Number of flows: one socket each, with its own ephemeral source port (1..=256).
    pub flows: usize,
    /// UDP payload bytes per datagram (0..=1472).
    pub payload: usize,
    /// How long to send.
    pub duration: Duration,
}

/// What was sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BlastReport {
    /// Datagrams the kernel accepted.
    pub sent: u64,
    /// `sendmmsg` calls made.
    pub calls: u64,
    /// Calls that failed (ICMP errors reported on a connected socket, full queues).
    pub errors: u64,
    /// From the first call to the last return.
    pub elapsed: Duration,
}

/// Sends `cfg.payload`-byte datagrams to `cfg.dst` over `cfg.flows` connected sockets, one
/// `sendmmsg` of [`BATCH`] datagrams per socket in turn, until `cfg.duration` has passed.
/// Send errors are counted, not returned: a burst of refusals or a full queue must not end
/// the measurement early. Only setting the sockets up can fail.
pub fn blast(cfg: &BlastConfig) -> io::Result<BlastReport> {
    blast_until(cfg, &AtomicBool::new(false))
}

/// [`blast`] that also ends early once `stop` is set (checked after every call, so within
/// microseconds).
pub fn blast_until(cfg: &BlastConfig, stop: &AtomicBool) -> io::Result<BlastReport> {
    if cfg.flows == 0 || cfg.flows > MAX_FLOWS || cfg.payload > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "blast: flows must be 1..={MAX_FLOWS} and payload <= {MAX_PAYLOAD} (got {} and {})",
                cfg.flows, cfg.payload
            ),
        ));
    }
    let sockets = (0..cfg.flows)
        .map(|_| {
            let s = UdpSocket::bind("0.0.0.0:0")?;
            s.connect(cfg.dst)?;
            Ok(s)
        })
        .collect::<io::Result<Vec<_>>>()?;

    let mut payload = vec![0u8; cfg.payload];
    for (i, b) in payload.iter_mut().enumerate() {
        *b = i as u8;
    }
    let mut iov = libc::iovec {
        iov_base: payload.as_mut_ptr().cast(),
        iov_len: payload.len(),
    };
    // SAFETY: mmsghdr is plain old data; all-zero is a valid "no name, no control" header.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for m in &mut msgs {
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }

    // A generous bound on calls (one per 100 ns would be 640 Mpps) so the loop ends even if the
    // clock misbehaved.
    let max_calls = (cfg.duration.as_secs_f64() * 1e7) as u64 + 1;
    let mut report = BlastReport::default();
    let start = Instant::now();
    let deadline = start + cfg.duration;
    'outer: while report.calls < max_calls {
        for s in &sockets {
            // SAFETY: `msgs` holds BATCH valid headers pointing at `iov`, which points at
            // `payload`; all three outlive the call, and the kernel only reads them.
            let n = unsafe {
                libc::sendmmsg(s.as_raw_fd(), msgs.as_mut_ptr(), BATCH as libc::c_uint, 0)
            };
            report.calls += 1;
            if n < 0 {
                report.errors += 1;
            } else {
                report.sent += n as u64;
            }
            if Instant::now() >= deadline || stop.load(Ordering::Relaxed) {
                break 'outer;
            }
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Pins the calling thread to `cpu`, so the generator does not migrate between windows.
pub fn pin_current_thread(cpu: usize) -> io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cpu {cpu} is beyond CPU_SETSIZE"),
        ));
    }
    // SAFETY: cpu_set_t is a plain bit array, all-zero is the empty set; CPU_SET stays inside
    // it (checked above); sched_setaffinity only reads the set we pass with its true size.
    let rc = unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set)
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blasts_datagrams_of_the_given_size_from_several_ports() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let std::net::SocketAddr::V4(dst) = rx.local_addr().unwrap() else {
            unreachable!()
        };
        let report = blast(&BlastConfig {
            dst,
            flows: 4,
            payload: PAYLOAD_64B_FRAME,
            duration: Duration::from_millis(100),
        })
        .unwrap();
        assert!(report.sent >= BATCH as u64, "{report:?}");
        assert!(report.calls >= 1 && report.elapsed >= Duration::from_millis(100));

        let mut ports = std::collections::HashSet::new();
        let mut buf = [0u8; 2048];
        for _ in 0..256 {
            let (n, from) = rx.recv_from(&mut buf).unwrap();
            assert_eq!(n, PAYLOAD_64B_FRAME);
            ports.insert(from.port());
        }
        // The receive buffer holds the first batches: at least the first two sockets' worth.
        assert!(ports.len() >= 2, "{ports:?}");
    }

    #[test]
    fn a_set_stop_flag_ends_the_blast_at_once() {
        let dst = "127.0.0.1:9".parse().unwrap();
        let cfg = BlastConfig {
            dst,
            flows: 1,
            payload: 18,
            duration: Duration::from_secs(30),
        };
        let report = blast_until(&cfg, &AtomicBool::new(true)).unwrap();
        assert_eq!(report.calls, 1);
        assert!(report.elapsed < Duration::from_secs(1));
    }

    #[test]
    fn pins_to_cpu_0_and_refuses_absurd_cpus() {
        std::thread::spawn(|| pin_current_thread(0))
            .join()
            .unwrap()
            .unwrap();
        assert!(pin_current_thread(1 << 20).is_err());
    }

    #[test]
    fn refuses_bad_configs() {
        let dst = "127.0.0.1:9".parse().unwrap();
        let bad = |flows, payload| BlastConfig {
            dst,
            flows,
            payload,
            duration: Duration::from_millis(1),
        };
        assert!(blast(&bad(0, 18)).is_err());
        assert!(blast(&bad(1, 5000)).is_err());
    }
}
