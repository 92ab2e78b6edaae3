//! One measurement: the blaster runs at the sender for warm-up + window + tail while the
//! receiver's counter is read at the window's two ends, so only packets that made it through
//! are counted. The sender and receiver are the namespace lab's ([`Topo`]) or, with
//! `--tx-iface`, this machine's own interfaces around a router under test.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use crate::args::{Settings, udp_payload};
use crate::blaster::{self, BlastConfig, BlastReport};
use crate::error::Error;
use crate::lab::{DENIED_PORT, RCV, Topo};
use crate::stop::Stop;

/// The blaster keeps sending this long after the window closes, so the second count is read
/// while traffic still flows.
const TAIL: Duration = Duration::from_millis(200);
/// How long the denied flow is sent to check that a filter filters.
const CHECK_TIME: Duration = Duration::from_millis(100);

/// Packets per second of one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Counted at rcv's interface over the window.
    pub delivered: f64,
    /// Accepted by snd's sockets over the whole blast (what was offered).
    pub sent: f64,
}

/// Wall time one measurement takes (for the estimate printed up front).
pub fn cost(s: &Settings) -> Duration {
    s.warmup() + s.window() + TAIL
}

/// Where traffic is generated and counted.
pub trait Target: Sync {
    /// The address every flow is sent to.
    fn dst(&self) -> Ipv4Addr;
    /// Runs the generator (pinned to `pin` when possible) until `cfg.duration` or `stop`.
    fn blast(
        &self,
        cfg: &BlastConfig,
        pin: Option<usize>,
        stop: &Stop,
    ) -> Result<BlastReport, Error>;
    /// Packets received so far where the traffic ends.
    fn rx(&self) -> Result<u64, Error>;
}

impl Target for Topo {
    fn dst(&self) -> Ipv4Addr {
        RCV
    }

    fn blast(
        &self,
        cfg: &BlastConfig,
        pin: Option<usize>,
        stop: &Stop,
    ) -> Result<BlastReport, Error> {
        self.snd
            .run(|| blast_pinned(cfg, pin, stop))?
            .map_err(|e| Error::io("the traffic generator", e))
    }

    fn rx(&self) -> Result<u64, Error> {
        Topo::rx(self)
    }
}

/// The generator on the calling thread, pinned first when asked (best effort: a CPU outside
/// our set only costs the pinning).
pub fn blast_pinned(
    cfg: &BlastConfig,
    pin: Option<usize>,
    stop: &Stop,
) -> std::io::Result<BlastReport> {
    if let Some(cpu) = pin {
        let _ = blaster::pin_current_thread(cpu);
    }
    blaster::blast_until(cfg, stop.flag())
}

fn blast_cfg(
    target: &impl Target,
    s: &Settings,
    port: u16,
    frame: usize,
    duration: Duration,
) -> BlastConfig {
    BlastConfig {
        dst: SocketAddrV4::new(target.dst(), port),
        flows: usize::from(s.flows),
        payload: udp_payload(frame),
        duration,
    }
}

/// Delivered and offered pps of `frame`-byte frames to `port` through what is in place.
pub fn measure(
    target: &impl Target,
    s: &Settings,
    frame: usize,
    port: u16,
    stop: &Stop,
) -> Result<Rate, Error> {
    let cfg = blast_cfg(target, s, port, frame, cost(s));
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| target.blast(&cfg, s.pin_cpu, stop));
        // Timed phases of a benchmark, not synchronisation: the blaster runs on its own clock.
        let counts = (|| -> Result<_, Error> {
            stop.sleep(s.warmup())?;
            let c0 = (target.rx()?, Instant::now());
            stop.sleep(s.window())?;
            let c1 = (target.rx()?, Instant::now());
            Ok((c0, c1))
        })();
        let report = sender
            .join()
            .map_err(|_| Error::Setup("the traffic generator panicked".into()))??;
        stop.check()?;
        let ((n0, t0), (n1, t1)) = counts?;
        if report.sent == 0 {
            return Err(Error::Check(format!(
                "the generator sent nothing ({report:?})"
            )));
        }
        Ok(Rate {
            delivered: n1.saturating_sub(n0) as f64 / t1.duration_since(t0).as_secs_f64().max(1e-3),
            sent: report.sent as f64 / report.elapsed.as_secs_f64().max(1e-3),
        })
    })
}

/// Sends 64-byte frames to `port` for `duration`: (sent, counted at the receiver meanwhile).
pub fn burst(
    target: &impl Target,
    s: &Settings,
    port: u16,
    duration: Duration,
    stop: &Stop,
) -> Result<(u64, u64), Error> {
    let c0 = target.rx()?;
    let report = target.blast(&blast_cfg(target, s, port, 64, duration), s.pin_cpu, stop)?;
    // Packets still in flight through a router arrive within a few milliseconds.
    stop.sleep(Duration::from_millis(20))?;
    let delivered = target.rx()?.saturating_sub(c0);
    stop.check()?;
    Ok((report.sent, delivered))
}

/// Fails unless what is in place drops a flow the policy denies (at most 1% through).
pub fn check_filters(topo: &Topo, s: &Settings, what: &str, stop: &Stop) -> Result<(), Error> {
    let (sent, delivered) = burst(topo, s, DENIED_PORT, CHECK_TIME, stop)?;
    if sent == 0 || delivered * 100 > sent {
        return Err(Error::Check(format!(
            "{what} let {delivered} of {sent} denied packets through: not filtering"
        )));
    }
    Ok(())
}
