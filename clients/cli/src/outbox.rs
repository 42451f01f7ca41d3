//! What was typed and is not answered yet.
//!
//! A `send` stays until its `ack` or an error that is not `internal`, and is
//! written again, with the same `client_msg_id`, on every new connection (the
//! server is idempotent on it, so it is stored once). An `internal` error
//! keeps it and writes it again after a pause. Anything else typed while
//! disconnected waits here and is written once, on the next connection.

use crate::backoff;
use crate::outgoing::Outgoing;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

struct Entry {
    frame: Outgoing,
    /// Set for a `send`: kept until answered.
    client_msg_id: Option<String>,
    /// An `internal` error asked for a retry at this time.
    retry_at: Option<Instant>,
    retries: u32,
}

/// What an error frame did to a pending send.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Final: the send is dropped.
    Dropped,
    /// `internal`: written again after this long.
    Retry(Duration),
    /// No pending send has that id.
    Unknown,
}

/// The queue, in typing order.
#[derive(Default)]
pub struct Outbox {
    entries: VecDeque<Entry>,
}

impl Outbox {
    /// Queues a frame: a send (kept until answered) or, while disconnected,
    /// anything else (written once on the next connection).
    pub fn push(&mut self, frame: Outgoing) {
        let client_msg_id = frame.send_id().map(str::to_string);
        self.entries.push_back(Entry {
            frame,
            client_msg_id,
            retry_at: None,
            retries: 0,
        });
    }

    /// Sends waiting for an answer, plus frames waiting for a connection.
    pub fn pending(&self) -> usize {
        self.entries.len()
    }

