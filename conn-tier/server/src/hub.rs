//! This node's live connections and their users, and the in-process
//! [`Delivery`] that posts to them by pushing onto each connection's
//! outbound queue (bounded in bytes: [`crate::outbox`]).
//!
//! A push never waits: a connection whose queue is full has a reader too
//! slow to keep up, so it is disconnected (it will reconnect and `sync`)
//! rather than slowing down the sender or anyone else.
//!
//! The hub also knows each user's connections here, so a large group's
//! message is delivered by user without a look-up in the store
//! ([`Broadcast`]; docs/design.md, "Group look-ups").
//!
//! Per user, the hub keeps how many connections are open (at most
//! `max_per_user`) and one rate budget that every connection of the user
//! spends from: each frame and each connection attempt takes a token.

use crate::limits::defaults;
use crate::outbox::{Full, Outbound, Outbox};
use crate::rate::RateLimit;
use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use chat_core::hash::HashMap;
use chat_core::ports::{Broadcast, ConnectionRecord, Delivery, Outgoing, PostError, Seq};
use chat_management::api::ConnectionHost;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

struct Handle {
    out: Outbox,
    /// Whose it is: found again in [`Conns::by_user`] when it goes.
    user: String,
    /// For the @connections GET answer.
    connected_at_ms: u64,
    /// Closed by [`Hub::close_all`] (this node was declared dead): its
    /// record is under the old node id, the janitors' to delete.
    orphaned: AtomicBool,
}

/// Per-user limits.
#[derive(Debug, Clone, Copy)]
pub struct UserLimits {
    /// Connections a user may have open on this node.
    pub max_connections: usize,
    /// The user's token bucket: frames (and connection attempts) at once...
    pub burst: u32,
    /// ...and refilled per second.
    pub per_sec: u32,
}

impl Default for UserLimits {
    fn default() -> Self {
        UserLimits {
            max_connections: 20,
            burst: defaults::RATE_BURST,
            per_sec: defaults::RATE_PER_SEC,
        }
    }
}

/// One user's shared state on this node.
#[derive(Debug)]
struct UserState {
    open: usize,
    budget: Arc<Mutex<RateLimit>>,
}

impl UserState {
    /// Whether forgetting this user changes nothing: no connection open
    /// and the budget full again (closing and reopening must not refill
    /// it).
    fn forgettable(&self) -> bool {
        self.open == 0
            && self
                .budget
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_full()
    }
}

/// Users whose state is pruned: when the map reaches this size (or twice
/// its size after the last prune), forgettable users are dropped.
const PRUNE_AT: usize = 1024;

/// Why a user's new connection is refused (HTTP 429 before the upgrade).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserRefused {
    TooManyConnections,
    TooFast,
}

/// One open connection of a user: counts against the user's cap while it
/// lives, and spends from the user's rate budget.
pub struct UserTicket {
    hub: Arc<Hub>,
    user: String,
    budget: Arc<Mutex<RateLimit>>,
}

