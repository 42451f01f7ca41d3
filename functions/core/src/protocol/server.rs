//! The frames the server sends, tagged by `type`, and the one place where an
//! [`Error`] becomes an `error` frame.

use crate::error::Error;
use serde::{Deserialize, Serialize};

/// A stored message as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct MessageView {
    pub conversation_id: String,
    pub message_id: u64,
    pub from: String,
    pub text: String,
    pub sent_at: String,
}

/// One row of the `conversations` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ConversationItem {
    pub conversation_id: String,
    /// `direct` or `group`.
    pub kind: String,
    /// The other party of a direct chat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub peer: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub last_message_id: u64,
    pub acked_up_to: u64,
    /// Messages above the watermark: what a client shows as a badge.
    pub unread: u64,
    /// A group: how many members it has (you included), for "read by n
    /// of m" with m = members - 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub members: Option<u64>,
    /// A group: the id of your newest message in it (absent if none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent: Option<u64>,
    /// A group: how many other members have read up to `last_sent`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_by: Option<u64>,
}

/// One member's read watermark, as `receipts` answers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReadMark {
    pub user_id: String,
    pub up_to: u64,
}

/// A frame from the server, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    Ack {
        client_msg_id: String,
        conversation_id: String,
        message_id: u64,
        sent_at: String,
    },
    Message(MessageView),
    /// A member's watermark moved: in a direct chat to the other party
    /// (and your other devices); in a group only to the authors of the
    /// messages it newly covers.
    Receipt {
        conversation_id: String,
        user_id: String,
        up_to: u64,
    },
    /// The answer to `receipts`: every member's watermark.
    Receipts {
        conversation_id: String,
        members: Vec<ReadMark>,
    },
    /// A `sync` replayed only the newest messages of a conversation: the
    /// ones this device misses, above `after` (its position) and below
    /// `before`, are left out (page back with `history`). Sent before that
    /// conversation's replay.
    Gap {
        conversation_id: String,
        after: u64,
        before: u64,
    },
    Synced {},
    History {
        conversation_id: String,
        messages: Vec<MessageView>,
        has_more: bool,
    },
    Conversations {
        items: Vec<ConversationItem>,
        /// Present when more conversations follow: send it back as `cursor`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        next_cursor: Option<String>,
    },
    Group {
        group_id: String,
        name: String,
        members: Vec<String>,
        admins: Vec<String>,
    },
    Pong {},
    Error {
        code: String,
        message: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        client_msg_id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        action: Option<String>,
    },
}

impl ServerFrame {
    /// The `error` frame a client sees for `e`, naming the `action` and
    /// `client_msg_id` it answers. Internal failures show only a generic
    /// message; their detail is for the logs.
    pub fn error(e: &Error, action: Option<&str>, client_msg_id: Option<&str>) -> Self {
        let message = if e.is_internal() {
            "internal error; try again".to_string()
        } else {
            e.to_string()
        };
        ServerFrame::Error {
            code: e.code().to_string(),
            message,
            client_msg_id: client_msg_id.map(str::to_string),
            action: action.map(str::to_string),
        }
    }

    pub fn to_json(&self) -> String {
        // Serializing these plain structs cannot fail (no maps with non-string keys).
        serde_json::to_string(self).unwrap_or_else(|_| {
            r#"{"type":"error","code":"internal","message":"serialization failed"}"#.into()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_frames_serialize_to_the_documented_shapes() {
        let f = ServerFrame::Ack {
            client_msg_id: "c-1".into(),
            conversation_id: "dm#a#b".into(),
            message_id: 7,
            sent_at: "t".into(),
        };
        assert_eq!(
            f.to_json(),
            r#"{"type":"ack","client_msg_id":"c-1","conversation_id":"dm#a#b","message_id":7,"sent_at":"t"}"#
        );
        assert_eq!(ServerFrame::Synced {}.to_json(), r#"{"type":"synced"}"#);
        let e = ServerFrame::error(&Error::Forbidden, Some("history"), None).to_json();
        assert_eq!(
            e,
            r#"{"type":"error","code":"forbidden","message":"not allowed","action":"history"}"#
        );
    }

    #[test]
    fn internal_errors_reveal_nothing() {
        let e = ServerFrame::error(&Error::Store("table x is on fire".into()), None, None);
        let json = e.to_json();
        assert!(json.contains(r#""code":"internal""#), "{json}");
        assert!(!json.contains("fire"), "{json}");
    }
}
