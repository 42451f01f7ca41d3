//! Groups over real WebSockets: membership, fan-out, admins, limits.

use chat_tests::*;
use serde_json::json;
use std::time::Duration;

#[tokio::test]
async fn members_receive_group_messages_and_a_non_member_does_not() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let mut carol = server.client("carol").await;
    let mut mallory = server.client("mallory").await;

    let g = alice.create_group("team", &["bob", "carol"]).await;
    assert_eq!(g["name"], "team");
    assert_eq!(g["members"], json!(["alice", "bob", "carol"]));
    assert_eq!(g["admins"], json!(["alice"]));
    let gid = g["group_id"].as_str().unwrap().to_string();
    // Every member hears about the new group.
    assert_eq!(bob.expect("group").await, g);
    assert_eq!(carol.expect("group").await, g);

    let ack = alice.send_text(&format!("group:{gid}"), "hello team").await;
    assert_eq!(ack["conversation_id"], format!("grp#{gid}"));
    assert_eq!(ack["message_id"], 1);
    for c in [&mut bob, &mut carol] {
        let m = c.expect("message").await;
        assert_eq!(
            (m["from"].as_str(), m["text"].as_str()),
            (Some("alice"), Some("hello team"))
        );
    }
    let ack = carol.send_text(&format!("group:{gid}"), "hi!").await;
    assert_eq!(ack["message_id"], 2);
    assert_eq!(alice.expect("message").await["message_id"], 2);
    assert_eq!(bob.expect("message").await["message_id"], 2);
    mallory.expect_silence(Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_non_member_gets_forbidden_for_send_history_and_ack_and_learns_nothing() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut mallory = server.client("mallory").await;
    let gid = alice.create_group("secret", &["bob"]).await["group_id"]
        .as_str()
        .unwrap()
        .to_string();
    alice.send_text(&format!("group:{gid}"), "classified").await;

    let e = mallory
        .send_text_refused(&format!("group:{gid}"), "let me in")
        .await;
    assert_eq!(e["code"], "forbidden");
    let h = mallory.history(&format!("grp#{gid}"), None, None).await;
    assert_eq!(h["code"], "forbidden");
    // A group that does not exist answers exactly the same.
    let h2 = mallory.history("grp#doesnotexist", None, None).await;
    assert_eq!(
        (h2["code"].clone(), h2["message"].clone()),
        (h["code"].clone(), h["message"].clone())
    );
    // And a direct conversation between others.
    alice.send_text("user:bob", "private").await;
    assert_eq!(
        mallory.history("dm#alice#bob", None, None).await["code"],
        "forbidden"
    );
    mallory
        .send(json!({"action":"ack","conversation_id":"dm#alice#bob","up_to":1}))
        .await;
    assert_eq!(mallory.expect("error").await["code"], "forbidden");
    mallory
        .send(json!({"action":"addMember","group_id":gid,"user_id":"mallory"}))
        .await;
    assert_eq!(mallory.expect("error").await["code"], "forbidden");
    // Nothing was stored for the refused send.
    let h = alice.history(&format!("grp#{gid}"), None, None).await;
    assert_eq!(ids(h["messages"].as_array().unwrap()), vec![1]);
    server.stop().await;
}

