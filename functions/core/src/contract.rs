//! The store contract suite: one set of checks every [`Store`] and
//! [`Connections`] adapter must pass (memory, embedded, DynamoDB). Each
//! check uses fresh, randomly named conversations, so one store instance
//! can run them all, in any order, even against a shared emulator.
//!
//! An adapter's tests run it with one macro call, which makes one test per
//! check, named after it, so a failure names the check:
//!
//! ```ignore
//! chat_core::store_contract!(async { Fixture::from(Arc::new(MyStore::new()) as Arc<dyn Store>) });
//! chat_core::connections_contract!(async { Arc::new(MyConnections::new()) as Arc<dyn Connections> });
//! ```

use crate::error::Error;
use crate::ids::{ConversationId, UserId};
use crate::ports::*;
use std::sync::Arc;

/// A store under test, and whatever must live as long as it (a temporary
/// directory, say).
pub struct Fixture {
    pub store: Arc<dyn Store>,
    pub keep: Option<Box<dyn std::any::Any + Send>>,
}

impl From<Arc<dyn Store>> for Fixture {
    fn from(store: Arc<dyn Store>) -> Self {
        Fixture { store, keep: None }
    }
}

/// One test per store check. `$fixture` is a future of a [`Fixture`] (or
/// of an `Arc<dyn Store>`), evaluated afresh for every check.
#[macro_export]
macro_rules! store_contract {
    ($fixture:expr) => {
        $crate::store_contract!(@checks $fixture;
            ids_start_at_one_and_are_gapless,
            resend_returns_original_and_stores_nothing,
            append_moves_sender_watermark_and_enrolls_recipient,
            concurrent_appends_get_exactly_one_to_n,
            history_pages_backwards,
            messages_after_pages_forwards,
            watermark_only_moves_forward,
            conversations_list_memberships_with_newest_id,
            groups_change_only_at_the_expected_version,
            largest_text_round_trips,
            a_member_removed_while_sending_stays_removed,
            conversations_come_in_pages_by_id,
            a_quota_is_taken_up_to_its_limit,
        );
    };
    (@checks $fixture:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let fixture: $crate::contract::Fixture = ($fixture).await.into();
                $crate::contract::$check(fixture.store.clone()).await;
            }
        )*
    };
}

/// One test per connection-map check; `$connections` is a future of an
/// `Arc<dyn Connections>`.
#[macro_export]
macro_rules! connections_contract {
    ($connections:expr) => {
        $crate::connections_contract!(@checks $connections;
            connections_are_found_by_user_and_removed,
            a_sync_goes_live_only_once_every_skip_is_seen,
        );
    };
    (@checks $connections:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let c: std::sync::Arc<dyn $crate::ports::Connections> = ($connections).await;
                $crate::contract::$check(c).await;
            }
        )*
    };
}

/// One test per node-registry check; `$pair` is a future of the
/// connection map and the registry over the same table.
#[macro_export]
macro_rules! nodes_contract {
    ($pair:expr) => {
        $crate::nodes_contract!(@checks $pair;
            nodes_join_heartbeat_and_are_listed,
            a_node_declared_dead_cannot_heartbeat_and_a_newer_heartbeat_wins,
            a_nodes_connections_are_found_by_node_and_a_forgotten_node_is_gone,
        );
    };
    (@checks $pair:expr; $($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let (c, n): (
                    std::sync::Arc<dyn $crate::ports::Connections>,
                    std::sync::Arc<dyn $crate::ports::Nodes>,
                ) = ($pair).await;
                $crate::contract::$check(c, n).await;
            }
        )*
    };
}

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

fn msg(conv: &str, sender: &str, cmid: &str, text: &str) -> NewMessage {
    NewMessage {
        conversation_id: conv.to_string(),
        sender: sender.to_string(),
        client_msg_id: cmid.to_string(),
        text: text.to_string(),
        sent_at_ms: 1_700_000_000_000,
        enroll: vec![],
        origin: None,
        member_only: false,
    }
}

fn dm(a: &str, b: &str) -> String {
    let id = |u: &str| UserId::parse(u).expect("a valid user id");
    ConversationId::direct(&id(a), &id(b)).to_string()
}

