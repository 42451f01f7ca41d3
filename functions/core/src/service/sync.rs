//! `sync`: per conversation, in id order, the messages this device misses,
//! then `synced`. With sync states (the Lambda functions), the connection
//! goes live only once everything the fan-out skipped meanwhile is
//! replayed too.
//!
//! Where each conversation's replay starts (docs/protocol.md, "Devices"):
//! - a connection without a device, or a device never seen: above the read
//!   watermark (what the user has not read);
//! - a known device: above its delivery cursor; in a conversation it has
//!   no cursor for, above the join point;
//! - never below the member's join point, and at most [`SYNC_REPLAY_MAX`]
//!   messages: the newest, after a `gap` frame saying what is left out
//!   (the client pages back with `history`).
//!
//! A device's first sync writes its cursors at those starting points, so a
//! `received` run is measured against them (`received.rs`).

use super::{Chat, Reply, Session};
use crate::error::Result;
use crate::ports::{ConversationState, CursorMove, GoLive};
use crate::protocol::ServerFrame;
use crate::time::now_ms;
use std::collections::{BTreeMap, HashMap};

/// Most messages one `sync` replays of one conversation (the newest).
pub const SYNC_REPLAY_MAX: u64 = 200;
/// Most messages `sync` reads at once; fewer when the answer limit is small
/// (each message can be 10 KB).
const SYNC_PAGE: usize = 200;
/// Rounds of "replay what was skipped, try to go live again" before the
/// connection goes live anyway (a message skipped in that last instant then
/// reaches the connection at its next sync; never seen in tests).
const GO_LIVE_ROUNDS: usize = 20;

/// What this connection's device holds, as far as the server knows.
enum Positions {
    /// No device, or one never seen (`new_device`): the read watermark
    /// stands in.
    Watermark { new_device: bool },
    /// A known device's cursors, by conversation.
    Cursors(HashMap<String, u64>),
}

/// One conversation's replay: the ids above `from` up to `last`.
struct Replay {
    conversation_id: String,
    /// Where the device stands: it needs every id above.
    position: u64,
    from: u64,
    last: u64,
}

impl Replay {
    fn plan(state: &ConversationState, positions: &Positions) -> Self {
        let m = &state.membership;
        let last = state.last_message_id;
        // The join point itself, not clamped to `last`: that read may be
        // stale (eventually consistent), and nothing below the join point
        // is the user's.
        let floor = m.joined_at_id;
        let held = match positions {
            Positions::Watermark { .. } => m.acked_up_to,
            // A conversation new to a known device: it holds none of it.
            Positions::Cursors(c) => c.get(&m.conversation_id).copied().unwrap_or(floor),
        };
        let position = held.max(floor);
        Replay {
            conversation_id: m.conversation_id.clone(),
            position,
            from: position.max(last.saturating_sub(SYNC_REPLAY_MAX)),
            last,
        }
    }

    /// More below `from` are missed: a `gap` frame goes first.
    fn gap(&self) -> bool {
        self.from > self.position
    }
}

/// A new device's plan for one conversation: its position and where the
/// replay starts.
#[cfg(test)]
pub(super) fn plan_for_test(state: &ConversationState) -> (u64, u64) {
    let r = Replay::plan(state, &Positions::Watermark { new_device: true });
    (r.position, r.from)
}

impl Chat {
    /// Sends, per conversation in id order, what this device misses (at
    /// most a page each, after a `gap` frame when more is missed), then
    /// `synced`. A conversation that cannot be read ends the sync with an
    /// error, never with `synced`: the client retries rather than believe
    /// it is caught up.
    pub async fn sync(&self, session: &Session, reply: &dyn Reply) -> Result<()> {
        let states = self.store.conversations(session.user_id.as_str()).await?;
        let positions = self.positions(session).await?;
        let plan: Vec<Replay> = states.iter().map(|s| Replay::plan(s, &positions)).collect();
        let baselines: Vec<(String, u64)> = plan
            .iter()
            .map(|r| (r.conversation_id.clone(), r.from))
            .collect();
        // A device's first sync: its position in each conversation is where
        // the replay starts, so `received` and the next sync measure from
        // it. Written before anything is sent: a first sync cut short must
        // not leave a known device without positions (it would then start
        // at the join point, not at the read watermark).
        if let (Positions::Watermark { new_device: true }, Some(device)) =
            (&positions, &session.device_id)
        {
            self.note_positions(session.user_id.as_str(), device.as_str(), &plan)
                .await?;
        }
        // Where each conversation's replay starts, for `go_live`.
        let starts: HashMap<String, u64> = if self.sync_states {
            baselines.iter().cloned().collect()
        } else {
            HashMap::new()
        };
        if self.sync_states && !self.connections.begin_sync(&session.connection_id).await? {
            return Ok(()); // the connection is gone
        }
        reply.sync_started(baselines).await;
        let mut replayed = BTreeMap::new();
        for r in plan {
            if r.last <= r.from {
                continue;
            }
            if r.gap() {
                let gap = ServerFrame::Gap {
                    conversation_id: r.conversation_id.clone(),
                    after: r.position,
                    before: r.from + 1,
                };
                if reply.send(gap).await.is_err() {
                    return Ok(()); // the caller is gone
                }
            }
            match self
                .replay(reply, &r.conversation_id, r.from, Some(r.last))
                .await?
            {
                Some(last) if last > r.from => {
                    replayed.insert(r.conversation_id, last);
                }
                Some(_) => {}
                None => return Ok(()), // the caller is gone
            }
        }
        if self.sync_states && !self.go_live(session, reply, replayed, &starts).await? {
            return Ok(());
        }
        let _ = reply.send(ServerFrame::Synced {}).await;
        Ok(())
    }

