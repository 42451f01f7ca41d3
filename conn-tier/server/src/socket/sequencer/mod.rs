//! Per-connection order: the writer passes every outbound item through a
//! [`Sequencer`], which makes each conversation's `message` frames leave in
//! strictly increasing id order with no gaps after the first one the
//! connection sees (docs/design.md, "Order on every connection"):
//!
//! - it remembers, per conversation, the last id written;
//! - a repeat (an id at or below it) is dropped;
//! - the connection's own sends are in its sequence as their acks (the
//!   sending connection never gets its own message): an ack right after the
//!   last id moves it on;
//! - a frame that would leave a gap first has the missing ids read from
//!   the store and written, except the connection's own (the store never
//!   shows a higher id before a lower one, so the read is complete);
//! - a `sync` sets, for each conversation not seen yet, its watermark as
//!   the point the sequence continues from, so a live message that races
//!   the replay either waits behind it or pulls it in first; for a
//!   conversation whose live messages already reached the connection, it
//!   first sends the older ones above the watermark that the connection
//!   never saw (after the newer live ones: the one case where ids step
//!   back, documented in docs/protocol.md);
//! - live messages that arrive before the connection's first frame are
//!   held until that frame is read: if it is a `sync`, they follow its
//!   replay; otherwise, or after `hold` without any frame, they go out.
//!   Past the hold's byte limit only their ids are kept, and they are read
//!   from the store after the held ones, with or without a `sync` (its
//!   replay may end below them);
//! - a store read (a gap, what the hold dropped, a late sync's backfill)
//!   that would take more than the outbound limit (at least 3 MiB) closes the connection
//!   with 1008 instead: memory stays bounded, and the client's next `sync`
//!   replays from its position; one that fails (the store unreachable)
//!   closes it with 1013 (`cannot read the messages missed here`): the
//!   ids it could not read are never skipped;
//! - the connection's own sends race the messages around them (an ack
//!   comes on the send's path, not the fan-out's), so an ack beyond the
//!   last id is remembered until the sequence gets there, and a message
//!   with a gap before it waits while answers are owed ([`Waiting`]),
//!   rather than reading the store for what is only the connection's own.
//!
//! # Layout
//! - this file: [`Sequencer`], its spans, the hold and `sync`;
//! - `fill`: the store reads that fill a gap, and their bound;
//! - `waiting`: parked messages and acks ahead of the sequence;
//! - `tests`: one test per rule, over the in-memory store.

use crate::outbox::Outbound;
use axum::extract::ws::{Message, Utf8Bytes};
use chat_core::hash::{HashMap, HashSet};
use chat_core::ports::{Seq, Store};
use chat_core::protocol::ServerFrame;
use fill::MIN_READ_BYTES;
use std::sync::Arc;
use waiting::{Waiting, MAX_WAITING};

/// Counters a test or a metric can read.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SequencerStats {
    /// Repeats dropped.
    pub repeats: u64,
    /// Messages read from the store to fill gaps.
    pub filled: u64,
    /// Group messages dropped: stored before the user (re)joined.
    pub before_join: u64,
    /// Older messages a late `sync` sent below what the connection had seen.
    pub backfilled: u64,
    /// Live messages past the hold's byte limit, kept as ids only (a
    /// `sync` replays them, or they are read from the store).
    pub dropped_while_held: u64,
}

/// The ids of one conversation this connection holds: every id in
/// `first..=last`, others' as `message` frames, its own as `ack`s.
#[derive(Debug, Clone, Copy)]
struct Span {
    first: u64,
    last: u64,
}

/// A message that would leave a gap after `last`, the conversation's
/// last id written: the ids between are read from the store first.
struct Gap {
    seq: Seq,
    text: Utf8Bytes,
    last: u64,
    /// The first message of a conversation the connection has no span for
    /// after its sync (the user joined it since): the gap runs from the
    /// user's join point, read from the store, not from `last`.
    from_join: bool,
}

/// What [`Sequencer::order`] finishes after a store read or a release.
enum Later {
    Fill(Gap),
    /// Release the held messages.
    GoLive,
    /// A sync's replay starts, from these watermarks.
    Sync(Vec<(String, u64)>),
    /// After these frames, a parked message whose wait is over still has
    /// its gap: fill it from the store, then go on down the parked list.
    Unpark(Vec<Message>),
}

