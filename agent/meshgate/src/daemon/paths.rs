//! Path steering in control mode: which endpoint the kernel uses for each peer. Control's
//! configuration names each peer's first direct endpoint; here it is replaced by the path the
//! [`PathTable`] chose: a direct endpoint proven by disco (or, for a peer without disco, by a
//! WireGuard handshake), or, while a peer is relayed, the loopback endpoint of its [`Relay`]
//! bridge. Disco and STUN use WireGuard's own port through raw sockets ([`SharedPort`]); where
//! those cannot be opened, disco is off and netcheck uses a socket of its own. A netcheck task
//! measures the DERP regions, picks our home region (told to control as NetInfo) and learns our
//! STUN-mapped endpoint; the relay keeps the home region connected.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use meshgate_disco::Message;
use meshgate_paths::Via;
use meshgate_portmap::{Mapping, PortMapper, Protocol};
use meshgate_sharedport::SharedPort;

use meshgate_control::client::Endpoint;
use meshgate_control::netmap::PeerDirectory;
use meshgate_netcheck::Report;
use meshgate_paths::{Path, PathTable, PeerPaths, Relay, RelayConfig, RelayEvent, WgObservation};
use meshgate_tailcfg::{DerpMap, DiscoPublic, EndpointType, NetInfo, NodePrivate, NodePublic};
use meshgate_wg::{Engine, InterfaceConfig};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior};

use crate::api::{NetcheckAnswer, PingAnswer};

use super::disco::{DiscoKeys, PortTransport, message as disco_message, read_port, usable};
use super::netcheck::{NetcheckOut, Transport, netcheck_loop, start_portmap};

type Key = [u8; 32];

/// How often the kernel's counters are read (traffic keeps disco's session active; a plain
/// peer's direct endpoint is on trial).
const OBSERVE_EVERY: Duration = Duration::from_millis(500);
/// How long `meshgate ping` waits for a pong.
const PING_WAIT: Duration = Duration::from_secs(5);

/// One peer's path as `meshgate status` shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Shown {
    /// A direct address, and the latency disco measured on it (none for a peer without disco).
    Direct(SocketAddr, Option<Duration>),
    Relay {
        region: u16,
        code: String,
    },
    Unreachable,
}

/// The DERP side of status.
#[derive(Clone, Debug, Default)]
pub(super) struct DerpShown {
    pub home: Option<u16>,
    /// (region, code, connected)
    pub regions: Vec<(u16, String, bool, Option<String>)>,
}

/// Where a `meshgate ping` wants its answer.
type PingReply = oneshot::Sender<Result<PingAnswer, String>>;

/// Why [`Steering::wake`] woke.
#[derive(Debug)]
pub(super) enum Wake {
    /// Time to read the kernel's handshakes (acted on only while a direct path is on trial).
    Observe,
    Relay(Option<RelayEvent>),
    Home,
    DerpMap,
    /// A disco packet arrived on WireGuard's port.
    DiscoUdp(SocketAddr, Bytes),
    /// The path table's timers are due.
    Timer,
    /// Our STUN-mapped endpoint or the port mapping changed.
    Stun,
}

/// The session's path steering. Dropping it stops the relay and netcheck.
#[derive(Debug)]
pub(super) struct Steering {
    table: PathTable,
    relay: Option<(Relay, Key)>,
    relay_events: Option<mpsc::Receiver<RelayEvent>>,
    wg_port: u16,
    /// WireGuard's fwmark, also on the DERP connections.
    fwmark: u32,
    extra_ca: Option<Vec<u8>>,
    derp_map: watch::Receiver<Option<DerpMap>>,
    home: watch::Receiver<Option<u16>>,
    /// Whether the senders of `derp_map` and `home` still live (a closed watch is always ready).
    derp_map_open: bool,
    home_open: bool,
    netcheck: JoinHandle<()>,
    observe: Interval,
    disco: DiscoKeys,
    port: Option<Arc<SharedPort>>,
    port_reader: Option<JoinHandle<()>>,
    disco_in: Option<mpsc::Receiver<(SocketAddr, Bytes)>>,
    /// Our node key, for the pings we send.
    node_public: Option<NodePublic>,
    /// Our endpoints: the host's addresses (from the daemon) and the STUN-mapped one.
    local: Vec<SocketAddr>,
    stun: watch::Receiver<Option<SocketAddr>>,
    stun_open: bool,
    endpoints_out: watch::Sender<Vec<Endpoint>>,
    /// The last netcheck report and when it was taken.
    report: watch::Receiver<Option<(Report, std::time::SystemTime)>>,
    /// The port mapping of WireGuard's port on the gateway (none without a default gateway).
    portmap: Option<PortMapper>,
    mapping: watch::Receiver<Option<Mapping>>,
    mapping_open: bool,
    /// `meshgate ping`s waiting for their pong.
    pings: BTreeMap<[u8; 12], (PingReply, Instant)>,
    /// Paths written in the last routed configuration, and bridges to close once it is applied.
    routed: BTreeMap<Key, Path>,
    release_after_apply: Vec<Key>,
    peers: PeerDirectory,
}

