//! The hash maps of the server's state (hub, sequencer, registry, memory
//! store). Normally std's, keyed at random per process, so a client cannot
//! choose keys that collide. With the feature `deterministic` (only the
//! cluster simulation, conn-tier/sim, turns it on) the keys are fixed, so
//! the maps iterate in the same order in every run of a seed and the run
//! replays exactly (docs/design.md, "Simulation").

#[cfg(not(feature = "deterministic"))]
pub type State = std::collections::hash_map::RandomState;
#[cfg(feature = "deterministic")]
pub type State = std::hash::BuildHasherDefault<std::collections::hash_map::DefaultHasher>;

pub type HashMap<K, V> = std::collections::HashMap<K, V, State>;
pub type HashSet<K> = std::collections::HashSet<K, State>;
