//! The faults of a run, drawn from its seed before it starts: from 3 s
//! into the load until it ends, every 1–4 s one of
//!
//! | fault | rate | lasts |
//! |---|---:|---|
//! | partition between two nodes (both ways) | 3/10 | 1–8 s |
//! | hold between two nodes (segments wait, then arrive together) | 2/10 | 0.5–3 s |
//! | a node crashes, and restarts | 2/10 | down 1–8 s |
//! | a node cut off from the store (calls wait 3 s, then fail) | 2/10 | 1–12 s |
//! | nothing | 1/10 | |
//!
//! Besides those, from their own stream of the seed (so the schedule above
//! is the same with or without them), one node's clock jumps by 0.5–30 s,
//! forwards or back, for 1–10 s, first 2–8 s into the load and then every
//! 5–15 s ([`clock_jumps`]); and each
//! node's clock is off by up to ±2 s from the start (`crate::clock`).
//!
//! Faults overlap. Every fault still on is healed when the load ends, and
//! the run settles with none.

use crate::rng::Rng;
use std::time::Duration;

/// One fault, from `at` for `lasts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fault {
    pub at: Duration,
    pub lasts: Duration,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Partition(usize, usize),
    Hold(usize, usize),
    Crash(usize),
    StoreCut(usize),
    /// Node, milliseconds: its wall clock moves by this much, and back
    /// when the fault ends.
    ClockJump(usize, i64),
}

/// The faults of `seed` for a load of `load`, by start time.
pub fn schedule(seed: u64, nodes: usize, load: Duration) -> Vec<Fault> {
    let mut rng = Rng::fork(seed, 1);
    let mut out = Vec::new();
    let mut at = Duration::from_secs(3);
    let pair = |rng: &mut Rng| {
        let a = rng.below(nodes as u64) as usize;
        let b = (a + 1 + rng.below(nodes as u64 - 1) as usize) % nodes;
        (a, b)
    };
    while at < load {
        let roll = rng.below(10);
        let fault = match roll {
            0..=2 => {
                let (a, b) = pair(&mut rng);
                Some((Kind::Partition(a, b), rng.ms(1000, 8000)))
            }
            3..=4 => {
                let (a, b) = pair(&mut rng);
                Some((Kind::Hold(a, b), rng.ms(500, 3000)))
            }
            5..=6 => Some((
                Kind::Crash(rng.below(nodes as u64) as usize),
                rng.ms(1000, 8000),
            )),
            7..=8 => Some((
                Kind::StoreCut(rng.below(nodes as u64) as usize),
                rng.ms(1000, 12_000),
            )),
            _ => None,
        };
        if let Some((kind, lasts)) = fault {
            let lasts = lasts.min(load.saturating_sub(at));
            out.push(Fault { at, lasts, kind });
        }
        at += rng.ms(1000, 4000);
    }
    out
}

/// The clock jumps of `seed` for a load of `load`, by start time.
pub fn clock_jumps(seed: u64, nodes: usize, load: Duration) -> Vec<Fault> {
    let mut rng = Rng::fork(seed, 2);
    let mut out = Vec::new();
    let mut at = rng.ms(2000, 8000);
    while at < load {
        let node = rng.below(nodes as u64) as usize;
        let by = rng.ms(500, 30_000).as_millis() as i64;
        let by = if rng.chance(5) { by } else { -by };
        let lasts = rng.ms(1000, 10_000).min(load.saturating_sub(at));
        out.push(Fault {
            at,
            lasts,
            kind: Kind::ClockJump(node, by),
        });
        at += rng.ms(5000, 15_000);
    }
    out
}
