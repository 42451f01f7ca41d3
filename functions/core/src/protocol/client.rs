//! Parsing an untrusted text frame into a [`ClientFrame`], or a clear error.
//!
//! The hot path is one `serde_json` parse straight into the enum. Only a
//! frame that fails it is looked at a second time, leniently, to name the
//! `action` and `client_msg_id` the error answers and to say what is wrong.

use super::{
    ClientFrame, ReceivedItem, ServerFrame, ACTIONS, MAX_CLIENT_MSG_ID_CHARS,
    MAX_CONVERSATIONS_LIMIT, MAX_GROUP_NAME_BYTES, MAX_HISTORY_LIMIT, MAX_RECEIVED_ITEMS,
    MAX_TEXT_BYTES,
};
use crate::error::{Error, Result};
use crate::ids::{first_chars, truncate};

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
        ServerFrame::error(
            &self.error,
            self.action.as_deref(),
            self.client_msg_id.as_deref(),
        )
    }
}

/// Parses one text frame. Never panics; every failure is `bad_request`
/// (or `too_large` for an over-long text) with a message a developer can act on.
pub fn parse_client_frame(text: &str) -> std::result::Result<ClientFrame, FrameError> {
    let frame = match serde_json::from_str::<ClientFrame>(text) {
        Ok(frame) => frame,
        Err(_) => slow_path(text)?,
    };
    match validate(&frame) {
        Ok(()) => Ok(frame),
        Err(error) => Err(FrameError {
            error,
            action: Some(frame.action().to_string()),
            client_msg_id: frame
                .client_msg_id()
                .map(|s| first_chars(s, MAX_CLIENT_MSG_ID_CHARS).to_string()),
        }),
    }
}

/// The slow path: the frame as a JSON value first (where a repeated key
/// means its last value, as in most JSON parsers), then the frame, or why
/// it is not one, with what it names.
fn slow_path(text: &str) -> std::result::Result<ClientFrame, FrameError> {
    let fail = |error, action: Option<String>, id: Option<String>| FrameError {
        error,
        action,
        client_msg_id: id,
    };
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Err(fail(
                Error::BadRequest(format!("malformed JSON: {e}")),
                None,
                None,
            ))
        }
    };
    let Some(obj) = value.as_object() else {
        return Err(fail(
            Error::BadRequest("a frame must be a JSON object".into()),
            None,
            None,
        ));
    };
    let client_msg_id = obj
        .get("client_msg_id")
        .and_then(|v| v.as_str())
        .map(|s| first_chars(s, MAX_CLIENT_MSG_ID_CHARS).to_string());
    let action = match obj.get("action") {
        Some(serde_json::Value::String(a)) => truncate(a, 64).to_string(),
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
    if !ACTIONS.iter().any(|a| a.name == action) {
        let names: Vec<&str> = ACTIONS.iter().map(|a| a.name).collect();
        return Err(fail(
            Error::BadRequest(format!(
                "unknown action {action:?}; expected one of {}",
                names.join(", ")
            )),
            Some(action),
            client_msg_id,
        ));
    }
    serde_json::from_value::<ClientFrame>(value).map_err(|e| {
        fail(
            Error::BadRequest(format!("invalid {action} frame: {e}")),
            Some(action),
            client_msg_id,
        )
    })
}

