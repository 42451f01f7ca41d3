//! The sequencer's store reads: what fills a gap (from the last id written,
//! or from the user's join point), and the bound on one read (past it the
//! connection is closed with 1008: too far behind to catch up in memory).

use super::*;
use crate::limits::close;
use crate::socket::close_msg;

/// Most messages read from the store at once to fill a gap.
const FILL_PAGE: usize = 500;

/// How a store read ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ReadEnd {
    Complete,
    /// The store failed: the frames so far, logged.
    Failed,
    /// Past `max_held_bytes`: the connection is too far behind.
    TooMuch,
}

/// The least one store read may bring, whatever the outbound limit: a
/// sync's whole replay of one conversation (200 messages of 10 KB, as
/// frames) and some live ones after it. A smaller limit would
/// close, on every reconnect, a connection whose held message pulls in
/// its replay, and it could never catch up.
pub const MIN_READ_BYTES: usize = 3 << 20;

/// Why the connection is closed when a read is too big.
const TOO_FAR_BEHIND: &str = "too slow: too far behind; reconnect and sync";

impl Sequencer {
    /// A read was too big: the frames so far (in order, without a hole),
    /// then the close; nothing more is written.
    pub(super) fn too_far_behind(&mut self, mut frames: Vec<Message>) -> Vec<Message> {
        tracing::info!(
            max_bytes = self.max_read_bytes,
            "a connection is too far behind to catch up in memory; closing"
        );
        self.behind = true;
        self.held = None;
        self.dropped = None;
        self.waiting = None;
        frames.push(close_msg(close::POLICY, TOO_FAR_BEHIND));
        frames
    }

    pub(super) async fn fill_then_admit(&mut self, gap: Gap) -> Vec<Message> {
        let Gap {
            seq,
            text,
            mut last,
            from_join,
        } = gap;
        if from_join {
            last = self.join_point(&seq).await;
            self.spans.insert(
                seq.conversation_id.clone(),
                Span {
                    first: last + 1,
                    last,
                },
            );
        }
        let (out, end) = self.read(&seq.conversation_id, last, seq.message_id).await;
        self.stats.filled += out.len() as u64;
        chat_core::metrics::gap_read(match (end, out.is_empty()) {
            (ReadEnd::Failed, _) => "failed",
            (ReadEnd::TooMuch, _) => "too_much",
            (ReadEnd::Complete, true) => "own_only",
            (ReadEnd::Complete, false) => "messages",
        });
        if end == ReadEnd::TooMuch {
            return self.too_far_behind(out);
        }
        self.next_in_sequence(seq, text, out)
    }

    /// Where this user's part of `seq`'s conversation starts: the newest id
    /// when they joined (not found, or unreadable: just below `seq`, as
    /// before, so nothing is sent twice).
    pub(super) async fn join_point(&self, seq: &Seq) -> u64 {
        let below = seq.message_id - 1;
        let Some(store) = &self.store else {
            return below;
        };
        match store.membership(&self.user, &seq.conversation_id).await {
            Ok(Some(m)) => m.joined_at_id.min(below),
            Ok(None) => below,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a join point; the sequence starts at the first message seen");
                below
            }
        }
    }

    /// The messages of `conv` strictly between `after` and `before`, from
    /// the store, as frames, except the connection's own (it holds their
    /// acks), and how the read ended. A failed read is logged and ends
    /// early: the sequence goes on, and `sync` fills what is missing. One
    /// past `max_read_bytes` stops there ([`ReadEnd::TooMuch`]): the
    /// caller closes the connection.
    pub(super) async fn read(
        &self,
        conv: &str,
        after: u64,
        before: u64,
    ) -> (Vec<Message>, ReadEnd) {
        let Some(store) = &self.store else {
            return (vec![], ReadEnd::Complete);
        };
        let mut out = Vec::new();
        let mut bytes = 0;
        let mut cursor = after;
        while cursor + 1 < before {
            let want = ((before - cursor - 1) as usize).min(FILL_PAGE);
            let page = match store.messages_after(conv, cursor, want).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the messages missing on a connection");
                    return (out, ReadEnd::Failed);
                }
            };
            let Some(end) = page.last().map(|m| m.message_id) else {
                break;
            };
            for m in page {
                if m.message_id < before && m.origin.as_deref() != Some(self.me.as_str()) {
                    let text = Utf8Bytes::from(ServerFrame::Message(m.view()).to_json());
                    bytes += text.len();
                    if bytes > self.max_read_bytes {
                        return (out, ReadEnd::TooMuch);
                    }
                    out.push(Message::Text(text));
                }
            }
            cursor = end;
        }
        (out, ReadEnd::Complete)
    }
}
