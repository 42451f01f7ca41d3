//! Wiring: everything a connection needs, built once from the flags: the
//! backend (the services over a store, or the Lambda functions), this
//! node's hub, the socket limits, and the background tasks they own.

use crate::backend::{Backend, InProcess};
use crate::cluster::{new_node_id, Cluster, ClusterConfig};
use crate::config::{FunctionsKind, ServerArgs, Settings, StoreKind};
use crate::error::Error;
use crate::hub::Hub;
use crate::limits::SocketConfig;
use crate::listener::Limits;
use crate::refusals::LogLimiter;
use chat_core::auth::Authenticator;
use chat_core::delivery::{feed, InProcessFanout};
use chat_core::memory::{MemoryConnections, MemoryStore};
use chat_core::ports::{Broadcast, Connections, Delivery, Nodes, Store, StoredMessage};
use chat_core::tasks::Tasks;
use chat_core::{Chat, Deliverer, MessageDelivery};
use chat_management::sigv4::Credential;
use std::net::SocketAddr;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Fan-out worker tasks (each owns the conversations of its shard).
const FANOUT_SHARDS: usize = 8;
/// Jobs queued per fan-out shard before senders wait.
const FANOUT_QUEUE: usize = 4096;
/// Durable messages waiting for delivery before commits wait.
const FEED_BOUND: usize = 8192;

/// What a cluster node keeps its state in ([`App::cluster_node`]).
pub struct NodePorts {
    pub store: Arc<dyn Store>,
    /// The connection map every node shares.
    pub connections: Arc<dyn Connections>,
    /// The node registry.
    pub nodes: Arc<dyn Nodes>,
}

/// How a cluster node reaches the other nodes' connections.
pub struct Remote {
    /// Posts to a connection of another node (its `@connections` API).
    pub posts: Arc<dyn Delivery>,
    /// Hands a large group's frame to each other node (`POST /@broadcast`,
    /// signed: docs/design.md, "Broadcast in conn-tier"); `None` turns
    /// per-node broadcast off.
    pub broadcast: Option<Arc<dyn crate::cluster::broadcast::NodeLink>>,
}

/// How the services reach connections: one at a time (`delivery`), and a
/// large audience at once (`broadcast`: docs/design.md, "Group look-ups").
struct Reach {
    delivery: Arc<dyn Delivery>,
    broadcast: Arc<dyn Broadcast>,
}

/// Everything a connection needs, built once.
#[derive(Clone)]
pub struct App {
    /// Where frames go: in-process services or Lambda functions.
    pub backend: Arc<dyn Backend>,
    /// This node's sockets, for fan-out and the @connections API.
    pub hub: Arc<Hub>,
    pub socket: SocketConfig,
    /// The connection map the in-process services use (`None` when the
    /// functions keep their own).
    pub connections: Option<Arc<dyn Connections>>,
    /// Where a socket reads the messages missing from a conversation's
    /// sequence (`None` when the functions keep order: Lambda mode).
    pub store: Option<Arc<dyn Store>>,
    /// Background work (fan-out workers, the commit-feed bridge, the stream
    /// poller), stopped by [`App::shutdown`].
    pub tasks: Arc<Tasks>,
    /// Caps of both listeners.
    pub limits: Limits,
    /// `--dev` only: mints tokens at `/dev/token`.
    pub dev_tokens: Option<Authenticator>,
    /// Where the `@connections` API listens, if anywhere.
    pub management_addr: Option<SocketAddr>,
    /// The credential `@connections` requests must be signed with.
    pub management: Option<Credential>,
    /// Keeps refused-connection log lines bounded per IP.
    pub refusals: Arc<LogLimiter>,
    /// Permits to record a new connection in the store
    /// (`SocketConfig::max_pending_connects`).
    pub connecting: Arc<tokio::sync::Semaphore>,
    /// This node in the node registry (DynamoDB store): heartbeats, the
    /// janitor, GET /nodes.
    pub cluster: Option<Arc<Cluster>>,
    /// Shutting down: `/healthz` answers 503.
    pub draining: Arc<AtomicBool>,
    /// How long to stay up, unhealthy, before closing sockets.
    pub drain: Duration,
    /// The embedded store and its directory (embedded mode), for the
    /// admin socket's online backup.
    pub embedded: Option<(std::path::PathBuf, Arc<chat_embedded::EmbeddedStore>)>,
}

