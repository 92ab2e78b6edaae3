//! The relay bridge (DESIGN decision 4): while a peer is relayed, the kernel's endpoint for it
//! is a loopback UDP socket of ours. What the kernel sends there goes to the peer as a DERP
//! packet addressed by its node key; what DERP delivers from the peer is sent from that socket
//! to the kernel's WireGuard port, so the kernel sees one steady endpoint per relayed peer.
//!
//! One task (the actor) owns the DERP connections and the bridges; each bridge and each DERP
//! connection has its own task, so packets never wait on the actor: bridges look up the
//! region's client in a shared table, DERP readers look up the peer's socket in another.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use meshgate_derp::{ClientOptions, DerpClient, DerpEvents, DerpTarget, Event};
use meshgate_tailcfg::{DerpMap, NodePrivate, NodePublic};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::resend;
use crate::table::Key;

/// Tailscale's disco packets start with this; they ride DERP but are not WireGuard's.
const DISCO_MAGIC: &[u8] = "TS💬".as_bytes();
/// A non-home region nobody used for this long is disconnected (Tailscale: 60 s, checked
/// every 15 s).
const IDLE_CLOSE: Duration = Duration::from_secs(60);
const IDLE_CHECK: Duration = Duration::from_secs(15);
/// Reconnect delays double from the first to the last (Tailscale caps at 5 s).
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_LAST: Duration = Duration::from_secs(5);
/// Largest WireGuard datagram we carry (a DERP packet holds at most 64 KiB).
const MAX_DATAGRAM: usize = 65_535;

/// How the relay is set up.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Our node key: DERP servers and peers know us by its public half.
    pub node_key: NodePrivate,
    /// WireGuard's listen port: relayed packets are delivered to 127.0.0.1 on it.
    pub wg_port: u16,
    /// CA certificates (PEM) trusted for DERP servers besides the public roots.
    pub extra_ca_pem: Option<Vec<u8>>,
    /// SO_MARK on the DERP connections (WireGuard's fwmark), so they skip the tailnet's routing
    /// table and never run through an exit node; 0 = none.
    pub fwmark: u32,
}

/// What the relay tells the daemon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayEvent {
    /// WireGuard traffic from `peer` arrived over `region` (sent once per peer and region).
    Received { peer: Key, region: u16 },
    /// A disco packet (still sealed) from the node key `peer` over `region`; the daemon checks
    /// the sender.
    Disco {
        peer: Key,
        region: u16,
        packet: Bytes,
    },
}

/// One DERP region as `meshgate status` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionStatus {
    pub id: u16,
    pub code: String,
    pub connected: bool,
    pub home: bool,
    /// The last connection error, while not connected.
    pub error: Option<String>,
}

/// The relay's state for status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RelayStatus {
    pub home: Option<u16>,
    pub regions: Vec<RegionStatus>,
    /// Relayed peers and the region each goes through.
    pub relayed: BTreeMap<Key, u16>,
}

enum Command {
    DerpMap(DerpMap),
    Home(Option<u16>),
    Peers(BTreeSet<Key>),
    Endpoint {
        peer: Key,
        region: u16,
        reply: oneshot::Sender<std::io::Result<SocketAddr>>,
    },
    Release(Key),
    SendDisco {
        peer: Key,
        region: u16,
        packet: Bytes,
    },
    /// A bridge had a packet for a region we are not connected to.
    Wanted(u16),
    /// DERP delivered a packet from a peer that has no bridge yet.
    Inbound {
        peer: Key,
        region: u16,
        data: Bytes,
    },
    Connected {
        region: u16,
        generation: u64,
        client: DerpClient,
        events: DerpEvents,
    },
    Failed {
        region: u16,
        generation: u64,
        error: String,
    },
    Closed {
        region: u16,
        generation: u64,
        error: String,
    },
}

/// Handle to the relay; dropping it stops every task.
#[derive(Debug)]
pub struct Relay {
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<RelayStatus>,
    actor: JoinHandle<()>,
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.actor.abort();
    }
}

