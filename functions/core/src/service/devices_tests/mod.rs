//! Every device catches up: `sync` per device cursor, `received`, the
//! `gap` frame, and a failed read that must not end in `synced`. Over the
//! in-memory store; the end-to-end tests run the same over real sockets.

use super::test_support::{chat_over, Answers, Jobs};
use super::*;
use crate::memory::MemoryStore;
use crate::protocol::ReceivedItem;
use std::collections::BTreeMap;

mod simulation;

struct World {
    chat: Chat,
    store: Arc<MemoryStore>,
    jobs: Arc<Jobs>,
}

fn world() -> World {
    let store = Arc::new(MemoryStore::new());
    let (chat, jobs) = chat_over(store.clone(), MessageDelivery::Dispatch);
    World { chat, store, jobs }
}

/// A group `creator` makes with `members`: its id.
async fn group(w: &World, creator: &Session, members: &[&str]) -> String {
    let members = members.iter().map(|m| m.to_string()).collect();
    match w.chat.create_group(creator, "g".into(), members).await {
        Ok(ServerFrame::Group { group_id, .. }) => group_id,
        other => panic!("{other:?}"),
    }
}

fn on(user: &str, device: Option<&str>) -> Session {
    let conn = format!("{user}-{}", device.unwrap_or("none"));
    Session::new(conn, UserId::parse(user).unwrap())
        .with_device(device.map(|d| DeviceId::parse(d).unwrap()))
}

/// The message ids (and gaps) a sync answers, per conversation, in order.
async fn sync(w: &World, s: &Session) -> (BTreeMap<String, Vec<u64>>, Vec<(String, u64, u64)>) {
    let answers = Answers::default();
    w.chat.handle(s, ClientFrame::Sync {}, &answers).await;
    let frames = answers.0.into_inner().unwrap();
    assert_eq!(frames.last(), Some(&ServerFrame::Synced {}), "{frames:?}");
    let mut ids: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut gaps = vec![];
    for f in frames {
        match f {
            ServerFrame::Message(m) => ids.entry(m.conversation_id).or_default().push(m.message_id),
            ServerFrame::Gap {
                conversation_id,
                after,
                before,
            } => gaps.push((conversation_id, after, before)),
            _ => {}
        }
    }
    (ids, gaps)
}

async fn send(w: &World, s: &Session, to: &str, text: &str) -> (String, u64) {
    match w
        .chat
        .send(s, to, format!("{}-{text}", s.connection_id), text.into())
        .await
        .unwrap()
    {
        ServerFrame::Ack {
            conversation_id,
            message_id,
            ..
        } => (conversation_id, message_id),
        other => panic!("{other:?}"),
    }
}

/// The device tells it holds every id of `conv` from `from` to `up_to`.
async fn received(w: &World, s: &Session, conv: &str, from: u64, up_to: u64) -> Result<()> {
    w.chat
        .received(
            s,
            &[ReceivedItem {
                conversation_id: conv.into(),
                from,
                up_to,
            }],
        )
        .await
}

/// A phone and a laptop of alice, both seen once.
async fn two_devices(w: &World) -> (Session, Session) {
    let (phone, laptop) = (on("alice", Some("phone")), on("alice", Some("laptop")));
    sync(w, &phone).await;
    sync(w, &laptop).await;
    (phone, laptop)
}

#[tokio::test]
async fn a_device_offline_gets_what_another_device_read() {
    let w = world();
    let bob = on("bob", None);
    let (c, _) = send(&w, &bob, "user:alice", "0").await;
    let (phone, laptop) = two_devices(&w).await;
    received(&w, &laptop, &c, 1, 1).await.unwrap();
    // The laptop goes offline; bob sends 3; the phone shows and reads them.
    for i in 1..=3 {
        send(&w, &bob, "user:alice", &i.to_string()).await;
    }
    received(&w, &phone, &c, 1, 4).await.unwrap();
    w.chat.ack(&phone, &c, 4).await.unwrap();
    let (ids, gaps) = sync(&w, &laptop).await;
    assert_eq!(ids[&c], vec![2, 3, 4]);
    assert!(gaps.is_empty());
    // A connection without a device still starts at the read watermark.
    assert!(sync(&w, &on("alice", None)).await.0.is_empty());
}

