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
//! # Layout
//! - this file: [`run_socket`], the reader and writer loops, [`SocketConfig`];
//! - [`rate`]: the token bucket (one per user, in the hub);
//! - [`sequencer`]: per-conversation order, gap filling, the first-frame hold;
//! - `tests`: the loop driven through channels.

pub mod rate;
pub mod sequencer;
#[cfg(test)]
mod tests;

use crate::app::App;
use crate::backend::Backend;
use crate::hub::{Outbound, UserTicket};
use crate::outbox::{outbox, Full, Inbox, Outbox};
use async_trait::async_trait;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use chat_core::ports::{PostError, Seq};
use chat_core::protocol::{parse_client_frame, ClientFrame, ServerFrame, MAX_FRAME_BYTES};
use chat_core::service::Deferred;
use chat_core::{Error, Reply, Session};
use futures_util::stream::FuturesOrdered;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use sequencer::Sequencer;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

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

/// Answers to the connection itself go on its queue, waiting for room (up
/// to the write timeout; then the connection is closed as too slow): a
/// client that asks for a big `sync` is paced, and one that never reads
/// costs at most the queue's bytes. A replayed message is sequenced like a
/// live one.
struct QueueReply {
    out: Outbox,
    patience: Duration,
}

/// Sends of one connection waiting for their group commit at once.
const MAX_PENDING_ACKS: usize = 256;

/// Frames already queued are written together up to about this many bytes:
/// one write (one TCP segment, with `TCP_NODELAY`) for many frames under
/// load, a write per frame when they come one at a time. The WebSocket's
/// write buffer is this size too (`http.rs`).
pub const WRITE_BATCH_BYTES: usize = 8 * 1024;
/// At shutdown, how long a socket may take to answer what it has read
/// before it is closed anyway.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);

/// How long the peer's close reply is waited for after our close frame.
/// (Our close frame itself gets the write timeout, like any frame: what
/// is half-written goes first. Memory held meanwhile: that one frame.)
const CLOSE_GRACE: Duration = Duration::from_secs(5);

/// After our close, how long a peer that sends nothing is waited for.
const LINGER_QUIET: Duration = Duration::from_millis(250);

#[async_trait]
impl Reply for QueueReply {
    async fn send(&self, frame: ServerFrame) -> Result<(), PostError> {
        let text = Utf8Bytes::from(frame.to_json());
        let out = match frame {
            ServerFrame::Message(m) => Outbound::Message {
                seq: Seq {
                    conversation_id: m.conversation_id,
                    message_id: m.message_id,
                },
                text,
            },
            ServerFrame::Ack {
                conversation_id,
                message_id,
                ..
            } => Outbound::Ack {
                seq: Seq {
                    conversation_id,
                    message_id,
                },
                text,
            },
            _ => Outbound::Text(text),
        };
        match self.out.push_when_room(out, self.patience).await {
            Ok(()) => Ok(()),
            Err(Full::Closed) | Err(Full::Overflow) => Err(PostError::Gone),
        }
    }

    async fn sync_started(&self, baselines: Vec<(String, u64)>) {
        let _ = self.out.push(Outbound::SyncStarted(baselines));
    }
}

fn now_ms(origin: Instant) -> u64 {
    origin.elapsed().as_millis() as u64
}

