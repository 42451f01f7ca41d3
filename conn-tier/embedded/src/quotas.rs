//! Per-user counters (groups created a day): one row per (user, key) in
//! the quotas table, taken in a write of the group commit.

use crate::tables::db;
use crate::EmbeddedStore;
use async_trait::async_trait;
use chat_core::ports::QuotaStore;
use chat_core::Result;
use redb::ReadableTable;

#[async_trait]
impl QuotaStore for EmbeddedStore {
    async fn take_quota(
        &self,
        user: &str,
        key: &str,
        limit: u64,
        _expires_at_secs: u64,
    ) -> Result<bool> {
        let (user, key) = (user.to_string(), key.to_string());
        self.write(move |batch| {
            let t = batch.quotas()?;
            let n = t
                .get((user.as_str(), key.as_str()))
                .map_err(db)?
                .map_or(0, |g| g.value());
            if n >= limit {
                return Ok(false);
            }
            t.insert((user.as_str(), key.as_str()), n + 1).map_err(db)?;
            Ok(true)
        })
        .await
    }
}
