//! The services: what each client action does, written once against the
//! ports, and run unchanged by conn-tier and by the Lambda functions.

use crate::error::{Error, Result};
use crate::ids::{parse_group_id, ConversationId, Recipient, UserId};
use crate::ports::*;
use crate::protocol::*;
use async_trait::async_trait;
use futures_util::{stream, StreamExt};
use std::sync::Arc;
use tokio::sync::Mutex;

/// An authenticated connection: who is speaking, on which connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub connection_id: String,
    pub user_id: UserId,
}

/// The `ack` of a queued send, resolved once the message is durable.
pub type PendingAck = futures_util::future::BoxFuture<'static, Result<ServerFrame>>;

/// An answer still to come, to be awaited in order with the connection's others.
pub type Deferred = futures_util::future::BoxFuture<'static, ()>;

/// Answers to the requesting connection itself (conn-tier: its own
/// outbound queue; Lambda: a post to the caller's connection).
#[async_trait]
pub trait Reply: Send + Sync {
    async fn send(&self, frame: ServerFrame) -> Result<(), PostError>;
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `2026-11-29T10:00:00.123Z`
pub fn format_ms(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

pub fn message_view(m: &StoredMessage) -> MessageView {
    MessageView {
        conversation_id: m.conversation_id.clone(),
        message_id: m.message_id,
        from: m.sender.clone(),
        text: m.text.clone(),
        sent_at: format_ms(m.sent_at_ms),
    }
}

/// The group's state as the `group` frame shows it.
pub fn group_frame(g: &Group) -> ServerFrame {
    ServerFrame::Group {
        group_id: g.group_id.clone(),
        name: g.name.clone(),
        members: g.member_ids(),
        admins: g.admins.clone(),
    }
}

/// Applies a [`GroupChange`] to a group read at `change.expected_version`.
/// Adapters call this so the rule lives in one place.
pub fn apply_group_change(mut g: Group, change: &GroupChange) -> Group {
    g.members.retain(|m| !change.remove.contains(&m.user_id));
    for (m, _) in &change.add {
        if !g.is_member(&m.user_id) {
            g.next_seq = g.next_seq.max(m.seq + 1);
            g.members.push(m.clone());
        }
    }
    g.members.sort_by_key(|m| m.seq);
    g.admins = change.admins.clone();
    g.version += 1;
    g
}

/// Serialises append-and-dispatch per conversation, so fan-out jobs are
/// queued in id order. Striped: a fixed set of locks, no per-conversation
/// state to clean up; two conversations rarely share a stripe.
struct OrderLocks {
    stripes: Vec<Mutex<()>>,
}

impl OrderLocks {
    fn new(n: usize) -> Self {
        OrderLocks {
            stripes: (0..n).map(|_| Mutex::new(())).collect(),
        }
    }
    async fn lock(&self, key: &str) -> tokio::sync::MutexGuard<'_, ()> {
        self.stripes[(fnv1a(key) % self.stripes.len() as u64) as usize]
            .lock()
            .await
    }
}

/// FNV-1a: a stable, dependency-free hash for sharding.
pub fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// How many times a group change is retried after losing a race.
const GROUP_RETRIES: usize = 8;
/// Page size when `sync` reads a conversation's backlog.
const SYNC_PAGE: usize = 200;

/// The chat services over their ports.
pub struct Chat {
    store: Arc<dyn Store>,
    connections: Arc<dyn Connections>,
    fanout: Arc<dyn Fanout>,
    /// Serialises append-then-dispatch per conversation; `None` when a store
    /// feed delivers messages in commit order instead.
    order: Option<OrderLocks>,
}

impl Chat {
    pub fn new(
        store: Arc<dyn Store>,
        connections: Arc<dyn Connections>,
        fanout: Arc<dyn Fanout>,
    ) -> Self {
        Chat {
            store,
            connections,
            fanout,
            order: Some(OrderLocks::new(1024)),
        }
    }

