//! The path each peer's WireGuard packets take: one of its direct endpoints, or its DERP
//! relay. Sans-I/O: the daemon feeds what control says of each peer ([`PathTable::set_peers`]),
//! what the kernel reports of each peer's handshakes and traffic ([`PathTable::observe`]), and
//! WireGuard packets arriving over DERP ([`PathTable::relay_received`]); it reads the chosen
//! [`Path`] back and writes it into the peer's endpoint.
//!
//! Until disco (which proves a direct path before using it) the proof is WireGuard's own
//! handshake: a direct endpoint is tried while we send; if no handshake completes within
//! [`DIRECT_TRIAL`] the next endpoint is tried, and after the last the peer is relayed. A peer
//! that reaches us over DERP is answered over DERP, since the kernel roams its endpoint to
//! wherever its packets came from.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime};

/// A peer's WireGuard public key (raw bytes).
pub type Key = [u8; 32];

/// How long a direct endpoint may go without a handshake while we send to it: one WireGuard
/// handshake retry (REKEY_TIMEOUT, 5 s) and a margin, so a lost first initiation is retried.
pub const DIRECT_TRIAL: Duration = Duration::from_secs(6);

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
    state: State,
}

/// Every peer's path.
#[derive(Clone, Debug, Default)]
pub struct PathTable {
    peers: BTreeMap<Key, Peer>,
}

impl PathTable {
    pub fn new() -> PathTable {
        PathTable::default()
    }

    /// The peers control lists now. A known peer keeps its state while its current endpoint
    /// is still offered; peers no longer listed are forgotten.
    pub fn set_peers<I>(&mut self, peers: I)
    where
        I: IntoIterator<Item = (Key, PeerPaths)>,
    {
        let mut next = BTreeMap::new();
        for (key, paths) in peers {
            let state = match self.peers.remove(&key) {
                Some(old) => carried_over(&old, &paths),
                None => first_state(&paths),
            };
            next.insert(key, Peer { paths, state });
        }
        self.peers = next;
    }