#[tokio::test]
async fn only_admins_add_or_remove_but_a_member_may_leave() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let g = alice.create_group("club", &["bob"]).await;
    let gid = g["group_id"].as_str().unwrap().to_string();
    bob.expect("group").await;

    // bob is not an admin.
    bob.send(json!({"action":"addMember","group_id":gid,"user_id":"dave"}))
        .await;
    let e = bob.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["action"].as_str()),
        (Some("forbidden"), Some("addMember"))
    );
    bob.send(json!({"action":"removeMember","group_id":gid,"user_id":"alice"}))
        .await;
    assert_eq!(bob.expect("error").await["code"], "forbidden");

    // alice adds dave: everyone, dave included, sees the new state.
    let mut dave = server.client("dave").await;
    alice
        .send(json!({"action":"addMember","group_id":gid,"user_id":"dave"}))
        .await;
    let g = alice.expect("group").await;
    assert_eq!(g["members"], json!(["alice", "bob", "dave"]));
    assert_eq!(bob.expect("group").await, g);
    assert_eq!(dave.expect("group").await, g);

    // dave receives new group messages, and can read the group.
    bob.send_text(&format!("group:{gid}"), "welcome dave").await;
    assert_eq!(dave.expect("message").await["text"], "welcome dave");
    alice.expect("message").await;

    // bob leaves on his own.
    bob.send(json!({"action":"removeMember","group_id":gid,"user_id":"bob"}))
        .await;
    let g = bob.expect("group").await;
    assert_eq!(g["members"], json!(["alice", "dave"]));
    assert_eq!(alice.expect("group").await, g);
    assert_eq!(dave.expect("group").await, g);
    // ...and no longer receives or reads anything.
    alice.send_text(&format!("group:{gid}"), "bye bob").await;
    dave.expect("message").await;
    bob.expect_silence(Duration::from_millis(300)).await;
    assert_eq!(
        bob.history(&format!("grp#{gid}"), None, None).await["code"],
        "forbidden"
    );

    // alice removes dave; dave is told, the removal is visible to him.
    alice
        .send(json!({"action":"removeMember","group_id":gid,"user_id":"dave"}))
        .await;
    let g = alice.expect("group").await;
    assert_eq!(g["members"], json!(["alice"]));
    assert_eq!(dave.expect("group").await, g);
    // Removing a non-member is not_found for an admin.
    alice
        .send(json!({"action":"removeMember","group_id":gid,"user_id":"zed"}))
        .await;
    assert_eq!(alice.expect("error").await["code"], "not_found");
    server.stop().await;
}

#[tokio::test]
async fn when_the_last_admin_leaves_the_earliest_joined_member_becomes_admin_not_the_first_by_name()
{
    let server = TestServer::start().await;
    let mut mia = server.client("mia").await;
    let mut zed = server.client("zed").await;
    let mut aaron = server.client("aaron").await;

    let g = mia.create_group("heirs", &["zed"]).await;
    assert_eq!(g["members"], json!(["mia", "zed"]));
    assert_eq!(g["admins"], json!(["mia"]));
    let gid = g["group_id"].as_str().unwrap().to_string();
    assert_eq!(zed.expect("group").await, g);

    // aaron joins later, although his name sorts first.
    mia.send(json!({"action":"addMember","group_id":gid,"user_id":"aaron"}))
        .await;
    let g = mia.expect("group").await;
    assert_eq!(g["members"], json!(["mia", "zed", "aaron"]));
    assert_eq!(g["admins"], json!(["mia"]));
    assert_eq!(zed.expect("group").await, g);
    assert_eq!(aaron.expect("group").await, g);

    // The only admin leaves: zed, the earliest-joined of the rest, takes over.
    mia.send(json!({"action":"removeMember","group_id":gid,"user_id":"mia"}))
        .await;
    let g = mia.expect("group").await;
    assert_eq!(g["members"], json!(["zed", "aaron"]));
    assert_eq!(g["admins"], json!(["zed"]));
    assert_eq!(zed.expect("group").await, g);
    assert_eq!(aaron.expect("group").await, g);

    // aaron is not an admin; zed is, and may add others.
    aaron
        .send(json!({"action":"addMember","group_id":gid,"user_id":"bea"}))
        .await;
    let e = aaron.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["action"].as_str()),
        (Some("forbidden"), Some("addMember"))
    );
    zed.send(json!({"action":"addMember","group_id":gid,"user_id":"bea"}))
        .await;
    let g = zed.expect("group").await;
    assert_eq!(g["members"], json!(["zed", "aaron", "bea"]));
    assert_eq!(g["admins"], json!(["zed"]));
    assert_eq!(aaron.expect("group").await, g);
    // mia left: she hears nothing more of the group.
    mia.expect_silence(Duration::from_millis(300)).await;
    server.stop().await;
}

