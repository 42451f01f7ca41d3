//! This node's live connections, and the in-process [`Delivery`] that
//! posts to them by pushing onto each connection's bounded outbound queue.
//!
//! A push never waits: a connection whose queue is full has a reader too
//! slow to keep up, so it is disconnected (it will reconnect and `sync`)
//! rather than slowing down the sender or anyone else.

use async_trait::async_trait;
use axum::extract::ws::Utf8Bytes;
use chat_core::ports::{ConnectionRecord, Delivery, Outgoing, PostError, Seq};
use chat_local_apigw::management::ConnectionHost;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, Notify};

/// What the writer half of a socket handles next.
#[derive(Debug)]
pub enum Outbound {
    /// Written as is: answers, receipts, group frames.
    Text(Utf8Bytes),
    /// A `message` frame, live or replayed: written in its conversation's
    /// id order, a gap filled from the store first, a repeat dropped.
    Message { seq: Seq, text: Utf8Bytes },
    /// The `ack` of one of this connection's sends: the id it stands for
    /// in the connection's sequence (the message itself never comes).
    Ack { seq: Seq, text: Utf8Bytes },
    /// A `sync` starts: each conversation's watermark, above which its
    /// replay starts (the socket's sequence continues from there).
    SyncStarted(Vec<(String, u64)>),
    /// The connection's first frame was not a `sync`: live messages held
    /// since the upgrade go out now.
    GoLive,
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
    /// Whether frames posted through the `@connections` API are sequenced
    /// here (in-process services and cluster peers) or passed through as
    /// the functions sent them (Lambda mode: the functions keep order).
    sequence_posts: bool,
}

impl Hub {
    pub fn new(node: impl Into<String>, sequence_posts: bool) -> Self {
        Hub {
            node: node.into(),
            conns: RwLock::new(HashMap::new()),
            sequence_posts,
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
        if h.tx
            .try_send(Outbound::Close(1000, "closed by the server"))
            .is_err()
        {
            h.kick.notify_one();
        }
        true
    }

    /// Queues `out` for one connection without waiting.
    pub fn push(&self, connection_id: &str, out: Outbound) -> Result<(), PostError> {
        let overflowed = {
            let conns = self.conns.read().unwrap_or_else(|p| p.into_inner());
            let Some(h) = conns.get(connection_id) else {
                return Err(PostError::Gone);
            };
            match h.tx.try_send(out) {
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

/// The outbound item for a frame: a `message` is sequenced.
fn outbound(text: Utf8Bytes, seq: Option<Seq>) -> Outbound {
    match seq {
        Some(seq) => Outbound::Message { seq, text },
        None => Outbound::Text(text),
    }
}

/// The sequence of a frame posted as JSON text, if it is a `message`.
fn seq_of(json: &str) -> Option<Seq> {
    #[derive(serde::Deserialize)]
    struct Probe {
        #[serde(rename = "type")]
        kind: String,
        conversation_id: Option<String>,
        message_id: Option<u64>,
    }
    let p: Probe = serde_json::from_str(json).ok()?;
    match (p.kind.as_str(), p.conversation_id, p.message_id) {
        ("message", Some(conversation_id), Some(message_id)) => Some(Seq {
            conversation_id,
            message_id,
        }),
        _ => None,
    }
}

#[async_trait]
impl Delivery for Hub {
    async fn post(&self, connection: &ConnectionRecord, frame: &Outgoing) -> Result<(), PostError> {
        if connection.endpoint != self.node {
            // Another node's connection: not reachable from here.
            return Err(PostError::Failed(format!(
                "connection held by node {}",
                connection.endpoint
            )));
        }
        // The frame's bytes are shared, not copied, by every connection.
        let text = Utf8Bytes::try_from(frame.json.clone())
            .map_err(|_| PostError::Failed("a frame that is not UTF-8".into()))?;
        self.push(&connection.connection_id, outbound(text, frame.seq.clone()))
    }
}

/// The `@connections` management API acts on this node's connections.
impl ConnectionHost for Hub {
    fn post(&self, connection_id: &str, text: String) -> Result<(), PostError> {
        let seq = if self.sequence_posts {
            seq_of(&text)
        } else {
            None
        };
        self.push(connection_id, outbound(Utf8Bytes::from(text), seq))
    }

    fn connected_at(&self, connection_id: &str) -> Option<u64> {
        Hub::connected_at(self, connection_id)
    }

    fn close(&self, connection_id: &str) -> bool {
        Hub::close(self, connection_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_posted_message_frame_is_recognised_and_others_are_not() {
        let seq = seq_of(
            r#"{"type":"message","conversation_id":"dm#a#b","message_id":7,"from":"a","text":"x","sent_at":"t"}"#,
        );
        assert_eq!(
            seq,
            Some(Seq {
                conversation_id: "dm#a#b".into(),
                message_id: 7
            })
        );
        assert_eq!(
            seq_of(r#"{"type":"receipt","conversation_id":"c","up_to":3}"#),
            None
        );
        assert_eq!(seq_of("not json"), None);
    }
}
