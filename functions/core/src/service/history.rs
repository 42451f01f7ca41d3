//! `history`: a page of a conversation the caller is in, ascending by id.

use super::{Chat, Session};
use crate::error::Result;
use crate::protocol::{ServerFrame, DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT};

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
        Ok(ServerFrame::History {
            conversation_id: conv,
            messages: page.messages.iter().map(|m| m.view()).collect(),
            has_more: page.has_more,
        })
    }
}
