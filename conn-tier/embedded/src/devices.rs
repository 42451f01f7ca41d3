//! Devices and their delivery cursors: one row per (user, device) with its
//! last use, and one per (user, device, conversation) with the cursor and
//! when it last moved. Written in the group commit like everything else.

use crate::batch::{Cursors, Devices};
use crate::tables::*;
use crate::EmbeddedStore;
use async_trait::async_trait;
use chat_core::ports::{devices_to_forget, remembered, CursorMove, DeviceStore};
use chat_core::Result;
use redb::ReadableTable;
use std::collections::HashMap;
use std::ops::Bound;

/// Forgets the least recently used devices of `user` beyond
/// [`MAX_DEVICES`](chat_core::ports::MAX_DEVICES) (never `keep`), with their cursors.
fn forget_extra(
    devices: &mut Devices<'_>,
    cursors: &mut Cursors<'_>,
    user: &str,
    keep: &str,
) -> Result<()> {
    let mut mine: Vec<(u64, String)> = Vec::new();
    for row in devices
        .range::<(&str, &str)>((
            Bound::Included((user, "")),
            Bound::Included((user, PAST_ANY_ID)),
        ))
        .map_err(db)?
    {
        let (k, v) = row.map_err(db)?;
        mine.push((v.value(), k.value().1.to_string()));
    }
    for device in devices_to_forget(mine, keep) {
        devices.remove((user, device.as_str())).map_err(db)?;
        let stale: Vec<String> = cursors
            .range::<(&str, &str, &str)>((
                Bound::Included((user, device.as_str(), "")),
                Bound::Included((user, device.as_str(), PAST_ANY_ID)),
            ))
            .map_err(db)?
            .map(|r| r.map(|(k, _)| k.value().2.to_string()))
            .collect::<std::result::Result<_, _>>()
            .map_err(db)?;
        for conv in stale {
            cursors
                .remove((user, device.as_str(), conv.as_str()))
                .map_err(db)?;
        }
    }
    Ok(())
}

#[async_trait]
impl DeviceStore for EmbeddedStore {
    async fn use_device(&self, user: &str, device: &str, now_ms: u64) -> Result<bool> {
        let (user, device) = (user.to_string(), device.to_string());
        self.write(move |batch| {
            let (devices, cursors) = batch.for_devices()?;
            let before = devices
                .get((user.as_str(), device.as_str()))
                .map_err(db)?
                .map(|g| g.value());
            let used = before.map_or(now_ms, |b| b.max(now_ms));
            devices
                .insert((user.as_str(), device.as_str()), used)
                .map_err(db)?;
            if before.is_none() {
                forget_extra(devices, cursors, &user, &device)?;
            }
            Ok(before.is_some_and(|b| remembered(b, now_ms)))
        })
        .await
    }

    async fn device_known(&self, user: &str, device: &str, now_ms: u64) -> Result<bool> {
        self.read(|txn| {
            let t = txn.open_table(DEVICES).map_err(db)?;
            let used = t.get((user, device)).map_err(db)?.map(|g| g.value());
            Ok(used.is_some_and(|u| remembered(u, now_ms)))
        })
    }

    async fn cursors(&self, user: &str, device: &str, now_ms: u64) -> Result<HashMap<String, u64>> {
        self.read(|txn| {
            let t = txn.open_table(CURSORS).map_err(db)?;
            let mut out = HashMap::new();
            for row in t
                .range::<(&str, &str, &str)>((
                    Bound::Included((user, device, "")),
                    Bound::Included((user, device, PAST_ANY_ID)),
                ))
                .map_err(db)?
            {
                let (k, v) = row.map_err(db)?;
                let (up_to, moved) = v.value();
                if remembered(moved, now_ms) {
                    out.insert(k.value().2.to_string(), up_to);
                }
            }
            Ok(out)
        })
    }

    async fn advance_cursor(
        &self,
        user: &str,
        device: &str,
        conv: &str,
        mv: CursorMove,
        now_ms: u64,
    ) -> Result<bool> {
        let (user, device, conv) = (user.to_string(), device.to_string(), conv.to_string());
        self.write(move |batch| {
            let (_, cursors) = batch.for_devices()?;
            let key = (user.as_str(), device.as_str(), conv.as_str());
            // An expired cursor is forgotten: the device stands at the floor.
            let current = cursors
                .get(key)
                .map_err(db)?
                .map(|g| g.value())
                .filter(|(_, moved)| remembered(*moved, now_ms))
                .map(|(at, _)| at);
            let moves = mv.moves(current);
            if moves {
                cursors.insert(key, (mv.up_to, now_ms)).map_err(db)?;
            }
            Ok(moves)
        })
        .await
    }
}
