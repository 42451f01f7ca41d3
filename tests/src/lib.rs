//! chat-tests: end-to-end tests over real WebSockets on 127.0.0.1, and the
//! store contract suite run against every store adapter.
//!
//! # Layout
//! - `src/lib.rs`: the harness: [`TestServer`] (a conn-tier on port 0 with
//!   its store in a temp dir), [`TestClient`] (a WebSocket client with
//!   timeouts), and the store under test for the contract suite
//!   ([`contract_fixture`]).
//! - `src/bin/conn-tier.rs`: the conn-tier binary, built here so the crash
//!   test can kill a real server process.
//! - `src/cluster.rs`: a real cluster (node processes, HAProxy) and
//!   devices that reconnect through it, for `tests/cluster.rs`.
//! - `tests/`: one file per area (direct chat, groups, bad input, crash,
//!   store contract, cluster, …).
//!
//! The store behind the server is picked by `TEST_STORE`: `embedded` (the
//! default; redb), `fjall` (the embedded store on fjall), `memory`, or `dynamodb` (the emulator at `AWS_ENDPOINT_URL`,
//! tables prefixed with `CHAT_TABLE_PREFIX`; `scripts/test-all` starts it).

pub mod cluster;
pub mod cost;
pub mod order;
pub mod scenarios;

use anyhow::{bail, Context};
use chat_cli::client::{connect, Ws, WsError, WsMessage};
use chat_core::auth::Authenticator;
use chat_core::memory::MemoryConnections;
use chat_core::ports::{Connections, Store};
use conn_tier::config::Settings;
use conn_tier::http::serve;
use conn_tier::limits::SocketConfig;
use conn_tier::App;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Starts `bin` (the conn-tier binary, embedded mode, `data_dir`) as a
/// process of its own on a free port; returns it and its WebSocket URL
/// once ready.
pub async fn spawn_embedded_server(
    bin: &str,
    data_dir: &std::path::Path,
) -> (tokio::process::Child, String) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new(bin)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .env("CHAT_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .env("CHAT_LOG_JSON", "true")
        .env("RUST_LOG", "info")
        .env("CHAT_ENGINE", engine().name())
        .env_remove("CHAT_STORE")
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn conn-tier");
    let mut lines = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    let url = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if let Some(url) = v["fields"]["url"].as_str() {
                    return url.to_string();
                }
            }
        }
        panic!("server exited before it was ready");
    })
    .await
    .expect("server ready in time");
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

/// The JWT secret of the test servers (at least 32 bytes).
pub const SECRET: &[u8] = b"test-secret-of-at-least-32-bytes";

/// The credential the `@connections` API of the test servers verifies;
/// the AWS SDK clients of the tests sign with it.
pub fn management_credential() -> chat_management::sigv4::Credential {
    chat_management::sigv4::Credential {
        key_id: "test".into(),
        secret: "test".into(),
    }
}
/// How long a test waits for a frame that must come.
pub const WAIT: Duration = Duration::from_secs(10);

/// The store the suite runs against, from `TEST_STORE`: `embedded` (or
/// `fjall`: the embedded store on the fjall engine), `memory`, `dynamodb`.
pub fn store_kind() -> String {
    match std::env::var("TEST_STORE").as_deref() {
        Ok("fjall") | Err(_) => "embedded".into(),
        Ok(other) => other.into(),
    }
}

/// The embedded store's engine: fjall under `TEST_STORE=fjall`, else redb.
pub fn engine() -> chat_embedded::EngineKind {
    match std::env::var("TEST_STORE").as_deref() {
        Ok("fjall") => chat_embedded::EngineKind::Fjall,
        _ => chat_embedded::EngineKind::Redb,
    }
}

/// The embedded store's options for this run's engine.
pub fn embedded_options() -> chat_embedded::Options {
    chat_embedded::Options {
        engine: engine(),
        ..Default::default()
    }
}

/// Creates a fresh set of tables on the emulator, from infra/template.yaml
/// through localstack/create-tables.py (the one table-creation path), under a
/// random prefix, so every test starts from empty tables. Returns the prefix.
pub async fn fresh_tables() -> anyhow::Result<String> {
    chat_dynamo::testing::fresh_tables()
        .await
        .map_err(anyhow::Error::msg)
}

