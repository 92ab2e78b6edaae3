//! One measurement: the blaster runs in snd for warm-up + window + tail while the receiver's
//! counter is read at the window's two ends, so only packets that made it through are counted.

use std::net::SocketAddrV4;
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

fn blast_cfg(s: &Settings, port: u16, frame: usize, duration: Duration) -> BlastConfig {
    BlastConfig {
        dst: SocketAddrV4::new(RCV, port),
        flows: usize::from(s.flows),
        payload: udp_payload(frame),
        duration,
    }
}

fn blast_in_snd(
    topo: &Topo,
    s: &Settings,
    cfg: &BlastConfig,
    stop: &Stop,
) -> Result<BlastReport, Error> {
    topo.snd
        .run(|| {
            if let Some(cpu) = s.pin_cpu {
                // Best effort: a CPU outside our set only costs the pinning.
                let _ = blaster::pin_current_thread(cpu);
            }
            blaster::blast_until(cfg, stop.flag())
        })?
        .map_err(|e| Error::io("the traffic generator", e))
}

/// Delivered and offered pps of `frame`-byte frames to rcv:`port` through what is in place.
pub fn measure(
    topo: &Topo,
    s: &Settings,
    frame: usize,
    port: u16,
    stop: &Stop,
) -> Result<Rate, Error> {
    let cfg = blast_cfg(s, port, frame, cost(s));
    std::thread::scope(|scope| {
        let sender = scope.spawn(|| blast_in_snd(topo, s, &cfg, stop));
        // Timed phases of a benchmark, not synchronisation: the blaster runs on its own clock.
        let counts = (|| -> Result<_, Error> {
            stop.sleep(s.warmup())?;
            let c0 = (topo.rx()?, Instant::now());
            stop.sleep(s.window())?;
            let c1 = (topo.rx()?, Instant::now());
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

/// Fails unless what is in place drops a flow the policy denies (at most 1% through).
pub fn check_filters(topo: &Topo, s: &Settings, what: &str, stop: &Stop) -> Result<(), Error> {
    let c0 = topo.rx()?;
    let report = blast_in_snd(topo, s, &blast_cfg(s, DENIED_PORT, 64, CHECK_TIME), stop)?;
    let delivered = topo.rx()?.saturating_sub(c0);
    stop.check()?;
    if report.sent == 0 || delivered * 100 > report.sent {
        return Err(Error::Check(format!(
            "{what} let {delivered} of {} denied packets through: not filtering",
            report.sent
        )));
    }
    Ok(())
}