#[tokio::test]
async fn a_device_offline_gets_what_another_device_answered() {
    let w = world();
    let bob = on("bob", None);
    let (c, _) = send(&w, &bob, "user:alice", "0").await;
    let (phone, laptop) = two_devices(&w).await;
    received(&w, &laptop, &c, 1, 1).await.unwrap();
    for i in 1..=3 {
        send(&w, &bob, "user:alice", &i.to_string()).await;
    }
    // The phone only replies: sending moves alice's read watermark to 5.
    let (_, mine) = send(&w, &phone, "user:bob", "reply").await;
    assert_eq!(mine, 5);
    let (ids, _) = sync(&w, &laptop).await;
    assert_eq!(
        ids[&c],
        vec![2, 3, 4, 5],
        "the reply too: the laptop never had it"
    );
}

#[tokio::test]
async fn a_device_offline_gets_what_another_device_read_in_a_group() {
    let w = world();
    let carol = on("carol", None);
    let group_id = group(&w, &carol, &["alice", "bob"]).await;
    let to = format!("group:{group_id}");
    let (phone, laptop) = two_devices(&w).await;
    let (c, _) = send(&w, &carol, &to, "1").await;
    send(&w, &on("bob", None), &to, "2").await;
    send(&w, &carol, &to, "3").await;
    w.chat.ack(&phone, &c, 3).await.unwrap();
    received(&w, &phone, &c, 1, 3).await.unwrap();
    assert_eq!(sync(&w, &laptop).await.0[&c], vec![1, 2, 3]);
    // Removed: her devices get no more replays of that group.
    w.chat
        .remove_member(&carol, &group_id, "alice")
        .await
        .unwrap();
    send(&w, &carol, &to, "4").await;
    assert!(!sync(&w, &laptop).await.0.contains_key(&c));
    assert!(!sync(&w, &on("alice", Some("tablet")))
        .await
        .0
        .contains_key(&c));
}

#[tokio::test]
async fn a_new_device_gets_unread_only_and_a_known_one_new_to_a_chat_all_since_the_join() {
    let w = world();
    let bob = on("bob", None);
    for i in 1..=5 {
        send(&w, &bob, "user:alice", &i.to_string()).await;
    }
    let c = "dm#alice#bob".to_string();
    w.chat.ack(&on("alice", None), &c, 3).await.unwrap();
    // Never seen: what alice has not read.
    let tablet = on("alice", Some("tablet"));
    assert_eq!(sync(&w, &tablet).await.0[&c], vec![4, 5]);
    // Known now, with no cursor in a conversation that starts later: the
    // whole of it since the join point (2 messages), not the unread only.
    let carol = on("carol", None);
    send(&w, &carol, "user:alice", "c1").await;
    send(&w, &carol, "user:alice", "c2").await;
    w.chat
        .ack(&on("alice", None), "dm#alice#carol", 2)
        .await
        .unwrap();
    let (ids, gaps) = sync(&w, &tablet).await;
    assert_eq!(ids["dm#alice#carol"], vec![1, 2]);
    assert!(gaps.is_empty());
}

#[tokio::test]
async fn a_new_device_is_not_replayed_what_it_did_not_miss_at_its_next_sync() {
    let w = world();
    let bob = on("bob", None);
    for i in 1..=3 {
        send(&w, &bob, "user:alice", &i.to_string()).await;
    }
    w.chat
        .ack(&on("alice", None), "dm#alice#bob", 3)
        .await
        .unwrap();
    let tablet = on("alice", Some("tablet"));
    assert!(sync(&w, &tablet).await.0.is_empty(), "all read");
    // Known now: its first sync held everything of that conversation, so
    // it is not new to it (no replay from the join point again).
    assert!(sync(&w, &tablet).await.0.is_empty());
    send(&w, &bob, "user:alice", "4").await;
    assert_eq!(sync(&w, &tablet).await.0["dm#alice#bob"], vec![4]);
}