pub async fn ids_start_at_one_and_are_gapless(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    assert_eq!(s.last_message_id(&conv).await.unwrap(), 0);
    for i in 1..=3u64 {
        let r = s
            .append(msg(&conv, &a, &format!("c{i}"), &format!("m{i}")))
            .await
            .unwrap();
        assert!(!r.duplicate);
        assert_eq!(r.message.message_id, i);
    }
    assert_eq!(s.last_message_id(&conv).await.unwrap(), 3);
    let all = s.messages_after(&conv, 0, 10).await.unwrap();
    let ids: Vec<u64> = all.iter().map(|m| m.message_id).collect();
    assert_eq!(ids, vec![1, 2, 3]);
    assert_eq!(all[1].text, "m2");
    assert_eq!(all[1].sender, a);
    assert_eq!(all[1].client_msg_id, "c2");
}

pub async fn resend_returns_original_and_stores_nothing(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    let first = s.append(msg(&conv, &a, "same", "hello")).await.unwrap();
    let again = s
        .append(msg(&conv, &a, "same", "hello, edited"))
        .await
        .unwrap();
    assert!(again.duplicate);
    assert_eq!(again.message, first.message);
    // The id is scoped to the sender: another user may use the same one.
    let other = s.append(msg(&conv, &b, "same", "mine")).await.unwrap();
    assert!(!other.duplicate);
    assert_eq!(other.message.message_id, 2);
    assert_eq!(s.messages_after(&conv, 0, 10).await.unwrap().len(), 2);
}

pub async fn append_moves_sender_watermark_and_enrolls_recipient(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    let mut m = msg(&conv, &a, "c1", "hi");
    m.enroll = vec![b.clone()];
    s.append(m.clone()).await.unwrap();
    m.client_msg_id = "c2".into();
    s.append(m).await.unwrap();
    assert_eq!(
        s.membership(&a, &conv).await.unwrap().unwrap().acked_up_to,
        2
    );
    let mb = s.membership(&b, &conv).await.unwrap().unwrap();
    assert_eq!(mb.acked_up_to, 0);
    assert_eq!(mb.conversation_id, conv);
    assert!(s.membership(&unique("z"), &conv).await.unwrap().is_none());
}

pub async fn concurrent_appends_get_exactly_one_to_n(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    let n = 24u64;
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let s = s.clone();
            let sender = if i % 2 == 0 { a.clone() } else { b.clone() };
            let conv = conv.clone();
            tokio::spawn(async move { s.append(msg(&conv, &sender, &format!("c{i}"), "x")).await })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap().unwrap().message.message_id);
    }
    ids.sort();
    assert_eq!(ids, (1..=n).collect::<Vec<_>>());
    let stored: Vec<u64> = s
        .messages_after(&conv, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(stored, (1..=n).collect::<Vec<_>>());
}

pub async fn history_pages_backwards(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    for i in 1..=7 {
        s.append(msg(&conv, &a, &format!("c{i}"), &format!("m{i}")))
            .await
            .unwrap();
    }
    let ids = |p: &HistoryPage| p.messages.iter().map(|m| m.message_id).collect::<Vec<_>>();
    let p = s.messages_before(&conv, None, 3).await.unwrap();
    assert_eq!((ids(&p), p.has_more), (vec![5, 6, 7], true));
    let p = s.messages_before(&conv, Some(5), 3).await.unwrap();
    assert_eq!((ids(&p), p.has_more), (vec![2, 3, 4], true));
    let p = s.messages_before(&conv, Some(2), 3).await.unwrap();
    assert_eq!((ids(&p), p.has_more), (vec![1], false));
    let p = s.messages_before(&conv, Some(100), 100).await.unwrap();
    assert_eq!((ids(&p).len(), p.has_more), (7, false));
    let p = s
        .messages_before(&dm(&unique("x"), &unique("y")), None, 10)
        .await
        .unwrap();
    assert_eq!((ids(&p).len(), p.has_more), (0, false));
}

pub async fn messages_after_pages_forwards(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    for i in 1..=5 {
        s.append(msg(&conv, &a, &format!("c{i}"), "x"))
            .await
            .unwrap();
    }
    let ids: Vec<u64> = s
        .messages_after(&conv, 2, 2)
        .await
        .unwrap()
        .iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(ids, vec![3, 4]);
    assert!(s.messages_after(&conv, 5, 10).await.unwrap().is_empty());
}

