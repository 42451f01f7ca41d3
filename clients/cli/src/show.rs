//! Server frames as the lines a person reads. Pure: every function returns
//! text; [`say`] and [`note`] write it (stdout and stderr) and never panic,
//! not even on a closed pipe.

use serde_json::Value;
use std::io::Write;

/// A line for the user (messages, answers) on stdout.
pub fn say(text: &str) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// A status line (connecting, warnings) on stderr.
pub fn note(text: &str) {
    let _ = writeln!(std::io::stderr().lock(), "{text}");
}

/// A string field of untrusted input, with control characters (terminal
/// escapes) made harmless; `""` when absent.
pub fn field(f: &Value, key: &str) -> String {
    clean(f[key].as_str().unwrap_or_default())
}

/// A number field as text; `?` when absent.
fn number(f: &Value, key: &str) -> String {
    f[key]
        .as_u64()
        .map_or_else(|| "?".to_string(), |n| n.to_string())
}

/// Replaces control characters other than newline and tab.
pub fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() && c != '\n' && c != '\t' {
                '\u{fffd}'
            } else {
                c
            }
        })
        .collect()
}

/// A message, live or from history: `[dm#alice#bob #7] alice: hi`.
pub fn message(f: &Value) -> String {
    message_in(&field(f, "conversation_id"), f)
}

/// A message of conversation `conversation_id` (history items may leave
/// their own out).
fn message_in(conversation_id: &str, m: &Value) -> String {
    let own = field(m, "conversation_id");
    let conversation = if own.is_empty() {
        conversation_id
    } else {
        own.as_str()
    };
    format!(
        "[{conversation} #{}] {}: {}",
        number(m, "message_id"),
        field(m, "from"),
        field(m, "text")
    )
}

/// The answer to one's own send.
pub fn ack(f: &Value) -> String {
    format!(
        "  ✓ stored as #{} in {}",
        number(f, "message_id"),
        field(f, "conversation_id")
    )
}

/// Someone read a conversation up to an id.
pub fn receipt(f: &Value) -> String {
    format!(
        "  ✓✓ {} read {} up to #{}",
        field(f, "user_id"),
        field(f, "conversation_id"),
        number(f, "up_to")
    )
}

/// A group was created or changed.
pub fn group(f: &Value) -> String {
    let id = field(f, "group_id");
    format!(
        "group {} (send with #{id} TEXT): members {}; admins {}",
        field(f, "name"),
        names(&f["members"]),
        names(&f["admins"])
    )
}

fn names(list: &Value) -> String {
    let names: Vec<String> = list
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).map(clean).collect())
        .unwrap_or_default();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// An error as one line: `! forbidden: not allowed (send c-12)`.
pub fn error(f: &Value) -> String {
    let code = field(f, "code");
    let code = if code.is_empty() {
        "error".into()
    } else {
        code
    };
    let about: Vec<String> = [field(f, "action"), field(f, "client_msg_id")]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect();
    let message = field(f, "message").replace('\n', " ");
    if about.is_empty() {
        format!("! {code}: {message}")
    } else {
        format!("! {code}: {message} ({})", about.join(" "))
    }
}