/// Opens the store `TEST_STORE` names (`dir` holds an embedded store), and
/// the connection map that goes with it.
pub async fn open_store(
    dir: &std::path::Path,
) -> anyhow::Result<(Arc<dyn Store>, Arc<dyn Connections>)> {
    let memory_conns = || Arc::new(MemoryConnections::new()) as Arc<dyn Connections>;
    Ok(match store_kind().as_str() {
        "embedded" => (
            Arc::new(chat_embedded::EmbeddedStore::open_with(
                dir,
                embedded_options(),
            )?),
            memory_conns(),
        ),
        "memory" => (
            Arc::new(chat_core::memory::MemoryStore::new()),
            memory_conns(),
        ),
        "dynamodb" => {
            let tables = chat_dynamo::connect(&fresh_tables().await?).await?;
            (
                Arc::new(chat_dynamo::DynamoStore::new(&tables)),
                Arc::new(chat_dynamo::DynamoConnections::new(&tables)),
            )
        }
        other => bail!("TEST_STORE={other} is not known (embedded, fjall, memory, dynamodb)"),
    })
}

/// A conn-tier serving on 127.0.0.1:0, in-process.
pub struct TestServer {
    pub addr: SocketAddr,
    /// The `@connections` management API.
    pub management: SocketAddr,
    pub auth: Authenticator,
    pub store: Arc<dyn Store>,
    /// The server's connection map.
    pub connections: Arc<dyn Connections>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// Server logs on stderr when `TEST_LOG` is set (an env-filter, such as
/// `info` or `conn_tier=debug`): for a failing test, not for CI.
pub fn init_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

impl TestServer {
    pub async fn start() -> Self {
        Self::start_with(SocketConfig::default()).await
    }

    pub async fn start_with(socket: SocketConfig) -> Self {
        Self::start_with_settings(Settings {
            socket,
            ..Default::default()
        })
        .await
    }

    /// A server with these settings (the management API's credential is
    /// [`management_credential`] unless one is given).
    pub async fn start_with_settings(mut settings: Settings) -> Self {
        init_log();
        let dir = tempfile::tempdir().expect("temp dir");
        let auth = Authenticator::new(SECRET).expect("auth");
        settings
            .management
            .get_or_insert_with(management_credential);
        // A `dev_tokens` placeholder means "mint with this server's secret".
        if settings.dev_tokens.is_some() {
            settings.dev_tokens = Some(auth.clone());
        }
        if store_kind() == "embedded" {
            settings.embedded.engine = engine();
            // As the binary runs it: delivery from the store's commit feed.
            let (app, embedded) =
                App::embedded(dir.path(), auth.clone(), settings).expect("open store");
            let connections = app.connections.clone().expect("in-process map");
            return Self::serve_app(app, auth, embedded, connections, dir).await;
        }
        let (store, connections) = open_store(dir.path()).await.expect("open store");
        let app = App::in_process(
            store.clone(),
            connections.clone(),
            None,
            auth.clone(),
            settings,
        );
        Self::serve_app(app, auth, store, connections, dir).await
    }

    /// Serves `app` (clients and management API) on ports 0.
    pub async fn serve_app(
        app: App,
        auth: Authenticator,
        store: Arc<dyn Store>,
        connections: Arc<dyn Connections>,
        dir: tempfile::TempDir,
    ) -> Self {
        let mgmt = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        Self::serve_app_with(app, auth, store, connections, dir, mgmt).await
    }

