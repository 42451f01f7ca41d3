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
    /// Acks received before the load's deadline (the rest came while draining).
    pub acked_in_window: u64,
    /// Deliveries received before the load's deadline.
    pub delivered_in_window: u64,
}

impl Default for ConnStats {
    fn default() -> Self {
        ConnStats {
            ack: hist(),
            deliver: hist(),
            acked_in_window: 0,
            delivered_in_window: 0,
        }
    }
}

impl ConnStats {
    /// Adds another connection's figures to these.
    pub fn merge(&mut self, other: &ConnStats) -> anyhow::Result<()> {
        self.ack.add(&other.ack)?;
        self.deliver.add(&other.deliver)?;
        self.acked_in_window += other.acked_in_window;
        self.delivered_in_window += other.delivered_in_window;
        Ok(())
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

    /// Back to zero (between two phases of one run).
    pub fn reset(&self) {
        for c in [&self.sent, &self.acked, &self.delivered, &self.errors] {
            c.store(0, Ordering::Relaxed);
        }
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

/// One of the [`Counters`], for the progress line.
#[derive(Debug, Clone, Copy)]
pub enum Field {
    Sent,
    Acked,
    Delivered,
    Errors,
}

impl Field {
    fn of(self, c: (u64, u64, u64, u64)) -> u64 {
        match self {
            Field::Sent => c.0,
            Field::Acked => c.1,
            Field::Delivered => c.2,
            Field::Errors => c.3,
        }
    }
}

/// What a scenario's progress line shows: each counter under the name of
/// what that scenario counts with it (errors as a total, the rest with a rate).
pub type Shown = &'static [(&'static str, Field)];

/// Prints a progress line every second until `done` is set.
pub fn progress(
    label: String,
    counters: std::sync::Arc<Counters>,
    done: std::sync::Arc<std::sync::atomic::AtomicBool>,
    shown: Shown,
) {
    tokio::spawn(async move {
        let start = Instant::now();
        let mut last = counters.get();
        while !done.load(Ordering::Relaxed) {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let now = counters.get();
            let mut line = format!("[{label} {:>3.0}s]", start.elapsed().as_secs_f64());
            for &(name, field) in shown {
                let (n, before) = (field.of(now), field.of(last));
                match field {
                    Field::Errors => line.push_str(&format!(" {name} {n}")),
                    _ => line.push_str(&format!(" {name} {n} (+{}/s)", n.saturating_sub(before))),
                }
            }
            eprintln!("{line}");
            last = now;
        }
    });
}