impl Drop for Steering {
    fn drop(&mut self) {
        self.netcheck.abort();
        if let Some(reader) = &self.port_reader {
            reader.abort();
        }
    }
}

impl Steering {
    /// Opens WireGuard's shared port (WireGuard's `fwmark` on what we send) and starts netcheck
    /// on the DERP maps control publishes on `derp_map`; NetInfo goes to control through
    /// `net_info`, our endpoints through `endpoints_out`.
    pub fn start(
        wg_port: u16,
        fwmark: u32,
        extra_ca: Option<Vec<u8>>,
        derp_map: watch::Receiver<Option<DerpMap>>,
        net_info: watch::Sender<Option<NetInfo>>,
        endpoints_out: watch::Sender<Vec<Endpoint>>,
    ) -> Steering {
        let (home_tx, home) = watch::channel(None);
        let (stun_tx, stun) = watch::channel(None);
        let (report_tx, report) = watch::channel(None);
        let (port, port_reader, disco_in, transport) = match SharedPort::open(wg_port, fwmark) {
            Ok(port) => {
                let port = Arc::new(port);
                let (disco_tx, disco_rx) = mpsc::channel(256);
                let (stun_udp_tx, stun_udp_rx) = mpsc::channel(64);
                let reader = tokio::spawn(read_port(port.clone(), disco_tx, stun_udp_tx));
                let transport = Transport::Port(PortTransport {
                    port: port.clone(),
                    stun: stun_udp_rx,
                });
                (Some(port), Some(reader), Some(disco_rx), transport)
            }
            Err(e) => {
                tracing::warn!(
                    "WireGuard's port {wg_port} cannot be shared ({e}): no disco; peers are tried by handshake"
                );
                (None, None, None, Transport::OwnSocket)
            }
        };
        let (portmap, mapping) = match start_portmap(wg_port) {
            Some((portmap, mapping)) => (Some(portmap), mapping),
            None => (None, watch::channel(None).1),
        };
        let netcheck = tokio::spawn(netcheck_loop(
            transport,
            derp_map.clone(),
            NetcheckOut {
                net_info,
                home: home_tx,
                stun: stun_tx,
                report: report_tx,
            },
        ));
        let mut observe = tokio::time::interval(OBSERVE_EVERY);
        observe.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Steering {
            table: PathTable::new(),
            relay: None,
            relay_events: None,
            wg_port,
            fwmark,
            extra_ca,
            derp_map,
            home,
            derp_map_open: true,
            home_open: true,
            netcheck,
            observe,
            disco: DiscoKeys::generate(),
            port,
            port_reader,
            disco_in,
            node_public: None,
            local: Vec::new(),
            stun,
            stun_open: true,
            endpoints_out,
            report,
            mapping_open: portmap.is_some(),
            portmap,
            mapping,
            pings: BTreeMap::new(),
            routed: BTreeMap::new(),
            release_after_apply: Vec::new(),
            peers: PeerDirectory::new(),
        }
    }

