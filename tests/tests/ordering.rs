//! Order on every connection (docs/protocol.md, "Order"), in process: each
//! conversation's `message` frames arrive with strictly increasing ids and
//! no gaps after the first one the connection sees, across `sync` and
//! while peers keep sending. The scenarios are in `chat_tests::order`.
//!
//! The load scales with the store: `ORDERING_ROUNDS` rounds of 50 missed
//! and 2×100 live messages (default 20, 3 on the slow DynamoDB emulator).

use chat_tests::order::{never_syncs_on_a_busy_group, sync_while_peers_send};
use chat_tests::*;

fn rounds() -> usize {
    let default = if store_kind() == "dynamodb" { 3 } else { 20 };
    std::env::var("ORDERING_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_syncing_while_two_peers_send_sees_every_id_once_in_order() {
    let server = TestServer::start().await;
    let repeats = sync_while_peers_send(&server, rounds(), 50, 100).await;
    // conn-tier drops a repeat before it reaches the socket.
    assert_eq!(repeats, 0, "repeated ids over {} rounds", rounds());
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_never_syncs_gets_a_busy_group_in_order_without_gaps() {
    let server = TestServer::start().await;
    let per_sender = if store_kind() == "dynamodb" { 30 } else { 100 };
    let seen = never_syncs_on_a_busy_group(&server, per_sender).await;
    // It connected before the first message: it sees all of them, once.
    assert_eq!(seen.ids, (1..=3 * per_sender as u64).collect::<Vec<_>>());
    assert_eq!(seen.repeats, 0);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_gets_what_was_held_in_order_once_the_hold_runs_out() {
    // The hold as configured by default: 2 s for the first frame.
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.raw_client("bob").await;
    // The hold (2 s) starts with the connection, a little before this.
    let connected = std::time::Instant::now();
    // bob's connection is recorded (live messages are posted to it) before
    // alice sends; it never sends a frame.
    let recorded = std::time::Instant::now();
    while server.connections.for_user("bob").await.unwrap().is_empty() {
        assert!(recorded.elapsed() < WAIT, "bob's connection was recorded");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for i in 1..=3 {
        alice.send_text("user:bob", &format!("held {i}")).await;
    }
    // Held for the first frame that never comes...
    bob.expect_silence(std::time::Duration::from_millis(1000))
        .await;
    // ...then, once the hold runs out, every one from the first, in order.
    let first = bob.expect("message").await;
    let released_after = connected.elapsed();
    let got: Vec<u64> = [
        first,
        bob.expect("message").await,
        bob.expect("message").await,
    ]
    .iter()
    .map(|m| m["message_id"].as_u64().unwrap())
    .collect();
    assert_eq!(got, [1, 2, 3]);
    assert!(
        released_after >= std::time::Duration::from_millis(1800),
        "released by the 2 s hold, not before: {released_after:?}"
    );
    server.stop().await;
}
