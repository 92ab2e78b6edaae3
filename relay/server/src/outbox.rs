//! A client's outgoing queues: control frames, then disco packets, then other packets; bounded,
//! dropping the oldest packet when full (as Go's server drops the queue head), so a slow
//! receiver never blocks the senders' readers.

use std::collections::VecDeque;
use std::sync::Mutex;

use bytes::{Bytes, BytesMut};
use meshgate_derp::Frame;
use meshgate_derp::frame::{self, types};
use meshgate_tailcfg::NodePublic;
use tokio::sync::{Notify, watch};

/// Control frames (PeerGone, Pong, KeepAlive) buffered at most; more are dropped.
const CTRL_DEPTH: usize = 64;

#[derive(Debug)]
struct Queues {
    ctrl: VecDeque<Frame>,
    disco: VecDeque<(NodePublic, Bytes)>,
    data: VecDeque<(NodePublic, Bytes)>,
    closed: bool,
}

/// Outcome of queueing a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Push {
    Queued,
    /// Queued, after dropping the oldest queued packet.
    DroppedOldest,
    /// The receiver is closing: not queued.
    Closed,
}

#[derive(Debug)]
pub struct Outbox {
    q: Mutex<Queues>,
    notify: Notify,
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
            }),
            notify: Notify::new(),
            closed: watch::channel(false).0,
            depth: depth.max(1),
            disco_depth: disco_depth.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        // A poisoned lock only means another task panicked mid-push; the queues are still valid.
        self.q.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn push_packet(&self, src: NodePublic, data: Bytes, disco: bool) -> Push {
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
            queue.pop_front();
            result = Push::DroppedOldest;
        }
        queue.push_back((src, data));
        drop(q);
        self.notify.notify_one();
        result
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
            o.push_packet(k, Bytes::from_static(b"a"), false),
            Push::Queued
        );
        assert_eq!(
            o.push_packet(k, Bytes::from_static(b"b"), false),
            Push::Queued
        );
        assert_eq!(
            o.push_packet(k, Bytes::from_static(b"c"), false),
            Push::DroppedOldest
        );
        assert_eq!(
            o.push_packet(k, Bytes::from_static(b"D"), true),
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
        o.push_packet(k, Bytes::from_static(b"x"), false);
        assert_eq!(o.close(), 1);
        assert_eq!(o.push_packet(k, Bytes::new(), false), Push::Closed);
    }
}
