//! `history` at its edges: `before` at the start, a page that exactly
//! exhausts the history, the default and the bounds of `limit`, and a
//! member who joined late.

use chat_tests::*;
use serde_json::{json, Value};

const DM: &str = "dm#alice#bob";

/// Sends the texts "m1" to "m{n}" from `c` to `to`, pipelined, and checks
/// that each is acked with the next id.
async fn send_many(c: &mut TestClient, to: &str, n: u64) {
    for i in 1..=n {
        c.send(
            json!({"action":"send","to":to,"client_msg_id":format!("h{i}"),"text":format!("m{i}")}),
        )
        .await;
    }
    for i in 1..=n {
        let ack = c.expect("ack").await;
        let want = format!("h{i}");
        assert_eq!(
            (ack["client_msg_id"].as_str(), ack["message_id"].as_u64()),
            (Some(want.as_str()), Some(i)),
            "{ack}"
        );
    }
}

/// A `history` frame's ids and `has_more`.
fn page(h: &Value) -> (Vec<u64>, bool) {
    assert_eq!(h["type"], "history", "{h}");
    (
        ids(h["messages"].as_array().expect("messages")),
        h["has_more"].as_bool().expect("has_more"),
    )
}

/// A `history` frame's texts.
fn texts(h: &Value) -> Vec<String> {
    h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| m["text"].as_str().expect("text").to_string())
        .collect()
}

#[tokio::test]
async fn history_before_the_first_message_is_an_empty_page_with_nothing_more() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    send_many(&mut alice, "user:bob", 3).await;
    let h = alice.history(DM, Some(1), None).await;
    assert_eq!(
        h,
        json!({"type":"history","conversation_id":DM,"messages":[],"has_more":false})
    );
    server.stop().await;
}

#[tokio::test]
async fn a_page_that_exactly_exhausts_the_history_has_no_more() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    send_many(&mut alice, "user:bob", 6).await;
    let h = alice.history(DM, Some(4), Some(3)).await;
    assert_eq!(page(&h), (vec![1, 2, 3], false));
    assert_eq!(texts(&h), ["m1", "m2", "m3"]);
    // One id short of the start there is more.
    let h = alice.history(DM, Some(5), Some(3)).await;
    assert_eq!(page(&h), (vec![2, 3, 4], true));
    // From the newest, a limit of exactly the count has no more either.
    let h = alice.history(DM, None, Some(6)).await;
    assert_eq!(page(&h), ((1..=6).collect::<Vec<u64>>(), false));
    server.stop().await;
}

#[tokio::test]
async fn history_without_a_limit_returns_the_newest_50() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    send_many(&mut alice, "user:bob", 55).await;
    let h = alice.history(DM, None, None).await;
    assert_eq!(page(&h), ((6..=55).collect::<Vec<u64>>(), true));
    assert_eq!(
        texts(&h),
        (6..=55).map(|i| format!("m{i}")).collect::<Vec<String>>()
    );
    server.stop().await;
}

#[tokio::test]
async fn history_limits_1_and_100_are_honoured_and_0_and_101_are_bad_requests() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    send_many(&mut alice, "user:bob", 55).await;

    let h = alice.history(DM, None, Some(1)).await;
    assert_eq!(page(&h), (vec![55], true));
    assert_eq!(texts(&h), ["m55"]);
    let h = alice.history(DM, None, Some(100)).await;
    assert_eq!(page(&h), ((1..=55).collect::<Vec<u64>>(), false));

    for limit in [0u32, 101] {
        let e = alice.history(DM, None, Some(limit)).await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str(), e["action"].as_str()),
            (Some("error"), Some("bad_request"), Some("history")),
            "limit {limit}: {e}"
        );
    }
    // The connection stays open and answers the next request.
    let h = alice.history(DM, Some(2), Some(100)).await;
    assert_eq!(page(&h), (vec![1], false));
    server.stop().await;
}

#[tokio::test]
async fn a_member_added_later_may_read_the_whole_group_history() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let gid = alice.create_group("late", &["bob"]).await["group_id"]
        .as_str()
        .unwrap()
        .to_string();
    let conv = format!("grp#{gid}");
    send_many(&mut alice, &format!("group:{gid}"), 3).await;
    alice
        .send(json!({"action":"addMember","group_id":gid,"user_id":"dave"}))
        .await;
    assert_eq!(
        alice.expect("group").await["members"],
        json!(["alice", "bob", "dave"])
    );

    let mut dave = server.client("dave").await;
    let h = dave.history(&conv, None, None).await;
    assert_eq!(h["conversation_id"], conv.as_str());
    assert_eq!(page(&h), (vec![1, 2, 3], false));
    assert_eq!(texts(&h), ["m1", "m2", "m3"]);
    assert!(h["messages"]
        .as_array()
        .unwrap()
        .iter()
        .all(|m| m["from"] == "alice"));
    // History is the whole group; sync is only what came after joining.
    assert!(dave.sync().await.is_empty());
    server.stop().await;
}
