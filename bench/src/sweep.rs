//! The sweep's steps: the rates it offers, when it stops, and its table.

use crate::or_na;
use crate::stats::Latency;
use std::time::Duration;

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