impl Relay {
    /// Starts the relay; its events arrive on the returned receiver.
    pub fn start(config: RelayConfig) -> (Relay, mpsc::Receiver<RelayEvent>) {
        let (commands, rx) = mpsc::channel(256);
        let (events, events_rx) = mpsc::channel(256);
        let (status_tx, status) = watch::channel(RelayStatus::default());
        let actor = Actor {
            config,
            map: DerpMap::default(),
            home: None,
            peers: BTreeSet::new(),
            regions: BTreeMap::new(),
            clients: Arc::new(RwLock::new(BTreeMap::new())),
            bridges: Arc::new(RwLock::new(BTreeMap::new())),
            bridge_tasks: BTreeMap::new(),
            commands: commands.clone(),
            events,
            status: status_tx,
            reported: BTreeSet::new(),
        };
        let actor = tokio::spawn(actor.run(rx));
        (
            Relay {
                commands,
                status,
                actor,
            },
            events_rx,
        )
    }

    pub async fn set_derp_map(&self, map: DerpMap) {
        let _ = self.commands.send(Command::DerpMap(map)).await;
    }

    /// Our home region: kept connected, and told it is our preferred one.
    pub async fn set_home(&self, region: Option<u16>) {
        let _ = self.commands.send(Command::Home(region)).await;
    }

    /// The current peers: packets from anyone else are dropped, bridges of gone peers closed.
    pub async fn set_peers(&self, peers: BTreeSet<Key>) {
        let _ = self.commands.send(Command::Peers(peers)).await;
    }

    /// The loopback endpoint the kernel should use for `peer` while it is relayed through
    /// `region` (created on first use; the same address while the bridge lives).
    pub async fn endpoint(&self, peer: Key, region: u16) -> std::io::Result<SocketAddr> {
        let (reply, answer) = oneshot::channel();
        let gone = || std::io::Error::other("the relay stopped");
        self.commands
            .send(Command::Endpoint {
                peer,
                region,
                reply,
            })
            .await
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }

    /// Sends a sealed disco packet to `peer` through `region` (connecting to it if needed; the
    /// packet is dropped meanwhile, and disco retries).
    pub async fn send_disco(&self, peer: Key, region: u16, packet: Bytes) {
        let _ = self
            .commands
            .send(Command::SendDisco {
                peer,
                region,
                packet,
            })
            .await;
    }

    /// `peer` is no longer relayed: its bridge closes (call after the kernel has its direct
    /// endpoint, so roaming cannot pull the peer back to the bridge).
    pub async fn release(&self, peer: Key) {
        let _ = self.commands.send(Command::Release(peer)).await;
    }

    pub fn status(&self) -> RelayStatus {
        self.status.borrow().clone()
    }
}

/// A region's connection as the actor tracks it.
#[derive(Debug, Default)]
struct Region {
    connected: bool,
    connecting: bool,
    /// Increases per connection attempt, so reports of an old attempt are ignored.
    generation: u64,
    failures: u32,
    error: Option<String>,
    reader: Option<JoinHandle<()>>,
    /// Last time a packet went either way (shared with the bridges and the reader).
    last_used: Arc<std::sync::Mutex<Option<Instant>>>,
}

/// A region's DERP client and when a bridge last used it.
type RegionClient = (DerpClient, Arc<std::sync::Mutex<Option<Instant>>>);
type Clients = Arc<RwLock<BTreeMap<u16, RegionClient>>>;
type Bridges = Arc<RwLock<BTreeMap<Key, (Arc<UdpSocket>, u16)>>>;

struct Actor {
    config: RelayConfig,
    map: DerpMap,
    home: Option<u16>,
    peers: BTreeSet<Key>,
    regions: BTreeMap<u16, Region>,
    clients: Clients,
    bridges: Bridges,
    bridge_tasks: BTreeMap<Key, JoinHandle<()>>,
    commands: mpsc::Sender<Command>,
    events: mpsc::Sender<RelayEvent>,
    status: watch::Sender<RelayStatus>,
    /// (peer, region) pairs already reported as Received.
    reported: BTreeSet<(Key, u16)>,
}

