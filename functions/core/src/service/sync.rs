//! `sync`: every message above the caller's watermarks, conversation by
//! conversation in id order, then `synced`.

use super::{Chat, Reply, Session};
use crate::error::Result;
use crate::protocol::ServerFrame;

/// Page size when `sync` reads a conversation's backlog.
const SYNC_PAGE: usize = 200;

impl Chat {
    /// Sends every message above the user's watermarks, conversation by
    /// conversation in id order, then `synced`.
    pub async fn sync(&self, session: &Session, reply: &dyn Reply) -> Result<()> {
        for state in self.store.conversations(session.user_id.as_str()).await? {
            let conv = &state.membership.conversation_id;
            let mut cursor = state.membership.acked_up_to;
            while cursor < state.last_message_id {
                let page = self.store.messages_after(conv, cursor, SYNC_PAGE).await?;
                let Some(last) = page.last() else { break };
                cursor = last.message_id;
                for m in &page {
                    if reply.send(ServerFrame::Message(m.view())).await.is_err() {
                        return Ok(()); // the caller is gone
                    }
                }
            }
        }
        let _ = reply.send(ServerFrame::Synced {}).await;
        Ok(())
    }
}
