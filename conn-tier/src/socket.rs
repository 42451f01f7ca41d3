//! One connection's loop: a reader that routes each text frame to the
//! services, and a writer that drains the connection's bounded outbound
//! queue, pings idle peers and closes on shutdown. Generic over
//! `Sink`/`Stream` of axum messages so unit tests can drive it with channels.

use crate::backend::Backend;
use crate::hub::{Hub, Outbound};
use async_trait::async_trait;
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use chat_core::ports::PostError;
use chat_core::protocol::ServerFrame;
use chat_core::{Error, Reply, Session};
use futures_util::stream::FuturesOrdered;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// Close codes of RFC 6455 used here.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
}

/// Per-connection limits.
#[derive(Debug, Clone)]
pub struct SocketConfig {
    /// API Gateway's frame limit: a bigger frame closes the socket with 1009.
    pub max_frame_bytes: usize,
    /// Frames waiting to be written; a peer that lets it fill is dropped.
    pub outbound_queue: usize,
    /// How often an idle connection is pinged.
    pub ping_interval: Duration,
    /// A peer silent this long (no frame, no pong) is closed.
    pub idle_timeout: Duration,
    /// A single write that takes longer than this closes the socket.
    pub write_timeout: Duration,
    /// Token bucket: frames allowed at once...
    pub rate_burst: u32,
    /// ...and refilled per second.
    pub rate_per_sec: u32,
}

impl Default for SocketConfig {
    fn default() -> Self {
        SocketConfig {
            max_frame_bytes: 32 * 1024,
            outbound_queue: 1024,
            ping_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(75),
            write_timeout: Duration::from_secs(10),
            rate_burst: 200,
            rate_per_sec: 100,
        }
    }
}

/// A token bucket; generous enough that a burst of 100 is never limited.
struct RateLimit {
    tokens: f64,
    burst: f64,
    per_sec: f64,
    at: Instant,
}

impl RateLimit {
    fn new(burst: u32, per_sec: u32) -> Self {
        RateLimit {
            tokens: burst as f64,
            burst: burst as f64,
            per_sec: per_sec as f64,
            at: Instant::now(),
        }
    }
    fn take(&mut self) -> bool {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.at).as_secs_f64() * self.per_sec)
            .min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Answers to the connection itself go on its queue, waiting for room:
/// a client that asks for a big `sync` is slowed down, not dropped.
struct QueueReply(mpsc::Sender<Outbound>);

/// Sends of one connection waiting for their group commit at once.
const MAX_PENDING_ACKS: usize = 256;

#[async_trait]
impl Reply for QueueReply {
    async fn send(&self, frame: ServerFrame) -> Result<(), PostError> {
        self.0
            .send(Outbound::Text(Utf8Bytes::from(frame.to_json())))
            .await
            .map_err(|_| PostError::Gone)
    }
}

/// Whether a frame is a `send` (only those are answered late).
fn is_send(text: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct Action<'a> {
        #[serde(borrow)]
        action: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_str::<Action>(text).is_ok_and(|a| a.action.as_deref() == Some("send"))
}

fn now_ms(origin: Instant) -> u64 {
    origin.elapsed().as_millis() as u64
}

/// Runs one authenticated connection until either side closes, the peer
/// goes silent or too slow, or `shutdown` fires.
pub async fn run_socket<S, E>(
    socket: S,
    backend: Arc<dyn Backend>,
    hub: Arc<Hub>,
    session: Session,
    cfg: SocketConfig,
    shutdown: CancellationToken,
) where
    S: Stream<Item = Result<Message, E>> + Sink<Message> + Send + 'static,
    E: std::fmt::Display,
{
    let conn = session.connection_id.clone();
    let (tx, rx) = mpsc::channel::<Outbound>(cfg.outbound_queue.max(1));
    let kick = Arc::new(Notify::new());
    hub.insert(&conn, tx.clone(), kick.clone());
    if let Err(e) = backend.connect(&session).await {
        tracing::error!(error = %e, connection = %conn, "cannot record connection");
        hub.remove(&conn);
        let (mut sink, _) = socket.split();
        let _ = sink
            .send(close_msg(close::INTERNAL, "internal error"))
            .await;
        return;
    }
    tracing::info!(connection = %conn, user = %session.user_id, "connected");

    let origin = Instant::now();
    let last_seen = Arc::new(AtomicU64::new(0));
    let (sink, stream) = socket.split();
    let mut writer = Box::pin(write_loop(
        sink,
        rx,
        kick,
        cfg.clone(),
        shutdown,
        origin,
        last_seen.clone(),
    ));
    let reader = read_loop(
        stream,
        backend.as_ref(),
        &session,
        &tx,
        &cfg,
        origin,
        &last_seen,
    );
    tokio::select! {
        _ = reader => {
            // The reader queued a close frame (or the peer left); let the
            // writer send it, briefly.
            let _ = tokio::time::timeout(Duration::from_secs(2), &mut writer).await;
        }
        _ = &mut writer => {}
    }
    hub.remove(&conn);
    backend.disconnect(&session).await;
    tracing::info!(connection = %conn, user = %session.user_id, "disconnected");
}

