//! A deterministic simulation of a conn-tier cluster (issue: "every
//! promise checked under thousands of seeded faults"; docs/design.md,
//! "Simulation"). Three real conn-tier nodes (the [`conn_tier::app::App`]
//! of a cluster node: services, hub, socket loop and sequencer, registry,
//! heartbeats, janitor, delivery between nodes) run as turmoil hosts over
//! one memory store; devices, two per user, run on a turmoil client per user and
//! behave as real clients do. A seed draws the faults (partitions and held
//! segments between nodes, crashes and restarts, a node cut off from the
//! store, clocks that are off and jump) and every choice the clients
//! make; after the run the promises of docs/protocol.md are checked
//! ([`check`]). A seed replays exactly: the same run, event for event
//! ([`Outcome::fingerprint`]).
//!
//! # Layout
//! - this file: [`run`], one seeded run and its [`Outcome`];
//! - [`node`]: a node as a turmoil host;
//! - [`lb`]: the load balancer in front of them;
//! - [`net`]: frames as lines over turmoil TCP (the socket loop's seam);
//! - [`post`]: posts between nodes (the `@connections` stand-in);
//! - [`cut`]: a node's link to the store, which a fault cuts;
//! - [`client`]: a device;
//! - [`faults`]: the seeded schedule of faults;
//! - [`clock`]: each node's skewed clock, and seeded ids;
//! - [`world`]: what the hosts of a run share, and the devices' reports;
//! - [`check`]: the promises;
//! - [`rng`]: the seeded generator.

pub mod check;
pub mod client;
pub mod clock;
pub mod cut;
pub mod faults;
pub mod lb;
pub mod net;
pub mod node;
pub mod post;
pub mod rng;
pub mod world;

use chat_core::memory::{MemoryConnections, MemoryStore};
use faults::{Fault, Kind};
use node::{host, run_node, Shared};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use world::{World, NODES};

/// One run's shape.
#[derive(Debug, Clone)]
pub struct Options {
    pub seed: u64,
    /// Clients send, and faults happen, for this long...
    pub load: Duration,
    /// ...then nothing fails for this long (clients sync afresh halfway).
    pub settle: Duration,
    /// Users (at least 4: the group's admin and the member it moves are
    /// among them), each with `devices` devices.
    pub users: usize,
    pub devices: usize,
    /// Draw no faults (a healthy cluster).
    pub no_faults: bool,
    /// Groups of 4 or more go to each node once (per-node broadcast), as
    /// the server does past `--broadcast-from-members`; off, each member is
    /// looked up. Drawn from the seed: half the seeds each way.
    pub broadcast: bool,
}

impl Options {
    pub fn seed(seed: u64) -> Self {
        Options {
            seed,
            load: Duration::from_secs(30),
            settle: Duration::from_secs(30),
            users: 24,
            devices: 2,
            no_faults: false,
            broadcast: rng::Rng::fork(seed, 5).chance(5),
        }
    }
}

/// What a run did and what it broke.
#[derive(Debug)]
pub struct Outcome {
    pub seed: u64,
    pub faults: Vec<Fault>,
    /// Broken promises (empty: every promise held).
    pub broken: Vec<String>,
    pub acked: usize,
    pub delivered: usize,
    pub resends: usize,
    pub connections: usize,
    /// The moved member's absences, as done.
    pub moves: Vec<world::Away>,
    /// Whether groups went to each node once (per-node broadcast), and
    /// how many such posts between nodes were answered.
    pub broadcast: bool,
    pub broadcasts: usize,
    /// Each node's clock skew at the start, in milliseconds.
    pub skews: Vec<i64>,
    /// A hash of everything every device saw, in order, with the node
    /// that served it and when: two runs of one seed give the same.
    pub fingerprint: u64,
}

