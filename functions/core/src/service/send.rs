//! `send`: validate, authorise, store (durably, idempotently), answer with
//! the `ack`; delivery to the members never holds the ack back.

use super::{log_refusal, Chat, Session};
use crate::delivery::{feed, shard_of};
use crate::error::{Error, Result};
use crate::ids::{ConversationId, Recipient};
use crate::ports::*;
use crate::protocol::ServerFrame;
use crate::time::now_ms;
use futures_util::future::BoxFuture;
use tokio::sync::Mutex;

/// An answer still to come: resolves to the frame for the sender (its
/// `ack`, or an `error`) once the message is durable. A connection awaits
/// these in frame order.
pub type Deferred = BoxFuture<'static, ServerFrame>;

/// A resent `client_msg_id` whose original is at most this old (5 minutes)
/// is delivered again: a client resends after a lost connection, and the
/// first attempt's fan-out may have died with its node. Older originals
/// reached everyone live or are replayed by their next `sync`.
const RESEND_REDELIVERY_MS: u64 = 5 * 60 * 1000;

/// Serialises append-and-dispatch per conversation, so fan-out jobs are
/// queued in id order ([`super::MessageDelivery::Dispatch`]). Striped: a fixed set
/// of locks, no per-conversation state to clean up.
pub(super) struct OrderLocks {
    stripes: Vec<Mutex<()>>,
}

impl OrderLocks {
    pub(super) fn new(n: usize) -> Self {
        OrderLocks {
            stripes: (0..n).map(|_| Mutex::new(())).collect(),
        }
    }

    async fn lock(&self, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.stripes[shard_of(key, self.stripes.len())].lock().await
    }
}

impl Chat {
    /// Stores a message and returns the sender's `ack`.
    pub async fn send(
        &self,
        session: &Session,
        to: &str,
        client_msg_id: String,
        text: String,
    ) -> Result<ServerFrame> {
        let started = std::time::Instant::now();
        let answer = async {
            self.send_queued(session, to, client_msg_id, text)
                .await?
                .await
        };
        let answer = answer.await;
        crate::metrics::send_ack(started.elapsed());
        answer
    }

    /// A `send` for a connection that pipelines: this future validates,
    /// authorises and queues the append (so a connection's messages keep
    /// their frame order); the [`Deferred`] it returns resolves to the
    /// `ack`, or to the `error` frame, once the outcome is known. Many sends
    /// of one connection can so wait for one group commit.
    pub async fn send_pipelined(
        &self,
        session: &Session,
        to: &str,
        client_msg_id: String,
        text: String,
    ) -> Deferred {
        let started = std::time::Instant::now();
        let user = session.user_id.clone();
        let id = client_msg_id.clone();
        let fail = move |e: Error| {
            log_refusal(&e, "send", &user);
            ServerFrame::error(&e, Some("send"), Some(&id))
        };
        match self.send_queued(session, to, client_msg_id, text).await {
            Err(e) => {
                let frame = fail(e);
                crate::metrics::send_ack(started.elapsed());
                Box::pin(std::future::ready(frame))
            }
            Ok(pending) => Box::pin(async move {
                let frame = pending.await.unwrap_or_else(fail);
                crate::metrics::send_ack(started.elapsed());
                frame
            }),
        }
    }

    /// Validates, authorises and queues the append; the returned future
    /// resolves to the `ack` once the message is durable.
    async fn send_queued(
        &self,
        session: &Session,
        to: &str,
        client_msg_id: String,
        text: String,
    ) -> Result<BoxFuture<'static, Result<ServerFrame>>> {
        let sender = &session.user_id;
        let (conversation, enroll, member_only) = match Recipient::parse(to)? {
            Recipient::User(u) => {
                let enroll = if &u == sender {
                    vec![]
                } else {
                    vec![u.to_string()]
                };
                (ConversationId::direct(sender, &u), enroll, false)
            }
            Recipient::Group(g) => {
                let conv = ConversationId::group(&g);
                // Checked here for a quick answer, and again by the store
                // inside the write (a removal may land in between).
                self.require_member(sender, &conv.to_string()).await?;
                (conv, vec![], true)
            }
        };
        let conv = conversation.to_string();
        let text_sent = text.clone();
        let msg = NewMessage {
            conversation_id: conv.clone(),
            sender: sender.to_string(),
            client_msg_id: client_msg_id.clone(),
            text,
            sent_at_ms: now_ms(),
            enroll,
            origin: Some(session.connection_id.clone()),
            member_only,
        };
        // The ack; for a resent client_msg_id, the original's, unless it
        // named another recipient or text.
        let ack = move |a: &Appended| -> Result<ServerFrame> {
            if a.duplicate && (a.message.conversation_id != conv || a.message.text != text_sent) {
                return Err(Error::IdReused(client_msg_id.clone()));
            }
            if !a.duplicate {
                crate::metrics::message_stored();
            }
            Ok(ServerFrame::Ack {
                client_msg_id,
                conversation_id: a.message.conversation_id.clone(),
                message_id: a.message.message_id,
                sent_at: crate::time::format_ms(a.message.sent_at_ms),
            })
        };
        let conv = msg.conversation_id.clone();
        let Some(locks) = &self.order else {
            // MessageDelivery::StoreFeed: the feed delivers it once durable.
            let pending = self.store.append_queued(msg).await?;
            return Ok(Box::pin(async move { ack(&pending.await?) }));
        };
        // MessageDelivery::Dispatch: append and queue the delivery under
        // the conversation's lock, so delivery jobs are queued in id order.
        let frame = {
            let _order = locks.lock(&conv).await;
            let appended = self.store.append(msg).await?;
            let frame = ack(&appended);
            // The same job the commit feed makes: the stored message keeps
            // its origin (this connection), which gets the ack. A recent
            // resend (a duplicate) is delivered again too: the first
            // attempt's node may have died after storing it and before its
            // fan-out (members de-duplicate; the resending connection gets
            // the ack). A resend that reuses the id for another message
            // delivers nothing.
            let resend_redelivers = frame.is_ok()
                && now_ms().saturating_sub(appended.message.sent_at_ms) <= RESEND_REDELIVERY_MS;
            if !appended.duplicate || resend_redelivers {
                let mut m = appended.message;
                if appended.duplicate {
                    m.origin = Some(session.connection_id.clone());
                }
                self.dispatch(feed::job(m), "message").await;
            }
            frame
        };
        Ok(Box::pin(std::future::ready(frame)))
    }
}