pub struct Sequencer {
    /// Where gaps are filled from; `None` passes messages through unordered
    /// (Lambda mode, where the functions keep order).
    store: Option<Arc<dyn Store>>,
    /// This connection's id: a filled message it sent is held as its ack.
    me: String,
    /// Its user, whose join point starts a conversation new since the sync.
    user: String,
    /// Whether a `sync` started on this connection: from then on, every
    /// conversation the user is in has a span, and one without is new.
    synced: bool,
    /// Per conversation, the ids written.
    spans: HashMap<String, Span>,
    /// Live messages held until the connection's first frame; `None` once live.
    held: Option<Vec<(Seq, Utf8Bytes)>>,
    /// Bytes of the held messages...
    held_bytes: usize,
    /// ...and the most they may take. Parked messages ([`Waiting`]) are
    /// held to it too.
    max_held_bytes: usize,
    /// Held messages past that limit are not kept: per conversation, the
    /// lowest and highest id dropped. A `sync` replays them; going live
    /// without one reads them from the store. Either way they come in
    /// order, after what was held, never before a replay below them.
    // Boxed: 8 bytes in every idle connection's writer, not a map's 48
    // (docs/benchmarks.md (c)); it is only ever made past the hold's limit.
    #[allow(clippy::box_collection)]
    dropped: Option<Box<HashMap<String, (u64, u64)>>>,
    waiting: Option<Box<Waiting>>,
    /// Groups this connection saw the user removed from (their `group`
    /// frame): the group's span ended there, and its next message is
    /// checked against the join point, synced or not. Boxed, as `dropped`.
    #[allow(clippy::box_collection)]
    left: Option<Box<HashSet<String>>>,
    /// Answers to the connection's frames written so far (`Ack`, `Answer`).
    answers_written: u64,
    /// Most bytes one store read may bring (the outbound queue's limit,
    /// as the hold's).
    max_read_bytes: usize,
    /// The connection is closed: a store read would have taken more than
    /// `max_read_bytes` (1008), or failed (1013). The close is written,
    /// and nothing after it.
    behind: bool,
    pub stats: SequencerStats,
}

impl Sequencer {
    pub fn new(store: Option<Arc<dyn Store>>, me: &str, user: &str, max_held_bytes: usize) -> Self {
        let held = store.as_ref().map(|_| Vec::new());
        Sequencer {
            store,
            me: me.to_string(),
            user: user.to_string(),
            synced: false,
            spans: HashMap::default(),
            held,
            held_bytes: 0,
            max_held_bytes,
            dropped: None,
            waiting: None,
            left: None,
            answers_written: 0,
            max_read_bytes: max_held_bytes.max(MIN_READ_BYTES),
            behind: false,
            stats: SequencerStats::default(),
        }
    }

    /// Another limit for one store read than the hold's (tests).
    #[cfg(test)]
    fn with_read_limit(mut self, bytes: usize) -> Self {
        self.max_read_bytes = bytes;
        self
    }

    /// Whether live messages are still held for the first frame.
    pub fn holding(&self) -> bool {
        self.held.is_some()
    }

    /// The frames to write for one outbound item, in order (none for a
    /// repeat, a held or a parked message). `Close` is the caller's.
    /// `answers_due`: the answers the reader has owed so far ([`Waiting`]).
    pub async fn order(&mut self, out: Outbound, answers_due: u64) -> Vec<Message> {
        if self.behind {
            return vec![];
        }
        let later = match self.order_now(out, answers_due) {
            Ok(frames) => return frames,
            Err(later) => later,
        };
        // Boxed: the store reads and releases are rare, and unboxed their
        // state would sit in every connection's writer, idle or not
        // (docs/benchmarks.md, (c)). Awaited outside the `match`, whose
        // value would otherwise be kept beside it.
        Box::pin(self.finish(later)).await
    }

