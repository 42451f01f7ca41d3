//! Typed lines and the frames they become, on the wire.

use super::*;
use serde_json::json;

fn user(id: &str) -> UserId {
    UserId::parse(id).unwrap()
}

/// The JSON a command's frame is on the wire.
fn wire(frame: Result<Option<Outgoing>, String>) -> Result<Option<Value>, String> {
    Ok(frame?.map(|f| serde_json::from_str(&f.to_json()).expect("JSON")))
}

/// The frame a line typed by `me` becomes, with no current conversation.
fn frame_of(line: &str, me: &str) -> Result<Option<Value>, String> {
    let cmd = parse(line, &user(me))?.expect("a command");
    let ctx = Context {
        client_msg_id: "c-1",
        current: None,
        older: None,
    };
    wire(to_frame(&cmd, &ctx))
}

#[test]
fn history_of_a_user_is_the_sorted_direct_conversation() {
    assert_eq!(
        frame_of("/history bob", "alice").unwrap(),
        Some(json!({"action": "history", "conversation_id": "dm#alice#bob"}))
    );
    assert_eq!(
        frame_of("/history bob", "zed").unwrap(),
        Some(json!({"action": "history", "conversation_id": "dm#bob#zed"}))
    );
    assert_eq!(
        frame_of("/history @bob", "zed").unwrap(),
        Some(json!({"action": "history", "conversation_id": "dm#bob#zed"}))
    );
}

#[test]
fn history_of_a_group_with_page_size_and_before() {
    assert_eq!(
        frame_of("/history #g1", "alice").unwrap(),
        Some(json!({"action": "history", "conversation_id": "grp#g1"}))
    );
    assert_eq!(
        frame_of("/history bob 20", "alice").unwrap(),
        Some(json!({"action": "history", "conversation_id": "dm#alice#bob", "limit": 20}))
    );
    assert_eq!(
        frame_of("/history #g1 10 42", "alice").unwrap(),
        Some(json!({
            "action": "history", "conversation_id": "grp#g1", "limit": 10, "before": 42
        }))
    );
    assert!(frame_of("/history bob 0", "alice").is_err());
    assert!(frame_of("/history bob 101", "alice").is_err());
    assert!(frame_of("/history bob 10 x", "alice").is_err());
}

#[test]
fn bare_history_uses_the_current_conversation() {
    let me = user("alice");
    let cmd = parse("/history", &me).unwrap().unwrap();
    let none = Context {
        client_msg_id: "c-1",
        current: None,
        older: None,
    };
    assert!(to_frame(&cmd, &none).is_err(), "no current conversation");
    let current = Context {
        client_msg_id: "c-1",
        current: Some("grp#g1"),
        older: None,
    };
    assert_eq!(
        wire(to_frame(&cmd, &current)).unwrap(),
        Some(json!({"action": "history", "conversation_id": "grp#g1"}))
    );
    let cmd = parse("/history 5", &me).unwrap().unwrap();
    assert_eq!(
        wire(to_frame(&cmd, &current)).unwrap(),
        Some(json!({"action": "history", "conversation_id": "grp#g1", "limit": 5}))
    );
}

#[test]
fn older_pages_back_from_the_oldest_shown() {
    let me = user("alice");
    let cmd = parse("/older", &me).unwrap().unwrap();
    let older = Older {
        conversation_id: "dm#alice#bob".into(),
        before: Some(31),
        limit: Some(20),
    };
    let ctx = Context {
        client_msg_id: "c-1",
        current: None,
        older: Some(&older),
    };
    assert_eq!(
        wire(to_frame(&cmd, &ctx)).unwrap(),
        Some(json!({
            "action": "history", "conversation_id": "dm#alice#bob", "limit": 20, "before": 31
        }))
    );
    let done = Older {
        before: None,
        ..older.clone()
    };
    let ctx = Context {
        older: Some(&done),
        ..ctx
    };
    assert!(to_frame(&cmd, &ctx).is_err(), "nothing older");
}

#[test]
fn sends_to_users_and_groups_carry_the_client_msg_id() {
    assert_eq!(
        frame_of("@bob hello  there", "alice").unwrap(),
        Some(json!({
            "action": "send", "to": "user:bob", "client_msg_id": "c-1", "text": "hello  there"
        }))
    );
    assert_eq!(
        frame_of("#g1 hi all", "alice").unwrap(),
        Some(json!({"action": "send", "to": "group:g1", "client_msg_id": "c-1", "text": "hi all"}))
    );
    assert!(frame_of("@bob", "alice").is_err(), "no text");
    assert!(frame_of("@bad! hi", "alice").is_err(), "not a user id");
    let long = format!("@bob {}", "x".repeat(MAX_TEXT_BYTES + 1));
    assert!(frame_of(&long, "alice").is_err(), "too long");
}

#[test]
fn group_commands_and_raw_json() {
    assert_eq!(
        frame_of("/group team bob carol", "alice").unwrap(),
        Some(json!({"action": "createGroup", "name": "team", "members": ["bob", "carol"]}))
    );
    assert_eq!(
        frame_of("/add g1 dave", "alice").unwrap(),
        Some(json!({"action": "addMember", "group_id": "g1", "user_id": "dave"}))
    );
    assert_eq!(
        frame_of("/remove g1 dave", "alice").unwrap(),
        Some(json!({"action": "removeMember", "group_id": "g1", "user_id": "dave"}))
    );
    assert!(frame_of("/add g1", "alice").is_err());
    assert_eq!(
        frame_of(r#"{"action":"ping"}"#, "alice").unwrap(),
        Some(json!({"action": "ping"}))
    );
    assert!(frame_of("{oops", "alice").is_err());
    assert_eq!(
        frame_of("/convs", "alice").unwrap(),
        Some(json!({"action": "conversations"}))
    );
    assert_eq!(
        frame_of("/sync", "alice").unwrap(),
        Some(json!({"action": "sync"}))
    );
}

#[test]
fn help_quit_and_unknown_commands() {
    let me = user("alice");
    assert_eq!(parse("/help", &me), Ok(Some(Command::Help)));
    assert_eq!(parse("  /quit ", &me), Ok(Some(Command::Quit)));
    assert_eq!(parse("   ", &me), Ok(None));
    let hint = parse("/frobnicate", &me).unwrap_err();
    assert!(hint.contains("/help"), "{hint}");
    assert!(!hint.contains('\n'), "one line: {hint}");
    for cmd in [
        "/history", "/older", "/convs", "/group", "/add", "/remove", "/sync", "/help", "/quit",
    ] {
        assert!(HELP.contains(cmd), "/help lists {cmd}");
    }
}

#[test]
fn recipients_and_their_conversations() {
    let alice = user("alice");
    assert_eq!(
        conversation_for_recipient(&alice, "user:bob").as_deref(),
        Some("dm#alice#bob")
    );
    assert_eq!(
        conversation_for_recipient(&user("zed"), "user:bob").as_deref(),
        Some("dm#bob#zed")
    );
    assert_eq!(
        conversation_for_recipient(&alice, "group:g1").as_deref(),
        Some("grp#g1")
    );
    assert_eq!(recipient("user:bob"), "user:bob");
    assert_eq!(recipient("@bob"), "user:bob");
    assert_eq!(recipient("bob"), "user:bob");
    assert_eq!(recipient("#g1"), "group:g1");
}
