//! The path each peer's WireGuard packets take: one of its direct endpoints, or its DERP
//! relay. Sans-I/O: the daemon feeds what control says of each peer ([`PathTable::set_peers`]),
//! what the kernel reports of each peer's handshakes and traffic ([`PathTable::observe`]), and
//! WireGuard packets arriving over DERP ([`PathTable::relay_received`]); it reads the chosen
//! [`Path`] back and writes it into the peer's endpoint.
//!
//! A peer with a disco key is steered by disco (reference §1.6, [`crate::disco`]): relayed until
//! a pong proves a direct address, which is then used while trusted (6.5 s after each pong,
//! renewed by heartbeats while traffic flows); the table queues the pings, pongs and
//! CallMeMaybes that takes ([`PathTable::poll_transmit`]).
//!
//! A peer without one (a plain WireGuard peer) is steered by WireGuard's own handshake: a direct
//! endpoint is tried while we send; if no handshake completes within [`DIRECT_TRIAL`] the next
//! endpoint is tried, and after the last the peer is relayed. Either way a peer that reaches us
//! over DERP without a proven direct path is answered over DERP, since the kernel roams its
//! endpoint to wherever its packets came from.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use rand_core::RngCore;

use crate::disco::{DiscoPeer, Want};

/// A peer's WireGuard public key (raw bytes).
pub type Key = [u8; 32];

/// How long a direct endpoint may go without a handshake while we send to it: one WireGuard
/// handshake retry (REKEY_TIMEOUT, 5 s) and a margin, so a lost first initiation is retried.
pub const DIRECT_TRIAL: Duration = Duration::from_secs(6);

/// Sending to a disco peer without hearing from it for this long makes its direct path prove
/// itself again at once ([`crate::disco::DiscoPeer::stalled`]).
pub const SILENCE: Duration = Duration::from_millis(1000);

/// A direct session older than this (REJECT_AFTER_TIME, 180 s) while we keep sending means
/// rekeying no longer gets through: the path is tried again from the start.
pub const SESSION_DEAD_AFTER: Duration = Duration::from_secs(180);

/// What control says about a peer's reachability.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerPaths {
    /// Direct candidates, in control's order.
    pub endpoints: Vec<SocketAddr>,
    /// The DERP region it is connected to, if any.
    pub home_region: Option<u16>,
    /// Whether it speaks disco (control gave its disco key).
    pub disco: bool,
}

/// Which way a disco message goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    Udp(SocketAddr),
    Derp(u16),
}

/// A disco message for the shell to seal and send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outgoing {
    Ping { tx_id: [u8; 12] },
    Pong { tx_id: [u8; 12], src: SocketAddr },
    CallMeMaybe { endpoints: Vec<SocketAddr> },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    pub peer: Key,
    pub via: Via,
    pub msg: Outgoing,
}

/// The answer to a ping asked for with [`PathTable::ping_now`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PingResult {
    pub tx_id: [u8; 12],
    pub peer: Key,
    /// The path the ping took (and its pong came back on).
    pub via: Via,
    pub latency: Duration,
}

/// The address a pong over DERP names as the source: Tailscale's magic DERP address.
pub fn derp_magic(region: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(Ipv4Addr::new(127, 3, 3, 40)), region)
}

/// Where packets to a peer go.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Path {
    Direct(SocketAddr),
    Relay {
        region: u16,
    },
    /// No endpoint and no relay region.
    Unreachable,
}

/// What the kernel reports of one peer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WgObservation {
    pub last_handshake: Option<SystemTime>,
    pub tx_bytes: u64,
    pub rx_bytes: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Sending to `endpoints[index]`; `sending_since` is when we first saw bytes go out (more
    /// than `tx_before`) without a handshake newer than `handshake_before`.
    Trying {
        index: usize,
        handshake_before: Option<SystemTime>,
        tx_before: Option<u64>,
        sending_since: Option<Instant>,
    },
    /// A handshake completed over `endpoints[index]`.
    Direct {
        index: usize,
    },
    Relayed {
        region: u16,
    },
    Unreachable,
}

#[derive(Clone, Debug)]
struct Peer {
    paths: PeerPaths,
    /// The handshake-trial state (peers without disco).
    state: State,
    /// Disco state (peers with a disco key).
    disco: Option<DiscoPeer>,
    /// The region the peer last reached us through, while no direct path is proven.
    relayed_in: Option<u16>,
    /// Counters at the last observation, to see traffic.
    tx_bytes: u64,
    rx_bytes: u64,
    /// When the kernel last received from the peer (disco peers), and whether the silence
    /// since then was already probed.
    last_heard: Option<Instant>,
    silence_probed: bool,
}

/// Every peer's path.
#[derive(Debug, Default)]
pub struct PathTable {
    peers: BTreeMap<Key, Peer>,
    local_endpoints: Vec<SocketAddr>,
    transmits: VecDeque<Transmit>,
    /// Pings in flight, by transaction ID: whose they are.
    pings: BTreeMap<[u8; 12], Key>,
    /// Disco peers that have not had their first round of pings.
    unpinged: Vec<Key>,
    /// Our own home DERP region.
    home: Option<u16>,
    /// Pings someone asked for (`meshgate ping`): whose, which way, when.
    manual: BTreeMap<[u8; 12], (Key, Via, Instant)>,
    results: VecDeque<PingResult>,
}

impl PathTable {
    pub fn new() -> PathTable {
        PathTable::default()
    }

