//! The HTTP side: `/ws` upgrades after authenticating the token, `/healthz`
//! answers `ok`. `serve(listener, app, shutdown)` runs until `shutdown`
//! resolves, then closes every socket with 1001 and waits for them.

use crate::backend::{Backend, InProcess, Refusal};
use crate::config::{FunctionsKind, ServerArgs, StoreKind};
use crate::embedded::{Committed, EmbeddedStore};
use crate::hub::Hub;
use crate::socket::{run_socket, SocketConfig};
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chat_core::auth::{Authenticator, DEV_SECRET};
use chat_core::fanout::{FeedFedFanout, InProcessFanout};
use chat_core::ids::new_connection_id;
use chat_core::memory::{MemoryConnections, MemoryStore};
use chat_core::ports::{Audience, Fanout, FanoutJob};
use chat_core::ports::{Connections, Store};
use chat_core::protocol::ServerFrame;
use chat_core::service::message_view;
use chat_core::{Chat, Deliverer, Session};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

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
}

impl App {
    /// Wires the services to a store, this node's hub and background fan-out.
    /// Must run inside a tokio runtime (it spawns the fan-out workers).
    pub fn new(store: Arc<dyn Store>, auth: Authenticator, socket: SocketConfig) -> Self {
        Self::with_connections(store, Arc::new(MemoryConnections::new()), auth, socket)
    }

    /// As [`App::new`], with a shared connection map (DynamoDB).
    pub fn with_connections(
        store: Arc<dyn Store>,
        connections: Arc<dyn Connections>,
        auth: Authenticator,
        socket: SocketConfig,
    ) -> Self {
        Self::build(store, connections, auth, socket, None)
    }

    /// The embedded store, whose commit feed delivers messages (in commit
    /// order), so concurrent sends to one conversation share group commits.
    pub fn embedded(store: Arc<EmbeddedStore>, auth: Authenticator, socket: SocketConfig) -> Self {
        let feed = store.commit_feed();
        Self::build(
            store,
            Arc::new(MemoryConnections::new()),
            auth,
            socket,
            feed,
        )
    }

    fn build(
        store: Arc<dyn Store>,
        connections: Arc<dyn Connections>,
        auth: Authenticator,
        socket: SocketConfig,
        feed: Option<tokio::sync::mpsc::UnboundedReceiver<Committed>>,
    ) -> Self {
        let hub = Arc::new(Hub::new(format!("node-{}", &new_connection_id()[..8])));
        let deliverer = Arc::new(Deliverer::new(
            store.clone(),
            connections.clone(),
            hub.clone(),
        ));
        let fanout = Arc::new(InProcessFanout::spawn(deliverer, 8, 4096));
        let map = connections.clone();
        let chat = match feed {
            None => Chat::new(store, connections, fanout),
            Some(mut feed) => {
                let workers = fanout.clone();
                tokio::spawn(async move {
                    // One reader, so each conversation's jobs are queued in id order.
                    while let Some(c) = feed.recv().await {
                        let conv = c.message.conversation_id.clone();
                        let job = FanoutJob {
                            audience: Audience::Conversation(conv.clone()),
                            frame: ServerFrame::Message(message_view(&c.message)),
                            except_connection: c.origin,
                            order_key: conv,
                        };
                        if let Err(e) = workers.dispatch(job).await {
                            tracing::error!(error = %e, "fan-out stopped");
                            break;
                        }
                    }
                });
                Chat::new(store, connections, Arc::new(FeedFedFanout(fanout)))
                    .delivered_by_store_feed()
            }
        };
        let backend = InProcess {
            chat: Arc::new(chat),
            auth,
            node: hub.node().to_string(),
        };
        App {
            backend: Arc::new(backend),
            hub,
            socket,
            connections: Some(map),
        }
    }

    /// Builds the app the flags describe.
    pub async fn from_args(args: &ServerArgs) -> Result<Self, crate::Error> {
        if args.functions == FunctionsKind::Lambda {
            return Self::lambda_from_args(args).await;
        }
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
        let auth = Authenticator::new(secret.as_bytes())
            .map_err(|e| crate::Error::Config(e.to_string()))?;
        let connections: Arc<dyn Connections> = Arc::new(MemoryConnections::new());
        let (store, connections): (Arc<dyn Store>, Arc<dyn Connections>) = match args.store {
            StoreKind::Embedded => {
                let store = Arc::new(EmbeddedStore::open(&args.data_dir)?);
                return Ok(App::embedded(store, auth, args.socket_config()));
            }
            StoreKind::Memory => {
                tracing::warn!("--store memory: nothing survives a restart");
                (Arc::new(MemoryStore::new()), connections)
            }
            #[cfg(feature = "dynamodb")]
            StoreKind::Dynamodb => {
                let tables = chat_dynamo::connect(&args.table_prefix)
                    .await
                    .map_err(|e| crate::Error::Config(e.to_string()))?;
                tracing::info!(endpoint = %tables.endpoint, prefix = %tables.prefix, "DynamoDB store");
                (
                    Arc::new(chat_dynamo::DynamoStore::new(&tables)),
                    Arc::new(chat_dynamo::DynamoConnections::new(&tables)),
                )
            }
            #[cfg(not(feature = "dynamodb"))]
            StoreKind::Dynamodb => {
                return Err(crate::Error::Config(
                    "--store dynamodb needs a build with the `dynamodb` feature: cargo run -p conn-tier --features dynamodb".into(),
                ))
            }
        };
        Ok(App::with_connections(
            store,
            connections,
            auth,
            args.socket_config(),
        ))
    }
}

