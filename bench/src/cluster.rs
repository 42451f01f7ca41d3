//! Cluster scenarios (`scripts/cluster-up`): the fail-over of one node's
//! clients after a kill -9, and the live-node count read from `/nodes`.

use crate::chat::{Target, Ws};
use crate::stats::{hist, now_us, Counters, Latency};
use futures_util::{SinkExt, StreamExt};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Clients per 127.0.0.x source address (the ephemeral-port range).
const PER_SOURCE: usize = 15_000;
/// Reconnect delays as the JS client's (`backoffDelay`): before attempt n,
/// uniform in [c/2, c) with c = min(MAX_BACKOFF, FIRST_BACKOFF × 2^n), the
/// first attempt included (a socket that just died).
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(30);
/// One reconnect + sync attempt's bound.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

pub struct FailoverCfg {
    /// The node to kill: its WebSocket address (clients connect here first).
    pub victim: SocketAddr,
    /// Its process id (kill -9).
    pub victim_pid: i32,
    /// Where clients reconnect: the load balancer's `ws://…/ws`.
    pub lb_url: String,
    pub clients: usize,
    /// Connections opened per second before the kill (0: unpaced): a
    /// slow store (the emulator) must keep up with registering them.
    pub connect_rate: u64,
    /// Clients not back by then are reported as lost.
    pub give_up: Duration,
}

#[derive(Debug, serde::Serialize)]
pub struct FailoverReport {
    pub clients: usize,
    pub connect_secs: f64,
    /// From the kill to the client's socket ending.
    pub noticed: Latency,
    /// From the kill to the client's `synced`, through the load balancer.
    pub back: Latency,
    /// From the kill to the last client's `synced`.
    pub all_back_secs: Option<f64>,
    pub not_back: usize,
    /// Reconnect attempts that failed (refused, closed, timed out).
    pub failed_attempts: u64,
    /// Live nodes in `/nodes` before the kill, and when the victim left it.
    pub nodes_before: Option<usize>,
    pub declared_dead_secs: Option<f64>,
}