#[tokio::test]
async fn a_device_1000_behind_gets_the_newest_200_and_a_gap() {
    let w = world();
    let bob = on("bob", None);
    send(&w, &bob, "user:alice", "first").await;
    let laptop = on("alice", Some("laptop"));
    sync(&w, &laptop).await;
    let c = "dm#alice#bob";
    received(&w, &laptop, c, 1, 1).await.unwrap();
    for i in 2..=1001 {
        send(&w, &bob, "user:alice", &i.to_string()).await;
    }
    let (ids, gaps) = sync(&w, &laptop).await;
    assert_eq!(ids[c], (802..=1001).collect::<Vec<_>>());
    assert_eq!(gaps, vec![(c.to_string(), 1, 802)], "2 to 801 left out");
    // It pages back to message 1 with history.
    let mut before = 802;
    let mut got = 0;
    loop {
        let page = w
            .chat
            .history(&laptop, c, Some(before), Some(100))
            .await
            .unwrap();
        let ServerFrame::History {
            messages, has_more, ..
        } = page
        else {
            panic!()
        };
        got += messages.len();
        before = messages[0].message_id;
        if !has_more {
            break;
        }
    }
    assert_eq!((before, got), (1, 801));
    // Told of the gap, the device's run starts above the position it names
    // (what was left out counts as told): the cursor moves past it, and
    // the next sync replays nothing more.
    received(&w, &laptop, c, 2, 1001).await.unwrap();
    assert_eq!(
        w.store.cursors("alice", "laptop", now_ms()).await.unwrap()[c],
        1001
    );
    assert!(!sync(&w, &laptop).await.0.contains_key(c));
}

#[tokio::test]
async fn a_device_rejoining_a_group_moves_on_from_the_new_join_point() {
    let w = world();
    let carol = on("carol", None);
    let group_id = group(&w, &carol, &["alice"]).await;
    let to = format!("group:{group_id}");
    let c = format!("grp#{group_id}");
    let phone = on("alice", Some("phone"));
    sync(&w, &phone).await;
    send(&w, &carol, &to, "1").await;
    received(&w, &phone, &c, 1, 1).await.unwrap();
    // Removed, then added again after message 4: her phone's cursor (1) is
    // below the new join point.
    w.chat
        .remove_member(&carol, &group_id, "alice")
        .await
        .unwrap();
    for i in 2..=4 {
        send(&w, &carol, &to, &i.to_string()).await;
    }
    w.chat.add_member(&carol, &group_id, "alice").await.unwrap();
    send(&w, &carol, &to, "5").await;
    assert_eq!(sync(&w, &phone).await.0[&c], vec![5], "from the join point");
    received(&w, &phone, &c, 5, 5).await.unwrap();
    assert_eq!(
        w.store.cursors("alice", "phone", now_ms()).await.unwrap()[&c],
        5
    );
    assert!(!sync(&w, &phone).await.0.contains_key(&c));
}

#[tokio::test]
async fn a_first_sync_cut_short_still_leaves_the_device_at_the_read_watermark() {
    let w = world();
    let bob = on("bob", None);
    for i in 1..=3 {
        send(&w, &bob, "user:alice", &i.to_string()).await;
    }
    w.chat
        .ack(&on("alice", None), "dm#alice#bob", 2)
        .await
        .unwrap();
    // The tablet's first sync: the connection is gone before anything is
    // sent (the reply fails at once).
    let tablet = on("alice", Some("tablet"));
    w.chat
        .sync(&tablet, &super::test_support::Gone)
        .await
        .unwrap();
    // Its next sync starts where the first would have (unread only), not
    // at the join point.
    assert_eq!(sync(&w, &tablet).await.0["dm#alice#bob"], vec![3]);
}

#[tokio::test]
async fn received_moves_forward_only_clamped_and_never_for_strangers() {
    let w = world();
    let bob = on("bob", None);
    for i in 1..=4 {
        send(&w, &bob, "user:alice", &i.to_string()).await;
    }
    let c = "dm#alice#bob";
    let phone = on("alice", Some("phone"));
    sync(&w, &phone).await;
    received(&w, &phone, c, 1, 99).await.unwrap();
    received(&w, &phone, c, 1, 2).await.unwrap();
    let cursors = w.store.cursors("alice", "phone", now_ms()).await.unwrap();
    assert_eq!(cursors[c], 4, "clamped to the newest id, and never back");
    let err = received(&w, &on("eve", Some("x")), c, 1, 1)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden), "{err:?}");
    assert!(w
        .store
        .cursors("eve", "x", now_ms())
        .await
        .unwrap()
        .is_empty());
    let err = received(&w, &on("alice", None), c, 1, 1).await.unwrap_err();
    assert!(
        matches!(err, Error::BadRequest(_)),
        "needs a device: {err:?}"
    );
    // Nothing is fanned out for it: no receipt.
    let receipts = w
        .jobs
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|j| matches!(j.frame, ServerFrame::Receipt { .. }))
        .count();
    assert_eq!(receipts, 0);
}

