//! Each handler with real API Gateway WebSocket event fixtures and
//! `Context::default()`, against the store `TEST_STORE` names (memory by
//! default; `dynamodb` runs them on the emulator with fresh tables).

use async_trait::async_trait;
use chat_core::auth::Authenticator;
use chat_core::ports::{ConnectionRecord, Connections, Delivery, Outgoing, PostError};
use chat_lambdas::{authorize, Deps};
use lambda_runtime::{Context, LambdaEvent};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::sync::{Arc, Mutex};

const ENDPOINT: &str = "https://abcdef123.execute-api.eu-west-1.amazonaws.com/test";

/// Records every post; connections in `gone` answer 410.
#[derive(Default)]
struct Recorder {
    posts: Mutex<Vec<(String, Value)>>,
    gone: Mutex<HashSet<String>>,
}

impl Recorder {
    fn to(&self, conn: &str) -> Vec<Value> {
        self.posts
            .lock()
            .unwrap()
            .iter()
            .filter(|(c, _)| c == conn)
            .map(|(_, f)| f.clone())
            .collect()
    }
    fn count(&self) -> usize {
        self.posts.lock().unwrap().len()
    }
}

#[async_trait]
impl Delivery for Recorder {
    async fn post(&self, c: &ConnectionRecord, frame: &Outgoing) -> Result<(), PostError> {
        if self.gone.lock().unwrap().contains(&c.connection_id) {
            return Err(PostError::Gone);
        }
        assert_eq!(c.endpoint, ENDPOINT, "posted to the wrong endpoint");
        self.posts.lock().unwrap().push((
            c.connection_id.clone(),
            serde_json::from_str(frame.text()).unwrap(),
        ));
        Ok(())
    }
}

struct Rig {
    deps: Deps,
    rec: Arc<Recorder>,
    conns: Arc<dyn Connections>,
    _dir: tempfile::TempDir,
}

async fn rig() -> Rig {
    rig_with_grace(0).await
}

async fn rig_with_grace(grace_ms: u64) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let kind = std::env::var("TEST_STORE").unwrap_or_else(|_| "memory".into());
    let (store, conns) = if kind == "dynamodb" {
        let tables = chat_dynamo::testing::fresh().await;
        (
            Arc::new(chat_dynamo::DynamoStore::new(&tables)) as Arc<dyn chat_core::ports::Store>,
            Arc::new(chat_dynamo::DynamoConnections::new(&tables)) as Arc<dyn Connections>,
        )
    } else {
        (
            Arc::new(chat_core::memory::MemoryStore::new()) as Arc<dyn chat_core::ports::Store>,
            Arc::new(chat_core::memory::MemoryConnections::new()) as Arc<dyn Connections>,
        )
    };
    let rec = Arc::new(Recorder::default());
    // Grace 0: a connection that has not synced is live at once.
    let deps = Deps::new(store, conns.clone(), rec.clone(), None, grace_ms);
    Rig {
        deps,
        rec,
        conns,
        _dir: dir,
    }
}

fn fixture(name: &str) -> Value {
    let text = match name {
        "authorizer" => include_str!("fixtures/authorizer-request.json"),
        "connect" => include_str!("fixtures/connect-event.json"),
        "message" => include_str!("fixtures/message-event.json"),
        "disconnect" => include_str!("fixtures/disconnect-event.json"),
        "stream" => include_str!("fixtures/stream-insert.json"),
        _ => unreachable!(),
    };
    serde_json::from_str(text).unwrap()
}

/// A WebSocket event for `user` on `conn`, with `body` for MESSAGE events.
fn ws_event(
    kind: &str,
    user: &str,
    conn: &str,
    body: Option<Value>,
) -> aws_lambda_events::apigw::ApiGatewayWebsocketProxyRequest {
    let mut v = fixture(kind);
    v["requestContext"]["connectionId"] = json!(conn);
    v["requestContext"]["authorizer"] = json!({"principalId": user, "user_id": user});
    if let Some(b) = body {
        v["requestContext"]["routeKey"] = b["action"].clone();
        v["body"] = json!(b.to_string());
    }
    let event = LambdaEvent::new(
        serde_json::from_value(v).expect("fixture deserializes"),
        Context::default(),
    );
    event.payload
}

