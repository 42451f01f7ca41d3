//! The group member-list cache of one process (a conn-tier node, a warm
//! Lambda execution environment): each use reads only the group's version
//! (strongly consistent, one small item), and the member list only when
//! the version moved. Every `addMember`/`removeMember` bumps the version,
//! so a list is never used after a change that committed before the
//! version read (docs/design.md, "Group look-ups").

use crate::error::Result;
use crate::ports::{Group, Store};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Groups kept at most; past it an arbitrary entry makes room (a miss
/// costs one member-list read, nothing else).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Member lists by group id, checked against the group's version.
pub struct MemberCache {
    store: Arc<dyn Store>,
    entries: Mutex<HashMap<String, Arc<Group>>>,
    capacity: usize,
}

impl MemberCache {
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self::with_capacity(store, DEFAULT_CAPACITY)
    }

    pub fn with_capacity(store: Arc<dyn Store>, capacity: usize) -> Self {
        MemberCache {
            store,
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Group>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The group as it is now: its version read first; the cached list if
    /// it is at that version, else the group read afresh.
    pub async fn group(&self, group_id: &str) -> Result<Option<Arc<Group>>> {
        let Some(version) = self.store.group_version(group_id).await? else {
            self.entries().remove(group_id);
            return Ok(None);
        };
        if let Some(g) = self.entries().get(group_id) {
            if g.version == version {
                crate::metrics::member_cache("hit");
                return Ok(Some(g.clone()));
            }
        }
        crate::metrics::member_cache("miss");
        let Some(g) = self.store.group(group_id).await? else {
            self.entries().remove(group_id);
            return Ok(None);
        };
        let g = Arc::new(g);
        let mut entries = self.entries();
        if entries.len() >= self.capacity && !entries.contains_key(group_id) {
            if let Some(k) = entries.keys().next().cloned() {
                entries.remove(&k);
            }
        }
        // A concurrent reader may have cached a newer version: keep it.
        match entries.get(group_id) {
            Some(cur) if cur.version > g.version => Ok(Some(cur.clone())),
            _ => {
                entries.insert(group_id.to_string(), g.clone());
                Ok(Some(g))
            }
        }
    }

    /// Groups cached now (tests and metrics).
    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