fn close_msg(code: u16, reason: &'static str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from_static(reason),
    }))
}

async fn read_loop<R, E>(
    mut stream: R,
    backend: &dyn Backend,
    session: &Session,
    tx: &mpsc::Sender<Outbound>,
    cfg: &SocketConfig,
    origin: Instant,
    last_seen: &AtomicU64,
) where
    R: Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Display,
{
    let reply: Arc<dyn Reply> = Arc::new(QueueReply(tx.clone()));
    let mut rate = RateLimit::new(cfg.rate_burst, cfg.rate_per_sec);
    // Acks of sends waiting for their commit, answered in frame order.
    let mut pending = FuturesOrdered::new();
    let (code, reason) = loop {
        let msg = tokio::select! {
            biased;
            Some(()) = pending.next(), if !pending.is_empty() => continue,
            msg = stream.next(), if pending.len() < MAX_PENDING_ACKS => msg,
        };
        let Some(msg) = msg else {
            break (close::NORMAL, "");
        };
        last_seen.store(now_ms(origin), Ordering::Relaxed);
        match msg {
            Ok(Message::Text(text)) => {
                if text.len() > cfg.max_frame_bytes {
                    tracing::info!(connection = %session.connection_id, bytes = text.len(), "frame too large; closing");
                    break (close::TOO_BIG, "frame exceeds 32 KB");
                }
                if !rate.take() {
                    let _ = reply.send(Error::RateLimited.to_frame(None, None)).await;
                    continue;
                }
                if !pending.is_empty() && !is_send(text.as_str()) {
                    // Anything else sees every earlier send committed, and is
                    // answered after their acks: answers keep frame order.
                    while pending.next().await.is_some() {}
                }
                if let Some(ack) = backend.frame(session, text.as_str(), &reply).await {
                    pending.push_back(ack);
                }
            }
            Ok(Message::Binary(_)) => {
                let e = Error::BadRequest(
                    "binary frames are not supported; send JSON text frames".into(),
                );
                let _ = reply.send(e.to_frame(None, None)).await;
            }
            Ok(Message::Ping(_)) | Ok(Message::Pong(_)) => {}
            Ok(Message::Close(_)) => break (close::NORMAL, ""),
            Err(e) => {
                let text = e.to_string();
                tracing::info!(connection = %session.connection_id, error = %text, "read error; closing");
                if text.contains("too long") || text.contains("too big") || text.contains("size") {
                    break (close::TOO_BIG, "frame exceeds the size limit");
                }
                break (close::PROTOCOL, "protocol error");
            }
        }
    };
    // Sends already queued still get their acks before the close.
    while pending.next().await.is_some() {}
    let _ = tx.try_send(Outbound::Close(code, reason));
}