    /// As [`TestServer::serve_app`], with the management API on `mgmt`.
    pub async fn serve_app_with(
        app: App,
        auth: Authenticator,
        store: Arc<dyn Store>,
        connections: Arc<dyn Connections>,
        dir: tempfile::TempDir,
        mgmt: tokio::net::TcpListener,
    ) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let management = mgmt.local_addr().expect("addr");
        let (tx, rx) = oneshot::channel::<()>();
        let (mtx, mrx) = oneshot::channel::<()>();
        let mgmt_app = app.clone();
        let management_task = tokio::spawn(async move {
            conn_tier::http::serve_management(mgmt, &mgmt_app, async {
                let _ = mrx.await;
            })
            .await
        });
        let task = tokio::spawn(async move {
            let served = serve(listener, app, async {
                let _ = rx.await;
            })
            .await;
            let _ = mtx.send(());
            let managed = management_task.await;
            served.expect("the client listener served and shut down cleanly");
            managed
                .expect("the management API task did not panic")
                .expect("the management API served and shut down cleanly");
        });
        TestServer {
            addr,
            management,
            auth,
            store,
            connections,
            stop: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    pub fn url(&self) -> String {
        format!("ws://{}/ws", self.addr)
    }

    pub fn token(&self, user: &str) -> String {
        self.auth.mint(user, 3600).expect("mint")
    }

    /// A client that has sent its first frame (a `ping`) and got the
    /// `pong`: the server has registered the connection, and live
    /// messages flow to it from now on.
    pub async fn client(&self, user: &str) -> TestClient {
        let mut c = self.raw_client(user).await;
        c.send(json!({"action":"ping"})).await;
        // A notification for this user (a group it was just added to, a
        // receipt) may reach the new connection before the pong: keep it
        // for the test, in order.
        let mut early = std::collections::VecDeque::new();
        loop {
            let f = c.recv().await;
            match f["type"].as_str() {
                Some("pong") => break,
                Some("group" | "receipt") => early.push_back(f),
                _ => panic!("expected a pong frame, got {f}"),
            }
        }
        c.early = early;
        c
    }

    /// A registered, live client (as [`TestServer::client`]) whose socket
    /// receives into a tiny kernel buffer: once it stops reading, the
    /// server's writes to it block after a few KB instead of the megabytes
    /// loopback buffers by default.
    pub async fn tight_client(&self, user: &str) -> TestClient {
        let sock = tokio::net::TcpSocket::new_v4().expect("socket");
        sock.set_recv_buffer_size(2048).expect("SO_RCVBUF");
        let stream = sock.connect(self.addr).await.expect("connect");
        let url = format!("{}?token={}", self.url(), self.token(user));
        let (ws, _) =
            tokio_tungstenite::client_async(url, tokio_tungstenite::MaybeTlsStream::Plain(stream))
                .await
                .expect("upgrade");
        let mut c = TestClient {
            ws,
            n: 0,
            early: Default::default(),
            gaps: Vec::new(),
            id: next_client(),
        };
        c.send(json!({"action":"ping"})).await;
        c.expect("pong").await;
        c
    }

    /// A client whose first frame was `sync`, answered: registered, live,
    /// and with everything above its watermarks (returned) in order.
    pub async fn syncing_client(&self, user: &str) -> (TestClient, Vec<Value>) {
        let mut c = self.raw_client(user).await;
        let got = c.sync().await;
        (c, got)
    }

    /// A client of one of `user`'s devices (`?device=`) that has sent
    /// nothing yet.
    pub async fn device_client(&self, user: &str, device: &str) -> TestClient {
        let url = format!("{}?device={device}", self.url());
        TestClient::connect(&url, &self.token(user))
            .await
            .expect("connect")
    }

    /// A client that has sent nothing yet (its first frame decides how
    /// live messages reach it: see docs/protocol.md, "Order").
    pub async fn raw_client(&self, user: &str) -> TestClient {
        TestClient::connect(&self.url(), &self.token(user))
            .await
            .expect("connect")
    }

    /// Stops gracefully and waits; a panic or an error in the server's
    /// tasks fails the test.
    pub async fn stop(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            match tokio::time::timeout(WAIT, t).await {
                Err(_) => panic!("the server did not stop within {WAIT:?}"),
                Ok(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                Ok(Err(e)) => panic!("the server task failed: {e}"),
                Ok(Ok(())) => {}
            }
        }
    }
}

/// A client connection with helpers that never hang a test.
pub struct TestClient {
    ws: Ws,
    n: u64,
    /// Frames that arrived while [`TestServer::client`] waited for its
    /// `pong` (a `group` or `receipt` notification may come first): the
    /// test reads them next, in arrival order.
    early: std::collections::VecDeque<Value>,
    /// The `gap` frames of the last [`TestClient::sync`].
    pub gaps: Vec<Value>,
    /// Tells this client's `client_msg_id`s from other clients' of the user.
    id: u64,
}

/// Client numbers, for unique `client_msg_id`s.
static CLIENTS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_client() -> u64 {
    CLIENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl TestClient {
    pub async fn connect(url: &str, token: &str) -> Result<Self, WsError> {
        Ok(TestClient {
            ws: connect(url, token).await?,
            n: 0,
            early: Default::default(),
            gaps: Vec::new(),
            id: next_client(),
        })
    }

    pub async fn send(&mut self, frame: Value) {
        self.ws
            .send(WsMessage::text(frame.to_string()))
            .await
            .expect("send");
    }

    pub async fn send_raw(&mut self, msg: WsMessage) {
        self.ws.send(msg).await.expect("send raw");
    }

    /// The next text frame as JSON; panics after [`WAIT`].
    pub async fn recv(&mut self) -> Value {
        self.try_recv(WAIT)
            .await
            .expect("a frame")
            .expect("a text frame")
    }

    /// The next text frame within `wait`: `None` if none came, `Err` on a close.
    pub async fn try_recv(&mut self, wait: Duration) -> Option<Result<Value, String>> {
        if let Some(frame) = self.early.pop_front() {
            return Some(Ok(frame));
        }
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let msg = match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(None) => return Some(Err("stream ended".into())),
                Ok(Some(Err(e))) => return Some(Err(e.to_string())),
                Ok(Some(Ok(m))) => m,
            };
            match msg {
                WsMessage::Text(t) => {
                    let frame: Value = serde_json::from_str(t.as_str()).expect("JSON frame");
                    check_server_frame(&frame);
                    return Some(Ok(frame));
                }
                WsMessage::Close(c) => return Some(Err(format!("closed: {c:?}"))),
                _ => continue,
            }
        }
    }

