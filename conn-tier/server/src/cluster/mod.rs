//! This node in a cluster of conn-tier nodes sharing DynamoDB
//! (docs/design.md, "Cluster"): its entry in the node registry, kept alive
//! by heartbeats; the janitor that declares silent nodes dead and deletes
//! their connection records; and what a node does when it finds itself
//! declared dead (it closes every socket with 1012 and rejoins under a new
//! id, so nothing it holds is silently unreachable).
//!
//! # Layout
//! - this file: [`Cluster`] (registry entry, heartbeat, janitor, drain);
//! - [`delivery`]: [`ClusterDelivery`], local sockets in process and other
//!   nodes' through their `@connections` API.
//! - [`broadcast`]: [`ClusterBroadcast`], a large group's frame handed once
//!   to each live node, which delivers to its own connections.

pub mod broadcast;
pub mod delivery;

pub use broadcast::ClusterBroadcast;
pub use delivery::ClusterDelivery;

use crate::hub::Hub;
use crate::limits::close::SERVICE_RESTART;
use chat_core::hash::HashMap;
use chat_core::ids::new_connection_id;
use chat_core::ports::{Connections, NodeRecord, Nodes};
use chat_core::tasks::Tasks;
use chat_core::time::now_ms;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How a node takes part in the registry.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Between heartbeats (and janitor rounds).
    pub heartbeat: Duration,
    /// A node silent this long is dead.
    pub dead_after: Duration,
    /// Where other nodes post to this node's connections (its `@connections`
    /// API); `None` when it has none (a node that only cleans up, not in a
    /// cluster).
    pub management_url: Option<String>,
    /// Where clients reach this node (or the load balancer in front).
    pub ws_url: String,
    /// `--cluster`: other nodes deliver to this node's connections. Without
    /// it the node is alone: it registers only so that its connection
    /// records are cleaned up if it dies.
    pub clustered: bool,
}

/// A fresh node id: a restarted node never inherits old records.
pub fn new_node_id() -> String {
    format!("node-{}", &new_connection_id()[..12])
}

/// This node's place in the registry.
pub struct Cluster {
    nodes: Arc<dyn Nodes>,
    connections: Arc<dyn Connections>,
    hub: Arc<Hub>,
    cfg: ClusterConfig,
    state: Mutex<State>,
}

struct State {
    me: NodeRecord,
    /// Whether `me` is in the registry now (false after a failed rejoin).
    joined: bool,
    /// The last heartbeat the registry took.
    last_ok: Instant,
    /// Nodes known dead (declared, or silent past `dead_after` in the last
    /// listing), with when they were seen so: posts to them are skipped.
    dead: HashMap<String, Instant>,
    /// The live nodes of the last listing.
    live: Vec<NodeRecord>,
    draining: bool,
    /// Per node, the last heartbeat value seen and when (this node's
    /// monotonic clock) it was first seen: a node is silent when its value
    /// has not changed for `dead_after` here. Never its wall clock against
    /// ours: a node whose clock is minutes off is not dead for it.
    seen: HashMap<String, (u64, Instant)>,
}

impl State {
    /// How long each node of `list` has been silent, as this node saw its
    /// heartbeat values change; forgets nodes no longer listed.
    fn silences(&mut self, list: &[NodeRecord]) -> Vec<Duration> {
        let now = Instant::now();
        self.seen
            .retain(|id, _| list.iter().any(|n| &n.node_id == id));
        list.iter()
            .map(|n| {
                let e = self
                    .seen
                    .entry(n.node_id.clone())
                    .or_insert((n.heartbeat_at_ms, now));
                if e.0 != n.heartbeat_at_ms {
                    *e = (n.heartbeat_at_ms, now);
                }
                now.duration_since(e.1)
            })
            .collect()
    }
}

