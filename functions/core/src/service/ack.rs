//! `ack`: move the caller's watermark forward and tell the other members
//! with a `receipt`.

use super::{Chat, Session};
use crate::error::{Error, Result};
use crate::ports::{Audience, FanoutJob};
use crate::protocol::ServerFrame;

impl Chat {
    /// Moves the watermark forward (clamped to the newest id) and tells the
    /// other members with a `receipt`.
    pub async fn ack(&self, session: &Session, conversation_id: &str, up_to: u64) -> Result<()> {
        let user = &session.user_id;
        let conv = self.member_conversation(user, conversation_id).await?;
        let last = self.store.last_message_id(&conv).await?;
        let (mark, moved) = self
            .store
            .advance_watermark(user.as_str(), &conv, up_to.min(last))
            .await?
            .ok_or(Error::Forbidden)?;
        if moved {
            let job = FanoutJob {
                audience: Audience::Conversation(conv.clone()),
                frame: ServerFrame::Receipt {
                    conversation_id: conv.clone(),
                    user_id: user.to_string(),
                    up_to: mark,
                },
                except_connection: Some(session.connection_id.clone()),
                order_key: conv,
            };
            self.dispatch(job, "receipt").await;
        }
        Ok(())
    }
}
