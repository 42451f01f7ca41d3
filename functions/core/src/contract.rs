//! The store contract suite: one set of checks every [`Store`] and
//! [`Connections`] adapter must pass (memory, embedded, DynamoDB). Each
//! check uses fresh, randomly named conversations, so one store instance
//! can run them all, in any order, even against a shared emulator.
//!
//! Adapters run it from a test: `for (name, check) in store_checks() { check(store.clone()).await }`.

use crate::error::Error;
use crate::ports::*;
use futures_util::future::BoxFuture;
use std::sync::Arc;

pub type StoreCheck = fn(Arc<dyn Store>) -> BoxFuture<'static, ()>;
pub type ConnectionsCheck = fn(Arc<dyn Connections>) -> BoxFuture<'static, ()>;

/// Every store check, by name.
pub fn store_checks() -> Vec<(&'static str, StoreCheck)> {
    vec![
        ("ids_start_at_one_and_are_gapless", |s| {
            Box::pin(ids_start_at_one_and_are_gapless(s))
        }),
        ("resend_returns_original_and_stores_nothing", |s| {
            Box::pin(resend_returns_original_and_stores_nothing(s))
        }),
        ("append_moves_sender_watermark_and_enrolls_recipient", |s| {
            Box::pin(append_moves_sender_watermark_and_enrolls_recipient(s))
        }),
        ("concurrent_appends_get_exactly_one_to_n", |s| {
            Box::pin(concurrent_appends_get_exactly_one_to_n(s))
        }),
        ("history_pages_backwards", |s| {
            Box::pin(history_pages_backwards(s))
        }),
        ("messages_after_pages_forwards", |s| {
            Box::pin(messages_after_pages_forwards(s))
        }),
        ("watermark_only_moves_forward", |s| {
            Box::pin(watermark_only_moves_forward(s))
        }),
        ("conversations_list_memberships_with_newest_id", |s| {
            Box::pin(conversations_list_memberships_with_newest_id(s))
        }),
        ("groups_change_only_at_the_expected_version", |s| {
            Box::pin(groups_change_only_at_the_expected_version(s))
        }),
        ("large_unicode_text_round_trips", |s| {
            Box::pin(large_unicode_text_round_trips(s))
        }),
    ]
}

/// Every connection-map check, by name.
pub fn connections_checks() -> Vec<(&'static str, ConnectionsCheck)> {
    vec![("connections_are_found_by_user_and_removed", |c| {
        Box::pin(connections_are_found_by_user_and_removed(c))
    })]
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
    }
}

fn dm(a: &str, b: &str) -> String {
    if a <= b {
        format!("dm#{a}#{b}")
    } else {
        format!("dm#{b}#{a}")
    }
}

async fn ids_start_at_one_and_are_gapless(s: Arc<dyn Store>) {
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

async fn resend_returns_original_and_stores_nothing(s: Arc<dyn Store>) {
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

async fn append_moves_sender_watermark_and_enrolls_recipient(s: Arc<dyn Store>) {
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

async fn concurrent_appends_get_exactly_one_to_n(s: Arc<dyn Store>) {
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

async fn history_pages_backwards(s: Arc<dyn Store>) {
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

async fn messages_after_pages_forwards(s: Arc<dyn Store>) {
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

async fn watermark_only_moves_forward(s: Arc<dyn Store>) {
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

async fn conversations_list_memberships_with_newest_id(s: Arc<dyn Store>) {
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

async fn groups_change_only_at_the_expected_version(s: Arc<dyn Store>) {
    let gid = unique("g");
    let conv = format!("grp#{gid}");
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
    assert!(matches!(s.create_group(&group).await, Err(Error::Conflict)));
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
    assert!(matches!(s.update_group(&stale).await, Err(Error::Conflict)));
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

async fn large_unicode_text_round_trips(s: Arc<dyn Store>) {
    let (a, b) = (unique("a"), unique("b"));
    let conv = dm(&a, &b);
    let text = "ü€😀\"\\\n".repeat(10_240 / 16);
    s.append(msg(&conv, &a, "big", &text)).await.unwrap();
    assert_eq!(s.messages_after(&conv, 0, 1).await.unwrap()[0].text, text);
}

async fn connections_are_found_by_user_and_removed(c: Arc<dyn Connections>) {
    let (u, v) = (unique("u"), unique("v"));
    let rec = |id: &str, user: &str| ConnectionRecord {
        connection_id: id.to_string(),
        user_id: user.to_string(),
        endpoint: "node-1".into(),
        connected_at_ms: 5,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryConnections, MemoryStore};

    #[tokio::test]
    async fn memory_store_passes_the_contract() {
        let s: Arc<dyn Store> = Arc::new(MemoryStore::new());
        for (_name, check) in store_checks() {
            check(s.clone()).await;
        }
        let c: Arc<dyn Connections> = Arc::new(MemoryConnections::new());
        for (_name, check) in connections_checks() {
            check(c.clone()).await;
        }
    }
}
