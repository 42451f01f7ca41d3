//! What comes in: de-duplication on `(conversation_id, message_id)`
//! (delivery is at-least-once, and a reconnect replays what was not acked),
//! and the acks of what was shown: one per conversation per batch, for the
//! newest id.

use chat_core::protocol::ClientFrame;
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
}
