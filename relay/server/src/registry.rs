//! Who is connected, and packet routing between them.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use meshgate_derp::{Frame, PeerGoneReason};
use meshgate_tailcfg::NodePublic;

use crate::outbox::{Outbox, Push};
use crate::ratelimit::TokenBucket;
use crate::stats::{DropReason, Stats};

/// `"TS💬"`: disco packets go to the priority queue (reference §1.1).
pub const DISCO_MAGIC: &[u8; 6] = b"TS\xf0\x9f\x92\xac";
/// Shortest disco packet: magic, sender key, nonce.
const DISCO_MIN: usize = 6 + 32 + 24;

pub fn looks_like_disco(data: &[u8]) -> bool {
    data.len() >= DISCO_MIN && data.starts_with(DISCO_MAGIC)
}

/// One registered connection.
#[derive(Debug)]
pub struct Slot {
    pub key: NodePublic,
    pub conn_id: u64,
    pub outbox: Arc<Outbox>,
    /// Keys this client sent packets to: they get PeerGone(Disconnected) when it leaves.
    sent_to: Mutex<HashSet<NodePublic>>,
    /// PeerGone(NotHere) replies to this client: 1/s, burst 3 (as Go's server).
    not_here: Mutex<TokenBucket>,
}

#[derive(Debug)]
pub struct Registry {
    clients: RwLock<HashMap<NodePublic, Arc<Slot>>>,
    next_id: AtomicU64,
    pub stats: Arc<Stats>,
}

impl Registry {
    pub fn new(stats: Arc<Stats>) -> Self {
        Registry {
            clients: RwLock::default(),
            next_id: AtomicU64::new(1),
            stats,
        }
    }

    /// Registers a connection for `key`. An older connection of the same key is closed and
    /// replaced ("last one active"); what it sent to is carried over.
    pub fn register(&self, key: NodePublic, outbox: Arc<Outbox>) -> Arc<Slot> {
        let slot = Arc::new(Slot {
            key,
            conn_id: self.next_id.fetch_add(1, Relaxed),
            outbox,
            sent_to: Mutex::default(),
            not_here: Mutex::new(TokenBucket::new(1, 3, Instant::now())),
        });
        let old = self
            .clients
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, slot.clone());
        match old {
            Some(old) => {
                Stats::inc(&self.stats.duplicate_replaced);
                let carried =
                    std::mem::take(&mut *old.sent_to.lock().unwrap_or_else(|p| p.into_inner()));
                slot.sent_to
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(carried);
                let n = old.outbox.close();
                self.stats.dropped(DropReason::Gone, n);
            }
            None => Stats::inc(&self.stats.clients_connected),
        }
        slot
    }

    /// Removes `slot` if it is still the key's active connection, and tells the clients it
    /// sent to that it is gone.
    pub fn unregister(&self, slot: &Arc<Slot>) {
        let n = slot.outbox.close();
        self.stats.dropped(DropReason::Gone, n);
        let removed = {
            let mut map = self.clients.write().unwrap_or_else(|p| p.into_inner());
            match map.get(&slot.key) {
                Some(cur) if cur.conn_id == slot.conn_id => map.remove(&slot.key).is_some(),
                _ => false,
            }
        };
        if !removed {
            return;
        }
        self.stats.clients_connected.fetch_sub(1, Relaxed);
        let peers: Vec<NodePublic> = slot
            .sent_to
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .collect();
        let map = self.clients.read().unwrap_or_else(|p| p.into_inner());
        for p in peers {
            if let Some(dst) = map.get(&p)
                && dst.outbox.push_ctrl(Frame::PeerGone {
                    key: slot.key,
                    reason: PeerGoneReason::Disconnected,
                })
            {
                Stats::inc(&self.stats.peer_gone_sent);
            }
        }
    }

    /// Routes a SendPacket from `src` to `dst`.
    /// Queues `data` from `src` for `dst`; if `dst`'s queue is full, first waits up to `wait`
    /// for room while `dst` is draining (never for disco, which has its own queue). `last_dst`
    /// is the reader's memory of where it sent last, so the set of receivers (for PeerGone) is
    /// touched only when the destination changes.
    pub async fn route(
        &self,
        src: &Slot,
        dst: NodePublic,
        data: Bytes,
        wait: Duration,
        last_dst: &mut Option<NodePublic>,
    ) {
        Stats::inc(&self.stats.packets_received);
        let disco = looks_like_disco(&data);
        if disco {
            Stats::inc(&self.stats.disco_received);
        }
        let target = self
            .clients
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&dst)
            .cloned();
        let Some(target) = target else {
            self.stats.dropped(DropReason::UnknownDest, 1);
            // Only disco senders learn that the peer is not here, rate-limited.
            if disco
                && src
                    .not_here
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .allow(Instant::now())
                && src.outbox.push_ctrl(Frame::PeerGone {
                    key: dst,
                    reason: PeerGoneReason::NotHere,
                })
            {
                Stats::inc(&self.stats.peer_gone_sent);
            }
            return;
        };
        let may_wait = !disco && !wait.is_zero();
        let mut pushed = target.outbox.push_packet(src.key, data, disco, !may_wait);
        if let Push::Full(data) = pushed {
            target.outbox.wait_for_room(wait).await;
            pushed = target.outbox.push_packet(src.key, data, disco, true);
        }
        match pushed {
            Push::Queued => {}
            Push::DroppedOldest | Push::Full(_) => self.stats.dropped(DropReason::QueueFull, 1),
            Push::Closed => self.stats.dropped(DropReason::Gone, 1),
        }
        if *last_dst != Some(dst) {
            src.sent_to
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(dst);
            *last_dst = Some(dst);
        }
    }
}