/// Field rules that serde cannot express.
fn validate(frame: &ClientFrame) -> Result<()> {
    match frame {
        ClientFrame::Send {
            client_msg_id,
            text,
            ..
        } => {
            if client_msg_id.is_empty() || client_msg_id.chars().count() > MAX_CLIENT_MSG_ID_CHARS {
                return Err(Error::BadRequest(format!(
                    "client_msg_id must be 1 to {MAX_CLIENT_MSG_ID_CHARS} characters"
                )));
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
        ClientFrame::Received {
            conversation_id,
            from,
            up_to,
            items,
        } => {
            received_runs(conversation_id.as_deref(), *from, *up_to, items.as_deref())?;
        }
        ClientFrame::History { limit: Some(l), .. } if *l == 0 || *l > MAX_HISTORY_LIMIT => {
            return Err(Error::BadRequest(format!(
                "limit must be 1 to {MAX_HISTORY_LIMIT}"
            )));
        }
        ClientFrame::Conversations { limit: Some(l), .. }
            if *l == 0 || *l > MAX_CONVERSATIONS_LIMIT =>
        {
            return Err(Error::BadRequest(format!(
                "limit must be 1 to {MAX_CONVERSATIONS_LIMIT}"
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

/// The runs a `received` frame names, one conversation or `items`
/// (1 to [`MAX_RECEIVED_ITEMS`]), each with 1 ≤ `from` ≤ `up_to`.
pub fn received_runs(
    conversation_id: Option<&str>,
    from: Option<u64>,
    up_to: Option<u64>,
    items: Option<&[ReceivedItem]>,
) -> Result<Vec<ReceivedItem>> {
    let runs = match (conversation_id, from, up_to, items) {
        (Some(c), Some(from), Some(up_to), None) => vec![ReceivedItem {
            conversation_id: c.to_string(),
            from,
            up_to,
        }],
        (None, None, None, Some(items))
            if !items.is_empty() && items.len() <= MAX_RECEIVED_ITEMS =>
        {
            items.to_vec()
        }
        (None, None, None, Some(_)) => {
            return Err(Error::BadRequest(format!(
                "items must name 1 to {MAX_RECEIVED_ITEMS} conversations"
            )))
        }
        _ => {
            return Err(Error::BadRequest(
                "received takes conversation_id, from and up_to, or items".into(),
            ))
        }
    };
    if runs.iter().any(|r| r.from == 0 || r.from > r.up_to) {
        return Err(Error::BadRequest(
            "received: from must be 1 to up_to (the run of ids the device holds)".into(),
        ));
    }
    Ok(runs)
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
            r#"{"action":"received","conversation_id":"dm#a#b","from":40,"up_to":42}"#,
            r#"{"action":"received","items":[{"conversation_id":"dm#a#b","from":1,"up_to":42}]}"#,
            r#"{"action":"history","conversation_id":"dm#a#b","before":100,"limit":50}"#,
            r#"{"action":"history","conversation_id":"dm#a#b"}"#,
            r#"{"action":"conversations"}"#,
            r#"{"action":"receipts","conversation_id":"grp#g"}"#,
            r#"{"action":"createGroup","name":"team","members":["bob","carol"]}"#,
            r#"{"action":"addMember","group_id":"g","user_id":"dave"}"#,
            r#"{"action":"removeMember","group_id":"g","user_id":"dave"}"#,
            r#"{"action":"ping"}"#,
        ];
        let mut seen = Vec::new();
        for c in cases {
            let f = parse_client_frame(c).unwrap_or_else(|e| panic!("{c}: {:?}", e.error));
            assert!(c.contains(&format!(r#""action":"{}""#, f.action())));
            seen.push(f.action());
        }
        for a in ACTIONS {
            assert!(seen.contains(&a.name), "no case for {}", a.name);
        }
    }

    #[test]
    fn received_takes_one_run_or_1_to_100_runs_each_from_1_to_up_to() {
        let item = r#"{"conversation_id":"c","from":1,"up_to":1}"#;
        let many = |n: usize| vec![item; n].join(",");
        for bad in [
            r#"{"action":"received"}"#.to_string(),
            r#"{"action":"received","conversation_id":"c"}"#.to_string(),
            r#"{"action":"received","conversation_id":"c","up_to":3}"#.to_string(),
            r#"{"action":"received","conversation_id":"c","from":0,"up_to":3}"#.to_string(),
            r#"{"action":"received","conversation_id":"c","from":4,"up_to":3}"#.to_string(),
            r#"{"action":"received","items":[{"conversation_id":"c","up_to":3}]}"#.to_string(),
            r#"{"action":"received","items":[{"conversation_id":"c","from":5,"up_to":3}]}"#
                .to_string(),
            r#"{"action":"received","items":[]}"#.to_string(),
            format!(r#"{{"action":"received","items":[{}]}}"#, many(101)),
            format!(
                r#"{{"action":"received","conversation_id":"c","from":1,"up_to":1,"items":[{item}]}}"#
            ),
        ] {
            let e = parse_client_frame(&bad).unwrap_err();
            assert_eq!(e.error.code(), "bad_request", "{bad}");
            assert_eq!(e.action.as_deref(), Some("received"), "{bad}");
        }
        let ok = format!(r#"{{"action":"received","items":[{}]}}"#, many(100));
        assert!(parse_client_frame(&ok).is_ok());
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
        assert_eq!(err.action.as_deref(), Some("send"));
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
        assert_eq!(code(r#"{"action":7}"#), "bad_request");
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
        assert_eq!(e.action.as_deref(), Some("send"));
        assert_eq!(
            code(r#"{"action":"ack","conversation_id":"x","up_to":-1}"#),
            "bad_request"
        );
        // A repeated key means its last value, as in most JSON parsers.
        let f = parse_client_frame(r#"{"action":"ping","action":"sync"}"#).unwrap();
        assert_eq!(f.action(), "sync");
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
        let long_id = "x".repeat(65);
        assert_eq!(
            code(&format!(
                r#"{{"action":"send","to":"user:b","client_msg_id":"{long_id}","text":"x"}}"#
            )),
            "bad_request"
        );
        assert_eq!(
            code(&format!(
                r#"{{"action":"createGroup","name":"{}","members":[]}}"#,
                "n".repeat(129)
            )),
            "bad_request"
        );
    }
}
