//! The socket loop driven through channels: a fake socket, the real
//! services over the in-memory store.

use super::*;
use crate::hub::Hub;
use crate::limits::SocketConfig;
use chat_core::delivery::InlineFanout;
use chat_core::ids::UserId;
use chat_core::memory::{MemoryConnections, MemoryStore};
use chat_core::tasks::Tasks;
use chat_core::{Chat, Deliverer, MessageDelivery};
use futures_channel::mpsc as fmpsc;
use serde_json::json;

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

/// The services over the in-memory store, delivering inline to the hub.
fn app(socket: SocketConfig) -> App {
    app_with(socket, crate::hub::UserLimits::default())
}

fn app_with(socket: SocketConfig, users: crate::hub::UserLimits) -> App {
    let store = Arc::new(MemoryStore::new());
    let conns = Arc::new(MemoryConnections::new());
    let hub = Arc::new(Hub::with_limits("test-node", true, users));
    let deliverer = Arc::new(Deliverer::new(store.clone(), conns.clone(), hub.clone()));
    let chat = Arc::new(Chat::new(
        store.clone(),
        conns.clone(),
        Arc::new(InlineFanout(deliverer)),
        MessageDelivery::Dispatch,
    ));
    let auth = chat_core::auth::Authenticator::new(&[7u8; 32]).unwrap();
    let backend = crate::backend::InProcess {
        chat,
        auth,
        hub: hub.clone(),
    };
    App::assemble(
        Arc::new(backend),
        hub,
        Some(conns),
        Some(store),
        Arc::new(Tasks::new()),
        crate::config::Settings {
            socket,
            ..Default::default()
        },
    )
}

fn session(conn: &str, user: &str) -> Session {
    Session::new(conn, UserId::parse(user).unwrap())
}