    /// `raw` (control's configuration) with each peer's endpoint set to its chosen path.
    pub async fn route(&mut self, raw: &InterfaceConfig, peers: &PeerDirectory) -> InterfaceConfig {
        if let Some(key) = &raw.device.private_key {
            let node = NodePrivate::from_bytes(*key.as_bytes());
            self.node_public = Some(node.public());
            self.ensure_relay(node).await;
        }
        let now = Instant::now().into_std();
        if *peers != self.peers {
            self.disco.set_peers(peers);
            let disco_works = self.port.is_some();
            self.table.set_peers(
                peers.iter().map(|(key, info)| {
                    let paths = PeerPaths {
                        endpoints: info.endpoints.clone(),
                        home_region: info.home_derp,
                        disco: disco_works && info.disco_key.is_some(),
                    };
                    (*key, paths)
                }),
                now,
            );
            if let Some((relay, _)) = &self.relay {
                relay.set_peers(peers.keys().copied().collect()).await;
            }
            self.peers = peers.clone();
            // Pings to addresses control just gave us for a peer we are still looking for.
            self.send_disco().await;
        }
        let mut config = raw.clone();
        let mut routed = BTreeMap::new();
        for (key, peer) in &mut config.device.peers {
            let Some(path) = self.table.path(key.as_bytes(), now) else {
                continue;
            };
            peer.endpoint = match path {
                Path::Direct(addr) => Some(addr),
                Path::Relay { region } => match &self.relay {
                    Some((relay, _)) => match relay.endpoint(*key.as_bytes(), region).await {
                        Ok(addr) => Some(addr),
                        Err(e) => {
                            tracing::warn!("no relay bridge for a peer: {e}");
                            None
                        }
                    },
                    None => None,
                },
                Path::Unreachable => None,
            };
            if self.routed.get(key.as_bytes()) != Some(&path) {
                tracing::info!(peer = %key, ?path, "path");
            }
            routed.insert(*key.as_bytes(), path);
        }
        self.release_after_apply = self
            .routed
            .iter()
            .filter(|(key, old)| {
                matches!(old, Path::Relay { .. })
                    && !matches!(routed.get(*key), Some(Path::Relay { .. }))
            })
            .map(|(key, _)| *key)
            .collect();
        self.routed = routed;
        config
    }

    /// The routed configuration is in the kernel: bridges of peers that went direct close now
    /// (after, so the kernel's roaming cannot pull a peer back to a bridge).
    pub async fn applied(&mut self) {
        let Some((relay, _)) = &self.relay else {
            return;
        };
        for key in std::mem::take(&mut self.release_after_apply) {
            relay.release(key).await;
        }
    }

    async fn ensure_relay(&mut self, key: NodePrivate) {
        let public = *key.public().as_bytes();
        if self.relay.as_ref().is_some_and(|(_, k)| *k == public) {
            return;
        }
        let (relay, events) = Relay::start(RelayConfig {
            node_key: key,
            wg_port: self.wg_port,
            extra_ca_pem: self.extra_ca.clone(),
            fwmark: self.fwmark,
        });
        if let Some(map) = self.derp_map.borrow().clone() {
            relay.set_derp_map(map).await;
        }
        relay.set_home(*self.home.borrow()).await;
        relay.set_peers(self.peers.keys().copied().collect()).await;
        self.relay = Some((relay, public));
        self.relay_events = Some(events);
    }

    /// The last netcheck report, for `meshgate netcheck`.
    pub fn netcheck(&self) -> Result<NetcheckAnswer, String> {
        let shown = self.report.borrow();
        let Some((report, at)) = shown.as_ref() else {
            return Err(
                "no netcheck report yet (it runs once control sent a DERP map, then every 30 s)"
                    .to_owned(),
            );
        };
        Ok(NetcheckAnswer {
            udp: report.udp,
            ipv4: report.ipv4,
            ipv6: report.ipv6,
            global_v4: report.global_v4.map(|a| a.to_string()),
            global_v6: report.global_v6.map(|a| a.to_string()),
            mapping_varies_by_dest_ip: report.mapping_varies_by_dest_ip,
            preferred_derp: u16::try_from(report.preferred_derp).unwrap_or(0),
            region_latency_ms: report
                .region_latency
                .iter()
                .filter_map(|(id, l)| Some((u16::try_from(*id).ok()?, l.as_secs_f64() * 1e3)))
                .collect(),
            shared_port: self.port.is_some(),
            port_mapping: self.port_mapping(),
            age_secs: at.elapsed().map_or(0, |d| d.as_secs()),
        })
    }

