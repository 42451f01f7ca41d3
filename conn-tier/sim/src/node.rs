//! One conn-tier node as a turmoil host: the real [`App`] of a cluster
//! node (services, hub, socket loop and sequencer, cluster registry,
//! heartbeats, janitor, delivery to other nodes), over the shared memory
//! store behind this node's [`Switch`], taking clients on [`CLIENT_PORT`]
//! (the line protocol of [`crate::net`]) and other nodes' posts on
//! [`POST_PORT`]. A crash drops all of it; a restart builds a new node
//! (a new node id) over the same store, as a restarted process would.

use crate::cut::{Cut, Switch};
use crate::net::lines_socket;
use crate::post::{serve_posts, SimPost, POST_PORT};
use chat_core::auth::Authenticator;
use chat_core::ids::{new_connection_id, DeviceId, UserId};
use chat_core::memory::{MemoryConnections, MemoryStore};
use chat_core::Session;
use conn_tier::app::{App, NodePorts, Remote};
use conn_tier::cluster::ClusterConfig;
use conn_tier::config::Settings;
use conn_tier::hub::UserLimits;
use conn_tier::limits::close::SERVICE_RESTART;
use conn_tier::limits::SocketConfig;
use conn_tier::socket::run_socket;
use std::sync::Arc;
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
}

/// A node's host name.
pub fn host(i: usize) -> String {
    format!("node{i}")
}

/// Runs node `i` until the simulation ends or crashes it.
pub async fn run_node(i: usize, shared: Arc<Shared>) -> turmoil::Result {
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
            nodes: Arc::new(Cut::new(shared.registry.clone(), switch.clone())),
        };
        let remote = Remote {
            posts: Arc::new(SimPost),
            broadcast: None,
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
            let session = Session::new(new_connection_id(), user_id)
                .with_device(DeviceId::parse(device).ok());
            run_socket(lines_socket(read, write), app, session, ticket, stop).await;
            Ok::<_, std::io::Error>(())
        });
    }
}