/// Runs a socket for `user` as connection `conn`.
fn spawn<S>(
    app: &App,
    sock: S,
    conn: &str,
    user: &str,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()>
where
    S: Stream<Item = Result<Message, String>> + Sink<Message> + Send + 'static,
{
    let ticket = app.hub.admit_user(user).expect("under the user's limits");
    tokio::spawn(run_socket(
        sock,
        Arc::new(app.clone()),
        session(conn, user),
        ticket,
        stop,
    ))
}

fn text(frame: serde_json::Value) -> Result<Message, String> {
    Ok(Message::Text(frame.to_string().into()))
}

/// Waits (a bounded number of scheduler turns) until the hub holds `conn`.
async fn registered(app: &App, conn: &str) {
    for _ in 0..10_000 {
        if app.hub.contains(conn) {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{conn} never registered");
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

/// The code of the close frame that comes next (pings skipped).
async fn close_code(rx: &mut fmpsc::UnboundedReceiver<Message>) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), rx.next())
            .await
            .unwrap()
            .unwrap()
        {
            Message::Close(Some(f)) => return f.code,
            Message::Ping(_) => continue,
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_binary_frame_gets_bad_request_and_the_socket_stays_open() {
    let app = app(SocketConfig::default());
    let (sock, input, mut output) = fake_socket();
    let task = spawn(&app, sock, "c1", "alice", CancellationToken::new());
    input
        .unbounded_send(Ok(Message::Binary(vec![1, 2, 3].into())))
        .unwrap();
    let f = next_text(&mut output).await;
    assert_eq!(f["code"], "bad_request");
    input
        .unbounded_send(text(json!({"action":"ping"})))
        .unwrap();
    assert_eq!(next_text(&mut output).await["type"], "pong");
    drop(input);
    task.await.unwrap();
}

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let app = app(SocketConfig::default());
    let (sock, input, mut output) = fake_socket();
    let task = spawn(&app, sock, "c1", "alice", CancellationToken::new());
    input
        .unbounded_send(Ok(Message::Text("x".repeat(33 * 1024).into())))
        .unwrap();
    assert_eq!(close_code(&mut output).await, 1009);
    task.await.unwrap();
}

#[tokio::test]
async fn answers_keep_frame_order_whatever_each_send_comes_to() {
    // A bucket of 7 (the connection attempt and 6 frames) that does not
    // refill: the 7th frame is rate limited.
    let app = app_with(
        SocketConfig::default(),
        crate::hub::UserLimits {
            max_connections: 20,
            burst: 7,
            per_sec: 0,
        },
    );
    let (sock, input, mut output) = fake_socket();
    let task = spawn(&app, sock, "c1", "alice", CancellationToken::new());
    let send = |id: &str, to: &str, text: &str| json!({"action":"send","to":to,"client_msg_id":id,"text":text});
    for f in [
        send("ok-1", "user:bob", "one"),
        send("bad-to", "bob", "no kind prefix"),
        send("ok-2", "user:bob", "two"),
        send("stranger", "group:nosuchgroup", "let me in"),
        json!({"action":"send","to":"user:bob","client_msg_id":"no-text"}),
        send("ok-3", "user:bob", "three"),
        send("limited", "user:bob", "over the budget"),
    ] {
        input.unbounded_send(text(f)).unwrap();
    }
    let mut got = Vec::new();
    for _ in 0..7 {
        let f = next_text(&mut output).await;
        got.push((
            f["type"].as_str().unwrap().to_string(),
            f["code"].as_str().unwrap_or("").to_string(),
            f["client_msg_id"].as_str().unwrap_or("").to_string(),
            f["action"].as_str().unwrap_or("").to_string(),
        ));
    }
    let want = [
        ("ack", "", "ok-1", ""),
        ("error", "bad_request", "bad-to", "send"),
        ("ack", "", "ok-2", ""),
        ("error", "forbidden", "stranger", "send"),
        ("error", "bad_request", "no-text", "send"),
        ("ack", "", "ok-3", ""),
        ("error", "rate_limited", "limited", "send"),
    ];
    let want: Vec<(String, String, String, String)> = want
        .iter()
        .map(|(a, b, c, d)| (a.to_string(), b.to_string(), c.to_string(), d.to_string()))
        .collect();
    assert_eq!(got, want);
    drop(input);
    task.await.unwrap();
}

#[tokio::test]
async fn a_reader_that_lets_its_queue_fill_is_disconnected_without_blocking_the_sender() {
    let app = app(SocketConfig {
        outbound_bytes: 600,
        write_timeout: Duration::from_millis(300),
        ..SocketConfig::default()
    });
    // bob's socket: a sink that never accepts anything.
    let (bob_in_tx, bob_in_rx) = fmpsc::unbounded::<Result<Message, String>>();
    let stuck = futures_util::sink::unfold((), |_, _m: Message| async {
        std::future::pending::<Result<(), String>>().await
    });
    let bob = Duplex {
        stream: bob_in_rx,
        sink: Box::pin(stuck),
    };
    let bob_task = spawn(&app, bob, "b1", "bob", CancellationToken::new());
    // bob's first frame lets live messages through.
    bob_in_tx
        .unbounded_send(text(json!({"action":"ping"})))
        .unwrap();
    let (alice, a_in, mut a_out) = fake_socket();
    let alice_task = spawn(&app, alice, "a1", "alice", CancellationToken::new());
    registered(&app, "b1").await;
    for i in 0..20 {
        a_in.unbounded_send(text(
            json!({"action":"send","to":"user:bob","client_msg_id":format!("m{i}"),"text":"hi"}),
        ))
        .unwrap();
    }
    for i in 0..20 {
        let ack = next_text(&mut a_out).await;
        assert_eq!(ack["type"], "ack", "{ack}");
        assert_eq!(ack["message_id"], i + 1);
    }
    // bob was dropped from the hub as soon as his queue overflowed (long
    // before his write timeout), and his socket then closes.
    assert!(!app.hub.contains("b1"));
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
    let app = app(SocketConfig::default());
    let (sock, _input, mut output) = fake_socket();
    let stop = CancellationToken::new();
    let task = spawn(&app, sock, "c1", "alice", stop.clone());
    registered(&app, "c1").await;
    stop.cancel();
    assert_eq!(close_code(&mut output).await, 1001);
    task.await.unwrap();
    assert!(app.hub.is_empty());
}

#[tokio::test(start_paused = true)]
async fn an_idle_peer_is_pinged_then_closed_when_it_stays_silent() {
    let app = app(SocketConfig::default().with_ping(Duration::from_secs(30)));
    let (sock, input, mut output) = fake_socket();
    let task = spawn(&app, sock, "c1", "alice", CancellationToken::new());
    let started = tokio::time::Instant::now();
    let mut pings = 0;
    let code = loop {
        match output.next().await.unwrap() {
            Message::Ping(_) => pings += 1,
            Message::Close(Some(f)) => break f.code,
            other => panic!("unexpected {other:?}"),
        }
    };
    // Pinged at 30 s and 60 s; closed at the first tick past 75 s of silence.
    assert_eq!(pings, 2);
    assert_eq!(code, 1001);
    assert_eq!(started.elapsed(), Duration::from_secs(90));
    drop(input);
    task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_answers_pings_stays_connected() {
    let app = app(SocketConfig::default().with_ping(Duration::from_secs(30)));
    let (sock, input, mut output) = fake_socket();
    let task = spawn(&app, sock, "c1", "alice", CancellationToken::new());
    // Ten minutes of pings, each answered.
    for _ in 0..20 {
        match output.next().await.unwrap() {
            Message::Ping(p) => input.unbounded_send(Ok(Message::Pong(p))).unwrap(),
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(!task.is_finished());
    drop(input);
    task.await.unwrap();
}

#[tokio::test]
async fn a_live_message_racing_the_first_sync_waits_behind_its_replay() {
    let app = app(SocketConfig::default());
    let (alice, a_in, mut a_out) = fake_socket();
    let alice_task = spawn(&app, alice, "a1", "alice", CancellationToken::new());
    for i in 1..=3 {
        a_in.unbounded_send(text(json!({"action":"send","to":"user:bob","client_msg_id":format!("m{i}"),"text":format!("m{i}")})))
            .unwrap();
        assert_eq!(next_text(&mut a_out).await["message_id"], i);
    }
    // bob connects; message 4 is delivered live before bob's sync is read.
    let (bob, b_in, mut b_out) = fake_socket();
    let bob_task = spawn(&app, bob, "b1", "bob", CancellationToken::new());
    registered(&app, "b1").await;
    a_in.unbounded_send(text(
        json!({"action":"send","to":"user:bob","client_msg_id":"m4","text":"m4"}),
    ))
    .unwrap();
    assert_eq!(next_text(&mut a_out).await["message_id"], 4);
    b_in.unbounded_send(text(json!({"action":"sync"}))).unwrap();
    let mut ids = Vec::new();
    loop {
        let f = next_text(&mut b_out).await;
        if f["type"] == "synced" {
            break;
        }
        ids.push(f["message_id"].as_u64().unwrap());
    }
    assert_eq!(ids, vec![1, 2, 3, 4], "in order, once each");
    drop((a_in, b_in));
    alice_task.await.unwrap();
    bob_task.await.unwrap();
}

#[tokio::test]
async fn a_socket_closed_because_its_node_was_declared_dead_leaves_its_record_to_the_janitors() {
    let app = app(SocketConfig::default());
    let conns = app.connections.clone().expect("in-process connections");
    let (sock, input, mut output) = fake_socket();
    let task = spawn(&app, sock, "c1", "alice", CancellationToken::new());
    registered(&app, "c1").await;
    input
        .unbounded_send(text(json!({"action":"ping"})))
        .unwrap();
    assert_eq!(next_text(&mut output).await["type"], "pong");
    let rec = conns.get("c1").await.unwrap().expect("recorded at connect");
    assert_eq!(rec.node_id.as_deref(), Some("test-node"));

    // Declared dead: a new id, then every socket closed with 1012.
    app.hub.set_node("test-node-rejoined");
    app.hub.close_all(1012, "node restarting; reconnect");
    assert_eq!(close_code(&mut output).await, 1012);
    drop(input);
    task.await.unwrap();
    assert!(
        conns.get("c1").await.unwrap().is_some(),
        "the old id's record is left for the janitors' paced sweep"
    );

    // A connection of the new id that closes normally removes its record.
    let (sock, input, mut output) = fake_socket();
    let task = spawn(&app, sock, "c2", "alice", CancellationToken::new());
    registered(&app, "c2").await;
    input
        .unbounded_send(text(json!({"action":"ping"})))
        .unwrap();
    assert_eq!(next_text(&mut output).await["type"], "pong");
    drop(input);
    task.await.unwrap();
    assert!(conns.get("c2").await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_connection_that_cannot_be_recorded_in_time_is_closed_with_1013_and_not_registered() {
    let app = app(SocketConfig {
        max_pending_connects: 1,
        connect_wait: Duration::from_millis(500),
        ..SocketConfig::default()
    });
    // Another connection is being recorded (holds the only permit).
    let held = app.connecting.clone().acquire_owned().await.unwrap();
    let (sock, input, mut output) = fake_socket();
    let task = spawn(&app, sock, "c1", "alice", CancellationToken::new());
    assert_eq!(close_code(&mut output).await, 1013);
    task.await.unwrap();
    assert!(!app.hub.contains("c1"));
    let conns = app.connections.clone().unwrap();
    assert!(conns.get("c1").await.unwrap().is_none());

    // Once the permit is back, a connection is recorded and served.
    drop(held);
    let (sock, input2, mut output2) = fake_socket();
    let task = spawn(&app, sock, "c2", "alice", CancellationToken::new());
    input2
        .unbounded_send(text(json!({"action":"ping"})))
        .unwrap();
    assert_eq!(next_text(&mut output2).await["type"], "pong");
    assert!(conns.get("c2").await.unwrap().is_some());
    drop(input2);
    drop(input);
    task.await.unwrap();
}
