//! The sequencer's rules, one test each, over the in-memory store.

use super::*;
use chat_core::memory::MemoryStore;
use chat_core::ports::{GroupChange, GroupMember, GroupStore, MessageStore, NewMessage};

/// No answers owed: a gap is read from the store at once.
const IDLE: u64 = 0;

fn answer() -> Outbound {
    Outbound::Answer(Utf8Bytes::from_static(r#"{"type":"error"}"#))
}

fn texts(ms: &[Message]) -> Vec<u64> {
    ms.iter()
        .map(|m| match m {
            Message::Text(t) => {
                let v: serde_json::Value = serde_json::from_str(t.as_str()).unwrap();
                v["message_id"].as_u64().unwrap_or(0)
            }
            _ => 0,
        })
        .collect()
}

fn msg(id: u64) -> Outbound {
    msg_in("dm#a#b", id)
}

fn msg_in(conv: &str, id: u64) -> Outbound {
    let frame = ServerFrame::Message(chat_core::protocol::MessageView {
        conversation_id: conv.into(),
        message_id: id,
        from: "a".into(),
        text: format!("m{id}"),
        sent_at: "t".into(),
    });
    Outbound::Message {
        seq: Seq {
            conversation_id: conv.into(),
            message_id: id,
        },
        text: Utf8Bytes::from(frame.to_json()),
    }
}

/// Message `i` of group `g`, from "a".
fn group_msg(i: u64) -> NewMessage {
    NewMessage {
        conversation_id: "grp#g".into(),
        sender: "a".into(),
        client_msg_id: format!("g{i}"),
        text: format!("m{i}"),
        sent_at_ms: 1,
        enroll: vec![],
        origin: None,
        member_only: true,
    }
}

/// A change of group `g` from `version`.
fn change(version: u64, add: Vec<GroupMember>, remove: Vec<String>) -> GroupChange {
    GroupChange {
        group_id: "g".into(),
        expected_version: version,
        admins: vec!["a".into()],
        add,
        remove,
    }
}

/// `n` messages of group conversation `grp#g`, which "b" joined after
/// message `joined` (its join point).
async fn group_store(n: u64, joined: u64) -> Arc<dyn Store> {
    let s = Arc::new(MemoryStore::new());
    let member = |u: &str, seq| GroupMember::founding(u, 1, seq);
    s.create_group(&chat_core::ports::Group {
        group_id: "g".into(),
        name: "g".into(),
        created_by: "a".into(),
        created_at_ms: 1,
        admins: vec!["a".into()],
        members: vec![member("a", 0)],
        version: 1,
        next_seq: 1,
    })
    .await
    .unwrap();
    for i in 1..=n {
        if i == joined + 1 {
            s.update_group(&change(
                1,
                vec![GroupMember {
                    joined_at_id: joined,
                    ..member("b", 1)
                }],
                vec![],
            ))
            .await
            .unwrap();
        }
        s.append(group_msg(i)).await.unwrap();
    }
    s
}

async fn store_with(n: u64) -> Arc<dyn Store> {
    store_sent_by(n, |_| None).await
}

/// `n` messages; `origin(i)` is the connection that sent message `i`.
async fn store_sent_by(n: u64, origin: impl Fn(u64) -> Option<&'static str>) -> Arc<dyn Store> {
    memory_sent_by(n, origin).await
}

/// [`store_sent_by`], as the memory store itself (to make its reads fail).
async fn memory_sent_by(n: u64, origin: impl Fn(u64) -> Option<&'static str>) -> Arc<MemoryStore> {
    let s = Arc::new(MemoryStore::new());
    for i in 1..=n {
        s.append(NewMessage {
            conversation_id: "dm#a#b".into(),
            sender: "a".into(),
            client_msg_id: format!("c{i}"),
            text: format!("m{i}"),
            sent_at_ms: 1,
            enroll: vec!["b".into()],
            origin: origin(i).map(str::to_string),
            member_only: false,
        })
        .await
        .unwrap();
    }
    s
}

/// The bytes of one test message frame.
fn msg_len() -> usize {
    match msg(1) {
        Outbound::Message { text, .. } => text.len(),
        _ => 0,
    }
}

fn ack(id: u64) -> Outbound {
    Outbound::Ack {
        seq: Seq {
            conversation_id: "dm#a#b".into(),
            message_id: id,
        },
        text: Utf8Bytes::from_static(r#"{"type":"ack"}"#),
    }
}

#[tokio::test]
async fn the_connections_own_sends_count_as_their_acks_not_as_gaps() {
    // Messages 3 and 5 were sent by this connection (c1).
    let store = store_sent_by(6, |i| (i == 3 || i == 5).then_some("c1")).await;
    let mut s = Sequencer::new(Some(store), "c1", "b", 1 << 20);
    s.order(Outbound::GoLive, IDLE).await;
    assert_eq!(texts(&s.order(msg(2), IDLE).await), vec![2]);
    // Live 4 overtook the ack of 3: 3 is not sent back as a message.
    assert_eq!(texts(&s.order(msg(4), IDLE).await), vec![4]);
    assert_eq!(
        texts(&s.order(ack(3), IDLE).await),
        vec![0],
        "the ack itself"
    );
    // The ack of 5 comes first: 6 then follows without a store read.
    s.order(ack(5), IDLE).await;
    assert_eq!(texts(&s.order(msg(6), IDLE).await), vec![6]);
    assert_eq!(s.stats.filled, 0);
}

#[tokio::test]
async fn a_message_that_overtakes_the_ack_of_an_own_send_waits_for_it_without_a_store_read() {
    // The store says 3 is another connection's: had the sequencer read
    // it, 3 would go out as a message.
    let store = store_sent_by(4, |i| (i == 3).then_some("c2")).await;
    let mut s = Sequencer::new(Some(store), "c1", "b", 1 << 20);
    s.order(Outbound::GoLive, IDLE).await;
    assert_eq!(texts(&s.order(msg(2), IDLE).await), vec![2]);
    // One answer is owed (a send in flight): 4 waits.
    assert!(s.order(msg(4), 1).await.is_empty(), "parked");
    // The send's ack: id 3. 4 follows it; nothing was read.
    assert_eq!(texts(&s.order(ack(3), 1).await), vec![0, 4]);
    assert_eq!(s.stats.filled, 0);
    assert!(s.waiting.is_none());
    assert_eq!(texts(&s.order(msg(5), 1).await), vec![5]);
}

#[tokio::test]
async fn an_ack_that_comes_before_the_message_below_it_is_not_taken_for_a_gap_later() {
    // The store says 4 is another connection's: had the sequencer read
    // it, 4 would go out as a message.
    let store = store_sent_by(6, |i| (i == 4).then_some("c2")).await;
    let mut s = Sequencer::new(Some(store), "c1", "b", 1 << 20);
    s.order(Outbound::GoLive, IDLE).await;
    assert_eq!(texts(&s.order(msg(2), IDLE).await), vec![2]);
    // The ack of this connection's 4 comes before 3.
    assert_eq!(texts(&s.order(ack(4), IDLE).await), vec![0]);
    assert_eq!(texts(&s.order(msg(3), IDLE).await), vec![3]);
    // The sequence is at 4 now: 5 follows without a read.
    assert_eq!(texts(&s.order(msg(5), IDLE).await), vec![5]);
    assert_eq!(s.stats.filled, 0);
    assert!(s.waiting.is_none(), "nothing kept");
}

#[tokio::test]
async fn a_parked_message_is_filled_from_the_store_once_the_answers_owed_are_written() {
    let mut s = Sequencer::new(Some(store_with(5).await), "c1", "b", 1 << 20);
    s.order(Outbound::GoLive, IDLE).await;
    assert_eq!(texts(&s.order(msg(2), IDLE).await), vec![2]);
    assert!(s.order(msg(4), 1).await.is_empty(), "parked");
    assert!(s.order(msg(5), 1).await.is_empty(), "behind it");
    // The answer was an error, not an ack: 3 is someone else's.
    assert_eq!(texts(&s.order(answer(), 1).await), vec![0, 3, 4, 5]);
    assert_eq!(s.stats.filled, 1);
    assert!(s.waiting.is_none());
}

#[tokio::test]
async fn a_parked_message_waits_only_for_the_answers_owed_when_it_came() {
    let mut s = Sequencer::new(Some(store_with(6).await), "c1", "b", 1 << 20);
    s.order(Outbound::GoLive, IDLE).await;
    assert_eq!(texts(&s.order(msg(2), IDLE).await), vec![2]);
    // 4 comes while one answer is owed, 6 while two are.
    assert!(s.order(msg(4), 1).await.is_empty());
    assert!(s.order(msg(6), 2).await.is_empty());
    // The first answer is written: 4's wait is over (3 is read from
    // the store); 6 still waits for the second.
    assert_eq!(texts(&s.order(answer(), 2).await), vec![0, 3, 4]);
    assert_eq!(texts(&s.order(ack(5), 2).await), vec![0, 6]);
    assert_eq!(s.stats.filled, 1);
}

#[tokio::test]
async fn parked_messages_past_the_byte_limit_are_read_from_the_store_at_once() {
    let mut s =
        Sequencer::new(Some(store_with(5).await), "c1", "b", msg_len()).with_read_limit(1 << 20);
    s.order(Outbound::GoLive, IDLE).await;
    assert_eq!(texts(&s.order(msg(2), IDLE).await), vec![2]);
    assert!(s.order(msg(4), 1).await.is_empty(), "parked");
    // No room for 5: the store fills 3 and 4; the parked 4 is then a
    // repeat.
    assert_eq!(texts(&s.order(msg(5), 1).await), vec![3, 4, 5]);
    assert!(s.waiting.is_none());
}

#[tokio::test]
async fn past_the_most_parked_messages_the_store_is_read() {
    let n = MAX_WAITING as u64;
    let mut s = Sequencer::new(Some(store_with(n + 4).await), "c1", "b", 1 << 20);
    s.order(Outbound::GoLive, IDLE).await;
    assert_eq!(texts(&s.order(msg(2), IDLE).await), vec![2]);
    for id in 4..4 + n {
        assert!(s.order(msg(id), 1).await.is_empty(), "{id} parked");
    }
    // One more: no room; the store fills 3, and the parked ones follow.
    let out = texts(&s.order(msg(4 + n), 1).await);
    assert_eq!(out, (3..=4 + n).collect::<Vec<_>>());
    assert!(s.waiting.is_none());
}

#[tokio::test]
async fn other_conversations_flow_past_a_parked_message() {
    let mut s = Sequencer::new(Some(store_with(4).await), "c1", "b", 1 << 20);
    s.order(Outbound::GoLive, IDLE).await;
    assert_eq!(texts(&s.order(msg(2), IDLE).await), vec![2]);
    assert!(s.order(msg(4), 1).await.is_empty(), "parked");
    let other = Outbound::Message {
        seq: Seq {
            conversation_id: "dm#a#c".into(),
            message_id: 9,
        },
        text: Utf8Bytes::from_static(r#"{"message_id":9}"#),
    };
    assert_eq!(texts(&s.order(other, 1).await), vec![9]);
    assert_eq!(texts(&s.order(ack(3), 1).await), vec![0, 4]);
}

#[tokio::test]
async fn a_gap_is_filled_from_the_store_and_repeats_are_dropped() {
    let mut s = Sequencer::new(Some(store_with(6).await), "c1", "b", 1 << 20);
    assert!(s.order(Outbound::GoLive, IDLE).await.is_empty());
    assert_eq!(texts(&s.order(msg(2), IDLE).await), vec![2], "first seen");
    assert_eq!(
        texts(&s.order(msg(5), IDLE).await),
        vec![3, 4, 5],
        "gap filled"
    );
    assert!(s.order(msg(4), IDLE).await.is_empty(), "repeat dropped");
    assert_eq!(texts(&s.order(msg(6), IDLE).await), vec![6]);
    assert_eq!((s.stats.repeats, s.stats.filled), (1, 2));
}

#[tokio::test]
async fn live_messages_wait_for_the_first_frame_and_follow_a_sync_replay() {
    let mut s = Sequencer::new(Some(store_with(5).await), "c1", "b", 1 << 20);
    // Live 4 and 5 arrive before the client's sync is read.
    assert!(s.order(msg(4), IDLE).await.is_empty());
    assert!(s.order(msg(5), IDLE).await.is_empty());
    // The sync starts above watermark 1: 2 and 3 are pulled in first.
    let out = s
        .order(Outbound::SyncStarted(vec![("dm#a#b".into(), 1)]), IDLE)
        .await;
    assert_eq!(texts(&out), vec![2, 3, 4, 5]);
    // The replay's own copies are repeats now.
    for id in 2..=5 {
        assert!(s.order(msg(id), IDLE).await.is_empty());
    }
    assert_eq!(s.stats.repeats, 4);
}

#[tokio::test]
async fn a_late_sync_sends_the_older_messages_the_connection_never_saw_once() {
    let mut s = Sequencer::new(Some(store_with(6).await), "c1", "b", 1 << 20);
    s.order(Outbound::GoLive, IDLE).await;
    // Live 5 was the first this connection saw; the user had acked 1.
    assert_eq!(texts(&s.order(msg(5), IDLE).await), vec![5]);
    let out = s
        .order(Outbound::SyncStarted(vec![("dm#a#b".into(), 1)]), IDLE)
        .await;
    assert_eq!(texts(&out), vec![2, 3, 4], "never seen here: sent");
    for id in 2..=5 {
        assert!(s.order(msg(id), IDLE).await.is_empty(), "the replay's {id}");
    }
    assert_eq!(texts(&s.order(msg(6), IDLE).await), vec![6]);
    // A second sync sends nothing again.
    let again = s
        .order(Outbound::SyncStarted(vec![("dm#a#b".into(), 1)]), IDLE)
        .await;
    assert!(again.is_empty());
    assert_eq!(s.stats.backfilled, 3);
}

#[tokio::test]
async fn without_a_store_messages_pass_through_unheld() {
    let mut s = Sequencer::new(None, "c1", "b", 1 << 20);
    assert!(!s.holding());
    assert_eq!(texts(&s.order(msg(3), IDLE).await), vec![3]);
    assert_eq!(texts(&s.order(msg(1), IDLE).await), vec![1]);
}

#[tokio::test]
async fn past_the_held_bytes_a_sync_reads_the_rest_from_the_store_and_ids_never_step_back() {
    let mut s = Sequencer::new(Some(store_with(4).await), "c1", "b", 2 * msg_len())
        .with_read_limit(1 << 20);
    assert!(s.order(msg(1), IDLE).await.is_empty());
    assert!(s.order(msg(2), IDLE).await.is_empty());
    // Past the limit: still held back (as an id only), not sent ahead of
    // the sync that comes next.
    assert!(s.order(msg(3), IDLE).await.is_empty());
    assert!(s.order(msg(4), IDLE).await.is_empty());
    assert!(s.holding());
    assert_eq!(s.stats.dropped_while_held, 2);
    // The client's first frame is a sync from 0: what was held, then what
    // was dropped, from the store; the replay's copies are repeats.
    let baselines = vec![("dm#a#b".to_string(), 0)];
    assert_eq!(
        texts(&s.order(Outbound::SyncStarted(baselines), IDLE).await),
        [1, 2, 3, 4]
    );
    let mut replay = Vec::new();
    for id in 1..=4 {
        replay.extend(s.order(msg(id), IDLE).await);
    }
    assert!(replay.is_empty(), "{:?}", texts(&replay));
}

#[tokio::test]
async fn held_ids_above_a_syncs_snapshot_go_out_with_it_not_at_the_next_message() {
    // The sync's snapshot saw 3 messages; 4 and 5 were committed after it,
    // came live while the hold was full, and were kept as ids. Nothing
    // else will come in that conversation for a while.
    let mut s = Sequencer::new(Some(store_with(5).await), "c1", "b", 2 * msg_len())
        .with_read_limit(1 << 20);
    for id in [1, 2, 4, 5] {
        assert!(s.order(msg(id), IDLE).await.is_empty());
    }
    assert_eq!(s.stats.dropped_while_held, 2);
    let baselines = vec![("dm#a#b".to_string(), 0)];
    let out = s.order(Outbound::SyncStarted(baselines), IDLE).await;
    assert_eq!(
        texts(&out),
        [1, 2, 3, 4, 5],
        "3 from the store, then 4 and 5"
    );
    // The replay (of 1 to 3, the snapshot) adds nothing.
    for id in 1..=3 {
        assert!(s.order(msg(id), IDLE).await.is_empty());
    }
}

#[tokio::test]
async fn a_gap_bigger_than_the_outbound_limit_closes_the_connection_instead_of_reading_it_all() {
    let store = store_with(40).await;
    // The bytes of a stored message's frame (ids 3 to 9 are alike).
    let stored = store.messages_after("dm#a#b", 2, 1).await.unwrap();
    let frame = ServerFrame::Message(stored[0].view()).to_json().len();
    let mut s = Sequencer::new(Some(store), "c1", "b", 1 << 20).with_read_limit(3 * frame);
    s.order(Outbound::GoLive, IDLE).await;
    assert_eq!(texts(&s.order(msg(2), IDLE).await), [2]);
    // 3 to 39 are missing: far more than 3 messages' bytes.
    let out = s.order(msg(40), IDLE).await;
    assert_eq!(texts(&out[..out.len() - 1]), [3, 4, 5], "in order, no hole");
    assert!(
        matches!(out.last(), Some(Message::Close(Some(f))) if f.code == crate::limits::close::POLICY),
        "{out:?}"
    );
    // Nothing after the close.
    assert!(s.order(msg(41), IDLE).await.is_empty());
    assert!(s.order(ack(42), IDLE).await.is_empty());
}

#[tokio::test]
async fn past_the_held_bytes_going_live_reads_the_rest_from_the_store() {
    let mut s = Sequencer::new(Some(store_with(4).await), "c1", "b", 2 * msg_len())
        .with_read_limit(1 << 20);
    for id in 1..=4 {
        assert!(s.order(msg(id), IDLE).await.is_empty());
    }
    // The first frame is not a sync (or the hold ran out).
    assert_eq!(texts(&s.order(Outbound::GoLive, IDLE).await), [1, 2, 3, 4]);
    assert!(!s.holding());
    assert_eq!(s.stats.filled, 2);
    // And the sequence goes on from there.
    assert!(s.order(msg(4), IDLE).await.is_empty(), "a repeat");
}

#[tokio::test]
async fn after_a_sync_a_conversation_new_to_the_connection_starts_at_the_users_join_point() {
    // The user ("b") joined dm#a#b at its first message; the sync saw
    // another conversation only (dm#a#b did not exist yet). Message 1
    // never came live (its sender's node died before the fan-out), and 3
    // arrives: 1 and 2 are read first, from the join point.
    let mut s = Sequencer::new(Some(store_with(3).await), "c1", "b", 1 << 20);
    let baselines = vec![("dm#b#c".to_string(), 0)];
    assert!(s
        .order(Outbound::SyncStarted(baselines), IDLE)
        .await
        .is_empty());
    assert_eq!(texts(&s.order(msg(3), IDLE).await), [1, 2, 3]);
    assert_eq!(s.stats.filled, 2);
    assert!(s.order(msg(2), IDLE).await.is_empty(), "a repeat");
    // Without a sync (a connection that never syncs), it starts at the
    // first message seen, as documented.
    let mut never = Sequencer::new(Some(store_with(3).await), "c2", "b", 1 << 20);
    assert_eq!(
        texts(&never.order(Outbound::GoLive, IDLE).await),
        Vec::<u64>::new()
    );
    assert_eq!(texts(&never.order(msg(3), IDLE).await), [3]);
}

#[tokio::test]
async fn after_a_sync_a_group_joined_since_starts_at_the_join_point_not_its_first_message() {
    // "b" joined grp#g after its message 3; 4 and 5 never came live; 6
    // does. 4 and 5 are read first, and nothing from before the join.
    let mut s = Sequencer::new(Some(group_store(6, 3).await), "c1", "b", 1 << 20);
    let baselines = vec![("dm#b#c".to_string(), 0)];
    assert!(s
        .order(Outbound::SyncStarted(baselines), IDLE)
        .await
        .is_empty());
    assert_eq!(texts(&s.order(msg_in("grp#g", 6), IDLE).await), [4, 5, 6]);
    assert_eq!(s.stats.filled, 2);
}

/// The close a failed read ends with: 1013, after the frames so far.
fn closed_try_again(out: &[Message]) -> bool {
    matches!(out.last(), Some(Message::Close(Some(f)))
        if f.code == crate::limits::close::TRY_AGAIN_LATER && f.reason.as_str() == fill::CANNOT_READ)
}

/// Six messages; a live connection that got `first` of them, after which
/// the store's reads of them fail.
async fn live_then_unreadable(first: u64) -> (Arc<MemoryStore>, Sequencer) {
    let store = memory_sent_by(6, |_| None).await;
    let shared: Arc<dyn Store> = store.clone();
    let mut s = Sequencer::new(Some(shared), "c1", "b", 1 << 20);
    assert!(s.order(Outbound::GoLive, IDLE).await.is_empty());
    assert_eq!(texts(&s.order(msg(first), IDLE).await), [first]);
    store.fail_reads_of(Some("dm#a#b"));
    (store, s)
}

#[tokio::test]
async fn a_gap_the_store_cannot_read_closes_the_connection_with_1013_instead_of_skipping_it() {
    // 3 and 4 never came live, and the store cannot be read now.
    let (store, mut s) = live_then_unreadable(2).await;
    let out = s.order(msg(5), IDLE).await;
    assert!(closed_try_again(&out), "{out:?}");
    assert_eq!(
        texts(&out[..out.len() - 1]),
        [] as [u64; 0],
        "5 not sent past the hole"
    );
    // Nothing after the close, even once the store is back.
    store.fail_reads_of(None);
    assert!(s.order(msg(6), IDLE).await.is_empty());
}

#[tokio::test]
async fn a_late_syncs_backfill_the_store_cannot_read_closes_the_connection_with_1013() {
    // A late sync from watermark 1 would backfill 2..=4: unreadable.
    let (_store, mut s) = live_then_unreadable(5).await;
    let out = s
        .order(Outbound::SyncStarted(vec![("dm#a#b".into(), 1)]), IDLE)
        .await;
    assert!(closed_try_again(&out), "{out:?}");
    assert!(s.order(msg(6), IDLE).await.is_empty());
}

#[tokio::test]
async fn a_member_removed_and_added_back_gets_no_gap_read_of_what_was_stored_while_away() {
    // "b" is in grp#g from the start; this connection gets 1 and 2.
    let store = group_store(2, 0).await;
    let mut s = Sequencer::new(Some(store.clone()), "c1", "b", 1 << 20);
    assert!(s.order(Outbound::GoLive, IDLE).await.is_empty());
    assert_eq!(texts(&s.order(msg_in("grp#g", 1), IDLE).await), [1]);
    assert_eq!(texts(&s.order(msg_in("grp#g", 2), IDLE).await), [2]);
    // Removed; 3 to 5 are stored while away; added back after 5.
    store
        .update_group(&change(2, vec![], vec!["b".into()]))
        .await
        .unwrap();
    for i in 3..=5 {
        store.append(group_msg(i)).await.unwrap();
    }
    let back = GroupMember {
        user_id: "b".into(),
        joined_at_ms: 2,
        seq: 2,
        joined_at_id: 5,
    };
    store
        .update_group(&change(3, vec![back], vec![]))
        .await
        .unwrap();
    for i in 6..=7 {
        store.append(group_msg(i)).await.unwrap();
    }
    // 5, stored while away, has its fan-out run after the add: dropped.
    assert!(s.order(msg_in("grp#g", 5), IDLE).await.is_empty());
    // 6 never came live; 7 does: 6 is read, and nothing from the absence.
    assert_eq!(texts(&s.order(msg_in("grp#g", 7), IDLE).await), [6, 7]);
    assert_eq!((s.stats.filled, s.stats.before_join), (1, 1));
}

#[tokio::test]
async fn after_its_removal_frame_a_message_stored_while_away_never_reaches_the_member_even_without_a_gap(
) {
    // "b" is in grp#g; this connection gets 1 and 2, then b's removal.
    let store = group_store(2, 0).await;
    let mut s = Sequencer::new(Some(store.clone()), "c1", "b", 1 << 20);
    assert!(s.order(Outbound::GoLive, IDLE).await.is_empty());
    for id in 1..=2 {
        assert_eq!(texts(&s.order(msg_in("grp#g", id), IDLE).await), [id]);
    }
    store
        .update_group(&change(2, vec![], vec!["b".into()]))
        .await
        .unwrap();
    let removed = r#"{"type":"group","group_id":"g","name":"g","members":["a"],"admins":["a"]}"#;
    assert_eq!(
        s.order(Outbound::Text(Utf8Bytes::from_static(removed)), IDLE)
            .await
            .len(),
        1
    );
    // 3 is stored while b is away; b is added back after it.
    store.append(group_msg(3)).await.unwrap();
    let back = GroupMember {
        user_id: "b".into(),
        joined_at_ms: 2,
        seq: 2,
        joined_at_id: 3,
    };
    store
        .update_group(&change(3, vec![back], vec![]))
        .await
        .unwrap();
    // 3's fan-out ran after the add: next in the old span, but not b's.
    assert!(s.order(msg_in("grp#g", 3), IDLE).await.is_empty());
    assert_eq!(s.stats.before_join, 1);
}