    /// Sends waiting for an answer.
    pub fn unacked(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| e.client_msg_id.is_some())
            .count()
    }

    /// A new connection (after its `sync`): every queued frame, in order.
    /// Call [`Outbox::written`] once they are written.
    pub fn replay(&mut self) -> Vec<Outgoing> {
        self.entries
            .iter_mut()
            .map(|e| {
                e.retry_at = None;
                e.frame.clone()
            })
            .collect()
    }

    /// The replayed frames are written: what is not a send is done.
    pub fn written(&mut self) {
        self.entries.retain(|e| e.client_msg_id.is_some());
    }

    /// An `ack` answered `client_msg_id`: true if it was pending.
    pub fn on_ack(&mut self, client_msg_id: &str) -> bool {
        match self.position(client_msg_id) {
            Some(i) => {
                self.entries.remove(i);
                true
            }
            None => false,
        }
    }

    /// An `error` with `code` answered `client_msg_id`.
    pub fn on_error(&mut self, client_msg_id: &str, code: &str, now: Instant) -> Outcome {
        let Some(i) = self.position(client_msg_id) else {
            return Outcome::Unknown;
        };
        // `internal` and `unavailable` (the store cannot write for now):
        // nothing was stored; the same send is tried again later.
        if code != "internal" && code != "unavailable" {
            self.entries.remove(i);
            return Outcome::Dropped;
        }
        let entry = &mut self.entries[i];
        let wait = backoff::ceiling(entry.retries);
        entry.retries = entry.retries.saturating_add(1);
        entry.retry_at = Some(now + wait);
        Outcome::Retry(wait)
    }

    /// When the next retry after an `internal` error is due.
    pub fn next_retry(&self) -> Option<Instant> {
        self.entries.iter().filter_map(|e| e.retry_at).min()
    }

    /// The sends whose retry is due at `now`, in order.
    pub fn due(&mut self, now: Instant) -> Vec<Outgoing> {
        let mut frames = Vec::new();
        for e in &mut self.entries {
            if e.retry_at.is_some_and(|at| at <= now) {
                e.retry_at = None;
                frames.push(e.frame.clone());
            }
        }
        frames
    }

    fn position(&self, client_msg_id: &str) -> Option<usize> {
        self.entries
            .iter()
            .position(|e| e.client_msg_id.as_deref() == Some(client_msg_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::protocol::ClientFrame;
    use serde_json::json;

    fn send(id: &str) -> Outgoing {
        ClientFrame::Send {
            to: "user:bob".into(),
            client_msg_id: id.into(),
            text: id.into(),
        }
        .into()
    }

    fn convs() -> Outgoing {
        ClientFrame::Conversations {
            limit: None,
            cursor: None,
        }
        .into()
    }

    #[test]
    fn unacked_sends_are_resent_in_order_with_the_same_ids() {
        let mut o = Outbox::default();
        o.push(send("c-1"));
        o.push(send("c-2"));
        o.push(send("c-3"));
        assert_eq!(o.replay(), [send("c-1"), send("c-2"), send("c-3")]);
        o.written();
        assert!(o.on_ack("c-2"));
        assert!(!o.on_ack("c-2"), "answered once");
        // Another reconnect: the rest again, same ids, same order.
        assert_eq!(o.replay(), [send("c-1"), send("c-3")]);
        o.written();
        assert!(o.on_ack("c-1"));
        assert!(o.on_ack("c-3"));
        assert_eq!(o.pending(), 0);
    }

    #[test]
    fn final_errors_drop_a_send_and_internal_keeps_it_for_a_retry() {
        let t0 = Instant::now();
        let mut o = Outbox::default();
        o.push(send("c-1"));
        o.push(send("c-2"));
        assert_eq!(o.on_error("c-1", "forbidden", t0), Outcome::Dropped);
        assert_eq!(o.on_error("c-1", "forbidden", t0), Outcome::Unknown);
        assert_eq!(o.on_error("c-2", "rate_limited", t0), Outcome::Dropped);
        o.push(send("c-3"));
        assert_eq!(
            o.on_error("c-3", "internal", t0),
            Outcome::Retry(Duration::from_secs(1))
        );
        assert_eq!(o.unacked(), 1);
        assert_eq!(o.next_retry(), Some(t0 + Duration::from_secs(1)));
        assert!(o.due(t0).is_empty(), "not yet");
        assert_eq!(o.due(t0 + Duration::from_secs(1)), [send("c-3")]);
        assert_eq!(o.next_retry(), None);
        assert_eq!(
            o.on_error("c-3", "internal", t0),
            Outcome::Retry(Duration::from_secs(2)),
            "the pause doubles"
        );
        assert!(o.on_ack("c-3"));
        assert_eq!(o.next_retry(), None);
        // A store that cannot write for now: kept and retried too.
        o.push(send("c-4"));
        assert_eq!(
            o.on_error("c-4", "unavailable", t0),
            Outcome::Retry(Duration::from_secs(1))
        );
        assert_eq!(o.unacked(), 1);
    }

    #[test]
    fn frames_typed_offline_wait_and_are_written_once() {
        let mut o = Outbox::default();
        o.push(send("c-1"));
        o.push(convs());
        o.push(send("c-2"));
        assert_eq!(o.pending(), 3);
        assert_eq!(o.unacked(), 2);
        let first = o.replay();
        assert_eq!(first, [send("c-1"), convs(), send("c-2")]);
        // Not written (the connection dropped again): all of it stays.
        assert_eq!(o.replay(), first);
        o.written();
        assert_eq!(o.replay(), [send("c-1"), send("c-2")]);
    }

    #[test]
    fn a_raw_send_typed_by_the_user_is_kept_until_answered() {
        let mut o = Outbox::default();
        let raw = Outgoing::Raw(
            json!({"action": "send", "to": "user:bob", "client_msg_id": "r-1", "text": "hi"}),
        );
        o.push(raw.clone());
        o.push(Outgoing::Raw(json!({"action": "sync"})));
        assert_eq!(o.unacked(), 1);
        o.replay();
        o.written();
        assert_eq!(o.replay(), [raw]);
        assert!(o.on_ack("r-1"));
        assert_eq!(o.pending(), 0);
    }
}
