//! What comes from the server: each text frame decoded into the protocol's
//! [`ServerFrame`], and handled: printed, de-duplicated, noted for its ack,
//! matched with the send it answers, or answered with the next page.
//!
//! A frame that is JSON but not a [`ServerFrame`] (a newer server's type,
//! say) is shown raw; nothing here panics, whatever the server sends.
//! Pure: the lines to print and the frames to write come back in a
//! [`Handled`]; the session prints and writes them.

use crate::commands::Older;
use crate::inbox::{Acks, Cursors, Seen};
use crate::outbox::{Outbox, Outcome};
use crate::show;
use chat_core::ids::UserId;
use chat_core::protocol::{ClientFrame, ConversationItem, MessageView, ServerFrame};
use serde_json::Value;
use std::time::Instant;

/// Most `conversations` pages fetched for one `/convs`.
const MAX_PAGES: u32 = 100;

/// A text frame from the server.
#[derive(Debug)]
pub enum Decoded {
    Frame(ServerFrame),
    /// JSON, but not a frame this client knows: a newer server's type, or
    /// a known type of another shape.
    Raw(Value),
    NotJson(serde_json::Error),
}

/// Decodes a text frame: one parse for a frame of the protocol, a second
/// only for one that is not.
pub fn decode(text: &str) -> Decoded {
    if let Ok(frame) = serde_json::from_str(text) {
        return Decoded::Frame(frame);
    }
    match serde_json::from_str(text) {
        Ok(value) => Decoded::Raw(value),
        Err(e) => Decoded::NotJson(e),
    }
}

/// A `/convs` listing being collected page by page.
#[derive(Debug, Default)]
pub struct Listing {
    items: Vec<ConversationItem>,
    cursor: Option<String>,
    pages: u32,
}

/// What handling a frame asks the session to do.
#[derive(Debug, Default, PartialEq)]
pub struct Handled {
    /// Lines for the user, in order.
    pub lines: Vec<String>,
    /// Frames to write (the next `conversations` page).
    pub frames: Vec<ClientFrame>,
}

/// What the frames read and change, shared with the typed commands.
pub struct Incoming {
    me: UserId,
    seen: Seen,
    /// The acks owed for what was shown.
    pub acks: Acks,
    /// What this device keeps, owed to the server as `received`.
    pub cursors: Cursors,
    /// The conversation last sent to or received from (a bare `/history`).
    pub current: Option<String>,
    /// Where `/older` continues.
    pub older: Option<Older>,
    /// The page size of the last `/history` (so `/older` pages alike).
    pub history_limit: Option<u32>,
    /// A `/convs` in progress.
    pub listing: Option<Listing>,
    /// Keepalive pings whose `pong` is not printed.
    pub quiet_pongs: u32,
    /// Per conversation, your newest acked message ("read by n of m").
    mine: std::collections::HashMap<String, u64>,
    /// Per conversation asked with `/receipts`, each member's watermark,
    /// kept up to date by the `receipt` frames that follow.
    marks: std::collections::HashMap<String, std::collections::BTreeMap<String, u64>>,
}

impl Incoming {
    pub fn new(me: UserId) -> Self {
        Incoming {
            me,
            seen: Seen::default(),
            acks: Acks::default(),
            cursors: Cursors::default(),
            current: None,
            older: None,
            history_limit: None,
            listing: None,
            quiet_pongs: 0,
            mine: Default::default(),
            marks: Default::default(),
        }
    }

    /// One text frame from the server, answering what `outbox` holds.
    pub fn on_text(&mut self, text: &str, outbox: &mut Outbox, now: Instant) -> Handled {
        let mut out = Handled::default();
        match decode(text) {
            Decoded::Frame(frame) => self.on_frame(frame, outbox, now, &mut out),
            Decoded::Raw(value) if value["type"] == "message" => out.lines.push(format!(
                "! the server sent a malformed message; ignored: {}",
                show::unknown(&value)
            )),
            Decoded::Raw(value) => out.lines.push(show::unknown(&value)),
            Decoded::NotJson(e) => out.lines.push(format!(
                "! the server sent a frame that is not JSON ({e}); ignored"
            )),
        }
        out
    }