    /// For a store whose change feed delivers messages in commit order
    /// (see [`crate::fanout::FeedFedFanout`]): appends to one conversation
    /// then run concurrently and share group commits.
    pub fn delivered_by_store_feed(mut self) -> Self {
        self.order = None;
        self
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Records a new authenticated connection.
    pub async fn connect(&self, session: &Session, endpoint: &str) -> Result<()> {
        self.connections
            .register(&ConnectionRecord {
                connection_id: session.connection_id.clone(),
                user_id: session.user_id.to_string(),
                endpoint: endpoint.to_string(),
                connected_at_ms: now_ms(),
            })
            .await
    }

    pub async fn disconnect(&self, connection_id: &str) -> Result<()> {
        self.connections.remove(connection_id).await
    }

    /// Handles one text frame: parses it, runs the action, and answers the
    /// caller through `reply`. Failures become `error` frames; nothing here
    /// panics on client input.
    pub async fn handle_text(&self, session: &Session, text: &str, reply: &dyn Reply) {
        match parse_client_frame(text) {
            Err(e) => {
                let _ = reply.send(e.to_frame()).await;
            }
            Ok(frame) => self.handle(session, frame, reply).await,
        }
    }

    /// As [`Chat::handle_text`], except that a `send` answers later: the
    /// returned future posts its `ack` (or error) once the message is
    /// durable. Await the futures in order, and the answers keep the order
    /// of the frames; meanwhile the next frames can be read.
    pub async fn handle_text_pipelined(
        &self,
        session: &Session,
        text: &str,
        reply: Arc<dyn Reply>,
    ) -> Option<Deferred> {
        let frame = match parse_client_frame(text) {
            Err(e) => {
                let _ = reply.send(e.to_frame()).await;
                return None;
            }
            Ok(frame) => frame,
        };
        let ClientFrame::Send {
            to,
            client_msg_id,
            text,
        } = frame
        else {
            self.handle(session, frame, reply.as_ref()).await;
            return None;
        };
        let id = client_msg_id.clone();
        let user = session.user_id.clone();
        let fail = move |e: Error| {
            if e.is_internal() {
                tracing::error!(error = %e, action = "send", %user, "action failed");
            }
            e.to_frame(Some("send"), Some(&id))
        };
        match self
            .send_queued(session, &to, client_msg_id.clone(), text)
            .await
        {
            Err(e) => {
                let _ = reply.send(fail(e)).await;
                None
            }
            Ok(pending) => Some(Box::pin(async move {
                let frame = match pending.await {
                    Ok(ack) => ack,
                    Err(e) => fail(e),
                };
                let _ = reply.send(frame).await;
            })),
        }
    }

    /// Runs one parsed frame.
    pub async fn handle(&self, session: &Session, frame: ClientFrame, reply: &dyn Reply) {
        let action = frame.action();
        let client_msg_id = frame.client_msg_id().map(str::to_string);
        if let Err(e) = self.run(session, frame, reply).await {
            if e.is_internal() {
                tracing::error!(error = %e, action, user = %session.user_id, "action failed");
            } else {
                tracing::debug!(code = e.code(), action, user = %session.user_id, "action refused");
            }
            let _ = reply
                .send(e.to_frame(Some(action), client_msg_id.as_deref()))
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
            ClientFrame::History {
                conversation_id,
                before,
                limit,
            } => {
                self.history(session, &conversation_id, before, limit)
                    .await?
            }
            ClientFrame::Conversations {} => self.conversations(session).await?,
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

    /// Stores a message and returns the sender's `ack`; delivery to the
    /// members is queued (in id order) and never holds the ack back.
    pub async fn send(
        &self,
        session: &Session,
        to: &str,
        client_msg_id: String,
        text: String,
    ) -> Result<ServerFrame> {
        self.send_queued(session, to, client_msg_id, text)
            .await?
            .await
    }

    /// As [`Chat::send`] in two steps: this future validates, authorises and
    /// queues the append (so a connection's messages keep their order); the
    /// future it returns resolves to the `ack` once the message is durable.
    /// A connection can so have many sends waiting for one group commit.
    pub async fn send_queued(
        &self,
        session: &Session,
        to: &str,
        client_msg_id: String,
        text: String,
    ) -> Result<PendingAck> {
        let sender = &session.user_id;
        let (conversation, enroll) = match Recipient::parse(to)? {
            Recipient::User(u) => {
                let enroll = if &u == sender {
                    vec![]
                } else {
                    vec![u.to_string()]
                };
                (ConversationId::direct(sender, &u), enroll)
            }
            Recipient::Group(g) => {
                let conv = ConversationId::group(&g);
                self.require_member(sender, &conv.to_string()).await?;
                (conv, vec![])
            }
        };
        let conv = conversation.to_string();
        let msg = NewMessage {
            conversation_id: conv.clone(),
            sender: sender.to_string(),
            client_msg_id: client_msg_id.clone(),
            text,
            sent_at_ms: now_ms(),
            enroll,
            origin: Some(session.connection_id.clone()),
        };
        let ack = move |a: &Appended| ServerFrame::Ack {
            client_msg_id,
            conversation_id: a.message.conversation_id.clone(),
            message_id: a.message.message_id,
            sent_at: format_ms(a.message.sent_at_ms),
        };
        let Some(locks) = &self.order else {
            // A store feed delivers the message once it is durable.
            let pending = self.store.append_queued(msg).await?;
            return Ok(Box::pin(async move { pending.await.map(|a| ack(&a)) }));
        };
        // No feed: append and queue the delivery under the conversation's
        // lock, so delivery jobs are queued in id order.
        let appended = {
            let _order = locks.lock(&conv).await;
            let appended = self.store.append(msg).await?;
            if !appended.duplicate {
                let job = FanoutJob {
                    audience: Audience::Conversation(conv.clone()),
                    frame: ServerFrame::Message(message_view(&appended.message)),
                    except_connection: Some(session.connection_id.clone()),
                    order_key: conv.clone(),
                };
                if let Err(e) = self.fanout.dispatch(job).await {
                    // Stored and acked regardless; members catch up with sync.
                    tracing::error!(error = %e, conversation = %conv, "fan-out dispatch failed");
                }
            }
            appended
        };
        let frame = ack(&appended);
        Ok(Box::pin(std::future::ready(Ok(frame))))
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
            if let Err(e) = self.fanout.dispatch(job).await {
                tracing::warn!(error = %e, "receipt dispatch failed");
            }
        }
        Ok(())
    }

    /// Sends every message above the user's watermarks, conversation by
    /// conversation in id order, then `synced`.
    pub async fn sync(&self, session: &Session, reply: &dyn Reply) -> Result<()> {
        for state in self.store.conversations(session.user_id.as_str()).await? {
            let conv = &state.membership.conversation_id;
            let mut cursor = state.membership.acked_up_to;
            while cursor < state.last_message_id {
                let page = self.store.messages_after(conv, cursor, SYNC_PAGE).await?;
                let Some(last) = page.last() else { break };
                cursor = last.message_id;
                for m in &page {
                    if reply
                        .send(ServerFrame::Message(message_view(m)))
                        .await
                        .is_err()
                    {
                        return Ok(()); // the caller is gone
                    }
                }
            }
        }
        let _ = reply.send(ServerFrame::Synced {}).await;
        Ok(())
    }

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
            messages: page.messages.iter().map(message_view).collect(),
            has_more: page.has_more,
        })
    }

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