    /// Sends one disco ping to the peer `query` names (name, first label of it, tailnet IP or
    /// public key) on its current path; `reply` gets the pong, or an error after 5 s.
    pub async fn ping(&mut self, query: &str, reply: PingReply) {
        let Some(key) = find_peer(&self.peers, query) else {
            let _ = reply.send(Err(format!(
                "no peer is called {query:?} (name, tailnet IP or key)"
            )));
            return;
        };
        let now = Instant::now();
        match self.table.ping_now(&key, now.into_std()) {
            Ok(tx_id) => {
                self.pings.insert(tx_id, (reply, now));
                self.send_disco().await;
            }
            Err(e) => {
                let _ = reply.send(Err(e.to_owned()));
            }
        }
    }

    /// Answers `meshgate ping`s whose pong came, and those that waited too long.
    fn answer_pings(&mut self) {
        while let Some(result) = self.table.poll_ping_result() {
            let Some((reply, _)) = self.pings.remove(&result.tx_id) else {
                continue;
            };
            let info = self.peers.get(&result.peer);
            let (via, endpoint, region) = match result.via {
                Via::Udp(addr) => ("direct", Some(addr.to_string()), None),
                Via::Derp(region) => ("derp", None, Some(region)),
            };
            let _ = reply.send(Ok(PingAnswer {
                peer: info
                    .map(|i| i.name.clone())
                    .filter(|n| !n.is_empty())
                    .unwrap_or_else(|| meshgate_wg::PublicKey::from_bytes(result.peer).to_string()),
                tailnet_ip: info
                    .and_then(|i| i.tailnet_ips.first())
                    .map(ToString::to_string),
                via: via.to_owned(),
                endpoint,
                region,
                latency_ms: result.latency.as_secs_f64() * 1e3,
            }));
        }
        let now = Instant::now();
        let late: Vec<[u8; 12]> = self
            .pings
            .iter()
            .filter(|(_, (_, sent))| now.duration_since(*sent) >= PING_WAIT)
            .map(|(tx, _)| *tx)
            .collect();
        for tx in late {
            if let Some((reply, _)) = self.pings.remove(&tx) {
                let _ = reply.send(Err(format!(
                    "timeout: no pong within {} s",
                    PING_WAIT.as_secs()
                )));
            }
        }
    }

    /// Deletes the port mapping on the gateway (a clean stop; bounded by the request timeouts).
    pub async fn shutdown(&mut self) {
        if let Some(portmap) = self.portmap.take()
            && let Err(e) = portmap.stop().await
        {
            tracing::debug!("port mapping: {e}");
        }
    }

    /// The port mapping, as `meshgate status` and `netcheck` show it.
    pub fn port_mapping(&self) -> Option<String> {
        let mapping = (*self.mapping.borrow())?;
        let protocol = match mapping.protocol {
            Protocol::NatPmp => "NAT-PMP",
            Protocol::Pcp => "PCP",
            Protocol::Upnp => "UPnP",
        };
        Some(format!(
            "{protocol} {} (lease {} s)",
            mapping.external,
            mapping.lease.as_secs()
        ))
    }

    /// Our disco key, for control.
    pub fn disco_public(&self) -> DiscoPublic {
        self.disco.public()
    }

    /// The host's own endpoints (re-read by the daemon); with the STUN-mapped one they go to
    /// control and into our CallMeMaybes.
    pub fn set_local_endpoints(&mut self, local: Vec<SocketAddr>) {
        self.local = local;
        self.publish_endpoints();
    }

    fn publish_endpoints(&mut self) {
        let mut endpoints: Vec<Endpoint> =
            self.local.iter().copied().map(Endpoint::local).collect();
        if let Some(mapped) = *self.stun.borrow()
            && !self.local.contains(&mapped)
        {
            endpoints.push(Endpoint {
                addr: mapped,
                kind: EndpointType::Stun,
            });
        }
        if let Some(mapping) = *self.mapping.borrow()
            && !endpoints.iter().any(|e| e.addr == mapping.external)
        {
            endpoints.push(Endpoint {
                addr: mapping.external,
                kind: EndpointType::Portmapped,
            });
        }
        self.table.set_local_endpoints(
            endpoints.iter().map(|e| e.addr).collect(),
            Instant::now().into_std(),
        );
        self.endpoints_out.send_if_modified(|current| {
            let changed = *current != endpoints;
            if changed {
                *current = endpoints;
            }
            changed
        });
    }

