//! Command-line flags of the `conn-tier` binary, each with an environment
//! fallback; switches accept `1/0/true/false/yes/no/on/off`.

use crate::error::Error;
use crate::hub::UserLimits;
use crate::limits::{close, defaults, SocketConfig};
use crate::listener::Limits;
use chat_core::auth::{Authenticator, TokenRules, DEFAULT_MAX_LIFETIME_SECS};
use chat_core::ports::DEFAULT_TABLE_PREFIX;
use chat_core::service::ChatLimits;
use chat_management::sigv4::Credential;
use clap::builder::{BoolishValueParser, TypedValueParser};
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// The shortest `@connections` secret accepted (as for the JWT secret).
pub const MIN_MANAGEMENT_SECRET_BYTES: usize = 32;

/// What the flags configure, besides the store and the backend.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Per-connection limits.
    pub socket: SocketConfig,
    /// Per-listener caps (both listeners).
    pub limits: Limits,
    /// Per-user caps and rate budget.
    pub users: UserLimits,
    /// Answer sizes and quotas of the services.
    pub chat: ChatLimits,
    /// `--dev`: `/dev/token` mints tokens with this.
    pub dev_tokens: Option<Authenticator>,
    /// Where the `@connections` API listens (`None`: it does not).
    pub management_addr: Option<SocketAddr>,
    /// The credential every `@connections` request must be signed with.
    pub management: Option<Credential>,
    /// On SIGTERM, how long `/healthz` answers 503 before sockets close
    /// (a cluster node: the load balancer stops sending clients first).
    pub drain: Duration,
    /// How the embedded store watches its disk.
    pub embedded: chat_embedded::Options,
    /// Audiences of at least this many users (a large group's members) are
    /// delivered by each node to its own connections, without a look-up
    /// per member; 0: never (docs/design.md, "Group look-ups").
    pub broadcast_from_members: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            socket: Default::default(),
            limits: Default::default(),
            users: Default::default(),
            chat: Default::default(),
            dev_tokens: None,
            management_addr: None,
            management: None,
            drain: Duration::ZERO,
            embedded: Default::default(),
            broadcast_from_members: chat_core::ports::BROADCAST_FROM_MEMBERS,
        }
    }
}

fn parse_cidr(s: &str) -> Result<crate::proxy_protocol::Cidr, String> {
    s.parse()
}

/// A switch: `1/0/true/false/yes/no/on/off`, from the flag or its
/// variable. Clap's own refusal names only the flag, so a wrong
/// `CHAT_LOG_JSON=maybe` in an environment file is hard to find; this one
/// names both.
#[derive(Debug, Clone, Copy)]
pub struct Boolish;

