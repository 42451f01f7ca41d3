//! The HTTP side: `/ws` upgrades after authenticating the token (and
//! admitting the user under the per-user caps; the answer names the node
//! in `x-chat-node`), `/healthz` answers `ok` (503 while draining, or in a
//! cluster while the node is not registered), `/nodes` lists a cluster's
//! live nodes, `/` serves the web client, `/dev/token` mints tokens with
//! `--dev`. [`serve`] runs until its shutdown future resolves, then (a
//! cluster node: after `drain` unhealthy) closes every socket with the
//! shutdown code (1001, or 1012 in a cluster), waits for them, stops the
//! app's background tasks and leaves the node registry.
//! [`run`] is the `conn-tier` binary's body. Both listeners run the
//! capped accept loop of [`crate::listener`].

use crate::app::App;
use crate::backend::Refusal;
use crate::config::ServerArgs;
use crate::error::Error;
use crate::hub::UserRefused;
use crate::listener::Admitted;
use crate::socket::run_socket;
use crate::web;
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Extension;
use axum::Router;
use chat_core::ids::new_connection_id;
use chat_core::Session;
use futures_util::FutureExt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest WebSocket message tungstenite accepts: room above the 32 KB
/// frame limit, which the socket loop enforces itself (to close with 1009).
const MAX_WS_MESSAGE_BYTES: usize = 256 * 1024;

#[derive(Clone)]
struct Ctx {
    /// Shared, not cloned per request or per socket: every socket task
    /// holds this pointer for its whole life (docs/benchmarks.md (c)).
    app: Arc<App>,
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
        app: Arc::new(app),
        stop: CancellationToken::new(),
        sockets: TaskTracker::new(),
    };
    let router = Router::new()
        .route("/ws", get(ws_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/nodes", get(nodes))
        .merge(web::router(ctx.app.dev_tokens.clone()))
        .with_state(ctx.clone());
    let stop = ctx.stop.clone();
    tracing::info!(addr = %listener.local_addr()?, "listening");
    let limits = ctx.app.limits.clone();
    let (draining, drain, cluster) = (
        ctx.app.draining.clone(),
        ctx.app.drain,
        ctx.app.cluster.clone(),
    );
    let served = crate::listener::serve(listener, router, limits, async move {
        shutdown.await;
        // Unhealthy first, so the load balancer sends new clients elsewhere;
        // then stop accepting and close the sockets.
        draining.store(true, Ordering::Relaxed);
        if let Some(c) = &cluster {
            c.drain().await;
        }
        if !drain.is_zero() {
            tracing::info!(?drain, "draining");
            tokio::time::sleep(drain).await;
        }
        tracing::info!("shutting down");
        stop.cancel();
    })
    .await;
    ctx.stop.cancel();
    ctx.sockets.close();
    if tokio::time::timeout(Duration::from_secs(5), ctx.sockets.wait())
        .await
        .is_err()
    {
        tracing::warn!("some connections did not close in time");
    }
    ctx.app.shutdown().await;
    if let Some(c) = &ctx.app.cluster {
        c.leave().await;
    }
    served
}

/// `ok`, or 503 while draining or (in a cluster) not registered: the load
/// balancer's health check.
async fn healthz(State(ctx): State<Ctx>) -> Response {
    if !ctx.app.healthy() {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        "ok".into_response()
    }
}

/// 200 only when this node takes connections, its store can write (as far
/// as it knows: the embedded store's disk and commits) and answers (one
/// small read, at most 2 s): the load balancer's readiness check.
/// `/healthz` stays the cheap liveness check.
async fn readyz(State(ctx): State<Ctx>) -> Response {
    let unavailable = |why: String| (StatusCode::SERVICE_UNAVAILABLE, why).into_response();
    if ctx.app.draining.load(Ordering::Relaxed) {
        return unavailable("draining\n".into());
    }
    if ctx.app.cluster.as_ref().is_some_and(|c| !c.healthy()) {
        return unavailable("not registered in the cluster\n".into());
    }
    if let Some(store) = &ctx.app.store {
        let health = store.health();
        if !health.writable {
            let why = health.problem.unwrap_or_default();
            return unavailable(format!("store cannot write: {why}\n"));
        }
        let probe = store.membership("readyz", "dm#readyz#readyz");
        match tokio::time::timeout(Duration::from_secs(2), probe).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "readiness: the store did not answer");
                return unavailable("store unavailable\n".into());
            }
            Err(_) => return unavailable("store too slow\n".into()),
        }
    }
    "ready".into_response()
}

/// The live nodes of the cluster (404 without a node registry).
async fn nodes(State(ctx): State<Ctx>) -> Response {
    let Some(cluster) = &ctx.app.cluster else {
        return (StatusCode::NOT_FOUND, "no node registry (single node)\n").into_response();
    };
    let me = cluster.node_id();
    let nodes: Vec<serde_json::Value> = cluster
        .live_nodes_now()
        .await
        .into_iter()
        .map(|n| {
            serde_json::json!({
                "node_id": n.node_id,
                "ws_url": n.ws_url,
                "started_at_ms": n.started_at_ms,
                "heartbeat_at_ms": n.heartbeat_at_ms,
                "draining": n.draining,
                "self": n.node_id == me,
            })
        })
        .collect();
    axum::Json(serde_json::json!({ "nodes": nodes })).into_response()
}