impl App {
    /// What `/healthz` answers (the load balancer's check): false while
    /// the node drains, or once it is not in the cluster's registry (not
    /// yet listed, or declared dead).
    pub fn healthy(&self) -> bool {
        !self.draining.load(std::sync::atomic::Ordering::Relaxed)
            && self.cluster.as_ref().is_none_or(|c| c.healthy())
    }

    /// The services in this process over `store` and `connections`.
    ///
    /// `feed` is the one delivery choice: with a store's commit feed, the
    /// feed delivers every message in commit order
    /// ([`MessageDelivery::StoreFeed`]); without one, each send dispatches
    /// its own delivery ([`MessageDelivery::Dispatch`]). Must run inside a
    /// tokio runtime (it starts the fan-out workers).
    pub fn in_process(
        store: Arc<dyn Store>,
        connections: Arc<dyn Connections>,
        feed: Option<mpsc::Receiver<StoredMessage>>,
        auth: Authenticator,
        settings: Settings,
    ) -> Self {
        let hub = Arc::new(Hub::with_limits(new_node_id(), true, settings.users));
        let reach = Reach {
            delivery: hub.clone(),
            broadcast: hub.clone(),
        };
        Self::services(store, connections, feed, auth, settings, hub, reach)
    }

    /// The services over these parts: `hub` holds this node's sockets,
    /// `reach` reaches every connection (the hub itself, or the cluster).
    fn services(
        store: Arc<dyn Store>,
        connections: Arc<dyn Connections>,
        feed: Option<mpsc::Receiver<StoredMessage>>,
        auth: Authenticator,
        settings: Settings,
        hub: Arc<Hub>,
        reach: Reach,
    ) -> Self {
        let tasks = Arc::new(Tasks::new());
        let mut deliverer = Deliverer::new(store.clone(), connections.clone(), reach.delivery);
        if settings.broadcast_from_members > 0 {
            deliverer = deliverer.with_broadcast(reach.broadcast, settings.broadcast_from_members);
        }
        let deliverer = Arc::new(deliverer);
        let fanout = Arc::new(InProcessFanout::spawn(
            deliverer,
            FANOUT_SHARDS,
            FANOUT_QUEUE,
            &tasks,
        ));
        let messages = match feed {
            Some(feed) => {
                feed::spawn(feed, fanout.clone(), &tasks);
                MessageDelivery::StoreFeed
            }
            None => MessageDelivery::Dispatch,
        };
        let chat = Chat::new(store.clone(), connections.clone(), fanout, messages)
            .with_limits(settings.chat);
        let backend = InProcess {
            chat: Arc::new(chat),
            auth,
            hub: hub.clone(),
        };
        Self::assemble(
            Arc::new(backend),
            hub,
            Some(connections),
            Some(store),
            tasks,
            settings,
        )
    }

    /// An app of these parts, with `settings`.
    pub fn assemble(
        backend: Arc<dyn Backend>,
        hub: Arc<Hub>,
        connections: Option<Arc<dyn Connections>>,
        store: Option<Arc<dyn Store>>,
        tasks: Arc<Tasks>,
        settings: Settings,
    ) -> Self {
        App {
            backend,
            hub,
            socket: settings.socket.clone(),
            connections,
            store,
            tasks,
            limits: settings.limits,
            dev_tokens: settings.dev_tokens,
            management_addr: settings.management_addr,
            management: settings.management,
            refusals: Arc::new(LogLimiter::default()),
            connecting: Arc::new(tokio::sync::Semaphore::new(
                settings.socket.max_pending_connects.max(1),
            )),
            cluster: None,
            draining: Arc::new(AtomicBool::new(false)),
            drain: settings.drain,
            embedded: None,
        }
    }

    /// The embedded store in `dir`, delivered from its commit feed, with
    /// this node's in-memory connection map.
    pub fn embedded(
        dir: &std::path::Path,
        auth: Authenticator,
        settings: Settings,
    ) -> Result<(Self, Arc<chat_embedded::EmbeddedStore>), Error> {
        let (store, feed) = chat_embedded::EmbeddedStore::open_with_feed_options(
            dir,
            FEED_BOUND,
            settings.embedded,
        )?;
        let store = Arc::new(store);
        let app = Self::in_process(
            store.clone(),
            Arc::new(MemoryConnections::new()),
            Some(feed),
            auth,
            settings,
        );
        Ok((app, store))
    }

