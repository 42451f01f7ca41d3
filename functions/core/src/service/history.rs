//! `history`: a page of a conversation the caller is in, ascending by id.

use super::{Chat, Session};
use crate::error::Result;
use crate::protocol::{MessageView, ServerFrame, DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};

/// A message's bytes in a frame (its JSON, as text escapes it, and a comma).
pub(super) fn view_bytes(m: &MessageView) -> usize {
    serde_json::to_string(m).map_or(0, |s| s.len() + 1)
}

impl Chat {
    pub async fn history(
        &self,
        session: &Session,
        conversation_id: &str,
        before: Option<u64>,
        limit: Option<u32>,
    ) -> Result<ServerFrame> {
        let conv = self
            .member_conversation(&session.user_id, conversation_id)
            .await?;
        let limit = limit
            .unwrap_or(DEFAULT_HISTORY_LIMIT)
            .clamp(1, MAX_HISTORY_LIMIT);
        let page = self
            .store
            .messages_before(&conv, before, limit as usize)
            .await?;
        let mut messages: Vec<_> = page.messages.iter().map(|m| m.view()).collect();
        // The page fits one frame: the oldest go first when it would not
        // (the client pages on from the oldest it got).
        let mut has_more = page.has_more;
        let mut bytes: usize = 200 + messages.iter().map(view_bytes).sum::<usize>();
        while bytes > self.limits.max_answer_bytes && messages.len() > 1 {
            bytes -= view_bytes(&messages[0]);
            messages.remove(0);
            has_more = true;
        }
        Ok(ServerFrame::History {
            conversation_id: conv,
            messages,
            has_more,
        })
    }
}
