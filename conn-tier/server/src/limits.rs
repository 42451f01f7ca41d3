//! The connection limits every layer reads: [`SocketConfig`] (what one
//! connection may queue, how often it is pinged, how long it may stall),
//! the WebSocket close codes the server sends, and the defaults the flags
//! share. A leaf: it imports nothing of this crate, so the config, the hub,
//! the cluster and the app read these without importing the socket.

use chat_core::protocol::MAX_FRAME_BYTES;
use std::time::Duration;

/// Close codes of RFC 6455 used here.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const SERVICE_RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// Defaults of [`SocketConfig`], shared with the command-line flags.
pub mod defaults {
    /// Bytes queued per connection before a slow reader is dropped (1008).
    pub const OUTBOUND_BYTES: usize = 4 * 1024 * 1024;
    /// Token bucket: frames a connection may send at once...
    pub const RATE_BURST: u32 = 200;
    /// ...and per second after that.
    pub const RATE_PER_SEC: u32 = 100;
    /// Seconds between pings to an idle connection.
    pub const PING_SECS: u64 = 30;
    /// Milliseconds live messages wait for a new connection's first frame.
    pub const LIVE_HOLD_MS: u64 = 2000;
    /// Milliseconds the authorizer may take before an upgrade gets 503.
    pub const AUTHORIZER_TIMEOUT_MS: u64 = 5000;
    /// New connections being recorded in the store at once.
    pub const MAX_PENDING_CONNECTS: usize = 256;
    /// Bytes read from a socket at a time (the read buffer's size).
    pub const READ_BUFFER_BYTES: usize = 512;
    /// The smallest read buffer accepted (a frame header is up to 14).
    pub const MIN_READ_BUFFER_BYTES: usize = 64;
}

/// Per-connection limits.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    /// API Gateway's frame limit: a bigger frame closes the socket with 1009.
    pub max_frame_bytes: usize,
    /// Bytes waiting to be written, live frames and answers together; a
    /// peer that lets it fill is closed with 1008.
    pub outbound_bytes: usize,
    /// How often an idle connection is pinged.
    pub ping_interval: Duration,
    /// A peer silent this long (no frame, no pong) is closed.
    pub idle_timeout: Duration,
    /// A single write that takes longer than this closes the socket.
    pub write_timeout: Duration,
    /// Live messages for a new connection wait this long at most for its
    /// first frame (a `sync` puts them after its replay).
    pub live_hold: Duration,
    /// Longest wait for the authorizer on an upgrade; past it, HTTP 503
    /// with `Retry-After` (a cold Lambda authorizer, say).
    pub authorizer_timeout: Duration,
    /// The close code at shutdown: 1001 (going away), or 1012 (service
    /// restart) for a cluster node whose clients reconnect elsewhere.
    pub shutdown_code: u16,
    /// New connections being recorded in the store at once (`$connect`);
    /// the next waits up to `connect_wait`, then is closed with 1013. A
    /// reconnect storm then loads the store with at most this many writes
    /// per node, and the node's own heartbeat is not starved behind them
    /// (a node that cannot heartbeat is declared dead).
    pub max_pending_connects: usize,
    pub connect_wait: Duration,
    /// Bytes read from the socket at a time: the read buffer every
    /// connection holds, idle or not (grown on demand for a larger frame).
    pub read_buffer: usize,
}

impl SocketConfig {
    /// The configuration for a ping interval (the idle timeout is 2.5×).
    pub fn with_ping(mut self, ping: Duration) -> Self {
        self.ping_interval = ping;
        self.idle_timeout = ping * 5 / 2;
        self
    }
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            max_frame_bytes: MAX_FRAME_BYTES,
            outbound_bytes: defaults::OUTBOUND_BYTES,
            ping_interval: Duration::ZERO,
            idle_timeout: Duration::ZERO,
            write_timeout: Duration::from_secs(10),
            live_hold: Duration::from_millis(defaults::LIVE_HOLD_MS),
            authorizer_timeout: Duration::from_millis(defaults::AUTHORIZER_TIMEOUT_MS),
            shutdown_code: close::GOING_AWAY,
            max_pending_connects: defaults::MAX_PENDING_CONNECTS,
            connect_wait: Duration::from_secs(2),
            read_buffer: defaults::READ_BUFFER_BYTES,
        }
        .with_ping(Duration::from_secs(defaults::PING_SECS))
    }
}
