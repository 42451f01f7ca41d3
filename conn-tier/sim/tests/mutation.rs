//! The simulation's checks can fail: with the sequencer's gap read
//! skipped (a gap "filled" with nothing), some seed breaks a promise.
//! Its own test binary: the switch is process-wide.

use chat_sim::{run, Options};
use std::sync::atomic::Ordering;

#[test]
fn a_cluster_that_skips_the_gap_read_is_caught() {
    conn_tier::socket::sequencer::MUTATION_SKIP_GAP_READ.store(true, Ordering::Relaxed);
    for seed in 1..=20 {
        let o = run(&Options::seed(seed));
        // Caught as what it breaks: an id skipped or never delivered.
        if o.broken
            .iter()
            .any(|b| b.contains("skipped") || b.contains("never got"))
        {
            eprintln!(
                "caught at seed {seed} ({} of 20 tried): {}",
                seed,
                o.broken
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("; ")
            );
            return;
        }
        eprintln!("seed {seed}: not caught");
    }
    panic!("20 seeds of a cluster that skips its gap reads, none caught");
}
