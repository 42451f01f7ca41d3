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
//!   linger);
//! - `reader`: the reading half, frame by frame, answers in frame order;
//! - `writer`: the writing half, batching, pings, timeouts;
//! - [`sequencer`]: per-conversation order, gap filling, the first-frame hold;
//! - `tests`: the loop driven through channels.

mod reader;
pub mod sequencer;
#[cfg(test)]
mod tests;
mod writer;

pub use writer::WRITE_BATCH_BYTES;

use crate::app::App;
use crate::hub::UserTicket;
use crate::limits::close;
use crate::outbox::outbox;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
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

/// Milliseconds since `origin` (the connection's start): what the
/// connection's last-seen time is kept in.
fn elapsed_ms(origin: Instant) -> u64 {
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
        app.hub.insert(conn, session.user_id.as_str(), out.clone());
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
        let sequencer = Sequencer::new(
            app.store.clone(),
            conn,
            session.user_id.as_str(),
            cfg.outbound_bytes,
        );
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