    /// The peers control lists now. A known peer keeps its state while its current endpoint
    /// is still offered; peers no longer listed are forgotten. New disco peers are pinged at
    /// the next [`PathTable::handle_timeout`]; a known one still looking for a direct path
    /// has its new addresses pinged now.
    pub fn set_peers<I>(&mut self, peers: I, now: Instant)
    where
        I: IntoIterator<Item = (Key, PeerPaths)>,
    {
        let mut next = BTreeMap::new();
        let mut pings = Vec::new();
        for (key, paths) in peers {
            let peer = match self.peers.remove(&key) {
                Some(mut old) => {
                    old.state = carried_over(&old, &paths);
                    if !paths.disco {
                        old.disco = None;
                    }
                    old.paths = paths;
                    old
                }
                None => Peer {
                    state: first_state(&paths),
                    paths,
                    disco: None,
                    relayed_in: None,
                    tx_bytes: 0,
                    rx_bytes: 0,
                    last_heard: None,
                    silence_probed: false,
                },
            };
            let mut peer = peer;
            if peer.paths.disco {
                let fresh = peer.disco.is_none();
                let disco = peer.disco.get_or_insert_with(DiscoPeer::default);
                let mut wants = Vec::new();
                disco.set_endpoints(&peer.paths.endpoints, now, &mut wants);
                if fresh && disco.has_candidates() {
                    self.unpinged.push(key);
                }
                pings.push((key, wants));
            }
            next.insert(key, peer);
        }
        self.peers = next;
        for (key, wants) in pings {
            self.queue(key, wants, now);
        }
        self.pings.retain(|_, key| self.peers.contains_key(key));
        let peers = &self.peers;
        self.unpinged.retain(|key| peers.contains_key(key));
    }

    /// Our own home DERP region (see [`PathTable::path`]).
    pub fn set_home(&mut self, home: Option<u16>) {
        self.home = home;
    }

    /// Our own endpoints, sent in CallMeMaybe. When one is new (a STUN answer, a port
    /// mapping), peers we are [searching](DiscoPeer::searching) a path to get a CallMeMaybe
    /// with it now: the one they had may predate it, and the next round is seconds away.
    pub fn set_local_endpoints(&mut self, endpoints: Vec<SocketAddr>, now: Instant) {
        let gained = endpoints
            .iter()
            .any(|addr| !self.local_endpoints.contains(addr));
        self.local_endpoints = endpoints;
        if !gained {
            return;
        }
        let searching: Vec<Key> = self
            .peers
            .iter()
            .filter(|(_, peer)| peer.disco.as_ref().is_some_and(|d| d.searching(now)))
            .map(|(key, _)| *key)
            .collect();
        for key in searching {
            self.queue(key, vec![Want::CallMeMaybe], now);
        }
    }

