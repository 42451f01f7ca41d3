//! 1:1 chat over real WebSockets: ids, acks, devices, offline sync,
//! receipts, idempotency, history, concurrency.

use chat_tests::*;
use conn_tier::limits::SocketConfig;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn direct_messages_flow_both_ways_with_ids_in_order_to_every_device() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob_phone = server.client("bob").await;
    let mut bob_laptop = server.client("bob").await;

    for (i, text) in ["hi bob", "how are you?"].iter().enumerate() {
        let ack = alice.send_text("user:bob", text).await;
        assert_eq!(ack["type"], "ack");
        assert_eq!(ack["conversation_id"], "dm#alice#bob");
        assert_eq!(ack["message_id"], i as u64 + 1);
        assert!(ack["sent_at"].as_str().unwrap().ends_with('Z'));
        for dev in [&mut bob_phone, &mut bob_laptop] {
            let m = dev.expect("message").await;
            assert_eq!(m["from"], "alice");
            assert_eq!(m["text"], *text);
            assert_eq!(m["message_id"], i as u64 + 1);
            assert_eq!(m["sent_at"], ack["sent_at"]);
        }
    }
    // bob answers from his phone: alice gets it; his laptop gets a copy; the
    // phone gets only the ack.
    let ack = bob_phone.send_text("user:alice", "fine!").await;
    assert_eq!(ack["message_id"], 3);
    let m = alice.expect("message").await;
    assert_eq!(
        (m["from"].as_str(), m["message_id"].as_u64()),
        (Some("bob"), Some(3))
    );
    assert_eq!(bob_laptop.expect("message").await["text"], "fine!");
    bob_phone.expect_silence(Duration::from_millis(300)).await;
    alice.expect_silence(Duration::from_millis(100)).await;
    server.stop().await;
}

#[tokio::test]
async fn an_offline_user_syncs_missed_messages_acks_and_the_sender_gets_a_receipt() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    for i in 1..=5 {
        assert_eq!(
            alice.send_text("user:bob", &format!("m{i}")).await["message_id"],
            i
        );
    }
    // bob syncs first: live messages still on their way wait behind the replay.
    let mut bob = server.raw_client("bob").await;
    let missed = bob.sync().await;
    assert_eq!(ids(&missed), vec![1, 2, 3, 4, 5]);
    assert_eq!(missed[4]["text"], "m5");
    assert!(missed.iter().all(|m| m["from"] == "alice"));

    bob.send(json!({"action":"ack","conversation_id":"dm#alice#bob","up_to":5}))
        .await;
    let r = alice.expect("receipt").await;
    assert_eq!(
        r,
        json!({"type":"receipt","conversation_id":"dm#alice#bob","user_id":"bob","up_to":5})
    );
    assert!(bob.sync().await.is_empty());

    // An older ack does not move the watermark back, and tells nobody.
    bob.send(json!({"action":"ack","conversation_id":"dm#alice#bob","up_to":2}))
        .await;
    alice.expect_silence(Duration::from_millis(300)).await;
    assert!(bob.sync().await.is_empty());

    // The sender's own messages never come back to her in sync.
    assert!(alice.sync().await.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn an_ack_beyond_the_newest_message_does_not_skip_future_ones() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    alice.send_text("user:bob", "one").await;
    let mut bob = server.client("bob").await;
    bob.send(json!({"action":"ack","conversation_id":"dm#alice#bob","up_to":1000}))
        .await;
    assert_eq!(alice.expect("receipt").await["up_to"], 1);
    bob.close().await;
    alice.send_text("user:bob", "two").await;
    let mut bob = server.client("bob").await;
    assert_eq!(ids(&bob.sync().await), vec![2]);
    server.stop().await;
}

