//! Read receipts over real WebSockets: an `ack` that moves a watermark
//! tells, in a direct chat, every other connection of both members; in a
//! group, only the authors of the messages it newly covers; and only
//! when it moves.

use chat_tests::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn a_receipt_reaches_the_ackers_other_devices_and_the_senders_devices_but_not_the_acking_connection(
) {
    let server = TestServer::start().await;
    let mut alice_phone = server.client("alice").await;
    let mut alice_laptop = server.client("alice").await;
    let mut bob_phone = server.client("bob").await;
    let mut bob_laptop = server.client("bob").await;

    let ack = alice_phone.send_text("user:bob", "read me").await;
    assert_eq!(ack["message_id"], 1);
    // The sender's other device and both of bob's get the message first.
    for dev in [&mut alice_laptop, &mut bob_phone, &mut bob_laptop] {
        let m = dev.expect("message").await;
        assert_eq!(
            (m["message_id"].as_u64(), m["text"].as_str()),
            (Some(1), Some("read me"))
        );
    }

    bob_phone
        .send(json!({"action":"ack","conversation_id":"dm#alice#bob","up_to":1}))
        .await;
    let want = json!({"type":"receipt","conversation_id":"dm#alice#bob","user_id":"bob","up_to":1});
    for dev in [&mut alice_phone, &mut alice_laptop, &mut bob_laptop] {
        assert_eq!(dev.expect("receipt").await, want);
    }
    // The acking connection hears nothing back.
    bob_phone.expect_silence(Duration::from_millis(300)).await;
    for dev in [&mut alice_phone, &mut alice_laptop, &mut bob_laptop] {
        dev.expect_silence(Duration::from_millis(100)).await;
    }
    server.stop().await;
}

#[tokio::test]
async fn in_a_group_only_the_authors_of_what_an_ack_covers_get_a_receipt() {
    let server = TestServer::start().await;
    let five = scenarios::FiveMembers {
        alice: server.client("alice").await,
        alice_2: server.client("alice").await,
        bob: server.client("bob").await,
        carol: server.client("carol").await,
        dave: server.client("dave").await,
        dave_2: server.client("dave").await,
        erin: server.client("erin").await,
        zed: server.client("zed").await,
    };
    scenarios::only_the_authors_get_a_group_receipt(five).await;
    server.stop().await;
}

#[tokio::test]
async fn the_same_ack_twice_sends_one_receipt() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let ack_1 = json!({"action":"ack","conversation_id":"dm#alice#bob","up_to":1});

    alice.send_text("user:bob", "one").await;
    bob.expect("message").await;
    bob.send(ack_1.clone()).await;
    assert_eq!(
        alice.expect("receipt").await,
        json!({"type":"receipt","conversation_id":"dm#alice#bob","user_id":"bob","up_to":1})
    );

    // The repeat does not move the watermark: no receipt. The ping after
    // it is answered only once the repeat has been handled.
    bob.send(ack_1).await;
    bob.send(json!({"action":"ping"})).await;
    bob.expect("pong").await;
    alice.expect_silence(Duration::from_millis(300)).await;

    // Receipts still flow when the watermark does move.
    alice.send_text("user:bob", "two").await;
    assert_eq!(bob.expect("message").await["message_id"], 2);
    bob.send(json!({"action":"ack","conversation_id":"dm#alice#bob","up_to":2}))
        .await;
    assert_eq!(
        alice.expect("receipt").await,
        json!({"type":"receipt","conversation_id":"dm#alice#bob","user_id":"bob","up_to":2})
    );
    alice.expect_silence(Duration::from_millis(100)).await;
    server.stop().await;
}
