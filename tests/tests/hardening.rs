//! Hostile clients, end to end: each limit holds, the server stays up, and
//! the client gets a clear answer (docs/security.md lists them all).

use chat_cli::client::WsMessage;
use chat_tests::*;
use conn_tier::config::Settings;
use conn_tier::hub::UserLimits;
use conn_tier::limits::SocketConfig;
use conn_tier::listener::Limits;
use serde_json::json;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The HTTP status line's code of a raw upgrade attempt on `server`; a
/// refusal (429, 503) must say when to retry.
async fn upgrade_status(server: &TestServer, user: &str) -> u16 {
    let url = format!("{}?token={}", server.url(), server.token(user));
    let (status, retry_after) = handshake_response(&url).await.unwrap();
    if matches!(status, 429 | 503) {
        let secs: Option<u64> = retry_after.as_deref().and_then(|v| v.parse().ok());
        assert!(
            secs.is_some_and(|s| s >= 1),
            "{status} without a Retry-After: {retry_after:?}"
        );
    }
    status
}

#[tokio::test]
async fn a_member_removed_while_sending_stays_removed() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let gid = alice.create_group("race", &["bob"]).await["group_id"]
        .as_str()
        .unwrap()
        .to_string();
    bob.expect("group").await;
    // bob keeps up to 20 sends in flight; once 10 are acked, alice removes
    // him (from a task of her own), while his next sends are on their way.
    let (remove, removal) = tokio::sync::oneshot::channel::<()>();
    let remover = {
        let gid = gid.clone();
        tokio::spawn(async move {
            let _ = removal.await;
            alice
                .send(json!({"action":"removeMember","group_id":gid,"user_id":"bob"}))
                .await;
            alice
        })
    };
    let mut remove = Some(remove);
    let (mut sent, mut acked, mut refused) = (0, 0, 0);
    while refused == 0 || acked + refused < sent {
        while refused == 0 && sent - acked - refused < 20 && sent < 5000 {
            bob.send(json!({"action":"send","to":format!("group:{gid}"),"client_msg_id":format!("b{sent}"),"text":"still here"}))
                .await;
            sent += 1;
        }
        let f = bob.recv().await;
        match (f["type"].as_str(), f["code"].as_str()) {
            (Some("ack"), _) => {
                assert_eq!(refused, 0, "an ack after a refusal: {f}");
                acked += 1;
                if acked == 10 {
                    let _ = remove.take().map(|r| r.send(()));
                }
            }
            (Some("error"), Some("forbidden")) => refused += 1,
            (Some("group") | Some("message"), _) => continue,
            _ => panic!("unexpected {f}"),
        }
    }
    let mut alice = remover.await.unwrap();
    // Sends landed before the removal, and the ones after it were refused.
    assert!(
        acked >= 10 && refused > 0,
        "acked {acked}, refused {refused}"
    );
    // bob is out: no history, no posting, not a member, and removing him
    // again is `not_found` (nothing re-created his membership).
    let conv = format!("grp#{gid}");
    assert_eq!(bob.history(&conv, None, None).await["code"], "forbidden");
    let e = bob
        .send_text_refused(&format!("group:{gid}"), "again?")
        .await;
    assert_eq!(e["code"], "forbidden");
    assert!(server
        .store
        .membership("bob", &conv)
        .await
        .unwrap()
        .is_none());
    alice
        .send(json!({"action":"removeMember","group_id":gid,"user_id":"bob"}))
        .await;
    loop {
        let f = alice.recv().await;
        if f["type"] == "error" {
            assert_eq!(f["code"], "not_found", "{f}");
            break;
        }
    }
    server.stop().await;
}

#[tokio::test]
async fn a_history_page_stays_under_the_answer_limit_and_keeps_the_newest() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let big = "x".repeat(10_000);
    for i in 0..40 {
        alice
            .send(json!({"action":"send","to":"user:bob","client_msg_id":format!("h{i}"),"text":format!("{i} {big}")}))
            .await;
    }
    for _ in 0..40 {
        alice.expect("ack").await;
    }
    alice
        .send(json!({"action":"history","conversation_id":"dm#alice#bob","limit":100}))
        .await;
    let h = alice.expect("history").await;
    let got = ids(h["messages"].as_array().unwrap());
    let bytes = h.to_string().len();
    assert!(bytes <= 256 * 1024, "{bytes} bytes");
    assert!(got.len() < 40 && got.len() >= 20, "{} messages", got.len());
    assert_eq!(*got.last().unwrap(), 40, "the newest are kept");
    assert_eq!(h["has_more"], true);
    server.stop().await;
}