impl Actor {
    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut idle = tokio::time::interval(IDLE_CHECK);
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.handle(command).await,
                    None => break,
                },
                _ = idle.tick() => self.close_idle(),
            }
            self.publish();
        }
        for (_, task) in std::mem::take(&mut self.bridge_tasks) {
            task.abort();
        }
        for region in self.regions.values_mut() {
            if let Some(reader) = region.reader.take() {
                reader.abort();
            }
        }
    }

    async fn handle(&mut self, command: Command) {
        match command {
            Command::DerpMap(map) => {
                self.map = map;
                if let Some(home) = self.home {
                    self.connect(home);
                }
            }
            Command::Home(region) => self.set_home(region).await,
            Command::Peers(peers) => {
                let gone: Vec<Key> = self
                    .bridge_tasks
                    .keys()
                    .filter(|k| !peers.contains(*k))
                    .copied()
                    .collect();
                for key in gone {
                    self.release(&key);
                }
                self.reported.retain(|(k, _)| peers.contains(k));
                self.peers = peers;
            }
            Command::Endpoint {
                peer,
                region,
                reply,
            } => {
                let result = self.bridge(peer, region).map(|(_, addr)| addr);
                self.connect(region);
                let _ = reply.send(result);
            }
            Command::Release(peer) => self.release(&peer),
            Command::SendDisco {
                peer,
                region,
                packet,
            } => match self.client(region) {
                Some((client, last_used)) => {
                    *lock(&last_used) = Some(Instant::now());
                    let _ = client.try_send(NodePublic::from_bytes(peer), packet);
                }
                None => self.connect(region),
            },
            Command::Wanted(region) => self.connect(region),
            Command::Inbound { peer, region, data } => {
                if !self.peers.contains(&peer) {
                    return;
                }
                match self.bridge(peer, region) {
                    Ok((socket, _)) => {
                        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, self.config.wg_port));
                        let _ = socket.send_to(&data, to).await;
                    }
                    Err(e) => tracing::warn!("relay bridge for a peer: {e}"),
                }
                if self.reported.insert((peer, region)) {
                    let _ = self.events.try_send(RelayEvent::Received { peer, region });
                }
            }
            Command::Connected {
                region,
                generation,
                client,
                events,
            } => self.connected(region, generation, client, events).await,
            Command::Failed {
                region,
                generation,
                error,
            }
            | Command::Closed {
                region,
                generation,
                error,
            } => self.lost(region, generation, error),
        }
    }

    async fn set_home(&mut self, region: Option<u16>) {
        if region == self.home {
            return;
        }
        let old = std::mem::replace(&mut self.home, region);
        if let Some(old) = old
            && let Some((client, _)) = self.client(old)
        {
            let _ = client.note_preferred(false).await;
        }
        if let Some(home) = region {
            match self.client(home) {
                Some((client, _)) => {
                    let _ = client.note_preferred(true).await;
                }
                None => self.connect(home),
            }
        }
    }

    fn client(&self, region: u16) -> Option<(DerpClient, Arc<std::sync::Mutex<Option<Instant>>>)> {
        self.clients
            .read()
            .ok()
            .and_then(|c| c.get(&region).cloned())
    }

    /// Starts connecting to `region` unless connected or on the way.
    fn connect(&mut self, region: u16) {
        let Some(target) = self.target(region) else {
            return;
        };
        let state = self.regions.entry(region).or_default();
        if state.connected || state.connecting {
            return;
        }
        state.connecting = true;
        state.generation += 1;
        let generation = state.generation;
        let delay = match state.failures {
            0 => Duration::ZERO,
            n => BACKOFF_FIRST
                .saturating_mul(1 << (n - 1).min(8))
                .min(BACKOFF_LAST),
        };
        let key = self.config.node_key.clone();
        let options = ClientOptions {
            fwmark: self.config.fwmark,
            ..ClientOptions::default()
        };
        let commands = self.commands.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let report = match target {
                Ok(target) => match meshgate_derp::connect(&target, key, &options).await {
                    Ok((client, events)) => Command::Connected {
                        region,
                        generation,
                        client,
                        events,
                    },
                    Err(e) => Command::Failed {
                        region,
                        generation,
                        error: e.to_string(),
                    },
                },
                Err(error) => Command::Failed {
                    region,
                    generation,
                    error,
                },
            };
            let _ = commands.send(report).await;
        });
    }

    /// Where to dial `region`: its first node that relays. `None`: the map has no such region.
    fn target(&self, region: u16) -> Option<Result<DerpTarget, String>> {
        let found = self.map.regions.get(&i32::from(region))?;
        let node = found.nodes.iter().find(|n| !n.stun_only)?;
        Some(
            DerpTarget::from_node(node, self.config.extra_ca_pem.as_deref())
                .map_err(|e| e.to_string()),
        )
    }

    async fn connected(
        &mut self,
        region: u16,
        generation: u64,
        client: DerpClient,
        events: DerpEvents,
    ) {
        let state = self.regions.entry(region).or_default();
        if state.generation != generation {
            client.close();
            return;
        }
        tracing::info!(region, "connected to DERP");
        state.connecting = false;
        state.connected = true;
        state.failures = 0;
        state.error = None;
        *lock(&state.last_used) = Some(Instant::now());
        let last_used = state.last_used.clone();
        if self.home == Some(region) {
            let _ = client.note_preferred(true).await;
        }
        if let Ok(mut clients) = self.clients.write() {
            clients.insert(region, (client, last_used.clone()));
        }
        let reader = tokio::spawn(read_region(
            region,
            generation,
            events,
            self.bridges.clone(),
            last_used,
            self.commands.clone(),
            self.events.clone(),
            self.config.wg_port,
        ));
        if let Some(old) = state.reader.replace(reader) {
            old.abort();
        }
    }

    fn lost(&mut self, region: u16, generation: u64, error: String) {
        let Some(state) = self.regions.get_mut(&region) else {
            return;
        };
        if state.generation != generation {
            return;
        }
        tracing::warn!(region, %error, "DERP connection lost");
        state.connected = false;
        state.connecting = false;
        state.failures = state.failures.saturating_add(1);
        state.error = Some(error);
        if let Ok(mut clients) = self.clients.write() {
            clients.remove(&region);
        }
        let needed = self.home == Some(region) || self.bridges_through(region);
        if needed {
            self.connect(region);
        }
    }

    fn bridges_through(&self, region: u16) -> bool {
        self.bridges
            .read()
            .is_ok_and(|b| b.values().any(|(_, r)| *r == region))
    }

    /// Closes non-home connections that carried nothing for [`IDLE_CLOSE`].
    fn close_idle(&mut self) {
        let now = Instant::now();
        let idle: Vec<u16> = self
            .regions
            .iter()
            .filter(|(id, state)| {
                state.connected
                    && self.home != Some(**id)
                    && !self.bridges_through(**id)
                    && lock(&state.last_used).is_none_or(|t| now.duration_since(t) >= IDLE_CLOSE)
            })
            .map(|(id, _)| *id)
            .collect();
        for region in idle {
            tracing::debug!(region, "closing an idle DERP connection");
            if let Ok(mut clients) = self.clients.write()
                && let Some((client, _)) = clients.remove(&region)
            {
                client.close();
            }
            if let Some(state) = self.regions.get_mut(&region) {
                state.connected = false;
                state.generation += 1;
                if let Some(reader) = state.reader.take() {
                    reader.abort();
                }
            }
        }
    }

    /// The bridge socket for `peer`, created if needed; its region follows `region`.
    fn bridge(&mut self, peer: Key, region: u16) -> std::io::Result<(Arc<UdpSocket>, SocketAddr)> {
        let mut bridges = self
            .bridges
            .write()
            .map_err(|_| std::io::Error::other("relay state poisoned"))?;
        if let Some((socket, current)) = bridges.get_mut(&peer) {
            *current = region;
            let addr = socket.local_addr()?;
            return Ok((socket.clone(), addr));
        }
        let std_socket = std::net::UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
        std_socket.set_nonblocking(true)?;
        let socket = Arc::new(UdpSocket::from_std(std_socket)?);
        let addr = socket.local_addr()?;
        bridges.insert(peer, (socket.clone(), region));
        drop(bridges);
        let task = tokio::spawn(carry_to_derp(
            peer,
            socket.clone(),
            self.config.wg_port,
            self.bridges.clone(),
            self.clients.clone(),
            self.commands.clone(),
        ));
        if let Some(old) = self.bridge_tasks.insert(peer, task) {
            old.abort();
        }
        Ok((socket, addr))
    }

    fn release(&mut self, peer: &Key) {
        if let Some(task) = self.bridge_tasks.remove(peer) {
            task.abort();
        }
        if let Ok(mut bridges) = self.bridges.write() {
            bridges.remove(peer);
        }
        self.reported.retain(|(k, _)| k != peer);
    }

    fn publish(&self) {
        let relayed: BTreeMap<Key, u16> = self
            .bridges
            .read()
            .map(|b| b.iter().map(|(k, (_, r))| (*k, *r)).collect())
            .unwrap_or_default();
        let mut ids: BTreeSet<u16> = self.regions.keys().copied().collect();
        ids.extend(self.home);
        let regions = ids
            .into_iter()
            .map(|id| {
                let state = self.regions.get(&id);
                RegionStatus {
                    id,
                    code: self
                        .map
                        .regions
                        .get(&i32::from(id))
                        .map(|r| r.region_code.clone())
                        .unwrap_or_default(),
                    connected: state.is_some_and(|s| s.connected),
                    home: self.home == Some(id),
                    error: state.filter(|s| !s.connected).and_then(|s| s.error.clone()),
                }
            })
            .collect();
        let status = RelayStatus {
            home: self.home,
            regions,
            relayed,
        };
        self.status.send_if_modified(|current| {
            let changed = *current != status;
            if changed {
                *current = status;
            }
            changed
        });
    }
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Kernel → DERP for one relayed peer: every datagram from WireGuard's port goes to the peer
/// through the bridge's current region. Datagrams from anyone else on the host are dropped.
async fn carry_to_derp(
    peer: Key,
    socket: Arc<UdpSocket>,
    wg_port: u16,
    bridges: Bridges,
    clients: Clients,
    commands: mpsc::Sender<Command>,
) {
    let kernel = SocketAddr::from((Ipv4Addr::LOCALHOST, wg_port));
    let dst = NodePublic::from_bytes(peer);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            return;
        };
        if from != kernel {
            continue;
        }
        let Some((region, client)) = route(&peer, &bridges, &clients) else {
            return;
        };
        match client {
            Some((client, last_used)) => {
                *lock(&last_used) = Some(Instant::now());
                // A full queue drops the packet: WireGuard retransmits what matters.
                let _ = client.try_send(dst, Bytes::copy_from_slice(&buf[..len]));
            }
            None => {
                let _ = commands.try_send(Command::Wanted(region));
            }
        }
        if resend::is_handshake_initiation(&buf[..len]) {
            let copy = Bytes::copy_from_slice(&buf[..len]);
            tokio::spawn(send_again(peer, copy, bridges.clone(), clients.clone()));
        }
    }
}

