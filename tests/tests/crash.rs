//! Durability: a real server process is killed (SIGKILL, no shutdown)
//! right after acking; every acknowledged message is there after restart.

use chat_tests::*;
use serde_json::json;

use tokio::process::{Child, Command};

fn token(user: &str) -> String {
    chat_core::auth::Authenticator::new(SECRET)
        .unwrap()
        .mint(user, 600)
        .unwrap()
}

#[tokio::test]
async fn acknowledged_messages_survive_a_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) =
        spawn_embedded_server(env!("CARGO_BIN_EXE_conn-tier"), dir.path()).await;
    let mut alice = TestClient::connect(&url, &token("alice")).await.unwrap();
    let send =
        json!({"action":"send","to":"user:bob","client_msg_id":"keep-1","text":"survive this"});
    alice.send(send.clone()).await;
    let ack = alice.expect("ack").await;
    assert_eq!(ack["message_id"], 1);
    server.start_kill().unwrap();
    server.wait().await.unwrap();

    let (_server, url) = spawn_embedded_server(env!("CARGO_BIN_EXE_conn-tier"), dir.path()).await;
    let mut bob = TestClient::connect(&url, &token("bob")).await.unwrap();
    let got = bob.sync().await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["text"], "survive this");
    assert_eq!(got[0]["sent_at"], ack["sent_at"]);
    let mut alice = TestClient::connect(&url, &token("alice")).await.unwrap();
    // The idempotency record survived too: a retry of the acked send is not stored twice...
    alice.send(send).await;
    assert_eq!(alice.expect("ack").await, ack);
    // ...and numbering carries on.
    alice
        .send(json!({"action":"send","to":"user:bob","client_msg_id":"after","text":"and after"}))
        .await;
    assert_eq!(alice.expect("ack").await["message_id"], 2);
}

#[tokio::test]
async fn every_ack_received_before_a_kill_mid_burst_is_durable_and_ids_stay_gapless() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) =
        spawn_embedded_server(env!("CARGO_BIN_EXE_conn-tier"), dir.path()).await;
    let mut alice = TestClient::connect(&url, &token("alice")).await.unwrap();
    // 180 frames: a burst within the rate limit (200).
    let burst = 180;
    for i in 0..burst {
        alice.send(json!({"action":"send","to":"user:bob","client_msg_id":format!("b{i}"),"text":format!("burst {i}")})).await;
    }
    let mut acked = Vec::new();
    while acked.len() < 60 {
        let f = alice.recv().await;
        assert_eq!(f["type"], "ack", "{f}");
        acked.push((
            f["client_msg_id"].as_str().unwrap().to_string(),
            f["message_id"].as_u64().unwrap(),
        ));
    }
    server.start_kill().unwrap();
    server.wait().await.unwrap();

    let (_server, url) = spawn_embedded_server(env!("CARGO_BIN_EXE_conn-tier"), dir.path()).await;
    let mut bob = TestClient::connect(&url, &token("bob")).await.unwrap();
    let got = bob.sync().await;
    let stored = ids(&got);
    let n = stored.len() as u64;
    assert!(n >= 60, "only {n} messages survived, 60 were acked");
    assert_eq!(stored, (1..=n).collect::<Vec<_>>(), "ids have a gap");
    // Each stored text is its own send's, in frame order.
    for (k, m) in got.iter().enumerate() {
        assert_eq!(m["text"], format!("burst {k}"), "{m}");
    }
    // Every acked send is stored at the id its ack gave.
    for (cmid, id) in &acked {
        let k: usize = cmid[1..].parse().unwrap();
        assert_eq!(got[(*id - 1) as usize]["text"], format!("burst {k}"));
    }
    // alice retries every send she has no ack for, as a client must: each
    // is stored exactly once; the ones that survived answer their old ack.
    let mut alice = TestClient::connect(&url, &token("alice")).await.unwrap();
    for i in acked.len()..burst {
        alice.send(json!({"action":"send","to":"user:bob","client_msg_id":format!("b{i}"),"text":format!("burst {i}")})).await;
    }
    for i in acked.len()..burst {
        let f = alice.expect("ack").await;
        assert_eq!(f["client_msg_id"], format!("b{i}"));
        assert_eq!(f["message_id"], i as u64 + 1, "stored once, in order");
    }
    let mut bob = TestClient::connect(&url, &token("bob")).await.unwrap();
    let all = bob.sync().await;
    assert_eq!(ids(&all), (1..=burst as u64).collect::<Vec<_>>());
}

/// Sends `signal` to the server process.
async fn signal(server: &Child, signal: &str) {
    let pid = server.id().unwrap().to_string();
    let status = Command::new("kill")
        .args([signal, &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) =
        spawn_embedded_server(env!("CARGO_BIN_EXE_conn-tier"), dir.path()).await;
    let mut alice = TestClient::connect(&url, &token("alice")).await.unwrap();
    alice.send_text("user:bob", "before shutdown").await;
    signal(&server, "-TERM").await;
    assert_eq!(alice.expect_close().await, 1001);
    let exit = tokio::time::timeout(WAIT, server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}

#[tokio::test]
async fn sigint_acks_the_sends_already_queued_then_closes_and_a_restart_has_them_all() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) =
        spawn_embedded_server(env!("CARGO_BIN_EXE_conn-tier"), dir.path()).await;
    let mut alice = TestClient::connect(&url, &token("alice")).await.unwrap();
    for i in 0..50 {
        alice.send(json!({"action":"send","to":"user:bob","client_msg_id":format!("q{i}"),"text":format!("queued {i}")})).await;
    }
    // The first ack proves the frames are being read; then Ctrl-C.
    let first = alice.expect("ack").await;
    assert_eq!(first["message_id"], 1);
    signal(&server, "-INT").await;
    // Every answer the server owes comes before the close: acks only, in
    // order, none lost (a send read before the shutdown is acked).
    let mut acked = 1;
    let code = loop {
        match alice.try_recv(WAIT).await {
            Some(Ok(f)) => {
                assert_eq!(f["type"], "ack", "{f}");
                acked += 1;
                assert_eq!(f["message_id"], acked);
            }
            Some(Err(closed)) => break closed,
            None => panic!("neither an ack nor a close within {WAIT:?}"),
        }
    };
    assert!(code.contains("Away") || code.contains("1001"), "{code}");
    let exit = tokio::time::timeout(WAIT, server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
    // After the restart: exactly the acked messages, ids gapless, and a
    // retry of every send finds them or stores the rest once.
    let (_server, url) = spawn_embedded_server(env!("CARGO_BIN_EXE_conn-tier"), dir.path()).await;
    let mut bob = TestClient::connect(&url, &token("bob")).await.unwrap();
    let got = bob.sync().await;
    assert_eq!(ids(&got), (1..=acked).collect::<Vec<_>>());
    let mut alice = TestClient::connect(&url, &token("alice")).await.unwrap();
    for i in 0..50 {
        alice.send(json!({"action":"send","to":"user:bob","client_msg_id":format!("q{i}"),"text":format!("queued {i}")})).await;
    }
    for i in 0..50u64 {
        assert_eq!(alice.expect("ack").await["message_id"], i + 1);
    }
}