#[tokio::test]
async fn a_removed_member_cannot_sync_list_or_send_in_the_group_and_can_be_added_back() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let mut bob = server.client("bob").await;
    let g = alice.create_group("comeback", &["bob", "carol"]).await;
    let gid = g["group_id"].as_str().unwrap().to_string();
    let (to, conv) = (format!("group:{gid}"), format!("grp#{gid}"));
    assert_eq!(bob.expect("group").await, g);

    // (No message is sent before the removal: bob's connection would see
    // it live, and then fill the gap up to the next one it gets.)
    alice
        .send(json!({"action":"removeMember","group_id":gid,"user_id":"bob"}))
        .await;
    let g = alice.expect("group").await;
    assert_eq!(g["members"], json!(["alice", "carol"]));
    assert_eq!(g["admins"], json!(["alice"]));
    assert_eq!(bob.expect("group").await, g);

    assert_eq!(alice.send_text(&to, "while away").await["message_id"], 1);
    bob.expect_silence(Duration::from_millis(300)).await;
    // No group messages in his sync (a member would get message 1)...
    let got = bob.sync().await;
    assert!(got.is_empty(), "{got:?}");
    // ...no group in his conversations...
    bob.send(json!({"action":"conversations"})).await;
    assert_eq!(bob.expect("conversations").await["items"], json!([]));
    // ...and no sending or reading.
    let e = bob.send_text_refused(&to, "let me back in").await;
    assert_eq!(
        (e["code"].as_str(), e["action"].as_str()),
        (Some("forbidden"), Some("send"))
    );
    assert_eq!(bob.history(&conv, None, None).await["code"], "forbidden");

    // An admin adds him back: he hears it, and new messages reach him live.
    alice
        .send(json!({"action":"addMember","group_id":gid,"user_id":"bob"}))
        .await;
    let g = alice.expect("group").await;
    assert_eq!(g["members"], json!(["alice", "carol", "bob"]));
    assert_eq!(bob.expect("group").await, g);
    assert_eq!(alice.send_text(&to, "welcome back").await["message_id"], 2);
    let m = bob.expect("message").await;
    assert_eq!(
        (
            m["message_id"].as_u64(),
            m["from"].as_str(),
            m["text"].as_str()
        ),
        (Some(2), Some("alice"), Some("welcome back"))
    );
    bob.expect_silence(Duration::from_millis(200)).await;
    // The group is listed again, read up to where he rejoined.
    bob.send(json!({"action":"conversations"})).await;
    assert_eq!(
        bob.expect("conversations").await["items"],
        json!([{
            "conversation_id": conv,
            "kind": "group",
            "group_id": gid,
            "name": "comeback",
            "last_message_id": 2,
            "acked_up_to": 1,
            "unread": 1,
            // Three members; what bob sent before he left is not his any more.
            "members": 3
        }])
    );
    // A fresh connection's sync replays what came after rejoining, and
    // nothing from before.
    let mut bob2 = server.raw_client("bob").await;
    let got = bob2.sync().await;
    assert_eq!(ids(&got), vec![2]);
    assert_eq!(got[0]["text"], "welcome back");
    // The refused send stored nothing.
    let h = alice.history(&conv, None, None).await;
    assert_eq!(ids(h["messages"].as_array().unwrap()), vec![1, 2]);
    server.stop().await;
}

#[tokio::test]
async fn a_group_holds_at_most_100_members() {
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let too_many: Vec<String> = (0..100).map(|i| format!("u{i}")).collect();
    let refs: Vec<&str> = too_many.iter().map(String::as_str).collect();
    alice
        .send(json!({"action":"createGroup","name":"big","members":refs}))
        .await;
    assert_eq!(alice.expect("error").await["code"], "group_full");

    let g = alice.create_group("big", &refs[..99]).await;
    assert_eq!(g["members"].as_array().unwrap().len(), 100);
    let gid = g["group_id"].as_str().unwrap();
    alice
        .send(json!({"action":"addMember","group_id":gid,"user_id":"one-too-many"}))
        .await;
    let e = alice.expect("error").await;
    assert_eq!(
        (e["code"].as_str(), e["action"].as_str()),
        (Some("group_full"), Some("addMember"))
    );
    // A member who leaves frees a seat.
    alice
        .send(json!({"action":"removeMember","group_id":gid,"user_id":"u5"}))
        .await;
    alice.expect("group").await;
    alice
        .send(json!({"action":"addMember","group_id":gid,"user_id":"one-too-many"}))
        .await;
    assert_eq!(
        alice.expect("group").await["members"]
            .as_array()
            .unwrap()
            .len(),
        100
    );
    server.stop().await;
}

