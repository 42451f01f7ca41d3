//! Command-line flags of the `conn-tier` binary, each with an env fallback.

use crate::socket::{defaults, SocketConfig};
use chat_core::ports::DEFAULT_TABLE_PREFIX;
use clap::{Parser, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StoreKind {
    /// redb file in --data-dir, fsynced before every ack (the default).
    Embedded,
    /// Nothing is kept across restarts; for experiments only.
    Memory,
    /// DynamoDB (AWS, or the emulator at AWS_ENDPOINT_URL); needs the
    /// `dynamodb` cargo feature.
    Dynamodb,
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
    /// Address to serve WebSockets on (path /ws).
    #[arg(long, env = "CHAT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address of the `@connections` management API (its own listener;
    /// keep it private: it can post to any connection).
    #[arg(long, env = "CHAT_MANAGEMENT_LISTEN", default_value = "127.0.0.1:8081")]
    pub management_listen: SocketAddr,
    /// Directory of the embedded store.
    #[arg(long, env = "CHAT_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// HS256 secret that client tokens are signed with. Without it a public
    /// development secret is used, and a warning is logged.
    #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Where messages, users and groups are kept.
    #[arg(long, env = "CHAT_STORE", value_enum, default_value = "embedded")]
    pub store: StoreKind,
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
    /// Prefix of the function names (`<prefix>send`, `<prefix>fanout`, …).
    #[arg(long, env = "CHAT_FUNCTION_PREFIX", default_value = "")]
    pub function_prefix: String,
    /// API Gateway stage name given to the functions in their events.
    #[arg(long, env = "CHAT_STAGE", default_value = "local")]
    pub stage: String,
    /// With `--functions lambda`: poll the messages table's stream and invoke
    /// `fanout`, standing in for the event source mapping an emulator lacks.
    #[arg(long, env = "CHAT_STREAM_POLL")]
    pub stream_poll: bool,
    /// Frames queued per connection before a slow reader is dropped.
    #[arg(long, env = "CHAT_OUTBOUND_QUEUE", default_value_t = defaults::OUTBOUND_QUEUE)]
    pub outbound_queue: usize,
    /// Frames a connection may send at once (token bucket size)...
    #[arg(long, env = "CHAT_RATE_BURST", default_value_t = defaults::RATE_BURST)]
    pub rate_burst: u32,
    /// ...and per second after that.
    #[arg(long, env = "CHAT_RATE_PER_SEC", default_value_t = defaults::RATE_PER_SEC)]
    pub rate_per_sec: u32,
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
    /// Log as JSON lines instead of text.
    #[arg(long, env = "CHAT_LOG_JSON")]
    pub log_json: bool,
}

impl ServerArgs {
    pub fn socket_config(&self) -> SocketConfig {
        SocketConfig {
            outbound_queue: self.outbound_queue.max(1),
            rate_burst: self.rate_burst.max(1),
            rate_per_sec: self.rate_per_sec,
            live_hold: Duration::from_millis(self.live_hold_ms),
            authorizer_timeout: Duration::from_millis(self.authorizer_timeout_ms),
            ..SocketConfig::default()
        }
        .with_ping(Duration::from_secs(self.ping_secs.max(1)))
    }
}

/// Sets up `tracing` (RUST_LOG, default `info`).
pub fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        let _ = builder.json().try_init();
    } else {
        let _ = builder.try_init();
    }
}
