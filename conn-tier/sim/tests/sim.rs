//! The cluster simulation (docs/design.md, "Simulation"; docs/testing.md):
//! a healthy run, then as many seeded runs with faults as fit in the
//! budget. A failure prints its seed; `SIM_SEED=<seed>` runs that seed
//! alone (its faults and the clients' choices again, docs/design.md says
//! what does not replay exactly). `SIM_SECS` sets the budget (60 s by
//! default; a nightly soak: `SIM_SECS=3600`), `SIM_FIRST_SEED` where the
//! seeds start, `SIM_USERS` how many users (12 by default, two devices
//! each; at least 4).

use chat_sim::{faults, run, Options, Outcome};
use std::time::{Duration, Instant};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

fn show(o: &Outcome) -> String {
    format!(
        "seed {}: {} faults, {} sends acked, {} messages delivered, {} resends, {} connections; {} broken{}",
        o.seed,
        o.faults.len(),
        o.acked,
        o.delivered,
        o.resends,
        o.connections,
        o.broken.len(),
        o.broken
            .iter()
            .take(30)
            .map(|b| format!("\n  {b}"))
            .collect::<String>()
    )
}

#[test]
fn a_healthy_cluster_keeps_every_promise() {
    let o = run(&Options {
        no_faults: true,
        ..Options::seed(7)
    });
    eprintln!("{}", show(&o));
    assert!(o.broken.is_empty(), "{}", show(&o));
    assert!(o.acked > 100, "the clients sent: {}", show(&o));
    assert!(
        o.moves.len() == 1 && o.moves[0].back.is_some(),
        "the member was removed and added back: {:?}",
        o.moves
    );
    assert!(o.delivered > o.acked, "and received: {}", show(&o));
}

#[test]
fn every_promise_holds_under_seeded_faults() {
    let seeds: Box<dyn Iterator<Item = u64>> = match env("SIM_SEED") {
        Some(s) => Box::new(std::iter::once(s)),
        None => Box::new(env("SIM_FIRST_SEED").unwrap_or(1)..),
    };
    let budget = Duration::from_secs(env("SIM_SECS").unwrap_or(60));
    let started = Instant::now();
    let mut runs = 0;
    let users = env("SIM_USERS").map(|u| u.max(4) as usize);
    for seed in seeds {
        let o = run(&Options {
            users: users.unwrap_or(Options::seed(seed).users),
            ..Options::seed(seed)
        });
        runs += 1;
        eprintln!("{}", show(&o));
        assert!(
            o.broken.is_empty(),
            "{}\nfaults: {:?}\nmember moves: {:?}\nreplay: SIM_SEED={seed} cargo test -p chat-sim --release --test sim every_promise",
            show(&o),
            o.faults,
            o.moves
        );
        if started.elapsed() >= budget || env("SIM_SEED").is_some() {
            break;
        }
    }
    let per_min = runs as f64 * 60.0 / started.elapsed().as_secs_f64();
    eprintln!(
        "{runs} seeds in {:?}: {per_min:.1} seeds per minute",
        started.elapsed()
    );
}

#[test]
fn a_seed_draws_the_same_faults_at_the_same_times() {
    let load = Duration::from_secs(30);
    for seed in [1, 2, 501] {
        let a = faults::schedule(seed, 3, load);
        assert_eq!(a, faults::schedule(seed, 3, load));
        assert!(a.len() >= 5, "seed {seed}: {a:?}");
        assert!(
            a.iter().all(|f| f.at + f.lasts <= load),
            "healed by the load's end"
        );
    }
    assert_ne!(faults::schedule(1, 3, load), faults::schedule(2, 3, load));
}

/// The seeds that found bugs, kept (docs/design.md, "Simulation"):
/// - the healthy run (seed 7, no faults): a member removed and added back
///   got every message of its absence from its connection's gap read;
/// - seed 1: without the 1013 close, a connection whose gap read failed
///   (its node cut off from the store) skipped the gap; and a message
///   stored before the member was added back, delivered after, reached it;
/// - seed 7: a join point that could not be read (the store cut) let a
///   message from before the re-join through;
/// - seed 8: the moved member's skips across its absence (the check's own
///   bug: it first excused only ids after the removal was asked for).
#[test]
fn the_seeds_that_found_bugs_keep_every_promise() {
    for seed in [1, 7, 8] {
        let o = run(&Options::seed(seed));
        assert!(
            o.broken.is_empty(),
            "{}\nmember moves: {:?}",
            show(&o),
            o.moves
        );
    }
}
