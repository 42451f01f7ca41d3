//! The whole AWS path on one machine: a WebSocket client talks to conn-tier
//! standing in for API Gateway; conn-tier invokes the real Lambda binaries
//! through `cargo lambda watch`; the functions use DynamoDB on the emulator
//! and deliver back through conn-tier's `@connections` API; the messages
//! table's stream feeds `fanout`.
//!
//! Needs the emulator and cargo-lambda (`scripts/test-all` provides both).

use chat_core::ports::{ConnectionRecord, Connections};
use chat_core::tasks::Tasks;
use chat_local_apigw::lambda::LambdaBackend;
use chat_local_apigw::stream::poll_stream;
use chat_tests::*;
use conn_tier::limits::SocketConfig;
use conn_tier::App;
use serde_json::json;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

/// Kills the whole process group of `cargo lambda watch` (it and the
/// function processes it started) when dropped.
struct Watch(tokio::process::Child);

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            // `--`: the negative number is the group, not an option.
            let group = format!("-{pid}");
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", "--", &group])
                .status();
        }
    }
}

/// `cargo lambda watch` serving the chat-lambdas binaries on `port`.
fn watch(port: u16, env: &[(&str, String)]) -> Watch {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut cmd = tokio::process::Command::new("cargo");
    cmd.current_dir(&root)
        .args([
            "lambda",
            "watch",
            "--ignore-changes",
            "--manifest-path",
            "functions/lambdas/Cargo.toml",
        ])
        .args(["-A", "127.0.0.1", "-P", &port.to_string()]);
    for (k, v) in env {
        cmd.args(["--env-var", &format!("{k}={v}")]);
    }
    // The functions' logs go to a file: the function processes may outlive
    // the watch for a moment, and must not write into the test's output.
    // Under scripts/test-all it is in the run's directory, with the process
    // group's id, so the run's cleanup stops the group even if this test
    // process is killed.
    let run_dir = std::env::var("CHAT_RUN_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let log_path = run_dir.join(format!("lambda-watch-{port}.log"));
    let log = std::fs::File::create(&log_path).expect("watch log file");
    eprintln!("cargo lambda watch logs: {}", log_path.display());
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("log file")))
        .stderr(Stdio::from(log))
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd
        .spawn()
        .expect("cargo lambda watch (scripts/ensure-cargo-lambda)");
    if let Some(pid) = child.id() {
        let _ = std::fs::write(
            run_dir.join(format!("lambda-watch-{port}.pgid")),
            pid.to_string(),
        );
    }
    Watch(child)
}

