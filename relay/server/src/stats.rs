//! Relay counters (atomics, read as a snapshot).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Destination key not connected here.
    UnknownDest,
    /// The receiver's queue was full; its oldest packet was dropped.
    QueueFull,
    /// The receiver went away with the packet still queued.
    Gone,
    /// The batch holding it failed to write (error or write timeout).
    WriteError,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub(crate) accepted: AtomicU64,
    pub(crate) clients_connected: AtomicU64,
    pub(crate) clients_total: AtomicU64,
    pub(crate) handshake_failures: AtomicU64,
    pub(crate) clients_dropped_bad_frame: AtomicU64,
    pub(crate) write_timeouts: AtomicU64,
    pub(crate) duplicate_replaced: AtomicU64,
    pub(crate) mesh_refused: AtomicU64,
    pub(crate) packets_received: AtomicU64,
    pub(crate) disco_received: AtomicU64,
    pub(crate) packets_forwarded: AtomicU64,
    pub(crate) bytes_forwarded: AtomicU64,
    pub(crate) drop_unknown_dest: AtomicU64,
    pub(crate) drop_queue_full: AtomicU64,
    pub(crate) drop_gone: AtomicU64,
    pub(crate) drop_write_error: AtomicU64,
    pub(crate) peer_gone_sent: AtomicU64,
    pub(crate) notes_preferred: AtomicU64,
    pub(crate) http_requests: AtomicU64,
}

impl Stats {
    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub(crate) fn dropped(&self, reason: DropReason, n: u64) {
        let c = match reason {
            DropReason::UnknownDest => &self.drop_unknown_dest,
            DropReason::QueueFull => &self.drop_queue_full,
            DropReason::Gone => &self.drop_gone,
            DropReason::WriteError => &self.drop_write_error,
        };
        c.fetch_add(n, Relaxed);
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let g = |c: &AtomicU64| c.load(Relaxed);
        StatsSnapshot {
            accepted: g(&self.accepted),
            clients_connected: g(&self.clients_connected),
            clients_total: g(&self.clients_total),
            handshake_failures: g(&self.handshake_failures),
            clients_dropped_bad_frame: g(&self.clients_dropped_bad_frame),
            write_timeouts: g(&self.write_timeouts),
            duplicate_replaced: g(&self.duplicate_replaced),
            mesh_refused: g(&self.mesh_refused),
            packets_received: g(&self.packets_received),
            disco_received: g(&self.disco_received),
            packets_forwarded: g(&self.packets_forwarded),
            bytes_forwarded: g(&self.bytes_forwarded),
            drop_unknown_dest: g(&self.drop_unknown_dest),
            drop_queue_full: g(&self.drop_queue_full),
            drop_gone: g(&self.drop_gone),
            drop_write_error: g(&self.drop_write_error),
            peer_gone_sent: g(&self.peer_gone_sent),
            notes_preferred: g(&self.notes_preferred),
            http_requests: g(&self.http_requests),
        }
    }
}

/// A point-in-time copy of the counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// TCP connections accepted.
    pub accepted: u64,
    /// DERP clients currently registered.
    pub clients_connected: u64,
    /// DERP handshakes completed.
    pub clients_total: u64,
    /// Bad or missing ClientInfo.
    pub handshake_failures: u64,
    /// Clients disconnected for a bad/oversized frame.
    pub clients_dropped_bad_frame: u64,
    /// Clients disconnected because a write took longer than the write timeout.
    pub write_timeouts: u64,
    /// Older connections closed because the same key connected again.
    pub duplicate_replaced: u64,
    /// Clients closed for sending mesh frames (no mesh key configured).
    pub mesh_refused: u64,
    /// SendPacket frames received.
    pub packets_received: u64,
    pub disco_received: u64,
    /// Packets written to a receiver's socket.
    pub packets_forwarded: u64,
    pub bytes_forwarded: u64,
    pub drop_unknown_dest: u64,
    /// Oldest packet dropped because the receiver's queue was full.
    pub drop_queue_full: u64,
    pub drop_gone: u64,
    pub drop_write_error: u64,
    pub peer_gone_sent: u64,
    pub notes_preferred: u64,
    pub http_requests: u64,
}

impl StatsSnapshot {
    /// All packet drops.
    pub fn dropped(&self) -> u64 {
        self.drop_unknown_dest + self.drop_queue_full + self.drop_gone + self.drop_write_error
    }
}
