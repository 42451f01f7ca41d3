//! Latency histograms and counters, merged across connections.

use hdrhistogram::Histogram;
use serde::Serialize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

static EPOCH: OnceLock<Instant> = OnceLock::new();

/// Microseconds since the run started (shared by every task, so a
/// timestamp sent in a message is comparable on arrival).
pub fn now_us() -> u64 {
    EPOCH.get_or_init(Instant::now).elapsed().as_micros() as u64
}

pub fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("histogram bounds")
}

/// What one connection saw.
pub struct ConnStats {
    pub ack: Histogram<u64>,
    pub deliver: Histogram<u64>,
}

impl Default for ConnStats {
    fn default() -> Self {
        ConnStats {
            ack: hist(),
            deliver: hist(),
        }
    }
}

/// Live counters for the progress line.
#[derive(Default)]
pub struct Counters {
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub delivered: AtomicU64,
    pub errors: AtomicU64,
}

impl Counters {
    pub fn get(&self) -> (u64, u64, u64, u64) {
        (
            self.sent.load(Ordering::Relaxed),
            self.acked.load(Ordering::Relaxed),
            self.delivered.load(Ordering::Relaxed),
            self.errors.load(Ordering::Relaxed),
        )
    }
}

/// p50 / p99 / p999 / max in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

impl Latency {
    pub fn of(h: &Histogram<u64>) -> Self {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50_ms: ms(h.value_at_quantile(0.5)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            max_ms: ms(h.max()),
        }
    }
}

/// Prints a progress line every second until `done` is set.
pub fn progress(
    label: String,
    counters: std::sync::Arc<Counters>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
) {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last = counters.get();
        while !done.load(Ordering::Relaxed) {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let now = counters.get();
            eprintln!(
                "[{label} {:>3.0}s] sent {} acked {} (+{}/s) delivered {} (+{}/s) errors {}",
                start.elapsed().as_secs_f64(),
                now.0,
                now.1,
                now.1 - last.1,
                now.2,
                now.2 - last.2,
                now.3
            );
            last = now;
        }
    });
}
