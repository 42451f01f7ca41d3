//! What the client writes: frames it builds (the protocol's
//! [`ClientFrame`]) and JSON objects the user typed, passed through as
//! typed; their text on the wire, the size check, and fresh
//! `client_msg_id`s.

use chat_core::protocol::{ClientFrame, MAX_FRAME_BYTES};
use serde_json::Value;
use std::time::{SystemTime, UNIX_EPOCH};

/// A frame to write.
#[derive(Debug, Clone, PartialEq)]
pub enum Outgoing {
    /// A frame this client built.
    Frame(ClientFrame),
    /// A JSON object the user typed: written as it is, whatever it holds
    /// (an unknown action, a missing or extra field), so the server's
    /// answer to it shows.
    Raw(Value),
}

impl From<ClientFrame> for Outgoing {
    fn from(frame: ClientFrame) -> Self {
        Outgoing::Frame(frame)
    }
}

impl Outgoing {
    /// The text frame: compact JSON. A built frame leaves out the options
    /// it does not set (`null` would mean the same to the server).
    pub fn to_json(&self) -> String {
        match self {
            Outgoing::Frame(frame) => encode(frame),
            Outgoing::Raw(value) => value.to_string(),
        }
    }

    /// The `client_msg_id` of a `send`, built or typed: such a frame is
    /// kept until the server answers it.
    pub fn send_id(&self) -> Option<&str> {
        match self {
            Outgoing::Frame(frame) => frame.client_msg_id(),
            Outgoing::Raw(value) if value["action"] == "send" => value["client_msg_id"].as_str(),
            Outgoing::Raw(_) => None,
        }
    }
}

/// A built frame as JSON, without its unset options.
fn encode(frame: &ClientFrame) -> String {
    // Strings, numbers and lists of strings: serializing cannot fail.
    match serde_json::to_value(frame).unwrap_or_default() {
        Value::Object(mut fields) => {
            fields.retain(|_, v| !v.is_null());
            Value::Object(fields).to_string()
        }
        other => other.to_string(),
    }
}

/// Refuses a frame the server would close the connection for (1009).
pub fn check_size(frame: &Outgoing) -> Result<(), String> {
    let len = frame.to_json().len();
    if len > MAX_FRAME_BYTES {
        return Err(format!(
            "too large: the frame is {len} bytes; the server takes at most {MAX_FRAME_BYTES}"
        ));
    }
    Ok(())
}

/// Fresh `client_msg_id`s: `cli-<clock and process>-<n>`, unique across runs.
pub struct MsgIds {
    prefix: String,
    n: u64,
}

impl MsgIds {
    pub fn from_clock() -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        MsgIds {
            prefix: format!("{nanos:x}{:x}", std::process::id()),
            n: 0,
        }
    }

    pub fn fresh(&mut self) -> String {
        self.n += 1;
        format!("cli-{}-{}", self.prefix, self.n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::protocol::MAX_TEXT_BYTES;
    use serde_json::json;

    fn send(text: &str) -> Outgoing {
        ClientFrame::Send {
            to: "user:bob".into(),
            client_msg_id: "c-1".into(),
            text: text.into(),
        }
        .into()
    }

    #[test]
    fn built_frames_are_compact_json_without_unset_options() {
        assert_eq!(
            send("hi").to_json(),
            r#"{"action":"send","client_msg_id":"c-1","text":"hi","to":"user:bob"}"#
        );
        let page = ClientFrame::History {
            conversation_id: "dm#a#b".into(),
            before: None,
            limit: Some(20),
        };
        assert_eq!(
            Outgoing::from(page).to_json(),
            r#"{"action":"history","conversation_id":"dm#a#b","limit":20}"#
        );
        let next = ClientFrame::Conversations {
            limit: None,
            cursor: Some("k".into()),
        };
        assert_eq!(
            Outgoing::from(next).to_json(),
            r#"{"action":"conversations","cursor":"k"}"#
        );
        assert_eq!(
            Outgoing::from(ClientFrame::Sync {}).to_json(),
            r#"{"action":"sync"}"#
        );
        // What the server parses back is the frame that was built.
        let group = ClientFrame::CreateGroup {
            name: "team".into(),
            members: vec!["bob".into(), "carol".into()],
        };
        let text = Outgoing::from(group.clone()).to_json();
        assert_eq!(
            chat_core::protocol::parse_client_frame(&text).ok(),
            Some(group)
        );
    }

    #[test]
    fn raw_frames_pass_through_as_typed() {
        let raw = json!({"action": "launch", "to": null, "n": [1, 2]});
        assert_eq!(
            Outgoing::Raw(raw).to_json(),
            r#"{"action":"launch","n":[1,2],"to":null}"#
        );
        let raw_send = json!({"action": "send", "client_msg_id": "c-9", "text": ""});
        assert_eq!(Outgoing::Raw(raw_send).send_id(), Some("c-9"));
        assert_eq!(
            Outgoing::Raw(json!({"client_msg_id": "c-9"})).send_id(),
            None
        );
        assert_eq!(send("hi").send_id(), Some("c-1"));
        assert_eq!(Outgoing::from(ClientFrame::Ping {}).send_id(), None);
    }

    #[test]
    fn oversized_frames_are_refused() {
        assert!(check_size(&ClientFrame::Sync {}.into()).is_ok());
        let big = send(&"\u{1}".repeat(MAX_TEXT_BYTES));
        assert!(check_size(&big).is_err(), "escapes make it over 32 KB");
        let raw = Outgoing::Raw(json!({"action": "send", "text": "\u{1}".repeat(MAX_TEXT_BYTES)}));
        assert!(check_size(&raw).is_err());
    }

    #[test]
    fn msg_ids_are_fresh_and_short_enough() {
        let mut ids = MsgIds::from_clock();
        let (a, b) = (ids.fresh(), ids.fresh());
        assert_ne!(a, b);
        assert!(a.len() <= 64, "{a}");
    }
}
