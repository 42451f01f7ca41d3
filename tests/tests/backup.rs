//! Backups of a real server's data under load (docs/operations.md, "Backup
//! and restore"): `conn-tier admin backup` through the running server's
//! admin socket, a SIGKILL, `verify`, `restore`, and a server on the
//! restored file.

use chat_tests::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::Command;

fn token(user: &str) -> String {
    chat_core::auth::Authenticator::new(SECRET)
        .unwrap()
        .mint(user, 600)
        .unwrap()
}

/// `conn-tier admin ARGS`: its exit status, stdout and stderr.
async fn admin(args: &[&str]) -> (bool, String, String) {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        Command::new(env!("CARGO_BIN_EXE_conn-tier"))
            .arg("admin")
            .args(args)
            .env_remove("CHAT_DATA_DIR")
            .output(),
    )
    .await
    .expect("the admin command ends")
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!stderr.contains("panicked"), "{stderr}");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
    )
}

/// One acked send: (conversation, id, client_msg_id, text).
type Acked = (String, u64, String, String);

/// Sends steadily (one at a time, each after the last ack, under the rate
/// limit) until `stop`, recording each ack.
async fn sender(
    url: String,
    user: &'static str,
    to: String,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<Acked>>>,
) {
    let mut c = TestClient::connect(&url, &token(user)).await.unwrap();
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        i += 1;
        let (cmid, text) = (format!("{user}-{i}"), format!("{user} says {i}"));
        c.send(json!({"action":"send","to":to,"client_msg_id":cmid,"text":text}))
            .await;
        let ack = loop {
            let f = c.recv().await;
            if f["type"] == "ack" {
                break f;
            }
        };
        assert_eq!(ack["client_msg_id"], cmid.as_str(), "{ack}");
        acked.lock().unwrap().push((
            ack["conversation_id"].as_str().unwrap().to_string(),
            ack["message_id"].as_u64().unwrap(),
            cmid,
            text,
        ));
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_load_then_a_kill_restores_every_message_acked_before_it_with_gapless_ids() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let (mut server, url) = spawn_embedded_server(env!("CARGO_BIN_EXE_conn-tier"), &data).await;
    // A group of three, two of whom post; and two direct chats.
    let mut erin = TestClient::connect(&url, &token("erin")).await.unwrap();
    let group = erin.create_group("team", &["frank", "gina"]).await;
    let gid = group["group_id"].as_str().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    let load: Vec<_> = [
        ("alice", "user:bob".to_string()),
        ("carol", "user:dave".to_string()),
        ("erin", format!("group:{gid}")),
        ("frank", format!("group:{gid}")),
    ]
    .into_iter()
    .map(|(user, to)| tokio::spawn(sender(url.clone(), user, to, stop.clone(), acked.clone())))
    .collect();
    tokio::time::sleep(Duration::from_millis(800)).await;
    // Every ack seen before the backup starts must be in it.
    let before: Vec<Acked> = acked.lock().unwrap().clone();
    assert!(before.len() > 20, "the load is running: {}", before.len());
    let file = dir.path().join("backup.redb");
    let (ok, out, err) = admin(&[
        "backup",
        "--data-dir",
        data.to_str().unwrap(),
        "--to",
        file.to_str().unwrap(),
        "--json",
    ])
    .await;
    assert!(ok, "{err}");
    assert!(
        !err.contains("no server answers"),
        "taken through the running server: {err}"
    );
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    let hash = report["hash"].as_str().unwrap().to_string();
    // While the server runs, its data directory cannot be restored over.
    let (ok, _, err) = admin(&[
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
        "--force",
    ])
    .await;
    assert!(!ok);
    assert!(err.contains("in use by a running chat server"), "{err}");
    // The load goes on after the backup, then the server is killed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    let all: Vec<Acked> = acked.lock().unwrap().clone();
    assert!(all.len() > before.len(), "acks came after the backup");

    let (ok, out, err) = admin(&["verify", file.to_str().unwrap(), "--json"]).await;
    assert!(ok, "{out} {err}");
    let verified: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(verified["hash"], hash.as_str());
    assert_eq!(verified["recorded_hash"], hash.as_str());
    let restored = dir.path().join("restored");
    let (ok, _, err) = admin(&[
        "restore",
        file.to_str().unwrap(),
        "--data-dir",
        restored.to_str().unwrap(),
    ])
    .await;
    assert!(ok, "{err}");

    let (_server, url) = spawn_embedded_server(env!("CARGO_BIN_EXE_conn-tier"), &restored).await;
    // What each conversation holds after the restore, by id.
    let mut held: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for reader in ["bob", "dave", "gina"] {
        let mut c = TestClient::connect(&url, &token(reader)).await.unwrap();
        for m in c.sync().await {
            let conv = m["conversation_id"].as_str().unwrap().to_string();
            held.entry(conv).or_default().push(m);
        }
    }
    let count = |held: &BTreeMap<String, Vec<Value>>, conv: &str| {
        held.get(conv).map(|v| v.len()).unwrap_or(0) as u64
    };
    for (conv, msgs) in &held {
        let ids: Vec<u64> = msgs
            .iter()
            .map(|m| m["message_id"].as_u64().unwrap())
            .collect();
        assert_eq!(
            ids,
            (1..=ids.len() as u64).collect::<Vec<_>>(),
            "{conv}: a gap"
        );
    }
    for (conv, id, cmid, text) in &before {
        let m = &held[conv][(*id - 1) as usize];
        assert_eq!(m["text"], text.as_str(), "{conv}/{id}");
        assert_eq!(m["from"], cmid.split('-').next().unwrap());
    }
    // Replaying every send acked after the backup (as a client does with
    // its record of acks): each is stored once more, and each conversation's
    // ids carry on from the backup's without a gap.
    let mut replay: BTreeMap<&str, Vec<&Acked>> = BTreeMap::new();
    for a in &all {
        if a.1 > count(&held, &a.0) {
            let user = a.2.split('-').next().unwrap();
            replay.entry(user).or_default().push(a);
        }
    }
    assert!(!replay.is_empty(), "some sends were acked after the backup");
    for (user, sends) in replay {
        let mut c = TestClient::connect(&url, &token(user)).await.unwrap();
        for (conv, _, cmid, text) in sends {
            let to = match conv.strip_prefix("grp#") {
                Some(g) => format!("group:{g}"),
                None => format!(
                    "user:{}",
                    conv.trim_start_matches("dm#")
                        .split('#')
                        .find(|u| *u != user)
                        .unwrap()
                ),
            };
            c.send(json!({"action":"send","to":to,"client_msg_id":cmid,"text":text}))
                .await;
            let ack = loop {
                let f = c.recv().await;
                if f["type"] == "ack" {
                    break f;
                }
            };
            let next = count(&held, conv) + 1;
            assert_eq!(ack["message_id"], next, "{ack}");
            held.entry(conv.clone()).or_default().push(ack);
        }
    }
    let per_conv = |acks: &[Acked]| {
        let mut n: BTreeMap<String, u64> = BTreeMap::new();
        for a in acks {
            *n.entry(a.0.clone()).or_default() += 1;
        }
        n
    };
    for (conv, n) in per_conv(&all) {
        assert_eq!(count(&held, &conv), n, "{conv}: every acked send once");
    }
}