#[tokio::test]
async fn an_ack_ahead_of_a_message_never_got_does_not_move_the_cursor_past_it() {
    // The review's case: the phone holds 1..4 and told so; bob's 5 is lost
    // on its way (a failed post, a dying socket); the phone's own send is
    // acked as 6 and it tells "I hold 6 to 6". The cursor must stay at 4.
    let w = world();
    let bob = on("bob", None);
    for i in 1..=4 {
        send(&w, &bob, "user:alice", &i.to_string()).await;
    }
    let c = "dm#alice#bob";
    let phone = on("alice", Some("phone"));
    sync(&w, &phone).await;
    received(&w, &phone, c, 1, 4).await.unwrap();
    send(&w, &bob, "user:alice", "5, never delivered").await;
    let (_, mine) = send(&w, &phone, "user:bob", "6").await;
    assert_eq!(mine, 6);
    received(&w, &phone, c, 6, 6).await.unwrap();
    let cursors = w.store.cursors("alice", "phone", now_ms()).await.unwrap();
    assert_eq!(cursors[c], 4, "a run from 6 steps over 5");
    let (ids, _) = sync(&w, &phone).await;
    assert_eq!(ids[c], vec![5, 6], "the next sync brings 5");
    // Once it holds 5 too, the run 5..6 moves it.
    received(&w, &phone, c, 5, 6).await.unwrap();
    assert_eq!(
        w.store.cursors("alice", "phone", now_ms()).await.unwrap()[c],
        6
    );
}

#[tokio::test]
async fn received_from_a_device_no_sync_made_known_is_refused_and_makes_no_device() {
    let w = world();
    send(&w, &on("bob", None), "user:alice", "1").await;
    let c = "dm#alice#bob";
    let fresh = on("alice", Some("never-synced"));
    let err = received(&w, &fresh, c, 1, 1).await.unwrap_err();
    assert!(matches!(err, Error::BadRequest(_)), "{err:?}");
    let now = now_ms();
    assert!(w
        .store
        .cursors("alice", "never-synced", now)
        .await
        .unwrap()
        .is_empty());
    assert!(!w
        .store
        .device_known("alice", "never-synced", now)
        .await
        .unwrap());
    // Synced once, it is known and its runs count.
    sync(&w, &fresh).await;
    received(&w, &fresh, c, 1, 1).await.unwrap();
    assert_eq!(
        w.store
            .cursors("alice", "never-synced", now_ms())
            .await
            .unwrap()[c],
        1
    );
}

#[tokio::test]
async fn a_sync_never_starts_below_the_join_point_even_if_the_newest_id_read_is_older() {
    let w = world();
    let carol = on("carol", None);
    let group_id = group(&w, &carol, &["bob"]).await;
    let to = format!("group:{group_id}");
    for i in 1..=5 {
        send(&w, &carol, &to, &i.to_string()).await;
    }
    w.chat.add_member(&carol, &group_id, "alice").await.unwrap();
    send(&w, &carol, &to, "6").await;
    let c = format!("grp#{group_id}");
    let m = w.store.membership("alice", &c).await.unwrap().unwrap();
    assert_eq!(m.joined_at_id, 5);
    // The plan, with a stale newest id (3, below the join point): nothing
    // to replay, and the replay would start at the join point, not at 3.
    let state = ConversationState {
        membership: m,
        last_message_id: 3,
    };
    let r = super::sync::plan_for_test(&state);
    assert_eq!((r.0, r.1), (5, 5), "position and start at the join point");
    let tablet = on("alice", Some("tablet"));
    assert_eq!(sync(&w, &tablet).await.0[&c], vec![6]);
}

#[tokio::test]
async fn a_failed_read_ends_the_sync_with_an_error_not_synced() {
    let w = world();
    let bob = on("bob", None);
    send(&w, &bob, "user:alice", "1").await;
    send(&w, &on("carol", None), "user:alice", "1").await;
    w.store.fail_reads_of(Some("dm#alice#carol"));
    let answers = Answers::default();
    w.chat
        .handle(&on("alice", Some("phone")), ClientFrame::Sync {}, &answers)
        .await;
    let frames = answers.0.into_inner().unwrap();
    assert!(!frames.contains(&ServerFrame::Synced {}), "{frames:?}");
    assert!(
        matches!(frames.last(), Some(ServerFrame::Error { code, action, .. })
            if code == "internal" && action.as_deref() == Some("sync")),
        "{frames:?}"
    );
    // Once the store reads again, the retry gets everything.
    w.store.fail_reads_of(None);
    let (ids, _) = sync(&w, &on("alice", Some("phone"))).await;
    assert_eq!(ids["dm#alice#carol"], vec![1]);
}
