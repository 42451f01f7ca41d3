//! Every device catches up (docs/protocol.md, "Devices"): each device of a
//! user has its own delivery cursor, so `sync` replays to a device what it
//! missed even when another device of the same user read or answered it
//! meanwhile. Over real WebSockets, on the store `TEST_STORE` names.

use chat_tests::*;
use serde_json::{json, Value};

fn ids(frames: &[Value]) -> Vec<u64> {
    frames
        .iter()
        .map(|f| f["message_id"].as_u64().expect("message_id"))
        .collect()
}

fn of(frames: &[Value], conv: &str) -> Vec<Value> {
    frames
        .iter()
        .filter(|f| f["conversation_id"] == conv)
        .cloned()
        .collect()
}

/// Alice's phone and laptop, each seen once (synced), and the laptop
/// holding message 1 of `dm#alice#bob`.
async fn phone_and_laptop(server: &TestServer) -> (TestClient, TestClient) {
    let mut bob = server.client("bob").await;
    bob.send_text("user:alice", "1").await;
    let mut phone = server.device_client("alice", "phone").await;
    phone.sync().await;
    let mut laptop = server.device_client("alice", "laptop").await;
    assert_eq!(ids(&laptop.sync().await), [1]);
    laptop.received("dm#alice#bob", 1, 1).await;
    bob.close().await;
    (phone, laptop)
}

