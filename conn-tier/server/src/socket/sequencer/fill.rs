//! The sequencer's store reads: what fills a gap (from the last id written,
//! or from the user's join point), and the bound on one read (past it the
//! connection is closed with 1008: too far behind to catch up in memory;
//! a read that fails closes it with 1013, never skipping the gap).

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

/// A deliberately broken variant, for proving that the cluster simulation
/// (conn-tier/sim, `tests/mutation.rs`) can fail: while set, a gap is
/// "filled" with nothing, as if the gap read were skipped. Never set
/// outside that test.
pub static MUTATION_SKIP_GAP_READ: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// Why the connection is closed when a read fails.
pub(super) const CANNOT_READ: &str = "cannot read the messages missed here; reconnect and sync";

impl Sequencer {
    /// A read was too big: the frames so far (in order, without a hole),
    /// then the close; nothing more is written.
    pub(super) fn too_far_behind(&mut self, frames: Vec<Message>) -> Vec<Message> {
        tracing::info!(
            max_bytes = self.max_read_bytes,
            "a connection is too far behind to catch up in memory; closing"
        );
        self.close_after(frames, close::POLICY, TOO_FAR_BEHIND)
    }

    /// A read failed (the store unreachable, or timing out): the frames so
    /// far, then a 1013 close. Going on would skip the ids it could not
    /// read, and a gap is filled, never skipped (docs/protocol.md, "Order
    /// on every connection"); the client reconnects (with back-off) and
    /// its `sync` replays them once the store answers.
    pub(super) fn cannot_read(&mut self, frames: Vec<Message>) -> Vec<Message> {
        self.close_after(frames, close::TRY_AGAIN_LATER, CANNOT_READ)
    }

    /// `frames`, then the close; nothing more is written on this connection.
    fn close_after(
        &mut self,
        mut frames: Vec<Message>,
        code: u16,
        why: &'static str,
    ) -> Vec<Message> {
        self.behind = true;
        self.held = None;
        self.dropped = None;
        self.waiting = None;
        frames.push(close_msg(code, why));
        frames
    }

    /// Closes the connection unless the read ended complete.
    pub(super) fn unless_complete(
        &mut self,
        out: Vec<Message>,
        end: ReadEnd,
    ) -> Result<Vec<Message>, Vec<Message>> {
        match end {
            ReadEnd::Complete => Ok(out),
            ReadEnd::TooMuch => Err(self.too_far_behind(out)),
            ReadEnd::Failed => Err(self.cannot_read(out)),
        }
    }

    pub(super) async fn fill_then_admit(&mut self, gap: Gap) -> Vec<Message> {
        let Gap {
            seq,
            text,
            mut last,
            from_join,
        } = gap;
        let rejoined = if from_join {
            self.join_point(&seq)
                .await
                .map(|(p, member)| (Some(p), member))
        } else {
            self.rejoined_after(&seq, last).await
        };
        // Where the user's part starts is unknown: going on could send
        // what is not theirs, or skip what is.
        let Ok((rejoined, member)) = rejoined else {
            return self.cannot_read(vec![]);
        };
        // A removal this connection saw is settled once the user is a
        // member again (from the join point on).
        if member {
            if let Some(left) = self.left.as_mut() {
                left.remove(&seq.conversation_id);
            }
        }
        if let Some(joined) = rejoined {
            last = joined.min(seq.message_id - 1);
            self.spans.insert(
                seq.conversation_id.clone(),
                Span {
                    first: joined + 1,
                    last: joined,
                },
            );
            if joined >= seq.message_id {
                // Stored before the user (re)joined, delivered after: not
                // theirs (the fan-out's member list is read when it runs).
                self.stats.before_join += 1;
                return vec![];
            }
        }
        let (out, end) = self.read(&seq.conversation_id, last, seq.message_id).await;
        self.stats.filled += out.len() as u64;
        chat_core::metrics::gap_read(match (end, out.is_empty()) {
            (ReadEnd::Failed, _) => "failed",
            (ReadEnd::TooMuch, _) => "too_much",
            (ReadEnd::Complete, true) => "own_only",
            (ReadEnd::Complete, false) => "messages",
        });
        match self.unless_complete(out, end) {
            Ok(out) => self.next_in_sequence(seq, text, out),
            Err(closed) => closed,
        }
    }

    /// Where this user's part of `seq`'s conversation starts: the newest id
    /// when they joined, which may be `seq`'s or above (a message stored
    /// before the join, whose fan-out ran after it); not a member (any
    /// more): just below `seq`, as before, so nothing is sent twice; and
    /// whether they are a member. `Err`: the store could not be read.
    pub(super) async fn join_point(&self, seq: &Seq) -> Result<(u64, bool), ()> {
        let below = seq.message_id - 1;
        let Some(store) = &self.store else {
            return Ok((below, true));
        };
        match store.membership(&self.user, &seq.conversation_id).await {
            Ok(Some(m)) => Ok((m.joined_at_id, true)),
            Ok(None) => Ok((below, false)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a join point");
                Err(())
            }
        }
    }

    /// A group the user left and joined again since this connection's
    /// last id of it (`last`): their new join point, from which the gap is
    /// filled. What was stored while they were away is not theirs (docs/
    /// protocol.md, "Groups"; found by the cluster simulation, whose
    /// removed member got every message of its absence from a gap read
    /// once added back), and whether they are a member now. One
    /// membership read per gap of a group; a direct conversation is never
    /// left. `Err`: the store could not be read.
    async fn rejoined_after(&self, seq: &Seq, last: u64) -> Result<(Option<u64>, bool), ()> {
        let Some(store) = self
            .store
            .as_ref()
            .filter(|_| seq.conversation_id.starts_with("grp#"))
        else {
            return Ok((None, true));
        };
        match store.membership(&self.user, &seq.conversation_id).await {
            Ok(Some(m)) if m.joined_at_id > last => Ok((Some(m.joined_at_id), true)),
            // Still a member since `last`.
            Ok(Some(_)) => Ok((None, true)),
            // Removed since: the message was stored before, as were the
            // ones below it.
            Ok(None) => Ok((None, false)),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a membership to fill a gap");
                Err(())
            }
        }
    }

    /// The messages of `conv` strictly between `after` and `before`, from
    /// the store, as frames, except the connection's own (it holds their
    /// acks), and how the read ended. A failed read is logged and ends
    /// early ([`ReadEnd::Failed`]), and one past `max_read_bytes` stops
    /// there ([`ReadEnd::TooMuch`]): either way the caller closes the
    /// connection after the frames read so far.
    pub(super) async fn read(
        &self,
        conv: &str,
        after: u64,
        before: u64,
    ) -> (Vec<Message>, ReadEnd) {
        let Some(store) = &self.store else {
            return (vec![], ReadEnd::Complete);
        };
        if MUTATION_SKIP_GAP_READ.load(std::sync::atomic::Ordering::Relaxed) {
            return (vec![], ReadEnd::Complete);
        }
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