impl TypedValueParser for Boolish {
    type Value = bool;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<bool, clap::Error> {
        BoolishValueParser::new()
            .parse_ref(cmd, arg, value)
            .map_err(|_| {
                let flag = arg
                    .and_then(|a| a.get_long())
                    .map(|l| format!("--{l}"))
                    .unwrap_or_default();
                let from = match arg.and_then(|a| a.get_env()) {
                    Some(env) => format!("{flag} / {}", env.to_string_lossy()),
                    None => flag,
                };
                clap::Error::raw(
                    clap::error::ErrorKind::InvalidValue,
                    format!(
                        "{from}: {:?} is not a switch value; use 1/0, true/false, yes/no or on/off\n",
                        value.to_string_lossy()
                    ),
                )
                .with_cmd(cmd)
            })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// In --data-dir (redb or fjall, --engine), fsynced before every ack
    /// (the default).
    Embedded,
    /// Nothing is kept across restarts; for experiments only.
    Memory,
    /// DynamoDB (AWS, or the emulator at AWS_ENDPOINT_URL); needs the
    /// `dynamodb` cargo feature.
    Dynamodb,
}

/// The embedded store's engine (docs/operations.md, "Engines").
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineArg {
    /// One file, `chat.redb`: a copy-on-write B-tree (the default).
    Redb,
    /// A directory, `chat.fjall/`: an LSM tree (journal, memtables,
    /// compaction).
    Fjall,
}

impl From<EngineArg> for chat_embedded::EngineKind {
    fn from(e: EngineArg) -> Self {
        match e {
            EngineArg::Redb => chat_embedded::EngineKind::Redb,
            EngineArg::Fjall => chat_embedded::EngineKind::Fjall,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FunctionsKind {
    /// The services linked into this process (the default).
    InProcess,
    /// The Lambda functions, through the Lambda Invoke API (`cargo lambda
    /// watch`, or AWS); needs the `lambda` cargo feature.
    Lambda,
}

/// The chat server: WebSockets on /ws, durable messages on disk.
#[derive(Debug, Clone, Parser)]
#[command(name = "conn-tier", version, about)]
pub struct ServerArgs {
    /// Address to serve WebSockets on (path /ws; the web client on /).
    #[arg(long, env = "CHAT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Development mode: the public development JWT secret (unless
    /// --jwt-secret is given) and `GET /dev/token?user=…` to mint tokens.
    /// Never in production.
    #[arg(long, env = "CHAT_DEV", value_parser = Boolish, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub dev: bool,
    /// Lets --dev listen on an address other machines reach (its
    /// `/dev/token` mints a token for anyone to anyone who asks): for a
    /// test network, never the internet. Without it, --dev listens on
    /// loopback only.
    #[arg(long, env = "CHAT_DEV_ON_NETWORK", value_parser = Boolish, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub dev_on_network: bool,
    /// HS256 secret that client tokens are signed with, at least 32 bytes
    /// (`openssl rand -hex 32`). Required unless --dev.
    #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// The secret being rotated out: tokens it signed are still accepted
    /// (docs/security.md, "Rotating the secret").
    #[arg(long, env = "CHAT_JWT_PREVIOUS_SECRET", hide_env_values = true)]
    pub jwt_previous_secret: Option<String>,
    /// Longest token lifetime accepted (exp − iat, or exp − now).
    #[arg(long, env = "CHAT_JWT_MAX_LIFETIME_SECS", default_value_t = DEFAULT_MAX_LIFETIME_SECS)]
    pub jwt_max_lifetime_secs: u64,
    /// When set, tokens must carry this `iss`.
    #[arg(long, env = "CHAT_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// When set, tokens must carry this `aud`.
    #[arg(long, env = "CHAT_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// Address of the `@connections` management API (its own listener).
    /// Off unless set, or needed (--functions lambda: 127.0.0.1:8081).
    #[arg(long, env = "CHAT_MANAGEMENT_LISTEN")]
    pub management_listen: Option<SocketAddr>,
    /// Access key id every `@connections` request must be signed with
    /// (SigV4). Default: AWS_ACCESS_KEY_ID, on a loopback address only.
    #[arg(long, env = "CHAT_MANAGEMENT_KEY_ID")]
    pub management_key_id: Option<String>,
    /// Its secret. Default: AWS_SECRET_ACCESS_KEY, on a loopback address only.
    #[arg(long, env = "CHAT_MANAGEMENT_SECRET", hide_env_values = true)]
    pub management_secret: Option<String>,
    /// Directory of the embedded store.
    #[arg(long, env = "CHAT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// Where messages, users and groups are kept.
    #[arg(long, env = "CHAT_STORE", value_enum, default_value = "embedded")]
    pub store: StoreKind,
    /// The embedded store's engine. A data directory holds one engine's
    /// data; the other's is refused at start, never opened beside it.
    #[arg(long, env = "CHAT_ENGINE", value_enum, default_value = "redb")]
    pub engine: EngineArg,
    /// Free space (MiB) the embedded store keeps on its disk: below it,
    /// writes are refused (`unavailable`) and `/readyz` answers 503 until
    /// there is room again. 0 turns it off.
    #[arg(long, env = "CHAT_MIN_FREE_DISK_MB", default_value_t = 64)]
    pub min_free_disk_mb: u64,
    /// Prefix of the DynamoDB table names (`--store dynamodb`).
    #[arg(long, env = "CHAT_TABLE_PREFIX", default_value = DEFAULT_TABLE_PREFIX)]
    pub table_prefix: String,
    /// Where frames go: the services in this process, or the Lambda functions.
    #[arg(long, env = "CHAT_FUNCTIONS", value_enum, default_value = "in-process")]
    pub functions: FunctionsKind,
    /// Lambda Invoke API endpoint (`http://127.0.0.1:9000` for `cargo lambda
    /// watch`); unset means AWS Lambda.
    #[arg(long, env = "CHAT_LAMBDA_ENDPOINT")]
    pub lambda_endpoint: Option<String>,
    /// With `--functions lambda`: how long a function that answered before
    /// may take to answer an invocation, in ms (API Gateway's 29 s); past
    /// it the frame's sender gets `internal` and the stream poller retries
    /// its batch. A function's first invocation may take 10 minutes (a
    /// cold `cargo lambda watch` compiles it).
    #[arg(long, env = "CHAT_INVOKE_TIMEOUT_MS", default_value_t = 29_000)]
    pub invoke_timeout_ms: u64,
    /// Prefix of the function names (`<prefix>send`, `<prefix>fanout`, …).
    #[arg(long, env = "CHAT_FUNCTION_PREFIX", default_value = "")]
    pub function_prefix: String,
    /// API Gateway stage name given to the functions in their events.
    #[arg(long, env = "CHAT_STAGE", default_value = "local")]
    pub stage: String,
    /// With `--functions lambda`: poll the messages table's stream and invoke
    /// `fanout`, standing in for the event source mapping an emulator lacks.
    #[arg(long, env = "CHAT_STREAM_POLL", value_parser = Boolish, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub stream_poll: bool,
    /// Bytes queued per connection (live frames and answers) before a
    /// reader too slow to take them is closed with 1008.
    #[arg(long, env = "CHAT_OUTBOUND_QUEUE_BYTES", default_value_t = defaults::OUTBOUND_BYTES)]
    pub outbound_queue_bytes: usize,
    /// Frames (and connection attempts) a user may send at once, all their
    /// connections together...
    #[arg(long, env = "CHAT_RATE_BURST", default_value_t = defaults::RATE_BURST)]
    pub rate_burst: u32,
    /// ...and per second after that.
    #[arg(long, env = "CHAT_RATE_PER_SEC", default_value_t = defaults::RATE_PER_SEC)]
    pub rate_per_sec: u32,
    /// Connections a user may have open on this node (a new one past it
    /// gets HTTP 429).
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_USER", default_value_t = 20)]
    pub max_connections_per_user: usize,
    /// Groups a user may create per day.
    #[arg(long, env = "CHAT_MAX_GROUPS_PER_DAY", default_value_t = 500)]
    pub max_groups_per_day: u64,
    /// Largest answer frame (a history page, a conversations page), bytes.
    #[arg(long, env = "CHAT_MAX_ANSWER_BYTES", default_value_t = 256 * 1024)]
    pub max_answer_bytes: usize,
    /// Connections open at once on each listener, all clients together.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS", default_value_t = 50_000)]
    pub max_connections: usize,
    /// Connections open at once from one IP address.
    #[arg(long, env = "CHAT_MAX_CONNECTIONS_PER_IP", default_value_t = 500)]
    pub max_connections_per_ip: usize,
    /// New connections per second from one IP address (bursts of twice this).
    #[arg(
        long,
        env = "CHAT_NEW_CONNECTIONS_PER_IP_PER_SEC",
        default_value_t = 50
    )]
    pub new_connections_per_ip_per_sec: u32,
    /// `TCP_NODELAY` on accepted sockets. Leave it on: off, each small frame
    /// may wait for the ACK of the one before (Nagle); it exists to measure
    /// that (docs/benchmarks.md).
    #[arg(long, env = "CHAT_TCP_NODELAY", value_parser = Boolish, num_args = 0..=1, default_missing_value = "true", default_value = "true")]
    pub tcp_nodelay: bool,
    /// Seconds a client has to send its request headers.
    #[arg(long, env = "CHAT_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,
    /// Load balancers (addresses or CIDR ranges, comma-separated) whose
    /// connections start with a PROXY protocol header (v1 or v2) naming
    /// the client: per-IP limits then count the client, not the balancer.
    /// A connection from them without the header is dropped; from anyone
    /// else a header is never believed.
    #[arg(long, env = "CHAT_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_cidr)]
    pub trusted_proxies: Vec<crate::proxy_protocol::Cidr>,
    /// Bytes each connection reads from its socket at a time (its read
    /// buffer, grown on demand for a larger frame). Every idle connection
    /// holds it: 512 costs 0.5 KB less per connection than 1024 and about
    /// 5% more CPU on 4 KB messages (docs/benchmarks.md (c)).
    #[arg(long, env = "CHAT_WS_READ_BUFFER_BYTES", default_value_t = defaults::READ_BUFFER_BYTES)]
    pub ws_read_buffer_bytes: usize,
    /// Seconds between pings to an idle connection.
    #[arg(long, env = "CHAT_PING_SECS", default_value_t = defaults::PING_SECS)]
    pub ping_secs: u64,
    /// Milliseconds live messages wait for a new connection's first frame:
    /// a `sync` sent first gets them after its replay, in one increasing
    /// sequence per conversation.
    #[arg(long, env = "CHAT_LIVE_HOLD_MS", default_value_t = defaults::LIVE_HOLD_MS)]
    pub live_hold_ms: u64,
    /// Milliseconds the authorizer may take on an upgrade before the client
    /// gets HTTP 503 with Retry-After (a cold Lambda authorizer).
    #[arg(long, env = "CHAT_AUTHORIZER_TIMEOUT_MS", default_value_t = defaults::AUTHORIZER_TIMEOUT_MS)]
    pub authorizer_timeout_ms: u64,
    /// New connections being recorded in the store at once; the next waits
    /// up to 2 s, then is closed with 1013 (try again later). Bounds what a
    /// reconnect storm asks of the store, so heartbeats still get through.
    #[arg(long, env = "CHAT_MAX_PENDING_CONNECTS", default_value_t = defaults::MAX_PENDING_CONNECTS)]
    pub max_pending_connects: usize,
    /// Cluster mode: this node delivers to the connections of the other
    /// nodes sharing the DynamoDB tables, through their `@connections` API
    /// (needs --store dynamodb, --management-listen and a management
    /// credential). docs/design.md, "Cluster".
    #[arg(long, env = "CHAT_CLUSTER", value_parser = Boolish, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub cluster: bool,
    /// The WebSocket URL clients use to reach this node (the load
    /// balancer's, in a cluster); listed by GET /nodes. Default:
    /// ws://<--listen>/ws.
    #[arg(long, env = "CHAT_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The URL other nodes post to this node's connections at. Default:
    /// http://<--management-listen>.
    #[arg(long, env = "CHAT_ADVERTISE_MANAGEMENT_URL")]
    pub advertise_management_url: Option<String>,
    /// Address of the Prometheus `/metrics` listener (its own port, never
    /// the public one). Off unless set.
    #[arg(long, env = "CHAT_METRICS_LISTEN")]
    pub metrics_listen: Option<SocketAddr>,
    /// Milliseconds between a node's heartbeats (and janitor rounds).
    #[arg(long, env = "CHAT_HEARTBEAT_MS", default_value_t = 2000)]
    pub heartbeat_ms: u64,
    /// A node silent this many milliseconds is declared dead: its
    /// connection records are deleted and its clients reconnect elsewhere.
    #[arg(long, env = "CHAT_DEAD_AFTER_MS", default_value_t = 6000)]
    pub dead_after_ms: u64,
    /// On SIGTERM, how long /healthz answers 503 (so the load balancer
    /// stops sending clients) before sockets are closed.
    #[arg(long, env = "CHAT_DRAIN_MS", default_value_t = 1500)]
    pub drain_ms: u64,
    /// Groups of at least this many members are delivered by each node to
    /// its own connections (one post per node in a cluster) instead of a
    /// connection look-up per member; 0 turns it off. docs/design.md,
    /// "Group look-ups".
    #[arg(long, env = "CHAT_BROADCAST_FROM_MEMBERS", default_value_t = chat_core::ports::BROADCAST_FROM_MEMBERS)]
    pub broadcast_from_members: usize,
    /// Log as JSON lines instead of text.
    #[arg(long, env = "CHAT_LOG_JSON", value_parser = Boolish, num_args = 0..=1, default_missing_value = "true", default_value = "false")]
    pub log_json: bool,
}

impl ServerArgs {
    pub fn socket_config(&self) -> SocketConfig {
        SocketConfig {
            outbound_bytes: self.outbound_queue_bytes.max(1024),
            live_hold: Duration::from_millis(self.live_hold_ms),
            authorizer_timeout: Duration::from_millis(self.authorizer_timeout_ms),
            max_pending_connects: self.max_pending_connects.max(1),
            read_buffer: self
                .ws_read_buffer_bytes
                .max(defaults::MIN_READ_BUFFER_BYTES),
            // A cluster node going down sends its clients to the others.
            shutdown_code: if self.cluster {
                close::SERVICE_RESTART
            } else {
                close::GOING_AWAY
            },
            ..SocketConfig::default()
        }
        .with_ping(Duration::from_secs(self.ping_secs.max(1)))
    }

