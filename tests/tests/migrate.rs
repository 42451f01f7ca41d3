//! The move from one node to a cluster (docs/operations.md, "Export and
//! import"): a real embedded server's data exported, imported into
//! DynamoDB (the emulator), exported again unchanged, and served by a
//! cluster of two nodes that carries every conversation on; and an import
//! killed half-way, run again.

use chat_tests::cluster::ClusterUnderTest;
use chat_tests::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_conn-tier");

fn token(user: &str) -> String {
    chat_core::auth::Authenticator::new(SECRET)
        .unwrap()
        .mint(user, 600)
        .unwrap()
}

/// `conn-tier admin ARGS`, which must succeed; its JSON report.
async fn admin(args: &[&str]) -> Value {
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        Command::new(BIN)
            .arg("admin")
            .args(args)
            .arg("--json")
            .output(),
    )
    .await
    .expect("the admin command ends")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "conn-tier admin {args:?}: {stderr}");
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn export_dynamodb(prefix: &str, to: &Path) {
    let to = to.to_str().unwrap();
    admin(&[
        "export",
        "--store",
        "dynamodb",
        "--table-prefix",
        prefix,
        "--to",
        to,
    ])
    .await;
}

async fn import_dynamodb(prefix: &str, input: &Path) -> Value {
    let input = input.to_str().unwrap();
    admin(&[
        "import",
        input,
        "--store",
        "dynamodb",
        "--table-prefix",
        prefix,
    ])
    .await
}

/// A stream's records, header left out, sorted.
fn records(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines: Vec<String> = text.lines().skip(1).map(str::to_string).collect();
    lines.sort();
    lines
}

