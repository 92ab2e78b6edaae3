//! A client's outgoing queues: control frames, then disco packets, then other packets; bounded,
//! dropping the oldest packet when full (as Go's server drops the queue head). A sender may
//! first wait a moment for room ([`Outbox::wait_for_room`]) while the receiver is draining, so
//! a fast sender is slowed to the receiver's pace instead of losing most of its packets; a
//! receiver that has stopped draining never holds a sender up.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use meshgate_derp::Frame;
use meshgate_derp::frame::{self, types};
use meshgate_tailcfg::NodePublic;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

/// A receiver that drained nothing for this long is stalled: senders do not wait for it.
const STALLED_AFTER: Duration = Duration::from_millis(100);

/// Control frames (PeerGone, Pong, KeepAlive) buffered at most; more are dropped.
const CTRL_DEPTH: usize = 64;

#[derive(Debug)]
struct Queues {
    ctrl: VecDeque<Frame>,
    disco: VecDeque<(NodePublic, Bytes)>,
    data: VecDeque<(NodePublic, Bytes)>,
    closed: bool,
    /// When the writer last took packets out (or the outbox was made).
    last_drain: Instant,
}

/// Outcome of queueing a packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// The queue is full and dropping was not allowed: here is the packet back.
    Full(Bytes),
    /// Queued, after dropping the oldest queued packet.
    DroppedOldest,
    /// The receiver is closing: not queued.
    Closed,
}

#[derive(Debug)]
pub struct Outbox {
    q: Mutex<Queues>,
    notify: Notify,
    /// Woken when the writer made room.
    room: Notify,
    closed: watch::Sender<bool>,
    depth: usize,
    disco_depth: usize,
}

/// What one `take_batch` wrote into the buffer.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub packets: u64,
    pub bytes: u64,
}

