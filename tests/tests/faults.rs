//! Store faults are states, not ends (docs/operations.md, "Faults"): a
//! real server process with its data directory on a real small file
//! system (a tmpfs this test mounts: root, or CAP_SYS_ADMIN, is needed),
//! which is then filled while a client sends. Sends are refused with
//! `unavailable` and `/readyz` answers 503 while it is full; once space is
//! freed, sends resume within seconds without a restart, and every acked
//! message is there, once, with gapless ids.
//!
//! Why a real file system and not a fault injected into the store's file
//! layer: the free-space watch reads the file system (statvfs) and redb's
//! own handling of ENOSPC (its handle refuses everything after a failed
//! write until it is opened again) is what has to be survived; both are
//! only real on a real full disk.

use chat_tests::*;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A tmpfs of a given size, unmounted on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(bytes: u64) -> Result<Self, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| e.to_string())?;
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// A tmpfs, or `None` when this machine does not let the test mount one
/// (then the test is skipped, unless CHAT_REQUIRE_ALL=1 says every test
/// must run, as `scripts/test-all` does).
fn tmpfs(bytes: u64) -> Option<Tmpfs> {
    match Tmpfs::mount(bytes) {
        Ok(t) => Some(t),
        Err(e) if std::env::var("CHAT_REQUIRE_ALL").as_deref() != Ok("1") => {
            eprintln!("SKIPPED: cannot mount a tmpfs ({e}); the disk-full tests need root");
            None
        }
        Err(e) => panic!("cannot mount a tmpfs for the disk-full tests ({e}): run as root"),
    }
}

/// Fills `dir`'s file system with a file of zeros until ENOSPC, or until
/// only `leave` bytes are free. Returns the file.
fn fill(dir: &Path, leave: u64) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 64 * 1024];
    loop {
        let free = free_bytes(dir);
        if leave > 0 && free <= leave + chunk.len() as u64 {
            let rest = free.saturating_sub(leave) as usize;
            let _ = f.write_all(&chunk[..rest.min(chunk.len())]);
            break;
        }
        if f.write_all(&chunk).is_err() {
            break;
        }
    }
    let _ = f.sync_all();
    path
}

fn free_bytes(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).unwrap();
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid path and a writable statvfs.
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

/// The server binary on `data_dir`, with `args`; its WebSocket URL.
async fn spawn_server(data_dir: &Path, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_conn-tier"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir)
        .args(args)
        .env("CHAT_JWT_SECRET", std::str::from_utf8(SECRET).unwrap())
        .env("CHAT_LOG_JSON", "true")
        .env("RUST_LOG", "info")
        .env("CHAT_ENGINE", engine().name())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn conn-tier");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                if let Some(url) = v["fields"]["url"].as_str() {
                    return url.to_string();
                }
            }
        }
        panic!("server exited before it was ready");
    })
    .await
    .expect("server ready in time");
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if std::env::var("TEST_LOG").is_ok() {
                eprintln!("server: {line}");
            }
        }
    });
    (child, url)
}

fn port(url: &str) -> u16 {
    url.trim_start_matches("ws://")
        .split(['/', ':'])
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("port")
}

fn token(user: &str) -> String {
    chat_core::auth::Authenticator::new(SECRET)
        .unwrap()
        .mint(user, 600)
        .unwrap()
}

/// One send, answered: `Ok(message_id)` or `Err(error frame)`.
async fn send(alice: &mut TestClient, cmid: &str, text: &str) -> Result<u64, Value> {
    alice
        .send(json!({"action":"send","to":"user:bob","client_msg_id":cmid,"text":text}))
        .await;
    let f = alice.recv().await;
    match f["type"].as_str() {
        Some("ack") => {
            assert_eq!(f["client_msg_id"], cmid, "{f}");
            Ok(f["message_id"].as_u64().unwrap())
        }
        Some("error") => Err(f),
        _ => panic!("unexpected {f}"),
    }
}