    /// A device's first sync started at the read watermark (never below
    /// the join point): its cursors start there. Without them the next
    /// sync would take each conversation as new to the device and replay
    /// from its join point, and a `received` run could not be measured against
    /// where the replay started. (What was replayed, the client tells with
    /// `received` once it keeps it.) One write per conversation with a
    /// position above 0, once per new device.
    async fn note_positions(&self, user: &str, device: &str, plan: &[Replay]) -> Result<()> {
        let now = now_ms();
        for r in plan.iter().filter(|r| r.position > 0) {
            self.store
                .advance_cursor(
                    user,
                    device,
                    &r.conversation_id,
                    CursorMove::to(r.position),
                    now,
                )
                .await?;
        }
        Ok(())
    }

    /// What the connection's device holds: its cursors if it is known
    /// (marking it used now), or the read watermark.
    async fn positions(&self, session: &Session) -> Result<Positions> {
        let Some(device) = &session.device_id else {
            return Ok(Positions::Watermark { new_device: false });
        };
        let (user, now) = (session.user_id.as_str(), now_ms());
        let known = self.store.use_device(user, device.as_str(), now).await?;
        let cursors = self.store.cursors(user, device.as_str(), now).await?;
        // Cursors without the device's record: it was used before, its
        // record lost (or written by another path); still known.
        if known || !cursors.is_empty() {
            Ok(Positions::Cursors(cursors))
        } else {
            Ok(Positions::Watermark { new_device: true })
        }
    }

    /// Sends the messages of `conv` above `from` (up to `until`, or all),
    /// in id order; the last id sent (or `from`), or `None` if the caller
    /// is gone. A failed read is an error: the caller must not be told it
    /// is caught up.
    async fn replay(
        &self,
        reply: &dyn Reply,
        conv: &str,
        from: u64,
        until: Option<u64>,
    ) -> Result<Option<u64>> {
        let mut cursor = from;
        while until.is_none_or(|u| cursor < u) {
            let page = self
                .store
                .messages_after(conv, cursor, self.sync_page())
                .await
                .inspect_err(|e| {
                    tracing::warn!(error = %e, conversation = conv, "sync: a conversation could not be read")
                })?;
            let Some(last) = page.last() else { break };
            cursor = last.message_id;
            for m in &page {
                if reply.send(ServerFrame::Message(m.view())).await.is_err() {
                    return Ok(None);
                }
            }
        }
        Ok(Some(cursor))
    }

    /// Messages read at once: a page's worth of the answer limit at most.
    fn sync_page(&self) -> usize {
        let per = crate::protocol::MAX_TEXT_BYTES + 512;
        (self.limits.max_answer_bytes / per).clamp(8, SYNC_PAGE)
    }

    /// Goes live: replays what the fan-out skipped while this sync ran,
    /// until nothing new was skipped since the last look, atomically with
    /// the switch. False if the caller is gone.
    async fn go_live(
        &self,
        session: &Session,
        reply: &dyn Reply,
        mut replayed: BTreeMap<String, u64>,
        starts: &HashMap<String, u64>,
    ) -> Result<bool> {
        let conn = &session.connection_id;
        let mut seen = 0;
        for _ in 0..GO_LIVE_ROUNDS {
            let (conversations, skips) =
                match self.connections.go_live(conn, &replayed, seen).await? {
                    GoLive::Done => return Ok(true),
                    GoLive::Skipped {
                        conversations,
                        skips,
                    } => (conversations, skips),
                };
            for conv in conversations {
                let from = match replayed.get(&conv).or(starts.get(&conv)) {
                    Some(&r) => r,
                    // Joined during this sync: from the join point, where
                    // a device without a cursor stands (`received`).
                    None => self
                        .store
                        .membership(session.user_id.as_str(), &conv)
                        .await?
                        .map_or(0, |m| m.joined_at_id),
                };
                match self.replay(reply, &conv, from, None).await? {
                    Some(last) if last > from => {
                        replayed.insert(conv, last);
                    }
                    Some(_) => {}
                    None => return Ok(false),
                }
            }
            seen = skips;
        }
        tracing::warn!("sync: still skipping after {GO_LIVE_ROUNDS} rounds; going live");
        self.connections.begin_sync(conn).await?;
        self.connections.go_live(conn, &replayed, 0).await?;
        Ok(true)
    }
}