impl UserTicket {
    /// Takes one token of the user's budget (one frame).
    pub fn take(&self) -> bool {
        self.budget.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

impl Drop for UserTicket {
    fn drop(&mut self) {
        let mut users = self.hub.users.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(u) = users.map.get_mut(&self.user) {
            u.open = u.open.saturating_sub(1);
            if u.forgettable() {
                users.map.remove(&self.user);
            }
        }
    }
}

/// The users map, pruned as it grows (amortised: a prune at least halves
/// the work until the next).
struct Users {
    map: HashMap<String, UserState>,
    prune_at: usize,
}

/// The connections, by id and by user.
#[derive(Default)]
struct Conns {
    by_id: HashMap<String, Handle>,
    /// Each user's connections here: what a broadcast resolves.
    by_user: HashMap<String, Vec<String>>,
}

/// The connections this node holds.
pub struct Hub {
    /// This node's id, recorded with its connections. Changes when the
    /// node rejoins a cluster after being declared dead.
    node: RwLock<String>,
    /// Where other nodes post to this node's connections (its
    /// `@connections` URL), recorded as their endpoint; the node id when
    /// there is none.
    endpoint: Option<String>,
    conns: RwLock<Conns>,
    /// Users with a connection open, or whose budget is still refilling.
    users: Mutex<Users>,
    limits: UserLimits,
    /// Whether frames posted through the `@connections` API are sequenced
    /// here (in-process services and cluster peers) or passed through as
    /// the functions sent them (Lambda mode: the functions keep order).
    sequence_posts: bool,
}

impl Hub {
    pub fn new(node: impl Into<String>, sequence_posts: bool) -> Self {
        Self::with_limits(node, sequence_posts, UserLimits::default())
    }

    pub fn with_limits(node: impl Into<String>, sequence_posts: bool, limits: UserLimits) -> Self {
        Hub {
            node: RwLock::new(node.into()),
            endpoint: None,
            conns: RwLock::new(Conns::default()),
            users: Mutex::new(Users {
                map: HashMap::default(),
                prune_at: PRUNE_AT,
            }),
            limits,
            sequence_posts,
        }
    }

    /// Connections a user may have open here.
    pub fn max_connections_per_user(&self) -> usize {
        self.limits.max_connections
    }

    /// Admits one more connection of `user` (before the upgrade): under
    /// the per-user cap, and spending a token of the user's budget.
    pub fn admit_user(self: &Arc<Self>, user: &str) -> Result<UserTicket, UserRefused> {
        let mut guard = self.users.lock().unwrap_or_else(|p| p.into_inner());
        let users = &mut *guard;
        if users.map.len() >= users.prune_at {
            users.map.retain(|_, u| !u.forgettable());
            users.prune_at = (users.map.len() * 2).max(PRUNE_AT);
        }
        let l = self.limits;
        let u = users
            .map
            .entry(user.to_string())
            .or_insert_with(|| UserState {
                open: 0,
                budget: Arc::new(Mutex::new(RateLimit::new(l.burst, l.per_sec))),
            });
        if u.open >= l.max_connections {
            return Err(UserRefused::TooManyConnections);
        }
        if !u.budget.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(UserRefused::TooFast);
        }
        u.open += 1;
        let budget = u.budget.clone();
        Ok(UserTicket {
            hub: self.clone(),
            user: user.to_string(),
            budget,
        })
    }

    /// This node's id now.
    pub fn node(&self) -> String {
        self.node.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// A new id (after being declared dead): connections opened from now
    /// on are recorded under it.
    pub fn set_node(&self, id: &str) {
        *self.node.write().unwrap_or_else(|p| p.into_inner()) = id.to_string();
    }

    /// With an `@connections` URL other nodes post to.
    pub fn with_endpoint(mut self, url: Option<String>) -> Self {
        self.endpoint = url;
        self
    }

    /// What a connection of this node records as its endpoint.
    pub fn endpoint(&self) -> String {
        self.endpoint.clone().unwrap_or_else(|| self.node())
    }

    /// Closes every connection with `code` (a node declared dead: 1012).
    pub fn close_all(&self, code: u16, reason: &'static str) {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        for h in conns.by_id.values() {
            h.orphaned.store(true, Ordering::Relaxed);
            if h.out.push(Outbound::Close(code, reason)).is_err() {
                h.out.kick();
            }
        }
    }

    /// A connection of `user` opened here: from now on it gets what is
    /// posted or broadcast to it.
    pub fn insert(&self, connection_id: &str, user: &str, out: Outbox) {
        chat_core::metrics::connection_open(1.0);
        let mut conns = self.conns.write().unwrap_or_else(|p| p.into_inner());
        let old = conns.by_id.insert(
            connection_id.to_string(),
            Handle {
                out,
                user: user.to_string(),
                connected_at_ms: chat_core::time::now_ms(),
                orphaned: AtomicBool::new(false),
            },
        );
        if old.is_none() {
            conns
                .by_user
                .entry(user.to_string())
                .or_default()
                .push(connection_id.to_string());
        }
    }

    /// Forgets a connection; true if [`Hub::close_all`] had closed it (its
    /// record is then the janitors' to delete, not the disconnect's).
    pub fn remove(&self, connection_id: &str) -> bool {
        let removed = {
            let mut conns = self.conns.write().unwrap_or_else(|p| p.into_inner());
            let removed = conns.by_id.remove(connection_id);
            if let Some(h) = &removed {
                if let Some(ids) = conns.by_user.get_mut(&h.user) {
                    ids.retain(|id| id != connection_id);
                    if ids.is_empty() {
                        conns.by_user.remove(&h.user);
                    }
                }
            }
            removed
        };
        match removed {
            Some(h) => {
                chat_core::metrics::connection_open(-1.0);
                h.orphaned.load(Ordering::Relaxed)
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.conns
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .by_id
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a connection is open here.
    pub fn contains(&self, connection_id: &str) -> bool {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        conns.by_id.contains_key(connection_id)
    }

    /// When a connection of this node was opened, if it is open.
    pub fn connected_at(&self, connection_id: &str) -> Option<u64> {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        conns.by_id.get(connection_id).map(|h| h.connected_at_ms)
    }

    /// Closes a connection (1000); false if it is not open here.
    pub fn close(&self, connection_id: &str) -> bool {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        let Some(h) = conns.by_id.get(connection_id) else {
            return false;
        };
        if h.out
            .push(Outbound::Close(1000, "closed by the server"))
            .is_err()
        {
            h.out.kick();
        }
        true
    }

    /// Queues `out` for one connection without waiting.
    pub fn push(&self, connection_id: &str, out: Outbound) -> Result<(), PostError> {
        let pushed = {
            let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
            let Some(h) = conns.by_id.get(connection_id) else {
                return Err(PostError::Gone);
            };
            h.out.push(out)
        };
        match pushed {
            Ok(()) => Ok(()),
            Err(Full::Closed) => Err(PostError::Gone),
            Err(Full::Overflow) => {
                tracing::warn!("outbound queue full; disconnecting a slow reader");
                self.remove(connection_id);
                Err(PostError::Gone)
            }
        }
    }
}

impl Hub {
    /// Queues `text` for every connection here of `users` except `except`
    /// (and those [`Hub::close_all`] closed); how many took it.
    pub fn deliver_to_users(
        &self,
        users: &[String],
        except: Option<&str>,
        text: &Utf8Bytes,
        seq: Option<&Seq>,
    ) -> usize {
        let targets: Vec<String> = {
            let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
            users
                .iter()
                .filter_map(|u| conns.by_user.get(u))
                .flatten()
                .filter(|id| Some(id.as_str()) != except)
                .filter(|id| {
                    conns
                        .by_id
                        .get(*id)
                        .is_some_and(|h| !h.orphaned.load(Ordering::Relaxed))
                })
                .cloned()
                .collect()
        };
        // Pushed outside the lock: a full queue disconnects its reader,
        // which takes the lock for writing.
        targets
            .iter()
            .filter(|id| {
                self.push(id, Outbound::posted(text.clone(), seq.cloned()))
                    .is_ok()
            })
            .count()
    }
}

/// This node alone (no cluster): every connection is here.
#[async_trait]
impl Broadcast for Hub {
    async fn broadcast(
        &self,
        users: &[String],
        except: Option<&str>,
        frame: &Outgoing,
    ) -> chat_core::Result<usize> {
        let text = Utf8Bytes::try_from(frame.json.clone())
            .map_err(|_| chat_core::Error::Store("a frame that is not UTF-8".into()))?;
        chat_core::metrics::broadcast("local");
        Ok(self.deliver_to_users(users, except, &text, frame.seq.as_ref()))
    }
}

#[async_trait]
impl Delivery for Hub {
    async fn post(&self, connection: &ConnectionRecord, frame: &Outgoing) -> Result<(), PostError> {
        let holder = connection
            .node_id
            .as_deref()
            .unwrap_or(&connection.endpoint);
        if holder != self.node() {
            // Another node's connection: not reachable from here.
            return Err(PostError::Failed(format!(
                "connection held by node {holder}"
            )));
        }
        // The frame's bytes are shared, not copied, by every connection.
        let text = Utf8Bytes::try_from(frame.json.clone())
            .map_err(|_| PostError::Failed("a frame that is not UTF-8".into()))?;
        self.push(
            &connection.connection_id,
            Outbound::posted(text, frame.seq.clone()),
        )
    }
}

/// The `@connections` management API acts on this node's connections.
impl ConnectionHost for Hub {
    fn post(&self, connection_id: &str, text: String) -> Result<(), PostError> {
        let seq = if self.sequence_posts {
            Outbound::seq_of(&text)
        } else {
            None
        };
        self.push(connection_id, Outbound::posted(Utf8Bytes::from(text), seq))
    }

    fn connected_at(&self, connection_id: &str) -> Option<u64> {
        Hub::connected_at(self, connection_id)
    }

    fn broadcast(&self, users: &[String], except: Option<&str>, text: String) -> usize {
        let seq = if self.sequence_posts {
            Outbound::seq_of(&text)
        } else {
            None
        };
        self.deliver_to_users(users, except, &Utf8Bytes::from(text), seq.as_ref())
    }

    fn close(&self, connection_id: &str) -> bool {
        Hub::close(self, connection_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::outbox;

    fn texts(inbox: &mut crate::outbox::Inbox) -> Vec<String> {
        std::iter::from_fn(|| inbox.try_recv())
            .map(|o| match o {
                Outbound::Text(t) | Outbound::Message { text: t, .. } => t.to_string(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_broadcast_reaches_every_connection_of_the_listed_users_but_the_sender_s() {
        let hub = Hub::new("n1", true);
        let (a1, mut a1_in) = outbox(1 << 20);
        let (a2, mut a2_in) = outbox(1 << 20);
        let (b1, mut b1_in) = outbox(1 << 20);
        let (c1, mut c1_in) = outbox(1 << 20);
        hub.insert("a1", "alice", a1);
        hub.insert("a2", "alice", a2);
        hub.insert("b1", "bob", b1);
        hub.insert("c1", "carol", c1);
        let users = ["alice".to_string(), "bob".to_string(), "dave".to_string()];
        let n = hub.deliver_to_users(&users, Some("a1"), &Utf8Bytes::from("hi"), None);
        assert_eq!(n, 2, "alice's other device and bob; not a1, not carol");
        assert!(texts(&mut a1_in).is_empty());
        assert_eq!(texts(&mut a2_in), vec!["hi"]);
        assert_eq!(texts(&mut b1_in), vec!["hi"]);
        assert!(texts(&mut c1_in).is_empty(), "carol is not in the audience");
    }

    #[test]
    fn a_closed_connection_is_no_longer_found_by_its_user() {
        let hub = Hub::new("n1", true);
        let (a1, _a1_in) = outbox(1 << 20);
        let (a2, mut a2_in) = outbox(1 << 20);
        hub.insert("a1", "alice", a1);
        hub.insert("a2", "alice", a2);
        hub.remove("a1");
        let users = ["alice".to_string()];
        assert_eq!(
            hub.deliver_to_users(&users, None, &Utf8Bytes::from("x"), None),
            1
        );
        assert_eq!(texts(&mut a2_in), vec!["x"]);
        hub.remove("a2");
        assert_eq!(
            hub.deliver_to_users(&users, None, &Utf8Bytes::from("y"), None),
            0
        );
        assert!(
            hub.conns.read().unwrap().by_user.is_empty(),
            "no user left behind"
        );
    }
}