pub async fn watermark_only_moves_forward(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    let mut m = msg(&conv, &a, "c1", "x");
    m.enroll = vec![b.clone()];
    s.append(m).await.unwrap();
    assert_eq!(
        s.advance_watermark(&b, &conv, 1).await.unwrap(),
        Some((1, true))
    );
    assert_eq!(
        s.advance_watermark(&b, &conv, 1).await.unwrap(),
        Some((1, false))
    );
    assert_eq!(
        s.advance_watermark(&b, &conv, 0).await.unwrap(),
        Some((1, false))
    );
    assert_eq!(
        s.membership(&b, &conv).await.unwrap().unwrap().acked_up_to,
        1
    );
    assert_eq!(
        s.advance_watermark(&unique("z"), &conv, 1).await.unwrap(),
        None
    );
}

pub async fn conversations_list_memberships_with_newest_id(s: Arc<dyn Store>) {
    let (a, b, c) = (unique("a"), unique("b"), unique("c"));
    let (ab, ac) = (dm(&a, &b), dm(&a, &c));
    for i in 0..3 {
        s.append(msg(&ab, &b, &format!("b{i}"), "x")).await.unwrap();
    }
    let mut m = msg(&ac, &a, "a0", "x");
    m.enroll = vec![c.clone()];
    s.append(m).await.unwrap();
    let mut m = msg(&ab, &a, "a1", "x");
    m.enroll = vec![b.clone()];
    s.append(m).await.unwrap();
    let mut list = s.conversations(&a).await.unwrap();
    list.sort_by(|x, y| {
        x.membership
            .conversation_id
            .cmp(&y.membership.conversation_id)
    });
    let got: Vec<(String, u64, u64)> = list
        .iter()
        .map(|c| {
            (
                c.membership.conversation_id.clone(),
                c.last_message_id,
                c.membership.acked_up_to,
            )
        })
        .collect();
    let mut want = vec![(ab.clone(), 4, 4), (ac.clone(), 1, 1)];
    want.sort();
    assert_eq!(got, want);
    assert!(s.conversations(&unique("nobody")).await.unwrap().is_empty());
}

pub async fn groups_change_only_at_the_expected_version(s: Arc<dyn Store>) {
    let gid = unique("g");
    let conv = ConversationId::group(&gid).to_string();
    let (a, b, c) = (unique("a"), unique("b"), unique("c"));
    let member = |u: &str, seq| GroupMember {
        user_id: u.to_string(),
        joined_at_ms: 1,
        seq,
    };
    let group = Group {
        group_id: gid.clone(),
        name: "team ✨".into(),
        created_by: a.clone(),
        created_at_ms: 1,
        admins: vec![a.clone()],
        members: vec![member(&a, 0), member(&b, 1)],
        version: 1,
        next_seq: 2,
    };
    s.create_group(&group).await.unwrap();
    assert_eq!(s.group(&gid).await.unwrap().as_ref(), Some(&group));
    assert!(matches!(
        s.create_group(&group).await,
        Err(Error::Contended)
    ));
    assert_eq!(
        s.membership(&b, &conv).await.unwrap().unwrap().acked_up_to,
        0
    );
    s.append(msg(&conv, &a, "g1", "before c joined"))
        .await
        .unwrap();

    let add = GroupChange {
        group_id: gid.clone(),
        expected_version: 1,
        admins: vec![a.clone()],
        add: vec![(member(&c, 2), 1)],
        remove: vec![],
    };
    let after = s.update_group(&add).await.unwrap();
    assert_eq!(after.version, 2);
    assert_eq!(after.member_ids(), vec![a.clone(), b.clone(), c.clone()]);
    assert_eq!(s.group(&gid).await.unwrap().unwrap(), after);
    assert_eq!(
        s.membership(&c, &conv).await.unwrap().unwrap().acked_up_to,
        1
    );
    // A stale version loses, and changes nothing.
    let stale = GroupChange {
        remove: vec![b.clone()],
        add: vec![],
        ..add.clone()
    };
    assert!(matches!(
        s.update_group(&stale).await,
        Err(Error::Contended)
    ));
    assert_eq!(s.group(&gid).await.unwrap().unwrap().members.len(), 3);

    let remove = GroupChange {
        group_id: gid.clone(),
        expected_version: 2,
        admins: vec![b.clone()],
        add: vec![],
        remove: vec![a.clone()],
    };
    let after = s.update_group(&remove).await.unwrap();
    assert_eq!(after.member_ids(), vec![b.clone(), c.clone()]);
    assert_eq!(after.admins, vec![b.clone()]);
    assert!(s.membership(&a, &conv).await.unwrap().is_none());
    assert_eq!(s.group(&gid).await.unwrap().unwrap().next_seq, 3);
    assert!(s.group(&unique("nope")).await.unwrap().is_none());
}

