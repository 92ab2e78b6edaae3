//! The sans-I/O mapping state machine: what to do next (probe, map, renew, delete) given what
//! the gateway answered and the time. The shell runs the actions and feeds results back.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// A port-mapping protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    NatPmp,
    Pcp,
    Upnp,
}

/// What a probe saw answer on the gateway.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Services {
    pub natpmp: bool,
    pub pcp: bool,
    pub upnp: bool,
}

impl Services {
    fn has(&self, p: Protocol) -> bool {
        match p {
            Protocol::NatPmp => self.natpmp,
            Protocol::Pcp => self.pcp,
            Protocol::Upnp => self.upnp,
        }
    }

    fn set(&mut self, p: Protocol) {
        match p {
            Protocol::NatPmp => self.natpmp = true,
            Protocol::Pcp => self.pcp = true,
            Protocol::Upnp => self.upnp = true,
        }
    }
}

/// A mapping the gateway granted: UDP `external` on the gateway reaches our internal port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub protocol: Protocol,
    pub external: SocketAddr,
    /// As granted by the gateway (the requested lease for UPnP permanent mappings).
    pub lease: Duration,
    pub obtained_at: Instant,
    /// NAT-PMP/PCP server epoch at `obtained_at`, to notice a gateway reboot.
    pub epoch: Option<u32>,
}

impl Mapping {
    /// When to renew: at half the lease (at least one second on, so a zero lease cannot spin).
    pub fn renew_at(&self) -> Instant {
        self.obtained_at + (self.lease / 2).max(Duration::from_secs(1))
    }
}

/// Timers and sizes.
#[derive(Debug, Clone, Copy)]
pub struct Config {
    /// Lease requested (RFC 6886 recommends 7200 s).
    pub lease: Duration,
    /// How long a probe's findings are trusted before probing again.
    pub probe_cache: Duration,
    /// First wait after every protocol failed; doubles up to `retry_max`.
    pub retry_min: Duration,
    pub retry_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(7200),
            probe_cache: Duration::from_secs(600),
            retry_min: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
        }
    }
}

/// What the shell should do. `ticket` goes back with the result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Probe {
        ticket: u64,
    },
    Map {
        ticket: u64,
        protocol: Protocol,
        internal_port: u16,
        suggested_external_port: Option<u16>,
        lease: Duration,
    },
    Renew {
        ticket: u64,
        mapping: Mapping,
        internal_port: u16,
        lease: Duration,
    },
    Delete {
        ticket: u64,
        mapping: Mapping,
        internal_port: u16,
    },
}

/// Result of a Map or Renew.
pub type MapResult = Result<Mapping, String>;

/// The state machine. One action is in flight at a time.
#[derive(Debug)]
pub struct Mapper {
    config: Config,
    internal_port: u16,
    services: Option<(Services, Instant)>,
    /// Protocols that failed since the last probe.
    failed: Services,
    mapping: Option<Mapping>,
    prev_external_port: Option<u16>,
    in_flight: Option<u64>,
    next_ticket: u64,
    retry_at: Option<Instant>,
    backoff: Duration,
    stopping: bool,
    stopped: bool,
}

impl Mapper {
    pub fn new(internal_port: u16, config: Config) -> Self {
        Self {
            config,
            internal_port,
            services: None,
            failed: Services::default(),
            mapping: None,
            prev_external_port: None,
            in_flight: None,
            next_ticket: 1,
            retry_at: None,
            backoff: config.retry_min,
            stopping: false,
            stopped: false,
        }
    }

    /// The mapping to advertise, if any.
    pub fn mapping(&self) -> Option<Mapping> {
        self.mapping
    }

