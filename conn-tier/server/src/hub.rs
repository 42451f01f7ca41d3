//! This node's live connections, and the in-process [`Delivery`] that
//! posts to them by pushing onto each connection's bounded outbound queue.
//!
//! A push never waits: a connection whose queue is full has a reader too
//! slow to keep up, so it is disconnected (it will reconnect and `sync`)
//! rather than slowing down the sender or anyone else.

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use chat_core::ports::{ConnectionRecord, Delivery, PostError};
use chat_local_apigw::management::ConnectionHost;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, Notify};

/// What the writer half of a socket sends next.
#[derive(Debug)]
pub enum Outbound {
    Text(Utf8Bytes),
    /// Close with this code and reason, then stop.
    Close(u16, &'static str),
}

struct Handle {
    tx: mpsc::Sender<Outbound>,
    /// Tells the socket to close because its queue overflowed.
    kick: Arc<Notify>,
    /// For the @connections GET answer.
    connected_at_ms: u64,
}

/// The connections this node holds.
pub struct Hub {
    /// This node's name, recorded as the endpoint of its connections.
    node: String,
    conns: RwLock<HashMap<String, Handle>>,
}

impl Hub {
    pub fn new(node: impl Into<String>) -> Self {
        Hub {
            node: node.into(),
            conns: RwLock::new(HashMap::new()),
        }
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    pub fn insert(&self, connection_id: &str, tx: mpsc::Sender<Outbound>, kick: Arc<Notify>) {
        self.conns
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                connection_id.to_string(),
                Handle {
                    tx,
                    kick,
                    connected_at_ms: chat_core::time::now_ms(),
                },
            );
    }

    pub fn remove(&self, connection_id: &str) {
        self.conns
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(connection_id);
    }

    pub fn len(&self) -> usize {
        self.conns.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
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
        if h.tx
            .try_send(Outbound::Close(1000, "closed by the server"))
            .is_err()
        {
            h.kick.notify_one();
        }
        true
    }

    /// Queues `frame` for one connection without waiting.
    pub fn push(&self, connection_id: &str, frame: Utf8Bytes) -> Result<(), PostError> {
        let overflowed = {
            let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
            let Some(h) = conns.get(connection_id) else {
                return Err(PostError::Gone);
            };
            match h.tx.try_send(Outbound::Text(frame)) {
                Ok(()) => return Ok(()),
                Err(mpsc::error::TrySendError::Closed(_)) => return Err(PostError::Gone),
                Err(mpsc::error::TrySendError::Full(_)) => h.kick.clone(),
            }
        };
        tracing::warn!("outbound queue full; disconnecting a slow reader");
        overflowed.notify_one();
        self.remove(connection_id);
        Err(PostError::Gone)
    }
}

#[async_trait]
impl Delivery for Hub {
    async fn post(&self, connection: &ConnectionRecord, frame: &str) -> Result<(), PostError> {
        if connection.endpoint != self.node {
            // Another node's connection: not reachable from here in embedded mode.
            return Err(PostError::Failed(format!(
                "connection held by node {}",
                connection.endpoint
            )));
        }
        self.push(&connection.connection_id, Utf8Bytes::from(frame))
    }
}

/// The `@connections` management API acts on this node's connections.
impl ConnectionHost for Hub {
    fn post(&self, connection_id: &str, text: String) -> Result<(), PostError> {
        self.push(connection_id, Utf8Bytes::from(text))
    }

    fn connected_at(&self, connection_id: &str) -> Option<u64> {
        Hub::connected_at(self, connection_id)
    }

    fn close(&self, connection_id: &str) -> bool {
        Hub::close(self, connection_id)
    }
}
