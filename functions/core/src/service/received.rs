//! `received`: this device keeps every message of a conversation up to an
//! id, so its delivery cursor moves there (never back). No fan-out, no
//! receipt: the read watermark (`ack`) is another position.

use super::{Chat, Session};
use crate::error::{Error, Result};
use crate::protocol::ReceivedItem;
use crate::time::now_ms;

impl Chat {
    /// Moves this device's cursor of each conversation forward to its
    /// `up_to`, clamped to the conversation's newest id. Every conversation
    /// is checked first: one the user is not in makes the whole frame
    /// `forbidden`, and nothing moves.
    pub async fn received(&self, session: &Session, items: &[ReceivedItem]) -> Result<()> {
        let Some(device) = &session.device_id else {
            return Err(Error::BadRequest(
                "received needs a device: connect with ?device=<id> (or a token with a `device` claim)"
                    .into(),
            ));
        };
        let user = &session.user_id;
        let mut moves = Vec::with_capacity(items.len());
        for item in items {
            let conv = self
                .member_conversation(user, &item.conversation_id)
                .await?;
            let last = self.store.last_message_id(&conv).await?;
            moves.push((conv, item.up_to.min(last)));
        }
        let now = now_ms();
        for (conv, up_to) in moves {
            if up_to == 0 {
                continue;
            }
            self.store
                .advance_cursor(user.as_str(), device.as_str(), &conv, up_to, now)
                .await?;
        }
        Ok(())
    }
}