    /// The JWT verifier: the configured secret (at least 32 bytes), or the
    /// public development secret with `--dev`; nothing else starts.
    pub fn authenticator(&self) -> Result<Authenticator, Error> {
        let rules = TokenRules {
            max_lifetime_secs: self.jwt_max_lifetime_secs,
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
        };
        if self.dev && !self.listen.ip().is_loopback() && !self.dev_on_network {
            return Err(Error::Config(format!(
                "--dev on {} would serve /dev/token (a token for anyone) to the network: \
                 listen on 127.0.0.1, or add --dev-on-network if this network is yours alone",
                self.listen
            )));
        }
        let secret = match (&self.jwt_secret, self.dev) {
            (Some(s), _) if !s.is_empty() => s.clone(),
            (_, true) => {
                tracing::warn!(
                    "--dev: using the public development JWT secret and serving /dev/token. \
                     Anyone can sign in as anyone. Never run this way in production."
                );
                chat_core::auth::DEV_SECRET.to_string()
            }
            _ => {
                return Err(Error::Config(
                    "no JWT secret: set --jwt-secret or CHAT_JWT_SECRET (at least 32 bytes, \
                     e.g. `openssl rand -hex 32`), or run with --dev to use the public \
                     development secret"
                        .into(),
                ))
            }
        };
        let auth = Authenticator::with_rules(secret.as_bytes(), rules)
            .map_err(|e| Error::Config(format!("--jwt-secret / CHAT_JWT_SECRET: {e}")))?;
        match self.jwt_previous_secret.as_deref() {
            Some(p) if !p.is_empty() => auth.with_previous(p.as_bytes()).map_err(|e| {
                Error::Config(format!(
                    "--jwt-previous-secret / CHAT_JWT_PREVIOUS_SECRET: {e}"
                ))
            }),
            _ => Ok(auth),
        }
    }