/// Runs one seeded simulation and checks it.
pub fn run(opts: &Options) -> Outcome {
    let skews = clock::start(opts.seed, NODES);
    let shared = Arc::new(Shared {
        store: Arc::new(MemoryStore::new()),
        registry: Arc::new(MemoryConnections::new()),
        switches: (0..NODES).map(|_| Default::default()).collect(),
        declared: Default::default(),
        broadcast_from: if opts.broadcast { 4 } else { 0 },
        broadcasts: Default::default(),
    });
    let world = Arc::new(World::new(shared.clone()));
    let end = opts.load + opts.settle;
    let mut sim = turmoil::Builder::new()
        .simulation_duration(end + Duration::from_secs(60))
        .rng_seed(opts.seed)
        // Hosts run in a seeded random order each step.
        .enable_random_order()
        .epoch(SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .build();
    for i in 0..NODES {
        let shared = shared.clone();
        sim.host(host(i), move || run_node(i, shared.clone()));
    }
    sim.host(lb::LB, lb::run_lb);
    // One host per user, its devices side by side on it (a phone and a
    // laptop behind one address): turmoil's cost per step grows with the
    // square of its hosts (its links), and with a host per device one run
    // of 24 users took 18.7 s instead of 5.2 s (seed 5).
    for u in 0..opts.users {
        let (world, o) = (world.clone(), opts.clone());
        sim.client(client::host_of(u), async move {
            let devices = (0..o.devices).map(|d| {
                let world = world.clone();
                async move {
                    let device = client::Device::new(u, d, o.users, o.seed, world.clone());
                    let report = device
                        .run(o.load, o.load + o.settle / 2, o.load + o.settle)
                        .await;
                    world.add_report(report);
                }
            });
            futures_util::future::join_all(devices).await;
            Ok(())
        });
    }
    let faults = if opts.no_faults {
        vec![]
    } else {
        let mut f = faults::schedule(opts.seed, NODES, opts.load);
        f.extend(faults::clock_jumps(opts.seed, NODES, opts.load));
        f.sort_by_key(|f| f.at);
        f
    };
    // (when, fault, starts)
    let mut events: Vec<(Duration, usize, bool)> = faults
        .iter()
        .enumerate()
        .flat_map(|(i, f)| [(f.at, i, true), (f.at + f.lasts, i, false)])
        .collect();
    events.sort_by_key(|e| (e.0, !e.2));
    let mut next = 0;
    let mut broken = Vec::new();
    loop {
        while next < events.len() && events[next].0 <= sim.elapsed() {
            let (_, i, starts) = events[next];
            apply(&mut sim, &shared, &faults[i], starts);
            next += 1;
        }
        match sim.step() {
            Ok(true) => break,
            Ok(false) => {}
            Err(e) => {
                broken.push(format!("the simulation failed: {e}"));
                break;
            }
        }
    }
    clock::end();
    let reports = world.take_reports();
    let moves = world.moves();
    let group = world.group();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    broken.extend(rt.block_on(check::check(&shared, &reports, group.as_deref(), &moves)));
    Outcome {
        seed: opts.seed,
        faults,
        broken,
        acked: reports.values().map(|r| r.acked.len()).sum(),
        delivered: reports.values().map(|r| r.got.len()).sum(),
        resends: reports.values().map(|r| r.resends).sum(),
        connections: reports.values().map(|r| r.connections).sum(),
        moves: moves.away.clone(),
        broadcast: opts.broadcast,
        broadcasts: shared.broadcasts.load(std::sync::atomic::Ordering::Relaxed),
        skews,
        fingerprint: fingerprint(&reports),
    }
}

/// A hash of what every device saw, in the order it saw it.
fn fingerprint(reports: &std::collections::BTreeMap<(String, String), world::DeviceReport>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (who, r) in reports {
        who.hash(&mut h);
        r.served.hash(&mut h);
        r.seen.hash(&mut h);
        r.closes.hash(&mut h);
        (r.connections, r.resends).hash(&mut h);
    }
    h.finish()
}

fn apply(sim: &mut turmoil::Sim<'_>, shared: &Shared, f: &Fault, starts: bool) {
    tracing::info!(fault = ?f.kind, starts, at = ?sim.elapsed(), "fault");
    match (f.kind, starts) {
        (Kind::Partition(a, b), true) => sim.partition(host(a), host(b)),
        (Kind::Partition(a, b), false) => sim.repair(host(a), host(b)),
        (Kind::Hold(a, b), true) => sim.hold(host(a), host(b)),
        (Kind::Hold(a, b), false) => sim.release(host(a), host(b)),
        (Kind::Crash(n), true) => sim.crash(host(n)),
        (Kind::Crash(n), false) => sim.bounce(host(n)),
        (Kind::StoreCut(n), c) => shared.switches[n].set(c),
        (Kind::ClockJump(n, by), starts) => clock::jump(n, if starts { by } else { -by }),
    }
}
