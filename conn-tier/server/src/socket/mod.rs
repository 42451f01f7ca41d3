//! One connection's loop: a reader that parses each text frame once and
//! routes it to the backend, and a writer that drains the connection's
//! bounded outbound queue, pings idle peers and closes on shutdown. Generic
//! over `Sink`/`Stream` of axum messages so unit tests can drive it with
//! channels.
//!
//! Answers keep frame order: a `send` is answered later (once durable), so
//! every answer that could overtake it (an error, a `rate_limited`) waits
//! in the same ordered queue, and any other action runs only after the
//! earlier sends are answered.
//!
//! Messages keep each conversation's id order on the connection, and live
//! ones wait for a first `sync`: see [`sequencer`].
//!
//! Every future here lives as long as its connection, so its size is paid
//! per idle connection (docs/benchmarks.md (c)): state that only a rare
//! path needs is boxed where that path runs.
//!
//! # Layout
//! - this file: [`run_socket`] (admission, recording, the close and the
//!   linger), [`SocketConfig`], the close codes;
//! - `reader`: the reading half, frame by frame, answers in frame order;
//! - `writer`: the writing half, batching, pings, timeouts;
//! - [`rate`]: the token bucket (one per user, in the hub);
//! - [`sequencer`]: per-conversation order, gap filling, the first-frame hold;
//! - `tests`: the loop driven through channels.

pub mod rate;
mod reader;
pub mod sequencer;
#[cfg(test)]
mod tests;
mod writer;

pub use writer::WRITE_BATCH_BYTES;

use crate::app::App;
use crate::hub::UserTicket;
use crate::outbox::outbox;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use chat_core::protocol::MAX_FRAME_BYTES;
use chat_core::Session;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use reader::Reader;
use sequencer::Sequencer;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use writer::Writer;

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

/// A read error of the socket, classified for the close code it earns.
pub trait ReadError: std::fmt::Display {
    fn close_code(&self) -> u16;
}

impl ReadError for axum::Error {
    fn close_code(&self) -> u16 {
        use tokio_tungstenite::tungstenite::Error as WsError;
        let inner = std::error::Error::source(self).and_then(|s| s.downcast_ref::<WsError>());
        match inner {
            Some(WsError::Capacity(_)) => close::TOO_BIG,
            Some(WsError::Utf8(_)) => close::INVALID_DATA,
            _ => close::PROTOCOL,
        }
    }
}

/// Test sockets fail with a text.
impl ReadError for String {
    fn close_code(&self) -> u16 {
        close::PROTOCOL
    }
}

/// How long the peer's close reply is waited for after our close frame.
/// (Our close frame itself gets the write timeout, like any frame: what
/// is half-written goes first. Memory held meanwhile: that one frame.)
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// After our close, how long a peer that sends nothing is waited for.
const LINGER_QUIET: Duration = Duration::from_millis(250);

fn now_ms(origin: Instant) -> u64 {
    origin.elapsed().as_millis() as u64
}