async fn connect(r: &Rig, user: &str, conn: &str) {
    chat_lambdas::connect(&r.deps, ws_event("connect", user, conn, None))
        .await
        .unwrap();
}

async fn say(r: &Rig, user: &str, conn: &str, body: Value) {
    let resp = chat_lambdas::message(&r.deps, ws_event("message", user, conn, Some(body)))
        .await
        .unwrap();
    assert_eq!(resp.status_code, 200);
}

#[test]
fn the_authorizer_allows_a_valid_token_with_the_user_in_context_and_denies_the_rest() {
    let auth = Authenticator::new(b"lambda-secret-of-at-least-32-bytes").unwrap();
    let event = |token: &str| {
        let mut v = fixture("authorizer");
        v["queryStringParameters"]["token"] = json!(token);
        LambdaEvent::new(serde_json::from_value(v).unwrap(), Context::default()).payload
    };
    let allowed =
        serde_json::to_value(authorize(&auth, &event(&auth.mint("alice", 60).unwrap()))).unwrap();
    assert_eq!(allowed["principalId"], "alice");
    assert_eq!(allowed["context"]["user_id"], "alice");
    assert_eq!(allowed["policyDocument"]["Statement"][0]["Effect"], "Allow");
    assert_eq!(
        allowed["policyDocument"]["Statement"][0]["Resource"][0],
        "arn:aws:execute-api:eu-west-1:123456789012:abcdef123/test/$connect"
    );
    let other = Authenticator::new(b"another-secret-of-at-least-32-bytes").unwrap();
    for bad in [
        "garbage",
        &auth.mint("alice", -3600).unwrap(),
        &other.mint("alice", 60).unwrap(),
    ] {
        let denied = serde_json::to_value(authorize(&auth, &event(bad))).unwrap();
        assert_eq!(
            denied["policyDocument"]["Statement"][0]["Effect"], "Deny",
            "{bad}"
        );
        assert_eq!(denied["context"], json!({}));
    }
    let mut v = fixture("authorizer");
    v["queryStringParameters"] = json!({});
    let no_token = LambdaEvent::new(serde_json::from_value(v).unwrap(), Context::default()).payload;
    let denied = serde_json::to_value(authorize(&auth, &no_token)).unwrap();
    assert_eq!(denied["policyDocument"]["Statement"][0]["Effect"], "Deny");
}

#[tokio::test]
async fn connect_records_the_connection_with_its_callback_endpoint_and_disconnect_forgets_it() {
    let r = rig().await;
    connect(&r, "alice", "conn-a").await;
    let rec = r.conns.get("conn-a").await.unwrap().expect("recorded");
    assert_eq!(
        (rec.user_id.as_str(), rec.endpoint.as_str()),
        ("alice", ENDPOINT)
    );
    chat_lambdas::disconnect(&r.deps, ws_event("disconnect", "alice", "conn-a", None))
        .await
        .unwrap();
    assert_eq!(r.conns.get("conn-a").await.unwrap(), None);
}

#[tokio::test]
async fn send_posts_the_ack_to_the_caller_and_leaves_message_delivery_to_fanout() {
    let r = rig().await;
    connect(&r, "alice", "conn-a").await;
    connect(&r, "bob", "conn-b").await;
    say(
        &r,
        "alice",
        "conn-a",
        json!({"action":"send","to":"user:bob","client_msg_id":"c-1","text":"hi"}),
    )
    .await;
    let acks = r.rec.to("conn-a");
    assert_eq!(acks.len(), 1);
    assert_eq!(acks[0]["type"], "ack");
    assert_eq!(acks[0]["message_id"], 1);
    assert!(
        r.rec.to("conn-b").is_empty(),
        "bob's copy comes from the stream-fed fanout"
    );
    // bob can read it at once.
    say(
        &r,
        "bob",
        "conn-b",
        json!({"action":"history","conversation_id":"dm#alice#bob"}),
    )
    .await;
    assert_eq!(r.rec.to("conn-b")[0]["messages"][0]["text"], "hi");
}

