//! The queue's item: what the writer half of a socket handles next, and
//! how each producer makes one (a frame the hub delivers, a frame posted
//! through the `@connections` API, the socket's own answers).

use axum::extract::ws::Utf8Bytes;
use chat_core::ports::Seq;
use chat_core::protocol::ServerFrame;

/// What the writer half of a socket handles next.
#[derive(Debug)]
pub enum Outbound {
    /// Written as is: receipts, group frames, other pushes.
    Text(Utf8Bytes),
    /// The answer to a frame the connection sent, other than an `ack`:
    /// written as is, and counted (with acks) by the sequencer, so a
    /// message that overtook one of the connection's own sends waits for
    /// its ack rather than reading the store (`socket::sequencer`).
    Answer(Utf8Bytes),
    /// A `message` frame, live or replayed: written in its conversation's
    /// id order, a gap filled from the store first, a repeat dropped.
    Message { seq: Seq, text: Utf8Bytes },
    /// The `ack` of one of this connection's sends: the id it stands for
    /// in the connection's sequence (the message itself never comes).
    Ack { seq: Seq, text: Utf8Bytes },
    /// A `sync` starts: each conversation's watermark, above which its
    /// replay starts (the socket's sequence continues from there).
    SyncStarted(Vec<(String, u64)>),
    /// The connection's first frame was not a `sync`: live messages held
    /// since the upgrade go out now.
    GoLive,
    /// Close with this code and reason, then stop.
    Close(u16, &'static str),
}

impl Outbound {
    /// The bytes it takes in the outbound queue.
    pub fn bytes(&self) -> usize {
        match self {
            Outbound::Text(t)
            | Outbound::Answer(t)
            | Outbound::Message { text: t, .. }
            | Outbound::Ack { text: t, .. } => t.len(),
            _ => 0,
        }
    }

    /// A frame delivered to the connection (by the hub, or posted through
    /// the `@connections` API): a `message` is sequenced.
    pub fn posted(text: Utf8Bytes, seq: Option<Seq>) -> Self {
        match seq {
            Some(seq) => Outbound::Message { seq, text },
            None => Outbound::Text(text),
        }
    }

    /// A frame of the connection's own services: a `message` and an `ack`
    /// are sequenced; an `answer` to one of the connection's frames (an
    /// `ack` is one too) is counted by the sequencer, so a message that
    /// overtook the connection's own send waits for it.
    pub fn of_frame(frame: ServerFrame, answer: bool) -> Self {
        let text = Utf8Bytes::from(frame.to_json());
        match frame {
            ServerFrame::Message(m) => Outbound::Message {
                seq: Seq {
                    conversation_id: m.conversation_id,
                    message_id: m.message_id,
                },
                text,
            },
            ServerFrame::Ack {
                conversation_id,
                message_id,
                ..
            } => Outbound::Ack {
                seq: Seq {
                    conversation_id,
                    message_id,
                },
                text,
            },
            _ if answer => Outbound::Answer(text),
            _ => Outbound::Text(text),
        }
    }

    /// The sequence of a frame posted as JSON text, if it is a `message`.
    pub fn seq_of(json: &str) -> Option<Seq> {
        #[derive(serde::Deserialize)]
        struct Probe {
            #[serde(rename = "type")]
            kind: String,
            conversation_id: Option<String>,
            message_id: Option<u64>,
        }
        let p: Probe = serde_json::from_str(json).ok()?;
        match (p.kind.as_str(), p.conversation_id, p.message_id) {
            ("message", Some(conversation_id), Some(message_id)) => Some(Seq {
                conversation_id,
                message_id,
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_posted_message_frame_is_recognised_and_others_are_not() {
        let seq = Outbound::seq_of(
            r#"{"type":"message","conversation_id":"dm#a#b","message_id":7,"from":"a","text":"x","sent_at":"t"}"#,
        );
        assert_eq!(
            seq,
            Some(Seq {
                conversation_id: "dm#a#b".into(),
                message_id: 7
            })
        );
        assert_eq!(
            Outbound::seq_of(r#"{"type":"receipt","conversation_id":"c","up_to":3}"#),
            None
        );
        assert_eq!(Outbound::seq_of("not json"), None);
    }
}
