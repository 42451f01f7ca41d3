//! The reading half of a connection: parses each text frame once, routes
//! it to the backend, and queues the answers in frame order (a `send` is
//! answered once durable; whatever could overtake it waits behind it).
//!
//! Its state lives as long as the connection, so it is kept small: the
//! handling of one frame is a future of its own ([`Reader::on_text`]), so
//! its locals share space with the idle wait's instead of sitting beside
//! them; [`Reader::run`] borrows the reader; the queue of pending answers
//! is allocated when a frame needs it and freed once it empties.

use super::{elapsed_ms, ReadError};
use crate::backend::Backend;
use crate::hub::UserTicket;
use crate::limits::{close, SocketConfig};
use crate::outbox::{Full, Outbound, Outbox};
use async_trait::async_trait;
use axum::extract::ws::{Message, Utf8Bytes};
use chat_core::ports::PostError;
use chat_core::protocol::{parse_client_frame, ClientFrame, ServerFrame};
use chat_core::service::Deferred;
use chat_core::{Error, Reply, Session};
use futures_util::stream::FuturesOrdered;
use futures_util::{Stream, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Sends of one connection waiting for their group commit at once.
const MAX_PENDING_ACKS: usize = 256;

/// Answers to the connection itself go on its queue, waiting for room (up
/// to the write timeout; then the connection is closed as too slow): a
/// client that asks for a big `sync` is paced, and one that never reads
/// costs at most the queue's bytes. A replayed message is sequenced like a
/// live one.
struct QueueReply {
    out: Outbox,
    patience: Duration,
}

#[async_trait]
impl Reply for QueueReply {
    async fn send(&self, frame: ServerFrame) -> Result<(), PostError> {
        let out = Outbound::of_frame(frame, false);
        match self.out.push_when_room(out, self.patience).await {
            Ok(()) => Ok(()),
            Err(Full::Closed) | Err(Full::Overflow) => Err(PostError::Gone),
        }
    }

    async fn sync_started(&self, baselines: Vec<(String, u64)>) {
        let _ = self.out.push(Outbound::SyncStarted(baselines));
    }
}

/// Queues the answer to one of the connection's frames.
async fn queue_answer(out: &Outbox, frame: ServerFrame, patience: Duration) -> Result<(), Full> {
    out.push_when_room(Outbound::of_frame(frame, true), patience)
        .await
}

fn ready(frame: ServerFrame) -> Deferred {
    Box::pin(std::future::ready(frame))
}

/// What the reader needs for every frame, borrowed from the connection.
pub(super) struct Reader<'a> {
    pub backend: &'a dyn Backend,
    pub session: &'a Session,
    pub out: &'a Outbox,
    pub user: &'a UserTicket,
    pub cfg: &'a SocketConfig,
    pub origin: Instant,
    pub shutdown: &'a CancellationToken,
}

/// The reader's own state: the answers still to come, in frame order
/// (allocated on first use), and whether the first frame was read yet.
struct Pending {
    reply: Arc<dyn Reply>,
    answers: Option<FuturesOrdered<Deferred>>,
    /// Live messages wait for the first frame: a sync puts them after its
    /// replay, anything else lets them go.
    first: bool,
}

impl Pending {
    fn len(&self) -> usize {
        self.answers.as_ref().map_or(0, FuturesOrdered::len)
    }

    /// Queues the answer to a frame just read; `out` counts it as due.
    fn push(&mut self, answer: Deferred, out: &Outbox) {
        out.answer_due();
        self.answers
            .get_or_insert_with(FuturesOrdered::new)
            .push_back(answer);
    }

    /// The next answer due, once it is ready; pending forever with none.
    /// The queue is freed once it empties: an idle connection holds none.
    async fn next(&mut self) -> ServerFrame {
        let frame = match self.answers.as_mut() {
            Some(a) if !a.is_empty() => match a.next().await {
                Some(frame) => frame,
                None => std::future::pending().await,
            },
            _ => std::future::pending().await,
        };
        if self.len() == 0 {
            self.answers = None;
        }
        frame
    }

    /// Sends every answer still to come, in order; frees the queue.
    async fn drain(&mut self, out: &Outbox, patience: Duration) {
        if let Some(a) = self.answers.as_mut() {
            while let Some(answer) = a.next().await {
                let _ = Box::pin(queue_answer(out, answer, patience)).await;
            }
        }
        self.answers = None;
    }
}