    /// `order` without waiting: the frames, or what needs the store first.
    fn order_now(&mut self, out: Outbound, answers_due: u64) -> Result<Vec<Message>, Later> {
        let frames = match out {
            // Nothing parked can move on for it.
            Outbound::Text(t) => {
                self.note_group_frame(&t);
                return Ok(vec![Message::Text(t)]);
            }
            Outbound::Answer(t) => {
                self.note_group_frame(&t);
                self.answers_written += 1;
                vec![Message::Text(t)]
            }
            Outbound::Ack { seq, text } => {
                self.answers_written += 1;
                if let Some(span) = self.spans.get_mut(&seq.conversation_id) {
                    if seq.message_id == span.last + 1 {
                        span.last = seq.message_id;
                        self.absorb(&seq.conversation_id);
                    } else if seq.message_id > span.last + 1 {
                        let w = self.waiting.get_or_insert_default();
                        if w.acked_ahead.len() < MAX_WAITING {
                            w.acked_ahead.push(seq);
                        }
                    }
                }
                vec![Message::Text(text)]
            }
            Outbound::Message { seq, text } => {
                if let Some(held) = &mut self.held {
                    if self.held_bytes + text.len() <= self.max_held_bytes {
                        self.held_bytes += text.len();
                        held.push((seq, text));
                    } else {
                        // Kept as ids only: the store has the message.
                        let id = seq.message_id;
                        let d = self.dropped.get_or_insert_default();
                        let span = d.entry(seq.conversation_id).or_insert((id, id));
                        *span = (span.0.min(id), span.1.max(id));
                        self.stats.dropped_while_held += 1;
                    }
                    return Ok(vec![]);
                }
                match self.admit_now(seq, text) {
                    Ok(frames) => frames,
                    Err(gap) => {
                        self.park(gap, answers_due)?;
                        return Ok(vec![]);
                    }
                }
            }
            Outbound::SyncStarted(baselines) => return Err(Later::Sync(baselines)),
            Outbound::GoLive => return Err(Later::GoLive),
            Outbound::Close(..) => return Ok(vec![]),
        };
        self.release(frames).map_err(Later::Unpark)
    }

    /// Finishes `later`, then what is parked: each message out once its
    /// gap closes, or read from the store in order once its wait is over.
    async fn finish(&mut self, later: Later) -> Vec<Message> {
        let mut frames = match later {
            Later::Fill(gap) => self.fill_then_admit(gap).await,
            Later::GoLive => self.go_live().await,
            Later::Sync(baselines) => self.sync_started(baselines).await,
            Later::Unpark(frames) => frames,
        };
        loop {
            if self.behind {
                return frames;
            }
            match self.release(frames) {
                Ok(out) => return out,
                Err(out) => frames = out,
            }
            // The first parked message whose wait is over: from the store.
            let written = self.answers_written;
            let Some(w) = self.waiting.as_mut() else {
                return frames;
            };
            let Some(i) = w.parked.iter().position(|(_, _, due)| *due <= written) else {
                return frames;
            };
            let (seq, text, _) = w.parked.remove(i);
            match self.admit_now(seq, text) {
                Ok(out) => frames.extend(out),
                Err(gap) => frames.extend(self.fill_then_admit(gap).await),
            }
        }
    }

    /// A sync's replay starts: each conversation continues from its
    /// watermark (after what the connection never saw below what it has);
    /// then the held messages go.
    async fn sync_started(&mut self, baselines: Vec<(String, u64)>) -> Vec<Message> {
        // What was dropped from the hold is read by `go_live`, after each
        // conversation's new start: a dropped id above the replay's
        // snapshot would otherwise wait for its conversation's next message.
        self.synced = true;
        let mut out = Vec::new();
        for (conversation, watermark) in baselines {
            out.extend(self.sync_from(conversation, watermark).await);
            if self.behind {
                return out;
            }
        }
        out.extend(self.go_live().await);
        out
    }

    /// Releases the held messages, in order of arrival, through `admit`.
    /// Called directly by the writer's hold timer: nothing is parked yet
    /// then (messages park only once live), so nothing waits behind it.
    pub async fn go_live(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        for (seq, text) in self.held.take().unwrap_or_default() {
            out.extend(self.admit(seq, text).await);
            if self.behind {
                return out;
            }
        }
        // What did not fit the hold: from the store, after what was held.
        for (conv, (low, high)) in self.dropped.take().map(|d| *d).unwrap_or_default() {
            // From the last id written, if any: ids between it and the
            // lowest dropped one never came either.
            let after = self.spans.get(&conv).map_or(low - 1, |s| s.last);
            let (frames, end) = Box::pin(self.read(&conv, after, high + 1)).await;
            self.stats.filled += frames.len() as u64;
            out.extend(frames);
            out = match self.unless_complete(out, end) {
                Ok(out) => out,
                Err(closed) => return closed,
            };
            let span = self.spans.entry(conv).or_insert(Span {
                first: after + 1,
                last: after,
            });
            span.last = span.last.max(high);
        }
        out
    }

