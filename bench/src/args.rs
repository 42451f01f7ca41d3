//! The command line: scenarios and flags.

use clap::{Parser, ValueEnum};
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// (a) durable 1:1 throughput and latency between pairs.
    Direct,
    /// (a') the same against Mosquitto (MQTT QoS 1, persistence on), then ours, pair by pair.
    DirectVsMosquitto,
    /// (b) fan-out latency in a group.
    Group,
    /// (c) idle connections: RSS per connection.
    Idle,
    /// (d) reconnect storm: every client syncs missed messages at once.
    Storm,
    /// (a'') `direct` at rising offered rates against one server: the latency
    /// curve (table, JSON steps, SVG).
    Sweep,
    /// The targets of docs/benchmarks.md from one run: `sweep`, `direct`
    /// at half its saturation, `direct-vs-mosquitto` (`--pin` applies
    /// here), `group` (`--members` at `--group-rate`), `idle`
    /// (`--idle-connections`, warm), `storm` and `disk`, each as its own
    /// run of this binary, on each `--engine` in turn, then one table of
    /// each figure against its target.
    Targets,
    /// The store's engine on disk: a fill flat out for --duration, disk
    /// per message, restart times (after kill -9, after a clean stop),
    /// then --rounds of 10 s at --round-rate on the filled store.
    Disk,
    /// (h) a cluster node's clients after kill -9: `--url` is the node,
    /// `--kill-pid` its process, `--peer-url` the load balancer they
    /// reconnect through; `--clients` of them.
    Failover,
}

#[derive(Debug, Parser)]
#[command(name = "chat-bench", about = "Benchmarks for the chat server")]
pub struct Args {
    #[arg(long, value_enum, default_value = "direct")]
    pub scenario: Scenario,
    /// conn-tier binary to start (default: next to this one).
    #[arg(long)]
    pub server_bin: Option<PathBuf>,
    /// The embedded store's engine of the server it starts (`--engine`
    /// of conn-tier). targets: every part runs on each engine given, one
    /// after the other, and the report compares them.
    #[arg(long, value_delimiter = ',', default_value = "redb")]
    pub engine: Vec<String>,
    /// Use a running server instead (ws://host:port/ws); CPU/RSS are then not reported.
    #[arg(long)]
    pub url: Option<String>,
    /// Run the server inside this process (embedded store in a temp dir):
    /// for smoke runs; CPU and RSS then include the load generator.
    #[arg(long)]
    pub in_process: bool,
    /// direct, with --url: connect the second connection of each pair here
    /// instead (another cluster node: every message then crosses nodes).
    #[arg(long, requires = "url")]
    pub peer_url: Option<String>,
    /// idle, with --url: the server's pid, to read its RSS from /proc.
    #[arg(long, requires = "url")]
    pub server_pid: Option<u32>,
    /// idle: keep the connections open this many seconds after measuring
    /// (several bench processes, one per node, then overlap).
    #[arg(long, default_value_t = 0.0)]
    pub hold: f64,
    /// idle, failover: open at most this many connections per second (0: as
    /// fast as accepted). On the emulator, registering them in the store is
    /// the bottleneck: unpaced, it starves the nodes' heartbeats.
    #[arg(long, default_value_t = 0)]
    pub connect_rate: u64,
    /// idle: each connection first does what a client does before it
    /// idles (a `sync`, then one message received), so the figure counts
    /// the buffers a used connection keeps, not only a fresh one's.
    #[arg(long)]
    pub warm: bool,
    /// failover: the pid of --url's node, killed with SIGKILL.
    #[arg(long, requires = "url")]
    pub kill_pid: Option<i32>,
    /// JWT secret of --url's server.
    #[arg(long, default_value = "bench-secret-of-at-least-32-bytes")]
    pub jwt_secret: String,
    /// Connections (direct: pairs of them; idle: how many to open).
    #[arg(long, default_value_t = 100)]
    pub connections: usize,
    /// Seconds of load.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Messages per second in all (0 = flat out).
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Sweep: offered rates to run, in msgs/s (e.g. 1000,5000,20000); all of
    /// them are run. Default: 1000,2000,5000,10000,20000,40000, then doubling
    /// until two steps in a row achieve < 0.9 × their offer.
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<u64>,
    /// Sweep: no step above this offered rate (0 = no bound).
    #[arg(long, default_value_t = 0)]
    pub max_rate: u64,
    /// Sweep: write the latency curve here (default docs/latency-curve.svg).
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// With at least 2 CPUs: run the server (and Mosquitto) on the first CPU
    /// this process may use (taskset -c) and the load generator on the
    /// second (sched_setaffinity). Not with --in-process.
    #[arg(long)]
    pub pin: bool,
    /// Nagle's algorithm on: `TCP_NODELAY` off on the server's accepted
    /// sockets (`--tcp-nodelay false`) and on the bench's own, nothing else
    /// changed. For the before/after figure in docs/benchmarks.md.
    #[arg(long)]
    pub nagle: bool,
    /// Sends in flight per connection when flat out.
    #[arg(long, default_value_t = 16)]
    pub window: usize,
    /// Text size in bytes.
    #[arg(long, default_value_t = 100)]
    pub text_bytes: usize,
    /// Group size (scenario group).
    #[arg(long, default_value_t = 100)]
    pub members: usize,
    /// disk: runs of 10 s on the filled store.
    #[arg(long, default_value_t = 6)]
    pub rounds: usize,
    /// disk: messages per second in all in each round.
    #[arg(long, default_value_t = 10_000)]
    pub round_rate: u64,
    /// targets: group messages per second in its group part.
    #[arg(long, default_value_t = 1000)]
    pub group_rate: u64,
    /// targets: clients of its reconnect-storm part (each missed --missed).
    #[arg(long, default_value_t = 15_000)]
    pub storm_clients: usize,
    /// targets: connections its idle part opens.
    #[arg(long, default_value_t = 19_000)]
    pub idle_connections: usize,
    /// Clients (scenario storm).
    #[arg(long, default_value_t = 5000)]
    pub clients: usize,
    /// Missed messages per client (scenario storm).
    #[arg(long, default_value_t = 10)]
    pub missed: usize,
    /// Write the JSON report here too.
    #[arg(long)]
    pub json: Option<PathBuf>,
}
