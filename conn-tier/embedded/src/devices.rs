//! Devices and their delivery cursors: one row per (user, device) with its
//! last use, and one per (user, device, conversation) with the cursor and
//! when it last moved. Written in the group commit like everything else.

use crate::kv::{Batch, Get};
use crate::tables::*;
use crate::EmbeddedStore;
use async_trait::async_trait;
use chat_core::ports::{devices_to_forget, remembered, CursorMove, DeviceStore};
use chat_core::Result;
use std::collections::HashMap;
use std::ops::Bound;

/// The bounds of one device's cursors.
fn cursors_of(user: &str, device: &str) -> [(String, String, String); 2] {
    let k = |c: &str| (user.to_string(), device.to_string(), c.to_string());
    [k(""), k(PAST_ANY_ID)]
}

/// Forgets the least recently used devices of `user` beyond
/// [`MAX_DEVICES`](chat_core::ports::MAX_DEVICES) (never `keep`), with their cursors.
fn forget_extra(batch: &mut Batch<'_>, user: &str, keep: &str) -> Result<()> {
    let mut mine: Vec<(u64, String)> = Vec::new();
    let (lo, hi) = (
        (user.to_string(), String::new()),
        (user.to_string(), PAST_ANY_ID.to_string()),
    );
    batch.scan::<Devices>(
        Bound::Included(&lo),
        Bound::Included(&hi),
        false,
        |(_, d), used| {
            mine.push((used, d));
            Ok(true)
        },
    )?;
    for device in devices_to_forget(mine, keep) {
        batch.del::<Devices>(&(user.to_string(), device.clone()))?;
        let [lo, hi] = cursors_of(user, &device);
        let mut stale = Vec::new();
        batch.scan::<Cursors>(Bound::Included(&lo), Bound::Included(&hi), false, |k, _| {
            stale.push(k);
            Ok(true)
        })?;
        for k in stale {
            batch.del::<Cursors>(&k)?;
        }
    }
    Ok(())
}

#[async_trait]
impl DeviceStore for EmbeddedStore {
    async fn use_device(&self, user: &str, device: &str, now_ms: u64) -> Result<bool> {
        let key = (user.to_string(), device.to_string());
        self.write(move |batch| {
            let before = batch.get::<Devices>(&key)?;
            let used = before.map_or(now_ms, |b| b.max(now_ms));
            batch.put::<Devices>(&key, &used)?;
            if before.is_none() {
                forget_extra(batch, &key.0, &key.1)?;
            }
            Ok(before.is_some_and(|b| remembered(b, now_ms)))
        })
        .await
    }

    async fn device_known(&self, user: &str, device: &str, now_ms: u64) -> Result<bool> {
        self.read(|t| {
            let used = t.get::<Devices>(&(user.to_string(), device.to_string()))?;
            Ok(used.is_some_and(|u| remembered(u, now_ms)))
        })
    }

    async fn cursors(&self, user: &str, device: &str, now_ms: u64) -> Result<HashMap<String, u64>> {
        self.read(|t| {
            let mut out = HashMap::new();
            let [lo, hi] = cursors_of(user, device);
            t.scan::<Cursors>(
                Bound::Included(&lo),
                Bound::Included(&hi),
                false,
                |(_, _, conv), (up_to, moved)| {
                    if remembered(moved, now_ms) {
                        out.insert(conv, up_to);
                    }
                    Ok(true)
                },
            )?;
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
        let key = (user.to_string(), device.to_string(), conv.to_string());
        self.write(move |batch| {
            // An expired cursor is forgotten: the device stands at the floor.
            let current = batch
                .get::<Cursors>(&key)?
                .filter(|(_, moved)| remembered(*moved, now_ms))
                .map(|(at, _)| at);
            let moves = mv.moves(current);
            if moves {
                batch.put::<Cursors>(&key, &(mv.up_to, now_ms))?;
            }
            Ok(moves)
        })
        .await
    }
}
