//! chat-bench: load generator and benchmark scenarios for the chat server,
//! with Mosquitto as the baseline. Prints a markdown table and writes JSON.
//!
//! # Layout
//! - `main.rs`: the common setup (the server under test, counters, progress
//!   line) and the dispatch to a scenario.
//! - `args.rs`: the scenarios and flags.
//! - `setup.rs`: pinning (--pin), the in-process server (--in-process).
//! - `scenario/`: one file per scenario, each with its `run`:
//!   - `mod.rs`: the context they get (`Ctx`), the report they fill
//!     (`Report`: rows, JSON, printing) and their shared formatting.
//!   - `direct.rs`: direct and direct-vs-mosquitto.
//!   - `sweep.rs`: the sweep's rates, stop rule, steps, table and SVG.
//!   - `group.rs`, `idle.rs`, `failover.rs`, `storm.rs`;
//!   - `targets.rs`: the other scenarios run as parts, judged against
//!     docs/benchmarks.md's targets.
//! - `chat.rs`: the WebSocket load patterns: direct pairs, a group.
//! - `crowd.rs`: many connections: paced opening, idle (and warmed), the
//!   reconnect storm.
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
mod crowd;
mod mqtt;
mod plot;
mod procstat;
mod scenario;
mod setup;
mod stats;

use args::{Args, Scenario};
use clap::Parser;
use scenario::{Ctx, Report};
use setup::{in_process_server, pin, Pinning};
use stats::Counters;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

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
    if args.scenario == Scenario::Targets {
        // Starts no server of its own: each part is a run of this binary.
        let mut out = Report::new(&args, &pinning);
        scenario::targets::run(&args, &mut out).await?;
        return out.finish(&args);
    }
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
    let mut out = Report::new(&args, &pinning);

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
    let engine = match args.engine.as_slice() {
        [one] => one.clone(),
        _ => anyhow::bail!(
            "--scenario {label} takes one --engine",
            label = format!("{:?}", args.scenario).to_lowercase()
        ),
    };
    extra.extend(["--engine", engine.as_str()]);
    let in_process = if args.in_process && args.url.is_none() {
        Some(in_process_server(&secret, &engine).await?)
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
        Scenario::Direct | Scenario::DirectVsMosquitto | Scenario::Sweep | Scenario::Disk => {
            scenario::direct::SHOWN
        }
        Scenario::Group => scenario::group::SHOWN,
        Scenario::Idle => scenario::idle::SHOWN,
        Scenario::Storm => scenario::storm::SHOWN,
        Scenario::Failover => scenario::failover::SHOWN,
        Scenario::Targets => unreachable!("handled above"),
    };
    stats::progress(label, counters.clone(), done.clone(), shown);
    let mut ctx = Ctx {
        args,
        pinning,
        nofile,
        duration,
        counters,
        url,
        target,
        server,
        in_process,
        pid,
    };
    match ctx.args.scenario {
        Scenario::Direct | Scenario::DirectVsMosquitto => {
            scenario::direct::run(&ctx, &mut out).await?
        }
        Scenario::Sweep => scenario::sweep::run(&ctx, &mut out).await?,
        Scenario::Group => scenario::group::run(&ctx, &mut out).await?,
        Scenario::Idle => scenario::idle::run(&ctx, &mut out).await?,
        Scenario::Failover => scenario::failover::run(&ctx, &mut out).await?,
        Scenario::Storm => scenario::storm::run(&ctx, &mut out).await?,
        Scenario::Disk => scenario::disk::run(&mut ctx, &mut out).await?,
        Scenario::Targets => unreachable!("handled above"),
    }
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    out.finish(&ctx.args)
}