pub async fn largest_text_round_trips(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    // 853 × 12 bytes + 4: exactly the 10,240-byte limit, in 1- to 4-byte characters.
    let text = "ü€😀\"\\\n".repeat(853) + "abcd";
    assert_eq!(text.len(), crate::protocol::MAX_TEXT_BYTES);
    s.append(msg(&conv, &a, "big", &text)).await.unwrap();
    assert_eq!(s.messages_after(&conv, 0, 1).await.unwrap()[0].text, text);
}

pub async fn a_member_removed_while_sending_stays_removed(s: Arc<dyn Store>) {
    let gid = unique("g");
    let conv = ConversationId::group(&gid).to_string();
    let (admin, member) = (unique("a"), unique("m"));
    let joined = |u: &str, seq| GroupMember {
        user_id: u.to_string(),
        joined_at_ms: 1,
        seq,
    };
    s.create_group(&Group {
        group_id: gid.clone(),
        name: "race".into(),
        created_by: admin.clone(),
        created_at_ms: 1,
        admins: vec![admin.clone()],
        members: vec![joined(&admin, 0), joined(&member, 1)],
        version: 1,
        next_seq: 2,
    })
    .await
    .unwrap();
    let sender = {
        let (s, conv, member) = (s.clone(), conv.clone(), member.clone());
        tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for i in 0..30 {
                let mut m = msg(&conv, &member, &format!("r{i}"), "still here?");
                m.member_only = true;
                outcomes.push(s.append(m).await.map(|a| a.message.message_id));
                tokio::task::yield_now().await;
            }
            outcomes
        })
    };
    // The admin removes the member while the sends go on.
    tokio::task::yield_now().await;
    let group = s.group(&gid).await.unwrap().unwrap();
    s.update_group(&GroupChange {
        group_id: gid.clone(),
        expected_version: group.version,
        admins: vec![admin.clone()],
        add: vec![],
        remove: vec![member.clone()],
    })
    .await
    .unwrap();
    let outcomes = sender.await.unwrap();
    // A send never re-creates the membership...
    assert!(s.membership(&member, &conv).await.unwrap().is_none());
    assert_eq!(
        s.group(&gid).await.unwrap().unwrap().member_ids(),
        vec![admin.clone()]
    );
    // ...every send after the removal was refused...
    let stored: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().copied())
        .collect();
    for o in &outcomes {
        if let Err(e) = o {
            assert!(matches!(e, Error::Forbidden), "{e:?}");
        }
    }
    let first_refused = outcomes.iter().position(|o| o.is_err());
    if let Some(k) = first_refused {
        assert!(
            outcomes[k..].iter().all(|o| o.is_err()),
            "once removed, always refused"
        );
    }
    // ...and a send after it all is refused too; what was stored is gapless.
    let mut late = msg(&conv, &member, "late", "let me back in");
    late.member_only = true;
    assert!(matches!(s.append(late).await, Err(Error::Forbidden)));
    let ids: Vec<u64> = s
        .messages_after(&conv, 0, 100)
        .await
        .unwrap()
        .iter()
        .map(|m| m.message_id)
        .collect();
    assert_eq!(ids, (1..=stored.len() as u64).collect::<Vec<_>>());
}

pub async fn conversations_come_in_pages_by_id(s: Arc<dyn Store>) {
    let me = unique("p");
    let mut convs = Vec::new();
    for i in 0..7 {
        let peer = format!("{}{i}", unique("q"));
        let conv = dm(&me, &peer);
        s.append(msg(&conv, &me, &format!("c{i}"), "hello"))
            .await
            .unwrap();
        convs.push(conv);
    }
    convs.sort();
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let (page, more) = s
            .conversations_page(&me, after.as_deref(), 3)
            .await
            .unwrap();
        assert!(page.len() <= 3);
        seen.extend(page.iter().map(|c| c.membership.conversation_id.clone()));
        assert!(page.iter().all(|c| c.last_message_id == 1));
        if !more {
            break;
        }
        after = page.last().map(|c| c.membership.conversation_id.clone());
    }
    assert_eq!(seen, convs, "every conversation once, in id order");
    let (first, more) = s.conversations_page(&me, None, 100).await.unwrap();
    assert_eq!((first.len(), more), (7, false));
}

