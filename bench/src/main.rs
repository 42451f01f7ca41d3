//! chat-bench: load generator and benchmark scenarios for the chat server,
//! with Mosquitto as the baseline. Prints a markdown table and writes JSON.
//!
//! # Layout
//! - `main.rs`: the scenarios' orchestration and reports.
//! - `args.rs`: the scenarios and flags.
//! - `setup.rs`: pinning (--pin), the in-process server (--in-process).
//! - `sweep.rs`: the sweep's rates, stop rule, steps and table.
//! - `chat.rs`: the WebSocket scenarios (direct, group, idle, storm).
//! - `mqtt.rs`: the same 1:1 pattern over MQTT QoS 1 (Mosquitto).
//! - `stats.rs`: histograms (hdrhistogram), counters, progress line.
//! - `procstat.rs`: spawning the servers (optionally pinned with taskset);
//!   CPU and RSS from /proc; this process's CPU affinity.
//! - `plot.rs`: the sweep's latency curve as an SVG (plotters).
//! - `cluster.rs`: a cluster node's fail-over (kill -9, reconnect through
//!   the load balancer, sync).
//!
//! Timings are figures for docs/benchmarks.md, never assertions in tests.

mod args;
mod chat;
mod cluster;
mod mqtt;
mod plot;
mod procstat;
mod setup;
mod stats;
mod sweep;

use args::{Args, Scenario};
use clap::Parser;
use serde_json::json;
use setup::{in_process_server, pin, Pinning};
use stats::{Counters, Field, Latency, Shown};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};
use sweep::*;

const DIRECT_SHOWN: Shown = &[
    ("sent", Field::Sent),
    ("acked", Field::Acked),
    ("delivered", Field::Delivered),
    ("errors", Field::Errors),
];
const GROUP_SHOWN: Shown = &[
    ("messages sent", Field::Sent),
    ("acked", Field::Acked),
    ("deliveries to members", Field::Delivered),
    ("errors", Field::Errors),
];
const IDLE_SHOWN: Shown = &[("connections open", Field::Acked)];
const FAILOVER_SHOWN: Shown = &[
    ("connected to the victim", Field::Sent),
    ("back and synced", Field::Delivered),
];
const STORM_SHOWN: Shown = &[
    ("messages stored", Field::Sent),
    ("messages synced", Field::Delivered),
];

fn cpu_rss(
    before: procstat::ProcSample,
    after: procstat::ProcSample,
    secs: f64,
) -> serde_json::Value {
    json!({
        "server_cpu_percent": if secs > 0.0 { (after.cpu_secs - before.cpu_secs) / secs * 100.0 } else { 0.0 },
        "server_cpu_secs": after.cpu_secs - before.cpu_secs,
        "server_rss_mb": after.rss_kb as f64 / 1024.0,
    })
}

/// Delivered messages per CPU-second of the server (none without CPU time:
/// no pid to read, as with --url, or under one clock tick).
fn per_cpu_sec(delivered: u64, cpu_secs: f64) -> Option<f64> {
    if cpu_secs > 0.0 {
        Some(delivered as f64 / cpu_secs)
    } else {
        None
    }
}

pub(crate) fn or_na(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{:.*}", decimals, v))
        .unwrap_or_else(|| "n/a".to_string())
}

fn lat(l: &Latency) -> String {
    format!("{:.2} / {:.2} / {:.2} ms", l.p50_ms, l.p99_ms, l.p999_ms)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Before the runtime exists, so that all its threads inherit the affinity.
    let pinning = pin(&args);
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args, pinning))
}