    /// Waits for something that may change a path. Cancel-safe (it only receives): the
    /// daemon's loop drops it whenever something else happens first, so the work is done by
    /// [`Steering::handle`], outside the race.
    pub async fn wake(&mut self) -> Wake {
        let events = async {
            match &mut self.relay_events {
                Some(events) => events.recv().await,
                None => std::future::pending().await,
            }
        };
        let disco_in = async {
            match &mut self.disco_in {
                Some(rx) => rx.recv().await,
                None => std::future::pending().await,
            }
        };
        let timer = async {
            match self.table.poll_timeout(Instant::now().into_std()) {
                Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = self.observe.tick() => Wake::Observe,
            event = events => Wake::Relay(event),
            datagram = disco_in => match datagram {
                Some((src, packet)) => Wake::DiscoUdp(src, packet),
                None => {
                    self.disco_in = None;
                    Wake::Timer
                }
            },
            () = timer => Wake::Timer,
            changed = self.home.changed(), if self.home_open => {
                self.home_open = changed.is_ok();
                Wake::Home
            }
            changed = self.derp_map.changed(), if self.derp_map_open => {
                self.derp_map_open = changed.is_ok();
                Wake::DerpMap
            }
            changed = self.stun.changed(), if self.stun_open => {
                self.stun_open = changed.is_ok();
                Wake::Stun
            }
            changed = self.mapping.changed(), if self.mapping_open => {
                self.mapping_open = changed.is_ok();
                Wake::Stun
            }
        }
    }

    /// Acts on what [`Steering::wake`] returned; true when the routed configuration is out of
    /// date (route and apply again).
    pub async fn handle(&mut self, wake: Wake, engine: &Engine, interface: &str) -> bool {
        let now = Instant::now().into_std();
        match wake {
            Wake::Observe => {
                if self.peers.is_empty() {
                    return false;
                }
                let Ok(device) = engine.read_device(interface).await else {
                    return false;
                };
                for (key, stats) in &device.stats {
                    let seen = WgObservation {
                        last_handshake: stats.last_handshake,
                        tx_bytes: stats.tx_bytes,
                        rx_bytes: stats.rx_bytes,
                    };
                    tracing::trace!(peer = %key, tx = seen.tx_bytes, rx = seen.rx_bytes, "kernel counters");
                    self.table.observe(key.as_bytes(), seen, now);
                }
            }
            Wake::Relay(Some(RelayEvent::Received { peer, region })) => {
                self.table.relay_received(&peer, region, now);
            }
            Wake::Relay(Some(RelayEvent::Disco {
                peer,
                region,
                packet,
            })) => {
                let Some(message) = self.disco.open_derp(&peer, &packet) else {
                    tracing::debug!(
                        region,
                        "disco: dropped a packet over DERP from a sender that is not that peer"
                    );
                    return false;
                };
                tracing::trace!(region, ?message, "disco in (DERP)");
                let via = Via::Derp(region);
                match message {
                    Message::Ping(ping) => self.table.handle_ping(&peer, via, ping.tx_id, now),
                    Message::Pong(pong) => self.table.handle_pong(&peer, via, pong.tx_id, now),
                    Message::CallMeMaybe(cmm) => {
                        self.table
                            .handle_call_me_maybe(&peer, &usable(&cmm.endpoints), now)
                    }
                    Message::Unsupported(_) => {}
                }
            }
            Wake::Relay(None) => {
                self.relay_events = None;
                return false;
            }
            Wake::DiscoUdp(src, packet) => {
                let Some((peer, message)) = self.disco.open_udp(&packet) else {
                    tracing::debug!(%src, "disco: dropped a packet from an unknown sender");
                    return false;
                };
                tracing::trace!(%src, ?message, "disco in (UDP)");
                let via = Via::Udp(src);
                match message {
                    Message::Ping(ping) => self.table.handle_ping(&peer, via, ping.tx_id, now),
                    Message::Pong(pong) => self.table.handle_pong(&peer, via, pong.tx_id, now),
                    // CallMeMaybe counts only over DERP, where the sender's node key is known.
                    Message::CallMeMaybe(_) | Message::Unsupported(_) => return false,
                }
            }
            Wake::Timer => self.table.handle_timeout(now),
            Wake::Home => {
                let home = *self.home.borrow_and_update();
                self.table.set_home(home);
                if let Some((relay, _)) = &self.relay {
                    relay.set_home(home).await;
                }
            }
            Wake::DerpMap => {
                let map = self.derp_map.borrow_and_update().clone();
                if let (Some(map), Some((relay, _))) = (map, &self.relay) {
                    relay.set_derp_map(map).await;
                }
                return false;
            }
            Wake::Stun => {
                self.stun.borrow_and_update();
                if let Some(mapping) = *self.mapping.borrow_and_update() {
                    tracing::info!(external = %mapping.external, protocol = ?mapping.protocol, "port mapped");
                }
                self.publish_endpoints();
                // CallMeMaybes with the new endpoint to peers still looking for a path.
                self.send_disco().await;
                return false;
            }
        }
        self.send_disco().await;
        self.answer_pings();
        self.out_of_date()
    }

    /// Seals and sends what the path table queued: over the shared port or through DERP.
    async fn send_disco(&mut self) {
        while let Some(transmit) = self.table.poll_transmit() {
            let message = disco_message(transmit.msg, self.node_public);
            let Some(packet) = self.disco.seal(&transmit.peer, &message) else {
                continue;
            };
            tracing::trace!(via = ?transmit.via, ?message, "disco out");
            match transmit.via {
                Via::Udp(dst) => {
                    if let Some(port) = &self.port
                        && let Err(e) = port.send_to(&packet, dst).await
                    {
                        tracing::debug!(%dst, "disco over the shared port: {e}");
                    }
                }
                Via::Derp(region) => {
                    if let Some((relay, _)) = &self.relay {
                        relay
                            .send_disco(transmit.peer, region, Bytes::from(packet))
                            .await;
                    }
                }
            }
        }
    }

    fn out_of_date(&self) -> bool {
        self.table
            .paths(Instant::now().into_std())
            .any(|(key, path)| self.routed.get(key).is_some_and(|old| *old != path))
    }

    /// A peer's path for status.
    pub fn shown(&self, key: &Key) -> Option<Shown> {
        let path = self.routed.get(key)?;
        Some(match *path {
            Path::Direct(addr) => Shown::Direct(addr, self.table.latency(key)),
            Path::Relay { region } => Shown::Relay {
                region,
                code: self.region_code(region),
            },
            Path::Unreachable => Shown::Unreachable,
        })
    }

    pub fn derp(&self) -> DerpShown {
        let Some((relay, _)) = &self.relay else {
            return DerpShown {
                home: *self.home.borrow(),
                regions: Vec::new(),
            };
        };
        let status = relay.status();
        DerpShown {
            home: status.home,
            regions: status
                .regions
                .into_iter()
                .map(|r| (r.id, r.code, r.connected, r.error))
                .collect(),
        }
    }

    fn region_code(&self, region: u16) -> String {
        self.derp_map
            .borrow()
            .as_ref()
            .and_then(|m| m.regions.get(&i32::from(region)))
            .map(|r| r.region_code.clone())
            .unwrap_or_default()
    }
}

/// The peer `query` names: its WireGuard public key, a tailnet IP, its name or the first label
/// of its name.
fn find_peer(peers: &PeerDirectory, query: &str) -> Option<Key> {
    let query = query.trim().trim_end_matches('.');
    if let Ok(key) = query.parse::<meshgate_wg::PublicKey>()
        && peers.contains_key(key.as_bytes())
    {
        return Some(*key.as_bytes());
    }
    if let Ok(ip) = query.parse::<std::net::IpAddr>() {
        return peers
            .iter()
            .find(|(_, info)| info.tailnet_ips.contains(&ip))
            .map(|(key, _)| *key);
    }
    peers
        .iter()
        .find(|(_, info)| info.name == query || info.name.split('.').next() == Some(query))
        .map(|(key, _)| *key)
}