    /// True once `stop` was called and the delete (if any) has finished.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    fn ticket(&mut self) -> u64 {
        let t = self.next_ticket;
        self.next_ticket += 1;
        self.in_flight = Some(t);
        t
    }

    /// Reference order: NAT-PMP by default, PCP when only PCP answered, UPnP last.
    fn choose(&self, now: Instant) -> Option<Protocol> {
        let (seen, _) = self
            .services
            .filter(|(_, at)| now < *at + self.config.probe_cache)?;
        [Protocol::NatPmp, Protocol::Pcp, Protocol::Upnp]
            .into_iter()
            .find(|p| seen.has(*p) && !self.failed.has(*p))
    }

    /// The next action, if one is due. Call again after feeding its result.
    pub fn handle_timeout(&mut self, now: Instant) -> Option<Action> {
        if self.in_flight.is_some() || self.stopped {
            return None;
        }
        if self.stopping {
            return match self.mapping.take() {
                Some(mapping) => Some(Action::Delete {
                    ticket: self.ticket(),
                    mapping,
                    internal_port: self.internal_port,
                }),
                None => {
                    self.stopped = true;
                    None
                }
            };
        }
        if let Some(m) = self.mapping {
            return (now >= m.renew_at()).then(|| Action::Renew {
                ticket: self.ticket(),
                mapping: m,
                internal_port: self.internal_port,
                lease: self.config.lease,
            });
        }
        if self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        let fresh = self
            .services
            .is_some_and(|(_, at)| now < at + self.config.probe_cache);
        if !fresh {
            return Some(Action::Probe {
                ticket: self.ticket(),
            });
        }
        match self.choose(now) {
            Some(protocol) => Some(Action::Map {
                ticket: self.ticket(),
                protocol,
                internal_port: self.internal_port,
                suggested_external_port: self.prev_external_port,
                lease: self.config.lease,
            }),
            None => {
                // Nothing answered, or everything that answered refused: wait, then probe anew.
                self.retry_at = Some(now + self.backoff);
                self.backoff = (self.backoff * 2).min(self.config.retry_max);
                self.services = None;
                self.failed = Services::default();
                None
            }
        }
    }

    /// When `handle_timeout` should next be called (None: only after an event).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight.is_some() || self.stopped {
            return None;
        }
        if let Some(m) = self.mapping {
            return Some(m.renew_at());
        }
        self.retry_at
    }

    fn accept(&mut self, ticket: u64) -> bool {
        if self.in_flight == Some(ticket) {
            self.in_flight = None;
            true
        } else {
            false
        }
    }

    pub fn on_probe(&mut self, now: Instant, ticket: u64, seen: Services) {
        if !self.accept(ticket) {
            return;
        }
        self.services = Some((seen, now));
        self.failed = Services::default();
    }

    pub fn on_mapped(&mut self, now: Instant, ticket: u64, protocol: Protocol, result: MapResult) {
        if !self.accept(ticket) {
            return;
        }
        match result {
            Ok(m) if !self.stopping => self.install(m),
            Ok(m) => self.mapping = Some(m),
            Err(e) => {
                tracing::debug!(?protocol, error = %e, "port mapping failed");
                self.failed.set(protocol);
                let _ = now;
            }
        }
    }

    pub fn on_renewed(&mut self, now: Instant, ticket: u64, result: MapResult) {
        if !self.accept(ticket) {
            return;
        }
        let old = self.mapping;
        match result {
            Ok(m) => {
                if let (Some(o), Some(new_epoch), Some(old_epoch)) =
                    (old, m.epoch, old.and_then(|o| o.epoch))
                {
                    // RFC 6886 §3.6: the epoch should advance with wall time; a smaller one means
                    // the gateway lost its state. The renewal just re-created the mapping.
                    let elapsed = now.saturating_duration_since(o.obtained_at).as_secs();
                    if u64::from(new_epoch) + 2 < u64::from(old_epoch) + elapsed * 7 / 8 {
                        tracing::info!(
                            old_epoch,
                            new_epoch,
                            "gateway epoch went back: it restarted; mapping re-created"
                        );
                    }
                }
                self.install(m);
            }
            Err(e) => {
                // The gateway is gone or forgot us: stop advertising at once, re-probe.
                tracing::info!(error = %e, "port mapping renewal failed; withdrawing it");
                self.mapping = None;
                self.services = None;
                self.failed = Services::default();
                self.retry_at = None;
            }
        }
    }

    pub fn on_deleted(&mut self, _now: Instant, ticket: u64) {
        if self.accept(ticket) && self.stopping {
            self.stopped = true;
        }
    }

    fn install(&mut self, mut m: Mapping) {
        // A gateway may grant more than we asked (or an absurd u32 lifetime); we renew on our
        // own schedule at the latest, so a far-future deadline never arises.
        m.lease = m.lease.min(self.config.lease);
        self.prev_external_port = Some(m.external.port());
        self.mapping = Some(m);
        self.backoff = self.config.retry_min;
        self.retry_at = None;
    }

    /// The network changed (new gateway or local address): forget everything and probe again.
    /// Results of actions already in flight are ignored.
    pub fn network_changed(&mut self) {
        self.in_flight = None;
        self.services = None;
        self.failed = Services::default();
        self.mapping = None;
        self.retry_at = None;
        self.backoff = self.config.retry_min;
    }

    /// Begin shutdown: the next action deletes the mapping, if any.
    pub fn stop(&mut self) {
        self.stopping = true;
    }
}
