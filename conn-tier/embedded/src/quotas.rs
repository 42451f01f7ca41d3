//! Per-user counters (groups created a day): one row per (user, key) in
//! the quotas table, taken in a write of the group commit.

use crate::kv::Get;
use crate::tables::Quotas;
use crate::EmbeddedStore;
use async_trait::async_trait;
use chat_core::ports::QuotaStore;
use chat_core::Result;

#[async_trait]
impl QuotaStore for EmbeddedStore {
    async fn take_quota(
        &self,
        user: &str,
        key: &str,
        limit: u64,
        _expires_at_secs: u64,
    ) -> Result<bool> {
        let key = (user.to_string(), key.to_string());
        self.write(move |batch| {
            let n = batch.get::<Quotas>(&key)?.unwrap_or(0);
            if n >= limit {
                return Ok(false);
            }
            batch.put::<Quotas>(&key, &(n + 1))?;
            Ok(true)
        })
        .await
    }
}