#[tokio::test]
async fn fanout_delivers_a_stream_insert_to_every_member_connection_except_the_sender() {
    let r = rig().await;
    connect(&r, "alice", "Bq9lLcGXliACGfw=").await; // the fixture's origin
    connect(&r, "alice", "alice-laptop").await;
    connect(&r, "bob", "bob-phone").await;
    connect(&r, "carol", "carol-phone").await;
    let event: aws_lambda_events::dynamodb::Event =
        serde_json::from_value(fixture("stream")).unwrap();
    let out = chat_lambdas::fanout(&r.deps, LambdaEvent::new(event, Context::default()).payload)
        .await
        .unwrap();
    assert_eq!(out["delivered"], 2);
    assert!(
        r.rec.to("Bq9lLcGXliACGfw=").is_empty(),
        "the sending connection got the ack instead"
    );
    for c in ["alice-laptop", "bob-phone"] {
        let got = r.rec.to(c);
        assert_eq!(got.len(), 1, "{c}");
        assert_eq!(got[0]["type"], "message");
        assert_eq!(
            (
                got[0]["from"].as_str(),
                got[0]["text"].as_str(),
                got[0]["message_id"].as_u64()
            ),
            (Some("alice"), Some("hi"), Some(1))
        );
    }
    assert!(r.rec.to("carol-phone").is_empty(), "not a member");
}

#[tokio::test]
async fn a_gone_connection_is_pruned_and_the_rest_of_the_broadcast_goes_on() {
    let r = rig().await;
    for (u, c) in [
        ("alice", "a1"),
        ("bob", "b1"),
        ("carol", "c1"),
        ("carol", "c2"),
        ("dave", "d1"),
    ] {
        connect(&r, u, c).await;
    }
    say(
        &r,
        "alice",
        "a1",
        json!({"action":"createGroup","name":"team","members":["bob","carol","dave"]}),
    )
    .await;
    let gid = r.rec.to("a1")[0]["group_id"].as_str().unwrap().to_string();
    let before = r.rec.count();
    r.rec.gone.lock().unwrap().insert("c1".into());
    let image = json!({
        "conversation_id": {"S": format!("grp#{gid}")}, "message_id": {"N": "1"}, "sender": {"S": "alice"},
        "client_msg_id": {"S": "g-1"}, "text": {"S": "hello team"}, "sent_at": {"N": "1795946401000"}, "origin": {"S": "a1"}
    });
    let mut event = fixture("stream");
    event["Records"][0]["dynamodb"]["NewImage"] = image;
    let event: aws_lambda_events::dynamodb::Event = serde_json::from_value(event).unwrap();
    let out = chat_lambdas::fanout(&r.deps, LambdaEvent::new(event, Context::default()).payload)
        .await
        .unwrap();
    assert_eq!(out["delivered"], 3, "b1, c2 and d1");
    assert_eq!(r.rec.count() - before, 3);
    assert_eq!(r.rec.to("c2").last().unwrap()["text"], "hello team");
    // Only the stale connection was pruned: not the sender's, not carol's other one.
    assert_eq!(r.conns.get("c1").await.unwrap(), None);
    for c in ["a1", "b1", "c2", "d1"] {
        assert!(r.conns.get(c).await.unwrap().is_some(), "{c} kept");
    }
}

