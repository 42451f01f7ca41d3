//! The writing half of a connection: drains its outbound queue through the
//! [`Sequencer`], batches what is queued into one write, pings idle peers,
//! closes idle, too slow or shut-down connections.
//!
//! Its future lives as long as the connection, so what it holds is paid
//! per idle connection: [`Writer::run`] uses the writer's fields in place
//! rather than copies of them, and both timers are boxed and exist only
//! while they can fire.

use super::sequencer::Sequencer;
use super::{close_msg, elapsed_ms};
use crate::app::App;
use crate::limits::close;
use crate::outbox::Outbound;
use crate::outbox::{Inbox, Next};
use axum::extract::ws::Message;
use futures_util::{Sink, SinkExt};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// Frames already queued are written together up to about this many bytes:
/// one write (one TCP segment, with `TCP_NODELAY`) for many frames under
/// load, a write per frame when they come one at a time. The WebSocket's
/// write buffer is this size too (`http.rs`).
pub const WRITE_BATCH_BYTES: usize = 8 * 1024;

/// At shutdown, how long a socket may take to answer what it has read
/// before it is closed anyway.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);

pub(super) struct Writer<W> {
    pub sink: W,
    pub inbox: Inbox,
    pub sequencer: Sequencer,
    /// For the socket's limits (`app.socket`).
    pub app: Arc<App>,
    pub shutdown: CancellationToken,
    /// When the connection started: the peer's last frame counts from here.
    pub origin: Instant,
}

/// Resolves when the timer, if there is one, fires; never without one.
async fn fire(timer: &mut Option<Pin<Box<Sleep>>>) {
    match timer {
        Some(t) => t.as_mut().await,
        None => std::future::pending().await,
    }
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

impl<W> Writer<W>
where
    W: Sink<Message> + Unpin,
{
    /// Writes until the connection closes; returns why (a metric label).
    /// Takes the writer by value and returns a block, not an `async fn`:
    /// its future then holds the fields once, used in place, with no
    /// wrapper around it (an `async fn` keeps its argument twice; see
    /// docs/benchmarks.md, (c)).
    #[allow(clippy::manual_async_fn)]
    pub fn run(mut self) -> impl std::future::Future<Output = &'static str> {
        async move {
            let cfg = &self.app.socket;
            let mut ping = tokio::time::interval(cfg.ping_interval);
            ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ping.tick().await;
            let idle_ms = cfg.idle_timeout.as_millis() as u64;
            // Live messages are held for the first frame (`hold`). At shutdown
            // the reader answers what it has read, then queues the close; if
            // it cannot (a peer that does not read), `fallback` closes anyway.
            let mut hold = self
                .sequencer
                .holding()
                .then(|| Box::pin(tokio::time::sleep(cfg.live_hold)));
            let mut fallback: Option<Pin<Box<Sleep>>> = None;
            loop {
                if !self.sequencer.holding() {
                    hold = None;
                }
                let mut batch = tokio::select! {
                    biased;
                    _ = self.shutdown.cancelled(), if fallback.is_none() => {
                        fallback = Some(Box::pin(tokio::time::sleep(SHUTDOWN_DRAIN)));
                        continue;
                    }
                    _ = fire(&mut fallback) => vec![close_msg(cfg.shutdown_code, "server shutting down")],
                    next = self.inbox.next() => match next {
                        Next::Slow => vec![close_msg(close::POLICY, "too slow: outbound queue overflowed")],
                        Next::Frame(Outbound::Close(code, reason)) => vec![close_msg(code, reason)],
                        Next::Frame(out) => self.sequencer.order(out, self.inbox.answers_due()).await,
                        Next::Done => return "closed_by_server",
                    },
                    _ = fire(&mut hold) => Box::pin(self.sequencer.go_live()).await,
                    _ = ping.tick() => {
                        let seen = self.inbox.peer_seen_ms();
                        if elapsed_ms(self.origin).saturating_sub(seen) > idle_ms {
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
                while bytes < WRITE_BATCH_BYTES
                    && !batch.iter().any(|m| matches!(m, Message::Close(_)))
                {
                    match self.inbox.try_recv() {
                        Some(Outbound::Close(code, reason)) => batch.push(close_msg(code, reason)),
                        Some(out) => {
                            batch.extend(self.sequencer.order(out, self.inbox.answers_due()).await)
                        }
                        None => break,
                    }
                    bytes = batch.iter().map(frame_len).sum();
                }
                let close = batch.iter().find_map(|m| match m {
                    Message::Close(Some(f)) => Some(disconnect_label(f.code, f.reason.as_str())),
                    Message::Close(None) => Some("peer_gone"),
                    _ => None,
                });
                let sink = &mut self.sink;
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
                        let _ =
                            tokio::time::timeout(cfg.write_timeout, self.sink.send(close)).await;
                        return "too_slow";
                    }
                    (_, Some(why)) => return why,
                    (Err(_), None) => return "peer_gone",
                }
            }
        }
    }
}