async fn readyz(port: u16) -> (u16, String) {
    let (status, _, body) = try_http_get(port, "/readyz").await.expect("GET /readyz");
    (status, body)
}

/// Everything bob's conversation with alice holds, from a fresh sync:
/// (id, text) in order.
async fn stored(url: &str) -> Vec<(u64, String)> {
    let mut bob = TestClient::connect(url, &token("bob")).await.unwrap();
    let mut all = Vec::new();
    // A sync replays at most the newest 200: page back with history.
    let mut before = None;
    loop {
        let page = bob.history("dm#alice#bob", before, Some(100)).await;
        let msgs = page["messages"].as_array().unwrap().clone();
        for m in msgs.iter().rev() {
            all.push((
                m["message_id"].as_u64().unwrap(),
                m["text"].as_str().unwrap().to_string(),
            ));
        }
        if !page["has_more"].as_bool().unwrap_or(false) || msgs.is_empty() {
            break;
        }
        before = msgs[0]["message_id"].as_u64();
    }
    all.reverse();
    all
}

/// What the tests check at the end: every acked send is stored once, at
/// its id, and the ids are gapless.
fn check_stored(stored: &[(u64, String)], acked: &[(String, u64)]) {
    let ids: Vec<u64> = stored.iter().map(|(id, _)| *id).collect();
    assert_eq!(
        ids,
        (1..=stored.len() as u64).collect::<Vec<_>>(),
        "ids are gapless"
    );
    let mut texts: Vec<&str> = stored.iter().map(|(_, t)| t.as_str()).collect();
    texts.sort();
    texts.dedup();
    assert_eq!(texts.len(), stored.len(), "no message stored twice");
    for (cmid, id) in acked {
        assert_eq!(
            stored[(*id - 1) as usize].1,
            format!("{cmid} {}", "x".repeat(900)),
            "acked {cmid} is stored at {id}"
        );
    }
    assert_eq!(
        stored.len(),
        acked.len(),
        "nothing stored that was not acked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_sends_and_readiness_then_recovers_by_itself_losing_nothing() {
    let Some(fs) = tmpfs(16 << 20) else { return };
    let data = fs.path().join("data");
    // The free-space watch off: the store meets the full disk itself.
    let (mut server, url) = spawn_server(&data, &["--min-free-disk-mb", "0"]).await;
    let port = port(&url);
    let mut alice = TestClient::connect(&url, &token("alice")).await.unwrap();
    let text = |cmid: &str| format!("{cmid} {}", "x".repeat(900));
    let mut acked: Vec<(String, u64)> = Vec::new();
    let mut n = 0;
    for _ in 0..50 {
        n += 1;
        let cmid = format!("m{n}");
        acked.push((
            cmid.clone(),
            send(&mut alice, &cmid, &text(&cmid)).await.unwrap(),
        ));
    }
    assert_eq!(readyz(port).await.0, 200);

    // The disk fills up while alice keeps sending: the store's next
    // commits fail, and from then on every send is refused.
    let filler = fill(fs.path(), 0);
    let mut refused: Vec<String> = Vec::new();
    while refused.is_empty() {
        n += 1;
        assert!(n < 5_000, "sends never failed on a full disk");
        let cmid = format!("m{n}");
        match send(&mut alice, &cmid, &text(&cmid)).await {
            Ok(id) => acked.push((cmid, id)),
            Err(e) => {
                assert_eq!(e["code"], "unavailable", "{e}");
                assert!(e["message"].as_str().unwrap().contains("retry"), "{e}");
                refused.push(cmid);
            }
        }
    }
    let (status, body) = readyz(port).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("cannot write"), "{body}");
    // A read meanwhile is answered, or refused as `unavailable`: never
    // `internal`.
    let mut bob = TestClient::connect(&url, &token("bob")).await.unwrap();
    bob.send(json!({"action":"history","conversation_id":"dm#alice#bob","limit":5}))
        .await;
    let answer = bob.recv().await;
    assert!(
        answer["type"] == "history" || answer["code"] == "unavailable",
        "{answer}"
    );
    for _ in 0..3 {
        n += 1;
        let cmid = format!("m{n}");
        let e = send(&mut alice, &cmid, &text(&cmid)).await.unwrap_err();
        assert_eq!(e["code"], "unavailable", "{e}");
        refused.push(cmid);
    }

    // Space is freed: the first refused send, sent again as a client
    // would, is acked within seconds, with no restart.
    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let first = refused[0].clone();
    let id = loop {
        match send(&mut alice, &first, &text(&first)).await {
            Ok(id) => break id,
            Err(e) => assert_eq!(e["code"], "unavailable", "{e}"),
        }
        assert!(
            freed.elapsed() < Duration::from_secs(20),
            "no ack 20 s after space was freed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let recovered = freed.elapsed();
    acked.push((first, id));
    for cmid in &refused[1..] {
        let id = send(&mut alice, cmid, &text(cmid)).await.unwrap();
        acked.push((cmid.clone(), id));
    }
    assert_eq!(readyz(port).await.0, 200);
    assert!(
        server.try_wait().unwrap().is_none(),
        "the same process, never restarted"
    );
    eprintln!(
        "disk full: {} acked before the refusals, {} refused, first ack {recovered:?} after space was freed",
        acked.len() - refused.len(),
        refused.len()
    );

    let all = stored(&url).await;
    check_stored(&all, &acked);
    eprintln!(
        "disk full: {} acked, {} stored, ids 1..={}",
        acked.len(),
        all.len(),
        all.len()
    );

    // And after a restart, the same.
    server.start_kill().unwrap();
    server.wait().await.unwrap();
    let (_server, url) = spawn_server(&data, &["--min-free-disk-mb", "0"]).await;
    check_stored(&stored(&url).await, &acked);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_the_free_space_threshold_sends_are_refused_before_the_disk_is_full() {
    let Some(fs) = tmpfs(16 << 20) else { return };
    let data = fs.path().join("data");
    let (server, url) = spawn_server(&data, &["--min-free-disk-mb", "6"]).await;
    let port = port(&url);
    let mut alice = TestClient::connect(&url, &token("alice")).await.unwrap();
    let text = |cmid: &str| format!("{cmid} {}", "x".repeat(900));
    let mut acked = Vec::new();
    for n in 1..=20 {
        let cmid = format!("m{n}");
        acked.push((
            cmid.clone(),
            send(&mut alice, &cmid, &text(&cmid)).await.unwrap(),
        ));
    }
    // 4 MB left: below the 6 kept free, far from full.
    let filler = fill(fs.path(), 4 << 20);
    let since = Instant::now();
    let refusal = loop {
        let cmid = format!("m{}", acked.len() + 1);
        match send(&mut alice, &cmid, &text(&cmid)).await {
            Ok(id) => acked.push((cmid, id)),
            Err(e) => break e,
        }
        assert!(
            since.elapsed() < Duration::from_secs(10),
            "the watch never refused"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(refusal["code"], "unavailable", "{refusal}");
    assert!(
        refusal["message"].as_str().unwrap().contains("nearly full"),
        "{refusal}"
    );
    let (status, body) = readyz(port).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("nearly full"), "{body}");
    assert!(
        free_bytes(fs.path()) > 3 << 20,
        "the disk was never left full"
    );

    std::fs::remove_file(&filler).unwrap();
    let freed = Instant::now();
    let cmid = format!("m{}", acked.len() + 1);
    let id = loop {
        if let Ok(id) = send(&mut alice, &cmid, &text(&cmid)).await {
            break id;
        }
        assert!(
            freed.elapsed() < Duration::from_secs(10),
            "writes never resumed"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    acked.push((cmid, id));
    eprintln!(
        "low disk: first ack {:?} after space was freed",
        freed.elapsed()
    );
    assert_eq!(readyz(port).await.0, 200);
    check_stored(&stored(&url).await, &acked);
    drop(server);
}
