//! Capacity accounting: the read and write units each call consumes, as
//! DynamoDB on-demand bills them (writes: 1 unit per started KB per item,
//! doubled in a transaction, plus each GSI write; reads: 1 unit per started
//! 4 KB, halved for eventually consistent reads). Emulators report consumed
//! capacity loosely (moto returns a flat 1.0 or 0.5), so the adapters count
//! from the sizes of the items they send and receive, and also keep what the
//! endpoint reported.

use aws_sdk_dynamodb::types::AttributeValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters in thousandths of a unit.
#[derive(Default, Debug)]
pub struct Meter {
    read_milli: AtomicU64,
    write_milli: AtomicU64,
    reported_milli: AtomicU64,
    calls: AtomicU64,
}

/// A snapshot of a [`Meter`].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Usage {
    pub read_units: f64,
    pub write_units: f64,
    /// What the endpoint reported through ReturnConsumedCapacity.
    pub reported_units: f64,
    pub calls: u64,
}

impl std::ops::Sub for Usage {
    type Output = Usage;
    fn sub(self, o: Usage) -> Usage {
        Usage {
            read_units: self.read_units - o.read_units,
            write_units: self.write_units - o.write_units,
            reported_units: self.reported_units - o.reported_units,
            calls: self.calls - o.calls,
        }
    }
}

impl Meter {
    pub fn usage(&self) -> Usage {
        Usage {
            read_units: self.read_milli.load(Ordering::Relaxed) as f64 / 1000.0,
            write_units: self.write_milli.load(Ordering::Relaxed) as f64 / 1000.0,
            reported_units: self.reported_milli.load(Ordering::Relaxed) as f64 / 1000.0,
            calls: self.calls.load(Ordering::Relaxed),
        }
    }

    /// A write of one item of `bytes`, `gsi` index writes, in a transaction or not.
    pub fn write(&self, bytes: usize, gsi: usize, transactional: bool) {
        let units = bytes.div_ceil(1024).max(1) as u64 * (1 + gsi as u64);
        let units = if transactional { units * 2 } else { units };
        self.write_milli.fetch_add(units * 1000, Ordering::Relaxed);
    }

    /// A read returning `bytes` in all (a Query sums its items first).
    pub fn read(&self, bytes: usize, consistent: bool) {
        let units = bytes.div_ceil(4096).max(1) as u64 * 1000;
        self.read_milli.fetch_add(
            if consistent { units } else { units / 2 },
            Ordering::Relaxed,
        );
    }

    /// One call, and the units the endpoint reported for it, if any.
    pub fn call(&self, reported: Option<f64>) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if let Some(units) = reported {
            self.reported_milli
                .fetch_add((units * 1000.0) as u64, Ordering::Relaxed);
        }
    }
}

/// An item's size as DynamoDB counts it: attribute names plus values.
pub fn item_size(item: &HashMap<String, AttributeValue>) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(n) => n.trim_start_matches('-').len().div_ceil(2) + 1,
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::L(l) => 3 + l.iter().map(|x| 1 + value_size(x)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, x)| 1 + k.len() + value_size(x))
                .sum::<usize>()
        }
        AttributeValue::Ss(s) => s.iter().map(String::len).sum(),
        AttributeValue::Ns(s) => s.iter().map(|n| n.len().div_ceil(2) + 1).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_follow_dynamodb_rounding() {
        let m = Meter::default();
        m.write(1024, 0, false);
        m.write(1025, 0, false);
        m.write(100, 1, false);
        m.write(100, 0, true);
        assert_eq!(m.usage().write_units, 1.0 + 2.0 + 2.0 + 2.0);
        m.read(4096, true);
        m.read(4097, false);
        m.read(10, false);
        assert_eq!(m.usage().read_units, 1.0 + 1.0 + 0.5);
    }

    #[test]
    fn item_size_counts_names_and_values() {
        let mut item = HashMap::new();
        item.insert("text".to_string(), AttributeValue::S("héllo".into()));
        item.insert("id".to_string(), AttributeValue::N("123".into()));
        assert_eq!(item_size(&item), 4 + 6 + 2 + 3);
    }
}