async fn write_loop<W>(
    mut sink: W,
    mut rx: mpsc::Receiver<Outbound>,
    kick: Arc<Notify>,
    cfg: SocketConfig,
    shutdown: CancellationToken,
    origin: Instant,
    last_seen: Arc<AtomicU64>,
) where
    W: Sink<Message> + Unpin,
{
    let mut ping = tokio::time::interval(cfg.ping_interval);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ping.tick().await;
    let idle_ms = cfg.idle_timeout.as_millis() as u64;
    loop {
        let msg = tokio::select! {
            biased;
            _ = shutdown.cancelled() => close_msg(close::GOING_AWAY, "server shutting down"),
            _ = kick.notified() => close_msg(close::POLICY, "too slow: outbound queue overflowed"),
            out = rx.recv() => match out {
                Some(Outbound::Text(t)) => Message::Text(t),
                Some(Outbound::Close(code, reason)) => close_msg(code, reason),
                None => return,
            },
            _ = ping.tick() => {
                if now_ms(origin).saturating_sub(last_seen.load(Ordering::Relaxed)) > idle_ms {
                    close_msg(close::GOING_AWAY, "idle timeout")
                } else {
                    Message::Ping(Default::default())
                }
            }
        };
        let closing = matches!(msg, Message::Close(_));
        match tokio::time::timeout(cfg.write_timeout, sink.send(msg)).await {
            Ok(Ok(())) if !closing => {}
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::fanout::InlineFanout;
    use chat_core::ids::UserId;
    use chat_core::memory::{MemoryConnections, MemoryStore};
    use chat_core::{Chat, Deliverer};
    use futures_channel::mpsc as fmpsc;

    type Input = fmpsc::UnboundedSender<Result<Message, String>>;

    /// A fake socket: frames in from one channel, frames out to another.
    fn fake_socket() -> (
        impl Stream<Item = Result<Message, String>> + Sink<Message> + Send + 'static,
        Input,
        fmpsc::UnboundedReceiver<Message>,
    ) {
        let (in_tx, in_rx) = fmpsc::unbounded::<Result<Message, String>>();
        let (out_tx, out_rx) = fmpsc::unbounded::<Message>();
        let sink = out_tx.sink_map_err(|e| e.to_string());
        (
            Duplex {
                stream: in_rx,
                sink: Box::pin(sink),
            },
            in_tx,
            out_rx,
        )
    }

    struct Duplex<St, Si> {
        stream: St,
        sink: std::pin::Pin<Box<Si>>,
    }
    impl<St: Stream + Unpin, Si> Stream for Duplex<St, Si> {
        type Item = St::Item;
        fn poll_next(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Self::Item>> {
            self.stream.poll_next_unpin(cx)
        }
    }
    impl<St: Unpin, Si: Sink<Message>> Sink<Message> for Duplex<St, Si> {
        type Error = Si::Error;
        fn poll_ready(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            self.sink.as_mut().poll_ready(cx)
        }
        fn start_send(
            mut self: std::pin::Pin<&mut Self>,
            item: Message,
        ) -> Result<(), Self::Error> {
            self.sink.as_mut().start_send(item)
        }
        fn poll_flush(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            self.sink.as_mut().poll_flush(cx)
        }
        fn poll_close(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), Self::Error>> {
            self.sink.as_mut().poll_close(cx)
        }
    }

    fn setup() -> (Arc<dyn Backend>, Arc<Hub>) {
        let store = Arc::new(MemoryStore::new());
        let conns = Arc::new(MemoryConnections::new());
        let hub = Arc::new(Hub::new("test-node"));
        let deliverer = Arc::new(Deliverer::new(store.clone(), conns.clone(), hub.clone()));
        let chat = Arc::new(Chat::new(store, conns, Arc::new(InlineFanout(deliverer))));
        let auth = chat_core::auth::Authenticator::new(b"unit").unwrap();
        let backend = crate::backend::InProcess {
            chat,
            auth,
            node: "test-node".into(),
        };
        (Arc::new(backend), hub)
    }

    fn session(conn: &str, user: &str) -> Session {
        Session {
            connection_id: conn.into(),
            user_id: UserId::parse(user).unwrap(),
        }
    }

    async fn next_text(rx: &mut fmpsc::UnboundedReceiver<Message>) -> serde_json::Value {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), rx.next())
                .await
                .unwrap()
                .unwrap()
            {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Ping(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn a_binary_frame_gets_bad_request_and_the_socket_stays_open() {
        let (chat, hub) = setup();
        let (sock, input, mut output) = fake_socket();
        let task = tokio::spawn(run_socket(
            sock,
            chat,
            hub,
            session("c1", "alice"),
            SocketConfig::default(),
            CancellationToken::new(),
        ));
        input
            .unbounded_send(Ok(Message::Binary(vec![1, 2, 3].into())))
            .unwrap();
        let f = next_text(&mut output).await;
        assert_eq!(f["code"], "bad_request");
        input
            .unbounded_send(Ok(Message::Text(r#"{"action":"ping"}"#.into())))
            .unwrap();
        assert_eq!(next_text(&mut output).await["type"], "pong");
        drop(input);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn an_oversized_frame_closes_with_1009() {
        let (chat, hub) = setup();
        let (sock, input, mut output) = fake_socket();
        let task = tokio::spawn(run_socket(
            sock,
            chat,
            hub,
            session("c1", "alice"),
            SocketConfig::default(),
            CancellationToken::new(),
        ));
        input
            .unbounded_send(Ok(Message::Text("x".repeat(33 * 1024).into())))
            .unwrap();
        match tokio::time::timeout(Duration::from_secs(5), output.next())
            .await
            .unwrap()
            .unwrap()
        {
            Message::Close(Some(f)) => assert_eq!(f.code, 1009),
            other => panic!("unexpected {other:?}"),
        }
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_reader_that_lets_its_queue_fill_is_disconnected_without_blocking_the_sender() {
        let (chat, hub) = setup();
        let cfg = SocketConfig {
            outbound_queue: 4,
            write_timeout: Duration::from_secs(3),
            ..SocketConfig::default()
        };
        // bob's socket: a sink that never accepts anything.
        let (bob_in_tx, bob_in_rx) = fmpsc::unbounded::<Result<Message, String>>();
        let stuck = futures_util::sink::unfold((), |_, _m: Message| async {
            std::future::pending::<Result<(), String>>().await
        });
        let bob = Duplex {
            stream: bob_in_rx,
            sink: Box::pin(stuck),
        };
        let bob_task = tokio::spawn(run_socket(
            bob,
            chat.clone(),
            hub.clone(),
            session("b1", "bob"),
            cfg.clone(),
            CancellationToken::new(),
        ));
        let (alice, a_in, mut a_out) = fake_socket();
        let alice_task = tokio::spawn(run_socket(
            alice,
            chat,
            hub.clone(),
            session("a1", "alice"),
            cfg,
            CancellationToken::new(),
        ));
        tokio::time::sleep(Duration::from_millis(50)).await;
        for i in 0..20 {
            a_in.unbounded_send(Ok(Message::Text(
                format!(
                    r#"{{"action":"send","to":"user:bob","client_msg_id":"m{i}","text":"hi"}}"#
                )
                .into(),
            )))
            .unwrap();
        }
        for i in 0..20 {
            let ack = next_text(&mut a_out).await;
            assert_eq!(ack["type"], "ack", "{ack}");
            assert_eq!(ack["message_id"], i + 1);
        }
        // bob was dropped from the hub as soon as his queue overflowed (long
        // before his 10 s write timeout), and his socket then closes.
        assert_eq!(hub.len(), 1);
        tokio::time::timeout(Duration::from_secs(15), bob_task)
            .await
            .expect("bob's socket closed")
            .unwrap();
        drop(bob_in_tx);
        drop(a_in);
        alice_task.await.unwrap();
    }

    #[tokio::test]
    async fn shutdown_closes_with_going_away() {
        let (chat, hub) = setup();
        let (sock, _input, mut output) = fake_socket();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run_socket(
            sock,
            chat,
            hub.clone(),
            session("c1", "alice"),
            SocketConfig::default(),
            stop.clone(),
        ));
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.cancel();
        match tokio::time::timeout(Duration::from_secs(5), output.next())
            .await
            .unwrap()
            .unwrap()
        {
            Message::Close(Some(f)) => assert_eq!(f.code, 1001),
            other => panic!("unexpected {other:?}"),
        }
        task.await.unwrap();
        assert!(hub.is_empty());
    }

    #[tokio::test]
    async fn an_idle_peer_is_pinged_then_closed_when_it_stays_silent() {
        let (chat, hub) = setup();
        let (sock, input, mut output) = fake_socket();
        let cfg = SocketConfig {
            ping_interval: Duration::from_millis(40),
            idle_timeout: Duration::from_millis(150),
            ..SocketConfig::default()
        };
        let task = tokio::spawn(run_socket(
            sock,
            chat,
            hub,
            session("c1", "alice"),
            cfg,
            CancellationToken::new(),
        ));
        let mut pings = 0;
        let code = loop {
            match tokio::time::timeout(Duration::from_secs(5), output.next())
                .await
                .unwrap()
                .unwrap()
            {
                Message::Ping(_) => pings += 1,
                Message::Close(Some(f)) => break f.code,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert!(pings >= 2, "pinged {pings} times");
        assert_eq!(code, 1001);
        drop(input);
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_peer_that_answers_pings_stays_connected() {
        let (chat, hub) = setup();
        let (sock, input, mut output) = fake_socket();
        let cfg = SocketConfig {
            ping_interval: Duration::from_millis(40),
            idle_timeout: Duration::from_millis(150),
            ..SocketConfig::default()
        };
        let task = tokio::spawn(run_socket(
            sock,
            chat,
            hub,
            session("c1", "alice"),
            cfg,
            CancellationToken::new(),
        ));
        for _ in 0..10 {
            match tokio::time::timeout(Duration::from_secs(5), output.next())
                .await
                .unwrap()
                .unwrap()
            {
                Message::Ping(p) => input.unbounded_send(Ok(Message::Pong(p))).unwrap(),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(!task.is_finished());
        drop(input);
        task.await.unwrap();
    }

    #[test]
    fn a_burst_of_100_frames_is_never_rate_limited() {
        let mut r = RateLimit::new(
            SocketConfig::default().rate_burst,
            SocketConfig::default().rate_per_sec,
        );
        assert!((0..100).all(|_| r.take()));
        let mut tight = RateLimit::new(3, 0);
        assert_eq!((0..5).filter(|_| tight.take()).count(), 3);
    }
}
