//! Wiring: everything a connection needs, built once from the flags: the
//! backend (the services over a store, or the Lambda functions), this
//! node's hub, the socket limits, and the background tasks they own.

use crate::backend::{Backend, InProcess};
use crate::config::{FunctionsKind, ServerArgs, StoreKind};
use crate::error::Error;
use crate::hub::Hub;
use crate::socket::SocketConfig;
use chat_core::auth::{Authenticator, DEV_SECRET};
use chat_core::delivery::{feed, InProcessFanout};
use chat_core::ids::new_connection_id;
use chat_core::memory::{MemoryConnections, MemoryStore};
use chat_core::ports::{Connections, Store, StoredMessage};
use chat_core::tasks::Tasks;
use chat_core::{Chat, Deliverer, MessageDelivery};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// Fan-out worker tasks (each owns the conversations of its shard).
const FANOUT_SHARDS: usize = 8;
/// Jobs queued per fan-out shard before senders wait.
const FANOUT_QUEUE: usize = 4096;
/// Durable messages waiting for delivery before commits wait.
const FEED_BOUND: usize = 8192;

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
}

impl App {
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
        socket: SocketConfig,
    ) -> Self {
        let hub = Arc::new(Hub::new(
            format!("node-{}", &new_connection_id()[..8]),
            true,
        ));
        let tasks = Arc::new(Tasks::new());
        let deliverer = Arc::new(Deliverer::new(
            store.clone(),
            connections.clone(),
            hub.clone(),
        ));
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
        let chat = Chat::new(store.clone(), connections.clone(), fanout, messages);
        let backend = InProcess {
            chat: Arc::new(chat),
            auth,
            node: hub.node().to_string(),
        };
        App {
            backend: Arc::new(backend),
            hub,
            socket,
            connections: Some(connections),
            store: Some(store),
            tasks,
        }
    }

    /// The embedded store in `dir`, delivered from its commit feed, with
    /// this node's in-memory connection map.
    pub fn embedded(
        dir: &std::path::Path,
        auth: Authenticator,
        socket: SocketConfig,
    ) -> Result<(Self, Arc<chat_embedded::EmbeddedStore>), Error> {
        let (store, feed) = chat_embedded::EmbeddedStore::open_with_feed(dir, FEED_BOUND)?;
        let store = Arc::new(store);
        let app = Self::in_process(
            store.clone(),
            Arc::new(MemoryConnections::new()),
            Some(feed),
            auth,
            socket,
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
        let auth = authenticator(args)?;
        let socket = args.socket_config();
        match args.store {
            StoreKind::Embedded => Ok(Self::embedded(&args.data_dir, auth, socket)?.0),
            StoreKind::Memory => {
                tracing::warn!("--store memory: nothing survives a restart");
                Ok(Self::in_process(
                    Arc::new(MemoryStore::new()),
                    Arc::new(MemoryConnections::new()),
                    None,
                    auth,
                    socket,
                ))
            }
            #[cfg(feature = "dynamodb")]
            StoreKind::Dynamodb => {
                let tables = chat_dynamo::connect(&args.table_prefix).await?;
                tracing::info!(endpoint = %tables.endpoint, prefix = %tables.prefix, "DynamoDB store");
                Ok(Self::in_process(
                    Arc::new(chat_dynamo::DynamoStore::new(&tables)),
                    Arc::new(chat_dynamo::DynamoConnections::new(&tables)),
                    None,
                    auth,
                    socket,
                ))
            }
            #[cfg(not(feature = "dynamodb"))]
            StoreKind::Dynamodb => Err(Error::Config(
                "--store dynamodb needs a build with the `dynamodb` feature: cargo run -p conn-tier --features dynamodb".into(),
            )),
        }
    }

    #[cfg(feature = "lambda")]
    async fn lambda_from_args(args: &ServerArgs) -> Result<Self, Error> {
        use chat_local_apigw::lambda::LambdaBackend;
        let hub = Arc::new(Hub::new(
            format!("node-{}", &new_connection_id()[..8]),
            false,
        ));
        let tasks = Arc::new(Tasks::new());
        let domain = args.management_listen.to_string();
        let backend = Arc::new(
            LambdaBackend::new(
                args.lambda_endpoint.as_deref(),
                &args.function_prefix,
                &domain,
                &args.stage,
            )
            .await,
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
        Ok(App {
            backend,
            hub,
            socket: args.socket_config(),
            connections: None,
            store: None,
            tasks,
        })
    }

    #[cfg(not(feature = "lambda"))]
    async fn lambda_from_args(_args: &ServerArgs) -> Result<Self, Error> {
        Err(Error::Config(
            "--functions lambda needs a build with the `lambda` feature: cargo run -p conn-tier --features lambda".into(),
        ))
    }
}

/// The JWT verifier of the flags; the public development secret, with a
/// loud warning, when none is set.
fn authenticator(args: &ServerArgs) -> Result<Authenticator, Error> {
    let secret = match &args.jwt_secret {
        Some(s) if !s.is_empty() => s.clone(),
        _ => {
            tracing::warn!(
                "NO --jwt-secret / CHAT_JWT_SECRET SET: using the public development secret. \
                 Anyone can mint tokens for any user. Never run this way in production."
            );
            DEV_SECRET.to_string()
        }
    };
    Authenticator::new(secret.as_bytes()).map_err(|e| Error::Config(e.to_string()))
}
