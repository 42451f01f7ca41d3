//! The ports: small `Send + Sync` traits the services need, implemented by
//! the in-memory adapter ([`crate::memory`]), the embedded store
//! (`conn-tier/embedded`) and DynamoDB / API Gateway (`functions/dynamo`).
//!
//! Keys follow docs/design.md ("Data model") so every adapter behaves alike: messages by
//! (conversation_id, message_id); users by (user_id, conversation);
//! groups by (group_id, member); connections by connection_id with a
//! user_id index.

use crate::error::Result;
use crate::protocol::{MessageView, ReadMark, ServerFrame};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

mod broadcast;
mod devices;
mod groups;
pub use broadcast::*;
pub use devices::*;
pub use groups::*;

/// Table names' prefix when none is configured (`<prefix>messages`, …).
pub const DEFAULT_TABLE_PREFIX: &str = "chat-";

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub conversation_id: String,
    pub message_id: u64,
    pub sender: String,
    /// Kept so a resend can be recognised, and for audits.
    pub client_msg_id: String,
    pub text: String,
    /// Milliseconds since the Unix epoch, set by the server.
    pub sent_at_ms: u64,
    /// The connection that sent it (it got the `ack`, not the message).
    /// Kept so delivery skips it, and so a connection filling a gap in its
    /// sequence knows which ids it holds as acks. Never shown to clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl StoredMessage {
    /// The message as clients see it.
    pub fn view(&self) -> MessageView {
        MessageView {
            conversation_id: self.conversation_id.clone(),
            message_id: self.message_id,
            from: self.sender.clone(),
            text: self.text.clone(),
            sent_at: crate::time::format_ms(self.sent_at_ms),
        }
    }
}

/// A message to append. The store allocates `message_id`.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub conversation_id: String,
    pub sender: String,
    pub client_msg_id: String,
    pub text: String,
    pub sent_at_ms: u64,
    /// Users who must have a membership row afterwards (the recipient of a
    /// first direct message), created with watermark 0 if missing.
    pub enroll: Vec<String>,
    /// The sending connection. A store that feeds fan-out from its change
    /// stream (DynamoDB) keeps it, so that connection gets the `ack` only.
    pub origin: Option<String>,
    /// A group message: the sender must be a member when the message is
    /// written, checked in the same atomic write, and the write never
    /// creates a membership (a member removed while sending stays removed).
    /// The same write makes it the sender's newest message in the group
    /// ([`MemberMarks`]), unless a newer one is there already.
    pub member_only: bool,
}

/// The outcome of an append: the stored message, or, for a resent
/// `(sender, client_msg_id)`, the original one and `duplicate = true`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    pub message: StoredMessage,
    pub duplicate: bool,
}

/// One user's row for one conversation (users table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    pub conversation_id: String,
    /// Highest message id the user has read (`ack`): unread counts and
    /// receipts; where `sync` starts for a device never seen.
    pub acked_up_to: u64,
    pub joined_at_ms: u64,
    /// The conversation's newest id when the user joined (0 for a direct
    /// conversation and a group's first members): `sync` never replays
    /// below it. Rows written before it existed read 0.
    #[serde(default)]
    pub joined_at_id: u64,
}

/// A membership with the conversation's newest id, for `sync` and `conversations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConversationState {
    pub membership: Membership,
    pub last_message_id: u64,
}

/// One page of history, ascending by id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryPage {
    pub messages: Vec<StoredMessage>,
    /// Whether messages older than the first one returned exist.
    pub has_more: bool,
}

/// Messages: appending them (ids, idempotency) and reading them back.
#[async_trait]
pub trait MessageStore: Send + Sync {
    /// Durably appends a message with the next id of its conversation,
    /// records `(sender, client_msg_id)` for idempotency, moves the sender's
    /// watermark to the new id and enrolls `enroll`. Returns only once the
    /// message is durable. A message with a higher id is never visible
    /// before a lower one.
    async fn append(&self, msg: NewMessage) -> Result<Appended>;

