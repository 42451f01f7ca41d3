//! What comes in: de-duplication on `(conversation_id, message_id)`
//! (delivery is at-least-once, and a reconnect replays what was not acked),
//! the acks of what was shown: one per conversation per batch, for the
//! newest id; and what this device keeps (`received`).

use chat_core::protocol::{ClientFrame, ReceivedItem, MAX_RECEIVED_ITEMS};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Ids remembered per conversation; older ones count as seen.
const KEEP: usize = 4096;

#[derive(Default)]
struct Window {
    /// Every id at or below this counts as seen.
    floor: u64,
    ids: BTreeSet<u64>,
}

/// The messages already shown.
#[derive(Default)]
pub struct Seen {
    conversations: HashMap<String, Window>,
}

impl Seen {
    /// True the first time `(conversation_id, message_id)` comes.
    pub fn first_time(&mut self, conversation_id: &str, message_id: u64) -> bool {
        let window = self
            .conversations
            .entry(conversation_id.to_string())
            .or_default();
        if message_id <= window.floor || !window.ids.insert(message_id) {
            return false;
        }
        if window.ids.len() > KEEP {
            if let Some(lowest) = window.ids.pop_first() {
                window.floor = lowest;
            }
        }
        true
    }
}

/// The acks owed for what was shown.
#[derive(Default)]
pub struct Acks {
    /// This batch: the newest id shown per conversation.
    batch: BTreeMap<String, u64>,
    /// Already acked on this connection.
    sent: HashMap<String, u64>,
}

impl Acks {
    /// `message_id` of `conversation_id` was shown (now or before).
    pub fn note(&mut self, conversation_id: &str, message_id: u64) {
        let newest = self
            .batch
            .entry(conversation_id.to_string())
            .or_insert(message_id);
        *newest = (*newest).max(message_id);
    }

    /// The batch is shown: one `ack` per conversation, for its newest id,
    /// unless this connection already acked that far.
    pub fn take_frames(&mut self) -> Vec<ClientFrame> {
        let mut frames = Vec::new();
        for (conversation_id, up_to) in std::mem::take(&mut self.batch) {
            if self
                .sent
                .get(&conversation_id)
                .is_some_and(|&acked| acked >= up_to)
            {
                continue;
            }
            self.sent.insert(conversation_id.clone(), up_to);
            frames.push(ClientFrame::Ack {
                conversation_id,
                up_to,
            });
        }
        frames
    }

    /// A new connection: what it replays is acked again.
    pub fn on_connect(&mut self) {
        self.batch.clear();
        self.sent.clear();
    }
}

/// One connection's run of a conversation: the ids it holds without a
/// hole around the first one it got (a message, or the ack of its own
/// send), told as `received` `from`..`to`. The server moves the device's
/// cursor only if `from` reaches down to it (docs/protocol.md): an ack
/// that came before a message below it starts a run above a hole, and the
/// run reaches down once that message comes.
#[derive(Debug, Clone, Default)]
struct Run {
    from: u64,
    to: u64,
    /// Ids got that do not touch the run yet (a message or ack ahead of
    /// one below it), at most [`MAX_APART`].
    apart: BTreeSet<u64>,
    /// Too many ids apart: the run is never told.
    stuck: bool,
}

/// Ids a run keeps apart from it before it gives up.
const MAX_APART: usize = 1024;

impl Run {
    fn note(&mut self, id: u64) {
        if self.stuck || (self.from..=self.to).contains(&id) {
            return;
        }
        self.apart.insert(id);
        while self.from > 1 && self.apart.remove(&(self.from - 1)) {
            self.from -= 1;
        }
        while self.to < u64::MAX && self.apart.remove(&(self.to + 1)) {
            self.to += 1;
        }
        if self.apart.len() > MAX_APART {
            self.stuck = true;
            self.apart.clear();
        }
    }
}

/// What this device keeps, told to the server as `received` (its delivery
/// cursor): per conversation, this connection's run.
#[derive(Default)]
pub struct Cursors {
    runs: BTreeMap<String, Run>,
    /// Already told, on this connection: the run's ends.
    sent: HashMap<String, (u64, u64)>,
}

impl Cursors {
    /// This connection got `message_id` of `conversation_id` (a message,
    /// or the ack of its own send).
    pub fn note(&mut self, conversation_id: &str, message_id: u64) {
        match self.runs.get_mut(conversation_id) {
            None => {
                self.runs.insert(
                    conversation_id.to_string(),
                    Run {
                        from: message_id,
                        to: message_id,
                        ..Run::default()
                    },
                );
            }
            Some(r) => r.note(message_id),
        }
    }

    /// The replay of `conversation_id` left out the ids above `after` and
    /// below `before` (shown as a line; `/history` pages back for them):
    /// they count as told, so the run starts at `after + 1` and the replay
    /// that follows extends it.
    pub fn gap(&mut self, conversation_id: &str, after: u64, before: u64) {
        if before <= after.saturating_add(1) {
            return; // nothing left out: not a gap
        }
        self.runs.insert(
            conversation_id.to_string(),
            Run {
                from: after + 1,
                to: before - 1,
                ..Run::default()
            },
        );
    }

