//! The portable export format (docs/operations.md, "Export and import"):
//! JSON Lines, one [`Record`] a line, the same whichever store wrote it or
//! will read it. The first line is a [`Header`] (the format version, the
//! source, the record counts); then groups, their members, memberships,
//! messages (each conversation's in id order), resend records, devices and
//! their cursors.
//!
//! [`Reader`] is the one way a stream is read back: it checks the header,
//! bounds every line, validates every id, and says which line is wrong. It
//! is what `conn-tier admin import` reads, and what the fuzz target
//! `import_reader` feeds arbitrary bytes.

use crate::error::{Error, Result};
use crate::ids::{is_valid_id, ConversationId};
use crate::protocol::MAX_CLIENT_MSG_ID_CHARS;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::BufRead;

/// The version of this format. A reader refuses a newer one, and reads
/// every older one. 2 added a member's `joined_at_id`.
pub const EXPORT_FORMAT: u64 = 2;
fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The longest line read: a 10 KB message whose every character is escaped
/// (`\u0000`, 6 bytes each) with its ids, and room to spare.
pub const MAX_LINE: usize = 128 * 1024;
/// The highest message id (or watermark, or cursor) accepted: 2^53, the
/// largest integer a JavaScript client reads exactly. Far past any real
/// conversation, and far from where `id + 1` would overflow.
pub const MAX_MESSAGE_ID: u64 = 1 << 53;
/// The longest text accepted (the protocol's limit is lower and
/// configurable: an import must not refuse what a server once accepted).
pub const MAX_TEXT: usize = 64 * 1024;

/// The first line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// [`EXPORT_FORMAT`] of the writer.
    pub format: u64,
    /// `embedded` or `dynamodb`, and where (a path, a table prefix).
    pub source: String,
    pub exported_at_ms: u64,
    /// Records of each kind that follow.
    pub counts: BTreeMap<String, u64>,
}

/// One line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    Header(Header),
    Group {
        group_id: String,
        name: String,
        created_by: String,
        created_at_ms: u64,
        admins: Vec<String>,
        version: u64,
        next_seq: u64,
    },
    /// A group member, with the marks group receipts use.
    Member {
        group_id: String,
        user_id: String,
        joined_at_ms: u64,
        seq: u64,
        #[serde(default)]
        last_sent: u64,
        #[serde(default)]
        read_up_to: u64,
        /// The member's join point (`GroupMember::joined_at_id`; format
        /// 2); absent in older streams, and when 0.
        #[serde(default, skip_serializing_if = "is_zero")]
        joined_at_id: u64,
    },
    /// A user's row for a conversation: its watermark and join point.
    Membership {
        user_id: String,
        conversation_id: String,
        acked_up_to: u64,
        joined_at_ms: u64,
        #[serde(default)]
        joined_at_id: u64,
    },
    Message {
        conversation_id: String,
        message_id: u64,
        sender: String,
        client_msg_id: String,
        text: String,
        sent_at_ms: u64,
    },
    /// Which message a sender's `client_msg_id` became (resends find it).
    Idempotency {
        sender: String,
        client_msg_id: String,
        conversation_id: String,
        message_id: u64,
    },
    Device {
        user_id: String,
        device_id: String,
        last_used_ms: u64,
    },
    Cursor {
        user_id: String,
        device_id: String,
        conversation_id: String,
        up_to: u64,
        moved_at_ms: u64,
    },
}

