//! Devices and their delivery cursors, in the users table beside the
//! memberships (same partition: the user): `device#<id>` with its last use,
//! and `cursor#<device>#<conversation>` with the cursor and when it moved.
//! One device's cursors are one Query (`begins_with`); both kinds expire
//! through the table's TTL 90 days after their last write.

use super::DynamoStore;
use crate::codec::{from_item, key, n, CursorItem, DeviceItem};
use crate::request::{call, conditional, Written};
use crate::schema::DEVICE_PREFIX;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue as Av, ReturnConsumedCapacity, ReturnValue};
use chat_core::ports::{devices_to_forget, remembered, CursorMove, DeviceStore, CURSOR_TTL_MS};
use chat_core::Result;
use std::collections::HashMap;

/// The TTL attribute (seconds) of an item written at `now_ms`.
fn expiry(now_ms: u64) -> u64 {
    (now_ms + CURSOR_TTL_MS) / 1000
}

/// Whether a device item's `last_used` is within [`CURSOR_TTL_MS`] of now.
fn used_lately(item: &HashMap<String, Av>, now_ms: u64) -> bool {
    item.get("last_used")
        .and_then(|v| v.as_n().ok())
        .and_then(|n| n.parse::<u64>().ok())
        .is_some_and(|t| remembered(t, now_ms))
}

/// What a device or cursor item is metered as (it is small).
const SMALL_ITEM: usize = 160;

impl DynamoStore {
    /// Every item of `user` whose sort key starts with `prefix` (one
    /// strongly consistent Query, all pages): memberships, devices, a
    /// device's cursors.
    pub(super) async fn user_items(
        &self,
        user: &str,
        prefix: &str,
    ) -> Result<Vec<crate::codec::Item>> {
        let q = self
            .client
            .query()
            .table_name(&self.users)
            .key_condition_expression("user_id = :u AND begins_with(sk, :p)")
            .expression_attribute_values(":u", Av::S(user.to_string()))
            .expression_attribute_values(":p", Av::S(prefix.to_string()));
        let table = self.users.clone();
        self.query_all(q, &table, usize::MAX, true).await
    }

    async fn delete_user_item(&self, user: &str, sk: &str) -> Result<()> {
        self.meter.write(SMALL_ITEM, 0, false);
        let request = self
            .client
            .delete_item()
            .table_name(&self.users)
            .set_key(Some(key(&[("user_id", user), ("sk", sk)])))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        call(&self.meter, "DeleteItem", &self.users, request).await?;
        Ok(())
    }

    /// Forgets the least recently used devices of `user` beyond
    /// [`MAX_DEVICES`](chat_core::ports::MAX_DEVICES) (never `keep`), each with its cursors. Runs only
    /// when a new device appears.
    async fn forget_extra_devices(&self, user: &str, keep: &str) -> Result<()> {
        let devices: Vec<DeviceItem> = self
            .user_items(user, DEVICE_PREFIX)
            .await?
            .into_iter()
            .map(|i| from_item(&self.users, i))
            .collect::<std::result::Result<_, _>>()?;
        let used = devices.iter().map(|d| (d.last_used, d.device_id.clone()));
        for device in devices_to_forget(used.collect::<Vec<_>>(), keep) {
            for c in self.user_items(user, &CursorItem::prefix(&device)).await? {
                let c: CursorItem = from_item(&self.users, c)?;
                self.delete_user_item(user, &c.sk).await?;
            }
            self.delete_user_item(user, &DeviceItem::sort_key(&device))
                .await?;
            tracing::debug!(user, %device, "device forgotten (least recently used)");
        }
        Ok(())
    }
}

#[async_trait]
impl DeviceStore for DynamoStore {
    async fn use_device(&self, user: &str, device: &str, now_ms: u64) -> Result<bool> {
        self.meter.write(SMALL_ITEM, 0, false);
        let request = self
            .client
            .update_item()
            .table_name(&self.users)
            .set_key(Some(key(&[
                ("user_id", user),
                ("sk", &DeviceItem::sort_key(device)),
            ])))
            .update_expression("SET device_id = :d, last_used = :t, expires_at = :e")
            .expression_attribute_values(":d", Av::S(device.to_string()))
            .expression_attribute_values(":t", n(now_ms))
            .expression_attribute_values(":e", n(expiry(now_ms)))
            .return_values(ReturnValue::UpdatedOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        let out = call(&self.meter, "UpdateItem", &self.users, request).await?;
        let existed = out.attributes().is_some_and(|a| !a.is_empty());
        if !existed {
            self.forget_extra_devices(user, device).await?;
        }
        // The TTL deletes late (up to days): unused that long is new again.
        Ok(existed && out.attributes().is_some_and(|a| used_lately(a, now_ms)))
    }

    async fn device_known(&self, user: &str, device: &str, now_ms: u64) -> Result<bool> {
        // Strongly consistent: a `received` right after the device's first
        // sync must find it.
        self.meter.read(SMALL_ITEM, true);
        let request = self
            .client
            .get_item()
            .table_name(&self.users)
            .set_key(Some(key(&[
                ("user_id", user),
                ("sk", &DeviceItem::sort_key(device)),
            ])))
            .projection_expression("last_used")
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        let out = call(&self.meter, "GetItem", &self.users, request).await?;
        Ok(out.item().is_some_and(|a| used_lately(a, now_ms)))
    }

    async fn cursors(&self, user: &str, device: &str, now_ms: u64) -> Result<HashMap<String, u64>> {
        let mut out = HashMap::new();
        for i in self.user_items(user, &CursorItem::prefix(device)).await? {
            let c: CursorItem = from_item(&self.users, i)?;
            // The TTL deletes late (up to days): expired is gone.
            if !remembered(c.moved_at, now_ms) {
                continue;
            }
            if let Some(conv) = c.conversation(device) {
                out.insert(conv.to_string(), c.up_to);
            }
        }
        Ok(out)
    }

    async fn advance_cursor(
        &self,
        user: &str,
        device: &str,
        conv: &str,
        mv: CursorMove,
        now_ms: u64,
    ) -> Result<bool> {
        if mv.up_to <= mv.floor || mv.from > mv.up_to {
            return Ok(false);
        }
        // A run that reaches the floor moves any cursor below `up_to`
        // (none, an expired one not yet deleted, or one below the floor);
        // one that starts higher only a live cursor at or above `from - 1`.
        let condition = if mv.reaches_floor() {
            "attribute_not_exists(up_to) OR moved_at <= :stale OR up_to < :u"
        } else {
            "moved_at > :stale AND up_to < :u AND up_to >= :f"
        };
        self.meter.write(SMALL_ITEM + conv.len(), 0, false);
        let stale = now_ms.saturating_sub(CURSOR_TTL_MS);
        let mut request = self
            .client
            .update_item()
            .table_name(&self.users)
            .set_key(Some(key(&[
                ("user_id", user),
                ("sk", &CursorItem::sort_key(device, conv)),
            ])))
            .update_expression("SET up_to = :u, moved_at = :t, expires_at = :e")
            .condition_expression(condition)
            .expression_attribute_values(":u", n(mv.up_to))
            .expression_attribute_values(":t", n(now_ms))
            .expression_attribute_values(":e", n(expiry(now_ms)))
            .expression_attribute_values(":stale", n(stale));
        if !mv.reaches_floor() {
            request = request.expression_attribute_values(":f", n(mv.from.saturating_sub(1)));
        }
        let request = request
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        Ok(matches!(
            conditional(&self.meter, "UpdateItem", &self.users, request).await?,
            Written::Done(_)
        ))
    }
}
