//! One peer's disco state (reference §1.5–1.6): candidate addresses, pings in flight, the best
//! direct address and until when it is trusted. Sans-I/O; [`crate::PathTable`] owns one per
//! peer that has a disco key and turns its wishes into [`crate::Transmit`]s.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::score::{Probed, better};

/// Ping the best address this often while the peer is active.
pub const HEARTBEAT: Duration = Duration::from_secs(3);
/// No traffic for this long: the session is idle (heartbeats stop, learned addresses expire).
pub const SESSION_ACTIVE: Duration = Duration::from_secs(45);
/// A direct address is trusted this long after its last pong.
pub const TRUST: Duration = Duration::from_millis(6500);
/// Re-ping every candidate this often (when the best is slower than [`GOOD_ENOUGH`]).
pub const UPGRADE_INTERVAL: Duration = Duration::from_secs(60);
pub const GOOD_ENOUGH: Duration = Duration::from_millis(5);
/// Minimum gap between two pings to the same address (reset by CallMeMaybe).
pub const PING_GAP: Duration = Duration::from_secs(5);
/// How long to wait for a pong.
pub const PING_TIMEOUT: Duration = Duration::from_secs(5);
/// When WireGuard sends to the peer but hears nothing back, the direct path is given this long
/// to answer a probe before it loses its trust (instead of waiting out the 6.5 s window): a
/// path cut mid-flow falls back to the relay within a few seconds.
pub const STALL_GRACE: Duration = Duration::from_millis(1000);

/// Where a candidate address came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// Control's `Endpoints`.
    Control,
    /// The peer's CallMeMaybe.
    CallMeMaybe,
    /// A ping arrived from it (expires when the session is idle).
    PingedUs { at: Instant },
}

#[derive(Clone, Debug)]
struct Candidate {
    source: Source,
    last_ping: Option<Instant>,
}

/// A ping waiting for its pong.
#[derive(Clone, Copy, Debug)]
pub struct InFlight {
    pub to: SocketAddr,
    pub sent: Instant,
}

#[derive(Clone, Copy, Debug)]
struct Best {
    probed: Probed,
    trusted_until: Instant,
}

#[derive(Clone, Debug, Default)]
pub struct DiscoPeer {
    candidates: BTreeMap<SocketAddr, Candidate>,
    pings: BTreeMap<[u8; 12], InFlight>,
    best: Option<Best>,
    /// The address of the last pong that made or kept a best address; kept after the best is
    /// given up, while it is still a candidate.
    last_answered: Option<SocketAddr>,
    last_full_ping: Option<Instant>,
    active_until: Option<Instant>,
    next_heartbeat: Option<Instant>,
}

/// What the peer's state wants sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Want {
    Ping {
        to: SocketAddr,
    },
    /// Tell the peer (over DERP) to ping our endpoints.
    CallMeMaybe,
}

impl DiscoPeer {
    /// Control's endpoint list now; addresses learned otherwise are kept. While we are
    /// [searching](DiscoPeer::searching), an address new to us is pinged at once: a peer's
    /// STUN or port-mapped endpoint often reaches control just after its first CallMeMaybe,
    /// and the next round is seconds away.
    pub fn set_endpoints(&mut self, endpoints: &[SocketAddr], now: Instant, wants: &mut Vec<Want>) {
        self.candidates
            .retain(|addr, c| c.source != Source::Control || endpoints.contains(addr));
        let probe = self.searching(now);
        for addr in endpoints {
            self.candidates.entry(*addr).or_insert_with(|| {
                if probe {
                    wants.push(Want::Ping { to: *addr });
                }
                Candidate {
                    source: Source::Control,
                    last_ping: probe.then_some(now),
                }
            });
        }
        if let Some(best) = self.best
            && !self.candidates.contains_key(&best.probed.addr)
        {
            self.best = None;
        }
        if self
            .last_answered
            .is_some_and(|addr| !self.candidates.contains_key(&addr))
        {
            self.last_answered = None;
        }
    }

    /// The direct address to use, if one is trusted at `now`; an untrusted best address is
    /// still given while the session is idle (nothing to send, so nothing to lose, and the
    /// kernel's endpoint stays put).
    pub fn direct(&self, now: Instant) -> Option<SocketAddr> {
        let best = self.best?;
        (now < best.trusted_until || !self.is_active(now)).then_some(best.probed.addr)
    }