impl Record {
    /// The `kind` of the line (the header's counts are keyed by it).
    pub fn kind(&self) -> &'static str {
        match self {
            Record::Header(_) => "header",
            Record::Group { .. } => "group",
            Record::Member { .. } => "member",
            Record::Membership { .. } => "membership",
            Record::Message { .. } => "message",
            Record::Idempotency { .. } => "idempotency",
            Record::Device { .. } => "device",
            Record::Cursor { .. } => "cursor",
        }
    }

    /// The message ids the record holds (ids, watermarks, marks, cursors).
    fn ids(&self) -> Vec<u64> {
        match self {
            Record::Member {
                last_sent,
                read_up_to,
                seq,
                joined_at_id,
                ..
            } => vec![*last_sent, *read_up_to, *seq, *joined_at_id],
            Record::Membership {
                acked_up_to,
                joined_at_id,
                ..
            } => vec![*acked_up_to, *joined_at_id],
            Record::Message { message_id, .. } | Record::Idempotency { message_id, .. } => {
                vec![*message_id]
            }
            Record::Cursor { up_to, .. } => vec![*up_to],
            Record::Group {
                version, next_seq, ..
            } => vec![*version, *next_seq],
            Record::Header(_) | Record::Device { .. } => vec![],
        }
    }

    /// One line of the stream, newline included.
    pub fn line(&self) -> String {
        let mut s = serde_json::to_string(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Whether every id is one the server could have written.
    fn validate(&self) -> std::result::Result<(), String> {
        for n in self.ids() {
            if n > MAX_MESSAGE_ID {
                return Err(format!(
                    "a number {n} past 2^53 (ids, watermarks, versions)"
                ));
            }
        }
        let id = |what: &str, s: &str| {
            if is_valid_id(s) {
                Ok(())
            } else {
                Err(format!("invalid {what} {:?}", cut(s)))
            }
        };
        let conv = |s: &str| {
            ConversationId::parse(s)
                .map(|_| ())
                .map_err(|_| format!("invalid conversation id {:?}", cut(s)))
        };
        let cmid = |s: &str| {
            if s.is_empty() || s.chars().count() > MAX_CLIENT_MSG_ID_CHARS {
                Err(format!("invalid client_msg_id {:?}", cut(s)))
            } else {
                Ok(())
            }
        };
        match self {
            Record::Header(_) => Err("a second header".into()),
            Record::Group {
                group_id,
                created_by,
                admins,
                name,
                ..
            } => {
                id("group id", group_id)?;
                id("user id", created_by)?;
                if name.len() > 1024 {
                    return Err("a group name over 1 KB".into());
                }
                admins.iter().try_for_each(|a| id("user id", a))
            }
            Record::Member {
                group_id, user_id, ..
            } => {
                id("group id", group_id)?;
                id("user id", user_id)
            }
            Record::Membership {
                user_id,
                conversation_id,
                ..
            } => {
                id("user id", user_id)?;
                conv(conversation_id)
            }
            Record::Message {
                conversation_id,
                message_id,
                sender,
                client_msg_id,
                text,
                ..
            } => {
                conv(conversation_id)?;
                id("user id", sender)?;
                cmid(client_msg_id)?;
                if *message_id == 0 {
                    return Err("message id 0 (ids start at 1)".into());
                }
                if text.len() > MAX_TEXT {
                    return Err(format!(
                        "a text of {} bytes (at most {MAX_TEXT})",
                        text.len()
                    ));
                }
                Ok(())
            }
            Record::Idempotency {
                sender,
                client_msg_id,
                conversation_id,
                message_id,
            } => {
                id("user id", sender)?;
                cmid(client_msg_id)?;
                conv(conversation_id)?;
                if *message_id == 0 {
                    return Err("message id 0 (ids start at 1)".into());
                }
                Ok(())
            }
            Record::Device {
                user_id, device_id, ..
            } => {
                id("user id", user_id)?;
                id("device id", device_id)
            }
            Record::Cursor {
                user_id,
                device_id,
                conversation_id,
                ..
            } => {
                id("user id", user_id)?;
                id("device id", device_id)?;
                conv(conversation_id)
            }
        }
    }
}

fn cut(s: &str) -> String {
    s.chars().take(80).collect()
}

/// Reads a stream back, line by line: the header first (refused if it is
/// missing or of a newer format), then records, each validated. Errors name
/// the line.
pub struct Reader<R> {
    input: R,
    header: Header,
    /// Lines read so far (the header is line 1).
    line: u64,
    buf: Vec<u8>,
}

impl<R: BufRead> Reader<R> {
    /// Reads and checks the header.
    pub fn new(mut input: R) -> Result<Self> {
        let mut buf = Vec::new();
        let first =
            read_line(&mut input, &mut buf, 1)?.ok_or_else(|| bad(1, "empty: no header"))?;
        let header = match serde_json::from_slice::<Record>(first) {
            Ok(Record::Header(h)) => h,
            Ok(_) => return Err(bad(1, "the first line must be the header")),
            Err(e) => return Err(bad(1, &format!("not a header: {e}"))),
        };
        if header.format > EXPORT_FORMAT {
            return Err(bad(
                1,
                &format!(
                    "export format {} is newer than this build reads ({EXPORT_FORMAT})",
                    header.format
                ),
            ));
        }
        Ok(Reader {
            input,
            header,
            line: 1,
            buf,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The number of the line the last record came from.
    pub fn line(&self) -> u64 {
        self.line
    }

    /// The next record; `None` at the end.
    pub fn next_record(&mut self) -> Result<Option<Record>> {
        loop {
            self.line += 1;
            let line = self.line;
            let Some(text) = read_line(&mut self.input, &mut self.buf, line)? else {
                return Ok(None);
            };
            if text.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let record: Record =
                serde_json::from_slice(text).map_err(|e| bad(line, &e.to_string()))?;
            record.validate().map_err(|e| bad(line, &e))?;
            return Ok(Some(record));
        }
    }
}

impl<R: BufRead> Iterator for Reader<R> {
    type Item = Result<Record>;
    fn next(&mut self) -> Option<Self::Item> {
        self.next_record().transpose()
    }
}

fn bad(line: u64, why: &str) -> Error {
    Error::BadRequest(format!("line {line}: {why}"))
}

/// One line without its newline, at most [`MAX_LINE`] bytes.
fn read_line<'b>(
    input: &mut impl BufRead,
    buf: &'b mut Vec<u8>,
    line: u64,
) -> Result<Option<&'b [u8]>> {
    buf.clear();
    let n = std::io::Read::take(&mut *input, MAX_LINE as u64 + 1)
        .read_until(b'\n', buf)
        .map_err(|e| bad(line, &format!("reading: {e}")))?;
    if n == 0 {
        return Ok(None);
    }
    if buf.last() == Some(&b'\n') {
        buf.pop();
    } else if buf.len() > MAX_LINE {
        return Err(bad(line, &format!("longer than {MAX_LINE} bytes")));
    }
    Ok(Some(buf.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Record {
        Record::Header(Header {
            format: EXPORT_FORMAT,
            source: "test".into(),
            exported_at_ms: 1,
            counts: BTreeMap::new(),
        })
    }

    fn message(id: u64) -> Record {
        Record::Message {
            conversation_id: "dm#a#b".into(),
            message_id: id,
            sender: "a".into(),
            client_msg_id: format!("c{id}"),
            text: "héllo \"x\"\n".into(),
            sent_at_ms: 5,
        }
    }

    #[test]
    fn records_round_trip_through_lines() {
        let text = [header(), message(1), message(2)]
            .map(|r| r.line())
            .concat();
        let mut r = Reader::new(text.as_bytes()).unwrap();
        assert_eq!(r.header().format, EXPORT_FORMAT);
        let got: Vec<Record> = r.by_ref().map(|x| x.unwrap()).collect();
        assert_eq!(got, vec![message(1), message(2)]);
    }

    #[test]
    fn a_bad_line_is_named_and_nothing_panics() {
        let head = header().line();
        for (body, want) in [
            ("{\"kind\":\"message\"}\n", "line 2"),
            ("not json\n", "line 2"),
            (&message(0).line(), "message id 0"),
            (&header().line(), "a second header"),
            (&message(MAX_MESSAGE_ID + 1).line(), "past 2^53"),
            (
                "{\"kind\":\"group\",\"group_id\":\"g\",\"name\":\"n\",\"created_by\":\"a\",\"created_at_ms\":1,\"admins\":[],\"version\":18446744073709551615,\"next_seq\":1}\n",
                "past 2^53",
            ),
            (
                "{\"kind\":\"membership\",\"user_id\":\"a b\",\"conversation_id\":\"dm#a#b\",\"acked_up_to\":1,\"joined_at_ms\":1}\n",
                "invalid user id",
            ),
            (
                "{\"kind\":\"cursor\",\"user_id\":\"a\",\"device_id\":\"d\",\"conversation_id\":\"dm#b#a\",\"up_to\":1,\"moved_at_ms\":1}\n",
                "invalid conversation id",
            ),
        ] {
            let text = format!("{head}{body}");
            let err = Reader::new(text.as_bytes())
                .unwrap()
                .next()
                .unwrap()
                .unwrap_err()
                .to_string();
            assert!(err.contains(want), "{body}: {err}");
        }
        let long = format!("{head}{}\n", "x".repeat(MAX_LINE + 10));
        let err = Reader::new(long.as_bytes())
            .unwrap()
            .next()
            .unwrap()
            .unwrap_err();
        assert!(err.to_string().contains("longer than"), "{err}");
        for bad in ["", "{}\n", &message(1).line()] {
            assert!(Reader::new(bad.as_bytes()).is_err(), "{bad:?}");
        }
        let newer = Record::Header(Header {
            format: EXPORT_FORMAT + 1,
            source: "x".into(),
            exported_at_ms: 0,
            counts: BTreeMap::new(),
        });
        let err = Reader::new(newer.line().as_bytes())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("newer"), "{err}");
    }
}