    /// Queues an append in call order and returns a future that resolves
    /// once it is durable (as [`MessageStore::append`] would). A store
    /// with group commit overrides it so one caller can have several
    /// appends waiting for the same fsync; the default appends at once.
    async fn append_queued(
        &self,
        msg: NewMessage,
    ) -> Result<futures_util::future::BoxFuture<'static, Result<Appended>>> {
        let done = self.append(msg).await;
        Ok(Box::pin(std::future::ready(done)))
    }

    /// Up to `limit` messages with ids above `after`, ascending.
    async fn messages_after(
        &self,
        conversation_id: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>>;

    /// Up to `limit` messages below `before` (or the newest), ascending.
    async fn messages_before(
        &self,
        conversation_id: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage>;

    async fn last_message_id(&self, conversation_id: &str) -> Result<u64>;
}

/// The users table's rows: a user's conversations and read watermarks.
#[async_trait]
pub trait MembershipStore: Send + Sync {
    async fn membership(&self, user_id: &str, conversation_id: &str) -> Result<Option<Membership>>;

    /// Every conversation the user is in, with its newest id.
    async fn conversations(&self, user_id: &str) -> Result<Vec<ConversationState>>;

    /// Up to `limit` of the user's conversations with ids after `after`,
    /// ordered by conversation id, and whether more follow.
    async fn conversations_page(
        &self,
        user_id: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ConversationState>, bool)>;

    /// Moves the watermark forward to `up_to`, never back, atomically.
    /// Returns the watermark before and after (equal when it did not
    /// move); `None` if not a member. Two calls never both move it over
    /// the same ids, so each move is told (receipts) once.
    async fn advance_watermark(
        &self,
        user_id: &str,
        conversation_id: &str,
        up_to: u64,
    ) -> Result<Option<Watermark>>;

    /// The watermarks of `users` in the conversation (for `receipts`);
    /// users without a membership are left out. A store may override it
    /// to read them in one batch.
    async fn watermarks(&self, conversation_id: &str, users: &[String]) -> Result<Vec<ReadMark>> {
        use futures_util::{stream, StreamExt, TryStreamExt};
        let marks: Vec<Option<ReadMark>> = stream::iter(users.iter().cloned())
            .map(|u| async move {
                Ok::<_, crate::Error>(self.membership(&u, conversation_id).await?.map(|m| {
                    ReadMark {
                        user_id: u,
                        up_to: m.acked_up_to,
                    }
                }))
            })
            .buffered(16)
            .try_collect()
            .await?;
        Ok(marks.into_iter().flatten().collect())
    }
}

/// A watermark's move: where it was and where it is (equal if it stayed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watermark {
    pub before: u64,
    pub after: u64,
}

impl Watermark {
    pub fn moved(&self) -> bool {
        self.after > self.before
    }
}

/// Per-user counters (groups created a day).
#[async_trait]
pub trait QuotaStore: Send + Sync {
    /// Takes one unit of the counter `key` of `user_id` if it is below
    /// `limit` (atomically); false when the quota is used up. The counter
    /// may be forgotten after `expires_at_secs`.
    async fn take_quota(
        &self,
        user_id: &str,
        key: &str,
        limit: u64,
        expires_at_secs: u64,
    ) -> Result<bool>;
}

/// Whether a store can take writes now, for readiness and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    pub writable: bool,
    /// Why not, when it cannot.
    pub problem: Option<String>,
    /// Free bytes on the store's disk, for a store on one.
    pub free_bytes: Option<u64>,
}

/// A store's own view of its health. A store that cannot tell (a remote
/// one: readiness probes it with a read instead) keeps the default.
pub trait Health: Send + Sync {
    fn health(&self) -> StoreHealth {
        StoreHealth {
            writable: true,
            problem: None,
            free_bytes: None,
        }
    }
}