    /// What the kernel reports of `key` at `now`.
    pub fn observe(&mut self, key: &Key, seen: WgObservation, now: Instant) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        let sent = seen.tx_bytes > peer.tx_bytes;
        let heard = seen.rx_bytes > peer.rx_bytes;
        peer.tx_bytes = seen.tx_bytes;
        peer.rx_bytes = seen.rx_bytes;
        if let Some(disco) = &mut peer.disco {
            let mut wants = Vec::new();
            if sent || heard {
                disco.activity(now, &mut wants);
            }
            if heard {
                peer.last_heard = Some(now);
                peer.silence_probed = false;
            } else if sent
                && !peer.silence_probed
                && peer
                    .last_heard
                    .is_none_or(|at| now.duration_since(at) >= SILENCE)
            {
                peer.silence_probed = true;
                disco.stalled(now, &mut wants);
            }
            self.queue(*key, wants, now);
            return;
        }
        peer.state = observed(peer, seen, now);
    }

    /// A disco Ping from `key` reached us over `via`: answered on the same path; a UDP source
    /// becomes a candidate address.
    pub fn handle_ping(&mut self, key: &Key, via: Via, tx_id: [u8; 12], now: Instant) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        let mut wants = Vec::new();
        let src = match via {
            Via::Udp(addr) => {
                if let Some(disco) = &mut peer.disco {
                    disco.pinged_from(addr, now, &mut wants);
                }
                addr
            }
            Via::Derp(region) => derp_magic(region),
        };
        self.transmits.push_back(Transmit {
            peer: *key,
            via,
            msg: Outgoing::Pong { tx_id, src },
        });
        self.queue(*key, wants, now);
    }

    /// A disco Pong from `key` over `via`. Only pongs over UDP prove a direct path.
    pub fn handle_pong(&mut self, key: &Key, via: Via, tx_id: [u8; 12], now: Instant) {
        if self.pings.get(&tx_id) != Some(key) {
            return;
        }
        self.pings.remove(&tx_id);
        if let Some((peer, sent_via, sent)) = self.manual.remove(&tx_id) {
            self.results.push_back(PingResult {
                tx_id,
                peer,
                via: sent_via,
                latency: now.saturating_duration_since(sent),
            });
        }
        if let (Via::Udp(_), Some(peer)) = (via, self.peers.get_mut(key))
            && let Some(disco) = &mut peer.disco
            && disco.pong(&tx_id, now)
        {
            peer.relayed_in = None;
            // The path answered: a silence that goes on is measured (and probed) afresh.
            peer.last_heard = Some(now);
            peer.silence_probed = false;
        }
    }

    /// The peer's CallMeMaybe (only accepted over DERP by the caller): ping its endpoints now.
    pub fn handle_call_me_maybe(&mut self, key: &Key, endpoints: &[SocketAddr], now: Instant) {
        let Some(disco) = self.peers.get_mut(key).and_then(|p| p.disco.as_mut()) else {
            return;
        };
        let mut wants = Vec::new();
        disco.call_me_maybe(endpoints, now, &mut wants);
        self.queue(*key, wants, now);
    }

    /// A WireGuard packet from `key` arrived over DERP region `region`: the peer relays, and
    /// the kernel will answer wherever the packet came from, so we relay too (through the
    /// region it used) unless a direct path is proven; a direct path we trust is probed at
    /// once, since the peer evidently could not use it.
    pub fn relay_received(&mut self, key: &Key, region: u16, now: Instant) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        match &mut peer.disco {
            Some(disco) => {
                if disco.direct(now).is_none() {
                    peer.relayed_in = Some(region);
                } else {
                    let mut wants = Vec::new();
                    disco.stalled(now, &mut wants);
                    peer.relayed_in = Some(region);
                    self.queue(*key, wants, now);
                }
            }
            None => {
                if !matches!(peer.state, State::Direct { .. }) {
                    peer.state = State::Relayed { region };
                }
            }
        }
    }

    /// Runs the disco timers (first pings of new peers, heartbeats, lost pings).
    pub fn handle_timeout(&mut self, now: Instant) {
        for key in std::mem::take(&mut self.unpinged) {
            if let Some(disco) = self.peers.get_mut(&key).and_then(|p| p.disco.as_mut()) {
                let mut wants = Vec::new();
                disco.full_ping(now, &mut wants);
                self.queue(key, wants, now);
            }
        }
        let keys: Vec<Key> = self.peers.keys().copied().collect();
        for key in keys {
            let Some(disco) = self.peers.get_mut(&key).and_then(|p| p.disco.as_mut()) else {
                continue;
            };
            if disco.poll_timeout(now).is_some_and(|at| now >= at) {
                let mut wants = Vec::new();
                disco.handle_timeout(now, &mut wants);
                self.queue(key, wants, now);
            }
        }
    }

    /// When [`PathTable::handle_timeout`] next has work (or a path changes), as of `now`.
    pub fn poll_timeout(&self, now: Instant) -> Option<Instant> {
        if !self.unpinged.is_empty() {
            return Some(now);
        }
        self.peers
            .values()
            .filter_map(|p| p.disco.as_ref()?.poll_timeout(now))
            .min()
    }

    /// One ping to `key` on the path in use now (the direct address disco found, else the
    /// relay, else the first endpoint); its pong shows up in [`PathTable::poll_ping_result`].
    /// Forgotten after [`crate::disco::PING_TIMEOUT`].
    pub fn ping_now(&mut self, key: &Key, now: Instant) -> Result<[u8; 12], &'static str> {
        let peer = self.peers.get_mut(key).ok_or("not a peer")?;
        let disco = peer
            .disco
            .as_mut()
            .ok_or("the peer does not speak disco (no disco key, or ours is off)")?;
        let via = match (disco.best(), peer.relayed_in.or(peer.paths.home_region)) {
            (Some(best), _) => Via::Udp(best.addr),
            (None, Some(region)) => Via::Derp(region),
            (None, None) => Via::Udp(
                *peer
                    .paths
                    .endpoints
                    .first()
                    .ok_or("no path to the peer: no endpoint, no DERP region")?,
            ),
        };
        let mut tx_id = [0u8; 12];
        rand_core::OsRng.fill_bytes(&mut tx_id);
        if let Via::Udp(to) = via {
            disco.sent_ping(tx_id, to, now);
        }
        self.pings.insert(tx_id, *key);
        self.manual.insert(tx_id, (*key, via, now));
        self.manual
            .retain(|_, (_, _, sent)| now.duration_since(*sent) < crate::disco::PING_TIMEOUT);
        self.transmits.push_back(Transmit {
            peer: *key,
            via,
            msg: Outgoing::Ping { tx_id },
        });
        Ok(tx_id)
    }

    /// The next answer to a [`PathTable::ping_now`].
    pub fn poll_ping_result(&mut self) -> Option<PingResult> {
        self.results.pop_front()
    }

    /// The next disco message to send.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    /// Turns a peer's wishes into transmits.
    fn queue(&mut self, key: Key, wants: Vec<Want>, now: Instant) {
        let Some(peer) = self.peers.get_mut(&key) else {
            return;
        };
        for want in wants {
            match want {
                Want::Ping { to } => {
                    let mut tx_id = [0u8; 12];
                    rand_core::OsRng.fill_bytes(&mut tx_id);
                    if let Some(disco) = &mut peer.disco {
                        disco.sent_ping(tx_id, to, now);
                    }
                    self.pings.insert(tx_id, key);
                    self.transmits.push_back(Transmit {
                        peer: key,
                        via: Via::Udp(to),
                        msg: Outgoing::Ping { tx_id },
                    });
                }
                Want::CallMeMaybe => {
                    let region = peer.relayed_in.or(peer.paths.home_region).or(self.home);
                    if let Some(region) = region
                        && !self.local_endpoints.is_empty()
                    {
                        self.transmits.push_back(Transmit {
                            peer: key,
                            via: Via::Derp(region),
                            msg: Outgoing::CallMeMaybe {
                                endpoints: self.local_endpoints.clone(),
                            },
                        });
                    }
                }
            }
        }
    }

    /// The path to `key` at `now`, if it is a peer.
    pub fn path(&self, key: &Key, now: Instant) -> Option<Path> {
        self.peers.get(key).map(|p| path_of(p, self.home, now))
    }

    /// Every peer's path at `now`.
    pub fn paths(&self, now: Instant) -> impl Iterator<Item = (&Key, Path)> {
        self.peers
            .iter()
            .map(move |(key, peer)| (key, path_of(peer, self.home, now)))
    }

    /// Whether a plain WireGuard peer is still being tried directly (the caller should keep
    /// observing it).
    pub fn trying(&self) -> bool {
        self.peers
            .values()
            .any(|p| p.disco.is_none() && matches!(p.state, State::Trying { .. }))
    }

    /// The latency of the direct path in use, for status.
    pub fn latency(&self, key: &Key) -> Option<Duration> {
        Some(self.peers.get(key)?.disco.as_ref()?.best()?.latency)
    }
}

