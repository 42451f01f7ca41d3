//! Unit tests of the services over the in-memory store: the rules that
//! live in chat-core, each checked where it is written.

use super::test_support::{chat_over, Answers, Jobs};
use super::*;
use crate::memory::MemoryStore;
use crate::protocol::MAX_GROUP_MEMBERS;

fn chat(messages: MessageDelivery) -> (Chat, Arc<Jobs>) {
    chat_over(Arc::new(MemoryStore::new()), messages)
}

fn session(user: &str) -> Session {
    Session::new(format!("conn-{user}"), UserId::parse(user).unwrap())
}

fn group_of(frame: &ServerFrame) -> (String, Vec<String>, Vec<String>) {
    match frame {
        ServerFrame::Group {
            group_id,
            members,
            admins,
            ..
        } => (group_id.clone(), members.clone(), admins.clone()),
        other => panic!("not a group frame: {other:?}"),
    }
}

#[tokio::test]
async fn the_earliest_joined_member_inherits_admin_whatever_their_name() {
    let (chat, _) = chat(MessageDelivery::Dispatch);
    let g = chat
        .create_group(&session("mia"), "g".into(), vec!["zed".into()])
        .await
        .unwrap();
    let (gid, ..) = group_of(&g);
    // aaron joins later, and sorts first by name.
    let after_add = chat
        .add_member(&session("mia"), &gid, "aaron")
        .await
        .unwrap();
    let (_, members, admins) = group_of(&after_add);
    assert_eq!(members, vec!["mia", "zed", "aaron"]);
    assert_eq!(admins, vec!["mia"]);
    let after_leave = chat
        .remove_member(&session("mia"), &gid, "mia")
        .await
        .unwrap();
    let (_, members, admins) = group_of(&after_leave);
    assert_eq!(members, vec!["zed", "aaron"]);
    assert_eq!(admins, vec!["zed"], "zed joined before aaron");
}

#[tokio::test]
async fn a_group_is_full_at_100_members_creator_included() {
    let (chat, _) = chat(MessageDelivery::Dispatch);
    let others: Vec<String> = (0..MAX_GROUP_MEMBERS).map(|i| format!("u{i}")).collect();
    let err = chat
        .create_group(&session("owner"), "big".into(), others.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::GroupFull { limit: 100 }), "{err:?}");
    let g = chat
        .create_group(
            &session("owner"),
            "big".into(),
            others[..MAX_GROUP_MEMBERS - 1].to_vec(),
        )
        .await
        .unwrap();
    let (gid, members, _) = group_of(&g);
    assert_eq!(members.len(), MAX_GROUP_MEMBERS);
    let err = chat
        .add_member(&session("owner"), &gid, "late")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::GroupFull { .. }), "{err:?}");
}

#[tokio::test]
async fn strangers_are_forbidden_and_learn_nothing() {
    let (chat, jobs) = chat(MessageDelivery::Dispatch);
    chat.send(&session("alice"), "user:bob", "c1".into(), "hi".into())
        .await
        .unwrap();
    let g = chat
        .create_group(&session("alice"), "g".into(), vec!["bob".into()])
        .await
        .unwrap();
    let (gid, ..) = group_of(&g);
    let mallory = session("mallory");
    let jobs_before = jobs.0.lock().unwrap().len();
    for err in [
        chat.history(&mallory, "dm#alice#bob", None, None)
            .await
            .unwrap_err(),
        chat.history(&mallory, "grp#nosuchgroup", None, None)
            .await
            .unwrap_err(),
        chat.ack(&mallory, "dm#alice#bob", 1).await.unwrap_err(),
        chat.send(&mallory, &format!("group:{gid}"), "m1".into(), "x".into())
            .await
            .unwrap_err(),
        chat.add_member(&mallory, &gid, "mallory")
            .await
            .unwrap_err(),
        chat.remove_member(&mallory, &gid, "bob").await.unwrap_err(),
    ] {
        assert!(matches!(err, Error::Forbidden), "{err:?}");
        assert_eq!(err.to_string(), "not allowed");
    }
    // bob is a member but no admin: he may not remove alice.
    let err = chat
        .remove_member(&session("bob"), &gid, "alice")
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Forbidden));
    assert_eq!(
        jobs.0.lock().unwrap().len(),
        jobs_before,
        "nothing was sent"
    );
}

