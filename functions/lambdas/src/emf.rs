//! The functions' metrics as CloudWatch Embedded Metric Format log lines:
//! the same names conn-tier exports to Prometheus (`chat_core::metrics`),
//! collected during an invocation and written as one JSON line on stdout
//! after it ([`metered`]). CloudWatch turns the line into metrics, with the
//! function as the dimension; a label's value is appended to the name
//! (`chat_deliveries_total.ok`).

use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// A counter's value since the last flush.
#[derive(Default)]
struct Count(AtomicU64);

impl CounterFn for Count {
    fn increment(&self, value: u64) {
        self.0.fetch_add(value, Ordering::Relaxed);
    }
    fn absolute(&self, value: u64) {
        self.0.store(value, Ordering::Relaxed);
    }
}

/// A histogram's values since the last flush.
#[derive(Default)]
struct Values(Mutex<Vec<f64>>);

impl HistogramFn for Values {
    fn record(&self, value: f64) {
        let mut v = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // One invocation records a handful; the bound keeps a long one in check.
        if v.len() < 100 {
            v.push(value);
        }
    }
}

/// The recorder: every metric by its flattened name.
#[derive(Default)]
pub struct Emf {
    counters: Mutex<BTreeMap<String, Arc<Count>>>,
    gauges: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<String, Arc<Values>>>,
}

fn flat(key: &Key) -> String {
    let mut name = key.name().to_string();
    for l in key.labels() {
        name.push('.');
        name.push_str(l.value());
    }
    name
}

fn unit_of(name: &str) -> &'static str {
    if name.ends_with("_seconds") {
        "Seconds"
    } else if name.ends_with("_bytes") {
        "Bytes"
    } else {
        "Count"
    }
}

impl Recorder for Emf {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut m = self.counters.lock().unwrap_or_else(|p| p.into_inner());
        Counter::from_arc(m.entry(flat(key)).or_default().clone())
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        let mut m = self.gauges.lock().unwrap_or_else(|p| p.into_inner());
        Gauge::from_arc(m.entry(flat(key)).or_default().clone())
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut m = self.histograms.lock().unwrap_or_else(|p| p.into_inner());
        Histogram::from_arc(m.entry(flat(key)).or_default().clone())
    }
}

impl Emf {
    /// The EMF object of what was recorded since the last call (and resets
    /// it); `None` when nothing was.
    pub fn take(&self, function: &str) -> Option<Value> {
        let mut fields = Map::new();
        let mut defs = Vec::new();
        let mut add = |name: &str, value: Value| {
            defs.push(json!({"Name": name, "Unit": unit_of(name)}));
            fields.insert(name.to_string(), value);
        };
        for (name, c) in self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let n = c.0.swap(0, Ordering::Relaxed);
            if n > 0 {
                add(name, json!(n));
            }
        }
        for (name, g) in self.gauges.lock().unwrap_or_else(|p| p.into_inner()).iter() {
            let v = f64::from_bits(g.load(Ordering::Relaxed));
            if v != 0.0 {
                add(name, json!(v));
            }
        }
        for (name, h) in self
            .histograms
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            let v = std::mem::take(&mut *h.0.lock().unwrap_or_else(|p| p.into_inner()));
            if !v.is_empty() {
                add(name, json!(v));
            }
        }
        if defs.is_empty() {
            return None;
        }
        let ts = chat_core::time::now_ms();
        fields.insert("function".into(), json!(function));
        fields.insert(
            "_aws".into(),
            json!({
                "Timestamp": ts,
                "CloudWatchMetrics": [{
                    "Namespace": "chat",
                    "Dimensions": [["function"]],
                    "Metrics": defs,
                }]
            }),
        );
        Some(Value::Object(fields))
    }
}

/// The process's recorder, installed on first use (a no-op if another
/// recorder was installed first: then nothing is collected here).
pub fn recorder() -> &'static Arc<Emf> {
    static EMF: OnceLock<Arc<Emf>> = OnceLock::new();
    EMF.get_or_init(|| {
        let emf = Arc::new(Emf::default());
        let _ = metrics::set_global_recorder(ArcRecorder(emf.clone()));
        emf
    })
}

struct ArcRecorder(Arc<Emf>);

impl Recorder for ArcRecorder {
    fn describe_counter(&self, k: KeyName, u: Option<Unit>, d: SharedString) {
        self.0.describe_counter(k, u, d)
    }
    fn describe_gauge(&self, k: KeyName, u: Option<Unit>, d: SharedString) {
        self.0.describe_gauge(k, u, d)
    }
    fn describe_histogram(&self, k: KeyName, u: Option<Unit>, d: SharedString) {
        self.0.describe_histogram(k, u, d)
    }
    fn register_counter(&self, k: &Key, m: &Metadata<'_>) -> Counter {
        self.0.register_counter(k, m)
    }
    fn register_gauge(&self, k: &Key, m: &Metadata<'_>) -> Gauge {
        self.0.register_gauge(k, m)
    }
    fn register_histogram(&self, k: &Key, m: &Metadata<'_>) -> Histogram {
        self.0.register_histogram(k, m)
    }
}

/// Runs one invocation of `function`, then writes what it recorded as one
/// EMF line on stdout (a Lambda runs one invocation at a time).
pub async fn metered<T>(function: &'static str, invocation: impl Future<Output = T>) -> T {
    let (out, line) = metered_line(function, invocation).await;
    if let Some(line) = line {
        println!("{line}");
    }
    out
}

/// [`metered`], returning the EMF object instead of writing it.
pub async fn metered_line<T>(
    function: &'static str,
    invocation: impl Future<Output = T>,
) -> (T, Option<Value>) {
    let emf = recorder();
    let out = invocation.await;
    (out, emf.take(function))
}
