//! The group member-list cache of one process (a conn-tier node, a warm
//! Lambda execution environment): each use of a cached group reads only
//! its version (strongly consistent, one small item), and the member list
//! only when the version moved. Small groups are not cached
//! ([`CACHE_FROM_MEMBERS`]). Every `addMember`/`removeMember` bumps the version,
//! so a list is never used after a change that committed before the
//! version read (docs/design.md, "Group look-ups").

use crate::error::Result;
use crate::hash::HashMap;
use crate::ports::{Group, Store};
use std::sync::{Arc, Mutex};

/// Groups kept at most; past it an arbitrary entry makes room (a miss
/// costs one member-list read, nothing else).
pub const DEFAULT_CAPACITY: usize = 10_000;

/// Groups with fewer members are read afresh each time, not cached: on
/// DynamoDB a strongly consistent read bills per started 4 KB, so the
/// group's item and up to ~38 member items (about 100 bytes each) cost the
/// same one unit as the version check would (docs/cost.md, "Group
/// look-ups"). The cache pays from the size where the list costs more.
pub const CACHE_FROM_MEMBERS: usize = 32;

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
            entries: Mutex::new(HashMap::default()),
            capacity: capacity.max(1),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Group>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The group as it is now: for a cached group, its version read first
    /// and the cached list if it is at that version; else the group read
    /// afresh (and cached if it has [`CACHE_FROM_MEMBERS`] members or more).
    pub async fn group(&self, group_id: &str) -> Result<Option<Arc<Group>>> {
        let cached = self.entries().get(group_id).cloned();
        let Some(cached) = cached else {
            return self.read(group_id).await;
        };
        let Some(version) = self.store.group_version(group_id).await? else {
            self.entries().remove(group_id);
            return Ok(None);
        };
        if cached.version == version {
            crate::metrics::member_cache("hit");
            return Ok(Some(cached));
        }
        self.read(group_id).await
    }

    /// The group read afresh, and kept if it is large enough to be worth it.
    async fn read(&self, group_id: &str) -> Result<Option<Arc<Group>>> {
        crate::metrics::member_cache("miss");
        let Some(g) = self.store.group(group_id).await? else {
            self.entries().remove(group_id);
            return Ok(None);
        };
        let g = Arc::new(g);
        if g.members.len() < CACHE_FROM_MEMBERS {
            self.entries().remove(group_id);
            return Ok(Some(g));
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::MemoryStore;
    use crate::ports::{GroupChange, GroupMember, GroupStore};

    fn group(id: &str, n: usize) -> Group {
        let members: Vec<GroupMember> = (0..n)
            .map(|i| GroupMember::founding(format!("u{i}"), 1, i as u64))
            .collect();
        Group {
            group_id: id.into(),
            name: id.into(),
            created_by: "u0".into(),
            created_at_ms: 1,
            admins: vec!["u0".into()],
            members,
            version: 1,
            next_seq: n as u64,
        }
    }

    #[tokio::test]
    async fn a_large_group_is_cached_until_its_version_moves_and_a_small_one_never() {
        let store = Arc::new(MemoryStore::new());
        store
            .create_group(&group("big", CACHE_FROM_MEMBERS))
            .await
            .unwrap();
        store.create_group(&group("small", 3)).await.unwrap();
        let cache = MemberCache::new(store.clone());
        let first = cache.group("big").await.unwrap().unwrap();
        let again = cache.group("big").await.unwrap().unwrap();
        assert!(Arc::ptr_eq(&first, &again), "served from the cache");
        cache.group("small").await.unwrap().unwrap();
        assert_eq!(cache.len(), 1, "only the large group is kept");
        // A removal bumps the version: the next use sees it.
        store
            .update_group(&GroupChange {
                group_id: "big".into(),
                expected_version: 1,
                admins: vec!["u0".into()],
                add: vec![],
                remove: vec!["u1".into()],
            })
            .await
            .unwrap();
        let after = cache.group("big").await.unwrap().unwrap();
        assert_eq!(after.version, 2);
        assert!(!after.is_member("u1"));
        assert!(cache.group("nope").await.unwrap().is_none());
    }
}