    /// One `received` for every conversation whose run grew (up, or down
    /// to where the cursor may stand) since it was last told (`None`:
    /// nothing to tell).
    pub fn take_frame(&mut self) -> Option<ClientFrame> {
        let mut items = Vec::new();
        for (conversation_id, run) in &self.runs {
            if run.stuck || run.from == 0 {
                continue;
            }
            let grew = match self.sent.get(conversation_id) {
                None => true,
                Some(&(from, to)) => run.to > to || run.from < from,
            };
            if grew {
                items.push(ReceivedItem {
                    conversation_id: conversation_id.clone(),
                    from: run.from,
                    up_to: run.to,
                });
            }
        }
        items.truncate(MAX_RECEIVED_ITEMS);
        for i in &items {
            self.sent
                .insert(i.conversation_id.clone(), (i.from, i.up_to));
        }
        (!items.is_empty()).then_some(ClientFrame::Received {
            conversation_id: None,
            from: None,
            up_to: None,
            items: Some(items),
        })
    }

    /// A new connection: its runs start afresh.
    pub fn on_connect(&mut self) {
        self.runs.clear();
        self.sent.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack(conversation_id: &str, up_to: u64) -> ClientFrame {
        ClientFrame::Ack {
            conversation_id: conversation_id.into(),
            up_to,
        }
    }

    #[test]
    fn each_message_is_shown_once() {
        let mut seen = Seen::default();
        assert!(seen.first_time("dm#a#b", 1));
        assert!(seen.first_time("dm#a#b", 2));
        assert!(!seen.first_time("dm#a#b", 1), "a repeat");
        assert!(seen.first_time("grp#g", 1), "another conversation");
        assert!(!seen.first_time("grp#g", 1));
    }

    #[test]
    fn the_window_forgets_only_below_its_floor() {
        let mut seen = Seen::default();
        for id in 1..=(KEEP as u64 + 10) {
            assert!(seen.first_time("c", id));
        }
        for id in 1..=(KEEP as u64 + 10) {
            assert!(!seen.first_time("c", id), "{id} was shown");
        }
        assert!(seen.first_time("c", KEEP as u64 + 11));
    }

    #[test]
    fn one_ack_per_conversation_per_batch_for_the_newest_id() {
        let mut acks = Acks::default();
        for id in [3, 4, 5] {
            acks.note("dm#a#b", id);
        }
        acks.note("grp#g", 9);
        acks.note("grp#g", 8);
        assert_eq!(acks.take_frames(), [ack("dm#a#b", 5), ack("grp#g", 9)]);
        assert!(acks.take_frames().is_empty(), "the batch was taken");
    }

    #[test]
    fn acks_are_not_repeated_on_a_connection_but_are_on_the_next() {
        let mut acks = Acks::default();
        acks.note("c", 5);
        assert_eq!(acks.take_frames().len(), 1);
        acks.note("c", 4);
        acks.note("c", 5);
        assert!(acks.take_frames().is_empty(), "already acked up to 5");
        acks.on_connect();
        acks.note("c", 5);
        assert_eq!(acks.take_frames(), [ack("c", 5)]);
    }

    #[test]
    fn a_run_is_told_as_received_with_where_it_starts_and_a_gap_counts_as_told() {
        let mut c = Cursors::default();
        for id in [4, 5, 6, 6, 3] {
            c.note("a", id);
        }
        c.note("b", 2);
        c.note("b", 4); // a hole: b stays at 2 (4 is kept apart)
        c.note("b", 5);
        c.gap("g", 1, 801); // 2..800 left out, told
        c.note("g", 801);
        let items = |f: Option<ClientFrame>| match f {
            Some(ClientFrame::Received { items: Some(i), .. }) => i
                .into_iter()
                .map(|i| (i.conversation_id, i.from, i.up_to))
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            items(c.take_frame()),
            [
                ("a".to_string(), 3, 6),
                ("b".to_string(), 2, 2),
                ("g".to_string(), 2, 801)
            ]
        );
        assert!(c.take_frame().is_none(), "nothing new");
        c.note("a", 7);
        c.note("b", 3); // the hole closes: 2 to 5
        assert_eq!(
            items(c.take_frame()),
            [("a".to_string(), 3, 7), ("b".to_string(), 2, 5)]
        );
        c.on_connect();
        c.note("a", 9);
        assert_eq!(items(c.take_frame()), [("a".to_string(), 9, 9)]);
    }

    #[test]
    fn an_ack_ahead_of_a_message_starts_the_run_high_until_the_message_comes() {
        let mut c = Cursors::default();
        c.note("a", 22); // the ack of this connection's own send
        let items = |f: Option<ClientFrame>| match f {
            Some(ClientFrame::Received { items: Some(i), .. }) => {
                i.into_iter().map(|i| (i.from, i.up_to)).collect::<Vec<_>>()
            }
            other => panic!("{other:?}"),
        };
        // Told as 22..22: the server keeps the cursor (at 20) where it is.
        assert_eq!(items(c.take_frame()), [(22, 22)]);
        c.note("a", 21); // bob's message, later
        assert_eq!(
            items(c.take_frame()),
            [(21, 22)],
            "told again, reaching down"
        );
    }
}