    /// The next frame, which must have `type == ty`.
    pub async fn expect(&mut self, ty: &str) -> Value {
        let f = self.recv().await;
        assert_eq!(f["type"], ty, "expected a {ty} frame, got {f}");
        f
    }

    /// Asserts nothing arrives for `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Some(f) = self.try_recv(wait).await {
            panic!("expected no frame, got {f:?}");
        }
    }

    /// The close frame's code, waiting up to [`WAIT`].
    pub async fn expect_close(&mut self) -> u16 {
        self.expect_close_reason().await.0
    }

    /// The close frame's code and reason, waiting up to [`WAIT`].
    pub async fn expect_close_reason(&mut self) -> (u16, String) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Ok(Some(Ok(WsMessage::Close(Some(f))))) => {
                    return (u16::from(f.code), f.reason.to_string())
                }
                Ok(Some(Ok(WsMessage::Close(None)))) => return (1005, String::new()),
                Ok(Some(Ok(_))) => continue,
                other => panic!("expected a close frame, got {other:?}"),
            }
        }
    }

    /// Tells the server this device keeps `conv` from `from` to `up_to`,
    /// and waits until it has taken it (a `ping` answered after it).
    pub async fn received(&mut self, conv: &str, from: u64, up_to: u64) {
        self.send(json!({"action":"received","conversation_id":conv,"from":from,"up_to":up_to}))
            .await;
        self.send(json!({"action":"ping"})).await;
        loop {
            let f = self.recv().await;
            match f["type"].as_str() {
                Some("pong") => return,
                Some("error") => panic!("received refused: {f}"),
                _ => {}
            }
        }
    }

    /// The `client_msg_id` of this client's latest `send_text`: unique
    /// across clients (a user's clients share the idempotency space).
    fn msg_id(&self) -> String {
        format!("t-{}-{}", self.id, self.n)
    }

    /// Sends a text and returns its `ack` (anything else fails the test).
    pub async fn send_text(&mut self, to: &str, text: &str) -> Value {
        let f = self.send_text_answer(to, text).await;
        assert_eq!(f["type"], "ack", "expected an ack, got {f}");
        f
    }

    /// Sends a text that must be refused; returns the `error` frame, which
    /// names the send's `client_msg_id`.
    pub async fn send_text_refused(&mut self, to: &str, text: &str) -> Value {
        let f = self.send_text_answer(to, text).await;
        assert_eq!(f["type"], "error", "expected an error, got {f}");
        assert_eq!(f["client_msg_id"], self.msg_id(), "{f}");
        f
    }

    async fn send_text_answer(&mut self, to: &str, text: &str) -> Value {
        self.n += 1;
        let id = self.msg_id();
        self.send(json!({"action":"send","to":to,"client_msg_id":id,"text":text}))
            .await;
        self.recv().await
    }

    /// Runs `sync` and returns the messages before `synced`, exactly as
    /// they arrived (no sorting, no de-duplication: a test sees what a
    /// client sees). `gap` frames are kept in [`TestClient::gaps`].
    pub async fn sync(&mut self) -> Vec<Value> {
        self.send(json!({"action":"sync"})).await;
        self.gaps.clear();
        let mut out = Vec::new();
        loop {
            let f = self.recv().await;
            match f["type"].as_str() {
                Some("synced") => return out,
                Some("message") => out.push(f),
                Some("gap") => self.gaps.push(f),
                // Pushes of other kinds may come meanwhile (a late group
                // announcement, a receipt).
                Some("group") | Some("receipt") => {}
                _ => panic!("unexpected frame during sync: {f}"),
            }
        }
    }

    pub async fn history(&mut self, conv: &str, before: Option<u64>, limit: Option<u32>) -> Value {
        let mut f = json!({"action":"history","conversation_id":conv});
        if let Some(b) = before {
            f["before"] = json!(b);
        }
        if let Some(l) = limit {
            f["limit"] = json!(l);
        }
        self.send(f).await;
        // Pushes (live messages, group changes) may come first.
        loop {
            let f = self.recv().await;
            if f["type"] != "message" && f["type"] != "group" {
                return f;
            }
        }
    }

    pub async fn create_group(&mut self, name: &str, members: &[&str]) -> Value {
        self.send(json!({"action":"createGroup","name":name,"members":members}))
            .await;
        self.expect("group").await
    }

    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
    }
}