impl Cluster {
    /// Registers this node (the hub's id) and returns its handle; call
    /// [`Cluster::spawn`] to start its heartbeats.
    pub async fn join(
        nodes: Arc<dyn Nodes>,
        connections: Arc<dyn Connections>,
        hub: Arc<Hub>,
        cfg: ClusterConfig,
    ) -> chat_core::Result<Arc<Self>> {
        let me = record(&hub.node(), &cfg);
        nodes.join(&me).await?;
        listed(nodes.as_ref(), &me.node_id, cfg.dead_after).await;
        if cfg.clustered {
            tracing::info!(node = %me.node_id, "joined the cluster's node registry");
        } else {
            tracing::info!(
                node = %me.node_id,
                "registered as a single node (no --cluster): the registry only lets a restarted node clean up its old connection records"
            );
        }
        Ok(Arc::new(Cluster {
            nodes,
            connections,
            hub,
            state: Mutex::new(State {
                live: vec![me.clone()],
                me,
                joined: true,
                last_ok: Instant::now(),
                dead: HashMap::default(),
                draining: false,
                seen: HashMap::default(),
            }),
            cfg,
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts the heartbeat loop and the janitor loop, owned by `tasks`.
    /// Two tasks: cleaning up after a dead node of 5,000 connections is
    /// 5,000 deletes, and a heartbeat waiting behind them got this node
    /// declared dead too (seen on the emulator, docs/benchmarks.md (f)).
    pub fn spawn(self: &Arc<Self>, tasks: &Tasks) {
        let me = self.clone();
        every(tasks, self.cfg.heartbeat, move || {
            let me = me.clone();
            async move { me.beat().await }
        });
        // Stopping mid-sweep is safe: the next janitor (any node's) finishes it.
        let me = self.clone();
        every(tasks, self.cfg.heartbeat, move || {
            let me = me.clone();
            async move { me.sweep().await }
        });
    }

    /// This node's id now.
    pub fn node_id(&self) -> String {
        self.state().me.node_id.clone()
    }

    /// Whether posts to `node_id` are worth trying: not known dead.
    pub fn may_reach(&self, node_id: &str) -> bool {
        !self.state().dead.contains_key(node_id)
    }

    /// The live nodes of the last listing (this one included).
    pub fn live_nodes(&self) -> Vec<NodeRecord> {
        self.state().live.clone()
    }

    /// The live nodes now, read from the registry (the last listing if
    /// it cannot be read).
    pub async fn live_nodes_now(&self) -> Vec<NodeRecord> {
        match self.live_nodes_listed().await {
            Ok(list) => list,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the nodes");
                self.live_nodes()
            }
        }
    }

    /// The live nodes, read from the registry now: not declared dead, and
    /// not silent past `dead_after` as this node saw them.
    pub async fn live_nodes_listed(&self) -> chat_core::Result<Vec<NodeRecord>> {
        let list = self.nodes.nodes().await?;
        let silences = self.state().silences(&list);
        Ok(list
            .into_iter()
            .zip(silences)
            .filter(|(n, silent)| !n.dead && *silent <= self.cfg.dead_after)
            .map(|(n, _)| n)
            .collect())
    }

    /// Whether the load balancer should send clients here: registered,
    /// heartbeating, not draining.
    pub fn healthy(&self) -> bool {
        let s = self.state();
        s.joined && !s.draining && s.last_ok.elapsed() <= self.cfg.dead_after
    }

    /// One heartbeat. A node that cannot heartbeat for `dead_after` (cut
    /// off from the store, or hung) counts itself dead, as the others do.
    async fn beat(&self) {
        let (id, draining, joined, stale) = {
            let s = self.state();
            (
                s.me.node_id.clone(),
                s.draining,
                s.joined,
                s.last_ok.elapsed() > self.cfg.dead_after,
            )
        };
        if !joined {
            // The same id: nothing was recorded under it that a janitor
            // would miss, and its connections stay reachable once it joins.
            self.rejoin(id).await;
            return;
        }
        let alive = if stale {
            false
        } else {
            match self.nodes.heartbeat(&id, now_ms(), draining).await {
                Ok(true) => {
                    self.state().last_ok = Instant::now();
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    tracing::warn!(error = %e, "heartbeat failed");
                    true
                }
            }
        };
        if !alive {
            tracing::warn!(node = %id, "this node was declared dead (or could not heartbeat in time): closing its connections with 1012 and rejoining under a new id");
            // The new id first: a connection opened from here on is
            // recorded under it, so none escapes both the close below and
            // the new registration.
            let fresh = new_node_id();
            self.hub.set_node(&fresh);
            self.hub
                .close_all(SERVICE_RESTART, "node restarting; reconnect");
            self.rejoin(fresh).await;
        }
    }

    /// Registers again under `id`, a fresh one after being declared dead
    /// (the old one's records are the janitors' to delete).
    async fn rejoin(&self, id: String) {
        self.hub.set_node(&id);
        let me = record(&id, &self.cfg);
        let ok = match self.nodes.join(&me).await {
            Ok(()) => {
                listed(self.nodes.as_ref(), &id, self.cfg.dead_after).await;
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot rejoin the node registry; retrying");
                false
            }
        };
        let mut s = self.state();
        s.me = me;
        s.joined = ok;
        if ok {
            s.last_ok = Instant::now();
            tracing::info!(node = %id, "rejoined the node registry");
        }
    }

    /// The janitor: lists the nodes, declares the silent ones dead and
    /// deletes dead nodes' connection records, then the nodes. Idempotent:
    /// every live node runs it.
    async fn sweep(&self) {
        let list = match self.nodes.nodes().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list the nodes");
                return;
            }
        };
        let silences = self.state().silences(&list);
        let me = self.node_id();
        let mut live = Vec::new();
        let mut dead = Vec::new();
        for (n, silence) in list.into_iter().zip(silences) {
            if n.node_id == me {
                live.push(n);
            } else if n.dead {
                dead.push(n);
            } else if silence > self.cfg.dead_after {
                if let Ok(true) = self.nodes.declare_dead(&n.node_id, n.heartbeat_at_ms).await {
                    tracing::warn!(node = %n.node_id, silent_ms = silence.as_millis() as u64, "declared a node dead");
                }
                dead.push(n);
            } else {
                live.push(n);
            }
        }
        {
            let mut s = self.state();
            let t = Instant::now();
            for n in &dead {
                s.dead.insert(n.node_id.clone(), t);
            }
            // Forget what was dead long ago (its records are gone).
            s.dead
                .retain(|_, at| t.duration_since(*at) < Duration::from_secs(3600));
            chat_core::metrics::live_nodes(live.len());
            s.live = live;
        }
        for n in dead {
            self.clean(&n.node_id).await;
        }
    }

    /// Deletes a node's connection records, then the node.
    async fn clean(&self, node_id: &str) {
        match self.nodes.connections_of(node_id).await {
            Ok(ids) => {
                for id in &ids {
                    if let Err(e) = self.connections.remove(id).await {
                        tracing::warn!(error = %e, "cannot delete a dead node's connection");
                        return;
                    }
                }
                if !ids.is_empty() {
                    tracing::info!(node = %node_id, connections = ids.len(), "deleted a dead node's connections");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list a dead node's connections");
                return;
            }
        }
        if let Err(e) = self.nodes.forget(node_id).await {
            tracing::warn!(error = %e, "cannot forget a dead node");
        }
    }

    /// Draining (SIGTERM): unhealthy for the load balancer, and marked so
    /// in the registry; posts to this node still arrive.
    pub async fn drain(&self) {
        let id = {
            let mut s = self.state();
            s.draining = true;
            s.me.node_id.clone()
        };
        if let Err(e) = self.nodes.heartbeat(&id, now_ms(), true).await {
            tracing::warn!(error = %e, "cannot record the drain");
        }
    }

    /// Leaves the registry: deletes what is left of this node's
    /// connection records, then the node.
    pub async fn leave(&self) {
        let id = self.node_id();
        self.clean(&id).await;
        tracing::info!(node = %id, "left the node registry");
    }
}

/// Waits (at most `within`) until the registry's listing shows `node_id`.
/// The listing is an index, updated a moment after the write: until it
/// shows this node, another node's broadcast would miss its connections
/// (docs/design.md, "Group look-ups"), so the node takes none before.
async fn listed(nodes: &dyn Nodes, node_id: &str, within: Duration) {
    let started = Instant::now();
    loop {
        match nodes.nodes().await {
            Ok(list) if list.iter().any(|n| n.node_id == node_id) => return,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot list the nodes"),
        }
        if started.elapsed() >= within {
            tracing::warn!(node = %node_id, "the node registry does not list this node yet; going on");
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn record(id: &str, cfg: &ClusterConfig) -> NodeRecord {
    let now = now_ms();
    NodeRecord {
        node_id: id.to_string(),
        management_url: cfg.management_url.clone().unwrap_or_default(),
        ws_url: cfg.ws_url.clone(),
        started_at_ms: now,
        heartbeat_at_ms: now,
        draining: false,
        dead: false,
    }
}

#[cfg(test)]
mod tests;

/// Runs `step` at every tick of `period` (the first after one period) in a
/// task owned by `tasks`, until it is stopped, also mid-step.
fn every<F, Fut>(tasks: &Tasks, period: Duration, step: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    tasks.spawn(move |stop| async move {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = step() => {}
            }
        }
    });
}