    /// What the kernel reports of `key` at `now`.
    pub fn observe(&mut self, key: &Key, seen: WgObservation, now: Instant) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        peer.state = match peer.state.clone() {
            State::Trying {
                index,
                handshake_before,
                tx_before,
                sending_since,
            } => {
                if seen.last_handshake.is_some() && seen.last_handshake != handshake_before {
                    State::Direct { index }
                } else {
                    // Without a baseline (a new peer), anything sent counts: there was no
                    // handshake to show for it.
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
        };
    }

    /// A WireGuard packet from `key` arrived over DERP region `region`: the peer relays, and
    /// the kernel will answer wherever the packet came from, so we relay too (through the
    /// region it used). A working direct path is kept.
    pub fn relay_received(&mut self, key: &Key, region: u16) {
        let Some(peer) = self.peers.get_mut(key) else {
            return;
        };
        if !matches!(peer.state, State::Direct { .. }) {
            peer.state = State::Relayed { region };
        }
    }

    /// The path to `key`, if it is a peer.
    pub fn path(&self, key: &Key) -> Option<Path> {
        self.peers.get(key).map(path_of)
    }

    /// Every peer's path.
    pub fn paths(&self) -> impl Iterator<Item = (&Key, Path)> {
        self.peers.iter().map(|(key, peer)| (key, path_of(peer)))
    }

    /// Whether a peer is still being tried directly (the caller should keep observing it).
    pub fn trying(&self) -> bool {
        self.peers
            .values()
            .any(|p| matches!(p.state, State::Trying { .. }))
    }
}

fn path_of(peer: &Peer) -> Path {
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
        }
    }

    fn sent(tx: u64) -> WgObservation {
        WgObservation {
            last_handshake: None,
            tx_bytes: tx,
        }
    }

    #[test]
    fn a_direct_endpoint_that_handshakes_is_kept() {
        let mut table = PathTable::new();
        table.set_peers([(A, offer(&["192.0.2.1:41641"], Some(900)))]);
        let t0 = Instant::now();
        assert_eq!(table.path(&A), Some(Path::Direct(addr("192.0.2.1:41641"))));
        table.observe(&A, sent(0), t0);
        table.observe(&A, sent(148), t0 + Duration::from_secs(1));
        let shook = WgObservation {
            last_handshake: Some(SystemTime::now()),
            tx_bytes: 300,
        };
        table.observe(&A, shook, t0 + Duration::from_secs(2));
        table.observe(&A, shook, t0 + Duration::from_secs(60));
        assert_eq!(table.path(&A), Some(Path::Direct(addr("192.0.2.1:41641"))));
        assert!(!table.trying());
    }

    #[test]
    fn endpoints_are_tried_in_turn_then_the_relay() {
        let mut table = PathTable::new();
        table.set_peers([(A, offer(&["192.0.2.1:1", "198.51.100.1:2"], Some(900)))]);
        let t0 = Instant::now();
        table.observe(&A, sent(0), t0);
        // Nothing sent yet: no trial runs, however long.
        table.observe(&A, sent(0), t0 + Duration::from_secs(30));
        assert_eq!(table.path(&A), Some(Path::Direct(addr("192.0.2.1:1"))));
        let t1 = t0 + Duration::from_secs(31);
        table.observe(&A, sent(148), t1);
        table.observe(&A, sent(296), t1 + DIRECT_TRIAL - Duration::from_millis(1));
        assert_eq!(table.path(&A), Some(Path::Direct(addr("192.0.2.1:1"))));
        table.observe(&A, sent(296), t1 + DIRECT_TRIAL);
        assert_eq!(table.path(&A), Some(Path::Direct(addr("198.51.100.1:2"))));
        let t2 = t1 + DIRECT_TRIAL + Duration::from_secs(1);
        table.observe(&A, sent(444), t2);
        table.observe(&A, sent(592), t2 + DIRECT_TRIAL);
        assert_eq!(table.path(&A), Some(Path::Relay { region: 900 }));
        assert!(!table.trying());
    }

    #[test]
    fn no_endpoint_means_relay_and_no_relay_means_unreachable() {
        let mut table = PathTable::new();
        table.set_peers([(A, offer(&[], Some(7)))]);
        assert_eq!(table.path(&A), Some(Path::Relay { region: 7 }));
        table.set_peers([(A, offer(&[], None))]);
        assert_eq!(table.path(&A), Some(Path::Relay { region: 7 }));
        let mut table = PathTable::new();
        table.set_peers([(A, offer(&[], None))]);
        assert_eq!(table.path(&A), Some(Path::Unreachable));
        table.set_peers([(A, offer(&["192.0.2.1:1"], None))]);
        assert_eq!(table.path(&A), Some(Path::Direct(addr("192.0.2.1:1"))));
    }

    #[test]
    fn a_packet_over_derp_switches_to_the_relay_unless_direct_works() {
        let mut table = PathTable::new();
        table.set_peers([(A, offer(&["192.0.2.1:1"], Some(1)))]);
        table.relay_received(&A, 2);
        assert_eq!(table.path(&A), Some(Path::Relay { region: 2 }));

        let mut table = PathTable::new();
        table.set_peers([(A, offer(&["192.0.2.1:1"], Some(1)))]);
        let shook = WgObservation {
            last_handshake: Some(SystemTime::now()),
            tx_bytes: 1,
        };
        table.observe(&A, shook, Instant::now());
        table.relay_received(&A, 2);
        assert_eq!(table.path(&A), Some(Path::Direct(addr("192.0.2.1:1"))));
    }

    #[test]
    fn a_dead_direct_session_is_tried_again() {
        let mut table = PathTable::new();
        table.set_peers([(A, offer(&["192.0.2.1:1"], Some(1)))]);
        let t0 = Instant::now();
        let fresh = WgObservation {
            last_handshake: Some(SystemTime::now()),
            tx_bytes: 100,
        };
        table.observe(&A, fresh, t0);
        let old = SystemTime::now() - SESSION_DEAD_AFTER - Duration::from_secs(1);
        let dead = WgObservation {
            last_handshake: Some(old),
            tx_bytes: 200,
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
        assert_eq!(table.path(&A), Some(Path::Relay { region: 1 }));
    }

    #[test]
    fn a_moved_endpoint_restarts_the_trial_and_gone_peers_are_forgotten() {
        let mut table = PathTable::new();
        table.set_peers([(A, offer(&["192.0.2.1:1"], None))]);
        let t0 = Instant::now();
        table.observe(&A, sent(0), t0);
        table.observe(&A, sent(10), t0 + Duration::from_secs(1));
        table.set_peers([(A, offer(&["192.0.2.9:1"], None))]);
        // The clock of the old endpoint does not count against the new one.
        table.observe(&A, sent(20), t0 + DIRECT_TRIAL + Duration::from_secs(1));
        assert_eq!(table.path(&A), Some(Path::Direct(addr("192.0.2.9:1"))));
        table.set_peers([]);
        assert_eq!(table.path(&A), None);
        assert_eq!(table.paths().count(), 0);
    }
}
