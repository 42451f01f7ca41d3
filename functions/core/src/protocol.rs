//! The wire protocol of DESIGN.md §3 as serde types, and the parser that
//! turns an untrusted text frame into a [`ClientFrame`] or a clear error.

use crate::error::{Error, Result};
use crate::ids::truncate;
use serde::{Deserialize, Serialize};

/// Longest message text, in bytes of UTF-8 after JSON decoding.
pub const MAX_TEXT_BYTES: usize = 10_240;
/// Largest group, creator included.
pub const MAX_GROUP_MEMBERS: usize = 100;
/// Longest group name, in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 128;
/// Largest `history` page.
pub const MAX_HISTORY_LIMIT: u32 = 100;
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;

/// The actions a client may send; the names are API Gateway route keys.
pub const ACTIONS: [&str; 9] = [
    "send",
    "ack",
    "sync",
    "history",
    "conversations",
    "createGroup",
    "addMember",
    "removeMember",
    "ping",
];

/// A frame from a client, routed on `action`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "action")]
pub enum ClientFrame {
    #[serde(rename = "send")]
    Send {
        to: String,
        client_msg_id: String,
        text: String,
    },
    #[serde(rename = "ack")]
    Ack { conversation_id: String, up_to: u64 },
    #[serde(rename = "sync")]
    Sync {},
    #[serde(rename = "history")]
    History {
        conversation_id: String,
        #[serde(default)]
        before: Option<u64>,
        #[serde(default)]
        limit: Option<u32>,
    },
    #[serde(rename = "conversations")]
    Conversations {},
    #[serde(rename = "createGroup")]
    CreateGroup { name: String, members: Vec<String> },
    #[serde(rename = "addMember")]
    AddMember { group_id: String, user_id: String },
    #[serde(rename = "removeMember")]
    RemoveMember { group_id: String, user_id: String },
    /// Application-level keepalive for clients that cannot send WebSocket
    /// pings (browsers); answered with `pong`.
    #[serde(rename = "ping")]
    Ping {},
}

impl ClientFrame {
    pub fn action(&self) -> &'static str {
        match self {
            ClientFrame::Send { .. } => "send",
            ClientFrame::Ack { .. } => "ack",
            ClientFrame::Sync {} => "sync",
            ClientFrame::History { .. } => "history",
            ClientFrame::Conversations {} => "conversations",
            ClientFrame::CreateGroup { .. } => "createGroup",
            ClientFrame::AddMember { .. } => "addMember",
            ClientFrame::RemoveMember { .. } => "removeMember",
            ClientFrame::Ping {} => "ping",
        }
    }

    pub fn client_msg_id(&self) -> Option<&str> {
        match self {
            ClientFrame::Send { client_msg_id, .. } => Some(client_msg_id),
            _ => None,
        }
    }
}

/// What a failed parse still knows, so the error frame can name the
/// `action` and `client_msg_id` it answers.
#[derive(Debug)]
pub struct FrameError {
    pub error: Error,
    pub action: Option<String>,
    pub client_msg_id: Option<String>,
}

impl FrameError {
    pub fn to_frame(&self) -> ServerFrame {
        self.error
            .to_frame(self.action.as_deref(), self.client_msg_id.as_deref())
    }
}

/// Parses one text frame. Never panics; every failure is `bad_request`
/// (or `too_large` for an over-long text) with a message a developer can act on.
pub fn parse_client_frame(text: &str) -> std::result::Result<ClientFrame, FrameError> {
    let fail = |error, action: Option<String>, id: Option<String>| FrameError {
        error,
        action,
        client_msg_id: id,
    };
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        fail(
            Error::BadRequest(format!("malformed JSON: {e}")),
            None,
            None,
        )
    })?;
    let obj = value.as_object().ok_or_else(|| {
        fail(
            Error::BadRequest("a frame must be a JSON object".into()),
            None,
            None,
        )
    })?;
    let client_msg_id = obj
        .get("client_msg_id")
        .and_then(|v| v.as_str())
        .map(|s| truncate(s, 64).to_string());
    let action = match obj.get("action") {
        Some(serde_json::Value::String(a)) => a.clone(),
        Some(_) => {
            return Err(fail(
                Error::BadRequest("`action` must be a string".into()),
                None,
                client_msg_id,
            ))
        }
        None => {
            return Err(fail(
                Error::BadRequest("missing field `action`".into()),
                None,
                client_msg_id,
            ))
        }
    };
    if !ACTIONS.contains(&action.as_str()) {
        let shown = truncate(&action, 64).to_string();
        return Err(fail(
            Error::BadRequest(format!(
                "unknown action {shown:?}; expected one of {}",
                ACTIONS.join(", ")
            )),
            Some(shown),
            client_msg_id,
        ));
    }
    let frame: ClientFrame = serde_json::from_value(value).map_err(|e| {
        fail(
            Error::BadRequest(format!("invalid {action} frame: {e}")),
            Some(action.clone()),
            client_msg_id.clone(),
        )
    })?;
    validate(&frame).map_err(|e| fail(e, Some(action), client_msg_id))?;
    Ok(frame)
}

