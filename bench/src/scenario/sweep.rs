//! Scenario `sweep`: `direct` at rising offered rates against one server,
//! for the latency curve; the rates it offers, when it stops, its steps,
//! table and SVG.

use super::{or_na, per_cpu_sec, Ctx, Report};
use crate::stats::Latency;
use crate::{chat, plot};
use serde_json::json;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The sweep's offered rates when `--rates` is not given; it then goes on
/// doubling the last one until the server saturates.
pub const SWEEP_RATES: [u64; 6] = [1000, 2000, 5000, 10000, 20000, 40000];
/// A step is saturated when it achieves less than this share of its offer.
pub const SATURATED: f64 = 0.9;
/// Saturated steps in a row that end a default sweep.
pub const SATURATED_STEPS_TO_STOP: u32 = 2;
/// A bound on any sweep's length.
pub const MAX_SWEEP_STEPS: usize = 24;
/// Pause between sweep steps, so one step's closing does not overlap the next.
pub const SWEEP_PAUSE: Duration = Duration::from_secs(1);

/// One step of a sweep.
#[derive(Debug, serde::Serialize)]
pub struct SweepStep {
    pub offered_per_sec: u64,
    /// Acks received during the load window, per second of it.
    pub acked_per_sec: f64,
    /// Deliveries received during the load window, per second of it.
    pub delivered_per_sec: f64,
    /// Totals, the drain after the window included.
    pub sent: u64,
    pub acked: u64,
    pub delivered: u64,
    pub errors: u64,
    pub acked_in_window: u64,
    pub delivered_in_window: u64,
    /// send→deliver and send→ack, every message of the step.
    pub deliver: Latency,
    pub ack: Latency,
    /// The server's CPU during the load window.
    pub server_cpu_secs: Option<f64>,
    pub server_cpu_percent: Option<f64>,
    /// delivered_in_window / server_cpu_secs.
    pub msgs_per_server_cpu_sec: Option<f64>,
    /// acked_per_sec < 0.9 × offered_per_sec.
    pub saturated: bool,
    /// Connect + load + drain.
    pub wall_secs: f64,
}

pub fn sweep_table(steps: &[SweepStep]) -> String {
    let mut t = String::from(
        "| offered msgs/s | acked msgs/s | delivered msgs/s | send→deliver p50 | p99 | p999 | send→ack p50 | p99 | server CPU | msgs per server CPU-s |\n\
         |---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for s in steps {
        t.push_str(&format!(
            "| {} | {:.0} | {:.0} | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {} | {} |\n",
            s.offered_per_sec,
            s.acked_per_sec,
            s.delivered_per_sec,
            s.deliver.p50_ms,
            s.deliver.p99_ms,
            s.deliver.p999_ms,
            s.ack.p50_ms,
            s.ack.p99_ms,
            s.server_cpu_percent
                .map(|c| format!("{c:.0}%"))
                .unwrap_or_else(|| "n/a".to_string()),
            or_na(s.msgs_per_server_cpu_sec, 0),
        ));
    }
    t
}

pub async fn run(ctx: &Ctx, out: &mut Report) -> anyhow::Result<()> {
    let args = &ctx.args;
    let counters = &ctx.counters;
    let target = &ctx.target;
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
            duration: ctx.duration,
            rate: offered,
            window: args.window,
            text_bytes: args.text_bytes,
            // Fresh users per step: no step meets another's backlog.
            users: format!("s{k}u"),
            cpu_pid: ctx.pid,
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
            msgs_per_server_cpu_sec: window_cpu.and_then(|c| per_cpu_sec(s.delivered_in_window, c)),
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
    out.svg_out = Some((svg_path.clone(), plot::svg(&points, &title)?));
    out.report["sweep"] = json!({
        "duration_secs": args.duration,
        "connections": args.connections.max(2) & !1,
        "rates": if explicit { "--rates" } else { "default, then doubling" },
        "max_rate": if args.max_rate > 0 { Some(args.max_rate) } else { None },
        "stopped": stopped,
        "server_cpu_includes_load_generator": ctx.in_process.is_some(),
        "svg": svg_path.display().to_string(),
        "steps": steps,
    });
    out.rows.push((
        "steps".into(),
        format!(
            "{} of {} s each over {} connections",
            steps.len(),
            args.duration,
            args.connections.max(2) & !1
        ),
    ));
    out.rows.push(("stopped because".into(), stopped.clone()));
    out.rows
        .push(("latency curve".into(), svg_path.display().to_string()));
    if ctx.in_process.is_some() {
        out.rows.push((
            "server CPU".into(),
            "includes the load generator (--in-process)".into(),
        ));
    }
    out.steps_table = Some(sweep_table(&steps));
    Ok(())
}
