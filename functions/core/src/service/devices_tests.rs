//! Every device catches up: `sync` per device cursor, `received`, the
//! `gap` frame, and a failed read that must not end in `synced`. Over the
//! in-memory store; the end-to-end tests run the same over real sockets.

use super::test_support::{Answers, Jobs};
use super::*;
use crate::memory::{MemoryConnections, MemoryStore};
use crate::protocol::ReceivedItem;
use std::collections::{BTreeMap, BTreeSet, HashMap};

struct World {
    chat: Chat,
    store: Arc<MemoryStore>,
    jobs: Arc<Jobs>,
}

fn world() -> World {
    let store = Arc::new(MemoryStore::new());
    let jobs = Arc::new(Jobs::default());
    let chat = Chat::new(
        store.clone(),
        Arc::new(MemoryConnections::new()),
        jobs.clone(),
        MessageDelivery::Dispatch,
    );
    World { chat, store, jobs }
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
    let g = w
        .chat
        .create_group(&carol, "g".into(), vec!["alice".into(), "bob".into()])
        .await
        .unwrap();
    let ServerFrame::Group { group_id, .. } = g else {
        panic!()
    };
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
    let ServerFrame::Group { group_id, .. } = w
        .chat
        .create_group(&carol, "g".into(), vec!["alice".into()])
        .await
        .unwrap()
    else {
        panic!()
    };
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
    let ServerFrame::Group { group_id, .. } = w
        .chat
        .create_group(&carol, "g".into(), vec!["bob".into()])
        .await
        .unwrap()
    else {
        panic!()
    };
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

/// A seeded xorshift: the same interleavings on every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// One device in the simulation: online or not, what it holds, and what a
/// client library knows of its current connection.
struct Device {
    session: Session,
    online: bool,
    /// Per conversation, every id it got (live, own acks, replays).
    held: HashMap<String, BTreeSet<u64>>,
    /// Per conversation, the first id this connection got, a message or
    /// the ack of its own send: where the client's run starts (as the JS
    /// library and the CLI keep it).
    first_this_connection: HashMap<String, u64>,
    /// Where it stood at its first sync, per conversation (the read
    /// watermark, never below the join point): it must end up holding
    /// every id above. `None` before that sync.
    start: Option<HashMap<String, u64>>,
}

impl Device {
    fn got(&mut self, conv: &str, id: u64) {
        self.held.entry(conv.to_string()).or_default().insert(id);
        self.first_this_connection
            .entry(conv.to_string())
            .or_insert(id);
    }

    /// The run it tells with `received`: the ids it holds without a hole
    /// around the first one this connection got.
    fn run(&self, conv: &str) -> Option<(u64, u64)> {
        let first = *self.first_this_connection.get(conv)?;
        let held = self.held.get(conv)?;
        let (mut from, mut up_to) = (first, first);
        while from > 1 && held.contains(&(from - 1)) {
            from -= 1;
        }
        while held.contains(&(up_to + 1)) {
            up_to += 1;
        }
        Some((from, up_to))
    }

    /// A new connection, and its sync.
    async fn connect(&mut self, w: &World) {
        self.online = true;
        self.first_this_connection.clear();
        if self.start.is_none() {
            let user = self.session.user_id.as_str();
            let states = w.store.conversations(user).await.unwrap();
            self.start = Some(
                states
                    .iter()
                    .map(|s| {
                        let m = &s.membership;
                        (m.conversation_id.clone(), m.acked_up_to.max(m.joined_at_id))
                    })
                    .collect(),
            );
        }
        let (ids, gaps) = sync(w, &self.session).await;
        assert!(gaps.is_empty(), "fewer than 200 behind");
        for (conv, got) in ids {
            for id in got {
                self.got(&conv, id);
            }
        }
    }
}

#[tokio::test]
async fn every_device_ends_up_with_every_message_whatever_the_interleaving() {
    for seed in 1..=40u64 {
        let w = world();
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let group = {
            let f = w
                .chat
                .create_group(
                    &on("carol", None),
                    "g".into(),
                    vec!["alice".into(), "bob".into()],
                )
                .await
                .unwrap();
            let ServerFrame::Group { group_id, .. } = f else {
                panic!()
            };
            group_id
        };
        let targets = ["user:bob".to_string(), format!("group:{group}")];
        let mut devices: Vec<Device> = [("alice", "phone"), ("alice", "laptop"), ("bob", "phone")]
            .iter()
            .map(|(u, d)| Device {
                session: on(u, Some(d)),
                online: false,
                held: HashMap::new(),
                first_this_connection: HashMap::new(),
                start: None,
            })
            .collect();
        let others = [on("carol", None), on("bob", None)];
        let mut delivered = 0;
        for _ in 0..120 {
            // Live delivery of what was sent meanwhile, to online devices;
            // one in 8 is lost on its way (a failed post, a dying socket).
            let jobs: Vec<FanoutJob> = w.jobs.0.lock().unwrap().drain(..).collect();
            for job in jobs {
                let ServerFrame::Message(m) = &job.frame else {
                    continue;
                };
                for d in devices.iter_mut().filter(|d| d.online) {
                    if rng.below(8) == 0 {
                        continue;
                    }
                    let member = w
                        .store
                        .membership(d.session.user_id.as_str(), &m.conversation_id)
                        .await
                        .unwrap()
                        .is_some();
                    if member && job.except_connection.as_deref() != Some(&d.session.connection_id)
                    {
                        d.got(&m.conversation_id, m.message_id);
                    }
                }
                delivered += 1;
            }
            let i = rng.below(devices.len() as u64) as usize;
            match rng.below(6) {
                0 => devices[i].online = false,
                1 => devices[i].connect(&w).await,
                2 if devices[i].online => {
                    let to = &targets[rng.below(2) as usize];
                    let d = &mut devices[i];
                    if let Ok(ServerFrame::Ack {
                        conversation_id,
                        message_id,
                        ..
                    }) = w
                        .chat
                        .send(
                            &d.session,
                            to,
                            format!("s{seed}-{delivered}-{i}"),
                            "x".into(),
                        )
                        .await
                    {
                        d.got(&conversation_id, message_id);
                    }
                }
                3 if devices[i].online => {
                    // Read everything it holds.
                    let d = &devices[i];
                    for (conv, ids) in &d.held {
                        if let Some(&last) = ids.last() {
                            let _ = w.chat.ack(&d.session, conv, last).await;
                        }
                    }
                }
                4 if devices[i].online => {
                    // Tell the server what it keeps, as the JS library does.
                    let d = &devices[i];
                    let items: Vec<ReceivedItem> = d
                        .first_this_connection
                        .keys()
                        .filter_map(|c| {
                            let (from, up_to) = d.run(c)?;
                            Some(ReceivedItem {
                                conversation_id: c.clone(),
                                from,
                                up_to,
                            })
                        })
                        .collect();
                    if !items.is_empty() {
                        w.chat.received(&d.session, &items).await.unwrap();
                    }
                }
                _ => {
                    let s = &others[rng.below(2) as usize];
                    let to = if rng.below(2) == 0 {
                        format!("group:{group}")
                    } else {
                        "user:alice".to_string()
                    };
                    let _ = w
                        .chat
                        .send(
                            s,
                            &to,
                            format!("o{seed}-{delivered}-{}", rng.below(1 << 30)),
                            "y".into(),
                        )
                        .await;
                }
            }
        }
        // Everyone comes back and syncs once more.
        for d in &mut devices {
            d.connect(&w).await;
            let user = d.session.user_id.as_str();
            for state in w.store.conversations(user).await.unwrap() {
                let conv = &state.membership.conversation_id;
                let start = d.start.as_ref().unwrap().get(conv).copied();
                let start = start.unwrap_or(state.membership.joined_at_id);
                let held = d.held.get(conv);
                let missing: Vec<u64> = (start + 1..=state.last_message_id)
                    .filter(|id| !held.is_some_and(|h| h.contains(id)))
                    .collect();
                assert!(
                    missing.is_empty(),
                    "seed {seed}: {} of {} misses {missing:?} of {conv}",
                    d.session.device_id.as_ref().unwrap(),
                    d.session.user_id
                );
            }
        }
    }
}
