//! Scenarios against the chat server over real WebSockets.

use crate::stats::{hist, now_us, ConnStats, Counters, Latency};
use anyhow::Context;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{HashMap, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

pub struct Target {
    pub url: String,
    pub auth: chat_core::auth::Authenticator,
    /// `TCP_NODELAY` on the bench's sockets (off only with `--nagle`).
    pub nodelay: bool,
    /// Where the second connection of each direct pair connects, when not
    /// `url` (`--peer-url`: another cluster node).
    pub peer_url: Option<String>,
}

impl Target {
    pub async fn connect(&self, user: &str) -> anyhow::Result<Ws> {
        self.connect_to(&self.url, user).await
    }

    /// Connects `user` to `url` (one of a cluster's nodes).
    pub async fn connect_to(&self, url: &str, user: &str) -> anyhow::Result<Ws> {
        let token = self.auth.mint(user, 3600)?;
        // TCP_NODELAY: small pipelined frames must not wait for the peer's
        // delayed ACK (Nagle); the third argument is `disable_nagle`.
        let (ws, _) = tokio_tungstenite::connect_async_with_config(
            format!("{url}?token={token}"),
            None,
            self.nodelay,
        )
        .await?;
        Ok(ws)
    }

    /// Connects from a given local address (many 127.0.0.x sources lift the
    /// ephemeral-port limit for idle-connection runs).
    pub async fn connect_from(
        &self,
        user: &str,
        source: Ipv4Addr,
        server: SocketAddr,
    ) -> anyhow::Result<Ws> {
        let token = self.auth.mint(user, 3600)?;
        let sock = tokio::net::TcpSocket::new_v4()?;
        // Choose the local port at connect time, per destination: the
        // ephemeral range then limits each (source, server) pair, not the host.
        {
            use std::os::fd::AsRawFd;
            let one: libc::c_int = 1;
            // SAFETY: setsockopt on our own socket with a correctly sized int.
            unsafe {
                libc::setsockopt(
                    sock.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_BIND_ADDRESS_NO_PORT,
                    &one as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                );
            }
        }
        sock.bind(SocketAddr::new(source.into(), 0))?;
        let stream = sock.connect(server).await?;
        stream.set_nodelay(self.nodelay)?;
        let (ws, _) = tokio_tungstenite::client_async(
            format!("{}?token={token}", self.url),
            tokio_tungstenite::MaybeTlsStream::Plain(stream),
        )
        .await?;
        Ok(ws)
    }
}

/// The `"text"` of a frame, by a cheap scan (the bench must not be the bottleneck).
fn text_field(frame: &str) -> Option<&str> {
    let i = frame.find("\"text\":\"")? + 8;
    let rest = &frame[i..];
    Some(&rest[..rest.find('"')?])
}

/// The send timestamp a bench message carries (`<micros>|padding`).
fn stamp(frame: &str) -> Option<u64> {
    text_field(frame)?.split('|').next()?.parse().ok()
}

pub(crate) fn body(bytes: usize) -> String {
    let t = now_us();
    let mut s = format!("{t}|");
    while s.len() < bytes {
        s.push('x');
    }
    s
}

pub struct DirectCfg {
    pub connections: usize,
    pub duration: Duration,
    /// Messages per second in all; 0 = flat out.
    pub rate: u64,
    /// Sends in flight per connection when flat out.
    pub window: usize,
    pub text_bytes: usize,
    /// Prefix of the user names (`{users}0`, `{users}1`, …): runs against
    /// one server use a fresh one each, so no run meets another's backlog.
    pub users: String,
    /// The server's pid: its CPU time is then read at the start and at the
    /// end of the load (not while connecting or draining).
    pub cpu_pid: Option<u32>,
}

/// (a) 1:1 messages between pairs of connections. Returns what the
/// connections saw and, with `cfg.cpu_pid`, the server's CPU seconds
/// during the load (from the start to the deadline).
pub async fn direct(
    target: Arc<Target>,
    cfg: &DirectCfg,
    counters: Arc<Counters>,
) -> anyhow::Result<(ConnStats, Option<f64>)> {
    let n = cfg.connections.max(2) & !1;
    let mut conns = Vec::with_capacity(n);
    for i in 0..n {
        let url = match (&target.peer_url, i % 2) {
            (Some(peer), 1) => peer.as_str(),
            _ => target.url.as_str(),
        };
        conns.push(
            target
                .connect_to(url, &format!("{}{i}", cfg.users))
                .await
                .with_context(|| format!("connection {i}"))?,
        );
    }
    let cpu_start = cfg.cpu_pid.map(crate::procstat::sample);
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let cpu_end = cfg.cpu_pid.map(|pid| {
        tokio::spawn(async move {
            tokio::time::sleep_until(deadline.into()).await;
            crate::procstat::sample(pid)
        })
    });
    let per_conn_interval =
        (cfg.rate > 0).then(|| Duration::from_secs_f64(n as f64 / cfg.rate as f64));
    let start = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for (i, ws) in conns.into_iter().enumerate() {
        // Each connection's sends are offset by i/n of the interval, so the
        // offered rate arrives spread evenly. (Unstaggered, all n sent at
        // the same instant once per interval: bursts of n, whose last
        // waited for the others; docs/benchmarks.md, "The latency curve".)
        let pacing = per_conn_interval.map(|iv| (start + iv.mul_f64(i as f64 / n as f64), iv));
        let peer = format!("user:{}{}", cfg.users, i ^ 1);
        let counters = counters.clone();
        let (window, text_bytes) = (cfg.window, cfg.text_bytes);
        tasks.push(tokio::spawn(async move {
            run_pair_conn(ws, i, peer, deadline, pacing, window, text_bytes, counters).await
        }));
    }
    let mut total = ConnStats::default();
    for t in tasks {
        let s = t.await??;
        total.merge(&s)?;
    }
    let window_cpu = match (cpu_start, cpu_end) {
        (Some(a), Some(end)) => Some(end.await?.cpu_secs - a.cpu_secs),
        _ => None,
    };
    Ok((total, window_cpu))
}

#[allow(clippy::too_many_arguments)]
async fn run_pair_conn(
    ws: Ws,
    i: usize,
    peer: String,
    deadline: Instant,
    pacing: Option<(tokio::time::Instant, Duration)>,
    window: usize,
    text_bytes: usize,
    counters: Arc<Counters>,
) -> anyhow::Result<ConnStats> {
    let (mut sink, mut stream) = ws.split();
    let permits = Arc::new(Semaphore::new(if pacing.is_some() {
        1 << 20
    } else {
        window.max(1)
    }));
    let sent_at: Arc<Mutex<VecDeque<u64>>> = Arc::new(Mutex::new(VecDeque::new()));
    let sent = Arc::new(AtomicU64::new(0));
    let writer = {
        let (permits, sent_at, sent, counters) = (
            permits.clone(),
            sent_at.clone(),
            sent.clone(),
            counters.clone(),
        );
        tokio::spawn(async move {
            let mut tick = pacing.map(|(first, every)| tokio::time::interval_at(first, every));
            let mut seq = 0u64;
            while Instant::now() < deadline {
                if let Some(t) = tick.as_mut() {
                    t.tick().await;
                }
                let Ok(p) = tokio::time::timeout_at(deadline.into(), permits.acquire()).await
                else {
                    break;
                };
                p?.forget();
                seq += 1;
                let frame = json!({"action":"send","to":peer,"client_msg_id":format!("{i}-{seq}"),"text":body(text_bytes)});
                sent_at
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back(now_us());
                if sink.send(Message::text(frame.to_string())).await.is_err() {
                    break;
                }
                sent.fetch_add(1, Ordering::Relaxed);
                counters.sent.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(sink)
        })
    };
    let mut stats = ConnStats::default();
    let mut acked = 0u64;
    let drain_until = deadline + Duration::from_secs(5);
    loop {
        let wait = if Instant::now() < deadline {
            deadline + Duration::from_secs(1)
        } else {
            Instant::now() + Duration::from_millis(300)
        };
        let next = tokio::time::timeout_at(wait.min(drain_until).into(), stream.next()).await;
        let msg = match next {
            Ok(Some(Ok(m))) => m,
            Ok(_) => break,
            Err(_) => {
                if Instant::now() >= deadline
                    && (acked >= sent.load(Ordering::Relaxed) || Instant::now() >= drain_until)
                {
                    break;
                }
                continue;
            }
        };
        let Message::Text(t) = msg else { continue };
        let t = t.as_str();
        if t.starts_with(r#"{"type":"ack""#) {
            let at = sent_at
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            if let Some(at) = at {
                let _ = stats.ack.record(now_us().saturating_sub(at).max(1));
            }
            if Instant::now() <= deadline {
                stats.acked_in_window += 1;
            }
            acked += 1;
            counters.acked.fetch_add(1, Ordering::Relaxed);
            permits.add_permits(1);
        } else if t.starts_with(r#"{"type":"message""#) {
            if let Some(at) = stamp(t) {
                let _ = stats.deliver.record(now_us().saturating_sub(at).max(1));
            }
            if Instant::now() <= deadline {
                stats.delivered_in_window += 1;
            }
            counters.delivered.fetch_add(1, Ordering::Relaxed);
        } else if t.starts_with(r#"{"type":"error""#) {
            counters.errors.fetch_add(1, Ordering::Relaxed);
            permits.add_permits(1);
        }
    }
    if let Ok(Ok(mut sink)) = writer.await {
        let _ = sink.close().await;
    }
    Ok(stats)
}

pub struct GroupReport {
    pub per_delivery: Latency,
    /// Per message, the latency to its last member.
    pub to_all_members: Latency,
    pub messages: u64,
    pub incomplete: u64,
    /// Acks the sender received for its sends.
    pub acked: u64,
    /// Error frames the sender received.
    pub errors: u64,
    /// Deliveries seen, all members together.
    pub deliveries: u64,
}

/// (b) one member sends to a group at `rate`; every member records latency.
pub async fn group(
    target: Arc<Target>,
    members: usize,
    rate: u64,
    duration: Duration,
    text_bytes: usize,
    counters: Arc<Counters>,
) -> anyhow::Result<GroupReport> {
    let members = members.clamp(2, 100);
    let mut socks = Vec::new();
    for i in 0..members {
        socks.push(target.connect(&format!("g{i}")).await?);
    }
    let names: Vec<String> = (1..members).map(|i| format!("g{i}")).collect();
    socks[0]
        .send(Message::text(
            json!({"action":"createGroup","name":"bench","members":names}).to_string(),
        ))
        .await?;
    let mut gid = String::new();
    while let Some(m) = socks[0].next().await {
        if let Message::Text(t) = m? {
            let v: Value = serde_json::from_str(t.as_str())?;
            if v["type"] == "group" {
                gid = v["group_id"].as_str().unwrap_or_default().to_string();
                break;
            }
        }
    }
    // Everyone has the group frame before timing starts.
    let arrivals: Arc<Mutex<HashMap<u64, (u32, u64)>>> = Arc::new(Mutex::new(HashMap::new()));
    let deadline = Instant::now() + duration;
    let mut readers = Vec::new();
    // The sender reads its acks (and errors) on the side, for the counters.
    let (mut sender, mut sender_in) = socks.remove(0).split();
    let sender_acks = {
        let counters = counters.clone();
        tokio::spawn(async move {
            let until = deadline + Duration::from_secs(3);
            let (mut acked, mut errors) = (0u64, 0u64);
            while let Ok(Some(Ok(m))) =
                tokio::time::timeout_at(until.into(), sender_in.next()).await
            {
                let Message::Text(t) = m else { continue };
                let t = t.as_str();
                if t.starts_with(r#"{"type":"ack""#) {
                    acked += 1;
                    counters.acked.fetch_add(1, Ordering::Relaxed);
                } else if t.starts_with(r#"{"type":"error""#) {
                    errors += 1;
                    counters.errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            (acked, errors)
        })
    };
    for mut ws in socks {
        // As every client does on connect: a receiver's live messages wait
        // for its first `sync` (or the server's --live-hold-ms), which a
        // member that only listens would otherwise pay on its first ones.
        ws.send(Message::text(r#"{"action":"sync"}"#)).await?;
        let (arrivals, counters) = (arrivals.clone(), counters.clone());
        readers.push(tokio::spawn(async move {
            let mut h = hist();
            let until = deadline + Duration::from_secs(3);
            while let Ok(Some(Ok(m))) = tokio::time::timeout_at(until.into(), ws.next()).await {
                let Message::Text(t) = m else { continue };
                let t = t.as_str();
                if !t.starts_with(r#"{"type":"message""#) {
                    continue;
                }
                let (Some(at), Some(id)) = (stamp(t), message_id(t)) else {
                    continue;
                };
                let lat = now_us().saturating_sub(at).max(1);
                let _ = h.record(lat);
                counters.delivered.fetch_add(1, Ordering::Relaxed);
                let mut a = arrivals.lock().unwrap_or_else(|p| p.into_inner());
                let e = a.entry(id).or_insert((0, 0));
                e.0 += 1;
                e.1 = e.1.max(lat);
            }
            h
        }));
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate.max(1) as f64));
    let mut seq = 0u64;
    while Instant::now() < deadline {
        tick.tick().await;
        seq += 1;
        let f = json!({"action":"send","to":format!("group:{gid}"),"client_msg_id":format!("g-{seq}"),"text":body(text_bytes)});
        sender.send(Message::text(f.to_string())).await?;
        counters.sent.fetch_add(1, Ordering::Relaxed);
    }
    let mut per = hist();
    for r in readers {
        per.add(&r.await?)?;
    }
    let (acked, errors) = sender_acks.await?;
    let _ = sender.close().await;
    let arrivals = arrivals.lock().unwrap_or_else(|p| p.into_inner());
    let mut all = hist();
    let mut incomplete = 0;
    for (_, (count, max)) in arrivals.iter() {
        if *count as usize == members - 1 {
            let _ = all.record(*max);
        } else {
            incomplete += 1;
        }
    }
    incomplete += seq.saturating_sub(arrivals.len() as u64);
    Ok(GroupReport {
        per_delivery: Latency::of(&per),
        to_all_members: Latency::of(&all),
        messages: seq,
        incomplete,
        acked,
        errors,
        deliveries: per.len(),
    })
}

fn message_id(frame: &str) -> Option<u64> {
    let i = frame.find("\"message_id\":")? + 13;
    frame[i..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_scanned_without_a_json_parse() {
        let f = r#"{"type":"message","conversation_id":"dm#a#b","message_id":42,"from":"a","text":"1234|xx","sent_at":"t"}"#;
        assert_eq!(stamp(f), Some(1234));
        assert_eq!(message_id(f), Some(42));
        assert_eq!(text_field(f), Some("1234|xx"));
    }
}
