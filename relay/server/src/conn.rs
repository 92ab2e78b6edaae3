//! One client connection: HTTP head, upgrade, handshake, then a reader loop and a writer task.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use meshgate_derp::frame::{self, SERVER_MAX_CLIENT_INFO, SERVER_MAX_FRAME};
use meshgate_derp::handshake::{self, ServerInfo};
use meshgate_derp::{Frame, PROTOCOL_VERSION};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, WriteHalf};
use tokio::time::{sleep, sleep_until, timeout};

use crate::Shared;
use crate::http::{self, Route};
use crate::outbox::Outbox;
use crate::ratelimit::TokenBucket;
use crate::registry::Slot;
use crate::stats::{DropReason, Stats};

/// Largest batch handed to one write.
const WRITE_BATCH: usize = 64 << 10;

async fn fill(
    rd: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
) -> Result<(), meshgate_derp::Error> {
    if buf.capacity() - buf.len() < 2048 {
        buf.reserve(64 << 10);
    }
    match rd.read_buf(buf).await? {
        0 => Err(meshgate_derp::Error::Closed),
        _ => Ok(()),
    }
}

/// Serves one accepted connection to the end. Errors only affect this connection.
pub async fn serve_conn<S>(shared: Arc<Shared>, mut stream: S)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let cfg = &shared.config;
    let mut buf = BytesMut::with_capacity(2048);
    let head = timeout(cfg.handshake_timeout, async {
        loop {
            match http::parse_head(&buf) {
                Ok(Some(r)) => return Ok(r),
                Ok(None) => {}
                Err(http::BadRequest) => return Err(true),
            }
            fill(&mut stream, &mut buf).await.map_err(|_| false)?;
        }
    })
    .await;
    Stats::inc(&shared.stats.http_requests);
    let (n, req) = match head {
        Ok(Ok(r)) => r,
        Ok(Err(true)) => {
            let _ = timeout(cfg.write_timeout, stream.write_all(&http::bad_request())).await;
            let _ = stream.shutdown().await;
            return;
        }
        _ => return,
    };
    let _ = buf.split_to(n);
    let resp = match http::route(&req, &shared.public) {
        Route::Reply(b) => {
            let _ = timeout(cfg.write_timeout, async {
                stream.write_all(&b).await?;
                stream.shutdown().await
            })
            .await;
            return;
        }
        Route::Upgrade(b) => b,
    };
    let mut out = BytesMut::with_capacity(512);
    out.extend_from_slice(&resp);
    frame::encode(&Frame::ServerKey { key: shared.public }, &mut out);
    let hs = timeout(cfg.handshake_timeout, async {
        stream.write_all(&out).await?;
        stream.flush().await?;
        let (client, sealed) = loop {
            if let Some(f) = frame::decode(&mut buf, SERVER_MAX_CLIENT_INFO)? {
                match f {
                    Frame::ClientInfo { key, sealed } => break (key, sealed),
                    _ => return Err(meshgate_derp::Error::UnexpectedFrame("expected ClientInfo")),
                }
            }
            fill(&mut stream, &mut buf).await?;
        };
        let _info = handshake::open_client_info(&shared.private, &client, &sealed)?;
        let si = ServerInfo {
            version: PROTOCOL_VERSION,
            token_bucket_bytes_per_second: cfg.rate_limit.map_or(0, |r| r.bytes_per_sec),
            token_bucket_bytes_burst: cfg.rate_limit.map_or(0, |r| burst(r.burst_bytes)),
        };
        out.clear();
        frame::encode(
            &handshake::server_info_frame(&shared.private, &client, &si),
            &mut out,
        );
        stream.write_all(&out).await?;
        stream.flush().await?;
        Ok(client)
    })
    .await;
    let client = match hs {
        Ok(Ok(k)) => k,
        Ok(Err(e)) => {
            Stats::inc(&shared.stats.handshake_failures);
            tracing::debug!("DERP handshake refused: {e}");
            return;
        }
        Err(_) => {
            Stats::inc(&shared.stats.handshake_failures);
            return;
        }
    };
    Stats::inc(&shared.stats.clients_total);
    let outbox = Arc::new(Outbox::new(cfg.queue_depth, cfg.disco_queue_depth));
    let slot = shared.registry.register(client, outbox.clone());
    let (mut rd, wr) = tokio::io::split(stream);
    let writer = tokio::spawn(writer(shared.clone(), outbox.clone(), wr));
    let result = tokio::select! {
        r = reader(&shared, &slot, &mut rd, buf) => r,
        _ = outbox.closed() => Ok(()),
    };
    if let Err(e) = result {
        if !matches!(
            e,
            meshgate_derp::Error::Closed | meshgate_derp::Error::Io(_)
        ) {
            Stats::inc(&shared.stats.clients_dropped_bad_frame);
        }
        tracing::debug!(client = %client, "DERP client dropped: {e}");
    }
    shared.registry.unregister(&slot);
    let _ = writer.await;
}