async fn ack(c: &mut TestClient) -> Value {
    loop {
        let f = c.recv().await;
        if f["type"] == "ack" {
            return f;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_server_moves_to_a_two_node_cluster_with_its_history_and_its_ids_carry_on() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // One node, embedded: a direct chat, a group, a watermark.
    let (mut server, url) = spawn_embedded_server(env!("CARGO_BIN_EXE_conn-tier"), &data).await;
    let mut alice = TestClient::connect(&url, &token("alice")).await.unwrap();
    for i in 1..=30 {
        alice
            .send(json!({"action":"send","to":"user:bob","client_msg_id":format!("a{i}"),"text":format!("old {i}")}))
            .await;
        ack(&mut alice).await;
    }
    let mut erin = TestClient::connect(&url, &token("erin")).await.unwrap();
    let gid = erin.create_group("team", &["frank", "gina"]).await["group_id"]
        .as_str()
        .unwrap()
        .to_string();
    for i in 1..=12 {
        erin.send(json!({"action":"send","to":format!("group:{gid}"),"client_msg_id":format!("e{i}"),"text":format!("team {i}")}))
            .await;
        ack(&mut erin).await;
    }
    let mut bob = TestClient::connect(&url, &token("bob")).await.unwrap();
    bob.send(json!({"action":"ack","conversation_id":"dm#alice#bob","up_to":10}))
        .await;
    bob.send(json!({"action":"ping"})).await;
    loop {
        if bob.recv().await["type"] == "pong" {
            break;
        }
    }
    // Stopped as the runbook says (SIGTERM).
    let pid = server.id().unwrap().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(server.wait().await.unwrap().success());

    // Out of the embedded store, into DynamoDB, and out again: the same.
    let first = dir.path().join("first.jsonl");
    admin(&[
        "export",
        "--from",
        data.to_str().unwrap(),
        "--to",
        first.to_str().unwrap(),
    ])
    .await;
    let prefix = fresh_tables().await.unwrap();
    let imported = import_dynamodb(&prefix, &first).await;
    assert_eq!(imported["loaded"]["message"], 42, "{imported}");
    let second = dir.path().join("second.jsonl");
    export_dynamodb(&prefix, &second).await;
    assert_eq!(records(&second), records(&first));

    // A cluster on the imported tables serves the old history and carries
    // each conversation on.
    let cluster =
        ClusterUnderTest::start_on_tables(BIN, 2, &[], vec![vec![], vec![]], prefix).await;
    let mut bob = TestClient::connect(&cluster.node_url(1), &token("bob"))
        .await
        .unwrap();
    let missed = bob.sync().await;
    let ids: Vec<u64> = missed
        .iter()
        .map(|m| m["message_id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ids,
        (11..=30).collect::<Vec<_>>(),
        "bob's watermark moved with the data"
    );
    assert_eq!(missed[0]["text"], "old 11");
    let mut alice = TestClient::connect(&cluster.node_url(0), &token("alice"))
        .await
        .unwrap();
    alice.sync().await;
    // A resend of a message from before the move is recognised...
    alice
        .send(json!({"action":"send","to":"user:bob","client_msg_id":"a30","text":"old 30"}))
        .await;
    assert_eq!(ack(&mut alice).await["message_id"], 30);
    // ...and a new one takes the next id, delivered on the other node.
    alice
        .send(
            json!({"action":"send","to":"user:bob","client_msg_id":"new","text":"after the move"}),
        )
        .await;
    assert_eq!(ack(&mut alice).await["message_id"], 31);
    let live = bob.expect("message").await;
    assert_eq!(live["message_id"], 31);
    let mut frank = TestClient::connect(&cluster.node_url(0), &token("frank"))
        .await
        .unwrap();
    let old = frank.sync().await;
    assert_eq!(old.len(), 12);
    frank
        .send(json!({"action":"send","to":format!("group:{gid}"),"client_msg_id":"f1","text":"moved"}))
        .await;
    assert_eq!(ack(&mut frank).await["message_id"], 13);
    let mut gina = TestClient::connect(&cluster.node_url(1), &token("gina"))
        .await
        .unwrap();
    let got = gina.sync().await;
    let ids: Vec<u64> = got
        .iter()
        .map(|m| m["message_id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, (1..=13).collect::<Vec<_>>());
}

/// A stream of `n` messages over 40 conversations, with memberships.
fn stream(path: &Path, n: u64) {
    use chat_core::export::{Header, Record, EXPORT_FORMAT};
    let mut lines = Vec::new();
    let convs = 40;
    let mut counts = std::collections::BTreeMap::new();
    for c in 0..convs {
        lines.push(Record::Membership {
            user_id: format!("u{c}"),
            conversation_id: format!("dm#u{c}#v{c}"),
            acked_up_to: 0,
            joined_at_ms: 1,
            joined_at_id: 0,
        });
    }
    for i in 0..n {
        let c = i % convs;
        lines.push(Record::Message {
            conversation_id: format!("dm#u{c}#v{c}"),
            message_id: i / convs + 1,
            sender: format!("u{c}"),
            client_msg_id: format!("m{i}"),
            text: format!("message {i}"),
            sent_at_ms: i,
        });
    }
    counts.insert("membership".to_string(), convs);
    counts.insert("message".to_string(), n);
    let header = Record::Header(Header {
        format: EXPORT_FORMAT,
        source: "test".into(),
        exported_at_ms: 1,
        counts,
    });
    let text: String = std::iter::once(&header)
        .chain(&lines)
        .map(Record::line)
        .collect();
    std::fs::write(path, text).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_import_killed_half_way_and_run_again_lands_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.jsonl");
    stream(&input, 4_000);
    let prefix = fresh_tables().await.unwrap();
    let mut first = Command::new(BIN)
        .args(["admin", "import"])
        .arg(&input)
        .args(["--store", "dynamodb", "--table-prefix", &prefix])
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Killed once it has written its first batches.
    let mut lines = BufReader::new(first.stderr.take().unwrap()).lines();
    tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = lines.next_line().await.unwrap() {
            if l.starts_with("records: ") {
                return;
            }
        }
        panic!("the import ended before any progress");
    })
    .await
    .expect("progress within 60 s");
    first.start_kill().unwrap();
    let status = first.wait().await.unwrap();
    assert_eq!(status.code(), None, "killed before it finished: {status:?}");
    let again = import_dynamodb(&prefix, &input).await;
    assert!(again["resumed_after_line"].as_u64().unwrap() > 1, "{again}");
    let loaded: u64 = again["loaded"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert!(
        loaded < 4_040,
        "the re-run wrote only what was left: {again}"
    );
    let out = dir.path().join("out.jsonl");
    export_dynamodb(&prefix, &out).await;
    assert_eq!(records(&out), records(&input));
}