pub async fn a_quota_is_taken_up_to_its_limit(s: Arc<dyn Store>) {
    let (user, other) = (unique("u"), unique("u"));
    for _ in 0..3 {
        assert!(s
            .take_quota(&user, "groups#1", 3, u64::MAX / 2)
            .await
            .unwrap());
    }
    assert!(!s
        .take_quota(&user, "groups#1", 3, u64::MAX / 2)
        .await
        .unwrap());
    // Another day, another user: their own counters.
    assert!(s
        .take_quota(&user, "groups#2", 3, u64::MAX / 2)
        .await
        .unwrap());
    assert!(s
        .take_quota(&other, "groups#1", 3, u64::MAX / 2)
        .await
        .unwrap());
}

pub async fn connections_are_found_by_user_and_removed(c: Arc<dyn Connections>) {
    let (u, v) = (unique("u"), unique("v"));
    let rec = |id: &str, user: &str| ConnectionRecord {
        connection_id: id.to_string(),
        user_id: user.to_string(),
        endpoint: "node-1".into(),
        connected_at_ms: 5,
        ..Default::default()
    };
    let (c1, c2, c3) = (unique("c"), unique("c"), unique("c"));
    c.register(&rec(&c1, &u)).await.unwrap();
    c.register(&rec(&c2, &u)).await.unwrap();
    c.register(&rec(&c3, &v)).await.unwrap();
    let mut mine: Vec<String> = c
        .for_user(&u)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.connection_id)
        .collect();
    mine.sort();
    let mut want = vec![c1.clone(), c2.clone()];
    want.sort();
    assert_eq!(mine, want);
    assert_eq!(c.get(&c3).await.unwrap(), Some(rec(&c3, &v)));
    c.remove(&c1).await.unwrap();
    assert_eq!(c.get(&c1).await.unwrap(), None);
    c.remove(&unique("never-registered")).await.unwrap();
    let left = c.for_user(&u).await.unwrap();
    assert_eq!(left, vec![rec(&c2, &u)]);
    assert!(c.for_user(&unique("nobody")).await.unwrap().is_empty());
}

pub async fn a_sync_goes_live_only_once_every_skip_is_seen(c: Arc<dyn Connections>) {
    let (user, conn) = (unique("u"), unique("c"));
    let (ab, ac) = (format!("dm#{user}#x"), format!("dm#{user}#y"));
    c.register(&ConnectionRecord {
        connection_id: conn.clone(),
        user_id: user.clone(),
        endpoint: "e".into(),
        connected_at_ms: 1,
        sync: SyncState::Pending,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        c.get(&conn).await.unwrap().unwrap().sync,
        SyncState::Pending
    );
    assert!(!c.begin_sync(&unique("gone")).await.unwrap());
    assert!(c.begin_sync(&conn).await.unwrap());
    assert_eq!(
        c.get(&conn).await.unwrap().unwrap().sync,
        SyncState::Syncing
    );
    // Two skips in one conversation, one in another.
    c.note_skipped(&conn, &ab).await.unwrap();
    c.note_skipped(&conn, &ab).await.unwrap();
    c.note_skipped(&conn, &ac).await.unwrap();
    let marks = std::collections::BTreeMap::from([(ab.clone(), 7u64)]);
    match c.go_live(&conn, &marks, 0).await.unwrap() {
        GoLive::Skipped {
            mut conversations,
            skips,
        } => {
            conversations.sort();
            let mut want = vec![ab.clone(), ac.clone()];
            want.sort();
            assert_eq!((conversations, skips), (want, 3));
        }
        GoLive::Done => panic!("went live with unseen skips"),
    }
    assert_eq!(
        c.get(&conn).await.unwrap().unwrap().sync,
        SyncState::Syncing
    );
    // One more skip after the sync looked: still not live.
    c.note_skipped(&conn, &ab).await.unwrap();
    assert!(matches!(
        c.go_live(&conn, &marks, 3).await.unwrap(),
        GoLive::Skipped { skips: 4, .. }
    ));
    assert_eq!(c.go_live(&conn, &marks, 4).await.unwrap(), GoLive::Done);
    let rec = c.get(&conn).await.unwrap().unwrap();
    assert_eq!((rec.sync, rec.replayed), (SyncState::Live, marks));
    // Live: skips are not noted, and the user's index shows the state.
    c.note_skipped(&conn, &ab).await.unwrap();
    let listed = c.for_user(&user).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].sync, SyncState::Live);
    assert!(c.begin_sync(&conn).await.unwrap());
    assert_eq!(
        c.go_live(&conn, &Default::default(), 0).await.unwrap(),
        GoLive::Done
    );
}