/// The handshake trial's next state after the kernel reported `seen`.
fn observed(peer: &Peer, seen: WgObservation, now: Instant) -> State {
    match peer.state.clone() {
        State::Trying {
            index,
            handshake_before,
            tx_before,
            sending_since,
        } => {
            if seen.last_handshake.is_some() && seen.last_handshake != handshake_before {
                return State::Direct { index };
            }
            // Without a baseline (a new peer), anything sent counts: there was no handshake
            // to show for it.
            let tx_before = tx_before.unwrap_or(0);
            let sending_since =
                sending_since.or_else(|| (seen.tx_bytes > tx_before).then_some(now));
            match sending_since {
                Some(since) if now.duration_since(since) >= DIRECT_TRIAL => {
                    next_after_failure(&peer.paths, index, seen)
                }
                _ => State::Trying {
                    index,
                    handshake_before,
                    tx_before: Some(tx_before),
                    sending_since,
                },
            }
        }
        State::Direct { index } => {
            let stale = seen.last_handshake.is_none_or(|at| {
                SystemTime::now()
                    .duration_since(at)
                    .is_ok_and(|age| age > SESSION_DEAD_AFTER)
            });
            if stale {
                State::Trying {
                    index,
                    handshake_before: seen.last_handshake,
                    tx_before: Some(seen.tx_bytes),
                    sending_since: None,
                }
            } else {
                State::Direct { index }
            }
        }
        other => other,
    }
}

/// `our_home` stands in for a disco peer's home region until control tells it (a region both
/// sides use in a one-region tailnet, and a better first guess than an endpoint behind a NAT).
fn path_of(peer: &Peer, our_home: Option<u16>, now: Instant) -> Path {
    if let Some(disco) = &peer.disco {
        if let Some(addr) = disco.direct(now) {
            return Path::Direct(addr);
        }
        if let Some(region) = peer.relayed_in.or(peer.paths.home_region).or(our_home) {
            return Path::Relay { region };
        }
        // No relay to fall back on: the address that answered last, else the first endpoint,
        // may still work. (The first endpoint can be one only reachable through the tunnel
        // itself, such as an exit node's uplink address.)
        return disco
            .last_best()
            .or_else(|| peer.paths.endpoints.first().copied())
            .map_or(Path::Unreachable, Path::Direct);
    }
    match peer.state {
        State::Trying { index, .. } | State::Direct { index } => peer
            .paths
            .endpoints
            .get(index)
            .map_or(Path::Unreachable, |e| Path::Direct(*e)),
        State::Relayed { region } => Path::Relay { region },
        State::Unreachable => Path::Unreachable,
    }
}

fn first_state(paths: &PeerPaths) -> State {
    if paths.endpoints.is_empty() {
        return relay_or_unreachable(paths);
    }
    State::Trying {
        index: 0,
        handshake_before: None,
        tx_before: None,
        sending_since: None,
    }
}

fn relay_or_unreachable(paths: &PeerPaths) -> State {
    match paths.home_region {
        Some(region) => State::Relayed { region },
        None => State::Unreachable,
    }
}

/// The next endpoint after `index` failed, or the relay after the last.
fn next_after_failure(paths: &PeerPaths, index: usize, seen: WgObservation) -> State {
    if index + 1 < paths.endpoints.len() {
        State::Trying {
            index: index + 1,
            handshake_before: seen.last_handshake,
            tx_before: Some(seen.tx_bytes),
            sending_since: None,
        }
    } else {
        relay_or_unreachable(paths)
    }
}