/// A `history` page: its messages oldest first, printed as live ones are,
/// between a header and a footer.
pub fn history(f: &Value) -> Vec<String> {
    let conversation = field(f, "conversation_id");
    let mut messages: Vec<&Value> = f["messages"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    messages.sort_by_key(|m| m["message_id"].as_u64().unwrap_or(0));
    let mut lines = vec![format!("-- history of {conversation} --")];
    for m in messages.iter().copied() {
        lines.push(message_in(&conversation, m));
    }
    lines.push(if messages.is_empty() {
        "-- no messages --".to_string()
    } else if f["has_more"].as_bool().unwrap_or(false) {
        "-- /older shows the page before --".to_string()
    } else {
        "-- the beginning of the conversation --".to_string()
    });
    lines
}

/// The oldest and newest ids of a `history` page.
pub fn history_span(f: &Value) -> Option<(u64, u64)> {
    let ids = f["messages"].as_array()?;
    let mut ids = ids.iter().filter_map(|m| m["message_id"].as_u64());
    let first = ids.next()?;
    Some(ids.fold((first, first), |(lo, hi), id| (lo.min(id), hi.max(id))))
}

/// The `conversations` list, one line each: the name (the peer of a direct
/// chat, the name of a group), the unread count, and for a group the
/// `#<group_id>` to send or page with.
pub fn conversations(items: &[Value], me: &str) -> Vec<String> {
    if items.is_empty() {
        return vec!["no conversations yet".to_string()];
    }
    let rows: Vec<(String, u64, Option<String>)> = items
        .iter()
        .map(|item| conversation_row(item, me))
        .collect();
    let width = rows
        .iter()
        .map(|(name, _, _)| name.chars().count())
        .max()
        .unwrap_or(0)
        .min(32);
    let mut lines = vec![format!("conversations ({}):", rows.len())];
    for (name, unread, group) in rows {
        let line = format!("  {name:<width$}  {unread:>3} unread");
        lines.push(match group {
            Some(id) => format!("{line}   #{id}"),
            None => line,
        });
    }
    lines
}

/// (name, unread, group id) of one `conversations` item.
fn conversation_row(item: &Value, me: &str) -> (String, u64, Option<String>) {
    let conversation = field(item, "conversation_id");
    let unread = item["unread"].as_u64().unwrap_or(0);
    let group_id = field(item, "group_id");
    let is_group = item["kind"] == "group" || conversation.starts_with("grp#");
    if is_group {
        let id = if group_id.is_empty() {
            conversation
                .strip_prefix("grp#")
                .unwrap_or(&conversation)
                .to_string()
        } else {
            group_id
        };
        let name = field(item, "name");
        let name = if name.is_empty() { id.clone() } else { name };
        return (name, unread, Some(id));
    }
    let peer = field(item, "peer");
    let name = if !peer.is_empty() {
        peer
    } else {
        direct_peer(&conversation, me).unwrap_or(conversation)
    };
    (name, unread, None)
}

/// The other user of `dm#a#b` as seen by `me` (`me` for notes to self).
fn direct_peer(conversation: &str, me: &str) -> Option<String> {
    let (a, b) = conversation.strip_prefix("dm#")?.split_once('#')?;
    let peer = if a == me { b } else { a };
    Some(peer.to_string())
}

/// A frame of a type this client does not know, as compact JSON.
pub fn unknown(f: &Value) -> String {
    let json = clean(&f.to_string());
    let short: String = json.chars().take(300).collect();
    if short.len() < json.len() {
        format!("? {short}…")
    } else {
        format!("? {short}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn live_and_history_messages_print_alike() {
        let live = json!({
            "type": "message", "conversation_id": "dm#alice#bob", "message_id": 7,
            "from": "alice", "text": "hi bob!", "sent_at": "t"
        });
        assert_eq!(message(&live), "[dm#alice#bob #7] alice: hi bob!");
        let page = json!({
            "type": "history", "conversation_id": "dm#alice#bob", "has_more": true,
            "messages": [
                {"conversation_id": "dm#alice#bob", "message_id": 7, "from": "alice", "text": "hi bob!"},
                {"message_id": 6, "from": "bob", "text": "hey"}
            ]
        });
        assert_eq!(
            history(&page),
            [
                "-- history of dm#alice#bob --",
                "[dm#alice#bob #6] bob: hey",
                "[dm#alice#bob #7] alice: hi bob!",
                "-- /older shows the page before --",
            ]
        );
        assert_eq!(history_span(&page), Some((6, 7)));
        let empty = json!({"type": "history", "conversation_id": "grp#g", "messages": [], "has_more": false});
        assert_eq!(
            history(&empty),
            ["-- history of grp#g --", "-- no messages --"]
        );
        assert_eq!(history_span(&empty), None);
    }

    #[test]
    fn conversations_print_as_a_readable_list() {
        let items = [
            json!({"conversation_id": "dm#alice#bob", "kind": "direct", "peer": "bob",
                   "last_message_id": 7, "acked_up_to": 5, "unread": 2}),
            json!({"conversation_id": "grp#4f1c", "kind": "group", "group_id": "4f1c",
                   "name": "team", "last_message_id": 3, "acked_up_to": 3, "unread": 0}),
            json!({"conversation_id": "dm#alice#carol", "kind": "direct", "unread": 11}),
        ];
        assert_eq!(
            conversations(&items, "alice"),
            [
                "conversations (3):",
                "  bob      2 unread",
                "  team     0 unread   #4f1c",
                "  carol   11 unread",
            ]
        );
        assert_eq!(conversations(&[], "alice"), ["no conversations yet"]);
    }

    #[test]
    fn errors_print_as_one_readable_line() {
        let f = json!({"type": "error", "code": "forbidden", "message": "not allowed",
                       "action": "send", "client_msg_id": "c-12"});
        assert_eq!(error(&f), "! forbidden: not allowed (send c-12)");
        let f = json!({"type": "error", "code": "bad_request", "message": "unknown action"});
        assert_eq!(error(&f), "! bad_request: unknown action");
        let f = json!({"type": "error", "code": "forbidden", "message": "not allowed", "action": "history"});
        assert_eq!(error(&f), "! forbidden: not allowed (history)");
    }

    #[test]
    fn other_frames_and_hostile_text() {
        let g = json!({"type": "group", "group_id": "4f1c", "name": "team",
                       "members": ["alice", "bob"], "admins": ["alice"]});
        assert_eq!(
            group(&g),
            "group team (send with #4f1c TEXT): members alice, bob; admins alice"
        );
        let r = json!({"type": "receipt", "conversation_id": "dm#alice#bob", "user_id": "bob", "up_to": 7});
        assert_eq!(receipt(&r), "  ✓✓ bob read dm#alice#bob up to #7");
        let a = json!({"type": "ack", "client_msg_id": "c-1", "conversation_id": "dm#alice#bob", "message_id": 7});
        assert_eq!(ack(&a), "  ✓ stored as #7 in dm#alice#bob");
        let evil = json!({"type": "message", "conversation_id": "dm#a#b", "message_id": 1,
                          "from": "a", "text": "\u{1b}[2Jgotcha"});
        assert!(!message(&evil).contains('\u{1b}'));
        assert_eq!(unknown(&json!({"type": "new"})), r#"? {"type":"new"}"#);
        // Not an object, or fields of the wrong type: printed, never a panic.
        assert_eq!(message(&json!([1, 2])), "[ #?] : ");
        assert_eq!(
            history(&json!("x")),
            ["-- history of  --", "-- no messages --"]
        );
    }
}
