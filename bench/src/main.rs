//! chat-bench: load generator and benchmark scenarios for the chat server,
//! with Mosquitto as the baseline. Prints a markdown table and writes JSON.
//!
//! # Layout
//! - `main.rs`: flags, scenarios' orchestration, reports.
//! - `chat.rs`: the WebSocket scenarios (direct, group, idle, storm).
//! - `mqtt.rs`: the same 1:1 pattern over MQTT QoS 1 (Mosquitto).
//! - `stats.rs`: histograms (hdrhistogram), counters, progress line.
//! - `procstat.rs`: spawning the servers; CPU and RSS from /proc.
//!
//! Timings are figures for docs/benchmarks.md, never assertions in tests.

mod chat;
mod mqtt;
mod procstat;
mod stats;

use clap::{Parser, ValueEnum};
use serde_json::json;
use stats::{Counters, Latency};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// (a) durable 1:1 throughput and latency between pairs.
    Direct,
    /// (a') the same against Mosquitto (MQTT QoS 1, persistence on), then ours, pair by pair.
    DirectVsMosquitto,
    /// (b) fan-out latency in a group.
    Group,
    /// (c) idle connections: RSS per connection.
    Idle,
    /// (d) reconnect storm: every client syncs missed messages at once.
    Storm,
}

#[derive(Debug, Parser)]
#[command(name = "chat-bench", about = "Benchmarks for the chat server")]
struct Args {
    #[arg(long, value_enum, default_value = "direct")]
    scenario: Scenario,
    /// conn-tier binary to start (default: next to this one).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Use a running server instead (ws://host:port/ws); CPU/RSS are then not reported.
    #[arg(long)]
    url: Option<String>,
    /// Run the server inside this process (embedded store in a temp dir):
    /// for smoke runs; CPU and RSS then include the load generator.
    #[arg(long)]
    in_process: bool,
    /// JWT secret of --url's server.
    #[arg(long, default_value = "bench-secret")]
    jwt_secret: String,
    /// Connections (direct: pairs of them; idle: how many to open).
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Messages per second in all (0 = flat out).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Sends in flight per connection when flat out.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Text size in bytes.
    #[arg(long, default_value_t = 100)]
    text_bytes: usize,
    /// Group size (scenario group).
    #[arg(long, default_value_t = 100)]
    members: usize,
    /// Clients (scenario storm).
    #[arg(long, default_value_t = 5000)]
    clients: usize,
    /// Missed messages per client (scenario storm).
    #[arg(long, default_value_t = 10)]
    missed: usize,
    /// Write the JSON report here too.
    #[arg(long)]
    json: Option<PathBuf>,
}

fn cpu_rss(
    before: procstat::ProcSample,
    after: procstat::ProcSample,
    secs: f64,
) -> serde_json::Value {
    json!({
        "server_cpu_percent": if secs > 0.0 { (after.cpu_secs - before.cpu_secs) / secs * 100.0 } else { 0.0 },
        "server_rss_mb": after.rss_kb as f64 / 1024.0,
    })
}

fn lat(l: &Latency) -> String {
    format!("{:.2} / {:.2} / {:.2} ms", l.p50_ms, l.p99_ms, l.p999_ms)
}