/// Every frame a test client receives must match the server-frame schema
/// generated from the serde types (docs/schemas/server-frame.json).
pub fn check_server_frame(frame: &Value) {
    static VALIDATOR: std::sync::OnceLock<jsonschema::Validator> = std::sync::OnceLock::new();
    let v = VALIDATOR.get_or_init(|| {
        jsonschema::validator_for(&chat_core::protocol::schema::server_frame())
            .expect("the server-frame schema compiles")
    });
    let errors: Vec<String> = v.iter_errors(frame).map(|e| e.to_string()).collect();
    assert!(
        errors.is_empty(),
        "a frame the protocol schema does not describe: {frame}: {errors:?}"
    );
}

/// The HTTP status of a refused WebSocket handshake.
/// The HTTP status of a WebSocket handshake, and its `Retry-After` header
/// when refused (101 and `None` when it upgraded).
pub async fn handshake_response(url: &str) -> anyhow::Result<(u16, Option<String>)> {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => Ok((101, None)),
        Err(WsError::Http(resp)) => Ok((
            resp.status().as_u16(),
            resp.headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        )),
        Err(e) => Err(e).context("handshake"),
    }
}

pub async fn handshake_status(url: &str) -> anyhow::Result<u16> {
    match tokio_tungstenite::connect_async(url).await {
        Ok(_) => Ok(101),
        Err(WsError::Http(resp)) => Ok(resp.status().as_u16()),
        Err(e) => Err(e).context("handshake"),
    }
}

/// Message ids of a list of message frames.
pub fn ids(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .map(|f| f["message_id"].as_u64().unwrap_or(0))
        .collect()
}

/// The store `TEST_STORE` names, for the store contract suite.
pub async fn contract_fixture() -> chat_core::contract::Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let (store, _) = open_store(dir.path()).await.expect("open store");
    chat_core::contract::Fixture {
        store,
        keep: Some(Box::new(dir)),
    }
}