/// The state of a known peer whose offer from control is now `paths`.
fn carried_over(old: &Peer, paths: &PeerPaths) -> State {
    let same_endpoint = |index: usize| -> Option<usize> {
        let current = old.paths.endpoints.get(index)?;
        paths.endpoints.iter().position(|e| e == current)
    };
    match &old.state {
        State::Trying {
            index,
            handshake_before,
            tx_before,
            sending_since,
        } => match same_endpoint(*index) {
            Some(index) => State::Trying {
                index,
                handshake_before: *handshake_before,
                tx_before: *tx_before,
                sending_since: *sending_since,
            },
            None => first_state(paths),
        },
        State::Direct { index } => match same_endpoint(*index) {
            Some(index) => State::Direct { index },
            None => first_state(paths),
        },
        // Relayed stays relayed (disco will find direct paths again), following the peer
        // to a new home region.
        State::Relayed { region } => State::Relayed {
            region: paths.home_region.unwrap_or(*region),
        },
        State::Unreachable => first_state(paths),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Key = [1; 32];

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn offer(endpoints: &[&str], home: Option<u16>) -> PeerPaths {
        PeerPaths {
            endpoints: endpoints.iter().map(|e| addr(e)).collect(),
            home_region: home,
            disco: false,
        }
    }

    fn sent(tx: u64) -> WgObservation {
        WgObservation {
            last_handshake: None,
            tx_bytes: tx,
            rx_bytes: 0,
        }
    }

    #[test]
    fn a_direct_endpoint_that_handshakes_is_kept() {
        let mut table = PathTable::new();
        table.set_peers(
            [(A, offer(&["192.0.2.1:41641"], Some(900)))],
            Instant::now(),
        );
        let t0 = Instant::now();
        assert_eq!(
            table.path(&A, Instant::now()),
            Some(Path::Direct(addr("192.0.2.1:41641")))
        );
        table.observe(&A, sent(0), t0);
        table.observe(&A, sent(148), t0 + Duration::from_secs(1));
        let shook = WgObservation {
            last_handshake: Some(SystemTime::now()),
            tx_bytes: 300,
            rx_bytes: 0,
        };
        table.observe(&A, shook, t0 + Duration::from_secs(2));
        table.observe(&A, shook, t0 + Duration::from_secs(60));
        assert_eq!(
            table.path(&A, Instant::now()),
            Some(Path::Direct(addr("192.0.2.1:41641")))
        );
        assert!(!table.trying());
    }

    #[test]
    fn endpoints_are_tried_in_turn_then_the_relay() {
        let mut table = PathTable::new();
        table.set_peers(
            [(A, offer(&["192.0.2.1:1", "198.51.100.1:2"], Some(900)))],
            Instant::now(),
        );
        let t0 = Instant::now();
        table.observe(&A, sent(0), t0);
        // Nothing sent yet: no trial runs, however long.
        table.observe(&A, sent(0), t0 + Duration::from_secs(30));
        assert_eq!(
            table.path(&A, Instant::now()),
            Some(Path::Direct(addr("192.0.2.1:1")))
        );
        let t1 = t0 + Duration::from_secs(31);
        table.observe(&A, sent(148), t1);
        table.observe(&A, sent(296), t1 + DIRECT_TRIAL - Duration::from_millis(1));
        assert_eq!(
            table.path(&A, Instant::now()),
            Some(Path::Direct(addr("192.0.2.1:1")))
        );
        table.observe(&A, sent(296), t1 + DIRECT_TRIAL);
        assert_eq!(
            table.path(&A, Instant::now()),
            Some(Path::Direct(addr("198.51.100.1:2")))
        );
        let t2 = t1 + DIRECT_TRIAL + Duration::from_secs(1);
        table.observe(&A, sent(444), t2);
        table.observe(&A, sent(592), t2 + DIRECT_TRIAL);
        assert_eq!(
            table.path(&A, Instant::now()),
            Some(Path::Relay { region: 900 })
        );
        assert!(!table.trying());
    }

    #[test]
    fn no_endpoint_means_relay_and_no_relay_means_unreachable() {
        let mut table = PathTable::new();
        table.set_peers([(A, offer(&[], Some(7)))], Instant::now());
        assert_eq!(
            table.path(&A, Instant::now()),
            Some(Path::Relay { region: 7 })
        );
        table.set_peers([(A, offer(&[], None))], Instant::now());
        assert_eq!(
            table.path(&A, Instant::now()),
            Some(Path::Relay { region: 7 })
        );
        let mut table = PathTable::new();
        table.set_peers([(A, offer(&[], None))], Instant::now());
        assert_eq!(table.path(&A, Instant::now()), Some(Path::Unreachable));
        table.set_peers([(A, offer(&["192.0.2.1:1"], None))], Instant::now());
        assert_eq!(
            table.path(&A, Instant::now()),
            Some(Path::Direct(addr("192.0.2.1:1")))
        );
    }

    #[test]
    fn a_packet_over_derp_switches_to_the_relay_unless_direct_works() {
        let mut table = PathTable::new();
        table.set_peers([(A, offer(&["192.0.2.1:1"], Some(1)))], Instant::now());
        table.relay_received(&A, 2, Instant::now());
        assert_eq!(
            table.path(&A, Instant::now()),
            Some(Path::Relay { region: 2 })
        );

        let mut table = PathTable::new();
        table.set_peers([(A, offer(&["192.0.2.1:1"], Some(1)))], Instant::now());
        let shook = WgObservation {
            last_handshake: Some(SystemTime::now()),
            tx_bytes: 1,
            rx_bytes: 0,
        };
        table.observe(&A, shook, Instant::now());
        table.relay_received(&A, 2, Instant::now());
        assert_eq!(
            table.path(&A, Instant::now()),
            Some(Path::Direct(addr("192.0.2.1:1")))
        );
    }

    #[test]
    fn a_dead_direct_session_is_tried_again() {
        let mut table = PathTable::new();
        table.set_peers([(A, offer(&["192.0.2.1:1"], Some(1)))], Instant::now());
        let t0 = Instant::now();
        let fresh = WgObservation {
            last_handshake: Some(SystemTime::now()),
            tx_bytes: 100,
            rx_bytes: 0,
        };
        table.observe(&A, fresh, t0);
        let old = SystemTime::now() - SESSION_DEAD_AFTER - Duration::from_secs(1);
        let dead = WgObservation {
            last_handshake: Some(old),
            tx_bytes: 200,
            rx_bytes: 0,
        };
        table.observe(&A, dead, t0 + Duration::from_secs(1));
        assert!(table.trying());
        table.observe(
            &A,
            WgObservation {
                tx_bytes: 300,
                ..dead
            },
            t0 + Duration::from_secs(2),
        );
        table.observe(
            &A,
            WgObservation {
                tx_bytes: 400,
                ..dead
            },
            t0 + Duration::from_secs(2) + DIRECT_TRIAL,
        );
        assert_eq!(
            table.path(&A, Instant::now()),
            Some(Path::Relay { region: 1 })
        );
    }

    #[test]
    fn a_moved_endpoint_restarts_the_trial_and_gone_peers_are_forgotten() {
        let mut table = PathTable::new();
        table.set_peers([(A, offer(&["192.0.2.1:1"], None))], Instant::now());
        let t0 = Instant::now();
        table.observe(&A, sent(0), t0);
        table.observe(&A, sent(10), t0 + Duration::from_secs(1));
        table.set_peers([(A, offer(&["192.0.2.9:1"], None))], Instant::now());
        // The clock of the old endpoint does not count against the new one.
        table.observe(&A, sent(20), t0 + DIRECT_TRIAL + Duration::from_secs(1));
        assert_eq!(
            table.path(&A, Instant::now()),
            Some(Path::Direct(addr("192.0.2.9:1")))
        );
        table.set_peers([], Instant::now());
        assert_eq!(table.path(&A, Instant::now()), None);
        assert_eq!(table.paths(Instant::now()).count(), 0);
    }

    /// A disco node in a simulated network.
    struct Node {
        key: Key,
        addr: SocketAddr,
        table: PathTable,
    }

    fn disco_node(key: Key, addr: &str, peer: Key, peer_addr: &str) -> Node {
        let mut table = PathTable::new();
        table.set_local_endpoints(vec![addr.parse().unwrap()], Instant::now());
        table.set_peers(
            [(
                peer,
                PeerPaths {
                    endpoints: vec![peer_addr.parse().unwrap()],
                    home_region: Some(900),
                    disco: true,
                },
            )],
            Instant::now(),
        );
        Node {
            key,
            addr: addr.parse().unwrap(),
            table,
        }
    }

    /// Delivers what `from` queued to `to` (UDP only when `udp` allows it; DERP always):
    /// how many went over UDP and over DERP, and whether anything was queued.
    fn deliver(from: &mut Node, to: &mut Node, udp: bool, now: Instant) -> (usize, usize, bool) {
        let (mut over_udp, mut over_derp, mut moved) = (0, 0, false);
        while let Some(t) = from.table.poll_transmit() {
            moved = true;
            assert_eq!(t.peer, to.key);
            let via = match t.via {
                Via::Udp(dst) => {
                    if !udp || dst != to.addr {
                        continue;
                    }
                    over_udp += 1;
                    Via::Udp(from.addr)
                }
                Via::Derp(region) => {
                    over_derp += 1;
                    Via::Derp(region)
                }
            };
            match t.msg {
                Outgoing::Ping { tx_id } => to.table.handle_ping(&from.key, via, tx_id, now),
                Outgoing::Pong { tx_id, .. } => to.table.handle_pong(&from.key, via, tx_id, now),
                Outgoing::CallMeMaybe { endpoints } => {
                    assert!(matches!(via, Via::Derp(_)), "CallMeMaybe over UDP");
                    to.table.handle_call_me_maybe(&from.key, &endpoints, now)
                }
            }
        }
        (over_udp, over_derp, moved)
    }

    /// Delivers between `a` and `b` until both are quiet.
    fn pump(a: &mut Node, b: &mut Node, udp: bool, now: Instant) -> (usize, usize) {
        let (mut over_udp, mut over_derp) = (0, 0);
        for _ in 0..100 {
            let (u1, d1, m1) = deliver(a, b, udp, now);
            let (u2, d2, m2) = deliver(b, a, udp, now);
            over_udp += u1 + u2;
            over_derp += d1 + d2;
            if !m1 && !m2 {
                break;
            }
        }
        (over_udp, over_derp)
    }

    const B: Key = [2; 32];

    /// Traffic both ways: the session is active.
    fn busy(tx: u64) -> WgObservation {
        WgObservation {
            last_handshake: None,
            tx_bytes: tx,
            rx_bytes: tx,
        }
    }

    #[test]
    fn disco_peers_start_relayed_and_go_direct_on_a_pong() {
        let mut a = disco_node(A, "192.0.2.1:41641", B, "192.0.2.2:41641");
        let mut b = disco_node(B, "192.0.2.2:41641", A, "192.0.2.1:41641");
        let t0 = Instant::now();
        assert_eq!(a.table.path(&B, t0), Some(Path::Relay { region: 900 }));
        a.table.handle_timeout(t0);
        b.table.handle_timeout(t0);
        let (udp, derp) = pump(&mut a, &mut b, true, t0);
        assert!(udp >= 4 && derp >= 2, "udp {udp}, derp {derp}");
        assert_eq!(a.table.path(&B, t0), Some(Path::Direct(b.addr)));
        assert_eq!(b.table.path(&A, t0), Some(Path::Direct(a.addr)));
        // Idle: the direct path stays in place after its trust ran out.
        let later = t0 + Duration::from_secs(30);
        a.table.handle_timeout(later);
        assert_eq!(a.table.path(&B, later), Some(Path::Direct(b.addr)));
    }

    #[test]
    fn blocked_udp_stays_relayed_and_a_dead_direct_path_falls_back_while_active() {
        let mut a = disco_node(A, "192.0.2.1:41641", B, "192.0.2.2:41641");
        let mut b = disco_node(B, "192.0.2.2:41641", A, "192.0.2.1:41641");
        let t0 = Instant::now();
        a.table.handle_timeout(t0);
        b.table.handle_timeout(t0);
        pump(&mut a, &mut b, false, t0);
        assert_eq!(a.table.path(&B, t0), Some(Path::Relay { region: 900 }));

        // UDP works: direct. Traffic flows (heartbeats), then UDP dies.
        let t1 = t0 + Duration::from_secs(10);
        a.table.observe(&B, busy(1000), t1);
        pump(&mut a, &mut b, true, t1);
        assert_eq!(a.table.path(&B, t1), Some(Path::Direct(b.addr)));
        let mut now = t1;
        let mut tx = 1000;
        while now < t1 + Duration::from_secs(20) {
            now += Duration::from_millis(500);
            tx += 100;
            a.table.observe(&B, busy(tx), now);
            a.table.handle_timeout(now);
            b.table.handle_timeout(now);
            pump(&mut a, &mut b, false, now);
        }
        assert_eq!(a.table.path(&B, now), Some(Path::Relay { region: 900 }));
    }

    #[test]
    fn without_a_relay_a_lapsed_direct_path_stays_on_the_address_that_answered() {
        // The first endpoint B offers is unreachable (only reachable through the tunnel);
        // there is no DERP region at all.
        let unreachable = "198.18.7.1:41641";
        let mut a = disco_node(A, "192.0.2.1:41641", B, "192.0.2.2:41641");
        let mut b = disco_node(B, "192.0.2.2:41641", A, "192.0.2.1:41641");
        a.table.set_peers(
            [(
                B,
                PeerPaths {
                    endpoints: vec![addr(unreachable), b.addr],
                    home_region: None,
                    disco: true,
                },
            )],
            Instant::now(),
        );
        b.table.set_peers(
            [(
                A,
                PeerPaths {
                    endpoints: vec![a.addr],
                    home_region: None,
                    disco: true,
                },
            )],
            Instant::now(),
        );
        let t0 = Instant::now();
        a.table.handle_timeout(t0);
        b.table.handle_timeout(t0);
        pump(&mut a, &mut b, true, t0);
        assert_eq!(a.table.path(&B, t0), Some(Path::Direct(b.addr)));

        // Busy, and B stops answering for a while: trust lapses, yet the path stays on the
        // address that answered instead of jumping to the unreachable first endpoint.
        let mut now = t0;
        let mut tx = 1000;
        while now < t0 + Duration::from_secs(20) {
            now += Duration::from_millis(500);
            tx += 100;
            a.table.observe(&B, busy(tx), now);
            a.table.handle_timeout(now);
            b.table.handle_timeout(now);
            pump(&mut a, &mut b, false, now);
            assert_eq!(
                a.table.path(&B, now),
                Some(Path::Direct(b.addr)),
                "at {now:?}"
            );
        }
        // B answers again: still (and again trusted) there.
        now += Duration::from_millis(500);
        a.table.handle_timeout(now);
        b.table.handle_timeout(now);
        pump(&mut a, &mut b, true, now);
        assert_eq!(a.table.path(&B, now), Some(Path::Direct(b.addr)));
    }

    #[test]
    fn a_call_me_maybe_pings_back_without_answering_in_kind_and_strays_are_ignored() {
        let mut b = disco_node(B, "192.0.2.2:41641", A, "192.0.2.1:41641");
        let now = Instant::now();
        b.table
            .handle_call_me_maybe(&A, &["198.51.100.7:1234".parse().unwrap()], now);
        let mut pinged = Vec::new();
        while let Some(t) = b.table.poll_transmit() {
            assert!(!matches!(t.msg, Outgoing::CallMeMaybe { .. }));
            if let (Via::Udp(to), Outgoing::Ping { .. }) = (t.via, &t.msg) {
                pinged.push(to);
            }
        }
        pinged.sort();
        assert_eq!(
            pinged,
            [
                "192.0.2.1:41641".parse().unwrap(),
                "198.51.100.7:1234".parse().unwrap()
            ]
        );
        // A pong nobody asked for, or one over DERP, proves nothing.
        b.table.handle_pong(
            &A,
            Via::Udp("198.51.100.7:1234".parse().unwrap()),
            [9; 12],
            now,
        );
        assert_eq!(b.table.path(&A, now), Some(Path::Relay { region: 900 }));
        // A ping over UDP is answered with the source it came from, on the same path.
        let from: SocketAddr = "203.0.113.5:999".parse().unwrap();
        b.table.handle_ping(&A, Via::Udp(from), [7; 12], now);
        let pong = b.table.poll_transmit().unwrap();
        assert_eq!(pong.via, Via::Udp(from));
        assert_eq!(
            pong.msg,
            Outgoing::Pong {
                tx_id: [7; 12],
                src: from
            }
        );
        // ... and the new address is pinged back at once (it is how the peer's NAT maps us).
        let back = b.table.poll_transmit().unwrap();
        assert_eq!(back.via, Via::Udp(from));
        assert!(matches!(back.msg, Outgoing::Ping { .. }));
        b.table.handle_ping(&A, Via::Derp(900), [8; 12], now);
        let pong = b.table.poll_transmit().unwrap();
        assert_eq!(
            pong.msg,
            Outgoing::Pong {
                tx_id: [8; 12],
                src: derp_magic(900)
            }
        );
    }

    #[test]
    fn a_ping_asked_for_goes_the_current_way_and_reports_its_pong() {
        let mut a = disco_node(A, "192.0.2.1:41641", B, "192.0.2.2:41641");
        let mut b = disco_node(B, "192.0.2.2:41641", A, "192.0.2.1:41641");
        let t0 = Instant::now();
        // Relayed: the ping rides DERP.
        let tx = a.table.ping_now(&B, t0).unwrap();
        pump(&mut a, &mut b, false, t0);
        let result = a.table.poll_ping_result().unwrap();
        assert_eq!((result.tx_id, result.via), (tx, Via::Derp(900)));
        // Direct once disco proved it.
        a.table.handle_timeout(t0);
        b.table.handle_timeout(t0);
        pump(&mut a, &mut b, true, t0);
        while a.table.poll_ping_result().is_some() {}
        let later = t0 + Duration::from_millis(20);
        let tx = a.table.ping_now(&B, later).unwrap();
        pump(&mut a, &mut b, true, later);
        let result = a.table.poll_ping_result().unwrap();
        assert_eq!((result.tx_id, result.via), (tx, Via::Udp(b.addr)));
        assert!(a.table.ping_now(&[9; 32], later).is_err());
    }

    #[test]
    fn sending_into_silence_makes_the_direct_path_prove_itself_at_once() {
        let mut a = disco_node(A, "192.0.2.1:41641", B, "192.0.2.2:41641");
        let mut b = disco_node(B, "192.0.2.2:41641", A, "192.0.2.1:41641");
        let t0 = Instant::now();
        a.table.handle_timeout(t0);
        b.table.handle_timeout(t0);
        pump(&mut a, &mut b, true, t0);
        assert_eq!(a.table.path(&B, t0), Some(Path::Direct(b.addr)));
        let seen = |tx, rx| WgObservation {
            last_handshake: None,
            tx_bytes: tx,
            rx_bytes: rx,
        };
        // A one-way flow over a working path: the probe's pong keeps it direct.
        let mut now = t0;
        for step in 1..=10u64 {
            now += Duration::from_millis(500);
            a.table.observe(&B, seen(step * 100, 0), now);
            pump(&mut a, &mut b, true, now);
        }
        assert_eq!(a.table.path(&B, now), Some(Path::Direct(b.addr)));
        // The path is cut: nothing comes back. Relayed well before the 6.5 s trust runs out.
        let cut = now;
        let mut tx = 2000;
        while a.table.path(&B, now) != Some(Path::Relay { region: 900 }) {
            now += Duration::from_millis(500);
            tx += 100;
            a.table.observe(&B, seen(tx, 0), now);
            a.table.handle_timeout(now);
            pump(&mut a, &mut b, false, now);
            assert!(now - cut < Duration::from_secs(10), "never fell back");
        }
        assert!(
            now - cut <= SILENCE + crate::disco::STALL_GRACE + Duration::from_secs(1),
            "fell back after {:?}",
            now - cut
        );
    }

    /// A disco node behind a NAT: `public` (its mapping) is the only address that reaches it;
    /// it knows only its LAN address yet, and only the peer's LAN address.
    fn behind_nat(key: Key, lan: &str, public: &str, peer: Key, peer_lan: &str) -> Node {
        let mut table = PathTable::new();
        let t = Instant::now();
        table.set_local_endpoints(vec![addr(lan)], t);
        table.set_peers(
            [(
                peer,
                PeerPaths {
                    endpoints: vec![addr(peer_lan)],
                    home_region: Some(900),
                    disco: true,
                },
            )],
            t,
        );
        Node {
            key,
            addr: addr(public),
            table,
        }
    }

    /// Both nodes start (with traffic when `traffic`; without, as when the first WireGuard
    /// handshake was lost) and exchange their first pings and CallMeMaybes, which name only
    /// LAN addresses: still relayed.
    fn first_round_on_lan_addresses_only(now: Instant, traffic: bool) -> (Node, Node) {
        let mut a = behind_nat(
            A,
            "10.1.0.2:41641",
            "203.0.113.2:40000",
            B,
            "10.2.0.2:41641",
        );
        let mut b = behind_nat(
            B,
            "10.2.0.2:41641",
            "203.0.113.3:40000",
            A,
            "10.1.0.2:41641",
        );
        for n in [&mut a, &mut b] {
            n.table.handle_timeout(now);
            if traffic {
                n.table
                    .observe(&if n.key == A { B } else { A }, busy(1000), now);
            }
        }
        pump(&mut a, &mut b, true, now);
        assert_eq!(a.table.path(&B, now), Some(Path::Relay { region: 900 }));
        (a, b)
    }

    #[test]
    fn a_stun_endpoint_learned_after_the_first_call_me_maybe_is_announced_at_once() {
        for traffic in [true, false] {
            let t0 = Instant::now();
            let (mut a, mut b) = first_round_on_lan_addresses_only(t0, traffic);
            // A's STUN answer: B hears of it now, not at the next heartbeat (3 s) or once
            // WireGuard retries a lost first handshake (5 s).
            let t1 = t0 + Duration::from_millis(100);
            let public = a.addr;
            a.table
                .set_local_endpoints(vec![addr("10.1.0.2:41641"), public], t1);
            pump(&mut a, &mut b, true, t1);
            assert_eq!(
                a.table.path(&B, t1),
                Some(Path::Direct(b.addr)),
                "{traffic}"
            );
            assert_eq!(
                b.table.path(&A, t1),
                Some(Path::Direct(a.addr)),
                "{traffic}"
            );
            // The same endpoints again: nothing to announce.
            a.table
                .set_local_endpoints(vec![addr("10.1.0.2:41641"), public], t1);
            assert!(a.table.poll_transmit().is_none());
        }
    }

    #[test]
    fn a_new_endpoint_is_not_announced_to_peers_nobody_is_looking_for() {
        let t0 = Instant::now();
        let (mut a, _b) = first_round_on_lan_addresses_only(t0, false);
        // Idle, and the first round's pings are long past.
        let later = t0 + crate::disco::PING_GAP + Duration::from_secs(1);
        a.table.handle_timeout(later);
        while a.table.poll_transmit().is_some() {}
        a.table
            .set_local_endpoints(vec![addr("10.1.0.2:41641"), a.addr], later);
        assert!(a.table.poll_transmit().is_none());
    }

    #[test]
    fn an_endpoint_control_adds_for_a_peer_without_a_path_is_pinged_at_once() {
        let t0 = Instant::now();
        let (mut a, mut b) = first_round_on_lan_addresses_only(t0, true);
        // Control now lists B's STUN endpoint too.
        let t1 = t0 + Duration::from_millis(100);
        let offer = |endpoints: Vec<SocketAddr>| {
            [(
                B,
                PeerPaths {
                    endpoints,
                    home_region: Some(900),
                    disco: true,
                },
            )]
        };
        a.table
            .set_peers(offer(vec![addr("10.2.0.2:41641"), b.addr]), t1);
        pump(&mut a, &mut b, true, t1);
        assert_eq!(a.table.path(&B, t1), Some(Path::Direct(b.addr)));
        // With a trusted path, a further address waits for the next round.
        a.table.set_peers(
            offer(vec![addr("10.2.0.2:41641"), b.addr, addr("198.51.100.9:1")]),
            t1,
        );
        assert!(a.table.poll_transmit().is_none());
    }
}
