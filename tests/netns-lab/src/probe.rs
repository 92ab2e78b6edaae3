//! A minimal "what is my address" service over UDP, to see what a NAT shows to the outside.
//!
//! STUN would do the same, but the lab must not depend on the code it helps to test, so the
//! protocol here is deliberately trivial: a probe is `mgl?` + an 8-byte nonce, the answer is
//! `mgl!` + the same nonce + the observed source address as text (`203.0.113.1:40000`).

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::error::{Error, Result};

const REQUEST: &[u8; 4] = b"mgl?";
const ANSWER: &[u8; 4] = b"mgl!";
/// How often the reflector thread looks at its stop flag.
const POLL: Duration = Duration::from_millis(50);
/// A probe is sent this many times before giving up (UDP may drop the first while ARP resolves).
const ATTEMPTS: u32 = 3;
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(500);

/// A running reflector (see [`Host::udp_reflector`](crate::Host::udp_reflector)); stops on drop.
#[derive(Debug)]
pub struct Reflector {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Reflector {
    pub(crate) fn start(socket: UdpSocket) -> Result<Self> {
        let addr = socket
            .local_addr()
            .map_err(|e| Error::io("reflector address", e))?;
        socket
            .set_read_timeout(Some(POLL))
            .map_err(|e| Error::io("reflector timeout", e))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        // The socket belongs to the host's namespace already, so an ordinary thread can serve it.
        let thread = std::thread::Builder::new()
            .name(format!("reflector-{addr}"))
            .spawn(move || serve(&socket, &flag))
            .map_err(|e| Error::io("spawning the reflector", e))?;
        Ok(Reflector {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The address the reflector listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for Reflector {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(socket: &UdpSocket, stop: &AtomicBool) {
    let mut buf = [0u8; 64];
    while !stop.load(Ordering::Relaxed) {
        let Ok((len, from)) = socket.recv_from(&mut buf) else {
            continue; // timeout: look at the stop flag again
        };
        if len != 12 || &buf[..4] != REQUEST {
            continue;
        }
        let mut answer = ANSWER.to_vec();
        answer.extend_from_slice(&buf[4..12]);
        answer.extend_from_slice(from.to_string().as_bytes());
        let _ = socket.send_to(&answer, from);
    }
}

/// Asks the reflector at `reflector` which source address:port it sees for `socket`: behind a
/// NAT, the mapping the NAT made for this socket towards that destination.
///
/// Other datagrams arriving on `socket` meanwhile are read and discarded. The socket's read
/// timeout is restored afterwards.
pub fn mapped_addr(socket: &UdpSocket, reflector: SocketAddr) -> Result<SocketAddr> {
    let previous = socket
        .read_timeout()
        .map_err(|e| Error::io("reading the socket timeout", e))?;
    let result = probe(socket, reflector);
    socket
        .set_read_timeout(previous)
        .map_err(|e| Error::io("restoring the socket timeout", e))?;
    result
}

fn probe(socket: &UdpSocket, reflector: SocketAddr) -> Result<SocketAddr> {
    let nonce = nonce();
    let mut request = REQUEST.to_vec();
    request.extend_from_slice(&nonce);
    let mut buf = [0u8; 128];
    for _ in 0..ATTEMPTS {
        socket
            .send_to(&request, reflector)
            .map_err(|e| Error::io(format!("sending a probe to {reflector}"), e))?;
        let deadline = Instant::now() + ATTEMPT_TIMEOUT;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            socket
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(|e| Error::io("setting the probe timeout", e))?;
            let Ok((len, from)) = socket.recv_from(&mut buf) else {
                break; // timed out: send again
            };
            if from == reflector
                && let Some(seen) = parse_answer(&buf[..len], &nonce)
            {
                return Ok(seen);
            }
        }
    }
    Err(Error::ProbeTimeout { target: reflector })
}

fn parse_answer(answer: &[u8], nonce: &[u8; 8]) -> Option<SocketAddr> {
    let rest = answer.strip_prefix(ANSWER)?.strip_prefix(nonce)?;
    std::str::from_utf8(rest).ok()?.parse().ok()
}

fn nonce() -> [u8; 8] {
    // Unique per probe within a process and unlikely to repeat across processes; no secrecy
    // needed, it only pairs answers with probes.
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ COUNTER.fetch_add(1, Ordering::Relaxed).rotate_left(48)).to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_pair_with_their_probe() {
        let nonce = *b"12345678";
        let mut answer = ANSWER.to_vec();
        answer.extend_from_slice(&nonce);
        answer.extend_from_slice(b"203.0.113.1:40000");
        assert_eq!(
            parse_answer(&answer, &nonce),
            Some("203.0.113.1:40000".parse().unwrap())
        );
        assert_eq!(parse_answer(&answer, b"87654321"), None);
        assert_eq!(parse_answer(b"mgl!", &nonce), None);
    }

    #[test]
    fn probes_a_local_reflector() {
        // Loopback in the test's own namespace: no privileges needed.
        let reflector = Reflector::start(UdpSocket::bind("127.0.0.1:0").unwrap()).unwrap();
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let seen = mapped_addr(&socket, reflector.addr()).unwrap();
        assert_eq!(seen, socket.local_addr().unwrap());
    }
}