    /// Stops the background tasks (after the sockets are closed).
    pub async fn shutdown(&self) {
        if !self.tasks.shutdown(Duration::from_secs(5)).await {
            tracing::warn!("some background tasks did not stop in time");
        }
    }

    /// Builds the app the flags describe.
    pub async fn from_args(args: &ServerArgs) -> Result<Self, Error> {
        if args.functions == FunctionsKind::Lambda {
            return Self::lambda_from_args(args).await;
        }
        let auth = args.authenticator()?;
        let settings = args.settings(&auth)?;
        match args.store {
            StoreKind::Embedded => {
                let (mut app, store) = Self::embedded(&args.data_dir, auth, settings)?;
                app.embedded = Some((args.data_dir.clone(), store));
                Ok(app)
            }
            StoreKind::Memory => {
                tracing::warn!("--store memory: nothing survives a restart");
                Ok(Self::in_process(
                    Arc::new(MemoryStore::new()),
                    Arc::new(MemoryConnections::new()),
                    None,
                    auth,
                    settings,
                ))
            }
            #[cfg(feature = "dynamodb")]
            StoreKind::Dynamodb => Self::dynamodb_from_args(args, auth, settings).await,
            #[cfg(not(feature = "dynamodb"))]
            StoreKind::Dynamodb => Err(Error::Config(
                "--store dynamodb needs a build with the `dynamodb` feature: cargo run -p conn-tier --features dynamodb".into(),
            )),
        }
    }

    /// DynamoDB: this node joins the node registry (heartbeats, janitor);
    /// with `--cluster` it also delivers to the other nodes' connections.
    #[cfg(feature = "dynamodb")]
    async fn dynamodb_from_args(
        args: &ServerArgs,
        auth: Authenticator,
        settings: Settings,
    ) -> Result<Self, Error> {
        let registry = args.registry(&settings)?;
        let tables = chat_dynamo::connect(&args.table_prefix).await?;
        tracing::info!(endpoint = %tables.endpoint, prefix = %tables.prefix, "DynamoDB store");
        let ports = NodePorts {
            store: Arc::new(chat_dynamo::DynamoStore::new(&tables)),
            connections: Arc::new(chat_dynamo::DynamoConnections::new(&tables)),
            nodes: Arc::new(chat_dynamo::DynamoNodes::new(&tables)),
        };
        let remote = match (&settings.management, args.cluster) {
            (Some(cred), true) => Some(Remote {
                posts: Arc::new(
                    chat_dynamo::apigw::ApiGatewayDelivery::signed_with(&cred.key_id, &cred.secret)
                        .await,
                ),
                broadcast: Some(Arc::new(crate::cluster::broadcast::SignedPost::new(
                    cred.clone(),
                ))),
            }),
            _ => None,
        };
        Self::cluster_node(ports, registry, remote, auth, settings).await
    }

    /// A node over these ports that joins the node registry (heartbeats,
    /// the janitor: docs/design.md, "Cluster"). With `remote` it is in a
    /// cluster: it delivers to its own sockets in process and to the other
    /// nodes' through `remote.posts`. DynamoDB mode builds it from the
    /// flags; the simulation (conn-tier/sim) over the memory store and a
    /// simulated network.
    pub async fn cluster_node(
        ports: NodePorts,
        registry: ClusterConfig,
        remote: Option<Remote>,
        auth: Authenticator,
        mut settings: Settings,
    ) -> Result<Self, Error> {
        use crate::cluster::{ClusterBroadcast, ClusterDelivery};
        let hub = Arc::new(
            Hub::with_limits(new_node_id(), true, settings.users)
                .with_endpoint(registry.management_url.clone()),
        );
        let cluster = Cluster::join(
            ports.nodes,
            ports.connections.clone(),
            hub.clone(),
            registry,
        )
        .await
        .map_err(|e| Error::Config(format!("cannot join the node registry: {e}")))?;
        let reach = match remote {
            Some(remote) => {
                let broadcast: Arc<dyn Broadcast> = match remote.broadcast {
                    Some(link) => {
                        Arc::new(ClusterBroadcast::new(hub.clone(), cluster.clone(), link))
                    }
                    // Only this node's connections would get it.
                    None => {
                        settings.broadcast_from_members = 0;
                        hub.clone()
                    }
                };
                Reach {
                    delivery: Arc::new(ClusterDelivery::new(
                        hub.clone(),
                        cluster.clone(),
                        remote.posts,
                    )),
                    broadcast,
                }
            }
            None => Reach {
                delivery: hub.clone(),
                broadcast: hub.clone(),
            },
        };
        let mut app = Self::services(
            ports.store,
            ports.connections,
            None,
            auth,
            settings,
            hub,
            reach,
        );
        cluster.spawn(&app.tasks);
        app.cluster = Some(cluster);
        Ok(app)
    }