/// Messages, users, groups, quotas and devices: everything the services
/// keep. One trait per entity (each adapter implements them in that
/// entity's module); a store is any type that implements them all.
pub trait Store:
    MessageStore + MembershipStore + GroupStore + QuotaStore + DeviceStore + Health
{
}

impl<T> Store for T where
    T: MessageStore + MembershipStore + GroupStore + QuotaStore + DeviceStore + Health + ?Sized
{
}

/// Where a connection lives, so anyone can post to it.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ConnectionRecord {
    pub connection_id: String,
    pub user_id: String,
    /// Where to post to it: the API Gateway callback URL, or the
    /// `@connections` URL of the conn-tier node that holds it (its node id
    /// when the node has no management API).
    pub endpoint: String,
    /// The conn-tier node that holds it (`None` on API Gateway). A record
    /// with a node lives as long as the node does (the node registry's
    /// janitors delete a dead node's records); one without expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    pub connected_at_ms: u64,
    /// The device the client named at connect, if any: the stateless
    /// functions read it back for the connection's later frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Where the connection is in its first `sync`, for the stateless
    /// functions' fan-out (docs/design.md, "Order in Lambda mode");
    /// conn-tier keeps order in its sockets and records `Live`.
    #[serde(default)]
    pub sync: SyncState,
    /// Per conversation, the newest id its last `sync` replayed: the
    /// fan-out skips those ids (the connection has them already).
    #[serde(default)]
    pub replayed: std::collections::BTreeMap<String, u64>,
}

/// A connection's place in its sync, as the stateless fan-out sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SyncState {
    /// Just connected: live messages wait (they are skipped, and the first
    /// `sync` replays them) unless no sync starts within the grace period.
    Pending,
    /// A `sync` is replaying: live messages are skipped and noted, and the
    /// sync replays them before it goes live.
    Syncing,
    /// Live messages are posted.
    #[default]
    Live,
}

/// How a `sync` may go live: atomically, only if no live message was
/// skipped since the sync last looked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GoLive {
    /// The connection is live, with the replay marks given.
    Done,
    /// `skips` live messages were skipped so far, in these conversations:
    /// replay them, then try again with `seen = skips`.
    Skipped {
        conversations: Vec<String>,
        skips: u64,
    },
}

/// The connection map.
#[async_trait]
pub trait Connections: Send + Sync {
    async fn register(&self, rec: &ConnectionRecord) -> Result<()>;
    async fn remove(&self, connection_id: &str) -> Result<()>;
    async fn get(&self, connection_id: &str) -> Result<Option<ConnectionRecord>>;
    /// The user's connections (an index lookup, never a scan).
    async fn for_user(&self, user_id: &str) -> Result<Vec<ConnectionRecord>>;

    /// A `sync` starts on the connection: [`SyncState::Syncing`], no
    /// skipped conversations noted. False if the connection is gone.
    async fn begin_sync(&self, connection_id: &str) -> Result<bool>;

    /// The fan-out skipped a live message of `conversation` because the
    /// connection is syncing: noted, so the sync replays it before it goes
    /// live. Nothing happens unless the connection is syncing.
    async fn note_skipped(&self, connection_id: &str, conversation: &str) -> Result<()>;

    /// Goes live with `replayed` as the replay marks, atomically, if
    /// exactly `seen` skips were noted since `begin_sync` (0 at first);
    /// otherwise answers how many, and in which conversations.
    async fn go_live(
        &self,
        connection_id: &str,
        replayed: &std::collections::BTreeMap<String, u64>,
        seen: u64,
    ) -> Result<GoLive>;
}

/// A conn-tier node of a cluster, as the node registry holds it
/// (docs/design.md, "Cluster").
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeRecord {
    /// Fresh at every process start: a restarted node never inherits the
    /// records of its previous life.
    pub node_id: String,
    /// Its `@connections` API, where other nodes post to its connections.
    pub management_url: String,
    /// Where clients reach it (or the load balancer in front of it).
    pub ws_url: String,
    pub started_at_ms: u64,
    pub heartbeat_at_ms: u64,
    /// Shutting down: still delivering, not taking new clients.
    pub draining: bool,
    /// Declared dead by a janitor: its records are being deleted, and it
    /// may not heartbeat again.
    pub dead: bool,
}