fn burst(b: u64) -> u64 {
    b.max(SERVER_MAX_FRAME as u64)
}

async fn reader(
    shared: &Shared,
    slot: &Slot,
    rd: &mut (impl AsyncRead + Unpin),
    mut buf: BytesMut,
) -> Result<(), meshgate_derp::Error> {
    let mut bucket = shared
        .config
        .rate_limit
        .map(|r| TokenBucket::new(r.bytes_per_sec, burst(r.burst_bytes), Instant::now()));
    let mut last_dst = None;
    loop {
        let Some(f) = frame::decode(&mut buf, SERVER_MAX_FRAME)? else {
            fill(rd, &mut buf).await?;
            continue;
        };
        match f {
            Frame::SendPacket { dst, data } => {
                if let Some(b) = bucket.as_mut() {
                    let wait = b.take(data.len() as u64, Instant::now());
                    if !wait.is_zero() {
                        sleep(wait).await;
                    }
                }
                shared
                    .registry
                    .route(slot, dst, data, shared.config.backpressure, &mut last_dst)
                    .await;
            }
            Frame::Ping(d) => {
                slot.outbox.push_ctrl(Frame::Pong(d));
            }
            Frame::NotePreferred { .. } => Stats::inc(&shared.stats.notes_preferred),
            Frame::Pong(_) | Frame::Unknown { .. } => {}
            Frame::ForwardPacket { .. } | Frame::WatchConns | Frame::ClosePeer { .. } => {
                Stats::inc(&shared.stats.mesh_refused);
                return Err(meshgate_derp::Error::UnexpectedFrame(
                    "mesh frame without a mesh key",
                ));
            }
            _ => {
                return Err(meshgate_derp::Error::UnexpectedFrame(
                    "server-to-client frame from a client",
                ));
            }
        }
    }
}

/// KeepAlive period plus up to 1/12 of it as jitter (60 s + 0–5 s by default), drawn from
/// std's randomly keyed hasher so no RNG dependency is needed.
fn keepalive_after(period: Duration, salt: u64) -> Duration {
    let r = RandomState::new().hash_one(salt);
    let span = (period.as_millis() / 12).max(1) as u64;
    period + Duration::from_millis(r % span)
}

async fn writer<S: AsyncWrite>(shared: Arc<Shared>, outbox: Arc<Outbox>, mut wr: WriteHalf<S>) {
    let cfg = &shared.config;
    let stats = &shared.stats;
    let mut out = BytesMut::with_capacity(16 << 10);
    let mut next_keepalive = tokio::time::Instant::now() + keepalive_after(cfg.keepalive, 0);
    loop {
        if outbox.is_closed() {
            break;
        }
        let batch = outbox.take_batch(&mut out, WRITE_BATCH);
        if out.is_empty() {
            tokio::select! {
                _ = outbox.wait() => {}
                _ = sleep_until(next_keepalive) => {
                    frame::encode(&Frame::KeepAlive, &mut out);
                    next_keepalive = tokio::time::Instant::now() + keepalive_after(cfg.keepalive, 1);
                }
            }
            if out.is_empty() {
                continue;
            }
        }
        let write = async {
            wr.write_all(&out).await?;
            wr.flush().await
        };
        match timeout(cfg.write_timeout, write).await {
            Ok(Ok(())) => {
                stats
                    .packets_forwarded
                    .fetch_add(batch.packets, std::sync::atomic::Ordering::Relaxed);
                stats
                    .bytes_forwarded
                    .fetch_add(batch.bytes, std::sync::atomic::Ordering::Relaxed);
                out.clear();
            }
            Ok(Err(_)) => {
                stats.dropped(DropReason::WriteError, batch.packets);
                break;
            }
            Err(_) => {
                Stats::inc(&stats.write_timeouts);
                stats.dropped(DropReason::WriteError, batch.packets);
                break;
            }
        }
    }
    // Closing the outbox ends the reader too (and is a no-op if it is already closed).
    let n = outbox.close();
    stats.dropped(DropReason::Gone, n);
    let _ = wr.shutdown().await;
}