    fn on_frame(
        &mut self,
        frame: ServerFrame,
        outbox: &mut Outbox,
        now: Instant,
        out: &mut Handled,
    ) {
        let line = match frame {
            ServerFrame::Message(m) => return self.on_message(m, out),
            ServerFrame::Ack {
                client_msg_id,
                conversation_id,
                message_id,
                ..
            } => {
                outbox.on_ack(&client_msg_id);
                self.cursors.note(&conversation_id, message_id);
                let newest = self.mine.entry(conversation_id.clone()).or_default();
                *newest = (*newest).max(message_id);
                let line = show::ack(&conversation_id, message_id);
                self.current = Some(conversation_id);
                line
            }
            ServerFrame::Error {
                code,
                message,
                client_msg_id,
                action,
            } => {
                if action.as_deref() == Some("ping") && self.quiet_pongs > 0 {
                    // An older server without `ping`: it answered, which is enough.
                    self.quiet_pongs -= 1;
                    return;
                }
                let line =
                    show::error(&code, &message, action.as_deref(), client_msg_id.as_deref());
                match client_msg_id.map(|id| outbox.on_error(&id, &code, now)) {
                    Some(Outcome::Retry(wait)) => {
                        format!("{line}; sending it again in {} s", wait.as_secs())
                    }
                    _ => line,
                }
            }
            ServerFrame::History {
                conversation_id,
                messages,
                has_more,
            } => return self.on_history(conversation_id, &messages, has_more, out),
            ServerFrame::Conversations { items, next_cursor } => {
                return self.on_conversations(items, next_cursor, out)
            }
            ServerFrame::Receipt {
                conversation_id,
                user_id,
                up_to,
            } => {
                let line = show::receipt(&conversation_id, &user_id, up_to);
                let mine = self.mine.get(&conversation_id).copied();
                match self.marks.get_mut(&conversation_id) {
                    Some(marks) => {
                        let mark = marks.entry(user_id).or_default();
                        *mark = (*mark).max(up_to);
                        match mine.and_then(|id| show::read_by(marks, self.me.as_str(), id)) {
                            Some(read) => format!("{line} ({read})"),
                            None => line,
                        }
                    }
                    None => line,
                }
            }
            ServerFrame::Receipts {
                conversation_id,
                members,
            } => {
                let marks: std::collections::BTreeMap<String, u64> =
                    members.into_iter().map(|m| (m.user_id, m.up_to)).collect();
                let mine = self.mine.get(&conversation_id).copied();
                out.lines.extend(show::receipts(
                    &conversation_id,
                    &marks,
                    self.me.as_str(),
                    mine,
                ));
                self.marks.insert(conversation_id, marks);
                return;
            }
            ServerFrame::Group {
                group_id,
                name,
                members,
                admins,
            } => show::group(&group_id, &name, &members, &admins),
            ServerFrame::Synced {} => "-- up to date --".to_string(),
            ServerFrame::Gap {
                conversation_id,
                after,
                before,
            } => {
                self.cursors.gap(&conversation_id, after, before);
                show::gap(&conversation_id, after, before)
            }
            ServerFrame::Pong {} if self.quiet_pongs > 0 => {
                self.quiet_pongs -= 1;
                return;
            }
            ServerFrame::Pong {} => "pong".to_string(),
        };
        out.lines.push(line);
    }

    fn on_message(&mut self, m: MessageView, out: &mut Handled) {
        if self.seen.first_time(&m.conversation_id, m.message_id) {
            out.lines.push(show::message(&m));
            self.current = Some(m.conversation_id.clone());
        }
        // Shown now or before: acked (once per conversation per batch).
        self.acks.note(&m.conversation_id, m.message_id);
        self.cursors.note(&m.conversation_id, m.message_id);
    }

    fn on_history(
        &mut self,
        conversation_id: String,
        messages: &[MessageView],
        has_more: bool,
        out: &mut Handled,
    ) {
        out.lines
            .extend(show::history(&conversation_id, messages, has_more));
        let span = show::history_span(messages);
        if let Some((_, newest)) = span {
            self.acks.note(&conversation_id, newest);
        }
        self.older = Some(Older {
            conversation_id,
            before: span.filter(|_| has_more).map(|(oldest, _)| oldest),
            limit: self.history_limit,
        });
    }