/// The node registry of a conn-tier cluster: nodes heartbeat, janitors
/// declare silent ones dead and delete what they held.
#[async_trait]
pub trait Nodes: Send + Sync {
    /// Registers a new node (its id must be fresh).
    async fn join(&self, node: &NodeRecord) -> Result<()>;
    /// Records a heartbeat; false if the node was declared dead or is no
    /// longer registered (then it must close its sockets and rejoin).
    async fn heartbeat(&self, node_id: &str, at_ms: u64, draining: bool) -> Result<bool>;
    /// Every registered node, live or dead.
    async fn nodes(&self) -> Result<Vec<NodeRecord>>;
    /// Declares a node dead, unless it heartbeat since `seen_heartbeat_ms`
    /// (or is dead already); true if this call declared it.
    async fn declare_dead(&self, node_id: &str, seen_heartbeat_ms: u64) -> Result<bool>;
    /// The ids of the connections a node holds (an index query).
    async fn connections_of(&self, node_id: &str) -> Result<Vec<String>>;
    /// Removes a node from the registry.
    async fn forget(&self, node_id: &str) -> Result<()>;
}

/// Why a post failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PostError {
    /// The connection is gone (HTTP 410): prune it.
    Gone,
    /// Anything else; the post is dropped, the member catches up with `sync`.
    Failed(String),
}

/// Where a `message` frame sits in its conversation, so a connection can
/// keep a conversation's messages in id order and fill gaps from the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Seq {
    pub conversation_id: String,
    pub message_id: u64,
}

/// A frame on its way to connections: its JSON, serialised once and shared
/// by every post of a fan-out (cloning it copies no bytes).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outgoing {
    pub json: bytes::Bytes,
    /// Set for a `message` frame.
    pub seq: Option<Seq>,
}

impl Outgoing {
    pub fn new(frame: &ServerFrame) -> Self {
        let seq = match frame {
            ServerFrame::Message(m) => Some(Seq {
                conversation_id: m.conversation_id.clone(),
                message_id: m.message_id,
            }),
            _ => None,
        };
        Outgoing {
            json: bytes::Bytes::from(frame.to_json()),
            seq,
        }
    }

    /// The JSON as text (it was made from a `String`).
    /// A frame already serialised (posts through the `@connections` API).
    pub fn raw(json: &str) -> Self {
        Outgoing {
            json: bytes::Bytes::copy_from_slice(json.as_bytes()),
            seq: None,
        }
    }

    pub fn text(&self) -> &str {
        std::str::from_utf8(&self.json).unwrap_or("")
    }
}

/// Posts a frame to one connection.
#[async_trait]
pub trait Delivery: Send + Sync {
    async fn post(&self, connection: &ConnectionRecord, frame: &Outgoing) -> Result<(), PostError>;
}

/// Who a fan-out job reaches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Audience {
    /// Every member of the conversation, resolved when the job runs.
    Conversation(String),
    /// These users.
    Users(Vec<String>),
}

/// A frame to deliver to every connection of an audience.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FanoutJob {
    pub audience: Audience,
    pub frame: ServerFrame,
    /// The connection that caused it and already got its own answer.
    pub except_connection: Option<String>,
    /// Jobs with the same key run in order (the conversation id).
    pub order_key: String,
}

/// Runs fan-out jobs outside the request path: a background task in
/// conn-tier, an async invoke of the `fanout` function on AWS.
#[async_trait]
pub trait Fanout: Send + Sync {
    /// Queues a job. Jobs with the same `order_key` run in queue order.
    async fn dispatch(&self, job: FanoutJob) -> Result<()>;
}
