//! File descriptors (docs/operations.md, "File limits"): a real server
//! process started with a small `RLIMIT_NOFILE` raises its soft limit to
//! the hard one, caps its connections below what that allows and logs
//! both; flooded past the cap, it answers 503 and never runs out of
//! descriptors (no EMFILE); once the flood goes, it serves chat.

use chat_tests::*;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// Starts the server under `soft`/`hard` descriptor limits; returns it,
/// its URL and its log lines (JSON), collected as they come.
async fn spawn_limited(
    dir: &std::path::Path,
    soft: u64,
    hard: u64,
) -> (Child, String, Arc<Mutex<Vec<serde_json::Value>>>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conn-tier"));
    cmd.args(["--listen", "127.0.0.1:0", "--header-timeout-secs", "60"])
        .arg("--data-dir")
        .arg(dir)
        .env("CHAT_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .env("CHAT_LOG_JSON", "true")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn conn-tier");
    let log = Arc::new(Mutex::new(Vec::<serde_json::Value>::new()));
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    {
        let log = log.clone();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if let Some(url) = v["fields"]["url"].as_str() {
                        if let Some(tx) = ready.take() {
                            let _ = tx.send(url.to_string());
                        }
                    }
                    log.lock().unwrap().push(v);
                }
            }
        });
    }
    let url = match tokio::time::timeout(WAIT, ready_rx).await {
        Ok(Ok(url)) => url,
        other => panic!(
            "server not ready ({other:?}): {:?}, log: {:?}",
            child.try_wait(),
            log.lock().unwrap()
        ),
    };
    (child, url, log)
}

/// The start-up line about descriptors: its fields.
fn descriptor_line(log: &Mutex<Vec<serde_json::Value>>) -> serde_json::Value {
    log.lock()
        .unwrap()
        .iter()
        .find(|v| {
            v["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("file descriptors"))
        })
        .map(|v| v["fields"].clone())
        .expect("a log line about the descriptor limit")
}

#[tokio::test]
async fn at_start_the_soft_descriptor_limit_is_raised_to_the_hard_one_and_both_are_logged() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, _url, log) = spawn_limited(dir.path(), 256, 1024).await;
    let line = descriptor_line(&log);
    assert_eq!(line["soft_before"], 256, "{line}");
    assert_eq!(line["soft"], 1024, "{line}");
    assert_eq!(line["hard"], 1024, "{line}");
    // 1024 less a reserve of 32 + 1024 / 8 = 160.
    assert_eq!(line["cap"], 864, "{line}");
    assert_eq!(line["max_connections"], 50_000, "{line}");
    eprintln!("file limits: {line}");
}

/// The server's descriptor limit: enough for its own files and a few
/// sockets, well under the flood below.
const NOFILE: u64 = 128;

#[tokio::test]
async fn past_the_connection_cap_the_descriptor_limit_allows_a_connection_gets_503_never_emfile() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url, log) = spawn_limited(dir.path(), NOFILE, NOFILE).await;
    let line = descriptor_line(&log);
    let cap = line["cap"].as_u64().unwrap();
    assert_eq!(cap, 80, "128 less a reserve of 32 + 128 / 8: {line}");
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_string();

    // More connections than it has descriptors: those past the cap are
    // answered 503 and closed; the rest wait for their request.
    let mut flood = Vec::new();
    for _ in 0..(NOFILE as usize + 40) {
        if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
            flood.push(s);
        }
    }
    let answers = futures_util::future::join_all(flood.iter_mut().map(|s| async move {
        let mut buf = [0u8; 64];
        match tokio::time::timeout(Duration::from_secs(3), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => String::from_utf8_lossy(&buf[..n]).to_string(),
            _ => String::new(),
        }
    }))
    .await;
    let refused = answers
        .iter()
        .filter(|a| a.starts_with("HTTP/1.1 503"))
        .count();
    let waiting = answers.iter().filter(|a| a.is_empty()).count();
    assert_eq!(
        waiting as u64, cap,
        "the cap's worth wait for their request"
    );
    assert_eq!(
        refused,
        flood.len() - cap as usize,
        "every other one got 503"
    );
    assert!(
        !log.lock()
            .unwrap()
            .iter()
            .any(|v| v.to_string().contains("accept failed")),
        "never out of descriptors"
    );

    // They leave: chat works.
    drop(flood);
    let token = chat_core::auth::Authenticator::new(SECRET)
        .unwrap()
        .mint("alice", 600)
        .unwrap();
    let mut alice = None;
    for _ in 0..50 {
        if let Ok(c) = TestClient::connect(&url, &token).await {
            alice = Some(c);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut alice = alice.expect("accepting again");
    let ack = alice.send_text("user:bob", "still here").await;
    assert_eq!(ack["message_id"], 1);
    assert!(child.try_wait().unwrap().is_none(), "the server is up");
}
