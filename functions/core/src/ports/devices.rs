//! The devices port: a user's devices and their delivery cursors, and the
//! rules every store applies to them (how long they are remembered, which
//! to forget past the cap, when a run moves a cursor).

use crate::error::Result;
use async_trait::async_trait;

/// Devices a user holds cursors for, at most this many (the least
/// recently used beyond it are forgotten, cursors and all).
pub const MAX_DEVICES: usize = 20;

/// A cursor not moved for this long is forgotten (90 days): the device is
/// treated as new to that conversation.
pub const CURSOR_TTL_MS: u64 = 90 * 24 * 3600 * 1000;

/// Of a user's devices (last use, id), the ones to forget so that at most
/// [`MAX_DEVICES`] stay: the least recently used (ties by id), never
/// `keep` (the one in use now). Every store applies it.
pub fn devices_to_forget(
    devices: impl IntoIterator<Item = (u64, String)>,
    keep: &str,
) -> Vec<String> {
    let mut all: Vec<(u64, String)> = devices.into_iter().collect();
    let extra = all.len().saturating_sub(MAX_DEVICES);
    all.sort();
    all.into_iter()
        .filter(|(_, d)| d != keep)
        .take(extra)
        .map(|(_, d)| d)
        .collect()
}

/// Whether a device used, or a cursor moved, at `at_ms` is still
/// remembered at `now_ms` (within [`CURSOR_TTL_MS`]): every store asks it.
pub fn remembered(at_ms: u64, now_ms: u64) -> bool {
    at_ms.saturating_add(CURSOR_TTL_MS) > now_ms
}

/// A move of a device's delivery cursor in one conversation: the device
/// holds every id from `from` to `up_to`. It moves the cursor only forward
/// and only if that run reaches down to where the device stands (`from` at
/// most one above it): a run starting higher would step over ids the
/// device never got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CursorMove {
    pub from: u64,
    pub up_to: u64,
    /// Where the device stands in a conversation it has no cursor for (or
    /// an expired one): the user's join point, as `sync` takes it.
    pub floor: u64,
}

impl CursorMove {
    /// The server's own position for the device: `at`, if ahead of what
    /// the cursor says (a run from 1 reaches anywhere).
    pub fn to(at: u64) -> Self {
        CursorMove {
            from: 1,
            up_to: at,
            floor: 0,
        }
    }

    /// Whether it moves a cursor standing at `current` (`None`: no cursor,
    /// or an expired one). A cursor below the floor (the user left and
    /// rejoined since it moved) stands at the floor: nothing below the
    /// join point is the device's to hold.
    pub fn moves(&self, current: Option<u64>) -> bool {
        let at = current.map_or(self.floor, |c| c.max(self.floor));
        self.up_to > at && self.from <= at.saturating_add(1)
    }

    /// Whether the run reaches down to the floor: then it moves any cursor
    /// below `up_to` (a missing, expired or lower one alike).
    pub fn reaches_floor(&self) -> bool {
        self.up_to > self.floor && self.from <= self.floor.saturating_add(1)
    }
}

/// A user's devices and their delivery cursors: per device and
/// conversation, the highest id such that the device holds every id up to
/// it. Kept apart from the read watermark ([`MembershipStore`](super::MembershipStore)), which is
/// the user's and shared by all devices.
#[async_trait]
pub trait DeviceStore: Send + Sync {
    /// Marks `device_id` of `user_id` as used at `now_ms`; whether it was
    /// known before (used in the last [`CURSOR_TTL_MS`]: one unused longer
    /// is new again, in every store). A new device past [`MAX_DEVICES`]
    /// makes the least recently used one forgotten, with its cursors.
    async fn use_device(&self, user_id: &str, device_id: &str, now_ms: u64) -> Result<bool>;

    /// Whether `device_id` of `user_id` is known (used in the last
    /// [`CURSOR_TTL_MS`]), without marking it used: only a known device's
    /// cursors move, so a client cannot make devices past the cap.
    async fn device_known(&self, user_id: &str, device_id: &str, now_ms: u64) -> Result<bool>;

    /// The device's cursors by conversation, those moved in the last
    /// [`CURSOR_TTL_MS`] before `now_ms`.
    async fn cursors(
        &self,
        user_id: &str,
        device_id: &str,
        now_ms: u64,
    ) -> Result<std::collections::HashMap<String, u64>>;

    /// Moves the cursor as [`CursorMove::moves`] says, atomically (never
    /// back); whether it moved.
    async fn advance_cursor(
        &self,
        user_id: &str,
        device_id: &str,
        conversation_id: &str,
        mv: CursorMove,
        now_ms: u64,
    ) -> Result<bool>;
}