/// The token from `?token=` or `Authorization: Bearer`, and the device
/// from `?device=`.
fn credentials(uri: &Uri, headers: &HeaderMap) -> (Option<String>, Option<String>) {
    let pairs: Vec<(String, String)> = uri
        .query()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let device = param("device");
    if let Some(t) = param("token") {
        return (Some(t), device);
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .and_then(|h| h.split_once(' '))
        .and_then(|(scheme, t)| {
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| t.trim().to_string())
        });
    (bearer, device)
}

/// Serves the `@connections` management API of `app`'s hub on its own
/// listener, until `shutdown` resolves.
pub async fn serve_management(
    listener: TcpListener,
    app: &App,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let credential = app.management.clone().ok_or_else(|| {
        std::io::Error::other("the @connections API needs a credential to verify requests")
    })?;
    tracing::info!(addr = %listener.local_addr()?, "@connections management API listening");
    let router = chat_management::api::router(app.hub.clone(), credential);
    // No balancer in front: other nodes connect directly (`Limits::direct`).
    crate::listener::serve(listener, router, app.limits.direct(), shutdown).await
}

/// A 401 before the upgrade: counted, logged (rate limited per IP), and
/// answered with `body`.
fn unauthorized(
    ctx: &Ctx,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    reason: &str,
    body: &'static str,
) -> Response {
    chat_core::metrics::connect("unauthorized");
    let ip = peer.map(|Extension(ConnectInfo(a))| a.ip());
    if ctx.app.refusals.should_log(ip) {
        tracing::info!(%reason, ?ip, "refused connection");
    }
    (StatusCode::UNAUTHORIZED, body).into_response()
}

async fn ws_handler(
    State(ctx): State<Ctx>,
    uri: Uri,
    headers: HeaderMap,
    peer: Option<Extension<ConnectInfo<SocketAddr>>>,
    admitted: Option<Extension<Arc<Admitted>>>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    // In --dev, another site's page could open a socket as anyone: refused.
    if ctx.app.dev_tokens.is_some() && !web::dev_request_allowed(&headers) {
        chat_core::metrics::connect("cross_origin");
        return (
            StatusCode::FORBIDDEN,
            "--dev refuses WebSockets from another site's page (or to a Host that is not an IP address or localhost)\n",
        )
            .into_response();
    }
    // Authenticate before anything else: no upgrade, no record without a valid token.
    let connection_id = new_connection_id();
    let (token, device) = credentials(&uri, &headers);
    let deadline = ctx.app.socket.authorizer_timeout;
    let authenticated = tokio::time::timeout(
        deadline,
        ctx.app
            .backend
            .authenticate(token.as_deref(), device.as_deref(), &connection_id),
    )
    .await;
    let Ok(authenticated) = authenticated else {
        // A cold authorizer (a Lambda compiling or starting): the client
        // gets a clear "try again", not a hang.
        tracing::warn!(?deadline, "the authorizer did not answer in time");
        chat_core::metrics::connect("authorizer_timeout");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "the authorizer did not answer in time; retry shortly\n",
        )
            .into_response();
    };
    let identity = match authenticated {
        Ok(i) => i,
        Err(Refusal::Unauthorized(reason)) => {
            return unauthorized(
                &ctx,
                peer,
                &reason,
                "missing or invalid token: use ?token= or Authorization: Bearer\n",
            )
        }
        Err(Refusal::BadDevice(reason)) => {
            return unauthorized(
                &ctx,
                peer,
                &reason,
                "invalid device: ?device= takes 1 to 64 characters of A-Z a-z 0-9 _ . -\n",
            )
        }
        Err(Refusal::Failed(reason)) => {
            chat_core::metrics::connect("failed");
            tracing::error!(%reason, "authorizer failed");
            return (StatusCode::INTERNAL_SERVER_ERROR, "authorizer failed\n").into_response();
        }
    };
    let upgrade = match upgrade {
        Ok(u) => u,
        Err(rejection) => return rejection.into_response(),
    };
    let ticket = match ctx.app.hub.admit_user(identity.user.as_str()) {
        Ok(t) => t,
        Err(why) => {
            chat_core::metrics::connect(match why {
                UserRefused::TooManyConnections => "too_many_for_user",
                UserRefused::TooFast => "too_fast",
            });
            let body = match why {
                UserRefused::TooManyConnections => format!(
                    "too many open connections for this user (at most {}); close one first\n",
                    ctx.app.hub.max_connections_per_user()
                ),
                UserRefused::TooFast => {
                    "too many frames or connections from this user; slow down\n".into()
                }
            };
            return (
                StatusCode::TOO_MANY_REQUESTS,
                [(header::RETRY_AFTER, "1")],
                body,
            )
                .into_response();
        }
    };
    let session = Session::new(connection_id, identity.user).with_device(identity.device);
    let node = ctx.app.hub.node();
    chat_core::metrics::connect("accepted");
    let Ctx { app, stop, sockets } = ctx;
    // Room for API Gateway's 32 KB frames plus slack; the socket loop
    // enforces the 32 KB limit itself so it can close with 1009.
    let mut response = upgrade
        .max_message_size(MAX_WS_MESSAGE_BYTES)
        .max_frame_size(MAX_WS_MESSAGE_BYTES)
        // tungstenite's defaults (128 KiB each) would cost an idle connection
        // far more than the frames it carries; grown on demand anyway. The
        // writer batches what is queued up to the write buffer's size and
        // flushes once (socket::WRITE_BATCH_BYTES).
        .read_buffer_size(app.socket.read_buffer)
        .write_buffer_size(crate::socket::WRITE_BATCH_BYTES)
        .on_upgrade(move |socket| {
            // The listener's place is held for the socket's whole life. A
            // combinator, not an `async` block: a block would keep the
            // connection's future twice (captured, and moved to be awaited).
            let connection = run_socket(socket, app, session, ticket, stop);
            // A task of its own, tracked for shutdown: awaited inside
            // axum's upgrade task instead, it would sit beside that task's
            // settings (232 B) for the connection's whole life, one
            // allocator size class up (docs/benchmarks.md, (c)).
            sockets.spawn(connection.map(move |()| drop(admitted)));
            std::future::ready(())
        });
    // Which node the client landed on (behind a load balancer).
    if let Ok(v) = header::HeaderValue::from_str(&node) {
        response.headers_mut().insert("x-chat-node", v);
    }
    response
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