    pub async fn create_group(
        &self,
        session: &Session,
        name: String,
        members: Vec<String>,
    ) -> Result<ServerFrame> {
        let creator = session.user_id.to_string();
        let mut ids = vec![creator.clone()];
        for m in &members {
            let u = UserId::parse(m)?.to_string();
            if !ids.contains(&u) {
                ids.push(u);
            }
        }
        if ids.len() > MAX_GROUP_MEMBERS {
            return Err(Error::GroupFull {
                limit: MAX_GROUP_MEMBERS,
            });
        }
        let now = now_ms();
        let group = Group {
            group_id: crate::ids::new_group_id(),
            name: name.trim().to_string(),
            created_by: creator.clone(),
            created_at_ms: now,
            admins: vec![creator],
            members: ids
                .iter()
                .enumerate()
                .map(|(i, u)| GroupMember {
                    user_id: u.clone(),
                    joined_at_ms: now,
                    seq: i as u64,
                })
                .collect(),
            version: 1,
            next_seq: ids.len() as u64,
        };
        self.store.create_group(&group).await?;
        tracing::info!(group = %group.group_id, members = ids.len(), "group created");
        self.announce(session, &group, &[]).await;
        Ok(group_frame(&group))
    }

    /// Reads a group the requester belongs to; anything else is `forbidden`.
    async fn group_of_member(&self, session: &Session, group_id: &str) -> Result<Group> {
        let gid = parse_group_id(group_id)?;
        match self.store.group(&gid).await? {
            Some(g) if g.is_member(session.user_id.as_str()) => Ok(g),
            _ => Err(Error::Forbidden),
        }
    }