fn node(id: &str, at: u64) -> NodeRecord {
    NodeRecord {
        node_id: id.to_string(),
        management_url: "http://127.0.0.1:8201".into(),
        ws_url: "ws://lb/ws".into(),
        started_at_ms: at,
        heartbeat_at_ms: at,
        draining: false,
        dead: false,
    }
}

async fn listed(n: &Arc<dyn Nodes>, id: &str) -> Option<NodeRecord> {
    n.nodes()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.node_id == id)
}

pub async fn nodes_join_heartbeat_and_are_listed(_c: Arc<dyn Connections>, n: Arc<dyn Nodes>) {
    let (a, b) = (unique("node-"), unique("node-"));
    n.join(&node(&a, 1000)).await.unwrap();
    n.join(&node(&b, 1000)).await.unwrap();
    assert!(n.join(&node(&a, 1000)).await.is_err(), "an id joins once");
    assert!(n.heartbeat(&a, 3000, false).await.unwrap());
    assert!(n.heartbeat(&b, 3500, true).await.unwrap());
    let ra = listed(&n, &a).await.unwrap();
    assert_eq!(
        (ra.heartbeat_at_ms, ra.draining, ra.dead),
        (3000, false, false)
    );
    assert_eq!(ra.management_url, "http://127.0.0.1:8201");
    assert_eq!(ra.ws_url, "ws://lb/ws");
    assert_eq!(ra.started_at_ms, 1000);
    let rb = listed(&n, &b).await.unwrap();
    assert_eq!((rb.heartbeat_at_ms, rb.draining), (3500, true));
    assert!(!n
        .heartbeat(&unique("never-joined-"), 1, false)
        .await
        .unwrap());
}

pub async fn a_node_declared_dead_cannot_heartbeat_and_a_newer_heartbeat_wins(
    _c: Arc<dyn Connections>,
    n: Arc<dyn Nodes>,
) {
    let a = unique("node-");
    n.join(&node(&a, 1000)).await.unwrap();
    assert!(n.heartbeat(&a, 2000, false).await.unwrap());
    // A janitor that saw the heartbeat of 1000 is too late: it beat since.
    assert!(!n.declare_dead(&a, 1000).await.unwrap());
    assert!(!listed(&n, &a).await.unwrap().dead);
    assert!(n.declare_dead(&a, 2000).await.unwrap());
    assert!(!n.declare_dead(&a, 2000).await.unwrap(), "once");
    assert!(listed(&n, &a).await.unwrap().dead);
    assert!(
        !n.heartbeat(&a, 9000, false).await.unwrap(),
        "the dead stay dead"
    );
    assert_eq!(listed(&n, &a).await.unwrap().heartbeat_at_ms, 2000);
}

pub async fn a_nodes_connections_are_found_by_node_and_a_forgotten_node_is_gone(
    c: Arc<dyn Connections>,
    n: Arc<dyn Nodes>,
) {
    let (a, b) = (unique("node-"), unique("node-"));
    n.join(&node(&a, 1)).await.unwrap();
    let rec = |id: &str, node: Option<&str>| ConnectionRecord {
        connection_id: id.to_string(),
        user_id: unique("u"),
        endpoint: "http://127.0.0.1:8201".into(),
        node_id: node.map(str::to_string),
        connected_at_ms: 1,
        ..Default::default()
    };
    let (c1, c2, c3, c4) = (unique("c"), unique("c"), unique("c"), unique("c"));
    c.register(&rec(&c1, Some(&a))).await.unwrap();
    c.register(&rec(&c2, Some(&a))).await.unwrap();
    c.register(&rec(&c3, Some(&b))).await.unwrap();
    c.register(&rec(&c4, None)).await.unwrap();
    assert_eq!(
        c.get(&c1).await.unwrap().unwrap().node_id.as_deref(),
        Some(a.as_str())
    );
    let mut of_a = n.connections_of(&a).await.unwrap();
    of_a.sort();
    let mut want = vec![c1.clone(), c2.clone()];
    want.sort();
    assert_eq!(of_a, want);
    c.remove(&c1).await.unwrap();
    assert_eq!(n.connections_of(&a).await.unwrap(), vec![c2.clone()]);
    assert_eq!(n.connections_of(&b).await.unwrap(), vec![c3]);
    n.forget(&a).await.unwrap();
    assert!(listed(&n, &a).await.is_none());
    assert!(
        !n.heartbeat(&a, 5, false).await.unwrap(),
        "a forgotten node must rejoin"
    );
    n.forget(&a).await.unwrap();
}
