//! Size limits at their exact edges: the 32 KB frame, the 64-character
//! `client_msg_id`, the 128-byte group name and the 10,240-byte text.

use chat_cli::client::WsMessage;
use chat_tests::*;
use serde_json::{json, Value};

/// `frame` as JSON text, padded with spaces after its opening brace (JSON
/// allows whitespace between tokens) to exactly `size` bytes.
fn padded(frame: &Value, size: usize) -> String {
    let body = frame.to_string();
    assert!(
        body.len() <= size,
        "the frame is already {} bytes",
        body.len()
    );
    let out = format!("{{{}{}", " ".repeat(size - body.len()), &body[1..]);
    assert_eq!(out.len(), size);
    out
}

#[tokio::test]
async fn a_frame_of_exactly_32768_bytes_is_accepted_and_32769_closes_the_connection_with_1009() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;

    let text = "x".repeat(10_240);
    let edge = json!({"action":"send","to":"user:bob","client_msg_id":"edge","text":text});
    alice.send_raw(WsMessage::text(padded(&edge, 32_768))).await;
    let ack = alice.expect("ack").await;
    assert_eq!(
        (ack["client_msg_id"].as_str(), ack["message_id"].as_u64()),
        (Some("edge"), Some(1))
    );

    let over =
        json!({"action":"send","to":"user:bob","client_msg_id":"over","text":"y".repeat(10_240)});
    alice.send_raw(WsMessage::text(padded(&over, 32_769))).await;
    assert_eq!(alice.expect_close().await, 1009);

    // Only the first was stored, intact.
    let mut bob = server.raw_client("bob").await;
    let got = bob.sync().await;
    assert_eq!(ids(&got), vec![1]);
    assert_eq!(got[0]["text"], text.as_str());
    server.stop().await;
}

#[tokio::test]
async fn a_client_msg_id_of_64_characters_is_accepted_and_65_is_a_bad_request() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;

    let id_64 = "k".repeat(64);
    alice
        .send(json!({"action":"send","to":"user:bob","client_msg_id":id_64,"text":"ascii id"}))
        .await;
    let ack = alice.expect("ack").await;
    assert_eq!(
        (ack["client_msg_id"].as_str(), ack["message_id"].as_u64()),
        (Some(id_64.as_str()), Some(1))
    );
    // Characters, not bytes: 64 two-byte characters are 128 bytes.
    let wide_64 = "\u{e9}".repeat(64);
    alice
        .send(json!({"action":"send","to":"user:bob","client_msg_id":wide_64,"text":"wide id"}))
        .await;
    let ack = alice.expect("ack").await;
    assert_eq!(
        (ack["client_msg_id"].as_str(), ack["message_id"].as_u64()),
        (Some(wide_64.as_str()), Some(2))
    );

    // 65 characters: refused, and the error echoes the first 64.
    let id_65 = format!("{}Z", "q".repeat(64));
    alice
        .send(json!({"action":"send","to":"user:carol","client_msg_id":id_65,"text":"long id"}))
        .await;
    let e = alice.expect("error").await;
    let echoed = "q".repeat(64);
    assert_eq!(
        (
            e["code"].as_str(),
            e["action"].as_str(),
            e["client_msg_id"].as_str()
        ),
        (Some("bad_request"), Some("send"), Some(echoed.as_str())),
        "{e}"
    );
    assert!(
        e["message"]
            .as_str()
            .unwrap_or("")
            .contains("client_msg_id"),
        "{e}"
    );

    // Nothing was stored for carol; bob has exactly the two accepted.
    let mut carol = server.raw_client("carol").await;
    assert!(carol.sync().await.is_empty());
    carol.send(json!({"action":"conversations"})).await;
    assert_eq!(carol.expect("conversations").await["items"], json!([]));
    let mut bob = server.raw_client("bob").await;
    let got = bob.sync().await;
    assert_eq!(ids(&got), vec![1, 2]);
    assert_eq!(
        (got[0]["text"].as_str(), got[1]["text"].as_str()),
        (Some("ascii id"), Some("wide id"))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_group_name_of_128_bytes_is_accepted_and_129_is_a_bad_request() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;

    // 128 one-byte characters, and 64 two-byte ones.
    let accepted = ["n".repeat(128), "\u{e9}".repeat(64)];
    for name in &accepted {
        assert_eq!(name.len(), 128);
        let g = alice.create_group(name, &["bob"]).await;
        assert_eq!(g["name"], name.as_str());
        assert_eq!(g["members"], json!(["alice", "bob"]));
    }
    // 129 bytes, in 129 characters or in 65.
    for name in ["n".repeat(129), format!("{}x", "\u{e9}".repeat(64))] {
        assert_eq!(name.len(), 129);
        alice
            .send(json!({"action":"createGroup","name":name,"members":["bob"]}))
            .await;
        let e = alice.expect("error").await;
        assert_eq!(
            (e["code"].as_str(), e["action"].as_str()),
            (Some("bad_request"), Some("createGroup")),
            "{e}"
        );
    }

    // bob is in the two accepted groups only.
    let mut bob = server.raw_client("bob").await;
    bob.send(json!({"action":"conversations"})).await;
    // A group's announcement may still reach bob's new connection first.
    let c = loop {
        let f = bob.recv().await;
        if f["type"] != "group" {
            break f;
        }
    };
    assert_eq!(c["type"], "conversations", "{c}");
    let mut names: Vec<String> = c["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| i["name"].as_str().unwrap_or("").to_string())
        .collect();
    names.sort();
    let mut want = accepted.to_vec();
    want.sort();
    assert_eq!(names, want, "{c}");
    server.stop().await;
}

#[tokio::test]
async fn a_text_of_exactly_10240_bytes_of_multibyte_utf8_is_accepted_and_stored_intact() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    // One character of each UTF-8 length (1 + 2 + 3 + 4 bytes), 1,024 times.
    let text = "a\u{e9}\u{20ac}\u{1f600}".repeat(1024);
    assert_eq!(text.len(), 10_240);

    let ack = alice.send_text("user:bob", &text).await;
    assert_eq!(ack["message_id"], 1);
    let h = alice.history("dm#alice#bob", None, None).await;
    assert_eq!(ids(h["messages"].as_array().expect("messages")), vec![1]);
    assert_eq!(h["messages"][0]["text"], text.as_str());

    let mut bob = server.raw_client("bob").await;
    let got = bob.sync().await;
    assert_eq!(ids(&got), vec![1]);
    assert_eq!(got[0]["text"], text.as_str());
    server.stop().await;
}
