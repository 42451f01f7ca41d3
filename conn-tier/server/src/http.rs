//! The HTTP side: `/ws` upgrades after authenticating the token, `/healthz`
//! answers `ok`. [`serve`] runs until its shutdown future resolves, then
//! closes every socket with 1001, waits for them, and stops the app's
//! background tasks. [`run`] is the `conn-tier` binary's body.

use crate::app::App;
use crate::backend::Refusal;
use crate::config::ServerArgs;
use crate::error::Error;
use crate::socket::run_socket;
use axum::extract::ws::{rejection::WebSocketUpgradeRejection, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use chat_core::ids::new_connection_id;
use chat_core::Session;
use std::future::Future;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Largest WebSocket message tungstenite accepts: room above the 32 KB
/// frame limit, which the socket loop enforces itself (to close with 1009).
const MAX_WS_MESSAGE_BYTES: usize = 256 * 1024;

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
    let served = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
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
    served
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
    let deadline = ctx.app.socket.authorizer_timeout;
    let authenticated = tokio::time::timeout(
        deadline,
        ctx.app
            .backend
            .authenticate(token.as_deref(), &connection_id),
    )
    .await;
    let Ok(authenticated) = authenticated else {
        // A cold authorizer (a Lambda compiling or starting): the client
        // gets a clear "try again", not a hang.
        tracing::warn!(?deadline, "the authorizer did not answer in time");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "the authorizer did not answer in time; retry shortly\n",
        )
            .into_response();
    };
    let user = match authenticated {
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
        .max_message_size(MAX_WS_MESSAGE_BYTES)
        .max_frame_size(MAX_WS_MESSAGE_BYTES)
        // tungstenite's defaults (128 KiB each) would cost an idle connection
        // far more than the frames it carries; grown on demand anyway.
        .read_buffer_size(1024)
        .write_buffer_size(0)
        .on_upgrade(move |socket| sockets.track_future(run_socket(socket, app, session, stop)))
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
pub async fn run(args: ServerArgs) -> Result<(), Error> {
    let app = App::from_args(&args).await?;
    let listener = TcpListener::bind(args.listen)
        .await
        .map_err(Error::io(format!(
            "cannot listen on {} (--listen)",
            args.listen
        )))?;
    let management = TcpListener::bind(args.management_listen)
        .await
        .map_err(Error::io(format!(
            "cannot listen on {} (--management-listen)",
            args.management_listen
        )))?;
    let addr = listener.local_addr().map_err(Error::io("local address"))?;
    tracing::info!(url = %format!("ws://{addr}/ws"), store = ?args.store, "chat server ready");
    // The management API stops with the client listener.
    let stop = CancellationToken::new();
    let mgmt = tokio::spawn(chat_local_apigw::management::serve(
        management,
        app.hub.clone(),
        stop.clone().cancelled_owned(),
    ));
    let signalled = stop.clone();
    let served = serve(listener, app, async move {
        shutdown_signal().await;
        signalled.cancel();
    })
    .await;
    stop.cancel();
    let _ = mgmt.await;
    served.map_err(Error::io("serving"))
}