#[tokio::test]
async fn the_default_route_answers_bad_request_and_stores_nothing() {
    let r = rig().await;
    connect(&r, "alice", "conn-a").await;
    say(&r, "alice", "conn-a", json!({"action":"teleport"})).await;
    let mut v = fixture("message");
    v["requestContext"]["routeKey"] = json!("$default");
    v["requestContext"]["connectionId"] = json!("conn-a");
    v["body"] = json!("{not json");
    let e = LambdaEvent::new(serde_json::from_value(v).unwrap(), Context::default()).payload;
    chat_lambdas::message(&r.deps, e).await.unwrap();
    let got = r.rec.to("conn-a");
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|f| f["type"] == "error" && f["code"] == "bad_request"),
        "{got:?}"
    );
    say(&r, "alice", "conn-a", json!({"action":"conversations"})).await;
    assert_eq!(r.rec.to("conn-a")[2]["items"], json!([]));
}

#[tokio::test]
async fn an_event_without_authorizer_context_uses_the_connection_record_or_fails_cleanly() {
    let r = rig().await;
    connect(&r, "alice", "conn-a").await;
    let mut v = fixture("message");
    v["requestContext"]["connectionId"] = json!("conn-a");
    v["requestContext"]["authorizer"] = Value::Null;
    let e = LambdaEvent::new(
        serde_json::from_value(v.clone()).unwrap(),
        Context::default(),
    )
    .payload;
    chat_lambdas::message(&r.deps, e).await.unwrap();
    assert_eq!(r.rec.to("conn-a")[0]["type"], "ack");
    v["requestContext"]["connectionId"] = json!("never-connected");
    let e = LambdaEvent::new(serde_json::from_value(v).unwrap(), Context::default()).payload;
    assert!(chat_lambdas::message(&r.deps, e).await.is_err());
}

/// A stream event of `records`: (event name, message id) in conversation
/// dm#alice#bob, sent by alice from connection a1.
fn stream_batch(records: &[(&str, u64)]) -> aws_lambda_events::dynamodb::Event {
    let template = fixture("stream")["Records"][0].clone();
    let records: Vec<Value> = records
        .iter()
        .map(|(name, id)| {
            let mut r = template.clone();
            r["eventName"] = json!(name);
            r["dynamodb"]["Keys"]["message_id"] = json!({"N": id.to_string()});
            r["dynamodb"]["NewImage"]["message_id"] = json!({"N": id.to_string()});
            r["dynamodb"]["NewImage"]["text"] = json!({"S": format!("m{id}")});
            r["dynamodb"]["NewImage"]["origin"] = json!({"S": "a1"});
            if *name == "REMOVE" {
                r["dynamodb"]["NewImage"] = json!({});
            }
            r
        })
        .collect();
    serde_json::from_value(json!({ "Records": records })).unwrap()
}