async fn free_port() -> u16 {
    tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_client_chats_through_conn_tier_and_the_real_lambda_binaries() {
    let prefix = fresh_tables().await.unwrap();
    let tables = chat_dynamo::connect(&prefix).await.unwrap();
    let mgmt = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mgmt_addr = mgmt.local_addr().unwrap();
    let port = free_port().await;
    let var = |k: &str, default: &str| std::env::var(k).unwrap_or_else(|_| default.to_string());
    let _watch = watch(
        port,
        &[
            ("CHAT_TABLE_PREFIX", prefix.clone()),
            ("CHAT_CALLBACK_URL", format!("http://{mgmt_addr}")),
            (
                "CHAT_JWT_SECRET",
                String::from_utf8(SECRET.to_vec()).unwrap(),
            ),
            (
                "AWS_ENDPOINT_URL",
                var("AWS_ENDPOINT_URL", "http://127.0.0.1:4566"),
            ),
            ("AWS_ACCESS_KEY_ID", var("AWS_ACCESS_KEY_ID", "test")),
            (
                "AWS_SECRET_ACCESS_KEY",
                var("AWS_SECRET_ACCESS_KEY", "test"),
            ),
            ("AWS_REGION", var("AWS_REGION", "us-east-1")),
            ("RUST_LOG", "info".into()),
        ],
    );
    for _ in 0..600 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let endpoint = format!("http://127.0.0.1:{port}");
    let backend =
        // The functions answer in ~50 ms, but under a loaded CI machine some
        // took over 4 s (their invokers gave up; the answers came back 500):
        // 10 s, and the busy-group scenario waits 45 s for a frame.
        Arc::new(
            LambdaBackend::new(Some(&endpoint), "", &mgmt_addr.to_string(), "local")
                .await
                .with_invoke_timeout(Duration::from_secs(10)),
        );
    let tasks = Arc::new(Tasks::new());
    let messages = tables.name(&chat_dynamo::schema::MESSAGES);
    let (poller, poll_tables) = (backend.clone(), tables.clone());
    tasks.spawn(move |stop| poll_stream(poller, poll_tables, messages, stop));
    // The functions keep order in Lambda mode: posts pass through.
    let hub = Arc::new(conn_tier::hub::Hub::new("lambda-node", false));
    let app = App::assemble(
        backend,
        hub,
        None,
        None,
        tasks,
        conn_tier::config::Settings {
            socket: SocketConfig::default(),
            management: Some(management_credential()),
            ..Default::default()
        },
    );
    let store: Arc<dyn chat_core::ports::Store> = Arc::new(chat_dynamo::DynamoStore::new(&tables));
    let connections: Arc<dyn Connections> = Arc::new(chat_dynamo::DynamoConnections::new(&tables));
    let auth = chat_core::auth::Authenticator::new(SECRET).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::serve_app_with(app, auth, store, connections.clone(), dir, mgmt).await;

    // Warm up as a client would: a cold authorizer answers 503 with
    // Retry-After (the first invoke may build or start the functions).
    let warm = std::time::Instant::now();
    loop {
        let url = format!("{}?token={}", server.url(), server.token("warmup"));
        match handshake_status(&url).await.unwrap() {
            101 => break,
            503 if warm.elapsed() < Duration::from_secs(300) => {
                tokio::time::sleep(Duration::from_secs(1)).await
            }
            other => panic!("warm-up handshake answered {other}"),
        }
    }
    eprintln!("functions warm after {:?}", warm.elapsed());
    // The authorizer function refuses bad tokens before the upgrade.
    assert_eq!(
        handshake_status(&format!("{}?token=garbage", server.url()))
            .await
            .unwrap(),
        401
    );
    assert_eq!(handshake_status(&server.url()).await.unwrap(), 401);

    // Clients sync first, as every client should: then they are live. The
    // first sync may start the function cold: allow for it once.
    let mut alice = server.raw_client("alice").await;
    alice.send(json!({"action":"sync"})).await;
    let synced = alice
        .try_recv(Duration::from_secs(300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(synced, json!({"type":"synced"}));
    let (mut bob, _) = server.syncing_client("bob").await;
    alice.send(json!({"action":"ping"})).await;
    assert_eq!(
        alice
            .try_recv(Duration::from_secs(300))
            .await
            .unwrap()
            .unwrap(),
        json!({"type":"pong"})
    );

    // A stale connection of bob's: its post answers 410 and it is pruned.
    connections
        .register(&ConnectionRecord {
            connection_id: "stale-connection".into(),
            user_id: "bob".into(),
            endpoint: format!("http://{mgmt_addr}"),
            connected_at_ms: 1,
            ..Default::default()
        })
        .await
        .unwrap();

    alice.send(json!({"action":"send","to":"user:bob","client_msg_id":"c-1","text":"hi bob, via Lambda"})).await;
    let ack = alice
        .try_recv(Duration::from_secs(300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ack["type"], "ack", "{ack}");
    assert_eq!(ack["message_id"], 1);
    let m = bob
        .try_recv(Duration::from_secs(300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (m["type"].as_str(), m["from"].as_str(), m["text"].as_str()),
        (Some("message"), Some("alice"), Some("hi bob, via Lambda"))
    );
    // The prune follows the 410 of a post that runs beside bob's.
    let mut pruned = false;
    for _ in 0..100 {
        if connections.get("stale-connection").await.unwrap().is_none() {
            pruned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(pruned, "the stale connection was pruned");
    alice.expect_silence(Duration::from_millis(500)).await;

    // Groups, fan-out to every member, history, receipts through the functions.
    let (mut carol, _) = server.syncing_client("carol").await;
    alice
        .send(json!({"action":"createGroup","name":"lambda team","members":["bob","carol"]}))
        .await;
    let g = alice
        .try_recv(Duration::from_secs(300))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g["type"], "group", "{g}");
    assert_eq!(bob.expect("group").await, g);
    assert_eq!(carol.expect("group").await, g);
    let gid = g["group_id"].as_str().unwrap().to_string();
    carol.send(json!({"action":"send","to":format!("group:{gid}"),"client_msg_id":"g-1","text":"hello all"})).await;
    assert_eq!(carol.expect("ack").await["message_id"], 1);
    assert_eq!(alice.expect("message").await["text"], "hello all");
    assert_eq!(bob.expect("message").await["text"], "hello all");

    bob.send(json!({"action":"history","conversation_id":"dm#alice#bob"}))
        .await;
    let h = bob.expect("history").await;
    assert_eq!(h["messages"][0]["text"], "hi bob, via Lambda");
    bob.send(json!({"action":"ack","conversation_id":"dm#alice#bob","up_to":1}))
        .await;
    assert_eq!(alice.expect("receipt").await["up_to"], 1);

    // conversations, addMember, removeMember, and a later sync.
    bob.send(json!({"action":"conversations"})).await;
    let c = bob.expect("conversations").await;
    let listed: Vec<(String, u64)> = c["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["conversation_id"].as_str().unwrap().to_string(),
                i["unread"].as_u64().unwrap(),
            )
        })
        .collect();
    // Ordered by conversation id, as the protocol says (`dm#` < `grp#`).
    let want = vec![("dm#alice#bob".to_string(), 0), (format!("grp#{gid}"), 1)];
    assert_eq!(listed, want);
    let (mut dave, _) = server.syncing_client("dave").await;
    alice
        .send(json!({"action":"addMember","group_id":gid,"user_id":"dave"}))
        .await;
    let g = alice.expect("group").await;
    assert_eq!(g["members"], json!(["alice", "bob", "carol", "dave"]));
    for c in [&mut bob, &mut carol, &mut dave] {
        assert_eq!(c.expect("group").await, g);
    }
    bob.send(json!({"action":"removeMember","group_id":gid,"user_id":"bob"}))
        .await;
    let g = bob.expect("group").await;
    assert_eq!(g["members"], json!(["alice", "carol", "dave"]));
    for c in [&mut alice, &mut carol, &mut dave] {
        assert_eq!(c.expect("group").await, g);
    }
    alice.send(json!({"action":"send","to":format!("group:{gid}"),"client_msg_id":"g-2","text":"bob has left"})).await;
    assert_eq!(alice.expect("ack").await["message_id"], 2);
    assert_eq!(dave.expect("message").await["text"], "bob has left");
    assert_eq!(carol.expect("message").await["text"], "bob has left");
    bob.expect_silence(Duration::from_millis(500)).await;
    // carol syncs from another device: what she has not acked (her own
    // message moved her watermark past it).
    let (_carol2, got) = server.syncing_client("carol").await;
    let texts: Vec<&str> = got.iter().map(|m| m["text"].as_str().unwrap()).collect();
    assert_eq!(texts, vec!["bob has left"]);

    // Bad frames are answered by the functions too.
    bob.send(json!({"action":"teleport"})).await;
    assert_eq!(bob.expect("error").await["code"], "bad_request");

    // Devices through the functions (docs/protocol.md, "Devices"): erin's
    // laptop, back online, gets what her phone read meanwhile. The phone's
    // device comes from its token's `device` claim, through the authorizer.
    assert_eq!(
        handshake_status(&format!(
            "{}?device=bad%20id&token={}",
            server.url(),
            server.token("erin")
        ))
        .await
        .unwrap(),
        401
    );
    let mut laptop = server.device_client("erin", "laptop").await;
    laptop.sync().await;
    laptop.close().await;
    let phone_token = server.auth.mint_for_device("erin", "phone", 3600).unwrap();
    let mut phone = TestClient::connect(&server.url(), &phone_token)
        .await
        .unwrap();
    phone.sync().await;
    for i in 1..=3 {
        dave.send_text("user:erin", &format!("d{i}")).await;
        assert_eq!(phone.expect("message").await["message_id"], i);
    }
    phone.received("dm#dave#erin", 1, 3).await;
    phone
        .send(json!({"action":"ack","conversation_id":"dm#dave#erin","up_to":3}))
        .await;
    assert_eq!(dave.expect("receipt").await["up_to"], 3);
    let mut laptop = server.device_client("erin", "laptop").await;
    let got: Vec<u64> = laptop
        .sync()
        .await
        .iter()
        .map(|m| m["message_id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        got,
        [1, 2, 3],
        "what the phone read, replayed to the laptop"
    );
    laptop.close().await;

    // Order: a receiver syncing while two peers send through the functions
    // and the stream-fed fan-out; and one that never syncs.
    let repeats = chat_tests::order::sync_while_peers_send(&server, 2, 20, 30).await;
    eprintln!("local cloud: {repeats} repeated ids in 2 rounds of 80 messages");
    assert!(repeats <= 10, "{repeats} repeats");
    let seen = chat_tests::order::never_syncs_on_a_busy_group(&server, 20).await;
    assert_eq!(seen.ids.last(), Some(&60));
    assert_eq!(seen.repeats, 0);

    // Group receipts through the functions: only the authors an ack
    // covers get one (docs/protocol.md, "Receipts").
    let five = chat_tests::scenarios::FiveMembers {
        alice: server.syncing_client("alice").await.0,
        alice_2: server.syncing_client("alice").await.0,
        bob: server.syncing_client("bob").await.0,
        carol: server.syncing_client("carol").await.0,
        dave: server.syncing_client("dave").await.0,
        dave_2: server.syncing_client("dave").await.0,
        erin: server.syncing_client("erin").await.0,
        zed: server.syncing_client("zed").await.0,
    };
    chat_tests::scenarios::only_the_authors_get_a_group_receipt(five).await;
    server.stop().await;
}
