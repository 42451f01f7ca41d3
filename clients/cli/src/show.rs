//! Server frames as the lines a person reads. Pure: every function returns
//! text; [`say`] and [`note`] write it (stdout and stderr) and never panic,
//! not even on a closed pipe. Every string from the server goes through
//! [`clean`] first.

use chat_core::protocol::{ConversationItem, MessageView};
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
pub fn message(m: &MessageView) -> String {
    message_in(&m.conversation_id, m)
}

/// A message of conversation `conversation_id` (the page's, for a history
/// item without its own).
fn message_in(conversation_id: &str, m: &MessageView) -> String {
    let conversation = if m.conversation_id.is_empty() {
        conversation_id
    } else {
        &m.conversation_id
    };
    format!(
        "[{} #{}] {}: {}",
        clean(conversation),
        m.message_id,
        clean(&m.from),
        clean(&m.text)
    )
}

/// The answer to one's own send.
pub fn ack(conversation_id: &str, message_id: u64) -> String {
    format!("  ✓ stored as #{message_id} in {}", clean(conversation_id))
}

/// Someone read a conversation up to an id.
pub fn receipt(conversation_id: &str, user_id: &str, up_to: u64) -> String {
    format!(
        "  ✓✓ {} read {} up to #{up_to}",
        clean(user_id),
        clean(conversation_id)
    )
}

/// "read by n of m" for your message `id` from the members' watermarks
/// (`marks`, you included); `None` if there are no others.
pub fn read_by(
    marks: &std::collections::BTreeMap<String, u64>,
    me: &str,
    id: u64,
) -> Option<String> {
    let others: Vec<u64> = marks
        .iter()
        .filter(|(u, _)| u.as_str() != me)
        .map(|(_, up_to)| *up_to)
        .collect();
    if others.is_empty() {
        return None;
    }
    let n = others.iter().filter(|up_to| **up_to >= id).count();
    Some(format!("your #{id}: read by {n} of {}", others.len()))
}

/// The `receipts` answer: each member's watermark, and "read by n of m"
/// for your newest message if you sent one.
pub fn receipts(
    conversation_id: &str,
    marks: &std::collections::BTreeMap<String, u64>,
    me: &str,
    mine: Option<u64>,
) -> Vec<String> {
    let mut lines = vec![format!("read in {}:", clean(conversation_id))];
    for (user, up_to) in marks {
        lines.push(format!("  {:<16} up to #{up_to}", clean(user)));
    }
    if let Some(line) = mine.and_then(|id| read_by(marks, me, id)) {
        lines.push(format!("  {line}"));
    }
    lines
}

/// A group was created or changed.
pub fn group(group_id: &str, name: &str, members: &[String], admins: &[String]) -> String {
    format!(
        "group {} (send with #{} TEXT): members {}; admins {}",
        clean(name),
        clean(group_id),
        names(members),
        names(admins)
    )
}

fn names(list: &[String]) -> String {
    if list.is_empty() {
        "none".to_string()
    } else {
        list.iter().map(|n| clean(n)).collect::<Vec<_>>().join(", ")
    }
}

/// An error as one line: `! forbidden: not allowed (send c-12)`, naming
/// the `action` and `client_msg_id` it answers.
pub fn error(
    code: &str,
    message: &str,
    action: Option<&str>,
    client_msg_id: Option<&str>,
) -> String {
    let code = if code.is_empty() { "error" } else { code };
    let about: Vec<String> = [action, client_msg_id]
        .into_iter()
        .flatten()
        .map(clean)
        .filter(|s| !s.is_empty())
        .collect();
    let line = format!("! {}: {}", clean(code), clean(message).replace('\n', " "));
    if about.is_empty() {
        line
    } else {
        format!("{line} ({})", about.join(" "))
    }
}

/// A `history` page: its messages oldest first, printed as live ones are,
/// between a header and a footer.
pub fn history(conversation_id: &str, messages: &[MessageView], has_more: bool) -> Vec<String> {
    let mut messages: Vec<&MessageView> = messages.iter().collect();
    messages.sort_by_key(|m| m.message_id);
    let mut lines = vec![format!("-- history of {} --", clean(conversation_id))];
    for m in &messages {
        lines.push(message_in(conversation_id, m));
    }
    lines.push(if messages.is_empty() {
        "-- no messages --".to_string()
    } else if has_more {
        "-- /older shows the page before --".to_string()
    } else {
        "-- the beginning of the conversation --".to_string()
    });
    lines
}

