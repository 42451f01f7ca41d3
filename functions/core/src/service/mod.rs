//! The services: what each client action does, written once against the
//! ports, and run unchanged by conn-tier and by the Lambda functions.
//!
//! # Layout
//! - this file: [`Chat`] (the services over their ports), [`Session`],
//!   [`Reply`], [`MessageDelivery`], frame dispatch and the checks several
//!   actions share;
//! - one file per action: `send`, `ack` (and `receipts`), `sync`, `received`, `history`,
//!   `conversations`, `groups` (createGroup, addMember, removeMember);
//! - `tests`: the services' rules over the in-memory store.

mod ack;
mod conversations;
#[cfg(test)]
mod devices_tests;
mod groups;
mod history;
mod received;
mod send;
mod sync;
#[cfg(test)]
mod test_support;
#[cfg(test)]
mod tests;

use crate::error::{Error, Result};
use crate::ids::{ConversationId, DeviceId, UserId};
use crate::ports::*;
use crate::protocol::{parse_client_frame, ClientFrame, ServerFrame};
use crate::time::now_ms;
use async_trait::async_trait;
use std::sync::Arc;

pub use groups::group_frame;
pub use send::Deferred;

/// An authenticated connection: who is speaking, on which connection,
/// from which device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub connection_id: String,
    pub user_id: UserId,
    /// The install the client named at connect (`?device=`, or the token's
    /// `device` claim): its delivery cursors say where `sync` starts.
    /// Without one, `sync` starts at the read watermark.
    pub device_id: Option<DeviceId>,
}

impl Session {
    /// A session without a device.
    pub fn new(connection_id: impl Into<String>, user_id: UserId) -> Self {
        Session {
            connection_id: connection_id.into(),
            user_id,
            device_id: None,
        }
    }

    pub fn with_device(mut self, device_id: Option<DeviceId>) -> Self {
        self.device_id = device_id;
        self
    }
}

/// Answers to the requesting connection itself (conn-tier: its own
/// outbound queue; Lambda: a post to the caller's connection).
#[async_trait]
pub trait Reply: Send + Sync {
    async fn send(&self, frame: ServerFrame) -> Result<(), PostError>;

    /// A `sync` starts: for each of the user's conversations, the watermark
    /// its replay starts above. A connection that keeps per-conversation
    /// order (conn-tier's socket) takes these as the point its gapless
    /// sequence continues from; others ignore it.
    async fn sync_started(&self, _baselines: Vec<(String, u64)>) {}
}

/// How message frames reach the members of a conversation. Chosen once,
/// when the services are built, to match the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageDelivery {
    /// The store's change feed delivers every durable message in commit
    /// order (the embedded store's commit feed, bridged by
    /// [`crate::delivery::feed`]; on AWS, the messages table's stream into
    /// the `fanout` function). The services only store, so concurrent sends
    /// to one conversation share group commits.
    StoreFeed,
    /// The store has no feed: each send appends and queues its delivery
    /// under a per-conversation lock, so delivery jobs are queued in id
    /// order.
    Dispatch,
}

/// Limits of the services' answers and quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatLimits {
    /// Largest answer frame (a `history` page, a `conversations` page; and
    /// what `sync` reads at once): 256 KB on conn-tier, 120 KB through API
    /// Gateway ([`ChatLimits::API_GATEWAY_ANSWER_BYTES`]).
    pub max_answer_bytes: usize,
    /// Groups a user may create per day.
    pub groups_per_day: u64,
}

impl ChatLimits {
    /// API Gateway posts at most 128 KB: answers stay under 120 KB.
    pub const API_GATEWAY_ANSWER_BYTES: usize = 120 * 1024;
}

impl Default for ChatLimits {
    fn default() -> Self {
        ChatLimits {
            max_answer_bytes: 256 * 1024,
            groups_per_day: 500,
        }
    }
}

/// The chat services over their ports.
pub struct Chat {
    store: Arc<dyn Store>,
    /// Group member lists, checked against the group's version
    /// (docs/design.md, "Group look-ups").
    members: crate::members::MemberCache,
    connections: Arc<dyn Connections>,
    /// Receipts and group frames always go here; message frames only with
    /// [`MessageDelivery::Dispatch`].
    fanout: Arc<dyn Fanout>,
    /// Serialises append-then-dispatch per conversation; `None` with
    /// [`MessageDelivery::StoreFeed`].
    order: Option<send::OrderLocks>,
    /// Whether connections keep their order through sync states in the
    /// connection map (the stateless functions) rather than in their socket
    /// (conn-tier). See [`Chat::with_sync_states`].
    sync_states: bool,
    limits: ChatLimits,
}

impl Chat {
    pub fn new(
        store: Arc<dyn Store>,
        connections: Arc<dyn Connections>,
        fanout: Arc<dyn Fanout>,
        messages: MessageDelivery,
    ) -> Self {
        let order = match messages {
            MessageDelivery::StoreFeed => None,
            MessageDelivery::Dispatch => Some(send::OrderLocks::new(1024)),
        };
        Chat {
            members: crate::members::MemberCache::new(store.clone()),
            store,
            connections,
            fanout,
            order,
            sync_states: false,
            limits: ChatLimits::default(),
        }
    }

    pub fn with_limits(mut self, limits: ChatLimits) -> Self {
        self.limits = limits;
        self
    }

