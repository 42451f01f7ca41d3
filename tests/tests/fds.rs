//! Out of file descriptors: a real server process with a small
//! `RLIMIT_NOFILE` is flooded with TCP connections until `accept` fails
//! (EMFILE); once they go, it accepts again and serves chat.

use chat_tests::*;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

/// The server's descriptor limit: enough for its own files and a few
/// sockets, well under the flood below.
const NOFILE: u64 = 64;

#[tokio::test]
async fn a_server_out_of_file_descriptors_accepts_again_once_some_are_free() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_conn-tier"));
    cmd.args(["--listen", "127.0.0.1:0", "--header-timeout-secs", "60"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("CHAT_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .env("CHAT_LOG_JSON", "true")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: NOFILE,
                rlim_max: NOFILE,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("spawn conn-tier");
    let log = Arc::new(Mutex::new(Vec::<String>::new()));
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
                }
                log.lock().unwrap().push(line);
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
    let addr = url
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_string();

    // More connections than it has descriptors: the kernel completes them
    // (backlog), the server's accept fails.
    let mut flood = Vec::new();
    for _ in 0..(NOFILE as usize + 40) {
        if let Ok(s) = tokio::net::TcpStream::connect(&addr).await {
            flood.push(s);
        }
    }
    let saw_emfile = tokio::time::timeout(WAIT, async {
        loop {
            if log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("accept failed"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(saw_emfile.is_ok(), "the flood exhausted the descriptors");

    // They leave: the server accepts again, and chat works.
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