/// The oldest and newest ids of a `history` page.
pub fn history_span(messages: &[MessageView]) -> Option<(u64, u64)> {
    let mut ids = messages.iter().map(|m| m.message_id);
    let first = ids.next()?;
    Some(ids.fold((first, first), |(lo, hi), id| (lo.min(id), hi.max(id))))
}

/// The `conversations` list, one line each: the name (the peer of a direct
/// chat, the name of a group), the unread count, and for a group the
/// `#<group_id>` to send or page with.
pub fn conversations(items: &[ConversationItem], me: &str) -> Vec<String> {
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
    for ((name, unread, group), item) in rows.into_iter().zip(items) {
        let line = format!("  {name:<width$}  {unread:>3} unread");
        let line = match group {
            Some(id) => format!("{line}   #{id}"),
            None => line,
        };
        lines.push(match (item.last_sent, item.read_by, item.members) {
            (Some(id), Some(n), Some(m)) if m > 1 => {
                format!("{line}   your #{id}: read by {} of {}", n.min(m - 1), m - 1)
            }
            _ => line,
        });
    }
    lines
}

/// (name, unread, group id) of one `conversations` item.
fn conversation_row(item: &ConversationItem, me: &str) -> (String, u64, Option<String>) {
    let conversation = clean(&item.conversation_id);
    let text = |s: &Option<String>| s.as_deref().map(clean).unwrap_or_default();
    if item.kind == "group" || conversation.starts_with("grp#") {
        let group_id = text(&item.group_id);
        let id = if group_id.is_empty() {
            conversation
                .strip_prefix("grp#")
                .unwrap_or(&conversation)
                .to_string()
        } else {
            group_id
        };
        let name = text(&item.name);
        let name = if name.is_empty() { id.clone() } else { name };
        return (name, item.unread, Some(id));
    }
    let peer = text(&item.peer);
    let name = if !peer.is_empty() {
        peer
    } else {
        direct_peer(&conversation, me).unwrap_or(conversation)
    };
    (name, item.unread, None)
}

/// The other user of `dm#a#b` as seen by `me` (`me` for notes to self).
fn direct_peer(conversation: &str, me: &str) -> Option<String> {
    let (a, b) = conversation.strip_prefix("dm#")?.split_once('#')?;
    let peer = if a == me { b } else { a };
    Some(peer.to_string())
}

/// A frame this client cannot decode (a newer server's type, say), as
/// compact JSON.
pub fn unknown(f: &Value) -> String {
    let json = clean(&f.to_string());
    let short: String = json.chars().take(300).collect();
    if short.len() < json.len() {
        format!("? {short}…")
    } else {
        format!("? {short}")
    }
}