async fn run(args: Args, pinning: Pinning) -> anyhow::Result<()> {
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
    let mut report = json!({"scenario": format!("{:?}", args.scenario), "connections": args.connections, "text_bytes": args.text_bytes, "pinning": pinning.note});
    rows.push(("pinning".into(), pinning.note.clone()));
    if args.nagle {
        rows.push((
            "TCP_NODELAY".into(),
            "off on both ends (--nagle): Nagle's algorithm on".into(),
        ));
        report["tcp_nodelay"] = json!(false);
    }
    // A second table (the sweep's steps), and the SVG to write at the end.
    let mut steps_table: Option<String> = None;
    let mut svg_out: Option<(PathBuf, String)> = None;

    // The server under test (unless --url).
    // A load generator is no user: lift the per-user rate limit and the
    // per-IP and per-user connection caps (it connects from one address).
    let mut extra: Vec<&str> = vec![
        "--rate-burst",
        "1000000",
        "--rate-per-sec",
        "1000000",
        "--max-connections-per-user",
        "1000000",
        "--max-connections-per-ip",
        "1000000",
        "--new-connections-per-ip-per-sec",
        "1000000",
    ];
    if let Scenario::Idle = args.scenario {
        extra.extend(["--ping-secs", "600"]);
    }
    if args.nagle {
        extra.extend(["--tcp-nodelay", "false"]);
    }
    let in_process = if args.in_process && args.url.is_none() {
        Some(in_process_server(&secret).await?)
    } else {
        None
    };
    let server = match (&args.url, &in_process) {
        (None, None) => {
            Some(procstat::spawn_chat(&bin, &secret, &extra, pinning.server_cpu).await?)
        }
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
        .or(in_process.as_ref().map(|_| std::process::id()))
        .or(args.server_pid);
    let target = Arc::new(chat::Target {
        url: url.clone(),
        auth: chat_core::auth::Authenticator::new(secret.as_bytes())?,
        nodelay: !args.nagle,
        peer_url: args.peer_url.clone(),
    });
    let label = format!("{:?}", args.scenario).to_lowercase();
    let shown = match args.scenario {
        Scenario::Direct | Scenario::DirectVsMosquitto | Scenario::Sweep => DIRECT_SHOWN,
        Scenario::Group => GROUP_SHOWN,
        Scenario::Idle => IDLE_SHOWN,
        Scenario::Storm => STORM_SHOWN,
        Scenario::Failover => FAILOVER_SHOWN,
    };
    stats::progress(label, counters.clone(), done.clone(), shown);
    let sample = || pid.map(procstat::sample).unwrap_or_default();

    match args.scenario {
        Scenario::Direct | Scenario::DirectVsMosquitto => {
            let cfg = chat::DirectCfg {
                connections: args.connections,
                duration,
                rate: args.rate,
                window: args.window,
                text_bytes: args.text_bytes,
                // A running server (--url) keeps earlier runs' users and
                // client_msg_ids: a fresh prefix per run meets none of them.
                users: match &args.url {
                    Some(_) => format!(
                        "u{}x",
                        std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs())
                            .unwrap_or_default()
                    ),
                    None => "u".to_string(),
                },
                cpu_pid: None,
            };
            // (acked/s, delivered msgs per CPU-second) of Mosquitto.
            let mut theirs: Option<(f64, Option<f64>)> = None;
            if args.scenario == Scenario::DirectVsMosquitto {
                // Mosquitto is this process's child (not a daemon), so its
                // pid is the one to read in /proc; taskset execs it in place.
                let mq = procstat::spawn_mosquitto(pinning.server_cpu).await?;
                let port: u16 = mq.addr.rsplit(':').next().unwrap_or("0").parse()?;
                let before = procstat::sample(mq.pid());
                let t = Instant::now();
                // The shared counters, so the progress line shows this phase too.
                let s = mqtt::direct(
                    "127.0.0.1",
                    port,
                    args.connections,
                    duration,
                    args.window,
                    args.text_bytes,
                    counters.clone(),
                )
                .await?;
                let after = procstat::sample(mq.pid());
                let secs = t
                    .elapsed()
                    .as_secs_f64()
                    .min(args.duration + 0.5)
                    .max(0.001);
                let (sent, acked, delivered, errors) = counters.get();
                counters.reset();
                let rate = acked as f64 / secs;
                let cpu = after.cpu_secs - before.cpu_secs;
                let per_cpu = per_cpu_sec(delivered, cpu);
                theirs = Some((rate, per_cpu));
                report["mosquitto"] = json!({
                    "sent": sent, "acked": acked, "delivered": delivered, "errors": errors,
                    "acked_per_sec": rate, "delivered_per_sec": delivered as f64 / secs,
                    "ack": Latency::of(&s.ack), "deliver": Latency::of(&s.deliver),
                    "server": cpu_rss(before, after, secs),
                    "msgs_per_server_cpu_sec": per_cpu,
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
                rows.push((
                    "Mosquitto: server CPU".into(),
                    format!("{:.0}%", cpu / secs * 100.0),
                ));
                rows.push((
                    "Mosquitto: delivered msgs per server CPU-second".into(),
                    or_na(per_cpu, 0),
                ));
                drop(mq);
                eprintln!("mosquitto done; now the chat server");
            }
            let before = sample();
            let t = Instant::now();
            let (s, _) = chat::direct(target.clone(), &cfg, counters.clone()).await?;
            let secs = t.elapsed().as_secs_f64().min(args.duration).max(0.001);
            let (sent, acked, delivered, errors) = counters.get();
            let after = sample();
            let rate = acked as f64 / secs;
            let cpu = after.cpu_secs - before.cpu_secs;
            let per_cpu = per_cpu_sec(delivered, cpu);
            report["chat"] = json!({
                "sent": sent, "acked": acked, "delivered": delivered, "errors": errors,
                "acked_per_sec": rate, "delivered_per_sec": delivered as f64 / secs,
                "acked_in_window_per_sec": s.acked_in_window as f64 / args.duration.max(0.001),
                "ack": Latency::of(&s.ack), "deliver": Latency::of(&s.deliver),
                "server": cpu_rss(before, after, secs),
                "msgs_per_server_cpu_sec": per_cpu,
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
            rows.push((
                format!(
                    "delivered msgs per server CPU-second{}",
                    if in_process.is_some() {
                        " (CPU includes the load generator: --in-process)"
                    } else {
                        ""
                    }
                ),
                or_na(per_cpu, 0),
            ));
            if let Some((theirs, theirs_per_cpu)) = theirs {
                let ratio = rate / theirs.max(1.0);
                report["ratio_ours_to_mosquitto"] = json!(ratio);
                rows.push((
                    "ratio ours/Mosquitto (acked/s)".into(),
                    format!("{ratio:.2}"),
                ));
                let per_cpu_ratio = match (per_cpu, theirs_per_cpu) {
                    (Some(o), Some(t)) if t > 0.0 => Some(o / t),
                    _ => None,
                };
                report["ratio_per_cpu_ours_to_mosquitto"] = json!(per_cpu_ratio);
                rows.push((
                    "ratio ours/Mosquitto (msgs per server CPU-second)".into(),
                    or_na(per_cpu_ratio, 2),
                ));
            }
        }
        Scenario::Sweep => {
            let explicit = !args.rates.is_empty();
            let cap = if args.max_rate > 0 {
                args.max_rate
            } else {
                u64::MAX
            };
            let mut planned: Vec<u64> = if explicit {
                args.rates.clone()
            } else {
                SWEEP_RATES.to_vec()
            };
            planned.retain(|&r| r > 0 && r <= cap);
            if planned.is_empty() {
                anyhow::bail!("--scenario sweep: no rate to run (see --rates and --max-rate)");
            }
            let mut steps: Vec<SweepStep> = Vec::new();
            let mut saturated_in_a_row = 0u32;
            let stopped: String;
            loop {
                let k = steps.len();
                let offered = if k < planned.len() {
                    planned[k]
                } else if explicit {
                    stopped = "every rate of --rates run".to_string();
                    break;
                } else {
                    let next = steps
                        .last()
                        .map(|s| s.offered_per_sec.saturating_mul(2))
                        .unwrap_or(SWEEP_RATES[0]);
                    if next > cap {
                        stopped = format!("the next rate, {next}/s, is above --max-rate");
                        break;
                    }
                    next
                };
                if k >= MAX_SWEEP_STEPS {
                    stopped = format!("{MAX_SWEEP_STEPS} steps run (the bound)");
                    break;
                }
                if k > 0 {
                    tokio::time::sleep(SWEEP_PAUSE).await;
                }
                eprintln!(
                    "sweep step {}: offering {offered} msgs/s for {} s over {} connections",
                    k + 1,
                    args.duration,
                    args.connections.max(2) & !1
                );
                let cfg = chat::DirectCfg {
                    connections: args.connections,
                    duration,
                    rate: offered,
                    window: args.window,
                    text_bytes: args.text_bytes,
                    // Fresh users per step: no step meets another's backlog.
                    users: format!("s{k}u"),
                    cpu_pid: pid,
                };
                let c0 = counters.get();
                let t = Instant::now();
                let (s, window_cpu) = chat::direct(target.clone(), &cfg, counters.clone()).await?;
                let wall = t.elapsed().as_secs_f64();
                let c1 = counters.get();
                let secs = args.duration.max(0.001);
                let acked_per_sec = s.acked_in_window as f64 / secs;
                let step = SweepStep {
                    offered_per_sec: offered,
                    acked_per_sec,
                    delivered_per_sec: s.delivered_in_window as f64 / secs,
                    sent: c1.0.saturating_sub(c0.0),
                    acked: c1.1.saturating_sub(c0.1),
                    delivered: c1.2.saturating_sub(c0.2),
                    errors: c1.3.saturating_sub(c0.3),
                    acked_in_window: s.acked_in_window,
                    delivered_in_window: s.delivered_in_window,
                    deliver: Latency::of(&s.deliver),
                    ack: Latency::of(&s.ack),
                    server_cpu_secs: window_cpu,
                    server_cpu_percent: window_cpu.map(|c| c / secs * 100.0),
                    msgs_per_server_cpu_sec: window_cpu
                        .and_then(|c| per_cpu_sec(s.delivered_in_window, c)),
                    saturated: acked_per_sec < SATURATED * offered as f64,
                    wall_secs: wall,
                };
                eprintln!(
                    "sweep step {}: {:.0} acked/s, send→deliver p99 {:.2} ms{}",
                    k + 1,
                    step.acked_per_sec,
                    step.deliver.p99_ms,
                    if step.saturated { " (saturated)" } else { "" }
                );
                let saturated = step.saturated;
                steps.push(step);
                if !explicit {
                    saturated_in_a_row = if saturated { saturated_in_a_row + 1 } else { 0 };
                    if saturated_in_a_row >= SATURATED_STEPS_TO_STOP {
                        stopped = format!(
                            "{SATURATED_STEPS_TO_STOP} steps in a row achieved < {SATURATED} × their offer"
                        );
                        break;
                    }
                }
            }
            let svg_path = args
                .svg
                .clone()
                .unwrap_or_else(|| PathBuf::from("docs/latency-curve.svg"));
            let points: Vec<plot::Point> = steps
                .iter()
                .map(|s| plot::Point {
                    offered: s.offered_per_sec as f64,
                    acked_per_sec: s.acked_per_sec,
                    delivered_per_sec: s.delivered_per_sec,
                    p50_ms: s.deliver.p50_ms,
                    p99_ms: s.deliver.p99_ms,
                    p999_ms: s.deliver.p999_ms,
                })
                .collect();
            let title = format!(
                "chat-bench sweep: send→deliver latency, {} connections, {} s per step, {} B texts",
                args.connections.max(2) & !1,
                args.duration,
                args.text_bytes
            );
            svg_out = Some((svg_path.clone(), plot::svg(&points, &title)?));
            report["sweep"] = json!({
                "duration_secs": args.duration,
                "connections": args.connections.max(2) & !1,
                "rates": if explicit { "--rates" } else { "default, then doubling" },
                "max_rate": if args.max_rate > 0 { Some(args.max_rate) } else { None },
                "stopped": stopped,
                "server_cpu_includes_load_generator": in_process.is_some(),
                "svg": svg_path.display().to_string(),
                "steps": steps,
            });
            rows.push((
                "steps".into(),
                format!(
                    "{} of {} s each over {} connections",
                    steps.len(),
                    args.duration,
                    args.connections.max(2) & !1
                ),
            ));
            rows.push(("stopped because".into(), stopped.clone()));
            rows.push(("latency curve".into(), svg_path.display().to_string()));
            if in_process.is_some() {
                rows.push((
                    "server CPU".into(),
                    "includes the load generator (--in-process)".into(),
                ));
            }
            steps_table = Some(sweep_table(&steps));
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
                "acked": g.acked, "errors": g.errors, "deliveries": g.deliveries,
                "per_delivery": g.per_delivery, "to_all_members": g.to_all_members,
                "server": cpu_rss(before, after, secs),
            });
            rows.push((
                "messages sent".into(),
                format!("{} at {rate}/s to {} members", g.messages, args.members),
            ));
            rows.push((
                "acked / errors / deliveries".into(),
                format!("{} / {} / {}", g.acked, g.errors, g.deliveries),
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
                _ => cluster::ws_addr(&url)?,
            };
            // One connection first, so the baseline includes warmed-up allocators.
            let warm = target.connect("idle-warmup").await?;
            tokio::time::sleep(Duration::from_millis(500)).await;
            let before = sample();
            let t = Instant::now();
            let mut conns = chat::idle(
                target.clone(),
                args.connections,
                args.connect_rate,
                addr,
                counters.clone(),
            )
            .await?;
            let open_secs = t.elapsed().as_secs_f64();
            if args.warm {
                chat::warm(&target, &mut conns).await?;
            }
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
                if pid.is_some() {
                    format!("{per_conn_kb:.1} KB")
                } else {
                    "n/a (--url without --server-pid)".into()
                },
            ));
            if args.hold > 0.0 {
                eprintln!(
                    "idle: {} connections open; holding {} s",
                    conns.len(),
                    args.hold
                );
                tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
            }
            drop(conns);
            drop(warm);
        }
        Scenario::Failover => {
            let (Some(lb_url), Some(victim_pid)) = (args.peer_url.clone(), args.kill_pid) else {
                anyhow::bail!("failover needs --url (the node), --kill-pid and --peer-url (the load balancer)");
            };
            let cfg = cluster::FailoverCfg {
                victim: cluster::ws_addr(&url)?,
                victim_pid,
                lb_url,
                clients: args.clients,
                connect_rate: args.connect_rate,
                give_up: Duration::from_secs_f64(args.duration.max(60.0)),
            };
            let r = cluster::failover(target.clone(), cfg, counters.clone()).await?;
            let secs = |v: Option<f64>| or_na(v, 2) + " s";
            rows.push((
                "clients on the killed node".into(),
                format!("{} (connected in {:.1} s)", r.clients, r.connect_secs),
            ));
            rows.push((
                "socket ended after kill p50/p99/p999".into(),
                lat(&r.noticed),
            ));
            rows.push((
                "back through the load balancer and synced p50/p99/p999".into(),
                lat(&r.back),
            ));
            rows.push((
                "every client back and synced after".into(),
                secs(r.all_back_secs),
            ));
            rows.push(("clients not back".into(), r.not_back.to_string()));
            rows.push((
                "failed reconnect attempts".into(),
                r.failed_attempts.to_string(),
            ));
            rows.push((
                "node declared dead (left /nodes) after".into(),
                format!(
                    "{} ({} live before)",
                    secs(r.declared_dead_secs),
                    r.nodes_before
                        .map(|n| n.to_string())
                        .unwrap_or_else(|| "n/a".into())
                ),
            ));
            report["failover"] = serde_json::to_value(&r)?;
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
    if let Some(t) = &steps_table {
        println!();
        print!("{t}");
    }
    let text = serde_json::to_string_pretty(&report)?;
    if let Some(p) = &args.json {
        std::fs::write(p, &text)?;
    }
    eprintln!("{text}");
    if let Some((path, svg)) = svg_out {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(&path, svg)?;
        eprintln!("latency curve written to {}", path.display());
    }
    Ok(())
}