#[tokio::test]
async fn conversations_come_in_pages_with_a_cursor() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    for i in 0..5 {
        alice.send_text(&format!("user:peer{i}"), "hi").await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for page in 0.. {
        let mut f = json!({"action":"conversations","limit":2});
        if let Some(c) = &cursor {
            f["cursor"] = json!(c);
        }
        alice.send(f).await;
        let c = alice.expect("conversations").await;
        let items = c["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        seen.extend(
            items
                .iter()
                .map(|i| i["conversation_id"].as_str().unwrap().to_string()),
        );
        match c["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
        assert!(page < 5, "the pages end");
    }
    let want: Vec<String> = (0..5).map(|i| format!("dm#alice#peer{i}")).collect();
    assert_eq!(seen, want);
    alice
        .send(json!({"action":"conversations","limit":0}))
        .await;
    let e = alice.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["action"].as_str()),
        (Some("bad_request"), Some("conversations"))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_user_creates_at_most_the_daily_number_of_groups() {
    let server = TestServer::start_with_settings(Settings {
        chat: chat_core::service::ChatLimits {
            groups_per_day: 3,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut alice = server.client("alice").await;
    for i in 0..3 {
        alice.create_group(&format!("g{i}"), &["bob"]).await;
    }
    alice
        .send(json!({"action":"createGroup","name":"one too many","members":["bob"]}))
        .await;
    let e = alice.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["action"].as_str()),
        (Some("rate_limited"), Some("createGroup"))
    );
    // Another user has their own quota.
    let mut carol = server.client("carol").await;
    carol.create_group("mine", &["bob"]).await;
    server.stop().await;
}

#[tokio::test]
async fn a_user_has_at_most_the_configured_connections_and_closing_one_frees_a_place() {
    let server = TestServer::start_with_settings(Settings {
        users: UserLimits {
            max_connections: 2,
            ..UserLimits::default()
        },
        ..Default::default()
    })
    .await;
    let a1 = server.client("alice").await;
    let _a2 = server.client("alice").await;
    assert_eq!(upgrade_status(&server, "alice").await, 429, "a third");
    assert_eq!(
        upgrade_status(&server, "bob").await,
        101,
        "others are not limited"
    );
    a1.close().await;
    let mut status = 0;
    for _ in 0..100 {
        status = upgrade_status(&server, "alice").await;
        if status != 429 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(status, 101, "a place was freed");
    server.stop().await;
}

#[tokio::test]
async fn a_users_connections_share_one_rate_budget() {
    let server = TestServer::start_with_settings(Settings {
        users: UserLimits {
            max_connections: 10,
            burst: 20,
            per_sec: 0,
        },
        ..Default::default()
    })
    .await;
    // Two connections (2 tokens for the attempts, 2 for their pings).
    let mut a1 = server.client("alice").await;
    let mut a2 = server.client("alice").await;
    // 16 tokens left for both connections together: 10 sends on each.
    for c in [&mut a1, &mut a2] {
        for i in 0..10 {
            c.send(json!({"action":"send","to":"user:carol","client_msg_id":format!("{i}-{}", rand_tag()),"text":"x"}))
                .await;
        }
    }
    let mut acked = 0;
    let mut limited = 0;
    for c in [&mut a1, &mut a2] {
        let mut answers = 0;
        while answers < 10 {
            let f = c.recv().await;
            answers += 1;
            match (f["type"].as_str(), f["code"].as_str()) {
                // The other device's sends reach this one as messages.
                (Some("message"), _) => answers -= 1,
                (Some("ack"), _) => acked += 1,
                (Some("error"), Some("rate_limited")) => {
                    assert_eq!(f["action"], "send");
                    assert!(f["client_msg_id"].is_string(), "{f}");
                    limited += 1
                }
                _ => panic!("unexpected {f}"),
            }
        }
    }
    assert_eq!((acked, limited), (16, 4));
    // The budget is the user's, not the connection's: closing both and
    // connecting again does not refill it (the attempt itself is refused).
    a1.close().await;
    a2.close().await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(upgrade_status(&server, "alice").await, 429);
    assert_eq!(upgrade_status(&server, "bob").await, 101, "bob has his own");
    server.stop().await;
}

fn rand_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_string()
}

#[tokio::test]
async fn connections_are_capped_per_ip_and_in_total_and_a_slow_request_is_cut_off() {
    let server = TestServer::start_with_settings(Settings {
        limits: Limits {
            max_connections: 4,
            max_per_ip: 3,
            new_per_ip_per_sec: 1000,
            new_per_ip_burst: 1000,
            header_timeout: Duration::from_secs(1),
            ..Limits::default()
        },
        ..Default::default()
    })
    .await;
    // Three open connections from 127.0.0.1: a fourth is refused.
    let mut open = Vec::new();
    for u in ["a", "b", "c"] {
        open.push(server.client(u).await);
    }
    assert_eq!(upgrade_status(&server, "d").await, 429);
    drop(open.pop());
    // A half-sent request holds a place only until the header timeout.
    // (The closed client's place is free once the server has seen the
    // close: until then, a new one is still refused.)
    let freed_by = std::time::Instant::now() + WAIT;
    let (n, answer, started) = loop {
        let mut slow = tokio::net::TcpStream::connect(server.addr).await.unwrap();
        slow.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let started = std::time::Instant::now();
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(WAIT, slow.read(&mut buf))
            .await
            .expect("the server cut the slow request off")
            .unwrap_or(0);
        let answer = String::from_utf8_lossy(&buf[..n]).to_string();
        if answer.starts_with("HTTP/1.1 429") && std::time::Instant::now() < freed_by {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        break (n, answer, started);
    };
    assert!(
        n == 0 || answer.starts_with("HTTP/1.1 408"),
        "closed or 408: {answer:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    server.stop().await;
}

#[tokio::test]
async fn past_the_total_cap_an_upgrade_gets_503_with_retry_after() {
    // The per-IP cap above the total one: the total cap answers first.
    let server = TestServer::start_with_settings(Settings {
        limits: Limits {
            max_connections: 3,
            max_per_ip: 100,
            new_per_ip_per_sec: 1000,
            new_per_ip_burst: 1000,
            ..Limits::default()
        },
        ..Default::default()
    })
    .await;
    let mut open = Vec::new();
    for u in ["a", "b", "c"] {
        open.push(server.client(u).await);
    }
    assert_eq!(upgrade_status(&server, "d").await, 503);
    // The three open ones still work.
    for c in open.iter_mut() {
        c.send(json!({"action":"ping"})).await;
        c.expect("pong").await;
    }
    server.stop().await;
}

#[tokio::test]
async fn new_connections_from_one_ip_are_rate_limited() {
    let server = TestServer::start_with_settings(Settings {
        limits: Limits {
            new_per_ip_per_sec: 0,
            new_per_ip_burst: 3,
            ..Limits::default()
        },
        ..Default::default()
    })
    .await;
    for u in ["a", "b", "c"] {
        assert_eq!(upgrade_status(&server, u).await, 101);
    }
    assert_eq!(upgrade_status(&server, "d").await, 429);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_never_reads_its_answers_is_closed_with_1008_within_its_bytes() {
    if store_kind() == "dynamodb" {
        // Megabytes through the emulator take minutes; the socket's rules
        // are the same on every store (run with embedded and memory).
        return;
    }
    let server = TestServer::start_with_settings(Settings {
        socket: SocketConfig {
            outbound_bytes: 256 * 1024,
            // A write stalled this long marks the peer too slow; the close
            // frame then gets as long again to go out.
            write_timeout: Duration::from_secs(4),
            ..SocketConfig::default()
        },
        ..Default::default()
    })
    .await;
    let mut alice = server.client("alice").await;
    let big = "y".repeat(10_000);
    for i in 0..30 {
        alice
            .send(json!({"action":"send","to":"user:bob","client_msg_id":format!("m{i}"),"text":format!("{i} {big}")}))
            .await;
    }
    for _ in 0..30 {
        alice.expect("ack").await;
    }
    // A reader with a tiny socket buffer asks for 190 big pages and never reads.
    let mut greedy = server.tight_client("alice").await;
    for _ in 0..190 {
        greedy
            .send(json!({"action":"history","conversation_id":"dm#alice#bob","limit":100}))
            .await;
    }
    // It does not read for a while: the server stalls on it and, after the
    // write timeout, marks it too slow. When it reads again (before the
    // close frame's own timeout), what was written comes, then the close.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(greedy.expect_close().await, 1008);
    // The server is fine: another client works.
    let mut bob = server.client("bob").await;
    assert_eq!(
        bob.history("dm#alice#bob", None, Some(1)).await["type"],
        "history"
    );
    server.stop().await;
}

#[tokio::test]
async fn a_reader_that_lets_its_queue_fill_is_closed_by_the_byte_cap_long_before_a_write_times_out()
{
    if store_kind() == "dynamodb" {
        // Megabytes through the emulator take minutes; the socket's rules
        // are the same on every store (run with embedded and memory).
        return;
    }
    // The write timeout is a minute: a close within seconds can only come
    // from the outbound queue's byte cap.
    let write_timeout = Duration::from_secs(60);
    let server = TestServer::start_with_settings(Settings {
        socket: SocketConfig {
            outbound_bytes: 256 * 1024,
            write_timeout,
            ..SocketConfig::default()
        },
        users: conn_tier::hub::UserLimits {
            burst: 1000,
            ..Default::default()
        },
        ..Default::default()
    })
    .await;
    let mut stuck = server.tight_client("bob").await;
    let mut alice = server.client("alice").await;
    let big = "y".repeat(10_000);
    let started = std::time::Instant::now();
    // 600 live messages of 10 KB: 6 MB, more than the kernel's send
    // buffer (Linux grows it to 4 MB at most) and the 256 KB queue.
    for i in 0..600 {
        alice
            .send(json!({"action":"send","to":"user:bob","client_msg_id":format!("m{i}"),"text":format!("{i} {big}")}))
            .await;
    }
    for _ in 0..600 {
        alice.expect("ack").await;
    }
    let (code, reason) = stuck.expect_close_reason().await;
    assert_eq!(code, 1008);
    assert_eq!(reason, "too slow: outbound queue overflowed");
    assert!(
        started.elapsed() < write_timeout / 4,
        "{:?}",
        started.elapsed()
    );
    server.stop().await;
}

#[tokio::test]
async fn a_text_frame_that_is_not_utf8_closes_with_1007() {
    use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
    use tokio_tungstenite::tungstenite::protocol::frame::Frame;
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let frame = Frame::message(vec![0xff, 0xfe, 0x80], OpCode::Data(Data::Text), true);
    alice.send_raw(WsMessage::Frame(frame)).await;
    assert_eq!(alice.expect_close().await, 1007);
    server.stop().await;
}

#[tokio::test]
async fn tokens_living_longer_than_a_day_are_refused() {
    let server = TestServer::start().await;
    let forever = server.auth.mint("alice", 48 * 3600).unwrap();
    let status = handshake_status(&format!("{}?token={forever}", server.url()))
        .await
        .unwrap();
    assert_eq!(status, 401);
    // An `iat` set just before a far `exp`: the lifetime looks short, but
    // the token would be good for years.
    let now = chat_management::sigv4::now_secs();
    let ten_years = now + 10 * 365 * 24 * 3600;
    let forged = server
        .auth
        .sign_claims(&json!({"sub":"alice","exp":ten_years,"iat":ten_years - 60}))
        .unwrap();
    let status = handshake_status(&format!("{}?token={forged}", server.url()))
        .await
        .unwrap();
    assert_eq!(status, 401, "a future iat");
    server.stop().await;
}

#[tokio::test]
async fn the_accepted_sockets_have_nagle_off() {
    let server = TestServer::start().await;
    let _alice = server.client("alice").await;
    // The accepted socket lives in this process: find it by its ports.
    let port = server.addr.port();
    let mut found = 0;
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let fd: i32 = match entry.unwrap().file_name().to_string_lossy().parse() {
            Ok(fd) => fd,
            Err(_) => continue,
        };
        let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let got =
            unsafe { libc::getsockname(fd, &mut addr as *mut _ as *mut libc::sockaddr, &mut len) };
        if got != 0
            || addr.sin_family != libc::AF_INET as u16
            || u16::from_be(addr.sin_port) != port
        {
            continue;
        }
        let mut peer: libc::sockaddr_in = unsafe { std::mem::zeroed() };
        let mut plen = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        if unsafe { libc::getpeername(fd, &mut peer as *mut _ as *mut libc::sockaddr, &mut plen) }
            != 0
        {
            continue; // the listening socket
        }
        let mut on: libc::c_int = 0;
        let mut olen = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let r = unsafe {
            libc::getsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                &mut on as *mut _ as *mut libc::c_void,
                &mut olen,
            )
        };
        assert_eq!(r, 0);
        assert_eq!(on, 1, "TCP_NODELAY on the accepted socket (fd {fd})");
        found += 1;
    }
    assert!(found >= 1, "found the accepted socket");
    server.stop().await;
}