/// A `sync` replayed only the newest messages of a conversation.
pub fn gap(conversation_id: &str, after: u64, before: u64) -> String {
    format!(
        "-- [{conversation_id}] messages #{} to #{} were not replayed; /history WHO 50 {before} pages back --",
        after.saturating_add(1),
        before.saturating_sub(1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn msg(conversation_id: &str, message_id: u64, from: &str, text: &str) -> MessageView {
        MessageView {
            conversation_id: conversation_id.into(),
            message_id,
            from: from.into(),
            text: text.into(),
            sent_at: "t".into(),
        }
    }

    #[test]
    fn live_and_history_messages_print_alike() {
        let live = msg("dm#alice#bob", 7, "alice", "hi bob!");
        assert_eq!(message(&live), "[dm#alice#bob #7] alice: hi bob!");
        let page = [live, msg("", 6, "bob", "hey")];
        assert_eq!(
            history("dm#alice#bob", &page, true),
            [
                "-- history of dm#alice#bob --",
                "[dm#alice#bob #6] bob: hey",
                "[dm#alice#bob #7] alice: hi bob!",
                "-- /older shows the page before --",
            ]
        );
        assert_eq!(history_span(&page), Some((6, 7)));
        assert_eq!(
            history("dm#alice#bob", &page[..1], false).last().unwrap(),
            "-- the beginning of the conversation --"
        );
        assert_eq!(
            history("grp#g", &[], false),
            ["-- history of grp#g --", "-- no messages --"]
        );
        assert_eq!(history_span(&[]), None);
    }

    #[test]
    fn conversations_print_as_a_readable_list() {
        let item = |conversation_id: &str, kind: &str, unread| ConversationItem {
            conversation_id: conversation_id.into(),
            kind: kind.into(),
            peer: None,
            group_id: None,
            name: None,
            last_message_id: 7,
            acked_up_to: 5,
            unread,
            members: None,
            last_sent: None,
            read_by: None,
        };
        let items = [
            ConversationItem {
                peer: Some("bob".into()),
                ..item("dm#alice#bob", "direct", 2)
            },
            ConversationItem {
                group_id: Some("4f1c".into()),
                name: Some("team".into()),
                members: Some(4),
                last_sent: Some(6),
                read_by: Some(2),
                ..item("grp#4f1c", "group", 0)
            },
            item("dm#alice#carol", "direct", 11),
            item("grp#x9", "group", 1),
        ];
        assert_eq!(
            conversations(&items, "alice"),
            [
                "conversations (4):",
                "  bob      2 unread",
                "  team     0 unread   #4f1c   your #6: read by 2 of 3",
                "  carol   11 unread",
                "  x9       1 unread   #x9",
            ]
        );
        assert_eq!(conversations(&[], "alice"), ["no conversations yet"]);
    }

    #[test]
    fn read_by_counts_the_others_who_read_past_your_message() {
        let marks: std::collections::BTreeMap<String, u64> = [
            ("alice".to_string(), 9),
            ("bob".to_string(), 7),
            ("carol".to_string(), 6),
            ("dan".to_string(), 3),
        ]
        .into();
        assert_eq!(
            read_by(&marks, "alice", 6).as_deref(),
            Some("your #6: read by 2 of 3")
        );
        assert_eq!(
            receipts("grp#g", &marks, "alice", Some(7)),
            [
                "read in grp#g:",
                "  alice            up to #9",
                "  bob              up to #7",
                "  carol            up to #6",
                "  dan              up to #3",
                "  your #7: read by 1 of 3",
            ]
        );
        let alone: std::collections::BTreeMap<String, u64> = [("alice".to_string(), 1)].into();
        assert_eq!(read_by(&alone, "alice", 1), None);
    }

    #[test]
    fn errors_print_as_one_readable_line() {
        assert_eq!(
            error("forbidden", "not allowed", Some("send"), Some("c-12")),
            "! forbidden: not allowed (send c-12)"
        );
        assert_eq!(
            error("bad_request", "unknown action", None, None),
            "! bad_request: unknown action"
        );
        assert_eq!(
            error("forbidden", "not allowed", Some("history"), None),
            "! forbidden: not allowed (history)"
        );
        assert_eq!(error("", "a\nb", Some(""), None), "! error: a b");
    }

    #[test]
    fn other_frames_and_hostile_text() {
        let members = ["alice".to_string(), "bob".to_string()];
        assert_eq!(
            group("4f1c", "team", &members, &members[..1]),
            "group team (send with #4f1c TEXT): members alice, bob; admins alice"
        );
        assert_eq!(
            group("g", "g", &[], &[]),
            "group g (send with #g TEXT): members none; admins none"
        );
        assert_eq!(
            receipt("dm#alice#bob", "bob", 7),
            "  ✓✓ bob read dm#alice#bob up to #7"
        );
        assert_eq!(ack("dm#alice#bob", 7), "  ✓ stored as #7 in dm#alice#bob");
        let evil = msg("dm#a#b", 1, "a\u{1b}", "\u{1b}[2Jgotcha");
        assert!(!message(&evil).contains('\u{1b}'));
        let evil = error("x\u{7}", "m", Some("\u{1b}[2J"), None);
        assert!(
            !evil.contains('\u{1b}') && !evil.contains('\u{7}'),
            "{evil}"
        );
        assert_eq!(unknown(&json!({"type": "new"})), r#"? {"type":"new"}"#);
        // Not an object: printed as it is, never a panic.
        assert_eq!(unknown(&json!([1, 2])), "? [1,2]");
        let long = unknown(&json!({"type": "new", "x": "y".repeat(400)}));
        assert!(long.ends_with('…') && long.chars().count() == 303, "{long}");
    }
}
