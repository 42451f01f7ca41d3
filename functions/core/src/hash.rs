//! The hash maps of the server's state (hub, sequencer, registry, memory
//! store). Keyed at random per map, as std's are, so a client cannot
//! choose keys that collide; unless [`fix_keys`] was called in this
//! process (only the cluster simulation, conn-tier/sim, calls it): then
//! every map has the same fixed keys, iterates in the same order in every
//! run of a seed, and the run replays exactly (docs/design.md,
//! "Simulation"). A switch at run time, not a cargo feature: features are
//! merged across a workspace build, and a feature would have given fixed
//! keys to a server built together with the simulation.

use std::collections::hash_map::{DefaultHasher, RandomState};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, Ordering};

pub type HashMap<K, V> = std::collections::HashMap<K, V, State>;
pub type HashSet<K> = std::collections::HashSet<K, State>;

static FIXED: AtomicBool = AtomicBool::new(false);

/// A test seam: maps made from now on have fixed keys.
pub fn fix_keys() {
    FIXED.store(true, Ordering::Relaxed);
}

/// A map's hash keys: random (std's), or fixed ([`fix_keys`]).
#[derive(Clone, Debug)]
pub struct State(Option<RandomState>);

impl Default for State {
    fn default() -> Self {
        if FIXED.load(Ordering::Relaxed) {
            State(None)
        } else {
            State(Some(RandomState::new()))
        }
    }
}

impl BuildHasher for State {
    type Hasher = DefaultHasher;

    fn build_hasher(&self) -> DefaultHasher {
        match &self.0 {
            Some(random) => random.build_hasher(),
            None => DefaultHasher::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_are_keyed_at_random_unless_the_keys_were_fixed() {
        let random = (State::default(), State::default());
        // Two random states hash one value differently (2^-64 to collide).
        assert_ne!(random.0.hash_one("x"), random.1.hash_one("x"));
        // (Other tests' maps made from here on get fixed keys: harmless.)
        fix_keys();
        let fixed = (State::default(), State::default());
        assert_eq!(fixed.0.hash_one("x"), fixed.1.hash_one("x"));
    }
}
