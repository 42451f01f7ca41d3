//! Delivery: how a frame reaches the connections of its audience.
//!
//! # Layout
//! - this file: [`Deliverer`], which resolves an audience to connections
//!   and posts to each (one failed post never fails the others; a gone
//!   connection is pruned, and only that one), and [`shard_of`].
//! - [`workers`]: the fan-out runners: background workers
//!   ([`InProcessFanout`]) and inline delivery ([`InlineFanout`]).
//! - [`feed`]: the bridge from a store's commit feed to the workers.

pub mod feed;
pub mod workers;

pub use workers::{InProcessFanout, InlineFanout};

use crate::error::Result;
use crate::ids::ConversationId;
use crate::ports::*;
use futures_util::{stream, StreamExt};
use std::sync::Arc;

/// FNV-1a: a stable, dependency-free hash for sharding.
pub fn hash(key: &str) -> u64 {
    key.bytes().fold(0xcbf29ce484222325u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// The shard (of `n`) a key belongs to.
pub fn shard_of(key: &str, n: usize) -> usize {
    (hash(key) % n.max(1) as u64) as usize
}

/// Runs fan-out jobs: resolves the audience to connections and posts to
/// each. One failed post never fails the others; a gone connection (410)
/// is pruned, and only that one.
pub struct Deliverer {
    /// Group member lists, checked against the group's version before
    /// each job (docs/design.md, "Group look-ups").
    members: crate::members::MemberCache,
    connections: Arc<dyn Connections>,
    delivery: Arc<dyn Delivery>,
    /// Posts in flight at once for one job.
    concurrency: usize,
    /// With sync states (the stateless functions): how long a new
    /// connection's live messages wait for its first `sync`.
    sync_grace_ms: Option<u64>,
    /// conn-tier: audiences of at least this many users are handed to the
    /// nodes, which know their own connections, instead of looked up per
    /// user (docs/design.md, "Group look-ups").
    broadcast: Option<(Arc<dyn Broadcast>, usize)>,
}

impl Deliverer {
    pub fn new(
        store: Arc<dyn Store>,
        connections: Arc<dyn Connections>,
        delivery: Arc<dyn Delivery>,
    ) -> Self {
        Deliverer {
            members: crate::members::MemberCache::new(store),
            connections,
            delivery,
            concurrency: 32,
            sync_grace_ms: None,
            broadcast: None,
        }
    }

    /// Audiences of at least `from_users` users go through `broadcast`
    /// (conn-tier: each node delivers to its own connections) instead of
    /// a connection look-up per user. Not with sync states: the stateless
    /// functions hold no connections.
    pub fn with_broadcast(mut self, broadcast: Arc<dyn Broadcast>, from_users: usize) -> Self {
        self.broadcast = Some((broadcast, from_users.max(1)));
        self
    }

    /// For the stateless functions (with [`crate::Chat::with_sync_states`]):
    /// a message is not posted to a connection whose sync has not replayed
    /// what comes before it. A syncing connection's skip is noted (its sync
    /// replays it); a new connection's live messages wait up to `grace_ms`
    /// for its first sync (which replays them); a message a sync already
    /// replayed is not posted again.
    pub fn with_sync_states(mut self, grace_ms: u64) -> Self {
        self.sync_grace_ms = Some(grace_ms);
        self
    }

    /// Whether a message frame goes to `c` now; notes a skip for a syncing one.
    async fn admits(&self, c: &ConnectionRecord, seq: &Seq) -> bool {
        let Some(grace) = self.sync_grace_ms else {
            return true;
        };
        match c.sync {
            SyncState::Syncing => {
                if let Err(e) = self
                    .connections
                    .note_skipped(&c.connection_id, &seq.conversation_id)
                    .await
                {
                    tracing::warn!(error = %e, "cannot note a skipped message");
                }
                false
            }
            SyncState::Pending if crate::time::now_ms() < c.connected_at_ms + grace => false,
            _ => c
                .replayed
                .get(&seq.conversation_id)
                .is_none_or(|&r| seq.message_id > r),
        }
    }

    /// The users a job goes to. A group's message (`message_id`) goes to
    /// the members who joined before it was stored: one stored while a
    /// member was away, whose fan-out runs only after they were added
    /// back, does not reach them (docs/design.md, "Removal").
    async fn audience(&self, audience: &Audience, message_id: Option<u64>) -> Result<Vec<String>> {
        Ok(match audience {
            Audience::Users(u) => u.clone(),
            Audience::Conversation(c) => match ConversationId::parse(c)? {
                ConversationId::Direct(a, b) if a == b => vec![a.to_string()],
                ConversationId::Direct(a, b) => vec![a.to_string(), b.to_string()],
                ConversationId::Group(g) => self
                    .members
                    .group(&g)
                    .await?
                    .map(|g| {
                        g.members
                            .iter()
                            .filter(|m| message_id.is_none_or(|id| m.joined_at_id < id))
                            .map(|m| m.user_id.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
            },
        })
    }

    /// Delivers one job; returns how many posts succeeded.
    pub async fn run(&self, job: &FanoutJob) -> Result<usize> {
        let frame = Outgoing::new(&job.frame);
        let message_id = frame.seq.as_ref().map(|s| s.message_id);
        let users = self.audience(&job.audience, message_id).await?;
        if let Some((b, from)) = &self.broadcast {
            if users.len() >= *from && self.sync_grace_ms.is_none() {
                match b
                    .broadcast(&users, job.except_connection.as_deref(), &frame)
                    .await
                {
                    Ok(n) => return Ok(n),
                    Err(e) => {
                        crate::metrics::broadcast("fallback");
                        tracing::warn!(error = %e, users = users.len(), "cannot broadcast; looking the members up one by one");
                    }
                }
            }
        }
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
        let frame = &frame;
        let delivered = stream::iter(conns)
            .map(|c| async move {
                if let Some(seq) = &frame.seq {
                    if !self.admits(&c, seq).await {
                        crate::metrics::delivery("held");
                        return false;
                    }
                }
                match self.delivery.post(&c, frame).await {
                    Ok(()) => {
                        crate::metrics::delivery("ok");
                        true
                    }
                    Err(PostError::Gone) => {
                        crate::metrics::delivery("gone");
                        tracing::debug!(user = %c.user_id, connection = %c.connection_id, "pruning gone connection");
                        if let Err(e) = self.connections.remove(&c.connection_id).await {
                            tracing::warn!(error = %e, "pruning failed");
                        }
                        false
                    }
                    Err(PostError::Failed(e)) => {
                        crate::metrics::delivery("failed");
                        tracing::warn!(user = %c.user_id, error = %e, "post failed");
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryConnections, MemoryStore};
    use std::sync::Mutex;

    /// Records the connections posted to.
    #[derive(Default)]
    struct Posted(Mutex<Vec<String>>);

    #[async_trait::async_trait]
    impl Delivery for Posted {
        async fn post(&self, c: &ConnectionRecord, _f: &Outgoing) -> Result<(), PostError> {
            self.0.lock().unwrap().push(c.connection_id.clone());
            Ok(())
        }
    }

    /// Records broadcasts; fails them all when `fail`.
    #[derive(Default)]
    struct Nodes {
        fail: bool,
        calls: Mutex<Vec<(Vec<String>, Option<String>)>>,
    }

    #[async_trait::async_trait]
    impl Broadcast for Nodes {
        async fn broadcast(
            &self,
            users: &[String],
            except: Option<&str>,
            _frame: &Outgoing,
        ) -> Result<usize> {
            self.calls
                .lock()
                .unwrap()
                .push((users.to_vec(), except.map(str::to_string)));
            if self.fail {
                Err(crate::Error::Store(
                    "the node registry is unreachable".into(),
                ))
            } else {
                Ok(users.len())
            }
        }
    }

    /// A live connection (`c-<user>`) for each of `users`.
    async fn live(users: &[&str]) -> Arc<MemoryConnections> {
        let conns = Arc::new(MemoryConnections::new());
        for u in users {
            conns
                .register(&ConnectionRecord {
                    connection_id: format!("c-{u}"),
                    user_id: u.to_string(),
                    endpoint: "n1".into(),
                    node_id: Some("n1".into()),
                    connected_at_ms: 0,
                    device_id: None,
                    sync: SyncState::Live,
                    replayed: Default::default(),
                })
                .await
                .unwrap();
        }
        conns
    }

    /// A deliverer over `users`, one connection each (`c-<user>`), whose
    /// broadcast starts at 3 users.
    async fn rig(users: &[&str], fail: bool) -> (Deliverer, Arc<Posted>, Arc<Nodes>) {
        let conns = live(users).await;
        let posted = Arc::new(Posted::default());
        let nodes = Arc::new(Nodes {
            fail,
            ..Default::default()
        });
        let d = Deliverer::new(Arc::new(MemoryStore::new()), conns, posted.clone())
            .with_broadcast(nodes.clone(), 3);
        (d, posted, nodes)
    }

    fn job(users: &[&str]) -> FanoutJob {
        FanoutJob {
            audience: Audience::Users(users.iter().map(|u| u.to_string()).collect()),
            frame: crate::protocol::ServerFrame::Synced {},
            except_connection: Some("c-a".into()),
            order_key: "k".into(),
        }
    }

    #[tokio::test]
    async fn a_large_audience_is_handed_to_the_nodes_without_a_look_up_per_user() {
        let (d, posted, nodes) = rig(&["a", "b", "c"], false).await;
        assert_eq!(d.run(&job(&["a", "b", "c"])).await.unwrap(), 3);
        let calls = nodes.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![(vec!["a".into(), "b".into(), "c".into()], Some("c-a".into()))]
        );
        assert!(
            posted.0.lock().unwrap().is_empty(),
            "nothing posted one by one"
        );
    }

    #[tokio::test]
    async fn a_small_audience_is_looked_up_user_by_user() {
        let (d, posted, nodes) = rig(&["a", "b"], false).await;
        assert_eq!(d.run(&job(&["a", "b"])).await.unwrap(), 1);
        assert!(nodes.calls.lock().unwrap().is_empty());
        assert_eq!(*posted.0.lock().unwrap(), vec!["c-b".to_string()]);
    }

    #[tokio::test]
    async fn when_the_nodes_cannot_be_reached_every_member_is_still_looked_up_and_posted() {
        let (d, posted, nodes) = rig(&["a", "b", "c"], true).await;
        assert_eq!(d.run(&job(&["a", "b", "c"])).await.unwrap(), 2);
        assert_eq!(nodes.calls.lock().unwrap().len(), 1);
        let mut got = posted.0.lock().unwrap().clone();
        got.sort();
        assert_eq!(got, vec!["c-b".to_string(), "c-c".to_string()]);
    }

    #[tokio::test]
    async fn a_group_message_stored_before_a_member_joined_never_goes_to_them_however_late_its_fan_out(
    ) {
        use crate::ports::{Group, GroupMember, GroupStore, StoredMessage};
        let store = Arc::new(MemoryStore::new());
        let member = |u: &str, seq, joined_at_id| GroupMember {
            joined_at_id,
            ..GroupMember::founding(u, 1, seq)
        };
        store
            .create_group(&Group {
                group_id: "g".into(),
                name: "g".into(),
                created_by: "a".into(),
                created_at_ms: 1,
                admins: vec!["a".into()],
                members: vec![member("a", 0, 0)],
                version: 1,
                next_seq: 1,
            })
            .await
            .unwrap();
        // b (removed, say) is added when the conversation's newest id is
        // 5: ids up to 5 were stored before, or while away.
        for i in 1..=5 {
            store
                .append(NewMessage {
                    conversation_id: "grp#g".into(),
                    sender: "a".into(),
                    client_msg_id: format!("m{i}"),
                    text: "hi".into(),
                    sent_at_ms: 1,
                    enroll: vec![],
                    origin: None,
                    member_only: false,
                })
                .await
                .unwrap();
        }
        store
            .update_group(&crate::ports::GroupChange {
                group_id: "g".into(),
                expected_version: 1,
                admins: vec!["a".into()],
                add: vec![member("b", 1, 5)],
                remove: vec![],
            })
            .await
            .unwrap();
        let posted = Arc::new(Posted::default());
        let d = Deliverer::new(store, live(&["a", "b"]).await, posted.clone());
        let message = |id| {
            feed::job(StoredMessage {
                conversation_id: "grp#g".into(),
                message_id: id,
                sender: "a".into(),
                client_msg_id: format!("m{id}"),
                text: "hi".into(),
                sent_at_ms: 1,
                origin: None,
            })
        };
        assert_eq!(d.run(&message(5)).await.unwrap(), 1);
        assert_eq!(*posted.0.lock().unwrap(), vec!["c-a".to_string()]);
        assert_eq!(d.run(&message(6)).await.unwrap(), 2, "after the join: both");
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        assert_eq!(shard_of("dm#a#b", 8), shard_of("dm#a#b", 8));
        assert!((0..100).all(|i| shard_of(&format!("k{i}"), 8) < 8));
        assert_eq!(shard_of("x", 0), 0);
    }
}
