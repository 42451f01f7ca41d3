//! The scenarios, one file each, and what they share: the context the setup
//! hands them (`Ctx`), the report they fill (`Report`) and its formatting.

pub mod direct;
pub mod disk;
pub mod failover;
pub mod group;
pub mod idle;
pub mod storm;
pub mod sweep;
pub mod targets;

use crate::args::Args;
use crate::chat;
use crate::procstat;
use crate::setup::Pinning;
use crate::stats::{Counters, Latency};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// What the setup in `main.rs` hands every scenario.
pub struct Ctx {
    pub args: Args,
    pub pinning: Pinning,
    /// The open-files limit after raising it.
    pub nofile: u64,
    pub duration: Duration,
    pub counters: Arc<Counters>,
    /// The server under test, as the scenarios connect to it.
    pub url: String,
    pub target: Arc<chat::Target>,
    /// The server the bench spawned (neither --url nor --in-process).
    pub server: Option<procstat::Server>,
    /// The server in this process (--in-process), and its store's temp dir.
    pub in_process: Option<(std::net::SocketAddr, tempfile::TempDir)>,
    /// The server's pid, to read CPU and RSS from /proc (none with --url
    /// without --server-pid).
    pub pid: Option<u32>,
}

impl Ctx {
    /// The server's CPU and RSS now (zeros without a pid).
    pub fn sample(&self) -> procstat::ProcSample {
        self.pid.map(procstat::sample).unwrap_or_default()
    }
}

/// What a run reports: the markdown rows, the JSON, and optionally a second
/// table (the sweep's steps) and an SVG to write.
pub struct Report {
    pub rows: Vec<(String, String)>,
    pub report: serde_json::Value,
    pub steps_table: Option<String>,
    pub svg_out: Option<(PathBuf, String)>,
}

impl Report {
    /// The rows and keys every scenario starts with.
    pub fn new(args: &Args, pinning: &Pinning) -> Report {
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
        Report {
            rows,
            report,
            steps_table: None,
            svg_out: None,
        }
    }

    /// Prints the table(s) to stdout and the JSON to stderr; writes the JSON
    /// (--json) and the SVG, if any.
    pub fn finish(self, args: &Args) -> anyhow::Result<()> {
        println!("| {:?} | |\n|---|---|", args.scenario);
        for (k, v) in &self.rows {
            println!("| {k} | {v} |");
        }
        if let Some(t) = &self.steps_table {
            println!();
            print!("{t}");
        }
        let text = serde_json::to_string_pretty(&self.report)?;
        if let Some(p) = &args.json {
            std::fs::write(p, &text)?;
        }
        eprintln!("{text}");
        if let Some((path, svg)) = self.svg_out {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&path, svg)?;
            eprintln!("latency curve written to {}", path.display());
        }
        Ok(())
    }
}

pub(crate) fn cpu_rss(
    before: procstat::ProcSample,
    after: procstat::ProcSample,
    secs: f64,
) -> serde_json::Value {
    json!({
        "server_cpu_percent": if secs > 0.0 { (after.cpu_secs - before.cpu_secs) / secs * 100.0 } else { 0.0 },
        "server_cpu_secs": after.cpu_secs - before.cpu_secs,
        "writer_cpu_secs": after.writer_cpu_secs - before.writer_cpu_secs,
        "server_rss_mb": after.rss_kb as f64 / 1024.0,
    })
}

/// Delivered messages per CPU-second of the server (none without CPU time:
/// no pid to read, as with --url, or under one clock tick).
pub(crate) fn per_cpu_sec(delivered: u64, cpu_secs: f64) -> Option<f64> {
    if cpu_secs > 0.0 {
        Some(delivered as f64 / cpu_secs)
    } else {
        None
    }
}

/// The server's and its store writer's CPU per acked send between two
/// samples, µs (none without sends or CPU time).
pub(crate) fn per_send(
    before: &procstat::ProcSample,
    after: &procstat::ProcSample,
    acked: u64,
) -> (Option<f64>, Option<f64>) {
    (
        us_per(after.cpu_secs - before.cpu_secs, acked),
        us_per(after.writer_cpu_secs - before.writer_cpu_secs, acked),
    )
}

/// A `per_send` figure as a table cell: "server / writer µs".
pub(crate) fn per_send_cell((server, writer): (Option<f64>, Option<f64>)) -> String {
    format!("{} / {} µs", or_na(server, 1), or_na(writer, 1))
}

/// Microseconds of CPU per message (none without messages or CPU time).
pub(crate) fn us_per(cpu_secs: f64, msgs: u64) -> Option<f64> {
    (msgs > 0 && cpu_secs > 0.0).then(|| cpu_secs * 1e6 / msgs as f64)
}

pub(crate) fn or_na(v: Option<f64>, decimals: usize) -> String {
    v.map(|v| format!("{:.*}", decimals, v))
        .unwrap_or_else(|| "n/a".to_string())
}

pub(crate) fn lat(l: &Latency) -> String {
    format!("{:.2} / {:.2} / {:.2} ms", l.p50_ms, l.p99_ms, l.p999_ms)
}