    /// A `conversations` page: asks for the next one while there is a
    /// `next_cursor`, then prints the whole list.
    fn on_conversations(
        &mut self,
        items: Vec<ConversationItem>,
        next_cursor: Option<String>,
        out: &mut Handled,
    ) {
        let listing = self.listing.get_or_insert_default();
        listing.items.extend(items);
        listing.pages += 1;
        let mut cut_short = false;
        if let Some(cursor) = next_cursor.filter(|c| !c.is_empty()) {
            if listing.pages < MAX_PAGES && listing.cursor.as_ref() != Some(&cursor) {
                listing.cursor = Some(cursor.clone());
                out.frames.push(ClientFrame::Conversations {
                    limit: None,
                    cursor: Some(cursor),
                });
                return;
            }
            cut_short = true;
        }
        let listing = self.listing.take().unwrap_or_default();
        out.lines
            .extend(show::conversations(&listing.items, self.me.as_str()));
        if cut_short {
            out.lines.push("  (more not fetched)".to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outgoing::Outgoing;
    use serde_json::json;

    fn alice() -> Incoming {
        Incoming::new(UserId::parse("alice").unwrap())
    }

    /// Handles `frame` (JSON) with an empty outbox.
    fn handle(s: &mut Incoming, frame: Value) -> Handled {
        s.on_text(&frame.to_string(), &mut Outbox::default(), Instant::now())
    }

    fn lines(s: &mut Incoming, frame: Value) -> Vec<String> {
        handle(s, frame).lines
    }

    fn message(id: u64, text: &str) -> Value {
        json!({"type": "message", "conversation_id": "dm#alice#bob", "message_id": id,
               "from": "bob", "text": text, "sent_at": "t"})
    }

    fn ack(conversation_id: &str, up_to: u64) -> ClientFrame {
        ClientFrame::Ack {
            conversation_id: conversation_id.into(),
            up_to,
        }
    }

    fn send(id: &str) -> Outgoing {
        ClientFrame::Send {
            to: "user:bob".into(),
            client_msg_id: id.into(),
            text: "hi".into(),
        }
        .into()
    }

    #[test]
    fn a_message_is_shown_once_and_acked() {
        let mut s = alice();
        assert_eq!(
            lines(&mut s, message(7, "hi")),
            ["[dm#alice#bob #7] bob: hi"]
        );
        assert_eq!(s.current.as_deref(), Some("dm#alice#bob"));
        assert!(lines(&mut s, message(7, "hi")).is_empty(), "a repeat");
        lines(&mut s, message(6, "older"));
        assert_eq!(s.acks.take_frames(), [ack("dm#alice#bob", 7)]);
        // A repeat after a reconnect is acked again, not shown again.
        s.acks.on_connect();
        assert!(lines(&mut s, message(7, "hi")).is_empty());
        assert_eq!(s.acks.take_frames(), [ack("dm#alice#bob", 7)]);
    }

    #[test]
    fn fields_a_newer_server_adds_are_ignored() {
        let mut f = message(1, "hi");
        f["edited"] = json!(true);
        assert_eq!(lines(&mut alice(), f), ["[dm#alice#bob #1] bob: hi"]);
    }

    #[test]
    fn an_unknown_frame_type_is_shown_raw() {
        let mut s = alice();
        let typing = json!({"type": "typing", "user_id": "bob"});
        let handled = handle(&mut s, typing);
        assert_eq!(handled.lines, [r#"? {"type":"typing","user_id":"bob"}"#]);
        assert!(handled.frames.is_empty());
        assert_eq!(lines(&mut s, json!([1, 2])), ["? [1,2]"]);
        assert_eq!(lines(&mut s, json!({"no": "type"})), [r#"? {"no":"type"}"#]);
        // A known type of another shape is shown raw too.
        let odd = json!({"type": "receipt", "up_to": "x"});
        assert_eq!(lines(&mut s, odd), [r#"? {"type":"receipt","up_to":"x"}"#]);
        assert!(s.acks.take_frames().is_empty());
    }

    #[test]
    fn a_malformed_message_or_text_that_is_not_json_is_ignored() {
        let mut s = alice();
        let bad = json!({"type": "message", "conversation_id": "dm#alice#bob"});
        assert_eq!(
            lines(&mut s, bad),
            [
                r#"! the server sent a malformed message; ignored: ? {"conversation_id":"dm#alice#bob","type":"message"}"#
            ]
        );
        assert!(s.acks.take_frames().is_empty(), "not acked");
        assert_eq!(s.current, None);
        let out = s.on_text("{oops", &mut Outbox::default(), Instant::now());
        assert_eq!(out.lines.len(), 1);
        assert!(out.lines[0].starts_with("! the server sent a frame that is not JSON ("));
        assert!(out.lines[0].ends_with("); ignored"));
    }

    #[test]
    fn an_ack_answers_its_send_and_errors_drop_or_retry_one() {
        let mut s = alice();
        let mut outbox = Outbox::default();
        let now = Instant::now();
        for id in ["c-1", "c-2", "c-3"] {
            outbox.push(send(id));
        }
        let a = json!({"type": "ack", "client_msg_id": "c-1", "conversation_id": "dm#alice#bob",
                       "message_id": 3, "sent_at": "t"});
        let out = s.on_text(&a.to_string(), &mut outbox, now);
        assert_eq!(out.lines, ["  ✓ stored as #3 in dm#alice#bob"]);
        assert_eq!(s.current.as_deref(), Some("dm#alice#bob"));
        assert_eq!(outbox.pending(), 2);
        let e = json!({"type": "error", "code": "internal", "message": "internal error; try again",
                       "client_msg_id": "c-2", "action": "send"});
        let out = s.on_text(&e.to_string(), &mut outbox, now);
        assert_eq!(
            out.lines,
            ["! internal: internal error; try again (send c-2); sending it again in 1 s"]
        );
        assert_eq!(outbox.pending(), 2, "kept for the retry");
        let e = json!({"type": "error", "code": "forbidden", "message": "not allowed",
                       "client_msg_id": "c-3", "action": "send"});
        let out = s.on_text(&e.to_string(), &mut outbox, now);
        assert_eq!(out.lines, ["! forbidden: not allowed (send c-3)"]);
        assert_eq!(outbox.pending(), 1, "dropped");
    }

    #[test]
    fn keepalive_pongs_are_quiet_and_others_are_shown() {
        let mut s = alice();
        s.quiet_pongs = 2;
        assert!(lines(&mut s, json!({"type": "pong"})).is_empty());
        // An older server answers `ping` with an error: quiet too.
        let e = json!({"type": "error", "code": "bad_request", "message": "unknown action",
                       "action": "ping"});
        assert!(lines(&mut s, e.clone()).is_empty());
        assert_eq!(s.quiet_pongs, 0);
        assert_eq!(lines(&mut s, json!({"type": "pong"})), ["pong"]);
        assert_eq!(lines(&mut s, e), ["! bad_request: unknown action (ping)"]);
    }

    #[test]
    fn a_history_page_is_shown_acked_and_paged_back_from() {
        let mut s = alice();
        s.history_limit = Some(2);
        let page = json!({"type": "history", "conversation_id": "dm#alice#bob", "has_more": true,
                          "messages": [message(5, "b"), message(4, "a")]});
        assert_eq!(
            lines(&mut s, page),
            [
                "-- history of dm#alice#bob --",
                "[dm#alice#bob #4] bob: a",
                "[dm#alice#bob #5] bob: b",
                "-- /older shows the page before --",
            ]
        );
        assert_eq!(
            s.older,
            Some(Older {
                conversation_id: "dm#alice#bob".into(),
                before: Some(4),
                limit: Some(2),
            })
        );
        assert_eq!(s.acks.take_frames(), [ack("dm#alice#bob", 5)]);
    }

    #[test]
    fn conversations_are_fetched_page_by_page_then_listed() {
        let mut s = alice();
        s.listing = Some(Listing::default());
        let item = |peer: &str, unread: u64| {
            json!({"conversation_id": format!("dm#alice#{peer}"), "kind": "direct", "peer": peer,
                   "last_message_id": 9, "acked_up_to": 9 - unread, "unread": unread})
        };
        let first =
            json!({"type": "conversations", "items": [item("bob", 2)], "next_cursor": "k1"});
        let out = handle(&mut s, first.clone());
        assert!(out.lines.is_empty());
        assert_eq!(
            out.frames,
            [ClientFrame::Conversations {
                limit: None,
                cursor: Some("k1".into())
            }]
        );
        let last = json!({"type": "conversations", "items": [item("carol", 0)]});
        let out = handle(&mut s, last);
        assert!(out.frames.is_empty());
        assert_eq!(
            out.lines,
            [
                "conversations (2):",
                "  bob      2 unread",
                "  carol    0 unread"
            ]
        );
        assert!(s.listing.is_none(), "done");
        // A server that repeats its cursor: what came is listed, once.
        handle(&mut s, first.clone());
        let out = handle(&mut s, first);
        assert!(out.frames.is_empty());
        assert_eq!(out.lines.last().unwrap(), "  (more not fetched)");
    }

    #[test]
    fn receipts_groups_and_synced_are_shown() {
        let mut s = alice();
        let r = json!({"type": "receipt", "conversation_id": "dm#alice#bob", "user_id": "bob", "up_to": 1});
        assert_eq!(lines(&mut s, r), ["  ✓✓ bob read dm#alice#bob up to #1"]);
        let g = json!({"type": "group", "group_id": "g1", "name": "team",
                       "members": ["alice", "bob"], "admins": ["alice"]});
        assert_eq!(
            lines(&mut s, g),
            ["group team (send with #g1 TEXT): members alice, bob; admins alice"]
        );
        assert_eq!(
            lines(&mut s, json!({"type": "synced"})),
            ["-- up to date --"]
        );
    }
}