/// The connection map that goes with the store `TEST_STORE` names.
pub async fn contract_connections() -> Arc<dyn Connections> {
    let dir = tempfile::tempdir().expect("temp dir");
    open_store(dir.path()).await.expect("open store").1
}

/// The registry and connection map that go with the store `TEST_STORE`
/// names (one table), for the node-registry contract.
pub async fn contract_nodes() -> (Arc<dyn Connections>, Arc<dyn chat_core::ports::Nodes>) {
    if store_kind() == "dynamodb" {
        let tables = chat_dynamo::connect(&fresh_tables().await.expect("tables"))
            .await
            .expect("connect");
        return (
            Arc::new(chat_dynamo::DynamoConnections::new(&tables)),
            Arc::new(chat_dynamo::DynamoNodes::new(&tables)),
        );
    }
    let m = Arc::new(MemoryConnections::new());
    (m.clone(), m)
}

/// A plain HTTP/1.1 GET; the status, the headers (lower-case names) and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, Vec<(String, String)>, String) {
    try_http_get(addr.port(), path).await.expect("GET")
}

/// A plain HTTP/1.1 GET to 127.0.0.1:`port`, or the I/O error.
pub async fn try_http_get(
    port: u16,
    path: &str,
) -> std::io::Result<(u16, Vec<(String, String)>, String)> {
    http_request(&format!("127.0.0.1:{port}"), "GET", path, &[], b"").await
}

/// A request signed (SigV4) with `cred` dated `age_secs` ago, or unsigned
/// with `None`; the status and body.
pub async fn signed_request(
    method: &str,
    host: &str,
    path: &str,
    body: &[u8],
    cred: Option<&chat_management::sigv4::Credential>,
    age_secs: u64,
) -> (u16, String) {
    use chat_management::sigv4::{amz_date, now_secs, sign_headers};
    let headers = match cred {
        Some(cred) => {
            let date = amz_date(now_secs() - age_secs);
            sign_headers(cred, method, host, path, body, &date, "us-east-1")
        }
        None => vec![],
    };
    let (status, _, body) = http_request(host, method, path, &headers, body)
        .await
        .expect("request");
    (status, body)
}

/// An HTTP/1.1 request with these extra headers and body (the connection
/// closed after it); the status, the headers (lower-case names), the body.
pub async fn http_request(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> std::io::Result<(u16, Vec<(String, String)>, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(host).await?;
    // A `Host` among `headers` replaces the address (a name rebound to it).
    let host_header = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("host"))
        .map_or(host, |(_, v)| v.as_str());
    let extra: String = headers
        .iter()
        .filter(|(k, _)| !k.eq_ignore_ascii_case("host"))
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host_header}\r\n{extra}Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    s.write_all(body).await?;
    let mut out = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut out))
        .await
        .map_err(|_| std::io::Error::other("no answer in time"))??;
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok((status, headers, body.to_string()))
}

/// A proxy in front of the emulator (`localstack/throttle-proxy.py`) that
/// answers a share of requests with ThrottlingException or HTTP 500, and
/// black-holes every request during a [`stall`].
pub async fn fault_proxy(rate: f64) -> (tokio::process::Child, String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let upstream =
        std::env::var("AWS_ENDPOINT_URL").expect("AWS_ENDPOINT_URL (source localstack/env.sh)");
    let mut child = tokio::process::Command::new(root.join("localstack/.venv/bin/python"))
        .arg(root.join("localstack/throttle-proxy.py"))
        .args([upstream, rate.to_string()])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let port = line.strip_prefix("listening ").unwrap().trim().to_string();
    (child, format!("http://127.0.0.1:{port}"))
}

/// What the fault proxy did so far (`GET /`).
pub async fn proxy_stats(url: &str) -> serde_json::Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("{}");
    serde_json::from_str(body).unwrap()
}

/// Black-holes every request through the proxy at `url` for `secs`.
pub async fn stall(url: &str, secs: u64) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = url.trim_start_matches("http://");
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    s.write_all(
        format!("GET /stall?secs={secs} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
}