#[tokio::test]
async fn a_laptop_back_online_gets_what_the_phone_read_meanwhile() {
    let server = TestServer::start().await;
    let (mut phone, laptop) = phone_and_laptop(&server).await;
    laptop.close().await;
    let mut bob = server.client("bob").await;
    for i in 2..=4 {
        bob.send_text("user:alice", &i.to_string()).await;
    }
    for _ in 2..=4 {
        phone.expect("message").await;
    }
    phone.received("dm#alice#bob", 1, 4).await;
    phone
        .send(json!({"action":"ack","conversation_id":"dm#alice#bob","up_to":4}))
        .await;
    // The ack reached the store once bob has its receipt.
    bob.expect("receipt").await;
    let mut laptop = server.device_client("alice", "laptop").await;
    assert_eq!(ids(&laptop.sync().await), [2, 3, 4]);
    assert!(laptop.gaps.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_laptop_back_online_gets_what_the_phone_only_answered() {
    let server = TestServer::start().await;
    let (mut phone, laptop) = phone_and_laptop(&server).await;
    laptop.close().await;
    let mut bob = server.client("bob").await;
    for i in 2..=4 {
        bob.send_text("user:alice", &i.to_string()).await;
    }
    for _ in 2..=4 {
        phone.expect("message").await;
    }
    // No ack at all: the phone replies, which moves alice's read watermark.
    phone.send_text("user:bob", "answer").await;
    let mut laptop = server.device_client("alice", "laptop").await;
    assert_eq!(ids(&laptop.sync().await), [2, 3, 4, 5]);
    server.stop().await;
}

#[tokio::test]
async fn a_laptop_back_online_gets_what_the_phone_read_in_a_group_of_three() {
    let server = TestServer::start().await;
    let mut carol = server.client("carol").await;
    let g = carol.create_group("three", &["alice", "bob"]).await;
    let to = format!("group:{}", g["group_id"].as_str().unwrap());
    let conv = format!("grp#{}", g["group_id"].as_str().unwrap());
    let mut phone = server.device_client("alice", "phone").await;
    phone.sync().await;
    let laptop = server.device_client("alice", "laptop").await;
    let mut laptop = laptop;
    laptop.sync().await;
    laptop.close().await;
    let mut bob = server.client("bob").await;
    carol.send_text(&to, "c1").await;
    bob.expect("message").await;
    bob.send_text(&to, "b2").await;
    carol.expect("message").await;
    carol.send_text(&to, "c3").await;
    let mut got = 0;
    while got < 3 {
        if phone.recv().await["type"] == "message" {
            got += 1;
        }
    }
    phone
        .send(json!({"action":"ack","conversation_id":conv,"up_to":3}))
        .await;
    phone.received(&conv, 1, 3).await;
    let mut laptop = server.device_client("alice", "laptop").await;
    let synced = laptop.sync().await;
    assert_eq!(ids(&of(&synced, &conv)), [1, 2, 3]);
    server.stop().await;
}

#[tokio::test]
async fn a_new_device_gets_unread_only_and_a_known_one_all_of_a_chat_new_to_it_since_the_user_joined(
) {
    let server = TestServer::start().await;
    let mut bob = server.client("bob").await;
    for i in 1..=5 {
        bob.send_text("user:alice", &i.to_string()).await;
    }
    let mut reader = server.client("alice").await;
    reader
        .send(json!({"action":"ack","conversation_id":"dm#alice#bob","up_to":3}))
        .await;
    bob.expect("receipt").await;
    let mut tablet = server.device_client("alice", "tablet").await;
    assert_eq!(ids(&tablet.sync().await), [4, 5], "never seen: unread only");
    tablet.close().await;
    // A conversation new to the (now known) tablet, read elsewhere.
    let mut carol = server.client("carol").await;
    carol.send_text("user:alice", "c1").await;
    carol.send_text("user:alice", "c2").await;
    reader
        .send(json!({"action":"ack","conversation_id":"dm#alice#carol","up_to":2}))
        .await;
    carol.expect("receipt").await;
    let mut tablet = server.device_client("alice", "tablet").await;
    let synced = tablet.sync().await;
    assert_eq!(
        ids(&of(&synced, "dm#alice#carol")),
        [1, 2],
        "everything since the join point (0 for a direct chat), read or not"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_device_far_behind_gets_the_newest_200_and_a_gap_then_pages_back_to_the_first() {
    // bob sends 1,000 frames at once: more than the default frame budget.
    let server = TestServer::start_with_settings(conn_tier::config::Settings {
        users: conn_tier::hub::UserLimits {
            burst: 5000,
            per_sec: 5000,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    // 1,000 behind; fewer on the emulator, which stores ~100 sends a second.
    let behind: u64 = if store_kind() == "dynamodb" {
        260
    } else {
        1000
    };
    let (_phone, laptop) = phone_and_laptop(&server).await;
    laptop.close().await;
    let mut bob = server.client("bob").await;
    for i in 2..=behind + 1 {
        bob.send_text("user:alice", &i.to_string()).await;
    }
    let last = behind + 1;
    let mut laptop = server.device_client("alice", "laptop").await;
    let synced = laptop.sync().await;
    assert_eq!(ids(&synced), (last - 199..=last).collect::<Vec<_>>());
    assert_eq!(
        laptop.gaps,
        [json!({"type":"gap","conversation_id":"dm#alice#bob","after":1,"before":last - 199})],
        "it stood at 1: 2 to {} are left out",
        last - 200
    );
    // Paging back with history reaches message 1.
    let mut before = last - 199;
    loop {
        let page = laptop
            .history("dm#alice#bob", Some(before), Some(100))
            .await;
        let messages = page["messages"].as_array().unwrap();
        before = messages[0]["message_id"].as_u64().unwrap();
        if !page["has_more"].as_bool().unwrap() {
            break;
        }
    }
    assert_eq!(before, 1);
    // Told of the gap, its run starts above the position the gap named:
    // the cursor moves past, and the next sync replays nothing.
    laptop.received("dm#alice#bob", 2, last).await;
    laptop.close().await;
    let mut laptop = server.device_client("alice", "laptop").await;
    assert!(of(&laptop.sync().await, "dm#alice#bob").is_empty());
    assert!(laptop.gaps.is_empty());
    server.stop().await;
}

#[tokio::test]
async fn received_is_forbidden_for_a_stranger_and_needs_a_device_a_sync_made_known() {
    let server = TestServer::start().await;
    let mut bob = server.client("bob").await;
    bob.send_text("user:alice", "private").await;
    let mut eve = server.device_client("eve", "laptop").await;
    eve.send(json!({"action":"received","conversation_id":"dm#alice#bob","from":1,"up_to":1}))
        .await;
    let e = eve.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["action"].as_str()),
        (Some("forbidden"), Some("received"))
    );
    let mut plain = server.client("alice").await;
    plain
        .send(json!({"action":"received","conversation_id":"dm#alice#bob","from":1,"up_to":1}))
        .await;
    assert_eq!(plain.expect("error").await["code"], "bad_request");
    let mut both = server.device_client("alice", "x").await;
    both.send(json!({"action":"received","items":[]})).await;
    assert_eq!(both.expect("error").await["code"], "bad_request");
    // A device no sync has made known: refused, so a client cannot mint
    // devices past the cap through `received`.
    both.send(json!({"action":"received","conversation_id":"dm#alice#bob","from":1,"up_to":1}))
        .await;
    let e = both.expect("error").await;
    assert_eq!(e["code"], "bad_request", "{e}");
    assert!(
        e["message"].as_str().unwrap_or("").contains("sync first"),
        "{e}"
    );
    both.sync().await;
    both.received("dm#alice#bob", 1, 1).await;
    server.stop().await;
}

#[tokio::test]
async fn a_bad_device_id_is_refused_before_the_upgrade() {
    let server = TestServer::start().await;
    for bad in ["", "has%20space", "%23hash", &"x".repeat(65)] {
        let url = format!("{}?device={bad}", server.url());
        let err = TestClient::connect(&url, &server.token("alice"))
            .await
            .err()
            .unwrap_or_else(|| panic!("device {bad:?} was accepted"));
        assert!(err.to_string().contains("401"), "{bad:?}: {err}");
    }
    // A `device` claim that is not a device id: refused too.
    let token = server.auth.mint_for_device("alice", "no way!", 60).unwrap();
    let err = TestClient::connect(&server.url(), &token)
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains("401"), "{err}");
    server.stop().await;
}
