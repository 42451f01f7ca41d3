//! This node's live connections and their users, and the in-process
//! [`Delivery`] that posts to them by pushing onto each connection's
//! outbound queue (bounded in bytes: [`crate::outbox`]).
//!
//! A push never waits: a connection whose queue is full has a reader too
//! slow to keep up, so it is disconnected (it will reconnect and `sync`)
//! rather than slowing down the sender or anyone else.
//!
//! Per user, the hub keeps how many connections are open (at most
//! `max_per_user`) and one rate budget that every connection of the user
//! spends from: each frame and each connection attempt takes a token.

use crate::limits::defaults;
use crate::outbox::{Full, Outbound, Outbox};
use crate::rate::RateLimit;
use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use chat_core::ports::{ConnectionRecord, Delivery, Outgoing, PostError};
use chat_management::api::ConnectionHost;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

struct Handle {
    out: Outbox,
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

/// The connections this node holds.
pub struct Hub {
    /// This node's id, recorded with its connections. Changes when the
    /// node rejoins a cluster after being declared dead.
    node: RwLock<String>,
    /// Where other nodes post to this node's connections (its
    /// `@connections` URL), recorded as their endpoint; the node id when
    /// there is none.
    endpoint: Option<String>,
    conns: RwLock<HashMap<String, Handle>>,
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
            conns: RwLock::new(HashMap::new()),
            users: Mutex::new(Users {
                map: HashMap::new(),
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
        for h in conns.values() {
            h.orphaned.store(true, Ordering::Relaxed);
            if h.out.push(Outbound::Close(code, reason)).is_err() {
                h.out.kick();
            }
        }
    }

    pub fn insert(&self, connection_id: &str, out: Outbox) {
        chat_core::metrics::connection_open(1.0);
        self.conns
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                connection_id.to_string(),
                Handle {
                    out,
                    connected_at_ms: chat_core::time::now_ms(),
                    orphaned: AtomicBool::new(false),
                },
            );
    }

    /// Forgets a connection; true if [`Hub::close_all`] had closed it (its
    /// record is then the janitors' to delete, not the disconnect's).
    pub fn remove(&self, connection_id: &str) -> bool {
        let removed = self
            .conns
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(connection_id);
        match removed {
            Some(h) => {
                chat_core::metrics::connection_open(-1.0);
                h.orphaned.load(Ordering::Relaxed)
            }
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.conns.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a connection is open here.
    pub fn contains(&self, connection_id: &str) -> bool {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        conns.contains_key(connection_id)
    }

    /// When a connection of this node was opened, if it is open.
    pub fn connected_at(&self, connection_id: &str) -> Option<u64> {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        conns.get(connection_id).map(|h| h.connected_at_ms)
    }

    /// Closes a connection (1000); false if it is not open here.
    pub fn close(&self, connection_id: &str) -> bool {
        let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
        let Some(h) = conns.get(connection_id) else {
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
            let Some(h) = conns.get(connection_id) else {
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

    fn close(&self, connection_id: &str) -> bool {
        Hub::close(self, connection_id)
    }
}
