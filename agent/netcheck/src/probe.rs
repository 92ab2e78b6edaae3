//! The sans-I/O probe: sends the plan's STUN requests on time, matches replies, and decides when
//! the STUN phase is over (reference §3.2).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use meshgate_stun::{TxId, binding_request, parse_binding_response};
use meshgate_tailcfg::RegionId;

use crate::{Family, Plan, PlannedProbe, Report};

/// The STUN phase ends at the latest this long after the probe starts.
pub const STUN_PHASE_TIMEOUT: Duration = Duration::from_secs(3);
/// Once this many regions have answered, wait only for the slowest latency seen (×2 on full
/// plans) before stopping.
const ENOUGH_REGIONS: usize = 3;

/// What [`Probe::handle_response`] made of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseOutcome {
    /// A reply to one of our requests; recorded.
    Accepted,
    /// Not a parseable Binding response.
    Malformed,
    /// A response to no request of ours (unknown or already answered TxID).
    UnknownTransaction,
    /// Our TxID but from another address than we sent to.
    WrongSource,
}

#[derive(Debug)]
struct Slot {
    probe: PlannedProbe,
    at: Instant,
    sent: bool,
}

#[derive(Debug)]
struct InFlight {
    region: RegionId,
    family: Family,
    dest: SocketAddr,
    sent_at: Instant,
}

/// One netcheck run's STUN phase. Drive it with `poll_transmit` / `poll_timeout` /
/// `handle_timeout` / `handle_response` until `is_done`, then take `report`.
#[derive(Debug)]
pub struct Probe {
    slots: Vec<Slot>,
    /// Bounded by the plan's length: one entry per request sent.
    in_flight: HashMap<TxId, InFlight>,
    /// (region, family) pairs that have at least one probe with an address.
    wanted: BTreeSet<(RegionId, Family)>,
    deadline: Instant,
    full: bool,
    shortened: bool,
    done: bool,
    report: Report,
    /// IPv4 STUN server → our mapped address as it saw it.
    mapped_v4: BTreeMap<SocketAddr, SocketAddr>,
}

impl Probe {
    pub fn new(plan: Plan, now: Instant) -> Probe {
        let wanted = plan.probes.iter().map(|p| (p.region, p.family)).collect();
        let slots: Vec<Slot> = plan
            .probes
            .into_iter()
            .map(|probe| Slot {
                at: now + probe.delay,
                probe,
                sent: false,
            })
            .collect();
        let mut p = Probe {
            done: slots.is_empty(),
            slots,
            in_flight: HashMap::new(),
            wanted,
            deadline: now + STUN_PHASE_TIMEOUT,
            full: plan.full,
            shortened: false,
            report: Report {
                skipped: plan.skipped,
                ..Report::default()
            },
            mapped_v4: BTreeMap::new(),
        };
        p.slots.sort_by_key(|s| s.at);
        p
    }

    /// The next request due at `now`: destination and the 40-byte Binding request. Probes for a
    /// region and family that already answered are dropped (they would not help).
    pub fn poll_transmit(&mut self, now: Instant) -> Option<(SocketAddr, Vec<u8>)> {
        if self.done {
            return None;
        }
        for slot in &mut self.slots {
            if slot.sent || slot.at > now {
                continue;
            }
            slot.sent = true;
            let p = &slot.probe;
            if has_latency(&self.report, p.region, p.family) {
                continue;
            }
            let tx = TxId::random();
            self.in_flight.insert(
                tx,
                InFlight {
                    region: p.region,
                    family: p.family,
                    dest: p.addr,
                    sent_at: now,
                },
            );
            return Some((p.addr, binding_request(tx).to_vec()));
        }
        None
    }

    /// When to call `poll_transmit` or `handle_timeout` next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.done {
            return None;
        }
        let next_send = self
            .slots
            .iter()
            .filter(|s| !s.sent && !has_latency(&self.report, s.probe.region, s.probe.family))
            .map(|s| s.at)
            .min();
        Some(next_send.map_or(self.deadline, |t| t.min(self.deadline)))
    }

    /// Ends the STUN phase once its deadline has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now >= self.deadline {
            self.done = true;
        }
    }

    /// Feeds a datagram that arrived from `from`. Anything but a reply to one of our requests
    /// from the address it was sent to is ignored.
    pub fn handle_response(
        &mut self,
        from: SocketAddr,
        bytes: &[u8],
        now: Instant,
    ) -> ResponseOutcome {
        let Ok((tx, mapped)) = parse_binding_response(bytes) else {
            return ResponseOutcome::Malformed;
        };
        let Some(f) = self.in_flight.get(&tx) else {
            return ResponseOutcome::UnknownTransaction;
        };
        if canonical(from) != canonical(f.dest) {
            return ResponseOutcome::WrongSource;
        }
        let Some(f) = self.in_flight.remove(&tx) else {
            return ResponseOutcome::UnknownTransaction;
        };
        let rtt = now.saturating_duration_since(f.sent_at);
        let mapped = canonical(mapped);
        let r = &mut self.report;
        r.udp = true;
        let per_family = match f.family {
            Family::V4 => {
                r.ipv4 = true;
                r.global_v4.get_or_insert(mapped);
                self.mapped_v4.entry(canonical(f.dest)).or_insert(mapped);
                &mut r.region_v4_latency
            }
            Family::V6 => {
                r.ipv6 = true;
                r.global_v6.get_or_insert(mapped);
                &mut r.region_v6_latency
            }
        };
        keep_min(per_family, f.region, rtt);
        keep_min(&mut r.region_latency, f.region, rtt);

        if !self.shortened && r.region_latency.len() >= ENOUGH_REGIONS {
            self.shortened = true;
            let slowest = r.region_latency.values().max().copied().unwrap_or_default();
            let wait = if self.full {
                slowest.saturating_mul(2)
            } else {
                slowest
            };
            self.deadline = self.deadline.min(now + wait);
        }
        if self
            .wanted
            .iter()
            .all(|&(region, family)| has_latency(&self.report, region, family))
        {
            self.done = true;
        }
        ResponseOutcome::Accepted
    }

    pub fn is_done(&self) -> bool {
        self.done
    }

    /// The report so far (final once `is_done`); `preferred_derp` is left for
    /// [`crate::History::add_report`].
    pub fn report(&self) -> Report {
        let mut r = self.report.clone();
        let mut seen = self.mapped_v4.values();
        r.mapping_varies_by_dest_ip = match seen.next() {
            Some(first) if self.mapped_v4.len() >= 2 => Some(seen.any(|m| m != first)),
            _ => None,
        };
        r
    }
}

fn has_latency(r: &Report, region: RegionId, family: Family) -> bool {
    match family {
        Family::V4 => r.region_v4_latency.contains_key(&region),
        Family::V6 => r.region_v6_latency.contains_key(&region),
    }
}

fn keep_min(map: &mut BTreeMap<RegionId, Duration>, region: RegionId, d: Duration) {
    map.entry(region)
        .and_modify(|old| *old = (*old).min(d))
        .or_insert(d);
}

/// Dual-stack sockets see IPv4 peers as `::ffff:a.b.c.d`.
fn canonical(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map_or(a, |v4| SocketAddr::new(IpAddr::V4(v4), a.port())),
        IpAddr::V4(_) => a,
    }
}
