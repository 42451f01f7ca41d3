//! A real cluster for tests: conn-tier processes in cluster mode on fresh
//! tables of the emulator's DynamoDB, HAProxy in front of them, and
//! [`Device`]s that behave as a client should (sync first, reconnect
//! through the load balancer, resend what was not acked).

use crate::{SECRET, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message as WsMessage;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The credential the nodes sign `@connections` calls to each other with.
/// The address HAProxy connects to the nodes from: the nodes trust a
/// PROXY header from it only, so clients reaching a node directly (from
/// 127.0.0.1) are not taken for the balancer.
pub const LB_SOURCE: &str = "127.0.0.2";

pub const CLUSTER_KEY: (&str, &str) = ("cluster-test", "cluster-test-secret-0123456789abcdef");

/// How long [`Device::settle`] and [`Device::expect_all`] wait for the
/// next ack or missing message before they call it a stall.
pub const STALL: Duration = Duration::from_secs(60);
/// Past this, either fails however steadily things arrive. Checked between
/// reads, so a reconnect under way (up to 40 s) may run past it.
pub const PATIENCE: Duration = Duration::from_secs(180);

/// Whether a count of outstanding things (unacked sends, missing
/// messages) still goes down: the clock restarts each time it does.
struct Progress {
    start: tokio::time::Instant,
    last: tokio::time::Instant,
    left: usize,
}

impl Progress {
    fn new(left: usize) -> Self {
        let now = tokio::time::Instant::now();
        Progress {
            start: now,
            last: now,
            left,
        }
    }

    /// Says how long it took, when that was long enough to notice (a slow
    /// emulator shows here before it fails a test).
    fn done(&self, who: &str, what: &str) {
        let took = self.start.elapsed();
        if took > Duration::from_secs(10) {
            eprintln!("{who}: {what} took {took:?}");
        }
    }

    /// Why waiting on is pointless, if it is, with `left` outstanding now.
    fn stalled(&mut self, left: usize) -> Option<String> {
        if left < self.left {
            self.left = left;
            self.last = tokio::time::Instant::now();
        }
        if self.last.elapsed() > STALL {
            Some(format!("nothing for {:?}", self.last.elapsed()))
        } else if self.start.elapsed() > PATIENCE {
            Some(format!("{:?} in all", self.start.elapsed()))
        } else {
            None
        }
    }
}

/// Records a child's process group where `scripts/test-all` kills what is
/// left when it exits (however the test binary ended).
fn record_pgid(child: &Child, name: &str) {
    if let (Ok(dir), Some(pid)) = (std::env::var("CHAT_RUN_DIR"), child.id()) {
        let _ = std::fs::write(
            std::path::Path::new(&dir).join(format!("{name}-{pid}.pgid")),
            pid.to_string(),
        );
    }
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One node process.
pub struct NodeProc {
    pub port: u16,
    pub mport: u16,
    child: Option<Child>,
    /// Its log lines (JSON), as they come.
    pub log: Arc<Mutex<Vec<String>>>,
    /// The task reading its log: done once the process is gone.
    reader: Option<tokio::task::JoinHandle<()>>,
}

impl NodeProc {
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    /// Whether a log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: plain kill(2) on a child we spawned.
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
    }

    /// Waits for the process to exit (after a signal), and for its last
    /// log lines; true if it did.
    pub async fn exited(&mut self, within: Duration) -> bool {
        let done = match self.child.as_mut() {
            None => true,
            Some(c) => tokio::time::timeout(within, c.wait()).await.is_ok(),
        };
        if done {
            if let Some(r) = self.reader.take() {
                let _ = tokio::time::timeout(Duration::from_secs(2), r).await;
            }
        }
        done
    }
}

/// N nodes, HAProxy, fresh tables.
pub struct ClusterUnderTest {
    bin: String,
    prefix: String,
    dir: tempfile::TempDir,
    pub lb_port: u16,
    /// HAProxy's stats page (`/stats;csv`): which servers it has up.
    stats_port: u16,
    pub nodes: Vec<NodeProc>,
    haproxy: Option<Child>,
    /// Extra flags every node gets.
    extra: Vec<String>,
    /// Per node, more environment (another DynamoDB endpoint, a clock
    /// skew file).
    envs: Vec<Vec<(String, String)>>,
}

impl ClusterUnderTest {
    /// Starts `n` nodes of `bin` (the conn-tier binary) and HAProxy;
    /// returns once all are ready.
    pub async fn start(bin: &str, n: usize, extra: &[&str]) -> Self {
        Self::start_with_endpoints(bin, n, extra, Vec::new()).await
    }

    /// As [`ClusterUnderTest::start`], node `i` reaching DynamoDB through
    /// `endpoints[i]` when it is set (a fault proxy in front of the emulator).
    pub async fn start_with_endpoints(
        bin: &str,
        n: usize,
        extra: &[&str],
        endpoints: Vec<Option<String>>,
    ) -> Self {
        let envs = endpoints
            .into_iter()
            .map(|e| {
                e.map(|url| vec![("AWS_ENDPOINT_URL".to_string(), url)])
                    .unwrap_or_default()
            })
            .collect();
        Self::start_with_env(bin, n, extra, envs).await
    }

    /// As [`ClusterUnderTest::start`], node `i` with `envs[i]` added to its
    /// environment.
    pub async fn start_with_env(
        bin: &str,
        n: usize,
        extra: &[&str],
        envs: Vec<Vec<(String, String)>>,
    ) -> Self {
        let prefix = crate::fresh_tables().await.expect("fresh tables");
        Self::start_on_tables(bin, n, extra, envs, prefix).await
    }

    /// As [`ClusterUnderTest::start_with_env`], on the tables of `prefix`
    /// (which hold data already: an import, say).
    pub async fn start_on_tables(
        bin: &str,
        n: usize,
        extra: &[&str],
        envs: Vec<Vec<(String, String)>>,
        prefix: String,
    ) -> Self {
        crate::init_log();
        let mut c = ClusterUnderTest {
            bin: bin.to_string(),
            prefix,
            dir: tempfile::tempdir().unwrap(),
            lb_port: free_port(),
            stats_port: free_port(),
            nodes: Vec::new(),
            haproxy: None,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            envs,
        };
        for _ in 0..n {
            let node = c.spawn_node(free_port(), free_port()).await;
            c.nodes.push(node);
        }
        c.start_haproxy().await;
        c
    }

    /// The address node `i` logged with `message` (a listener it bound:
    /// `CHAT_METRICS_LISTEN=127.0.0.1:0` picks a port no other test holds).
    /// Waits up to 10 s for the line.
    pub async fn logged_addr(&self, i: usize, message: &str) -> Option<std::net::SocketAddr> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.nodes[i].log.lock().unwrap().iter().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                if v["fields"]["message"] != message {
                    return None;
                }
                v["fields"]["addr"].as_str()?.parse().ok()
            });
            if found.is_some() || tokio::time::Instant::now() > deadline {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The load balancer's WebSocket URL.
    pub fn url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.lb_port)
    }

    /// Node `i`'s own WebSocket URL.
    pub fn node_url(&self, i: usize) -> String {
        format!("ws://127.0.0.1:{}/ws", self.nodes[i].port)
    }

    async fn spawn_node(&self, port: u16, mport: u16) -> NodeProc {
        self.try_spawn_node(port, mport)
            .await
            .unwrap_or_else(|log| panic!("node on {port} not ready: {log}"))
    }

    /// Starts a node; `Err` with its log if it is not ready in 30 s (it
    /// could not listen, say).
    async fn try_spawn_node(&self, port: u16, mport: u16) -> Result<NodeProc, String> {
        let mut cmd = Command::new(&self.bin);
        let i = self
            .nodes
            .iter()
            .position(|n| n.port == port)
            .unwrap_or(self.nodes.len());
        for (k, v) in self.envs.get(i).into_iter().flatten() {
            cmd.env(k, v);
        }
        cmd.args(["--store", "dynamodb", "--cluster"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            // HAProxy connects from its own address, with a PROXY header.
            .args(["--trusted-proxies", LB_SOURCE])
            .args(["--management-listen", &format!("127.0.0.1:{mport}")])
            .args(["--public-url", &self.url()])
            .args(&self.extra)
            .env("CHAT_TABLE_PREFIX", &self.prefix)
            .env("CHAT_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
            .env("CHAT_MANAGEMENT_KEY_ID", CLUSTER_KEY.0)
            .env("CHAT_MANAGEMENT_SECRET", CLUSTER_KEY.1)
            .env("CHAT_LOG_JSON", "true")
            // TEST_NODE_LOG=debug (with TEST_LOG=1) to see more of a node.
            .env(
                "RUST_LOG",
                std::env::var("TEST_NODE_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn a node");
        record_pgid(&child, "cluster-node");
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let sink = log.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                if std::env::var_os("TEST_LOG").is_some() {
                    eprintln!("[node {port}] {l}");
                }
                sink.lock().unwrap().push(l);
            }
        });
        let node = NodeProc {
            port,
            mport,
            child: Some(child),
            log,
            reader: Some(reader),
        };
        let mut node = node;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok((200, _, _)) = crate::try_http_get(port, "/healthz").await {
                return Ok(node);
            }
            // A node that could not start (its port taken) exits at once.
            let exited = node
                .child
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || tokio::time::Instant::now() > deadline {
                return Err(format!("{:?}", node.log.lock().unwrap()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn start_haproxy(&mut self) {
        let servers: String = self
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| format!("    server node{i} 127.0.0.1:{} check\n", n.port))
            .collect();
        let cfg = format!(
            "global\n    maxconn 4000\n\
             defaults\n    mode http\n    option redispatch\n    retries 3\n\
             \x20   timeout connect 1s\n    timeout client 60s\n    timeout server 60s\n\
             \x20   timeout tunnel 1h\n\
             \x20   default-server inter 200ms fall 2 rise 1 source {LB_SOURCE} send-proxy-v2 check-send-proxy\n\
             frontend chat\n    bind 127.0.0.1:{}\n    default_backend nodes\n\
             backend nodes\n    balance roundrobin\n    option httpchk GET /healthz\n\
             \x20   http-check expect status 200\n{servers}\
             listen stats\n    bind 127.0.0.1:{}\n    stats enable\n    stats uri /stats\n",
            self.lb_port, self.stats_port
        );
        let path = self.dir.path().join("haproxy.cfg");
        std::fs::write(&path, cfg).unwrap();
        let child = Command::new("haproxy")
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("haproxy (apt-get install haproxy)");
        record_pgid(&child, "haproxy");
        self.haproxy = Some(child);
        let lb = self.lb_port;
        let ready = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let Ok((200, _, _)) = crate::try_http_get(lb, "/healthz").await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(ready.is_ok(), "HAProxy not answering");
    }

    /// The backend servers HAProxy does not have up now (by its stats).
    pub async fn servers_not_up(&self) -> Vec<String> {
        let (status, _, csv) = crate::try_http_get(self.stats_port, "/stats;csv")
            .await
            .expect("HAProxy's stats");
        assert_eq!(status, 200, "{csv}");
        // The body may come chunked: the header line is the one that
        // starts with `# pxname`.
        let mut lines = csv.lines().skip_while(|l| !l.starts_with("# pxname"));
        let head: Vec<&str> = lines
            .next()
            .unwrap_or_default()
            .trim_start_matches("# ")
            .split(',')
            .collect();
        let col = |name: &str| {
            head.iter()
                .position(|h| *h == name)
                .expect("a stats column")
        };
        let (px, sv, st) = (col("pxname"), col("svname"), col("status"));
        lines
            .map(|l| l.split(',').collect::<Vec<_>>())
            .filter(|f| f.len() > st && f[px] == "nodes" && f[sv].starts_with("node"))
            .filter(|f| f[st] != "UP")
            .map(|f| format!("{} {}", f[sv], f[st]))
            .collect()
    }

    /// kill -9 node `i`.
    pub async fn kill(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGKILL);
        assert!(self.nodes[i].exited(WAIT).await);
        self.nodes[i].child = None;
    }

    /// Starts node `i` again on its ports (a new process, so a new node
    /// id). HAProxy knows the node by its port, so the port cannot change;
    /// the old process let it go, but something else may have taken it
    /// meanwhile (a free port is bound, then released): then it tries
    /// again, a few times.
    pub async fn restart(&mut self, i: usize) {
        let (port, mport) = (self.nodes[i].port, self.nodes[i].mport);
        let mut last = String::new();
        for _ in 0..5 {
            match self.try_spawn_node(port, mport).await {
                Ok(node) => {
                    self.nodes[i] = node;
                    return;
                }
                Err(log) => last = log,
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        panic!("node {i} did not restart on port {port}: {last}");
    }

    /// SIGTERM node `i` and waits for it to drain and exit.
    pub async fn stop_gracefully(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGTERM);
        assert!(
            self.nodes[i].exited(Duration::from_secs(30)).await,
            "node {i} did not exit after SIGTERM"
        );
        self.nodes[i].child = None;
    }

    /// The live nodes, as `GET /nodes` on node `i` lists them.
    pub async fn live_nodes(&self, i: usize) -> Vec<Value> {
        let (status, _, body) = crate::try_http_get(self.nodes[i].port, "/nodes")
            .await
            .expect("GET /nodes");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["nodes"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The connection records the shared table holds for `user`.
    pub async fn records_of(&self, user: &str) -> Vec<chat_core::ports::ConnectionRecord> {
        use chat_core::ports::Connections;
        let tables = chat_dynamo::connect(&self.prefix).await.unwrap();
        chat_dynamo::DynamoConnections::new(&tables)
            .for_user(user)
            .await
            .unwrap()
    }

    /// The messages the store holds in `conv`, in id order.
    pub async fn stored(&self, conv: &str) -> Vec<chat_core::ports::StoredMessage> {
        use chat_core::ports::MessageStore;
        let tables = chat_dynamo::connect(&self.prefix).await.unwrap();
        chat_dynamo::DynamoStore::new(&tables)
            .messages_after(conv, 0, 100_000)
            .await
            .unwrap()
    }
}

/// One device of a user, connected through the load balancer, behaving as
/// a client should: a device id of its own, `sync` first on every
/// connection, reconnect on close, resend what was not acked (same
/// `client_msg_id`), tell the server what it keeps (`received`), and check
/// the order guarantee on every connection.
pub struct Device {
    pub user: String,
    /// Its device id (`?device=`): its delivery cursors are its own.
    pub device: String,
    /// Per conversation, the run this connection holds without a hole
    /// around the first id it got, `from` and `to` (`received` tells the
    /// server, which moves the cursor only if `from` reaches it)...
    runs: BTreeMap<String, (u64, u64)>,
    /// ...and what was told on it...
    told: HashMap<String, (u64, u64)>,
    /// ...and the ids got that do not touch the run yet.
    apart: HashMap<String, std::collections::BTreeSet<u64>>,
    told_at: tokio::time::Instant,
    url: String,
    token: String,
    ws: Option<Ws>,
    /// The node this device is on now (the `x-chat-node` header).
    pub node: String,
    n: u64,
    /// Sent and not acked: client_msg_id → frame.
    pending: BTreeMap<String, Value>,
    /// Acked: client_msg_id → (conversation, message_id).
    pub acked: BTreeMap<String, (String, u64)>,
    /// Every message received, by (conversation, id) → text.
    pub got: BTreeMap<(String, u64), String>,
    /// This connection's last id per conversation (order check).
    last: HashMap<String, u64>,
    /// Order violations seen (must stay empty).
    pub violations: Vec<String>,
    /// Ids skipped between two messages on a connection (each must be
    /// one of this device's own sends: see [`Device::gaps`]).
    skipped: Vec<(String, u64)>,
    /// How many times it reconnected, and the close codes it got.
    pub closes: Vec<u16>,
    /// The first close since the last ack, while no ack came since...
    closed_at: Option<tokio::time::Instant>,
    /// ...and, per such outage, how long until the next ack: how soon the
    /// device was served again.
    pub served_again: Vec<Duration>,
    /// Every `group` frame received.
    pub groups: Vec<Value>,
    /// Every `receipt` received.
    pub receipts: Vec<Value>,
    /// Messages this device only found through a `history` answer: every
    /// test expects none (delivery is live or by `sync`).
    pub from_history: usize,
    /// Any other frame (pong, error…).
    pub others: Vec<Value>,
    /// Sends retried after an `internal` or `rate_limited` error.
    pub retries: usize,
}

impl Device {
    /// Connects through `url`, syncs.
    pub async fn connect(url: &str, user: &str) -> Self {
        let token = chat_core::auth::Authenticator::new(SECRET)
            .unwrap()
            .mint(user, 3600)
            .unwrap();
        let mut d = Device {
            user: user.to_string(),
            device: format!("{user}-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]),
            runs: BTreeMap::new(),
            told: HashMap::new(),
            apart: HashMap::new(),
            told_at: tokio::time::Instant::now(),
            url: url.to_string(),
            token,
            ws: None,
            node: String::new(),
            n: 0,
            pending: BTreeMap::new(),
            acked: BTreeMap::new(),
            got: BTreeMap::new(),
            last: HashMap::new(),
            violations: Vec::new(),
            skipped: Vec::new(),
            closes: Vec::new(),
            closed_at: None,
            served_again: Vec::new(),
            groups: Vec::new(),
            receipts: Vec::new(),
            from_history: 0,
            others: Vec::new(),
            retries: 0,
        };
        d.reconnect().await;
        d
    }

    /// (Re)connects, syncs first, then resends what was not acked.
    pub async fn reconnect(&mut self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
        loop {
            let url = format!("{}?token={}&device={}", self.url, self.token, self.device);
            if let Ok(Ok((mut ws, resp))) = tokio::time::timeout(
                Duration::from_secs(5),
                tokio_tungstenite::connect_async_with_config(&url, None, true),
            )
            .await
            {
                self.node = resp
                    .headers()
                    .get("x-chat-node")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                self.last.clear();
                self.runs.clear();
                self.told.clear();
                self.apart.clear();
                if ws
                    .send(WsMessage::text(json!({"action":"sync"}).to_string()))
                    .await
                    .is_ok()
                {
                    self.ws = Some(ws);
                    if self.until_synced().await {
                        let frames: Vec<Value> = self.pending.values().cloned().collect();
                        let mut ok = self.tell_received().await;
                        for f in frames {
                            ok &= self.write(&f).await;
                        }
                        if ok {
                            return;
                        }
                    }
                }
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} could not reconnect through the load balancer",
                self.user
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Notes that this connection got `id` of `conv` (a message, or the
    /// ack of its own send): a run grows only without holes.
    fn note_held(&mut self, conv: &str, id: u64) {
        let apart = self.apart.entry(conv.to_string()).or_default();
        let (from, to) = self.runs.entry(conv.to_string()).or_insert((id, id));
        if (*from..=*to).contains(&id) {
            return;
        }
        // An id ahead of the run (a message before the ack below it) waits
        // apart until the run reaches it.
        apart.insert(id);
        while *from > 1 && apart.remove(&(*from - 1)) {
            *from -= 1;
        }
        while apart.remove(&(*to + 1)) {
            *to += 1;
        }
    }

    /// One `received` for the runs that grew since they were told.
    async fn tell_received(&mut self) -> bool {
        self.told_at = tokio::time::Instant::now();
        let items: Vec<Value> = self
            .runs
            .iter()
            .filter(|(c, &(from, to))| self.told.get(*c).is_none_or(|&(f, t)| t < to || from < f))
            .take(100)
            .map(|(c, (from, to))| json!({"conversation_id": c, "from": from, "up_to": to}))
            .collect();
        if items.is_empty() {
            return true;
        }
        for i in &items {
            let c = i["conversation_id"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let run = (
                i["from"].as_u64().unwrap_or(0),
                i["up_to"].as_u64().unwrap_or(0),
            );
            self.told.insert(c, run);
        }
        self.write(&json!({"action":"received","items":items}))
            .await
    }

    async fn write(&mut self, f: &Value) -> bool {
        match self.ws.as_mut() {
            Some(ws) => ws.send(WsMessage::text(f.to_string())).await.is_ok(),
            None => false,
        }
    }

    /// Reads until `synced`; `false` if the connection ends, goes quiet,
    /// or the sync fails (docs/protocol.md: "retry it"; this client
    /// reconnects, which the load balancer may send elsewhere).
    async fn until_synced(&mut self) -> bool {
        loop {
            match self.next(WAIT).await {
                Some(f) if f["type"] == "synced" => return true,
                Some(f) if f["type"] == "error" && f["action"] == "sync" => {
                    self.ws = None;
                    return false;
                }
                Some(_) => continue,
                None => return false,
            }
        }
    }

    /// Sends a text (kept until acked, resent after a reconnect).
    pub async fn send(&mut self, to: &str, text: &str) -> String {
        self.n += 1;
        let id = format!(
            "{}-{}-{}",
            self.user,
            self.n,
            &uuid::Uuid::new_v4().simple().to_string()[..6]
        );
        let f = json!({"action":"send","to":to,"client_msg_id":id,"text":text});
        self.pending.insert(id.clone(), f.clone());
        if !self.write(&f).await {
            self.ws = None;
        }
        id
    }

    /// Sends a raw frame (not tracked).
    pub async fn send_frame(&mut self, f: Value) {
        if !self.write(&f).await {
            self.ws = None;
        }
    }

    /// The next frame within `wait`, handling acks, messages and closes;
    /// `None` when nothing came or the connection ended (then `ws` is
    /// `None`).
    async fn next(&mut self, wait: Duration) -> Option<Value> {
        let ws = self.ws.as_mut()?;
        let msg = match tokio::time::timeout(wait, ws.next()).await {
            Err(_) => return None,
            Ok(m) => m,
        };
        let text = match msg {
            Some(Ok(WsMessage::Text(t))) => t.to_string(),
            Some(Ok(WsMessage::Close(c))) => {
                self.closed_at.get_or_insert_with(tokio::time::Instant::now);
                self.closes
                    .push(c.map(|c| u16::from(c.code)).unwrap_or(1005));
                self.ws = None;
                return None;
            }
            Some(Ok(_)) => return Some(json!({"type":"_other"})),
            _ => {
                self.closed_at.get_or_insert_with(tokio::time::Instant::now);
                self.closes.push(1006);
                self.ws = None;
                return None;
            }
        };
        let f: Value = serde_json::from_str(&text).expect("JSON");
        match f["type"].as_str() {
            Some("ack") => {
                if let Some(t) = self.closed_at.take() {
                    self.served_again.push(t.elapsed());
                }
                let id = f["client_msg_id"].as_str().unwrap().to_string();
                self.pending.remove(&id);
                let at = (
                    f["conversation_id"].as_str().unwrap().to_string(),
                    f["message_id"].as_u64().unwrap(),
                );
                self.note_held(&at.0, at.1);
                self.acked.insert(id, at);
            }
            Some("message") => {
                let conv = f["conversation_id"].as_str().unwrap().to_string();
                let id = f["message_id"].as_u64().unwrap();
                self.note_order(&conv, id);
                self.note_held(&conv, id);
                self.got
                    .insert((conv, id), f["text"].as_str().unwrap().to_string());
            }
            Some("history") => {
                for m in f["messages"].as_array().into_iter().flatten() {
                    let k = (
                        m["conversation_id"].as_str().unwrap().to_string(),
                        m["message_id"].as_u64().unwrap(),
                    );
                    if !self.got.contains_key(&k) {
                        self.from_history += 1;
                        self.got.insert(k, m["text"].as_str().unwrap().to_string());
                    }
                }
            }
            Some("group") => self.groups.push(f.clone()),
            Some("receipt") => self.receipts.push(f.clone()),
            Some("synced") => {}
            Some("error") if f["action"] == "send" => {
                // `internal` and `rate_limited` say: retry with the same id.
                let id = f["client_msg_id"].as_str().unwrap_or_default().to_string();
                match (f["code"].as_str(), self.pending.get(&id).cloned()) {
                    (Some("internal" | "rate_limited"), Some(frame)) => {
                        self.retries += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        if !self.write(&frame).await {
                            self.ws = None;
                        }
                    }
                    _ => self
                        .violations
                        .push(format!("{}: send refused: {f}", self.user)),
                }
                self.others.push(f.clone());
            }
            _ => self.others.push(f.clone()),
        }
        Some(f)
    }

    /// The order guarantee (docs/protocol.md): on one connection, a
    /// conversation's `message` frames have strictly increasing ids, and
    /// an id skipped between two of them is one of the connection's own
    /// sends (it gets the `ack`, which may come a little later).
    fn note_order(&mut self, conv: &str, id: u64) {
        if let Some(&prev) = self.last.get(conv) {
            if id <= prev {
                self.violations
                    .push(format!("{}: {conv} #{id} after #{prev}", self.user));
            }
            for skipped in prev + 1..id {
                self.skipped.push((conv.to_string(), skipped));
            }
        }
        self.last.insert(
            conv.to_string(),
            id.max(self.last.get(conv).copied().unwrap_or(0)),
        );
    }

    /// Ids skipped between two messages that are not this device's own
    /// sends: gaps (must be none).
    pub fn gaps(&self) -> Vec<String> {
        let own: std::collections::HashSet<&(String, u64)> = self.acked.values().collect();
        self.skipped
            .iter()
            .filter(|k| !own.contains(k))
            .map(|(c, i)| format!("{}: {c} gap at #{i}", self.user))
            .collect()
    }

    /// Reads (and reconnects when closed) for `wait`.
    pub async fn pump(&mut self, wait: Duration) {
        let deadline = tokio::time::Instant::now() + wait;
        while tokio::time::Instant::now() < deadline {
            if self.ws.is_none() {
                self.reconnect().await;
                continue;
            }
            let left = deadline - tokio::time::Instant::now();
            self.next(left.min(Duration::from_millis(100))).await;
            if self.ws.is_some() && self.told_at.elapsed() > Duration::from_millis(500) {
                self.tell_received().await;
            }
        }
    }

    /// Reads until every send is acked (reconnecting as needed). Fails on
    /// a stall: no ack for [`STALL`] (or [`PATIENCE`] in all). A slow
    /// emulator acks a backlog slowly; a lost send is never acked.
    pub async fn settle(&mut self) {
        let mut progress = Progress::new(self.pending.len());
        while !self.pending.is_empty() {
            if let Some(why) = progress.stalled(self.pending.len()) {
                panic!(
                    "{} (on {}): sends never acked ({why}): {:?}; other frames: {:?}; closes: {:?}",
                    self.user,
                    self.node,
                    self.pending.keys().collect::<Vec<_>>(),
                    self.others.iter().rev().take(5).collect::<Vec<_>>(),
                    self.closes,
                );
            }
            self.pump(Duration::from_millis(200)).await;
        }
        progress.done(&self.user, "settling its sends");
    }

    /// Whether every (conversation, id) in `want` reached this device.
    pub fn has_all(&self, want: &[(String, u64)]) -> bool {
        want.iter().all(|k| self.got.contains_key(k))
    }

    /// Waits (reading) until `want` all arrived, or panics with what is
    /// missing on a stall ([`STALL`] without a new one, or [`PATIENCE`]).
    /// Everything must come live or by `sync` (never asked with
    /// `history`): a device whose node died gets what it missed from its
    /// own delivery cursor on the next node, whatever it sent meanwhile.
    pub async fn expect_all(&mut self, want: &[(String, u64)]) {
        let missing = |d: &Self| want.iter().filter(|k| !d.got.contains_key(*k)).count();
        let mut progress = Progress::new(missing(self));
        loop {
            let left = missing(self);
            if left == 0 {
                break;
            }
            if let Some(why) = progress.stalled(left) {
                let missing: Vec<_> = want.iter().filter(|k| !self.got.contains_key(*k)).collect();
                panic!(
                    "{} (on {}) is missing ({why}) {missing:?}",
                    self.user, self.node
                );
            }
            self.pump(Duration::from_millis(200)).await;
        }
        progress.done(&self.user, "receiving every message");
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        if let Some(mut ws) = self.ws.take() {
            let _ = ws.close(None).await;
        }
    }
}