    /// For the stateless functions: new connections start
    /// [`SyncState::Pending`], and `sync` goes live through the connection
    /// map's sync states, so the stream-fed fan-out (a [`crate::Deliverer`]
    /// built `with_sync_states`) never sends a live message before the
    /// replay below it (docs/design.md, "Order in Lambda mode").
    pub fn with_sync_states(mut self) -> Self {
        self.sync_states = true;
        self
    }

    /// Records a connection: where to post to it (`endpoint`), and the
    /// conn-tier node that holds it, if any.
    pub async fn connect(
        &self,
        session: &Session,
        endpoint: &str,
        node_id: Option<&str>,
    ) -> Result<()> {
        self.connections
            .register(&ConnectionRecord {
                connection_id: session.connection_id.clone(),
                user_id: session.user_id.to_string(),
                endpoint: endpoint.to_string(),
                node_id: node_id.map(str::to_string),
                connected_at_ms: now_ms(),
                device_id: session.device_id.as_ref().map(|d| d.to_string()),
                sync: if self.sync_states {
                    SyncState::Pending
                } else {
                    SyncState::Live
                },
                replayed: Default::default(),
            })
            .await
    }

    pub async fn disconnect(&self, connection_id: &str) -> Result<()> {
        self.connections.remove(connection_id).await
    }

    /// Parses one text frame, runs it and answers through `reply`.
    /// Failures become `error` frames; nothing here panics on client input.
    pub async fn handle_text(&self, session: &Session, text: &str, reply: &dyn Reply) {
        match parse_client_frame(text) {
            Err(e) => {
                let _ = reply.send(e.to_frame()).await;
            }
            Ok(frame) => self.handle(session, frame, reply).await,
        }
    }

    /// Runs one parsed frame; its answer (or `error` frame) goes through
    /// `reply`.
    pub async fn handle(&self, session: &Session, frame: ClientFrame, reply: &dyn Reply) {
        let action = frame.action();
        let client_msg_id = frame.client_msg_id().map(str::to_string);
        if let Err(e) = self.run(session, frame, reply).await {
            log_refusal(&e, action, &session.user_id);
            let _ = reply
                .send(ServerFrame::error(
                    &e,
                    Some(action),
                    client_msg_id.as_deref(),
                ))
                .await;
        }
    }

    async fn run(&self, session: &Session, frame: ClientFrame, reply: &dyn Reply) -> Result<()> {
        let answer = match frame {
            ClientFrame::Send {
                to,
                client_msg_id,
                text,
            } => self.send(session, &to, client_msg_id, text).await?,
            ClientFrame::Ack {
                conversation_id,
                up_to,
            } => {
                self.ack(session, &conversation_id, up_to).await?;
                return Ok(());
            }
            ClientFrame::Sync {} => return self.sync(session, reply).await,
            ClientFrame::Received {
                conversation_id,
                from,
                up_to,
                items,
            } => {
                let items = crate::protocol::received_runs(
                    conversation_id.as_deref(),
                    from,
                    up_to,
                    items.as_deref(),
                )?;
                self.received(session, &items).await?;
                return Ok(());
            }
            ClientFrame::History {
                conversation_id,
                before,
                limit,
            } => {
                self.history(session, &conversation_id, before, limit)
                    .await?
            }
            ClientFrame::Conversations { limit, cursor } => {
                self.conversations(session, limit, cursor.as_deref())
                    .await?
            }
            ClientFrame::Receipts { conversation_id } => {
                self.receipts(session, &conversation_id).await?
            }
            ClientFrame::CreateGroup { name, members } => {
                self.create_group(session, name, members).await?
            }
            ClientFrame::AddMember { group_id, user_id } => {
                self.add_member(session, &group_id, &user_id).await?
            }
            ClientFrame::RemoveMember { group_id, user_id } => {
                self.remove_member(session, &group_id, &user_id).await?
            }
            ClientFrame::Ping {} => ServerFrame::Pong {},
        };
        let _ = reply.send(answer).await;
        Ok(())
    }

    /// Queues a fan-out job. Delivery is best effort: the data is stored
    /// already, and members catch up with `sync`.
    async fn dispatch(&self, job: FanoutJob, what: &'static str) {
        let conversation = job.order_key.clone();
        if let Err(e) = self.fanout.dispatch(job).await {
            tracing::error!(error = %e, what, %conversation, "fan-out dispatch failed");
        }
    }

    async fn require_member(&self, user: &UserId, conv: &str) -> Result<Membership> {
        self.store
            .membership(user.as_str(), conv)
            .await?
            .ok_or(Error::Forbidden)
    }

    /// Parses a client's conversation id and checks membership: anything
    /// the user is not in is `forbidden`, existing or not.
    async fn member_conversation(&self, user: &UserId, conversation_id: &str) -> Result<String> {
        let conv = ConversationId::parse(conversation_id)?.to_string();
        self.require_member(user, &conv).await?;
        Ok(conv)
    }
}

/// One log line per refused or failed action: internal failures at error
/// level, the client's mistakes at debug.
fn log_refusal(e: &Error, action: &str, user: &UserId) {
    if e.is_internal() {
        tracing::error!(error = %e, action, %user, "action failed");
    } else {
        tracing::debug!(code = e.code(), action, %user, "action refused");
    }
}
