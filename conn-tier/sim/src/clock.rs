//! What makes a run replay exactly, kept per run on the simulation's
//! thread (turmoil runs every host on the thread that steps it, and test
//! threads run their seeds side by side):
//!
//! - each node's wall clock: the simulated time, off by the node's own
//!   skew (drawn from the seed, ±2 s, and moved by clock-jump faults). A
//!   node is known by the tokio runtime it runs on ([`enter`]); everyone
//!   else (clients, the load balancer, the checks) reads it unskewed;
//! - random ids (connections, nodes, groups), drawn from the seed.
//!
//! `chat_core::time::set_clock` and `chat_core::ids::set_id_source` point
//! here once per process; a thread with no run here gets `None` and so
//! the real clock and random ids. `chat_core::hash::fix_keys` gives the
//! server's hash maps fixed keys.

use crate::rng::Rng;
use std::cell::RefCell;
use tokio::runtime::Id;

struct Run {
    ids: Rng,
    /// Per node: its skew in milliseconds.
    skew: Vec<i64>,
    /// The runtime each node runs on now (a restart gets a new one).
    runtimes: Vec<(Id, usize)>,
}

thread_local! {
    static RUN: RefCell<Option<Run>> = const { RefCell::new(None) };
}

/// Starts a run of `seed` with `nodes` nodes on this thread; returns the
/// nodes' skews.
pub fn start(seed: u64, nodes: usize) -> Vec<i64> {
    let mut rng = Rng::fork(seed, 3);
    let skew: Vec<i64> = (0..nodes).map(|_| rng.below(4001) as i64 - 2000).collect();
    RUN.with(|r| {
        *r.borrow_mut() = Some(Run {
            ids: Rng::fork(seed, 4),
            skew: skew.clone(),
            runtimes: Vec::new(),
        })
    });
    chat_core::time::set_clock(now_ms);
    chat_core::ids::set_id_source(next_id);
    chat_core::hash::fix_keys();
    if !cfg!(tokio_unstable) {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| {
            eprintln!(
                "warning: built without --cfg tokio_unstable (RUSTFLAGS in the environment \
                 replaces .cargo/config.toml's): seeds will not replay exactly"
            )
        });
    }
    skew
}

/// Ends this thread's run.
pub fn end() {
    RUN.with(|r| *r.borrow_mut() = None);
}

/// Node `node` runs on the current runtime from now on.
pub fn enter(node: usize) {
    let Ok(h) = tokio::runtime::Handle::try_current() else {
        return;
    };
    RUN.with(|r| {
        if let Some(run) = r.borrow_mut().as_mut() {
            run.runtimes.retain(|&(_, n)| n != node);
            run.runtimes.push((h.id(), node));
        }
    });
}

/// Moves node `node`'s clock by `delta_ms`.
pub fn jump(node: usize, delta_ms: i64) {
    RUN.with(|r| {
        if let Some(run) = r.borrow_mut().as_mut() {
            if let Some(s) = run.skew.get_mut(node) {
                *s += delta_ms;
            }
        }
    });
}

/// The wall clock of whoever runs now (`chat_core::time::set_clock`).
fn now_ms() -> Option<u64> {
    let sim = turmoil::since_epoch()?.as_millis() as i64;
    let rt = tokio::runtime::Handle::try_current().ok().map(|h| h.id());
    let skew = RUN.with(|r| {
        let run = r.borrow();
        let run = run.as_ref()?;
        let node = run.runtimes.iter().find(|(id, _)| Some(*id) == rt)?.1;
        run.skew.get(node).copied()
    });
    Some((sim + skew.unwrap_or(0)).max(0) as u64)
}

/// The next random id (`chat_core::ids::set_id_source`).
fn next_id() -> Option<u128> {
    RUN.with(|r| {
        let mut run = r.borrow_mut();
        let rng = &mut run.as_mut()?.ids;
        Some(((rng.next_u64() as u128) << 64) | rng.next_u64() as u128)
    })
}
