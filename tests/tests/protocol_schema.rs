//! The machine-readable protocol: docs/asyncapi.yaml and docs/schemas/*.json
//! are what chat-core's serde types generate (run with `UPDATE_SCHEMAS=1` to
//! rewrite them after changing a frame), and real frames of a session that
//! produces every kind validate against them. Every frame any end-to-end
//! test receives is checked too (`TestClient`).

use chat_core::protocol::schema;
use chat_tests::*;
use serde_json::{json, Value};
use std::path::PathBuf;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Compares a committed file with what the code generates (or rewrites it).
fn committed(path: &str, generated: &str) {
    let file = root().join(path);
    if std::env::var_os("UPDATE_SCHEMAS").is_some() {
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, generated).unwrap();
        return;
    }
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        text == generated,
        "{path} is not what the serde types generate: run UPDATE_SCHEMAS=1 cargo test -p chat-tests --test protocol_schema"
    );
}

#[test]
fn the_committed_asyncapi_document_and_schemas_are_the_generated_ones() {
    let doc = schema::asyncapi();
    let yaml = format!(
        "# Generated from chat-core's serde types (protocol::schema); do not edit.\n# Regenerate: UPDATE_SCHEMAS=1 cargo test -p chat-tests --test protocol_schema\n{}",
        serde_yaml::to_string(&doc).unwrap()
    );
    committed("docs/asyncapi.yaml", &yaml);
    let pretty = |v: Value| serde_json::to_string_pretty(&v).unwrap() + "\n";
    committed(
        "docs/schemas/client-frame.json",
        &pretty(schema::client_frame()),
    );
    committed(
        "docs/schemas/server-frame.json",
        &pretty(schema::server_frame()),
    );
    // It parses back, and is an AsyncAPI 3 document with both messages.
    let back: Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(back["asyncapi"], "3.0.0");
    assert!(back["components"]["messages"]["clientFrame"]["payload"].is_object());
    assert!(back["components"]["messages"]["serverFrame"]["payload"].is_object());
}

#[test]
fn client_frames_of_the_protocol_document_validate_and_bad_ones_do_not() {
    let v = jsonschema::validator_for(&schema::client_frame()).unwrap();
    for f in [
        json!({"action":"send","to":"user:bob","client_msg_id":"c-1","text":"hi"}),
        json!({"action":"ack","conversation_id":"dm#alice#bob","up_to":42}),
        json!({"action":"sync"}),
        json!({"action":"history","conversation_id":"dm#alice#bob","before":100,"limit":50}),
        json!({"action":"conversations","limit":50,"cursor":"grp#x"}),
        json!({"action":"createGroup","name":"team","members":["bob","carol"]}),
        json!({"action":"addMember","group_id":"g","user_id":"dave"}),
        json!({"action":"removeMember","group_id":"g","user_id":"dave"}),
        json!({"action":"ping"}),
    ] {
        assert!(v.is_valid(&f), "{f}");
    }
    for f in [
        json!({"action":"nope"}),
        json!({"action":"send","to":"user:bob"}),
        json!({"action":"ack","conversation_id":"c","up_to":"many"}),
        json!({"to":"user:bob"}),
    ] {
        assert!(!v.is_valid(&f), "{f}");
    }
}

#[tokio::test]
async fn a_session_producing_every_server_frame_validates_against_the_schema() {
    let v = jsonschema::validator_for(&schema::server_frame()).unwrap();
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let mut seen: Vec<Value> = Vec::new();
    seen.push(alice.send_text("user:bob", "hi").await); // ack
    seen.push(bob.expect("message").await);
    bob.send(json!({"action":"ack","conversation_id":"dm#alice#bob","up_to":1}))
        .await;
    seen.push(alice.expect("receipt").await);
    seen.push(alice.create_group("team", &["bob"]).await); // group
    seen.push(bob.expect("group").await);
    seen.push(bob.history("dm#alice#bob", None, None).await);
    bob.send(json!({"action":"conversations"})).await;
    seen.push(bob.expect("conversations").await);
    bob.send(json!({"action":"ping"})).await;
    seen.push(bob.expect("pong").await);
    bob.send(json!({"action":"nope"})).await;
    seen.push(bob.expect("error").await);
    let mut carol = server.raw_client("carol").await;
    carol.send(json!({"action":"sync"})).await;
    seen.push(carol.expect("synced").await);
    let mut types: Vec<&str> = Vec::new();
    for f in &seen {
        let errors: Vec<String> = v.iter_errors(f).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{f}: {errors:?}");
        types.push(f["type"].as_str().unwrap());
    }
    types.sort();
    types.dedup();
    assert_eq!(types.len(), 9, "every kind of server frame: {types:?}");
    // A frame the schema does not describe is refused by it.
    assert!(!v.is_valid(&json!({"type":"ack","client_msg_id":"x"})));
    assert!(!v.is_valid(&json!({"type":"surprise"})));
    server.stop().await;
}