#[tokio::test]
async fn a_resent_client_msg_id_replays_the_original_ack_and_delivers_the_same_message_again() {
    let (chat, jobs) = chat(MessageDelivery::Dispatch);
    let alice = session("alice");
    let first = chat
        .send(&alice, "user:bob", "same".into(), "once".into())
        .await
        .unwrap();
    assert_eq!(
        jobs.0.lock().unwrap().len(),
        1,
        "the first send is delivered"
    );
    let again = chat
        .send(&alice, "user:bob", "same".into(), "once".into())
        .await
        .unwrap();
    assert_eq!(first, again);
    {
        // Delivered again (the first fan-out may have died with its
        // node): the same message, same id, not a new one.
        let jobs = jobs.0.lock().unwrap();
        assert_eq!(jobs.len(), 2, "a recent resend is delivered again");
        let ids: Vec<_> = jobs
            .iter()
            .map(|j| match &j.frame {
                ServerFrame::Message(m) => m.message_id,
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(ids, vec![1, 1]);
    }
    let ServerFrame::History { messages, .. } = chat
        .history(&alice, "dm#alice#bob", None, None)
        .await
        .unwrap()
    else {
        panic!("history")
    };
    assert_eq!(messages.len(), 1, "stored once");
    assert_eq!(messages[0].text, "once");
}

#[tokio::test]
async fn a_resend_of_a_message_older_than_5_minutes_is_acked_but_not_delivered_again() {
    let store = Arc::new(MemoryStore::new());
    let (chat, jobs) = chat_over(store.clone(), MessageDelivery::Dispatch);
    // The original, stored 6 minutes ago (and delivered then).
    store
        .append(crate::ports::NewMessage {
            conversation_id: "dm#alice#bob".into(),
            sender: "alice".into(),
            client_msg_id: "old".into(),
            text: "once".into(),
            sent_at_ms: crate::time::now_ms() - 6 * 60 * 1000,
            enroll: vec!["bob".into()],
            origin: Some("conn-alice".into()),
            member_only: false,
        })
        .await
        .unwrap();
    let ack = chat
        .send(&session("alice"), "user:bob", "old".into(), "once".into())
        .await
        .unwrap();
    assert!(
        matches!(ack, ServerFrame::Ack { message_id: 1, .. }),
        "{ack:?}"
    );
    assert!(
        jobs.0.lock().unwrap().is_empty(),
        "its members have it (or their sync brings it)"
    );
}

#[tokio::test]
async fn a_client_msg_id_reused_for_other_text_is_refused_and_delivers_nothing() {
    let (chat, jobs) = chat(MessageDelivery::Dispatch);
    let alice = session("alice");
    chat.send(&alice, "user:bob", "same".into(), "once".into())
        .await
        .unwrap();
    let err = chat
        .send(&alice, "user:bob", "same".into(), "other text".into())
        .await
        .unwrap_err();
    assert!(matches!(err, Error::IdReused(_)), "{err:?}");
    assert_eq!(jobs.0.lock().unwrap().len(), 1, "only the first delivery");
}

#[tokio::test]
async fn with_a_store_feed_the_services_dispatch_no_message_frames() {
    let (chat, jobs) = chat(MessageDelivery::StoreFeed);
    let alice = session("alice");
    chat.send(&alice, "user:bob", "c1".into(), "hi".into())
        .await
        .unwrap();
    assert!(jobs.0.lock().unwrap().is_empty(), "the feed delivers it");
    // Receipts still go through fan-out.
    chat.ack(&session("bob"), "dm#alice#bob", 1).await.unwrap();
    let jobs = jobs.0.lock().unwrap();
    assert_eq!(jobs.len(), 1);
    assert!(matches!(
        jobs[0].frame,
        ServerFrame::Receipt { up_to: 1, .. }
    ));
}

#[tokio::test]
async fn a_frame_that_fails_is_answered_with_an_error_naming_it() {
    let (chat, _) = chat(MessageDelivery::Dispatch);
    let answers = Answers::default();
    chat.handle_text(
        &session("alice"),
        r#"{"action":"history","conversation_id":"dm#bob#carol"}"#,
        &answers,
    )
    .await;
    chat.handle_text(&session("alice"), "{oops", &answers).await;
    let answers = answers.0.lock().unwrap();
    assert!(matches!(
        &answers[0],
        ServerFrame::Error { code, action: Some(a), .. } if code == "forbidden" && a == "history"
    ));
    assert!(matches!(&answers[1], ServerFrame::Error { code, .. } if code == "bad_request"));
}