/// Runs one authenticated connection until either side closes, the peer
/// goes silent or too slow, or `shutdown` fires.
///
/// The returned future lives as long as the connection, so what it holds
/// is paid per idle connection (docs/benchmarks.md (c)): the socket is
/// split here, before the future exists (its halves share one allocation;
/// the future holds the halves, two pointers and the sink's one-message
/// slot, not the socket), `app` is shared,
/// and the rare paths' state (the store reads that fill gaps, the shutdown
/// timer) is boxed where it is used.
pub fn run_socket<S, E>(
    socket: S,
    app: Arc<App>,
    session: Session,
    user: UserTicket,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Send + 'static,
    E: ReadError + Send,
{
    let (sink, stream) = socket.split();
    serve(sink, stream, app, session, user, shutdown)
}

// Not an `async fn` on purpose (see the comment in the body).
#[allow(clippy::manual_async_fn)]
fn serve<S, E>(
    mut sink: SplitSink<S, Message>,
    mut stream: SplitStream<S>,
    app: Arc<App>,
    session: Session,
    user: UserTicket,
    shutdown: CancellationToken,
) -> impl std::future::Future<Output = ()> + Send
where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Send + 'static,
    E: ReadError + Send,
{
    // A block over the captured arguments, not an `async fn`: an `async fn`
    // keeps each argument twice (as passed, and moved into its body).
    async move {
        let cfg = &app.socket;
        let conn = session.connection_id.as_str();
        let permit = tokio::select! {
            p = tokio::time::timeout(cfg.connect_wait, app.connecting.clone().acquire_owned()) => p.ok().and_then(Result::ok),
            _ = shutdown.cancelled() => None,
        };
        let Some(recording) = permit else {
            let code = if shutdown.is_cancelled() {
                cfg.shutdown_code
            } else {
                chat_core::metrics::connect("busy");
                tracing::debug!(user = %session.user_id, "too many connections being recorded; 1013");
                close::TRY_AGAIN_LATER
            };
            let _ = sink.send(close_msg(code, "server busy; retry later")).await;
            // Read what the client sent meanwhile, or the reset that dropping
            // unread input causes can destroy the close frame.
            linger(&mut stream).await;
            return;
        };
        let (out, inbox) = outbox(cfg.outbound_bytes);
        app.hub.insert(conn, out.clone());
        // A bool, not the `Result`: a named error would be kept in this
        // future for the connection's whole life.
        let recorded = match app.backend.connect(&session).await {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, user = %session.user_id, "cannot record connection");
                false
            }
        };
        drop(recording);
        if !recorded {
            app.hub.remove(conn);
            let _ = sink
                .send(close_msg(close::INTERNAL, "internal error"))
                .await;
            linger(&mut stream).await;
            return;
        }
        tracing::debug!(user = %session.user_id, connection = %conn, "connected");

        let origin = Instant::now();
        let sequencer = Sequencer::new(app.store.clone(), conn, cfg.outbound_bytes);
        let writer = Writer {
            sink,
            inbox,
            sequencer,
            app: app.clone(),
            shutdown: shutdown.clone(),
            origin,
        };
        // Boxed: the reader below is polled in this task, the writer beside it.
        let mut writer = Box::pin(writer.run());
        let reader = Reader {
            backend: app.backend.as_ref(),
            session: &session,
            out: &out,
            user: &user,
            cfg,
            origin,
            shutdown: &shutdown,
        };
        let reading = reader.run(&mut stream);
        let why = tokio::select! {
            _ = reading => {
                // The reader queued a close frame (or the peer left); let the
                // writer send it, briefly.
                tokio::time::timeout(cfg.write_timeout * 2 + Duration::from_secs(1), &mut writer)
                    .await
                    .unwrap_or("too_slow")
            }
            why = &mut writer => why,
        };
        chat_core::metrics::disconnect(why);
        // Gone for everyone once our close is out; then the socket lingers.
        if app.hub.remove(conn) {
            // Closed because this node was declared dead: the record is under
            // the old id, the janitors' to delete in one sequential sweep.
            // Thousands of deletes at once here would load the store that
            // every node's heartbeat needs, and could get the next node
            // declared dead.
            tracing::debug!(connection = %conn, "record left to the janitors");
        } else {
            app.backend.disconnect(&session).await;
        }
        tracing::debug!(user = %session.user_id, connection = %conn, "disconnected");
        drop(user);
        linger(&mut stream).await;
    }
}

/// After our close frame, reads (and drops) what the peer still sends,
/// until its close reply, EOF, a quiet spell of [`LINGER_QUIET`], or
/// [`CLOSE_GRACE`] in all. Dropping a socket with unread input makes the
/// kernel reset it, and the reset destroys what the peer has not read
/// yet: our close frame among it. A peer that sends nothing more leaves
/// nothing unread, so the quiet spell is enough.
async fn linger<R, E>(stream: &mut R)
where
    R: Stream<Item = Result<Message, E>> + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(LINGER_QUIET, stream.next()).await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

fn close_msg(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}
