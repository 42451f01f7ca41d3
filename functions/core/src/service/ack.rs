//! `ack`: move the caller's watermark forward and tell whoever needs to
//! know with a `receipt`: in a direct chat the other party; in a group
//! only the authors of the messages the move newly covers; and always the
//! caller's other devices (their unread counts), never the acking
//! connection (docs/design.md, "Receipts").

use super::{Chat, Session};
use crate::error::{Error, Result};
use crate::ids::ConversationId;
use crate::ports::{Audience, FanoutJob, Watermark};
use crate::protocol::{ReadMark, ServerFrame};
use std::collections::BTreeSet;

/// Messages an `ack` reads at most to find the authors whose newest
/// message is past the ack (docs/design.md, "Receipts"): the range it
/// covers, or the newest page of it.
pub const AUTHOR_SCAN_LIMIT: usize = 100;

impl Chat {
    /// Moves the watermark forward (clamped to the newest id) and queues
    /// the receipts.
    pub async fn ack(&self, session: &Session, conversation_id: &str, up_to: u64) -> Result<()> {
        let user = &session.user_id;
        let conv = self.member_conversation(user, conversation_id).await?;
        let last = self.store.last_message_id(&conv).await?;
        let mark = self
            .store
            .advance_watermark(user.as_str(), &conv, up_to.min(last))
            .await?
            .ok_or(Error::Forbidden)?;
        if !mark.moved() {
            return Ok(());
        }
        // The watermark moved: from here on nothing fails the ack (a retry
        // would find it moved and tell no one), so failures are logged and
        // the receipt still goes out.
        let audience = match ConversationId::parse(&conv)? {
            ConversationId::Group(g) => {
                if let Err(e) = self.store.note_read(&g, user.as_str(), mark.after).await {
                    // The member's mark stays behind until its next ack.
                    tracing::warn!(error = %e, %conv, "cannot record the read mark");
                }
                match self.authors(session, &g, &conv, mark).await {
                    Ok(mut users) => {
                        crate::metrics::receipts("author", users.len());
                        users.push(user.to_string());
                        Audience::Users(users)
                    }
                    Err(e) => {
                        // Too many rather than none: every member.
                        tracing::warn!(error = %e, %conv, "cannot find the authors; telling every member");
                        Audience::Conversation(conv.clone())
                    }
                }
            }
            ConversationId::Direct(..) => {
                crate::metrics::receipts("direct", 1);
                Audience::Conversation(conv.clone())
            }
        };
        let job = FanoutJob {
            audience,
            frame: ServerFrame::Receipt {
                conversation_id: conv.clone(),
                user_id: user.to_string(),
                up_to: mark.after,
            },
            except_connection: Some(session.connection_id.clone()),
            order_key: conv,
        };
        self.dispatch(job, "receipt").await;
        Ok(())
    }

    /// The current members, other than the acker, who wrote a message
    /// with an id in `(before, after]`. Found from each member's newest
    /// message id ([`crate::ports::MemberMarks`]); only members whose
    /// newest message is past the ack need the range's messages read, and
    /// then [`AUTHOR_SCAN_LIMIT`] of them at most (the newest).
    async fn authors(
        &self,
        session: &Session,
        group_id: &str,
        conv: &str,
        mark: Watermark,
    ) -> Result<Vec<String>> {
        let me = session.user_id.as_str();
        let in_range = |id: u64| id > mark.before && id <= mark.after;
        let mut authors = BTreeSet::new();
        let mut later = BTreeSet::new();
        // Only current members have marks.
        for s in self.store.member_marks(group_id).await? {
            if s.user_id == me {
                continue;
            }
            if in_range(s.last_sent) {
                authors.insert(s.user_id);
            } else if s.last_sent > mark.after {
                later.insert(s.user_id);
            }
        }
        if !later.is_empty() {
            // The range itself, or its newest messages if it is longer
            // (read strongly consistent: the newest were just stored).
            let span = (mark.after - mark.before).min(AUTHOR_SCAN_LIMIT as u64);
            let messages = self
                .store
                .messages_after(conv, mark.after - span, span as usize)
                .await?;
            for m in messages.into_iter().filter(|m| in_range(m.message_id)) {
                if later.remove(&m.sender) {
                    authors.insert(m.sender);
                }
            }
        }
        Ok(authors.into_iter().collect())
    }

    /// `receipts`: every member's watermark in a conversation the caller
    /// is in: a group's from its members' marks (one read), a direct
    /// chat's from the two memberships.
    pub async fn receipts(&self, session: &Session, conversation_id: &str) -> Result<ServerFrame> {
        let conv = self
            .member_conversation(&session.user_id, conversation_id)
            .await?;
        let members = match ConversationId::parse(&conv)? {
            // Only current members have marks.
            ConversationId::Group(g) => self
                .store
                .member_marks(&g)
                .await?
                .into_iter()
                .map(|m| ReadMark {
                    user_id: m.user_id,
                    up_to: m.read_up_to,
                })
                .collect(),
            ConversationId::Direct(a, b) => {
                let mut users = vec![a.to_string()];
                if a != b {
                    users.push(b.to_string());
                }
                self.store.watermarks(&conv, &users).await?
            }
        };
        Ok(ServerFrame::Receipts {
            conversation_id: conv,
            members,
        })
    }
}