#[tokio::test]
async fn fanout_delivers_a_batch_in_order_and_skips_records_that_are_not_inserts() {
    let r = rig().await;
    connect(&r, "alice", "a1").await;
    connect(&r, "bob", "b1").await;
    let event = stream_batch(&[
        ("INSERT", 1),
        ("INSERT", 2),
        ("MODIFY", 2),
        ("INSERT", 3),
        ("REMOVE", 1),
    ]);
    let out = chat_lambdas::fanout(&r.deps, event).await.unwrap();
    assert_eq!(out["delivered"], 3);
    let got: Vec<(u64, String)> = r
        .rec
        .to("b1")
        .iter()
        .map(|f| {
            (
                f["message_id"].as_u64().unwrap(),
                f["text"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![(1, "m1".into()), (2, "m2".into()), (3, "m3".into())]
    );
    assert!(r.rec.to("a1").is_empty(), "the sender's connection");
}

#[tokio::test]
async fn fanout_holds_messages_back_from_a_connection_until_its_first_sync_replayed_them() {
    // A long grace: a new connection that has not synced gets nothing live.
    let r = rig_with_grace(60_000).await;
    connect(&r, "alice", "a1").await;
    connect(&r, "bob", "b1").await;
    for (i, text) in ["one", "two"].iter().enumerate() {
        say(
            &r,
            "alice",
            "a1",
            json!({"action":"send","to":"user:bob","client_msg_id":format!("c{i}"),"text":text}),
        )
        .await;
    }
    chat_lambdas::fanout(&r.deps, stream_batch(&[("INSERT", 1)]))
        .await
        .unwrap();
    assert!(r.rec.to("b1").is_empty(), "pending: held back");
    // bob syncs: the replay brings 1 and 2, and he is live after it.
    say(&r, "bob", "b1", json!({"action":"sync"})).await;
    let frames = r.rec.to("b1");
    let kinds: Vec<String> = frames
        .iter()
        .map(|f| format!("{}{}", f["type"].as_str().unwrap(), f["message_id"]))
        .collect();
    assert_eq!(kinds, vec!["message1", "message2", "syncednull"]);
    let rec = r.conns.get("b1").await.unwrap().unwrap();
    assert_eq!(rec.sync, chat_core::ports::SyncState::Live);
    // The stream's late copy of 2 is not posted again; 3 is.
    chat_lambdas::fanout(&r.deps, stream_batch(&[("INSERT", 2), ("INSERT", 3)]))
        .await
        .unwrap();
    let after: Vec<u64> = r.rec.to("b1")[3..]
        .iter()
        .map(|f| f["message_id"].as_u64().unwrap())
        .collect();
    assert_eq!(after, vec![3]);
}

#[tokio::test]
async fn past_the_sync_grace_a_connection_that_never_syncs_gets_live_messages_in_order() {
    // The grace as deployed (1 s): within it, a connection that has not
    // synced gets nothing live; past it, what comes from then on, in order.
    let r = rig_with_grace(1000).await;
    connect(&r, "alice", "a1").await;
    connect(&r, "bob", "b1").await;
    let send = |i: u64| json!({"action":"send","to":"user:bob","client_msg_id":format!("g{i}"),"text":format!("m{i}")});
    say(&r, "alice", "a1", send(1)).await;
    chat_lambdas::fanout(&r.deps, stream_batch(&[("INSERT", 1)]))
        .await
        .unwrap();
    assert!(r.rec.to("b1").is_empty(), "within the grace: held back");
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    for i in 2..=4 {
        say(&r, "alice", "a1", send(i)).await;
    }
    chat_lambdas::fanout(
        &r.deps,
        stream_batch(&[("INSERT", 2), ("INSERT", 3), ("INSERT", 4)]),
    )
    .await
    .unwrap();
    let ids: Vec<u64> = r
        .rec
        .to("b1")
        .iter()
        .map(|f| f["message_id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![2, 3, 4],
        "from then on, in order, no gap after the first"
    );
}

#[tokio::test]
async fn an_invocation_writes_its_metrics_as_one_embedded_metric_format_line() {
    let emf = chat_lambdas::emf::recorder();
    let r = rig().await;
    connect(&r, "alice", "conn-emf-a").await;
    connect(&r, "bob", "conn-emf-b").await;
    let _ = emf.take("setup");
    let ((), line) = chat_lambdas::emf::metered_line(
        "send",
        say(
            &r,
            "alice",
            "conn-emf-a",
            json!({"action":"send","to":"user:bob","client_msg_id":"emf-1","text":"hi"}),
        ),
    )
    .await;
    // Other tests of this binary record too: the line has at least ours.
    let parsed: Value = serde_json::from_str(&line.expect("a line").to_string()).unwrap();
    assert_eq!(parsed["function"], "send");
    let def = &parsed["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(def["Namespace"], "chat");
    assert_eq!(def["Dimensions"], json!([["function"]]));
    let names: Vec<&str> = def["Metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Name"].as_str().unwrap())
        .collect();
    for name in ["chat_messages_stored_total", "chat_send_ack_seconds"] {
        assert!(names.contains(&name), "{names:?}");
    }
    assert!(parsed["chat_messages_stored_total"].as_u64().unwrap() >= 1);
    assert!(parsed["chat_send_ack_seconds"]
        .as_array()
        .is_some_and(|v| !v.is_empty()));
    assert!(parsed["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    // Taken: the next line starts from zero.
    assert!(emf
        .take("send")
        .is_none_or(|l| l.get("chat_messages_stored_total").is_none()));
}
