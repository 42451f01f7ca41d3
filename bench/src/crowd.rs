//! Many connections at once: opening them at a pace, holding them idle
//! (optionally warmed by a `sync` and one message), and the reconnect
//! storm where every client comes back and syncs what it missed.

use crate::chat::{body, Target, Ws};
use crate::stats::{hist, now_us, Counters, Latency};
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

/// Waits until connection `i` may start when opening `per_sec` a second
/// from `start` (0: no pacing).
pub async fn pace(start: Instant, i: usize, per_sec: u64) {
    if per_sec > 0 {
        let at = start + Duration::from_secs_f64(i as f64 / per_sec as f64);
        tokio::time::sleep_until(at.into()).await;
    }
}

/// (c) opens `n` idle connections from several 127.0.0.x sources, `per_sec`
/// a second (0: as fast as they are accepted); returns them.
pub async fn idle(
    target: Arc<Target>,
    n: usize,
    per_sec: u64,
    server: SocketAddr,
    counters: Arc<Counters>,
) -> anyhow::Result<Vec<Ws>> {
    let per_source = 15_000;
    let mut out = Vec::with_capacity(n);
    let mut pending = futures_util::stream::FuturesUnordered::new();
    let start = Instant::now();
    for i in 0..n {
        pace(start, i, per_sec).await;
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i / per_source) as u8);
        let target = target.clone();
        pending.push(async move {
            target
                .connect_from(&format!("idle{i}"), source, server)
                .await
        });
        if pending.len() >= 256 {
            if let Some(r) = pending.next().await {
                out.push(r?);
                counters.acked.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    while let Some(r) = pending.next().await {
        out.push(r?);
        counters.acked.fetch_add(1, Ordering::Relaxed);
    }
    Ok(out)
}

/// Reads frames on `ws` until one whose text contains `marker`.
async fn until(ws: &mut Ws, marker: &str) -> anyhow::Result<()> {
    loop {
        let m = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .context("no frame within 30 s")?
            .context("closed")??;
        if let Message::Text(t) = m {
            if t.as_str().contains(marker) {
                return Ok(());
            }
        }
    }
}

/// `--warm`: every idle connection (user `idle{i}`) does what a client
/// does before it idles: a `sync`, then one message received (from one
/// pipelined sender), 256 connections at a time.
pub async fn warm(target: &Target, conns: &mut [Ws]) -> anyhow::Result<()> {
    for chunk in conns.chunks_mut(256) {
        futures_util::future::try_join_all(chunk.iter_mut().map(|ws| async move {
            ws.send(Message::text(r#"{"action":"sync"}"#)).await?;
            until(ws, r#""type":"synced""#).await
        }))
        .await?;
    }
    let mut src = target.connect("idle-sender").await?;
    let window = 256usize;
    let (mut sent, mut acked) = (0usize, 0usize);
    while acked < conns.len() {
        while sent < conns.len() && sent - acked < window {
            let f = json!({"action":"send","to":format!("user:idle{sent}"),
                "client_msg_id":format!("w{sent}"),"text":body(100)});
            src.send(Message::text(f.to_string())).await?;
            sent += 1;
        }
        until(&mut src, r#""type":"ack""#).await?;
        acked += 1;
    }
    for chunk in conns.chunks_mut(256) {
        futures_util::future::try_join_all(
            chunk.iter_mut().map(|ws| until(ws, r#""type":"message""#)),
        )
        .await?;
    }
    Ok(())
}

pub struct StormReport {
    pub clients: usize,
    pub wall: Duration,
    pub reconnect_sync: Latency,
    pub messages_synced: u64,
}

/// (d) `clients` users each miss `missed` messages, then all reconnect and sync at once.
pub async fn storm(
    target: Arc<Target>,
    clients: usize,
    missed: usize,
    counters: Arc<Counters>,
) -> anyhow::Result<StormReport> {
    // Fill the backlogs from one pipelined sender.
    let mut src = target.connect("storm-source").await?;
    let total = clients * missed;
    let window = 512usize;
    let (mut sent, mut acked) = (0usize, 0usize);
    while acked < total {
        while sent < total && sent - acked < window {
            let to = format!("user:r{}", sent % clients);
            let f =
                json!({"action":"send","to":to,"client_msg_id":format!("s{sent}"),"text":body(64)});
            src.send(Message::text(f.to_string())).await?;
            sent += 1;
        }
        if let Some(m) = src.next().await {
            if let Message::Text(t) = m? {
                if t.as_str().starts_with(r#"{"type":"ack""#) {
                    acked += 1;
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }
    eprintln!("storm: {total} messages waiting for {clients} users; reconnecting all at once");
    let start = Instant::now();
    let limit = Arc::new(Semaphore::new(1000));
    let mut tasks = Vec::new();
    for i in 0..clients {
        let (target, limit, counters) = (target.clone(), limit.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let _p = limit.acquire_owned().await?;
            let t0 = now_us();
            let mut ws = target.connect(&format!("r{i}")).await?;
            ws.send(Message::text(r#"{"action":"sync"}"#)).await?;
            let mut got = 0u64;
            while let Some(m) = ws.next().await {
                if let Message::Text(t) = m? {
                    let t = t.as_str();
                    if t.starts_with(r#"{"type":"message""#) {
                        got += 1;
                        counters.delivered.fetch_add(1, Ordering::Relaxed);
                    } else if t.starts_with(r#"{"type":"synced""#) {
                        break;
                    }
                }
            }
            let _ = ws.close(None).await;
            anyhow::Ok((now_us() - t0, got))
        }));
    }
    let mut h = hist();
    let mut synced = 0;
    for t in tasks {
        let (lat, got) = t.await??;
        let _ = h.record(lat.max(1));
        synced += got;
    }
    Ok(StormReport {
        clients,
        wall: start.elapsed(),
        reconnect_sync: Latency::of(&h),
        messages_synced: synced,
    })
}