/// The chat server in this process, on a free port; the temp dir lives as long as the result.
async fn in_process_server(
    secret: &str,
) -> anyhow::Result<(std::net::SocketAddr, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let socket = conn_tier::socket::SocketConfig {
        rate_burst: 1_000_000,
        rate_per_sec: 1_000_000,
        outbound_queue: 65536,
        ..Default::default()
    };
    let (app, _store) = conn_tier::App::embedded(
        dir.path(),
        chat_core::auth::Authenticator::new(secret.as_bytes())?,
        socket,
    )?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(conn_tier::http::serve(
        listener,
        app,
        std::future::pending(),
    ));
    Ok((addr, dir))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    stats::now_us();
    let nofile = procstat::raise_nofile();
    let bin = args
        .server_bin
        .clone()
        .unwrap_or_else(procstat::default_server_bin);
    let secret = args.jwt_secret.clone();
    let counters = Arc::new(Counters::default());
    let done = Arc::new(AtomicBool::new(false));
    let duration = Duration::from_secs_f64(args.duration);
    let mut rows: Vec<(String, String)> = Vec::new();
    let mut report = json!({"scenario": format!("{:?}", args.scenario), "connections": args.connections, "text_bytes": args.text_bytes});

    // The server under test (unless --url).
    // A load generator is no user: lift the per-connection rate limit.
    let mut extra: Vec<&str> = vec!["--rate-burst", "1000000", "--rate-per-sec", "1000000"];
    match args.scenario {
        Scenario::Idle => extra.extend(["--ping-secs", "600"]),
        _ => extra.extend(["--outbound-queue", "65536"]),
    }
    let in_process = if args.in_process && args.url.is_none() {
        Some(in_process_server(&secret).await?)
    } else {
        None
    };
    let server = match (&args.url, &in_process) {
        (None, None) => Some(procstat::spawn_chat(&bin, &secret, &extra).await?),
        _ => None,
    };
    let url = match (&args.url, &in_process) {
        (Some(u), _) => u.clone(),
        (None, Some((addr, _))) => format!("ws://{addr}/ws"),
        (None, None) => format!(
            "ws://{}/ws",
            server.as_ref().map(|s| s.addr.clone()).unwrap_or_default()
        ),
    };
    let pid = server
        .as_ref()
        .map(|s| s.pid())
        .or(in_process.as_ref().map(|_| std::process::id()));
    let target = Arc::new(chat::Target {
        url: url.clone(),
        auth: chat_core::auth::Authenticator::new(secret.as_bytes())?,
    });
    let label = format!("{:?}", args.scenario).to_lowercase();
    stats::progress(label, counters.clone(), done.clone());
    let sample = || pid.map(procstat::sample).unwrap_or_default();

    match args.scenario {
        Scenario::Direct | Scenario::DirectVsMosquitto => {
            let cfg = chat::DirectCfg {
                connections: args.connections,
                duration,
                rate: args.rate,
                window: args.window,
                text_bytes: args.text_bytes,
            };
            let mut theirs = None;
            if args.scenario == Scenario::DirectVsMosquitto {
                let mq = procstat::spawn_mosquitto().await?;
                let port: u16 = mq.addr.rsplit(':').next().unwrap_or("0").parse()?;
                let before = procstat::sample(mq.pid());
                let c = Arc::new(Counters::default());
                let t = Instant::now();
                let s = mqtt::direct(
                    "127.0.0.1",
                    port,
                    args.connections,
                    duration,
                    args.window,
                    args.text_bytes,
                    c.clone(),
                )
                .await?;
                let secs = t
                    .elapsed()
                    .as_secs_f64()
                    .min(args.duration + 0.5)
                    .max(0.001);
                let (_, acked, delivered, _) = c.get();
                let rate = acked as f64 / secs;
                theirs = Some(rate);
                report["mosquitto"] = json!({
                    "acked_per_sec": rate, "delivered_per_sec": delivered as f64 / secs,
                    "ack": Latency::of(&s.ack), "deliver": Latency::of(&s.deliver),
                    "server": cpu_rss(before, procstat::sample(mq.pid()), secs),
                });
                rows.push(("Mosquitto: PUBACKed msgs/s".into(), format!("{rate:.0}")));
                rows.push((
                    "Mosquitto: publish→PUBACK p50/p99/p999".into(),
                    lat(&Latency::of(&s.ack)),
                ));
                rows.push((
                    "Mosquitto: publish→deliver p50/p99/p999".into(),
                    lat(&Latency::of(&s.deliver)),
                ));
            }
            let before = sample();
            let t = Instant::now();
            let (s, _) = chat::direct(target.clone(), &cfg, counters.clone()).await?;
            let secs = t.elapsed().as_secs_f64().min(args.duration).max(0.001);
            let (sent, acked, delivered, errors) = counters.get();
            let after = sample();
            let rate = acked as f64 / secs;
            report["chat"] = json!({
                "sent": sent, "acked": acked, "delivered": delivered, "errors": errors,
                "acked_per_sec": rate, "delivered_per_sec": delivered as f64 / secs,
                "ack": Latency::of(&s.ack), "deliver": Latency::of(&s.deliver),
                "server": cpu_rss(before, after, secs),
            });
            rows.push(("acked sends/s (durable)".into(), format!("{rate:.0}")));
            rows.push((
                "delivered messages/s".into(),
                format!("{:.0}", delivered as f64 / secs),
            ));
            rows.push(("send→ack p50/p99/p999".into(), lat(&Latency::of(&s.ack))));
            rows.push((
                "send→deliver p50/p99/p999".into(),
                lat(&Latency::of(&s.deliver)),
            ));
            rows.push((
                "server CPU".into(),
                format!("{:.0}%", (after.cpu_secs - before.cpu_secs) / secs * 100.0),
            ));
            rows.push((
                "server RSS".into(),
                format!("{:.1} MB", after.rss_kb as f64 / 1024.0),
            ));
            if let Some(theirs) = theirs {
                let ratio = rate / theirs.max(1.0);
                report["ratio_ours_to_mosquitto"] = json!(ratio);
                rows.push((
                    "ratio ours/Mosquitto (acked/s)".into(),
                    format!("{ratio:.2}"),
                ));
            }
        }
        Scenario::Group => {
            let rate = if args.rate == 0 { 20 } else { args.rate };
            let before = sample();
            let t = Instant::now();
            let g = chat::group(
                target.clone(),
                args.members,
                rate,
                duration,
                args.text_bytes,
                counters.clone(),
            )
            .await?;
            let secs = t.elapsed().as_secs_f64();
            let after = sample();
            report["group"] = json!({
                "members": args.members, "rate": rate, "messages": g.messages, "incomplete": g.incomplete,
                "per_delivery": g.per_delivery, "to_all_members": g.to_all_members,
                "server": cpu_rss(before, after, secs),
            });
            rows.push((
                "messages sent".into(),
                format!("{} at {rate}/s to {} members", g.messages, args.members),
            ));
            rows.push((
                "send→deliver, each member p50/p99/p999".into(),
                lat(&g.per_delivery),
            ));
            rows.push((
                "send→last member p50/p99/p999".into(),
                lat(&g.to_all_members),
            ));
            rows.push((
                "messages not seen by every member".into(),
                g.incomplete.to_string(),
            ));
        }
        Scenario::Idle => {
            let addr: std::net::SocketAddr = match (&server, &in_process) {
                (Some(s), _) => s.addr.parse()?,
                (None, Some((a, _))) => *a,
                _ => anyhow::bail!("idle needs a server it starts (no --url)"),
            };
            // One connection first, so the baseline includes warmed-up allocators.
            let warm = target.connect("idle-warmup").await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = sample();
            let t = Instant::now();
            let conns =
                chat::idle(target.clone(), args.connections, addr, counters.clone()).await?;
            let open_secs = t.elapsed().as_secs_f64();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let after = sample();
            let per_conn_kb =
                (after.rss_kb.saturating_sub(before.rss_kb)) as f64 / conns.len().max(1) as f64;
            report["idle"] = json!({
                "connections": conns.len(), "open_secs": open_secs, "nofile_limit": nofile,
                "rss_before_kb": before.rss_kb, "rss_after_kb": after.rss_kb, "rss_per_connection_kb": per_conn_kb,
            });
            rows.push((
                "idle connections open".into(),
                format!("{} in {open_secs:.1} s", conns.len()),
            ));
            rows.push((
                "server RSS before → after".into(),
                format!(
                    "{:.1} → {:.1} MB",
                    before.rss_kb as f64 / 1024.0,
                    after.rss_kb as f64 / 1024.0
                ),
            ));
            rows.push((
                "RSS per idle connection".into(),
                format!("{per_conn_kb:.1} KB"),
            ));
            drop(conns);
            drop(warm);
        }
        Scenario::Storm => {
            let r =
                chat::storm(target.clone(), args.clients, args.missed, counters.clone()).await?;
            report["storm"] = json!({
                "clients": r.clients, "missed_each": args.missed, "wall_secs": r.wall.as_secs_f64(),
                "messages_synced": r.messages_synced, "reconnect_and_sync": r.reconnect_sync,
            });
            rows.push((
                "clients reconnecting at once".into(),
                format!("{} × {} missed", r.clients, args.missed),
            ));
            rows.push((
                "all synced after".into(),
                format!("{:.2} s", r.wall.as_secs_f64()),
            ));
            rows.push(("messages synced".into(), r.messages_synced.to_string()));
            rows.push((
                "connect+sync per client p50/p99/p999".into(),
                lat(&r.reconnect_sync),
            ));
        }
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    println!("| {:?} | |\n|---|---|", args.scenario);
    for (k, v) in &rows {
        println!("| {k} | {v} |");
    }
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(p) = &args.json {
        std::fs::write(p, &text)?;
    }
    eprintln!("{text}");
    Ok(())
}
