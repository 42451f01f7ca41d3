//! Bad input gets a clear error, the connection stays open, nothing is
//! stored; bad tokens never reach the upgrade.

use chat_cli::client::WsMessage;
use chat_core::auth::Authenticator;
use chat_tests::*;
use serde_json::json;

async fn assert_nothing_stored(server: &TestServer) {
    let mut probe = server.client("bob").await;
    assert!(
        probe.sync().await.is_empty(),
        "a refused frame stored something"
    );
    probe.send(json!({"action":"conversations"})).await;
    assert_eq!(probe.expect("conversations").await["items"], json!([]));
}

#[tokio::test]
async fn bad_frames_get_error_frames_and_the_connection_stays_open() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;

    // 10,240 bytes of UTF-8 is the limit, counted after JSON decoding.
    let over = "é".repeat(5120) + "x";
    alice
        .send(json!({"action":"send","to":"user:bob","client_msg_id":"big","text":over}))
        .await;
    let e = alice.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["client_msg_id"].as_str()),
        (Some("too_large"), Some("big"))
    );

    alice.send_raw(WsMessage::text("{this is not json")).await;
    let e = alice.expect("error").await;
    assert_eq!(e["code"], "bad_request");
    assert!(
        e["message"].as_str().unwrap().contains("malformed JSON"),
        "{e}"
    );

    alice
        .send(json!({"action":"teleport","to":"user:bob"}))
        .await;
    let e = alice.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["action"].as_str()),
        (Some("bad_request"), Some("teleport"))
    );

    alice
        .send(json!({"action":"send","to":"user:bob","client_msg_id":"c2"}))
        .await;
    let e = alice.expect("error").await;
    assert_eq!(e["code"], "bad_request");
    assert!(e["message"].as_str().unwrap().contains("text"), "{e}");
    assert_eq!(e["client_msg_id"], "c2");

    alice
        .send(json!({"action":"send","to":"user:bob smith","client_msg_id":"c3","text":"hi"}))
        .await;
    assert_eq!(alice.expect("error").await["code"], "bad_request");
    alice
        .send(json!({"action":"createGroup","name":"g","members":["ok", "not ok!"]}))
        .await;
    assert_eq!(alice.expect("error").await["code"], "bad_request");
    alice
        .send(json!({"action":"history","conversation_id":"nonsense"}))
        .await;
    assert_eq!(alice.expect("error").await["code"], "bad_request");

    alice
        .send_raw(WsMessage::binary(vec![0u8, 159, 146, 150]))
        .await;
    let e = alice.expect("error").await;
    assert_eq!(e["code"], "bad_request");
    assert!(e["message"].as_str().unwrap().contains("binary"), "{e}");

    // Still open, still working.
    let ack = alice.send_text("user:carol", &"é".repeat(5120)).await;
    assert_eq!(
        (ack["type"].as_str(), ack["message_id"].as_u64()),
        (Some("ack"), Some(1))
    );
    assert_nothing_stored(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_frame_over_32_kb_closes_the_connection_with_1009() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let text = "x".repeat(40 * 1024);
    alice
        .send(json!({"action":"send","to":"user:bob","client_msg_id":"huge","text":text}))
        .await;
    assert_eq!(alice.expect_close().await, 1009);
    assert_nothing_stored(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_refused_with_401_before_the_upgrade() {
    let server = TestServer::start().await;
    let url = server.url();
    let other = Authenticator::new(b"someone-elses-secret-of-32-bytes!").unwrap();
    let b64 = |s: &str| {
        const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let d = s.as_bytes();
        let mut o = String::new();
        for c in d.chunks(3) {
            let n = (c[0] as u32) << 16
                | (*c.get(1).unwrap_or(&0) as u32) << 8
                | *c.get(2).unwrap_or(&0) as u32;
            for i in 0..=c.len() {
                o.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        o
    };
    let alg_none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(r#"{"sub":"alice","exp":99999999999}"#)
    );
    let cases = [
        ("missing", url.clone()),
        ("garbage", format!("{url}?token=garbage")),
        (
            "expired",
            format!("{url}?token={}", server.auth.mint("alice", -3600).unwrap()),
        ),
        (
            "wrong signature",
            format!("{url}?token={}", other.mint("alice", 3600).unwrap()),
        ),
        ("alg none", format!("{url}?token={alg_none}")),
        (
            "bad user id",
            format!(
                "{url}?token={}",
                server.auth.mint("not a user!", 3600).unwrap()
            ),
        ),
    ];
    for (what, u) in cases {
        assert_eq!(handshake_status(&u).await.unwrap(), 401, "{what}");
    }
    assert_eq!(
        handshake_status(&format!("{url}?token={}", server.token("alice")))
            .await
            .unwrap(),
        101
    );
    assert_nothing_stored(&server).await;
    server.stop().await;
}

#[tokio::test]
async fn a_bearer_header_authenticates_too() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let server = TestServer::start().await;
    let mut req = server.url().into_client_request().unwrap();
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", server.token("alice")).parse().unwrap(),
    );
    let (mut ws, resp) = tokio_tungstenite::connect_async(req).await.unwrap();
    assert_eq!(resp.status().as_u16(), 101);
    use futures_util::{SinkExt, StreamExt};
    ws.send(WsMessage::text(r#"{"action":"ping"}"#))
        .await
        .unwrap();
    let m = ws.next().await.unwrap().unwrap();
    assert_eq!(m.into_text().unwrap().as_str(), r#"{"type":"pong"}"#);
    server.stop().await;
}