#[tokio::test]
async fn a_member_added_later_syncs_only_what_came_after_joining_and_groups_list_in_conversations()
{
    let server = TestServer::start().await;
    let mut alice = server.client("alice").await;
    let gid = alice.create_group("later", &["bob"]).await["group_id"]
        .as_str()
        .unwrap()
        .to_string();
    alice
        .send_text(&format!("group:{gid}"), "before dave")
        .await;
    alice
        .send(json!({"action":"addMember","group_id":gid,"user_id":"dave"}))
        .await;
    alice.expect("group").await;
    alice.send_text(&format!("group:{gid}"), "after dave").await;
    let mut dave = server.raw_client("dave").await;
    let got = dave.sync().await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0]["text"], "after dave");
    dave.send(json!({"action":"conversations"})).await;
    let c = dave.expect("conversations").await;
    let item = &c["items"][0];
    assert_eq!(item["conversation_id"], format!("grp#{gid}"));
    assert_eq!(item["kind"], "group");
    assert_eq!(item["name"], "later");
    assert_eq!(
        (
            item["last_message_id"].as_u64(),
            item["acked_up_to"].as_u64(),
            item["unread"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    server.stop().await;
}

/// A server whose per-IP connection rate lets a test open 100 clients.
async fn roomy_server(socket: conn_tier::limits::SocketConfig) -> TestServer {
    TestServer::start_with_settings(conn_tier::config::Settings {
        socket,
        limits: conn_tier::listener::Limits {
            new_per_ip_per_sec: 1000,
            new_per_ip_burst: 1000,
            ..Default::default()
        },
        users: conn_tier::hub::UserLimits {
            burst: 1000,
            per_sec: 1000,
            ..Default::default()
        },
        ..Default::default()
    })
    .await
}

/// The ids of the next `n` messages `c` gets (other frames skipped).
async fn next_ids(c: &mut TestClient, n: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    while ids.len() < n {
        let f = c.recv().await;
        if f["type"] == "message" {
            ids.push(f["message_id"].as_u64().unwrap());
        }
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_member_group_gets_every_message_in_order_on_every_member() {
    let server = roomy_server(Default::default()).await;
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let names: Vec<String> = (1..100).map(|i| format!("m{i}-{tag}")).collect();
    let mut owner = server.client(&format!("owner-{tag}")).await;
    let mut members = Vec::new();
    for n in &names {
        members.push(server.client(n).await);
    }
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let g = owner.create_group("a hundred", &refs).await;
    assert_eq!(g["members"].as_array().unwrap().len(), 100);
    let to = format!("group:{}", g["group_id"].as_str().unwrap());
    // Fewer on the emulator (each send is a transaction and a few reads
    // there). A group this large is delivered by the hub, by user, without
    // a connection look-up per member (docs/design.md, "Broadcast in
    // conn-tier").
    let n: u64 = if store_kind() == "dynamodb" { 3 } else { 20 };
    for i in 1..=n {
        owner.send_text(&to, &format!("to all {i}")).await;
    }
    for m in members.iter_mut() {
        assert_eq!(next_ids(m, n as usize).await, (1..=n).collect::<Vec<_>>());
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_member_is_closed_with_1008_and_the_others_get_everything_in_order() {
    if store_kind() == "dynamodb" {
        // 8 MB of messages: minutes on the emulator. The socket's rules
        // are the same on every store, and this test ran on the embedded
        // store in the same `scripts/test-all`: said, not passed silently.
        eprintln!("not run on dynamodb: covered by the embedded store's run");
        return;
    }
    // A write timeout of a minute: the close can only come from the stuck
    // member's outbound queue filling (1 MiB), long before it.
    let server = roomy_server(conn_tier::limits::SocketConfig {
        outbound_bytes: 1024 * 1024,
        write_timeout: Duration::from_secs(60),
        ..Default::default()
    })
    .await;
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let names: Vec<String> = (1..10).map(|i| format!("s{i}-{tag}")).collect();
    let mut owner = server.client(&format!("owner-{tag}")).await;
    let mut readers: Vec<TestClient> = Vec::new();
    for n in &names[1..] {
        readers.push(server.client(n).await);
    }
    // Connected with a tiny receive buffer, and never reading again.
    let mut stuck = server.tight_client(&names[0]).await;
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let g = owner.create_group("one stuck", &refs).await;
    let to = format!("group:{}", g["group_id"].as_str().unwrap());
    // The others read at once, each in a task of its own.
    let n = 800u64;
    let reading: Vec<_> = readers
        .into_iter()
        .map(|mut r| tokio::spawn(async move { next_ids(&mut r, n as usize).await }))
        .collect();
    // 800 × 10 KB: past the kernel's buffers (4 MB at most) and the queue.
    let big = "z".repeat(10_000);
    let started = std::time::Instant::now();
    for i in 1..=n {
        owner.send_text(&to, &format!("{i} {big}")).await;
    }
    for r in reading {
        assert_eq!(r.await.unwrap(), (1..=n).collect::<Vec<_>>());
    }
    let (code, reason) = stuck.expect_close_reason().await;
    assert_eq!(
        (code, reason.as_str()),
        (1008, "too slow: outbound queue overflowed")
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    server.stop().await;
}