    /// The best address, or the last one that was: with no relay to fall back on, the
    /// address that answered last is a better bet than any other candidate (Tailscale, too,
    /// keeps sending to an expired best address).
    pub fn last_best(&self) -> Option<SocketAddr> {
        self.best
            .map(|best| best.probed.addr)
            .or(self.last_answered)
    }

    /// Whether a direct address answered within [`TRUST`].
    pub fn trusted(&self, now: Instant) -> bool {
        self.best.is_some_and(|best| now < best.trusted_until)
    }

    /// Whether we are looking for a direct path: none is trusted, and the session is active
    /// or a round of pings went out within [`PING_GAP`] (the first one, or a CallMeMaybe's,
    /// before any traffic).
    pub fn searching(&self, now: Instant) -> bool {
        let pinged_lately = self.candidates.values().any(|c| {
            c.last_ping
                .is_some_and(|at| now.duration_since(at) < PING_GAP)
        });
        !self.trusted(now) && (self.is_active(now) || pinged_lately)
    }

    pub fn is_active(&self, now: Instant) -> bool {
        self.active_until.is_some_and(|until| now < until)
    }

    /// We sent to or heard from the peer at `now`: heartbeats run for [`SESSION_ACTIVE`].
    pub fn activity(&mut self, now: Instant, wants: &mut Vec<Want>) {
        let was_active = self.is_active(now);
        self.active_until = Some(now + SESSION_ACTIVE);
        if !was_active {
            self.next_heartbeat = Some(now);
            self.heartbeat(now, wants);
        }
    }

    /// We send but hear nothing back: probe the best address now and trust it only for
    /// [`STALL_GRACE`] more unless its pong comes back.
    pub fn stalled(&mut self, now: Instant, wants: &mut Vec<Want>) {
        let Some(best) = &mut self.best else {
            return;
        };
        if now >= best.trusted_until {
            return;
        }
        best.trusted_until = best.trusted_until.min(now + STALL_GRACE);
        let to = best.probed.addr;
        if let Some(candidate) = self.candidates.get_mut(&to) {
            candidate.last_ping = Some(now);
        }
        wants.push(Want::Ping { to });
    }

    /// A round of pings to every candidate not pinged within [`PING_GAP`], and a CallMeMaybe
    /// when any went out.
    pub fn full_ping(&mut self, now: Instant, wants: &mut Vec<Want>) {
        let mut sent = false;
        for (addr, candidate) in &mut self.candidates {
            if candidate
                .last_ping
                .is_some_and(|at| now.duration_since(at) < PING_GAP)
            {
                continue;
            }
            candidate.last_ping = Some(now);
            wants.push(Want::Ping { to: *addr });
            sent = true;
        }
        if sent {
            self.last_full_ping = Some(now);
            wants.push(Want::CallMeMaybe);
        }
    }

    fn want_full_ping(&self, now: Instant) -> bool {
        let Some(best) = self.best else {
            return true;
        };
        if now >= best.trusted_until {
            return true;
        }
        let Some(last) = self.last_full_ping else {
            return true;
        };
        best.probed.latency > GOOD_ENOUGH && now.duration_since(last) >= UPGRADE_INTERVAL
    }

    fn heartbeat(&mut self, now: Instant, wants: &mut Vec<Want>) {
        if let Some(best) = self.best
            && let Some(candidate) = self.candidates.get_mut(&best.probed.addr)
        {
            candidate.last_ping = Some(now);
            wants.push(Want::Ping {
                to: best.probed.addr,
            });
        }
        if self.want_full_ping(now) {
            self.full_ping(now, wants);
        }
        self.next_heartbeat = Some(now + HEARTBEAT);
    }

    /// Records a ping we are sending.
    pub fn sent_ping(&mut self, tx_id: [u8; 12], to: SocketAddr, now: Instant) {
        self.pings.insert(tx_id, InFlight { to, sent: now });
    }