    /// Everything else the flags configure.
    pub fn settings(&self, auth: &Authenticator) -> Result<Settings, Error> {
        let management_addr = match (self.management_listen, self.functions) {
            (Some(a), _) => Some(a),
            (None, FunctionsKind::Lambda) => Some(SocketAddr::from(([127, 0, 0, 1], 8081))),
            (None, FunctionsKind::InProcess) => None,
        };
        let management = match management_addr {
            Some(addr) => Some(self.management_credential(addr)?),
            None => None,
        };
        Ok(Settings {
            socket: self.socket_config(),
            limits: Limits {
                // What the descriptor limit allows at most (raised first).
                max_connections: crate::fds::cap(self.max_connections.max(1)),
                max_per_ip: self.max_connections_per_ip.max(1),
                new_per_ip_per_sec: self.new_connections_per_ip_per_sec,
                new_per_ip_burst: self.new_connections_per_ip_per_sec.saturating_mul(2).max(1),
                header_timeout: Duration::from_secs(self.header_timeout_secs.max(1)),
                tcp_nodelay: self.tcp_nodelay,
                trusted_proxies: std::sync::Arc::new(self.trusted_proxies.clone()),
            },
            users: UserLimits {
                max_connections: self.max_connections_per_user.max(1),
                burst: self.rate_burst.max(1),
                per_sec: self.rate_per_sec,
            },
            chat: ChatLimits {
                max_answer_bytes: self.max_answer_bytes.max(16 * 1024),
                groups_per_day: self.max_groups_per_day,
            },
            dev_tokens: self.dev.then(|| auth.clone()),
            management_addr,
            management,
            drain: if self.cluster {
                Duration::from_millis(self.drain_ms)
            } else {
                Duration::ZERO
            },
            embedded: chat_embedded::Options {
                min_free_bytes: self.min_free_disk_mb.saturating_mul(1024 * 1024),
                engine: self.engine.into(),
                ..Default::default()
            },
            broadcast_from_members: self.broadcast_from_members,
        })
    }