    pub async fn add_member(
        &self,
        session: &Session,
        group_id: &str,
        user_id: &str,
    ) -> Result<ServerFrame> {
        let target = UserId::parse(user_id)?.to_string();
        for _ in 0..GROUP_RETRIES {
            let group = self.group_of_member(session, group_id).await?;
            if !group.is_admin(session.user_id.as_str()) {
                return Err(Error::Forbidden);
            }
            if group.is_member(&target) {
                return Ok(group_frame(&group));
            }
            if group.members.len() >= MAX_GROUP_MEMBERS {
                return Err(Error::GroupFull {
                    limit: MAX_GROUP_MEMBERS,
                });
            }
            let conv = ConversationId::group(&group.group_id).to_string();
            let watermark = self.store.last_message_id(&conv).await?;
            let change = GroupChange {
                group_id: group.group_id.clone(),
                expected_version: group.version,
                admins: group.admins.clone(),
                add: vec![(
                    GroupMember {
                        user_id: target.clone(),
                        joined_at_ms: now_ms(),
                        seq: group.next_seq,
                    },
                    watermark,
                )],
                remove: vec![],
            };
            match self.store.update_group(&change).await {
                Ok(updated) => {
                    self.announce(session, &updated, &[]).await;
                    return Ok(group_frame(&updated));
                }
                Err(Error::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict)
    }

    pub async fn remove_member(
        &self,
        session: &Session,
        group_id: &str,
        user_id: &str,
    ) -> Result<ServerFrame> {
        let target = UserId::parse(user_id)?.to_string();
        let me = session.user_id.as_str();
        for _ in 0..GROUP_RETRIES {
            let group = self.group_of_member(session, group_id).await?;
            if target != me && !group.is_admin(me) {
                return Err(Error::Forbidden);
            }
            if !group.is_member(&target) {
                return Err(Error::NotFound(format!(
                    "{target} is not a member of this group"
                )));
            }
            let mut admins: Vec<String> = group
                .admins
                .iter()
                .filter(|a| **a != target)
                .cloned()
                .collect();
            if admins.is_empty() {
                // The earliest-joined remaining member takes over.
                if let Some(heir) = group
                    .members
                    .iter()
                    .filter(|m| m.user_id != target)
                    .min_by_key(|m| m.seq)
                {
                    admins.push(heir.user_id.clone());
                }
            }
            let change = GroupChange {
                group_id: group.group_id.clone(),
                expected_version: group.version,
                admins,
                add: vec![],
                remove: vec![target.clone()],
            };
            match self.store.update_group(&change).await {
                Ok(updated) => {
                    self.announce(session, &updated, std::slice::from_ref(&target))
                        .await;
                    return Ok(group_frame(&updated));
                }
                Err(Error::Conflict) => continue,
                Err(e) => return Err(e),
            }
        }
        Err(Error::Conflict)
    }

    /// Sends the group's new state to every member and to `also` (a removed
    /// user), except the requesting connection, which gets the reply.
    async fn announce(&self, session: &Session, group: &Group, also: &[String]) {
        let mut users = group.member_ids();
        users.extend(also.iter().cloned());
        let job = FanoutJob {
            audience: Audience::Users(users),
            frame: group_frame(group),
            except_connection: Some(session.connection_id.clone()),
            order_key: ConversationId::group(&group.group_id).to_string(),
        };
        if let Err(e) = self.fanout.dispatch(job).await {
            tracing::warn!(error = %e, "group announcement failed");
        }
    }
}

/// Runs fan-out jobs: resolves the audience to connections and posts to
/// each. One failed post never fails the others; a gone connection (410)
/// is pruned, and only that one.
pub struct Deliverer {
    store: Arc<dyn Store>,
    connections: Arc<dyn Connections>,
    delivery: Arc<dyn Delivery>,
    /// Posts in flight at once for one job.
    concurrency: usize,
}

impl Deliverer {
    pub fn new(
        store: Arc<dyn Store>,
        connections: Arc<dyn Connections>,
        delivery: Arc<dyn Delivery>,
    ) -> Self {
        Deliverer {
            store,
            connections,
            delivery,
            concurrency: 32,
        }
    }

    async fn audience(&self, audience: &Audience) -> Result<Vec<String>> {
        Ok(match audience {
            Audience::Users(u) => u.clone(),
            Audience::Conversation(c) => match ConversationId::parse(c)? {
                ConversationId::Direct(a, b) if a == b => vec![a.to_string()],
                ConversationId::Direct(a, b) => vec![a.to_string(), b.to_string()],
                ConversationId::Group(g) => self
                    .store
                    .group(&g)
                    .await?
                    .map(|g| g.member_ids())
                    .unwrap_or_default(),
            },
        })
    }

    /// Delivers one job; returns how many posts succeeded.
    pub async fn run(&self, job: &FanoutJob) -> Result<usize> {
        let users = self.audience(&job.audience).await?;
        let json = job.frame.to_json();
        let conns: Vec<ConnectionRecord> = stream::iter(users)
            .map(|u| async move { self.connections.for_user(&u).await })
            .buffer_unordered(self.concurrency)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .filter_map(|r| {
                r.map_err(|e| tracing::warn!(error = %e, "connection lookup failed"))
                    .ok()
            })
            .flatten()
            .filter(|c| Some(&c.connection_id) != job.except_connection.as_ref())
            .collect();
        let json = &json;
        let delivered = stream::iter(conns)
            .map(|c| async move {
                match self.delivery.post(&c, json).await {
                    Ok(()) => true,
                    Err(PostError::Gone) => {
                        tracing::info!(connection = %c.connection_id, user = %c.user_id, "pruning gone connection");
                        if let Err(e) = self.connections.remove(&c.connection_id).await {
                            tracing::warn!(error = %e, "pruning failed");
                        }
                        false
                    }
                    Err(PostError::Failed(e)) => {
                        tracing::warn!(connection = %c.connection_id, error = %e, "post failed");
                        false
                    }
                }
            })
            .buffer_unordered(self.concurrency)
            .filter(|ok| std::future::ready(*ok))
            .count()
            .await;
        Ok(delivered)
    }
}