impl Outbox {
    pub fn new(depth: usize, disco_depth: usize) -> Self {
        Outbox {
            q: Mutex::new(Queues {
                ctrl: VecDeque::new(),
                disco: VecDeque::new(),
                data: VecDeque::new(),
                closed: false,
                last_drain: Instant::now(),
            }),
            notify: Notify::new(),
            room: Notify::new(),
            closed: watch::channel(false).0,
            depth: depth.max(1),
            disco_depth: disco_depth.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        // A poisoned lock only means another task panicked mid-push; the queues are still valid.
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a packet; when the queue is full, drops the oldest if `may_drop`, else hands
    /// the packet back ([`Push::Full`]).
    pub fn push_packet(&self, src: NodePublic, data: Bytes, disco: bool, may_drop: bool) -> Push {
        let mut q = self.lock();
        if q.closed {
            return Push::Closed;
        }
        let (queue, depth) = if disco {
            (&mut q.disco, self.disco_depth)
        } else {
            (&mut q.data, self.depth)
        };
        let mut result = Push::Queued;
        if queue.len() >= depth {
            if !may_drop {
                return Push::Full(data);
            }
            queue.pop_front();
            result = Push::DroppedOldest;
        }
        queue.push_back((src, data));
        drop(q);
        self.notify.notify_one();
        result
    }

    /// Waits up to `limit` for room in the packet queue, but only while the receiver is
    /// draining (it took packets within the last 100 ms): a stalled receiver's packets are
    /// dropped at once instead.
    pub async fn wait_for_room(&self, limit: Duration) {
        let deadline = Instant::now() + limit;
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            {
                let q = self.lock();
                let full = !q.closed && q.data.len() >= self.depth;
                let stalled = q.last_drain.elapsed() >= STALLED_AFTER;
                if !full || stalled {
                    return;
                }
            }
            if tokio::time::timeout_at(deadline, room).await.is_err() {
                return;
            }
        }
    }

    /// Queues a control frame; false if closed or the control queue is full.
    pub fn push_ctrl(&self, f: Frame) -> bool {
        let mut q = self.lock();
        if q.closed || q.ctrl.len() >= CTRL_DEPTH {
            return false;
        }
        q.ctrl.push_back(f);
        drop(q);
        self.notify.notify_one();
        true
    }

    /// Moves queued frames into `out` (control first, then disco, then packets) until about
    /// `max` bytes.
    pub fn take_batch(&self, out: &mut BytesMut, max: usize) -> Batch {
        let mut q = self.lock();
        let mut b = Batch::default();
        while out.len() < max
            && let Some(f) = q.ctrl.pop_front()
        {
            frame::encode(&f, out);
        }
        while out.len() < max {
            let Some((src, data)) = q.disco.pop_front().or_else(|| q.data.pop_front()) else {
                break;
            };
            frame::encode_packet_header(out, types::RECV_PACKET, &src, data.len());
            out.extend_from_slice(&data);
            b.packets += 1;
            b.bytes += data.len() as u64;
        }
        if b.packets > 0 {
            q.last_drain = Instant::now();
            drop(q);
            self.room.notify_waiters();
        }
        b
    }

    /// Closes the outbox; returns how many queued packets were discarded.
    pub fn close(&self) -> u64 {
        let mut q = self.lock();
        let n = (q.disco.len() + q.data.len()) as u64;
        q.closed = true;
        q.ctrl.clear();
        q.disco.clear();
        q.data.clear();
        drop(q);
        let _ = self.closed.send(true);
        self.notify.notify_one();
        self.room.notify_waiters();
        n
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Waits until something is queued (or the outbox is closed).
    pub async fn wait(&self) {
        self.notify.notified().await;
    }

    /// Resolves once the outbox is closed.
    pub async fn closed(&self) {
        let mut rx = self.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_oldest_and_orders_ctrl_disco_data() {
        let o = Outbox::new(2, 1);
        let k = NodePublic::from_bytes([1; 32]);
        assert_eq!(
            o.push_packet(k, Bytes::from_static(b"a"), false, true),
            Push::Queued
        );
        assert_eq!(
            o.push_packet(k, Bytes::from_static(b"b"), false, true),
            Push::Queued
        );
        assert_eq!(
            o.push_packet(k, Bytes::from_static(b"c"), false, true),
            Push::DroppedOldest
        );
        assert_eq!(
            o.push_packet(k, Bytes::from_static(b"D"), true, true),
            Push::Queued
        );
        assert!(o.push_ctrl(Frame::KeepAlive));
        let mut out = BytesMut::new();
        let b = o.take_batch(&mut out, 1 << 20);
        assert_eq!(b.packets, 3);
        let mut got = Vec::new();
        while let Some(f) = frame::decode(&mut out, 1 << 20).unwrap() {
            got.push(f);
        }
        let datas: Vec<_> = got
            .iter()
            .filter_map(|f| match f {
                Frame::RecvPacket { data, .. } => Some(data.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(got[0], Frame::KeepAlive);
        assert_eq!(
            datas,
            vec![
                Bytes::from_static(b"D"),
                Bytes::from_static(b"b"),
                Bytes::from_static(b"c")
            ]
        );
        o.push_packet(k, Bytes::from_static(b"x"), false, true);
        assert_eq!(o.close(), 1);
        assert_eq!(o.push_packet(k, Bytes::new(), false, true), Push::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_hands_the_packet_back_and_room_is_waited_for_only_while_draining() {
        let k = NodePublic::from_bytes([7; 32]);
        let o = Outbox::new(1, 1);
        assert_eq!(
            o.push_packet(k, Bytes::from_static(b"a"), false, false),
            Push::Queued
        );
        assert_eq!(
            o.push_packet(k, Bytes::from_static(b"b"), false, false),
            Push::Full(Bytes::from_static(b"b"))
        );
        // Draining: the writer takes the packet while a sender waits, which wakes it early.
        let mut out = BytesMut::new();
        let started = Instant::now();
        let (_, batch) = tokio::join!(o.wait_for_room(Duration::from_secs(1)), async {
            tokio::time::sleep(Duration::from_millis(3)).await;
            o.take_batch(&mut out, 1 << 16)
        });
        assert_eq!(batch.packets, 1);
        assert!(started.elapsed() < Duration::from_millis(10));
        // Stalled (nothing drained for 100 ms): no wait at all.
        assert_eq!(
            o.push_packet(k, Bytes::from_static(b"c"), false, false),
            Push::Queued
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        let started = Instant::now();
        o.wait_for_room(Duration::from_secs(1)).await;
        assert!(started.elapsed() < Duration::from_millis(1));
    }
}
