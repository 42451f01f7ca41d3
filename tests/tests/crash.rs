//! Durability: a real server process is killed (SIGKILL, no shutdown)
//! right after acking; every acknowledged message is there after restart.

use chat_tests::*;
use serde_json::json;
use std::process::Stdio;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts the server binary on a free port; returns it and its WebSocket URL.
async fn spawn_server(data_dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_chat-server"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--management-listen",
            "127.0.0.1:0",
            "--data-dir",
        ])
        .arg(data_dir)
        .env("CHAT_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .env("CHAT_LOG_JSON", "true")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn chat-server");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                if let Some(url) = v["fields"]["url"].as_str() {
                    return url.to_string();
                }
            }
        }
        panic!("server exited before it was ready");
    })
    .await
    .expect("server ready in time");
    // Keep draining its log so it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (child, url)
}

fn token(user: &str) -> String {
    chat_core::auth::Authenticator::new(SECRET)
        .unwrap()
        .mint(user, 600)
        .unwrap()
}

#[tokio::test]
async fn acknowledged_messages_survive_a_kill_and_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = spawn_server(dir.path()).await;
    let mut alice = TestClient::connect(&url, &token("alice")).await.unwrap();
    let ack = alice.send_text("user:bob", "survive this").await;
    assert_eq!(ack["message_id"], 1);
    server.start_kill().unwrap();
    server.wait().await.unwrap();

    let (_server, url) = spawn_server(dir.path()).await;
    let mut bob = TestClient::connect(&url, &token("bob")).await.unwrap();
    let got = bob.sync().await;
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["text"], "survive this");
    assert_eq!(got[0]["sent_at"], ack["sent_at"]);
    let mut alice = TestClient::connect(&url, &token("alice")).await.unwrap();
    // The idempotency record survived too: a retry of the acked send is not stored twice...
    assert_eq!(alice.send_text("user:bob", "survive this").await, ack);
    // ...and numbering carries on.
    alice
        .send(json!({"action":"send","to":"user:bob","client_msg_id":"after","text":"and after"}))
        .await;
    assert_eq!(alice.expect("ack").await["message_id"], 2);
}

#[tokio::test]
async fn every_ack_received_before_a_kill_mid_burst_is_durable_and_ids_stay_gapless() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = spawn_server(dir.path()).await;
    let mut alice = TestClient::connect(&url, &token("alice")).await.unwrap();
    // 180 frames: a burst within the rate limit (200).
    for i in 0..180 {
        alice.send(json!({"action":"send","to":"user:bob","client_msg_id":format!("b{i}"),"text":format!("burst {i}")})).await;
    }
    let mut acked = Vec::new();
    while acked.len() < 60 {
        let f = alice.recv().await;
        assert_eq!(f["type"], "ack", "{f}");
        acked.push(f["message_id"].as_u64().unwrap());
    }
    server.start_kill().unwrap();
    server.wait().await.unwrap();

    let (_server, url) = spawn_server(dir.path()).await;
    let mut bob = TestClient::connect(&url, &token("bob")).await.unwrap();
    let stored = ids(&bob.sync().await);
    let n = stored.len() as u64;
    assert!(n >= 60, "only {n} messages survived, 60 were acked");
    assert_eq!(stored, (1..=n).collect::<Vec<_>>(), "ids have a gap");
    assert!(acked.iter().all(|id| *id <= n));
}

#[tokio::test]
async fn sigterm_closes_sockets_with_1001_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = spawn_server(dir.path()).await;
    let mut alice = TestClient::connect(&url, &token("alice")).await.unwrap();
    alice.send_text("user:bob", "before shutdown").await;
    let pid = server.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    assert_eq!(alice.expect_close().await, 1001);
    let exit = tokio::time::timeout(WAIT, server.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(exit.success(), "{exit:?}");
}
