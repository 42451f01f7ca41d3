//! One conn-tier node as a turmoil host: the real [`App`] of a cluster
//! node (services, hub, socket loop and sequencer, cluster registry,
//! heartbeats, janitor, delivery to other nodes), over the shared memory
//! store behind this node's [`Switch`], taking clients on [`CLIENT_PORT`]
//! (the line protocol of [`crate::net`]) and other nodes' posts on
//! [`POST_PORT`]. A crash drops all of it; a restart builds a new node
//! (a new node id) over the same store, as a restarted process would.

use crate::cut::{Cut, Switch};
use crate::net::lines_socket;
use crate::post::{serve_posts, SimBroadcast, SimPost, POST_PORT};
use async_trait::async_trait;
use chat_core::auth::Authenticator;
use chat_core::ids::{new_connection_id, DeviceId, UserId};
use chat_core::memory::{MemoryConnections, MemoryStore};
use chat_core::ports::{NodeRecord, Nodes};
use chat_core::Session;
use conn_tier::app::{App, NodePorts, Remote};
use conn_tier::cluster::ClusterConfig;
use conn_tier::config::Settings;
use conn_tier::hub::UserLimits;
use conn_tier::limits::close::SERVICE_RESTART;
use conn_tier::limits::SocketConfig;
use conn_tier::socket::run_socket;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

/// Where a node takes clients.
pub const CLIENT_PORT: u16 = 9000;

/// The registry's timing: the server's defaults (`--heartbeat-ms`,
/// `--dead-after-ms`).
pub const HEARTBEAT: Duration = Duration::from_millis(2000);
pub const DEAD_AFTER: Duration = Duration::from_millis(6000);

/// What every node shares: the store and the connection map / node
/// registry (DynamoDB's tables in a real cluster), and each node's switch.
pub struct Shared {
    pub store: Arc<MemoryStore>,
    pub registry: Arc<MemoryConnections>,
    pub switches: Vec<Switch>,
    /// Node ids declared dead, and when (simulated time): a node must not
    /// serve after (the check allows it [`SERVE_AFTER_DEATH`] to find out).
    pub declared: Mutex<HashMap<String, Duration>>,
    /// `--broadcast-from-members`: a group this large goes to each node
    /// once (0: every member looked up; docs/design.md, "Group look-ups").
    pub broadcast_from: usize,
    /// Broadcasts one node handed to another, and answered.
    pub broadcasts: Arc<std::sync::atomic::AtomicUsize>,
}

/// How long a node declared dead may still serve: until its next
/// heartbeat finds out (one interval, plus a call that hangs while the
/// node is cut off from the store, plus a second of slack).
pub const SERVE_AFTER_DEATH: Duration = Duration::from_secs(2 + 3 + 1);

/// The registry as a node reaches it, noting each declaration of death.
struct Watched {
    inner: Arc<dyn Nodes>,
    shared: Arc<Shared>,
}

#[async_trait]
impl Nodes for Watched {
    async fn join(&self, node: &NodeRecord) -> chat_core::Result<()> {
        self.inner.join(node).await
    }
    async fn heartbeat(&self, id: &str, at_ms: u64, draining: bool) -> chat_core::Result<bool> {
        self.inner.heartbeat(id, at_ms, draining).await
    }
    async fn nodes(&self) -> chat_core::Result<Vec<NodeRecord>> {
        self.inner.nodes().await
    }
    async fn declare_dead(&self, id: &str, seen: u64) -> chat_core::Result<bool> {
        let declared = self.inner.declare_dead(id, seen).await?;
        if declared {
            let at = turmoil::sim_elapsed().unwrap_or_default();
            let mut d = self
                .shared
                .declared
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            d.entry(id.to_string()).or_insert(at);
        }
        Ok(declared)
    }
    async fn connections_of(&self, id: &str) -> chat_core::Result<Vec<String>> {
        self.inner.connections_of(id).await
    }
    async fn forget(&self, id: &str) -> chat_core::Result<()> {
        self.inner.forget(id).await
    }
}