#[tokio::test]
async fn resending_a_client_msg_id_returns_the_same_ack_and_stores_one_message() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let frame = json!({"action":"send","to":"user:bob","client_msg_id":"retry-me","text":"once"});
    alice.send(frame.clone()).await;
    let first = alice.expect("ack").await;
    assert_eq!(
        (
            first["client_msg_id"].as_str(),
            first["conversation_id"].as_str(),
            first["message_id"].as_u64()
        ),
        (Some("retry-me"), Some("dm#alice#bob"), Some(1))
    );
    let m = bob.expect("message").await;
    alice.send(frame.clone()).await;
    let second = alice.expect("ack").await;
    assert_eq!(first, second);
    bob.expect_silence(Duration::from_millis(300)).await;

    // The one stored message is what was sent, as the ack and the live
    // copy described it.
    let (message_id, sent_at) = (first["message_id"].clone(), first["sent_at"].clone());
    let stored = json!([{
        "conversation_id": "dm#alice#bob",
        "message_id": message_id,
        "from": "alice",
        "text": "once",
        "sent_at": sent_at
    }]);
    let h = alice.history("dm#alice#bob", None, None).await;
    assert_eq!(h["messages"], stored);
    assert_eq!(h["has_more"], false);
    let mut live = stored[0].clone();
    live["type"] = json!("message");
    assert_eq!(m, live);

    // A fresh connection of the same user gets the original too, and still
    // nothing new is stored or delivered.
    let mut alice2 = server.client("alice").await;
    alice2.send(frame).await;
    assert_eq!(alice2.expect("ack").await, first);
    bob.expect_silence(Duration::from_millis(300)).await;
    let h = alice2.history("dm#alice#bob", None, None).await;
    assert_eq!(h["messages"], stored);
    assert_eq!(h["has_more"], false);
    server.stop().await;
}

#[tokio::test]
async fn a_client_msg_id_reused_for_another_text_or_recipient_is_a_conflict_and_changes_nothing() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    alice
        .send(json!({"action":"send","to":"user:bob","client_msg_id":"same-id","text":"original"}))
        .await;
    let first = alice.expect("ack").await;
    assert_eq!(first["message_id"], 1);
    assert_eq!(bob.expect("message").await["text"], "original");

    for (to, text) in [("user:bob", "changed"), ("user:carol", "original")] {
        alice
            .send(json!({"action":"send","to":to,"client_msg_id":"same-id","text":text}))
            .await;
        let e = alice.expect("error").await;
        assert_eq!(
            (
                e["code"].as_str(),
                e["client_msg_id"].as_str(),
                e["action"].as_str()
            ),
            (Some("conflict"), Some("same-id"), Some("send")),
            "{e}"
        );
    }
    // The exact resend still answers the original ack.
    alice
        .send(json!({"action":"send","to":"user:bob","client_msg_id":"same-id","text":"original"}))
        .await;
    assert_eq!(alice.expect("ack").await, first);
    bob.expect_silence(Duration::from_millis(300)).await;
    let h = bob.history("dm#alice#bob", None, None).await;
    assert_eq!(ids(h["messages"].as_array().unwrap()), vec![1]);
    assert_eq!(h["messages"][0]["text"], "original");
    let (_carol, got) = server.syncing_client("carol").await;
    assert!(got.is_empty(), "nothing reached carol: {got:?}");
    server.stop().await;
}

#[tokio::test]
async fn history_pages_backwards_with_before_and_limit() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    for i in 1..=7 {
        alice.send_text("user:bob", &format!("m{i}")).await;
    }
    let page = |h: &serde_json::Value| {
        (
            ids(h["messages"].as_array().unwrap()),
            h["has_more"].as_bool().unwrap(),
        )
    };
    let h = alice.history("dm#alice#bob", None, Some(3)).await;
    assert_eq!(h["type"], "history");
    assert_eq!(page(&h), (vec![5, 6, 7], true));
    let h = alice.history("dm#alice#bob", Some(5), Some(3)).await;
    assert_eq!(page(&h), (vec![2, 3, 4], true));
    let h = alice.history("dm#alice#bob", Some(2), Some(3)).await;
    assert_eq!(page(&h), (vec![1], false));
    assert_eq!(h["messages"][0]["text"], "m1");
    // Default limit 50 returns everything here; bob may read it too.
    let mut bob = server.client("bob").await;
    let h = bob.history("dm#alice#bob", None, None).await;
    assert_eq!(page(&h), ((1..=7).collect(), false));
    server.stop().await;
}

