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

/// One connection's run of a conversation: the first id it got, and the
/// newest such that it got every id from the first up to it.
#[derive(Debug, Clone, Copy)]
struct Run {
    to: u64,
    /// An id came past a hole (or a `gap` frame said older ones were left
    /// out): the run no longer grows, and after a gap is never reported.
    stuck: bool,
}

/// What this device keeps, told to the server as `received` (its delivery
/// cursor). What a connection gets of a conversation comes in id order
/// without holes after the first (docs/protocol.md), and the first is
/// where the server's position for this device was: so the run from it is
/// what this device holds, and shown on the terminal, keeps.
#[derive(Default)]
pub struct Cursors {
    runs: BTreeMap<String, Run>,
    /// Already told, on this connection.
    sent: HashMap<String, u64>,
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
                        to: message_id,
                        stuck: false,
                    },
                );
            }
            Some(r) if r.stuck || message_id <= r.to => {}
            Some(r) if message_id == r.to + 1 => r.to = message_id,
            Some(r) => r.stuck = true,
        }
    }

    /// The replay of `conversation_id` left older messages out: what
    /// follows is not contiguous with this device's position.
    pub fn gap(&mut self, conversation_id: &str) {
        self.runs
            .insert(conversation_id.to_string(), Run { to: 0, stuck: true });
    }

    /// One `received` for every conversation whose run grew since it was
    /// last told (`None`: nothing to tell).
    pub fn take_frame(&mut self) -> Option<ClientFrame> {
        let mut items = Vec::new();
        for (conversation_id, run) in &self.runs {
            if run.to == 0 || self.sent.get(conversation_id).is_some_and(|&s| s >= run.to) {
                continue;
            }
            items.push(ReceivedItem {
                conversation_id: conversation_id.clone(),
                up_to: run.to,
            });
        }
        items.truncate(MAX_RECEIVED_ITEMS);
        for i in &items {
            self.sent.insert(i.conversation_id.clone(), i.up_to);
        }
        (!items.is_empty()).then_some(ClientFrame::Received {
            conversation_id: None,
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
    fn a_run_is_told_as_received_and_a_hole_or_a_gap_stops_it() {
        let mut c = Cursors::default();
        for id in [4, 5, 6, 6, 3] {
            c.note("a", id);
        }
        c.note("b", 2);
        c.note("b", 4); // a hole: b stays at 2
        c.note("b", 5);
        c.gap("g");
        c.note("g", 801);
        let items = |f: Option<ClientFrame>| match f {
            Some(ClientFrame::Received { items: Some(i), .. }) => i
                .into_iter()
                .map(|i| (i.conversation_id, i.up_to))
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            items(c.take_frame()),
            [("a".to_string(), 6), ("b".to_string(), 2)]
        );
        assert!(c.take_frame().is_none(), "nothing new");
        c.note("a", 7);
        assert_eq!(items(c.take_frame()), [("a".to_string(), 7)]);
        c.on_connect();
        c.note("a", 9);
        assert_eq!(items(c.take_frame()), [("a".to_string(), 9)]);
    }
}