    #[cfg(feature = "lambda")]
    async fn lambda_from_args(args: &ServerArgs) -> Result<Self, Error> {
        use chat_local_apigw::lambda::LambdaBackend;
        let auth = args.authenticator()?;
        let settings = args.settings(&auth)?;
        let hub = Arc::new(Hub::with_limits(new_node_id(), false, settings.users));
        let tasks = Arc::new(Tasks::new());
        let Some(management_addr) = settings.management_addr else {
            return Err(Error::Config(
                "--functions lambda needs the @connections API: set --management-listen".into(),
            ));
        };
        if let Some(endpoint) = args.lambda_endpoint.as_deref() {
            check_lambda_endpoint(endpoint).await?;
        }
        let domain = management_addr.to_string();
        let backend = Arc::new(
            LambdaBackend::new(
                args.lambda_endpoint.as_deref(),
                &args.function_prefix,
                &domain,
                &args.stage,
            )
            .await
            .with_invoke_timeout(Duration::from_millis(args.invoke_timeout_ms)),
        );
        tracing::info!(
            endpoint = args.lambda_endpoint.as_deref().unwrap_or("AWS Lambda"),
            prefix = %args.function_prefix,
            callback = %format!("http://{domain}"),
            "functions: Lambda (set CHAT_CALLBACK_URL of the functions to the callback)"
        );
        if args.stream_poll {
            let tables = chat_dynamo::connect(&args.table_prefix).await?;
            let table = tables.name(&chat_dynamo::schema::MESSAGES);
            let poller = backend.clone();
            tasks.spawn(move |stop| {
                chat_local_apigw::stream::poll_stream(poller, tables, table, stop)
            });
        }
        Ok(Self::assemble(backend, hub, None, None, tasks, settings))
    }

    #[cfg(not(feature = "lambda"))]
    async fn lambda_from_args(_args: &ServerArgs) -> Result<Self, Error> {
        Err(Error::Config(
            "--functions lambda needs a build with the `lambda` feature: cargo run -p conn-tier --features lambda".into(),
        ))
    }
}

/// `--functions lambda` pointed at an endpoint nobody listens on would
/// answer every client HTTP 500 and log the cause per request; say it once,
/// at start-up, with what to start.
#[cfg(feature = "lambda")]
async fn check_lambda_endpoint(endpoint: &str) -> Result<(), Error> {
    let uri: axum::http::Uri = endpoint
        .parse()
        .map_err(|e| Error::Config(format!("--lambda-endpoint {endpoint}: {e}")))?;
    let host = uri.host().unwrap_or("127.0.0.1").to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("https") {
            443
        } else {
            80
        });
    let connect = tokio::net::TcpStream::connect((host.as_str(), port));
    let failure = match tokio::time::timeout(Duration::from_secs(3), connect).await {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(e)) => e.to_string(),
        Err(_) => "no answer in 3 s".to_string(),
    };
    Err(Error::Config(format!(
        "cannot reach the Lambda functions at {endpoint} (--lambda-endpoint / CHAT_LAMBDA_ENDPOINT): \
         {failure}. Start them first: scripts/local-cloud up starts everything, or run \
         `cargo lambda watch … -P {port}` as in docs/modes.md, \"The Lambda functions, locally\""
    )))
}
