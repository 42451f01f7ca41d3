//! The socket loop driven through channels: a fake socket, the real
//! services over the in-memory store.

use super::*;
use chat_core::delivery::InlineFanout;
use chat_core::ids::UserId;
use chat_core::memory::{MemoryConnections, MemoryStore};
use chat_core::{Chat, Deliverer, MessageDelivery};
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
    fn start_send(mut self: std::pin::Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
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
    let chat = Arc::new(Chat::new(
        store,
        conns,
        Arc::new(InlineFanout(deliverer)),
        MessageDelivery::Dispatch,
    ));
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
            format!(r#"{{"action":"send","to":"user:bob","client_msg_id":"m{i}","text":"hi"}}"#)
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
