//! `received`: this device keeps every message of a conversation from one
//! id up to another, so its delivery cursor moves there (never back), if
//! that run reaches down to where the cursor stands: a run that starts
//! higher steps over ids the device never got (an `ack` of its own send
//! can come before a message below it), and the next `sync` replays them.
//! No fan-out, no receipt: the read watermark (`ack`) is another position.

use super::{Chat, Session};
use crate::error::{Error, Result};
use crate::ports::CursorMove;
use crate::protocol::ReceivedItem;
use crate::time::now_ms;

impl Chat {
    /// Moves this device's cursor of each conversation to its `up_to`
    /// (clamped to the conversation's newest id) where the run reaches the
    /// cursor. Every conversation is checked first: one the user is not in
    /// makes the whole frame `forbidden`, and nothing moves. Only a device
    /// a `sync` made known has cursors: a client cannot make devices past
    /// the cap by naming new ones here.
    pub async fn received(&self, session: &Session, items: &[ReceivedItem]) -> Result<()> {
        let Some(device) = &session.device_id else {
            return Err(Error::BadRequest(
                "received needs a device: connect with ?device=<id> (or a token with a `device` claim)"
                    .into(),
            ));
        };
        let user = &session.user_id;
        let now = now_ms();
        let convs = items
            .iter()
            .map(|i| Ok(crate::ids::ConversationId::parse(&i.conversation_id)?.to_string()))
            .collect::<Result<Vec<String>>>()?;
        // Each conversation's membership and newest id, all read at once
        // (up to 100 conversations a frame); any refusal refuses the frame
        // before anything moves.
        let moves = futures_util::future::try_join_all(convs.into_iter().zip(items).map(
            |(conv, item)| async move {
                let (membership, last) = futures_util::try_join!(
                    self.require_member(user, &conv),
                    self.store.last_message_id(&conv)
                )?;
                let mv = CursorMove {
                    from: item.from,
                    up_to: item.up_to.min(last),
                    floor: membership.joined_at_id,
                };
                Ok::<_, Error>((conv, mv))
            },
        ))
        .await?;
        if !self
            .store
            .device_known(user.as_str(), device.as_str(), now)
            .await?
        {
            return Err(Error::BadRequest(
                "received: this device is not known (forgotten, or never synced): sync first"
                    .into(),
            ));
        }
        for (conv, mv) in moves {
            if mv.from > mv.up_to {
                continue; // nothing stored in that run yet
            }
            let moved = self
                .store
                .advance_cursor(user.as_str(), device.as_str(), &conv, mv, now)
                .await?;
            if !moved {
                tracing::debug!(conversation = %conv, from = mv.from, up_to = mv.up_to, "received: cursor not moved");
            }
        }
        Ok(())
    }
}