    /// A ping reached us over UDP from `from`: a candidate while the session lasts, pinged
    /// back at once unless pinged within [`PING_GAP`] (the peer's NAT just showed us the port
    /// it maps towards us; waiting for the next heartbeat would cost seconds).
    pub fn pinged_from(&mut self, from: SocketAddr, now: Instant, wants: &mut Vec<Want>) {
        let candidate = self.candidates.entry(from).or_insert(Candidate {
            source: Source::PingedUs { at: now },
            last_ping: None,
        });
        if let Source::PingedUs { at } = &mut candidate.source {
            *at = now;
        }
        let trusted = self
            .best
            .is_some_and(|b| b.probed.addr == from && now < b.trusted_until);
        let recently = candidate
            .last_ping
            .is_some_and(|at| now.duration_since(at) < PING_GAP);
        if !trusted && !recently {
            candidate.last_ping = Some(now);
            wants.push(Want::Ping { to: from });
        }
    }

    /// The pong for `tx_id` arrived over UDP; false if it answers no ping of ours.
    pub fn pong(&mut self, tx_id: &[u8; 12], now: Instant) -> bool {
        let Some(ping) = self.pings.remove(tx_id) else {
            return false;
        };
        let probed = Probed {
            addr: ping.to,
            latency: now.saturating_duration_since(ping.sent),
        };
        let trusted_until = now + TRUST;
        match &mut self.best {
            Some(best) if best.probed.addr == probed.addr => {
                best.probed = probed;
                best.trusted_until = trusted_until;
            }
            Some(best) if now < best.trusted_until && !better(probed, best.probed) => {}
            _ => {
                self.best = Some(Best {
                    probed,
                    trusted_until,
                })
            }
        }
        self.last_answered = self.best.map(|best| best.probed.addr);
        true
    }

    /// The peer's CallMeMaybe: its endpoints replace the last CallMeMaybe's, and every
    /// candidate is pinged now.
    pub fn call_me_maybe(&mut self, endpoints: &[SocketAddr], now: Instant, wants: &mut Vec<Want>) {
        self.candidates
            .retain(|addr, c| c.source != Source::CallMeMaybe || endpoints.contains(addr));
        for addr in endpoints {
            self.candidates.entry(*addr).or_insert(Candidate {
                source: Source::CallMeMaybe,
                last_ping: None,
            });
        }
        for candidate in self.candidates.values_mut() {
            candidate.last_ping = None;
        }
        let mut pings = Vec::new();
        self.full_ping(now, &mut pings);
        // Answering a CallMeMaybe with one would ping-pong them forever.
        wants.extend(pings.into_iter().filter(|w| *w != Want::CallMeMaybe));
    }

    /// Timers: heartbeats while active, lost pings, expired learned addresses.
    pub fn handle_timeout(&mut self, now: Instant, wants: &mut Vec<Want>) {
        let lost: Vec<[u8; 12]> = self
            .pings
            .iter()
            .filter(|(_, p)| now.duration_since(p.sent) >= PING_TIMEOUT)
            .map(|(id, _)| *id)
            .collect();
        for id in lost {
            if let Some(ping) = self.pings.remove(&id)
                && let Some(best) = self.best
                && best.probed.addr == ping.to
                && now >= best.trusted_until
            {
                self.best = None;
            }
        }
        if !self.is_active(now) {
            self.candidates.retain(|_, c| match c.source {
                Source::PingedUs { at } => now.duration_since(at) < SESSION_ACTIVE,
                _ => true,
            });
            self.next_heartbeat = None;
            return;
        }
        if self.next_heartbeat.is_some_and(|at| now >= at) {
            self.heartbeat(now, wants);
        }
    }

    /// When [`DiscoPeer::handle_timeout`] next has something to do.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        let lost = self.pings.values().map(|p| p.sent + PING_TIMEOUT).min();
        let heartbeat = self.next_heartbeat;
        let idle = self.active_until;
        // The moment a trusted path stops being trusted is when the path changes.
        let distrust = self.best.map(|b| b.trusted_until).filter(|at| *at > now);
        [lost, heartbeat, idle, distrust]
            .into_iter()
            .flatten()
            .min()
    }

    pub fn has_candidates(&self) -> bool {
        !self.candidates.is_empty()
    }

    /// The best address and its last latency, for status.
    pub fn best(&self) -> Option<Probed> {
        self.best.map(|b| b.probed)
    }
}