impl Reader<'_> {
    /// Reads until the peer closes or errs, the connection is too slow, or
    /// shutdown; answers what was read; then queues the close frame.
    pub async fn run<R, E>(&self, stream: &mut R)
    where
        R: Stream<Item = Result<Message, E>> + Unpin,
        E: ReadError,
    {
        let mut pending = Pending {
            reply: Arc::new(QueueReply {
                out: self.out.clone(),
                patience: self.cfg.write_timeout,
            }),
            answers: None,
            first: true,
        };
        let (code, reason) = loop {
            let msg = tokio::select! {
                biased;
                // Shutting down: read no more; what was read is answered below.
                _ = self.shutdown.cancelled() => break (self.cfg.shutdown_code, "server shutting down"),
                // Too slow: read no more; the writer closes with 1008.
                _ = self.out.kicked() => break (close::POLICY, "too slow"),
                answer = pending.next(), if pending.len() > 0 => {
                    // Boxed: its wait for room would otherwise sit in the
                    // reader's state for the connection's whole life.
                    let _ = Box::pin(queue_answer(self.out, answer, self.cfg.write_timeout)).await;
                    continue;
                }
                msg = stream.next(), if pending.len() < MAX_PENDING_ACKS => msg,
            };
            let Some(msg) = msg else {
                break (close::NORMAL, "");
            };
            self.out.saw_peer(elapsed_ms(self.origin));
            let closing = match msg {
                Ok(Message::Text(text)) => self.on_text(&mut pending, text).await,
                Ok(Message::Binary(_)) => {
                    self.on_binary(&mut pending);
                    None
                }
                // Pings and pongs spend the user's budget like any frame.
                Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {
                    chat_core::metrics::frame_in("ping");
                    if !self.user.take() {
                        chat_core::metrics::rate_limited("frames");
                    }
                    None
                }
                Ok(Message::Close(_)) => Some((close::NORMAL, "")),
                Err(e) => {
                    let code = e.close_code();
                    tracing::info!(error = %e, code, "read error; closing");
                    Some(match code {
                        close::TOO_BIG => (code, "frame exceeds the size limit"),
                        close::INVALID_DATA => (code, "text frame is not valid UTF-8"),
                        _ => (code, "protocol error"),
                    })
                }
            };
            if let Some(why) = closing {
                break why;
            }
        };
        // Sends already queued still get their acks before the close.
        pending.drain(self.out, self.cfg.write_timeout).await;
        let _ = self.out.push(Outbound::Close(code, reason));
    }

    /// One text frame; `Some` closes the connection with that code.
    async fn on_text(&self, pending: &mut Pending, text: Utf8Bytes) -> Option<(u16, &'static str)> {
        if text.len() > self.cfg.max_frame_bytes {
            tracing::info!(bytes = text.len(), "frame too large; closing");
            return Some((close::TOO_BIG, "frame exceeds 32 KB"));
        }
        let frame = parse_client_frame(text.as_str());
        chat_core::metrics::frame_in(match &frame {
            Ok(f) => f.action(),
            Err(_) => "invalid",
        });
        if std::mem::take(&mut pending.first) && !matches!(frame, Ok(ClientFrame::Sync {})) {
            let _ = self.out.push(Outbound::GoLive);
        }
        if !self.user.take() {
            chat_core::metrics::rate_limited("frames");
            let (action, id) = match &frame {
                Ok(f) => (Some(f.action()), f.client_msg_id()),
                Err(e) => (e.action.as_deref(), e.client_msg_id.as_deref()),
            };
            pending.push(
                ready(ServerFrame::error(&Error::RateLimited, action, id)),
                self.out,
            );
            return None;
        }
        if matches!(&frame, Ok(f) if !matches!(f, ClientFrame::Send { .. })) {
            // Any other action sees every earlier send committed, and is
            // answered after their acks.
            pending.drain(self.out, self.cfg.write_timeout).await;
        }
        if let Some(answer) = self
            .backend
            .frame(self.session, text.as_str(), frame, &pending.reply)
            .await
        {
            pending.push(answer, self.out);
        }
        None
    }

    fn on_binary(&self, pending: &mut Pending) {
        chat_core::metrics::frame_in("binary");
        if std::mem::take(&mut pending.first) {
            let _ = self.out.push(Outbound::GoLive);
        }
        let e = if self.user.take() {
            Error::BadRequest("binary frames are not supported; send JSON text frames".into())
        } else {
            Error::RateLimited
        };
        pending.push(ready(ServerFrame::error(&e, None, None)), self.out);
    }
}
