//! The baseline: the same 1:1 pattern over MQTT against Mosquitto, QoS 1
//! (PUBACK plays the role of our `ack`), persistence on.

use crate::stats::{now_us, ConnStats, Counters};
use rumqttc::{AsyncClient, Event, MqttOptions, NetworkOptions, Packet, QoS};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub async fn direct(
    host: &str,
    port: u16,
    connections: usize,
    duration: Duration,
    window: usize,
    text_bytes: usize,
    counters: Arc<Counters>,
) -> anyhow::Result<ConnStats> {
    let n = connections.max(2) & !1;
    let deadline = Instant::now() + Duration::from_millis(500) + duration;
    let mut tasks = Vec::new();
    for i in 0..n {
        let mut opts = MqttOptions::new(format!("bench-{i}"), host, port);
        opts.set_inflight(window.clamp(1, u16::MAX as usize) as u16);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_clean_session(true);
        opts.set_max_packet_size(64 * 1024, 64 * 1024);
        let (client, mut events) = AsyncClient::new(opts, window * 2 + 10);
        // TCP_NODELAY, as on our WebSocket clients (rumqttc's default is off);
        // the event loop connects on its first poll, so this applies.
        let mut net = NetworkOptions::new();
        net.set_tcp_nodelay(true);
        events.set_network_options(net);
        client
            .subscribe(format!("chat/u{i}"), QoS::AtLeastOnce)
            .await?;
        let counters = counters.clone();
        let permits = Arc::new(Semaphore::new(window.max(1)));
        let sent_at = Arc::new(std::sync::Mutex::new(VecDeque::<u64>::new()));
        let writer = {
            let (permits, sent_at, counters, client) = (
                permits.clone(),
                sent_at.clone(),
                counters.clone(),
                client.clone(),
            );
            tokio::spawn(async move {
                // Let the subscription settle first.
                tokio::time::sleep(Duration::from_millis(500)).await;
                while Instant::now() < deadline {
                    let Ok(p) = tokio::time::timeout_at(deadline.into(), permits.acquire()).await
                    else {
                        break;
                    };
                    if let Ok(p) = p {
                        p.forget();
                    }
                    let mut payload = format!("{}|", now_us()).into_bytes();
                    payload.resize(text_bytes.max(payload.len()), b'x');
                    sent_at
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push_back(now_us());
                    if client
                        .publish(format!("chat/u{}", i ^ 1), QoS::AtLeastOnce, false, payload)
                        .await
                        .is_err()
                    {
                        break;
                    }
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                }
            })
        };
        tasks.push(tokio::spawn(async move {
            let mut stats = ConnStats::default();
            let drain_until = deadline + Duration::from_secs(3);
            loop {
                let ev = match tokio::time::timeout_at(drain_until.into(), events.poll()).await {
                    Ok(Ok(ev)) => ev,
                    _ => break,
                };
                match ev {
                    Event::Incoming(Packet::PubAck(_)) => {
                        if let Some(at) = sent_at
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .pop_front()
                        {
                            let _ = stats.ack.record(now_us().saturating_sub(at).max(1));
                        }
                        counters.acked.fetch_add(1, Ordering::Relaxed);
                        permits.add_permits(1);
                    }
                    Event::Incoming(Packet::Publish(p)) => {
                        let at = std::str::from_utf8(&p.payload)
                            .ok()
                            .and_then(|s| s.split('|').next())
                            .and_then(|s| s.parse::<u64>().ok());
                        if let Some(at) = at {
                            let _ = stats.deliver.record(now_us().saturating_sub(at).max(1));
                        }
                        counters.delivered.fetch_add(1, Ordering::Relaxed);
                    }
                    _ => {}
                }
            }
            writer.abort();
            stats
        }));
    }
    let mut total = ConnStats::default();
    for t in tasks {
        let s = t.await?;
        total.merge(&s)?;
    }
    Ok(total)
}
