//! The in-memory connection map and node registry ([`MemoryConnections`]).

use crate::error::{Error, Result};
use crate::hash::HashMap;
use crate::ports::*;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// The in-memory connection map: exact for one conn-tier node, whose
/// connections die with it.
#[derive(Default)]
pub struct MemoryConnections {
    inner: Mutex<ConnInner>,
}

#[derive(Default)]
struct ConnInner {
    by_id: HashMap<String, ConnectionRecord>,
    by_user: HashMap<String, Vec<String>>,
    /// Per syncing connection: live messages skipped, and their conversations.
    skipped: HashMap<String, (u64, std::collections::BTreeSet<String>)>,
    /// The node registry (a cluster's), by node id.
    nodes: BTreeMap<String, NodeRecord>,
}

impl MemoryConnections {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Connections for MemoryConnections {
    async fn register(&self, rec: &ConnectionRecord) -> Result<()> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.by_user
            .entry(rec.user_id.clone())
            // Most users hold one connection: room for one, not four.
            .or_insert_with(|| Vec::with_capacity(1))
            .push(rec.connection_id.clone());
        g.by_id.insert(rec.connection_id.clone(), rec.clone());
        Ok(())
    }

    async fn remove(&self, connection_id: &str) -> Result<()> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.skipped.remove(connection_id);
        if let Some(rec) = g.by_id.remove(connection_id) {
            if let Some(ids) = g.by_user.get_mut(&rec.user_id) {
                ids.retain(|c| c != connection_id);
                if ids.is_empty() {
                    g.by_user.remove(&rec.user_id);
                }
            }
        }
        Ok(())
    }

    async fn get(&self, connection_id: &str) -> Result<Option<ConnectionRecord>> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.by_id.get(connection_id).cloned())
    }

    async fn for_user(&self, user_id: &str) -> Result<Vec<ConnectionRecord>> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.by_user
            .get(user_id)
            .map(|ids| ids.iter().filter_map(|c| g.by_id.get(c).cloned()).collect())
            .unwrap_or_default())
    }
    async fn begin_sync(&self, connection_id: &str) -> Result<bool> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let Some(rec) = g.by_id.get_mut(connection_id) else {
            return Ok(false);
        };
        rec.sync = SyncState::Syncing;
        g.skipped.remove(connection_id);
        Ok(true)
    }

    async fn note_skipped(&self, connection_id: &str, conversation: &str) -> Result<()> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.by_id.get(connection_id).map(|r| r.sync) == Some(SyncState::Syncing) {
            let noted = g.skipped.entry(connection_id.to_string()).or_default();
            noted.0 += 1;
            noted.1.insert(conversation.to_string());
        }
        Ok(())
    }

    async fn go_live(
        &self,
        connection_id: &str,
        replayed: &BTreeMap<String, u64>,
        seen: u64,
    ) -> Result<GoLive> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((skips, convs)) = g.skipped.get(connection_id) {
            if *skips != seen {
                return Ok(GoLive::Skipped {
                    conversations: convs.iter().cloned().collect(),
                    skips: *skips,
                });
            }
        }
        g.skipped.remove(connection_id);
        if let Some(rec) = g.by_id.get_mut(connection_id) {
            rec.sync = SyncState::Live;
            rec.replayed = replayed.clone();
        }
        Ok(GoLive::Done)
    }
}

#[async_trait]
impl Nodes for MemoryConnections {
    async fn join(&self, node: &NodeRecord) -> Result<()> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if g.nodes.contains_key(&node.node_id) {
            return Err(Error::Store(format!(
                "node id {} is already registered",
                node.node_id
            )));
        }
        g.nodes.insert(node.node_id.clone(), node.clone());
        Ok(())
    }

    async fn heartbeat(&self, node_id: &str, at_ms: u64, draining: bool) -> Result<bool> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match g.nodes.get_mut(node_id) {
            Some(n) if !n.dead => {
                n.heartbeat_at_ms = at_ms;
                n.draining = draining;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn nodes(&self) -> Result<Vec<NodeRecord>> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.nodes.values().cloned().collect())
    }

    async fn declare_dead(&self, node_id: &str, seen_heartbeat_ms: u64) -> Result<bool> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        match g.nodes.get_mut(node_id) {
            Some(n) if !n.dead && n.heartbeat_at_ms == seen_heartbeat_ms => {
                n.dead = true;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn connections_of(&self, node_id: &str) -> Result<Vec<String>> {
        let g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(g.by_id
            .values()
            .filter(|r| r.node_id.as_deref() == Some(node_id))
            .map(|r| r.connection_id.clone())
            .collect())
    }

    async fn forget(&self, node_id: &str) -> Result<()> {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        g.nodes.remove(node_id);
        Ok(())
    }
}
