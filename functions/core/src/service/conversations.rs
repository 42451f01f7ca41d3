//! `conversations`: the caller's conversations with their newest id,
//! watermark and unread count, and for a group its size and how many
//! have read the caller's newest message ("read by n of m").

use super::{Chat, Session};
use crate::error::Result;
use crate::ids::ConversationId;
use crate::protocol::{ConversationItem, ServerFrame, DEFAULT_CONVERSATIONS_LIMIT};

impl Chat {
    /// A page of the caller's conversations, ordered by id, after `cursor`.
    pub async fn conversations(
        &self,
        session: &Session,
        limit: Option<u32>,
        cursor: Option<&str>,
    ) -> Result<ServerFrame> {
        let me = session.user_id.as_str();
        if let Some(c) = cursor {
            ConversationId::parse(c)?;
        }
        let limit = limit.unwrap_or(DEFAULT_CONVERSATIONS_LIMIT).max(1) as usize;
        let (page, mut more) = self.store.conversations_page(me, cursor, limit).await?;
        let mut items = Vec::new();
        let mut bytes = 100;
        for s in page {
            let conv = &s.membership.conversation_id;
            let mut item = ConversationItem {
                conversation_id: conv.clone(),
                kind: "direct".into(),
                peer: None,
                group_id: None,
                name: None,
                last_message_id: s.last_message_id,
                acked_up_to: s.membership.acked_up_to,
                unread: s.last_message_id.saturating_sub(s.membership.acked_up_to),
                members: None,
                last_sent: None,
                read_by: None,
            };
            match ConversationId::parse(conv) {
                Ok(ConversationId::Direct(a, b)) => {
                    item.peer = Some(if a.as_str() == me { b } else { a }.to_string());
                }
                Ok(ConversationId::Group(g)) => {
                    item.kind = "group".into();
                    if let Some(group) = self.members.group(&g).await? {
                        item.name = Some(group.name.clone());
                        item.members = Some(group.members.len() as u64);
                        let marks = self.store.member_marks(&g).await?;
                        let mine = marks.iter().find(|m| m.user_id == me);
                        if let Some(last) = mine.map(|m| m.last_sent).filter(|&id| id > 0) {
                            item.last_sent = Some(last);
                            let readers = marks.iter().filter(|m| {
                                m.user_id != me
                                    && group.is_member(&m.user_id)
                                    && m.read_up_to >= last
                            });
                            item.read_by = Some(readers.count() as u64);
                        }
                    }
                    item.group_id = Some(g);
                }
                Err(_) => continue,
            }
            let size = serde_json::to_string(&item).map_or(0, |j| j.len() + 1);
            if bytes + size > self.limits.max_answer_bytes && !items.is_empty() {
                more = true;
                break;
            }
            bytes += size;
            items.push(item);
        }
        let next_cursor = match items.last() {
            Some(last) if more => Some(last.conversation_id.clone()),
            _ => None,
        };
        Ok(ServerFrame::Conversations { items, next_cursor })
    }
}