    /// A sync replays `conversation` above `watermark`: the sequence
    /// continues from there, after the older ids the connection never saw.
    async fn sync_from(&mut self, conversation: String, watermark: u64) -> Vec<Message> {
        match self.spans.get(&conversation).copied() {
            None => {
                self.spans.insert(
                    conversation,
                    Span {
                        first: watermark + 1,
                        last: watermark,
                    },
                );
                vec![]
            }
            Some(span) if span.first > watermark + 1 => {
                let (out, end) = Box::pin(self.read(&conversation, watermark, span.first)).await;
                self.stats.backfilled += out.len() as u64;
                let out = match self.unless_complete(out, end) {
                    Ok(out) => out,
                    Err(closed) => return closed,
                };
                if let Some(s) = self.spans.get_mut(&conversation) {
                    s.first = watermark + 1;
                }
                out
            }
            Some(_) => vec![],
        }
    }

    async fn admit(&mut self, seq: Seq, text: Utf8Bytes) -> Vec<Message> {
        match self.admit_now(seq, text) {
            Ok(out) => out,
            // Boxed, as in `order`.
            Err(gap) => Box::pin(self.fill_then_admit(gap)).await,
        }
    }

    /// `admit` without the store: the frames, or the gap to fill first.
    fn admit_now(&mut self, seq: Seq, text: Utf8Bytes) -> Result<Vec<Message>, Gap> {
        if self.store.is_none() {
            return Ok(vec![Message::Text(text)]);
        }
        let id = seq.message_id;
        let span = self.spans.get(&seq.conversation_id).copied();
        if self
            .left
            .as_ref()
            .is_some_and(|l| l.contains(&seq.conversation_id))
            && span.is_none_or(|s| id > s.last)
        {
            // Seen removed: the join point first (`fill_then_admit`).
            return Err(Gap {
                seq,
                text,
                last: span.map_or(0, |s| s.last),
                from_join: span.is_none(),
            });
        }
        match span {
            Some(span) if id <= span.last => {
                self.stats.repeats += 1;
                return Ok(vec![]);
            }
            Some(span) if id > span.last + 1 => {
                return Err(Gap {
                    seq,
                    text,
                    last: span.last,
                    from_join: false,
                })
            }
            // A conversation the user joined since this connection's sync:
            // every id from the join point is owed, not from this one.
            None if self.synced && id > 1 => {
                return Err(Gap {
                    seq,
                    text,
                    last: 0,
                    from_join: true,
                })
            }
            _ => {}
        }
        Ok(self.next_in_sequence(seq, text, Vec::new()))
    }

    /// A `group` frame that leaves this user out (their removal): the
    /// group's next message is checked against the join point, even one
    /// that would come next in the span, so that, once they are added
    /// back, nothing stored while they were away reaches them
    /// (docs/protocol.md, "Groups"). A late frame of an earlier removal
    /// costs one membership read and changes nothing.
    fn note_group_frame(&mut self, t: &Utf8Bytes) {
        if self.store.is_none() || !t.as_str().starts_with(r#"{"type":"group""#) {
            return;
        }
        let Ok(v) = serde_json::from_str::<serde_json::Value>(t.as_str()) else {
            return;
        };
        let Some(gid) = v["group_id"].as_str() else {
            return;
        };
        let member = v["members"]
            .as_array()
            .is_some_and(|m| m.iter().any(|u| u.as_str() == Some(self.user.as_str())));
        if !member {
            self.left
                .get_or_insert_default()
                .insert(format!("grp#{gid}"));
        }
    }

    /// `seq` goes out after `out` (what filled the gap before it): the
    /// conversation's sequence now ends at its id.
    fn next_in_sequence(
        &mut self,
        seq: Seq,
        text: Utf8Bytes,
        mut out: Vec<Message>,
    ) -> Vec<Message> {
        let id = seq.message_id;
        if let Some(span) = self.spans.get_mut(&seq.conversation_id) {
            span.last = id;
            self.absorb(&seq.conversation_id);
        } else {
            self.spans.insert(
                seq.conversation_id,
                Span {
                    first: id,
                    last: id,
                },
            );
        }
        out.push(Message::Text(text));
        out
    }
}

mod fill;
pub use fill::MUTATION_SKIP_GAP_READ;
mod waiting;

#[cfg(test)]
mod tests;