/// Field rules that serde cannot express.
fn validate(frame: &ClientFrame) -> Result<()> {
    match frame {
        ClientFrame::Send {
            client_msg_id,
            text,
            ..
        } => {
            if client_msg_id.is_empty() || client_msg_id.chars().count() > 64 {
                return Err(Error::BadRequest(
                    "client_msg_id must be 1 to 64 characters".into(),
                ));
            }
            if text.len() > MAX_TEXT_BYTES {
                return Err(Error::TooLarge(format!(
                    "text is {} bytes of UTF-8; the limit is {MAX_TEXT_BYTES}",
                    text.len()
                )));
            }
            if text.is_empty() {
                return Err(Error::BadRequest("text must not be empty".into()));
            }
        }
        ClientFrame::History { limit: Some(l), .. } if *l == 0 || *l > MAX_HISTORY_LIMIT => {
            return Err(Error::BadRequest(format!(
                "limit must be 1 to {MAX_HISTORY_LIMIT}"
            )));
        }
        ClientFrame::CreateGroup { name, .. }
            if name.trim().is_empty() || name.len() > MAX_GROUP_NAME_BYTES =>
        {
            return Err(Error::BadRequest(format!(
                "group name must be 1 to {MAX_GROUP_NAME_BYTES} bytes"
            )));
        }
        _ => {}
    }
    Ok(())
}

/// A stored message as clients see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageView {
    pub conversation_id: String,
    pub message_id: u64,
    pub from: String,
    pub text: String,
    pub sent_at: String,
}

/// One row of the `conversations` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
}

/// A frame from the server, tagged by `type`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerFrame {
    Ack {
        client_msg_id: String,
        conversation_id: String,
        message_id: u64,
        sent_at: String,
    },
    Message(MessageView),
    Receipt {
        conversation_id: String,
        user_id: String,
        up_to: u64,
    },
    Synced {},
    History {
        conversation_id: String,
        messages: Vec<MessageView>,
        has_more: bool,
    },
    Conversations {
        items: Vec<ConversationItem>,
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

    fn code(text: &str) -> String {
        parse_client_frame(text)
            .unwrap_err()
            .error
            .code()
            .to_string()
    }

    #[test]
    fn parses_every_action_of_the_protocol() {
        let cases = [
            r#"{"action":"send","to":"user:bob","client_msg_id":"c-1","text":"hi"}"#,
            r#"{"action":"ack","conversation_id":"dm#a#b","up_to":42}"#,
            r#"{"action":"sync"}"#,
            r#"{"action":"history","conversation_id":"dm#a#b","before":100,"limit":50}"#,
            r#"{"action":"history","conversation_id":"dm#a#b"}"#,
            r#"{"action":"conversations"}"#,
            r#"{"action":"createGroup","name":"team","members":["bob","carol"]}"#,
            r#"{"action":"addMember","group_id":"g","user_id":"dave"}"#,
            r#"{"action":"removeMember","group_id":"g","user_id":"dave"}"#,
        ];
        for c in cases {
            parse_client_frame(c).unwrap_or_else(|e| panic!("{c}: {:?}", e.error));
        }
    }

    #[test]
    fn text_limit_is_counted_in_utf8_bytes_after_decoding() {
        let ok = format!(
            r#"{{"action":"send","to":"user:b","client_msg_id":"c","text":"{}"}}"#,
            "é".repeat(5120)
        );
        assert!(parse_client_frame(&ok).is_ok());
        let over = format!(
            r#"{{"action":"send","to":"user:b","client_msg_id":"c","text":"{}x"}}"#,
            "é".repeat(5120)
        );
        let err = parse_client_frame(&over).unwrap_err();
        assert_eq!(err.error.code(), "too_large");
        assert_eq!(err.client_msg_id.as_deref(), Some("c"));
        // An escape counts as the character it decodes to.
        let escaped = format!(
            r#"{{"action":"send","to":"user:b","client_msg_id":"c","text":"{}"}}"#,
            "\\u0041".repeat(10_240)
        );
        assert!(parse_client_frame(&escaped).is_ok());
    }

    #[test]
    fn bad_frames_are_bad_requests_that_name_what_is_wrong() {
        assert_eq!(code("{not json"), "bad_request");
        assert_eq!(code("[1,2]"), "bad_request");
        assert_eq!(code(r#"{"to":"user:b"}"#), "bad_request");
        let e = parse_client_frame(r#"{"action":"launch"}"#).unwrap_err();
        assert_eq!(e.action.as_deref(), Some("launch"));
        assert!(e.error.to_string().contains("unknown action"));
        let e = parse_client_frame(r#"{"action":"send","to":"user:b","client_msg_id":"c9"}"#)
            .unwrap_err();
        assert!(
            e.error.to_string().contains("missing field `text`"),
            "{}",
            e.error
        );
        assert_eq!(e.client_msg_id.as_deref(), Some("c9"));
        assert_eq!(
            code(r#"{"action":"ack","conversation_id":"x","up_to":-1}"#),
            "bad_request"
        );
        assert_eq!(
            code(r#"{"action":"history","conversation_id":"x","limit":0}"#),
            "bad_request"
        );
        assert_eq!(
            code(r#"{"action":"history","conversation_id":"x","limit":101}"#),
            "bad_request"
        );
        assert_eq!(
            code(r#"{"action":"send","to":"user:b","client_msg_id":"","text":"x"}"#),
            "bad_request"
        );
    }

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
        let e = Error::Forbidden.to_frame(Some("history"), None).to_json();
        assert_eq!(
            e,
            r#"{"type":"error","code":"forbidden","message":"not allowed","action":"history"}"#
        );
    }
}
