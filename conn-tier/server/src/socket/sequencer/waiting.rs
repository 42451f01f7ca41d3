//! What keeps the connection's own sends from looking like gaps: messages
//! parked while answers are owed, and acks that came ahead of the sequence.

use super::*;

/// Most messages parked, and most early acks remembered, per connection
/// ([`Waiting`]): each answer or message the writer takes looks through
/// the parked ones.
pub(super) const MAX_WAITING: usize = 64;

/// What keeps a connection's own sends from looking like gaps. Its acks
/// come on another path than the messages around them, so the two race:
/// at 10,000 messages/s, 4 messages in 10 found a "gap" that was only the
/// connection's own send, and read the store for nothing
/// (docs/benchmarks.md, "The store's writer"). Boxed: empty most of the
/// time, and one word otherwise in every writer's future. Both lists are
/// capped ([`MAX_WAITING`]); past the cap the store is read, as before.
#[derive(Default)]
pub(super) struct Waiting {
    /// Messages that came with a gap before them while answers to the
    /// connection's frames were owed (its ack may be among them), in
    /// arrival order, each with the answers owed when it came. Each goes
    /// out when its gap closes, or is filled from the store once every
    /// answer owed when it came is written (then the gap is someone
    /// else's).
    pub(super) parked: Vec<(Seq, Utf8Bytes, u64)>,
    /// The connection's own ids whose ack came before the message below
    /// them: the sequence takes them in when it gets there.
    pub(super) acked_ahead: Vec<Seq>,
}

impl Sequencer {
    /// Parks `gap`'s message if answers are owed and the parked bytes
    /// allow; `Err` to fill it from the store now instead.
    pub(super) fn park(&mut self, gap: Gap, answers_due: u64) -> Result<(), Later> {
        // At most 64 of them: summed when needed, not kept.
        let (parked, parked_bytes) = self.waiting.as_ref().map_or((0, 0), |w| {
            let bytes = w.parked.iter().map(|(_, t, _)| t.len()).sum();
            (w.parked.len(), bytes)
        });
        if self.answers_written >= answers_due
            || parked >= MAX_WAITING
            || parked_bytes + gap.text.len() > self.max_held_bytes
        {
            return Err(Later::Fill(gap));
        }
        let w = self.waiting.get_or_insert_default();
        w.parked.push((gap.seq, gap.text, answers_due));
        Ok(())
    }

    /// Goes down the parked list after `frames`: a message whose gap has
    /// closed goes out, a repeat is dropped, one still waiting stays. If
    /// one's wait is over with its gap still open, it needs the store:
    /// `Err` with the frames so far, the rest parked again in order.
    pub(super) fn release(
        &mut self,
        mut frames: Vec<Message>,
    ) -> Result<Vec<Message>, Vec<Message>> {
        let mut keep = match self.waiting.as_mut() {
            Some(w) if !w.parked.is_empty() => std::mem::take(&mut w.parked),
            _ => return Ok(frames),
        };
        let mut needs_store = false;
        // Again while one goes out: it may close an earlier one's gap.
        let mut moved = true;
        while moved && !needs_store {
            moved = false;
            let mut items = std::mem::take(&mut keep).into_iter();
            for (seq, text, due) in items.by_ref() {
                match self.admit_now(seq, text) {
                    Ok(out) => {
                        moved = true;
                        frames.extend(out);
                    }
                    Err(gap) => {
                        keep.push((gap.seq, gap.text, due));
                        if self.answers_written >= due {
                            needs_store = true;
                            break;
                        }
                    }
                }
            }
            keep.extend(items);
        }
        let w = self.waiting.get_or_insert_default();
        w.parked = keep;
        self.tidy();
        if needs_store {
            Err(frames)
        } else {
            Ok(frames)
        }
    }

    /// Frees the box once nothing waits.
    pub(super) fn tidy(&mut self) {
        if matches!(&self.waiting, Some(w) if w.parked.is_empty() && w.acked_ahead.is_empty()) {
            self.waiting = None;
        }
    }

    /// The conversation's sequence moved on: own ids acked ahead of it that
    /// now follow on are taken in.
    pub(super) fn absorb(&mut self, conv: &str) {
        let Some(w) = self.waiting.as_mut() else {
            return;
        };
        if w.acked_ahead.is_empty() {
            return;
        }
        let Some(span) = self.spans.get_mut(conv) else {
            return;
        };
        loop {
            let before = span.last;
            w.acked_ahead.retain(|s| {
                if s.conversation_id != conv {
                    return true;
                }
                if s.message_id == span.last + 1 {
                    span.last = s.message_id;
                }
                s.message_id > span.last
            });
            if span.last == before {
                break;
            }
        }
        self.tidy();
    }
}