/// Runs one authenticated connection until either side closes, the peer
/// goes silent or too slow, or `shutdown` fires.
///
/// This future lives as long as the connection, so what it holds is paid
/// per idle connection (docs/benchmarks.md (c)): `app` is shared, the
/// socket comes boxed from the upgrade, and the rare paths' state (the
/// store reads that fill gaps, the shutdown timer) is boxed where it is
/// used.
pub async fn run_socket<S, E>(
    socket: S,
    app: Arc<App>,
    session: Session,
    user: UserTicket,
    shutdown: CancellationToken,
) where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Send + 'static,
    E: ReadError,
{
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
        let (mut sink, mut stream) = socket.split();
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
        let (mut sink, mut stream) = socket.split();
        let _ = sink
            .send(close_msg(close::INTERNAL, "internal error"))
            .await;
        linger(&mut stream).await;
        return;
    }
    tracing::debug!(user = %session.user_id, connection = %conn, "connected");

    let origin = Instant::now();
    let last_seen = Arc::new(AtomicU64::new(0));
    let (sink, mut stream) = socket.split();
    let sequencer = Sequencer::new(app.store.clone(), conn, cfg.outbound_bytes);
    let mut writer = Box::pin(write_loop(
        sink,
        inbox,
        sequencer,
        app.clone(),
        shutdown.clone(),
        origin,
        last_seen.clone(),
    ));
    let reader = read_loop(
        &mut stream,
        app.backend.as_ref(),
        &session,
        &out,
        &user,
        cfg,
        origin,
        &last_seen,
        &shutdown,
    );
    let why = tokio::select! {
        _ = reader => {
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

/// A frame's payload size, for batching writes.
fn frame_len(m: &Message) -> usize {
    match m {
        Message::Text(t) => t.len(),
        Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b.len(),
        Message::Close(_) => 2,
    }
}

/// The metric label of a close the server sends.
fn disconnect_label(code: u16, reason: &str) -> &'static str {
    match code {
        close::NORMAL if reason.is_empty() => "peer",
        close::NORMAL => "closed_by_server",
        close::GOING_AWAY if reason.starts_with("idle") => "idle",
        close::GOING_AWAY | close::SERVICE_RESTART => "shutdown",
        close::POLICY => "too_slow",
        close::TOO_BIG => "too_big",
        close::INVALID_DATA => "invalid_utf8",
        close::PROTOCOL => "protocol",
        _ => "error",
    }
}

fn close_msg(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

/// Resolves when the timer, if there is one, fires; never without one.
async fn fire(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
}

fn ready(frame: ServerFrame) -> Deferred {
    Box::pin(std::future::ready(frame))
}

#[allow(clippy::too_many_arguments)]
async fn read_loop<R, E>(
    stream: &mut R,
    backend: &dyn Backend,
    session: &Session,
    out: &Outbox,
    user: &UserTicket,
    cfg: &SocketConfig,
    origin: Instant,
    last_seen: &AtomicU64,
    shutdown: &CancellationToken,
) where
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: ReadError,
{
    let reply: Arc<dyn Reply> = Arc::new(QueueReply {
        out: out.clone(),
        patience: cfg.write_timeout,
    });
    // Answers still to come, in frame order.
    let mut pending: FuturesOrdered<Deferred> = FuturesOrdered::new();
    // Live messages wait for the first frame: a sync puts them after its
    // replay, anything else lets them go.
    let mut first = true;
    let (code, reason) = loop {
        let msg = tokio::select! {
            biased;
            // Shutting down: read no more; what was read is answered below.
            _ = shutdown.cancelled() => break (cfg.shutdown_code, "server shutting down"),
            // Too slow: read no more; the writer closes with 1008.
            _ = out.kicked() => break (close::POLICY, "too slow"),
            Some(answer) = pending.next(), if !pending.is_empty() => {
                let _ = reply.send(answer).await;
                continue;
            }
            msg = stream.next(), if pending.len() < MAX_PENDING_ACKS => msg,
        };
        let Some(msg) = msg else {
            break (close::NORMAL, "");
        };
        last_seen.store(now_ms(origin), Ordering::Relaxed);
        match msg {
            Ok(Message::Text(text)) => {
                if text.len() > cfg.max_frame_bytes {
                    tracing::info!(bytes = text.len(), "frame too large; closing");
                    break (close::TOO_BIG, "frame exceeds 32 KB");
                }
                let frame = parse_client_frame(text.as_str());
                chat_core::metrics::frame_in(match &frame {
                    Ok(f) => f.action(),
                    Err(_) => "invalid",
                });
                if std::mem::take(&mut first) && !matches!(frame, Ok(ClientFrame::Sync {})) {
                    let _ = out.push(Outbound::GoLive);
                }
                if !user.take() {
                    chat_core::metrics::rate_limited("frames");
                    let (action, id) = match &frame {
                        Ok(f) => (Some(f.action()), f.client_msg_id()),
                        Err(e) => (e.action.as_deref(), e.client_msg_id.as_deref()),
                    };
                    pending.push_back(ready(ServerFrame::error(&Error::RateLimited, action, id)));
                    continue;
                }
                if matches!(&frame, Ok(f) if !matches!(f, ClientFrame::Send { .. })) {
                    // Any other action sees every earlier send committed,
                    // and is answered after their acks.
                    while let Some(answer) = pending.next().await {
                        let _ = reply.send(answer).await;
                    }
                }
                if let Some(answer) = backend.frame(session, text.as_str(), frame, &reply).await {
                    pending.push_back(answer);
                }
            }
            Ok(Message::Binary(_)) => {
                chat_core::metrics::frame_in("binary");
                if std::mem::take(&mut first) {
                    let _ = out.push(Outbound::GoLive);
                }
                let e = if user.take() {
                    Error::BadRequest(
                        "binary frames are not supported; send JSON text frames".into(),
                    )
                } else {
                    Error::RateLimited
                };
                pending.push_back(ready(ServerFrame::error(&e, None, None)));
            }
            // Pings and pongs spend the user's budget like any frame.
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {
                chat_core::metrics::frame_in("ping");
                if !user.take() {
                    chat_core::metrics::rate_limited("frames");
                }
            }
            Ok(Message::Close(_)) => break (close::NORMAL, ""),
            Err(e) => {
                let code = e.close_code();
                tracing::info!(error = %e, code, "read error; closing");
                break match code {
                    close::TOO_BIG => (code, "frame exceeds the size limit"),
                    close::INVALID_DATA => (code, "text frame is not valid UTF-8"),
                    _ => (code, "protocol error"),
                };
            }
        }
    };
    // Sends already queued still get their acks before the close.
    while let Some(answer) = pending.next().await {
        let _ = reply.send(answer).await;
    }
    let _ = out.push(Outbound::Close(code, reason));
}

#[allow(clippy::too_many_arguments)]
/// Returns why the connection ended (a metric label).
async fn write_loop<W>(
    mut sink: W,
    mut inbox: Inbox,
    mut sequencer: Sequencer,
    app: Arc<App>,
    shutdown: CancellationToken,
    origin: Instant,
    last_seen: Arc<AtomicU64>,
) -> &'static str
where
    W: Sink<Message> + Unpin,
{
    let cfg = &app.socket;
    let mut ping = tokio::time::interval(cfg.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let idle_ms = cfg.idle_timeout.as_millis() as u64;
    // Both timers are boxed and exist only while they can fire: live
    // messages are held for the first frame (`hold`), and at shutdown the
    // reader answers what it has read, then queues the close; if it cannot
    // (a peer that does not read), `fallback` closes anyway. An idle
    // connection holds neither.
    let mut hold = sequencer
        .holding()
        .then(|| Box::pin(tokio::time::sleep(cfg.live_hold)));
    let mut fallback: Option<Pin<Box<Sleep>>> = None;
    let kicks = inbox.kicks();
    loop {
        if !sequencer.holding() {
            hold = None;
        }
        let mut batch = tokio::select! {
            biased;
            _ = shutdown.cancelled(), if fallback.is_none() => {
                fallback = Some(Box::pin(tokio::time::sleep(SHUTDOWN_DRAIN)));
                continue;
            }
            _ = fire(&mut fallback) => vec![close_msg(cfg.shutdown_code, "server shutting down")],
            _ = kicks.kicked() => vec![close_msg(close::POLICY, "too slow: outbound queue overflowed")],
            out = inbox.recv() => match out {
                Some(Outbound::Close(code, reason)) => vec![close_msg(code, reason)],
                Some(out) => sequencer.order(out).await,
                None => return "closed_by_server",
            },
            _ = fire(&mut hold) => sequencer.go_live().await,
            _ = ping.tick() => {
                if now_ms(origin).saturating_sub(last_seen.load(Ordering::Relaxed)) > idle_ms {
                    vec![close_msg(close::GOING_AWAY, "idle timeout")]
                } else {
                    vec![Message::Ping(Default::default())]
                }
            }
        };
        // What else is queued already goes out in the same write: with
        // TCP_NODELAY every write is a segment, so one write per frame
        // would cost a trip through the TCP stack each (docs/benchmarks.md).
        let mut bytes: usize = batch.iter().map(frame_len).sum();
        while bytes < WRITE_BATCH_BYTES && !batch.iter().any(|m| matches!(m, Message::Close(_))) {
            match inbox.try_recv() {
                Some(Outbound::Close(code, reason)) => batch.push(close_msg(code, reason)),
                Some(out) => batch.extend(sequencer.order(out).await),
                None => break,
            }
            bytes = batch.iter().map(frame_len).sum();
        }
        let close = batch.iter().find_map(|m| match m {
            Message::Close(Some(f)) => Some(disconnect_label(f.code, f.reason.as_str())),
            Message::Close(None) => Some("peer_gone"),
            _ => None,
        });
        let write = async {
            for msg in batch {
                sink.feed(msg).await?;
            }
            sink.flush().await
        };
        let outcome = match tokio::time::timeout(cfg.write_timeout, write).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(false),
            Err(_) => Err(true),
        };
        match (outcome, close) {
            (Ok(()), None) => {}
            (Err(true), None) => {
                // The peer stopped reading: too slow. What is half
                // written goes first, then the close, if it can.
                tracing::info!("write timed out; closing as too slow");
                let close = close_msg(close::POLICY, "too slow: write timed out");
                let _ = tokio::time::timeout(cfg.write_timeout, sink.send(close)).await;
                return "too_slow";
            }
            (_, Some(why)) => return why,
            (Err(_), None) => return "peer_gone",
        }
    }
}