/// (h) `clients` connect to the victim node; it is killed with SIGKILL;
/// each client reconnects through the load balancer and syncs.
pub async fn failover(
    target: Arc<Target>,
    cfg: FailoverCfg,
    counters: Arc<Counters>,
) -> anyhow::Result<FailoverReport> {
    let users = format!("fo{}-", now_us() / 1000);
    let started = std::time::Instant::now();
    let mut conns = Vec::with_capacity(cfg.clients);
    let mut pending = futures_util::stream::FuturesUnordered::new();
    for i in 0..cfg.clients {
        crate::crowd::pace(started, i, cfg.connect_rate).await;
        let source = Ipv4Addr::new(127, 0, 0, 1 + (i / PER_SOURCE) as u8);
        let (target, user) = (target.clone(), format!("{users}{i}"));
        pending.push(async move {
            let ws = target.connect_from(&user, source, cfg.victim).await?;
            anyhow::Ok((user, ws))
        });
        if pending.len() >= 256 {
            if let Some(r) = pending.next().await {
                conns.push(r?);
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    while let Some(r) = pending.next().await {
        conns.push(r?);
        counters.sent.fetch_add(1, Ordering::Relaxed);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    // Let the node register the last connections in the store.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let http = lb_http(&cfg.lb_url)?;
    let nodes_before = live_nodes(&http).await;
    let failed = Arc::new(AtomicU64::new(0));
    let kill_at = now_us();
    let mut tasks = Vec::with_capacity(conns.len());
    for (n, (user, ws)) in conns.into_iter().enumerate() {
        let (target, lb, failed, counters) = (
            target.clone(),
            cfg.lb_url.clone(),
            failed.clone(),
            counters.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let r =
                tokio::time::timeout(cfg.give_up, client(target, n as u64, user, ws, lb, failed))
                    .await
                    .ok();
            if r.is_some() {
                counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
            r
        }));
    }
    // SAFETY: kill(2) with a pid and a signal number; no memory involved.
    if unsafe { libc::kill(cfg.victim_pid, libc::SIGKILL) } != 0 {
        anyhow::bail!(
            "kill -9 {}: {}",
            cfg.victim_pid,
            std::io::Error::last_os_error()
        );
    }
    eprintln!(
        "failover: {} clients on the victim; killed pid {}",
        cfg.clients, cfg.victim_pid
    );
    let watch = tokio::spawn(async move {
        let before = nodes_before?;
        loop {
            if let Some(n) = live_nodes(&http).await {
                if n < before {
                    return Some(now_us());
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });

    let (mut noticed, mut back) = (hist(), hist());
    let (mut last, mut not_back) = (None::<u64>, 0);
    for t in tasks {
        match t.await? {
            Some((closed, synced)) => {
                let _ = noticed.record(closed.saturating_sub(kill_at).max(1));
                let _ = back.record(synced.saturating_sub(kill_at).max(1));
                last = last.max(Some(synced));
            }
            None => not_back += 1,
        }
    }
    let declared = tokio::time::timeout(Duration::from_secs(30), watch)
        .await
        .ok()
        .and_then(|r| r.ok().flatten());
    let secs = |t: u64| t.saturating_sub(kill_at) as f64 / 1e6;
    Ok(FailoverReport {
        clients: cfg.clients,
        connect_secs,
        noticed: Latency::of(&noticed),
        back: Latency::of(&back),
        all_back_secs: last.map(secs),
        not_back,
        failed_attempts: failed.load(Ordering::Relaxed),
        nodes_before,
        declared_dead_secs: declared.map(secs),
    })
}

/// Waits for the victim's socket to end, then reconnects through the load
/// balancer until a `sync` completes. Returns (ended, synced) in µs.
async fn client(
    target: Arc<Target>,
    n: u64,
    user: String,
    mut ws: Ws,
    lb: String,
    failed: Arc<AtomicU64>,
) -> (u64, u64) {
    while let Some(Ok(m)) = ws.next().await {
        if m.is_close() {
            break;
        }
    }
    let closed = now_us();
    drop(ws);
    let mut ceiling = FIRST_BACKOFF;
    let mut seed = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    loop {
        // xorshift: equal jitter, half the ceiling plus up to the other half.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let ms = ceiling.as_millis() as u64;
        tokio::time::sleep(Duration::from_millis(ms / 2 + seed % (ms / 2 + 1))).await;
        ceiling = (ceiling * 2).min(MAX_BACKOFF);
        match tokio::time::timeout(ATTEMPT_TIMEOUT, reconnect_and_sync(&target, &lb, &user)).await {
            Ok(Ok(())) => return (closed, now_us()),
            _ => {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn reconnect_and_sync(target: &Target, lb: &str, user: &str) -> anyhow::Result<()> {
    let mut ws = target.connect_to(lb, user).await?;
    ws.send(Message::text(r#"{"action":"sync"}"#)).await?;
    while let Some(m) = ws.next().await {
        if let Message::Text(t) = m? {
            let t = t.as_str();
            if t.starts_with(r#"{"type":"synced""#) {
                let _ = ws.close(None).await;
                return Ok(());
            }
            if t.starts_with(r#"{"type":"error""#) {
                anyhow::bail!("sync refused: {t}");
            }
        }
    }
    anyhow::bail!("closed before synced")
}

/// `host:port` of a `ws://host:port/…` URL.
fn lb_http(ws_url: &str) -> anyhow::Result<String> {
    let rest = ws_url
        .strip_prefix("ws://")
        .ok_or_else(|| anyhow::anyhow!("want ws://host:port/ws, got {ws_url}"))?;
    Ok(rest.split('/').next().unwrap_or(rest).to_string())
}

/// The socket address of a `ws://ip:port/…` URL.
pub fn ws_addr(ws_url: &str) -> anyhow::Result<SocketAddr> {
    let hp = lb_http(ws_url)?;
    hp.parse()
        .map_err(|e| anyhow::anyhow!("{ws_url}: want ws://IP:PORT/ws ({e})"))
}

/// Live nodes in the cluster's `/nodes` listing (through the load
/// balancer: any live node answers); `None` when no answer came.
async fn live_nodes(host_port: &str) -> Option<usize> {
    let get = async {
        let mut s = tokio::net::TcpStream::connect(host_port).await?;
        s.write_all(
            format!("GET /nodes HTTP/1.0\r\nHost: {host_port}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
        let mut body = String::new();
        s.read_to_string(&mut body).await?;
        std::io::Result::Ok(body)
    };
    let body = tokio::time::timeout(Duration::from_secs(2), get)
        .await
        .ok()?
        .ok()?;
    if !body.starts_with("HTTP/1.0 200") && !body.starts_with("HTTP/1.1 200") {
        return None;
    }
    Some(body.matches("\"node_id\"").count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_load_balancer_address_comes_from_its_ws_url() {
        assert_eq!(lb_http("ws://127.0.0.1:8000/ws").unwrap(), "127.0.0.1:8000");
        assert!(lb_http("http://x/ws").is_err());
        assert_eq!(ws_addr("ws://127.0.0.1:8101/ws").unwrap().port(), 8101);
    }
}