    /// How this node takes part in the node registry (DynamoDB store): its
    /// URLs and timings; checks what cluster mode needs.
    pub fn registry(&self, settings: &Settings) -> Result<crate::cluster::ClusterConfig, Error> {
        let heartbeat = Duration::from_millis(self.heartbeat_ms.max(100));
        let dead_after = Duration::from_millis(self.dead_after_ms);
        if dead_after < heartbeat * 2 {
            return Err(Error::Config(
                "--dead-after-ms must be at least twice --heartbeat-ms".into(),
            ));
        }
        let management_url = match (&self.advertise_management_url, settings.management_addr) {
            (Some(u), _) => Some(u.clone()),
            (None, Some(a)) if a.ip().is_unspecified() => {
                return Err(Error::Config(format!(
                    "--management-listen {a} binds every address: say which one other nodes reach it at with --advertise-management-url"
                )))
            }
            (None, Some(a)) => Some(format!("http://{a}")),
            (None, None) => None,
        };
        if self.cluster {
            if self.store != StoreKind::Dynamodb {
                return Err(Error::Config(
                    "--cluster needs --store dynamodb: the nodes share DynamoDB (the embedded and memory stores are single-node)".into(),
                ));
            }
            if settings.management_addr.is_none() {
                return Err(Error::Config(
                    "--cluster needs --management-listen: other nodes post to this node's connections there".into(),
                ));
            }
            if self.management_key_id.is_none() || self.management_secret.is_none() {
                return Err(Error::Config(
                    "--cluster needs a cluster credential: --management-key-id and --management-secret (CHAT_MANAGEMENT_KEY_ID, CHAT_MANAGEMENT_SECRET), the same on every node".into(),
                ));
            }
        }
        Ok(crate::cluster::ClusterConfig {
            heartbeat,
            dead_after,
            management_url,
            ws_url: self
                .public_url
                .clone()
                .unwrap_or_else(|| format!("ws://{}/ws", self.listen)),
            clustered: self.cluster,
        })
    }