/// The copies of a handshake initiation (see `resend`), each through the region the peer is
/// bridged through then; none once the peer is no longer relayed.
async fn send_again(peer: Key, initiation: Bytes, bridges: Bridges, clients: Clients) {
    let dst = NodePublic::from_bytes(peer);
    let sent = Instant::now();
    for after in resend::AGAIN_AFTER {
        tokio::time::sleep_until(sent + after).await;
        let Some((_, client)) = route(&peer, &bridges, &clients) else {
            return;
        };
        if let Some((client, _)) = client {
            let _ = client.try_send(dst, initiation.clone());
        }
    }
}

/// The region `peer` is bridged through and that region's client if connected; `None` once
/// the peer has no bridge.
fn route(peer: &Key, bridges: &Bridges, clients: &Clients) -> Option<(u16, Option<RegionClient>)> {
    let region = bridges
        .read()
        .ok()
        .and_then(|b| b.get(peer).map(|(_, r)| *r))?;
    let client = clients.read().ok().and_then(|c| c.get(&region).cloned());
    Some((region, client))
}

/// DERP → kernel for one region: WireGuard packets from peers with a bridge are sent from the
/// bridge to the kernel; the first from a peer without one goes through the actor, which
/// makes the bridge (only for known peers). Disco packets go to the daemon.
#[expect(
    clippy::too_many_arguments,
    reason = "one task's whole context, passed once"
)]
async fn read_region(
    region: u16,
    generation: u64,
    mut events: DerpEvents,
    bridges: Bridges,
    last_used: Arc<std::sync::Mutex<Option<Instant>>>,
    commands: mpsc::Sender<Command>,
    daemon: mpsc::Sender<RelayEvent>,
    wg_port: u16,
) {
    let kernel = SocketAddr::from((Ipv4Addr::LOCALHOST, wg_port));
    let error = loop {
        let event = match events.recv().await {
            Ok(event) => event,
            Err(e) => break e.to_string(),
        };
        let Event::Packet { src, data } = event else {
            continue;
        };
        *lock(&last_used) = Some(Instant::now());
        let peer = *src.as_bytes();
        if data.starts_with(DISCO_MAGIC) {
            // Disco is light; when the daemon is behind, dropping is what UDP would do.
            let _ = daemon.try_send(RelayEvent::Disco {
                peer,
                region,
                packet: data,
            });
            continue;
        }
        let socket = bridges.read().ok().and_then(|b| {
            b.get(&peer)
                .filter(|(_, r)| *r == region)
                .map(|(s, _)| s.clone())
        });
        match socket {
            Some(socket) => {
                let _ = socket.send_to(&data, kernel).await;
            }
            None => {
                let _ = commands.try_send(Command::Inbound { peer, region, data });
            }
        }
    };
    let _ = commands
        .send(Command::Closed {
            region,
            generation,
            error,
        })
        .await;
}
