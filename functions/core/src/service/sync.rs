//! `sync`: every message above the caller's watermarks, conversation by
//! conversation in id order, then `synced`. With sync states (the Lambda
//! functions), the connection goes live only once everything the fan-out
//! skipped meanwhile is replayed too.

use super::{Chat, Reply, Session};
use crate::error::Result;
use crate::ports::GoLive;
use crate::protocol::ServerFrame;
use std::collections::BTreeMap;

/// Most messages `sync` reads at once; fewer when the answer limit is small
/// (each message can be 10 KB).
const SYNC_PAGE: usize = 200;
/// Rounds of "replay what was skipped, try to go live again" before the
/// connection goes live anyway (a message skipped in that last instant then
/// reaches the connection at its next sync; never seen in tests).
const GO_LIVE_ROUNDS: usize = 20;

impl Chat {
    /// Sends every message above the user's watermarks, conversation by
    /// conversation in id order, then `synced`.
    pub async fn sync(&self, session: &Session, reply: &dyn Reply) -> Result<()> {
        let states = self.store.conversations(session.user_id.as_str()).await?;
        let baselines = states
            .iter()
            .map(|s| {
                (
                    s.membership.conversation_id.clone(),
                    s.membership.acked_up_to,
                )
            })
            .collect();
        if self.sync_states && !self.connections.begin_sync(&session.connection_id).await? {
            return Ok(()); // the connection is gone
        }
        reply.sync_started(baselines).await;
        let mut replayed = BTreeMap::new();
        for state in states {
            let conv = &state.membership.conversation_id;
            let from = state.membership.acked_up_to;
            match self
                .replay(reply, conv, from, Some(state.last_message_id))
                .await
            {
                Some(last) if last > from => {
                    replayed.insert(conv.clone(), last);
                }
                Some(_) => {}
                None => return Ok(()), // the caller is gone
            }
        }
        if self.sync_states && !self.go_live(session, reply, replayed).await? {
            return Ok(());
        }
        let _ = reply.send(ServerFrame::Synced {}).await;
        Ok(())
    }

    /// Sends the messages of `conv` above `from` (up to `until`, or all),
    /// in id order; the last id sent (or `from`), or `None` if the caller
    /// is gone.
    async fn replay(
        &self,
        reply: &dyn Reply,
        conv: &str,
        from: u64,
        until: Option<u64>,
    ) -> Option<u64> {
        let mut cursor = from;
        while until.is_none_or(|u| cursor < u) {
            let page = match self
                .store
                .messages_after(conv, cursor, self.sync_page())
                .await
            {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(error = %e, "sync: a conversation could not be read");
                    break;
                }
            };
            let Some(last) = page.last() else { break };
            cursor = last.message_id;
            for m in &page {
                if reply.send(ServerFrame::Message(m.view())).await.is_err() {
                    return None;
                }
            }
        }
        Some(cursor)
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
                let from = match replayed.get(&conv) {
                    Some(&r) => r,
                    None => self
                        .store
                        .membership(session.user_id.as_str(), &conv)
                        .await?
                        .map_or(0, |m| m.acked_up_to),
                };
                match self.replay(reply, &conv, from, None).await {
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