    /// The credential `@connections` requests must be signed with: the
    /// flags, or (on a loopback address only) the AWS credentials in the
    /// environment, which is what the local functions sign with.
    fn management_credential(&self, addr: SocketAddr) -> Result<Credential, Error> {
        if let (Some(key_id), Some(secret)) = (&self.management_key_id, &self.management_secret) {
            // An empty or short secret (an unset shell variable, say) would
            // leave the API open to whoever guesses it: refused, like a
            // short JWT secret.
            if secret.len() < MIN_MANAGEMENT_SECRET_BYTES || key_id.is_empty() {
                return Err(Error::Config(format!(
                    "--management-secret / CHAT_MANAGEMENT_SECRET must be at least {MIN_MANAGEMENT_SECRET_BYTES} bytes \
                     (e.g. `openssl rand -hex 32`), and --management-key-id must not be empty"
                )));
            }
            return Ok(Credential {
                key_id: key_id.clone(),
                secret: secret.clone(),
            });
        }
        let from_env = std::env::var("AWS_ACCESS_KEY_ID")
            .ok()
            .zip(std::env::var("AWS_SECRET_ACCESS_KEY").ok());
        match from_env {
            Some((key_id, secret)) if addr.ip().is_loopback() => Ok(Credential { key_id, secret }),
            Some(_) => Err(Error::Config(format!(
                "the @connections API on {addr} (not loopback) needs its own credential: \
                 set --management-key-id and --management-secret"
            ))),
            None => Err(Error::Config(format!(
                "the @connections API on {addr} needs a credential to verify requests: set \
                 --management-key-id and --management-secret (or, on loopback, \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            ))),
        }
    }
}

/// Sets up `tracing` (RUST_LOG, default `info`, with the fjall engine's
/// own logs at `warn`: at `info` it names every table it opens).
pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,fjall=warn,lsm_tree=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}

#[cfg(test)]
mod tests;