#[tokio::test]
async fn concurrent_bursts_get_ids_one_to_n_and_a_reader_sees_them_in_order() {
    let server = TestServer::start().await;
    let alice = server.client("alice").await;
    let bob = server.client("bob").await;
    let mut bob_reader = server.client("bob").await;
    let n = 60u64;
    let burst = |mut c: TestClient, to: &'static str, tag: &'static str| async move {
        for i in 0..n {
            c.send(json!({"action":"send","to":to,"client_msg_id":format!("{tag}{i}"),"text":format!("{tag}{i}")})).await;
        }
        let mut acked = Vec::new();
        while acked.len() < n as usize {
            let f = c.recv().await;
            if f["type"] == "ack" {
                acked.push(f["message_id"].as_u64().unwrap());
            }
        }
        acked
    };
    let (a, b) = tokio::join!(
        tokio::spawn(burst(alice, "user:bob", "a")),
        // bob's phone sends while his other device only reads.
        tokio::spawn(burst(bob, "user:alice", "b"))
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    // Each sender sees its own acks in increasing order.
    assert!(a.windows(2).all(|w| w[0] < w[1]), "{a:?}");
    assert!(b.windows(2).all(|w| w[0] < w[1]), "{b:?}");
    let mut all: Vec<u64> = a.iter().chain(b.iter()).copied().collect();
    all.sort();
    assert_eq!(all, (1..=2 * n).collect::<Vec<_>>());
    // The third connection received every message exactly in id order.
    let mut seen = Vec::new();
    while seen.len() < 2 * n as usize {
        let f = bob_reader.recv().await;
        assert_eq!(f["type"], "message", "{f}");
        seen.push(f["message_id"].as_u64().unwrap());
    }
    assert_eq!(seen, (1..=2 * n).collect::<Vec<_>>());
    server.stop().await;
}

#[tokio::test]
async fn pipelined_sends_keep_their_order_and_a_later_frame_sees_them_all() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    for i in 0..50 {
        alice
            .send(json!({"action":"send","to":"user:bob","client_msg_id":format!("p{i}"),"text":format!("p{i}")}))
            .await;
    }
    alice
        .send(json!({"action":"history","conversation_id":"dm#alice#bob","limit":100}))
        .await;
    for i in 0..50u64 {
        let ack = alice.expect("ack").await;
        assert_eq!(
            (ack["client_msg_id"].clone(), ack["message_id"].as_u64()),
            (json!(format!("p{i}")), Some(i + 1))
        );
    }
    let h = alice.expect("history").await;
    let texts: Vec<String> = h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(texts, (0..50).map(|i| format!("p{i}")).collect::<Vec<_>>());
    server.stop().await;
}

#[tokio::test]
async fn a_reader_that_never_reads_is_closed_with_1008_and_never_holds_the_sender_back() {
    let server = TestServer::start_with_settings(conn_tier::config::Settings {
        socket: SocketConfig {
            // A small queue: it fills once bob's socket stops taking frames.
            outbound_bytes: 64 * 1024,
            // The stuck writer waits for bob rather than dropping the socket
            // (on the DynamoDB emulator alice's 500 sends take ~20 s).
            write_timeout: Duration::from_secs(120),
            ..SocketConfig::default()
        },
        // alice's ping and 500 sends must not meet the rate limit.
        users: conn_tier::hub::UserLimits {
            burst: 1000,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut alice = server.client("alice").await;
    // bob's connection is registered and live, then never reads again; its
    // kernel buffer is tiny, so the server's writes to it block once the
    // server's own send buffer is full (Linux grows it to 4 MB at most:
    // 500 texts of 10 KB are more than that).
    let mut stuck = server.tight_client("bob").await;
    let n: u64 = 500;
    let pad = "z".repeat(10_000);
    for i in 1..=n {
        alice
            .send(json!({"action":"send","to":"user:bob","client_msg_id":format!("s{i}"),"text":format!("{i} {pad}")}))
            .await;
    }
    // Every ack arrives, in order, while the reader still reads nothing.
    for i in 1..=n {
        let ack = alice.recv().await;
        let want = format!("s{i}");
        assert_eq!(
            (
                ack["type"].as_str(),
                ack["client_msg_id"].as_str(),
                ack["message_id"].as_u64()
            ),
            (Some("ack"), Some(want.as_str()), Some(i)),
            "{ack}"
        );
    }
    alice.expect_silence(Duration::from_millis(100)).await;

    // The reader, reading at last, finds the frames that fit its queue and
    // then the close: 1008.
    assert_eq!(stuck.expect_close().await, 1008);

    // bob reconnects and syncs what he missed: the newest 200, after a
    // `gap` (a connection whose first frame is `sync` gets any late live
    // copy in order with it); history has the rest...
    let mut bob = server.raw_client("bob").await;
    let got = bob.sync().await;
    assert_eq!(ids(&got), (n - 199..=n).collect::<Vec<u64>>());
    assert_eq!(
        bob.gaps,
        [json!({"type":"gap","conversation_id":"dm#alice#bob","after":0,"before":n - 199})]
    );
    let oldest = bob.history("dm#alice#bob", Some(2), Some(1)).await;
    assert_eq!(oldest["messages"][0]["text"], format!("1 {pad}"));
    // ...and alice still reaches him live.
    assert_eq!(
        alice.send_text("user:bob", "after").await["message_id"],
        n + 1
    );
    let m = bob.expect("message").await;
    assert_eq!(
        (m["message_id"].as_u64(), m["text"].as_str()),
        (Some(n + 1), Some("after"))
    );
    server.stop().await;
}