impl App {
    #[cfg(feature = "lambda")]
    async fn lambda_from_args(args: &ServerArgs) -> Result<Self, crate::Error> {
        let hub = Arc::new(Hub::new(format!("node-{}", &new_connection_id()[..8])));
        let domain = args.management_listen.to_string();
        let backend = Arc::new(
            crate::lambda::LambdaBackend::new(
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
            let tables = chat_dynamo::connect(&args.table_prefix)
                .await
                .map_err(|e| crate::Error::Config(e.to_string()))?;
            let table = tables.name(&chat_dynamo::schema::MESSAGES);
            // Lives as long as the process.
            tokio::spawn(crate::lambda::poll_stream(
                backend.clone(),
                tables,
                table,
                CancellationToken::new(),
            ));
        }
        Ok(App {
            backend,
            hub,
            socket: args.socket_config(),
            connections: None,
        })
    }

    #[cfg(not(feature = "lambda"))]
    async fn lambda_from_args(_args: &ServerArgs) -> Result<Self, crate::Error> {
        Err(crate::Error::Config(
            "--functions lambda needs a build with the `lambda` feature: cargo run -p conn-tier --features lambda".into(),
        ))
    }
}

#[derive(Clone)]
struct Ctx {
    app: App,
    stop: CancellationToken,
    sockets: TaskTracker,
}

/// Serves until `shutdown` resolves; then closes every socket (1001) and
/// waits up to 5 s for them to finish.
pub async fn serve(
    listener: TcpListener,
    app: App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ctx = Ctx {
        app,
        stop: CancellationToken::new(),
        sockets: TaskTracker::new(),
    };
    let router = Router::new()
        .route("/ws", get(ws_handler))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(ctx.clone());
    let stop = ctx.stop.clone();
    tracing::info!(addr = %listener.local_addr()?, "listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutting down");
            stop.cancel();
        })
        .await?;
    ctx.stop.cancel();
    ctx.sockets.close();
    if tokio::time::timeout(Duration::from_secs(5), ctx.sockets.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in time");
    }
    Ok(())
}

/// The token from `?token=` or `Authorization: Bearer`.
fn token(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    if let Some(q) = uri.query() {
        if let Ok(pairs) = serde_urlencoded::from_str::<Vec<(String, String)>>(q) {
            if let Some((_, t)) = pairs.into_iter().find(|(k, _)| k == "token") {
                return Some(t);
            }
        }
    }
    let h = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, t) = h.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| t.trim().to_string())
}

async fn ws_handler(
    State(ctx): State<Ctx>,
    uri: Uri,
    headers: HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // Authenticate before anything else: no upgrade, no record without a valid token.
    let connection_id = new_connection_id();
    let token = token(&uri, &headers);
    let user = match ctx
        .app
        .backend
        .authenticate(token.as_deref(), &connection_id)
        .await
    {
        Ok(u) => u,
        Err(Refusal::Unauthorized(reason)) => {
            tracing::info!(%reason, "refused connection");
            let body = "missing or invalid token: use ?token= or Authorization: Bearer\n";
            return (StatusCode::UNAUTHORIZED, body).into_response();
        }
        Err(Refusal::Failed(reason)) => {
            tracing::error!(%reason, "authorizer failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "authorizer failed\n").into_response();
        }
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let session = Session {
        connection_id,
        user_id: user,
    };
    let Ctx { app, stop, sockets } = ctx;
    // Room for API Gateway's 32 KB frames plus slack; the socket loop
    // enforces the 32 KB limit itself so it can close with 1009.
    upgrade
        .max_message_size(256 * 1024)
        .max_frame_size(256 * 1024)
        // tungstenite's defaults (128 KiB each) would cost an idle connection
        // far more than the frames it carries; grown on demand anyway.
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            sockets.track_future(run_socket(
                socket,
                app.backend,
                app.hub,
                session,
                app.socket,
                stop,
            ))
        })
}

/// Resolves on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
}

/// The `conn-tier` binary's body: build from flags, serve the clients and
/// the management API until Ctrl-C or SIGTERM.
pub async fn run(args: ServerArgs) -> Result<(), crate::Error> {
    let app = App::from_args(&args).await?;
    let io = |context: String| move |source| crate::Error::Io { context, source };
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(io(format!("cannot listen on {}", args.listen)))?;
    let management = TcpListener::bind(args.management_listen)
        .await
        .map_err(io(format!(
            "cannot listen on {} (--management-listen)",
            args.management_listen
        )))?;
    let addr = listener.local_addr().map_err(io("local address".into()))?;
    tracing::info!(url = %format!("ws://{addr}/ws"), store = ?args.store, "chat server ready");
    let stop = CancellationToken::new();
    let mgmt_stop = stop.clone();
    let mgmt = tokio::spawn(crate::mgmt::serve(
        management,
        app.hub.clone(),
        async move { mgmt_stop.cancelled().await },
    ));
    let signal_stop = stop.clone();
    tokio::spawn(async move {
        shutdown_signal().await;
        signal_stop.cancel();
    });
    let served = serve(listener, app, async move { stop.cancelled().await }).await;
    let _ = mgmt.await;
    served.map_err(io("serving".into()))
}