/// A node's host name.
pub fn host(i: usize) -> String {
    format!("node{i}")
}

/// Runs node `i` until the simulation ends or crashes it.
pub async fn run_node(i: usize, shared: Arc<Shared>) -> turmoil::Result {
    crate::clock::enter(i);
    let switch = shared.switches[i].clone();
    let auth = Authenticator::new(&[7u8; 32])?;
    let settings = Settings {
        // Rates are measured by the real clock, which runs faster here.
        users: UserLimits {
            max_connections: 20,
            burst: 1_000_000,
            per_sec: 1_000_000,
        },
        // Pinged every 5 s: a client hears of a crashed node within 15 s.
        socket: SocketConfig {
            shutdown_code: SERVICE_RESTART,
            ..SocketConfig::default()
        }
        .with_ping(Duration::from_secs(5)),
        broadcast_from_members: shared.broadcast_from,
        ..Settings::default()
    };
    let registry = ClusterConfig {
        heartbeat: HEARTBEAT,
        dead_after: DEAD_AFTER,
        management_url: Some(format!("http://{}:{POST_PORT}", host(i))),
        ws_url: format!("{}:{CLIENT_PORT}", host(i)),
        clustered: true,
    };
    // A node that cannot reach the store at start keeps trying, as the
    // process would be restarted until it can.
    let app = loop {
        let ports = NodePorts {
            store: Arc::new(Cut::new(shared.store.clone(), switch.clone())),
            connections: Arc::new(Cut::new(shared.registry.clone(), switch.clone())),
            nodes: Arc::new(Watched {
                inner: Arc::new(Cut::new(shared.registry.clone(), switch.clone())),
                shared: shared.clone(),
            }),
        };
        let remote = Remote {
            posts: Arc::new(SimPost),
            broadcast: Some(Arc::new(SimBroadcast {
                answered: shared.broadcasts.clone(),
            })),
        };
        match App::cluster_node(
            ports,
            registry.clone(),
            Some(remote),
            auth.clone(),
            settings.clone(),
        )
        .await
        {
            Ok(app) => break Arc::new(app),
            Err(e) => {
                tracing::info!(node = i, error = %e, "cannot start yet");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    tracing::info!(node = i, id = %app.hub.node(), "node up");
    let stop = CancellationToken::new();
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(serve_posts(app.hub.clone(), stop.clone()));
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", CLIENT_PORT)).await?;
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => accepted?,
            Some(_) = tasks.join_next() => continue,
        };
        let (app, stop) = (app.clone(), stop.clone());
        tasks.spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut read = BufReader::new(read);
            let mut hello = String::new();
            read.read_line(&mut hello).await?;
            // The balancer's check: what `/healthz` would answer.
            if hello.trim() == "health" {
                let answer: &[u8] = if app.healthy() { b"ok\n" } else { b"down\n" };
                write.write_all(answer).await?;
                return Ok(());
            }
            let mut words = hello.split_whitespace();
            let (Some("hello"), Some(user), Some(device)) =
                (words.next(), words.next(), words.next())
            else {
                return Ok(());
            };
            let Ok(user_id) = UserId::parse(user) else {
                return Ok(());
            };
            let Ok(ticket) = app.hub.admit_user(user) else {
                write.write_all(b"#close 1013 busy\n").await?;
                return Ok(());
            };
            // Which node serves it, for the check that a node declared dead
            // stops serving.
            write
                .write_all(format!("#node {}\n", app.hub.node()).as_bytes())
                .await?;
            let session = Session::new(new_connection_id(), user_id)
                .with_device(DeviceId::parse(device).ok());
            run_socket(lines_socket(read, write), app, session, ticket, stop).await;
            Ok::<_, std::io::Error>(())
        });
    }
}