/// The `conn-tier` binary: `conn-tier admin …`, or the server.
pub async fn main() -> std::process::ExitCode {
    if crate::admin::asked() {
        return crate::admin::main().await;
    }
    let args = <ServerArgs as clap::Parser>::parse();
    crate::config::init_tracing(args.log_json);
    crate::error::exit_code(run(args).await)
}

/// The server's body: build from flags, serve the clients and
/// the management API until Ctrl-C or SIGTERM.
pub async fn run(args: ServerArgs) -> Result<(), Error> {
    let app = App::from_args(&args).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(Error::io(format!(
            "cannot listen on {} (--listen)",
            args.listen
        )))?;
    let management = match app.management_addr {
        Some(addr) => Some(TcpListener::bind(addr).await.map_err(Error::io(format!(
            "cannot listen on {addr} (--management-listen)"
        )))?),
        None => None,
    };
    let metrics = match args.metrics_listen {
        Some(addr) => {
            let handle = crate::metrics::install()
                .ok_or_else(|| Error::Config("cannot install the metrics recorder".into()))?;
            let l = TcpListener::bind(addr).await.map_err(Error::io(format!(
                "cannot listen on {addr} (--metrics-listen)"
            )))?;
            Some((l, handle))
        }
        None => None,
    };
    let addr = listener.local_addr().map_err(Error::io("local address"))?;
    // In Lambda mode the functions own the store: `--store` is not used.
    let mode = match args.functions {
        crate::config::FunctionsKind::Lambda => "lambda functions".to_string(),
        crate::config::FunctionsKind::InProcess => format!("{:?} store", args.store).to_lowercase(),
    };
    // Scripts and tests wait for "chat server ready url=ws://…": keep it.
    tracing::info!(
        url = %format!("ws://{addr}/ws"),
        web_client = %format!("http://{addr}/"),
        %mode,
        "chat server ready"
    );
    // The management API stops with the client listener.
    let stop = CancellationToken::new();
    let mgmt = match management {
        Some(listener) => {
            let app = app.clone();
            let stopped = stop.clone().cancelled_owned();
            Some(tokio::spawn(async move {
                serve_management(listener, &app, stopped).await
            }))
        }
        None => None,
    };
    // It keeps serving while this node drains (other nodes still post to
    // its connections), and stops once the sockets are closed.
    let metrics_task = metrics.map(|(l, handle)| {
        let stopped = stop.clone().cancelled_owned();
        let limits = app.limits.direct(); // scrapers connect directly
        tokio::spawn(async move { crate::metrics::serve(l, handle, limits, stopped).await })
    });
    // The admin socket (embedded mode): online backups.
    let admin = match &app.embedded {
        Some((dir, store)) => match crate::admin::socket::bind(dir) {
            Ok((l, path)) => {
                let (store, stopped) = (store.clone(), stop.clone().cancelled_owned());
                Some(tokio::spawn(crate::admin::socket::serve(
                    l, path, store, stopped,
                )))
            }
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "no admin socket: `conn-tier admin backup` cannot reach this server (it can back up the data directory once the server is stopped)");
                None
            }
        },
        None => None,
    };
    let served = serve(listener, app, shutdown_signal()).await;
    stop.cancel();
    if let Some(a) = admin {
        let _ = a.await;
    }
    if let Some(m) = mgmt {
        let _ = m.await;
    }
    if let Some(m) = metrics_task {
        let _ = m.await;
    }
    served.map_err(Error::io("serving"))
}
