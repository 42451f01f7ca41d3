//! `conversations`: the caller's conversations with their newest id,
//! watermark and unread count.

use super::{Chat, Session};
use crate::error::Result;
use crate::ids::ConversationId;
use crate::protocol::{ConversationItem, ServerFrame};

impl Chat {
    pub async fn conversations(&self, session: &Session) -> Result<ServerFrame> {
        let me = session.user_id.as_str();
        let mut items = Vec::new();
        for s in self.store.conversations(me).await? {
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
            };
            match ConversationId::parse(conv) {
                Ok(ConversationId::Direct(a, b)) => {
                    item.peer = Some(if a.as_str() == me { b } else { a }.to_string());
                }
                Ok(ConversationId::Group(g)) => {
                    item.kind = "group".into();
                    item.name = self.store.group(&g).await?.map(|g| g.name);
                    item.group_id = Some(g);
                }
                Err(_) => continue,
            }
            items.push(item);
        }
        Ok(ServerFrame::Conversations { items })
    }
}
