//! What the hosts of one run share besides the network: the nodes' store
//! and registry ([`Shared`]), the group's id once created, the member
//! moves, and each device's report for the checks.

use crate::node::Shared;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::time::Instant;

/// conn-tier nodes in a run.
pub const NODES: usize = 3;

/// What one device saw, for [`crate::check`].
#[derive(Debug, Default, Clone)]
pub struct DeviceReport {
    pub user: String,
    pub device: String,
    /// client_msg_id -> the text sent.
    pub texts: HashMap<String, String>,
    /// client_msg_id -> (conversation, id) its ack named.
    pub acked: HashMap<String, (String, u64)>,
    /// Sends never acked.
    pub pending: Vec<String>,
    /// (conversation, id) -> text, from `message` frames.
    pub got: HashMap<(String, u64), String>,
    /// Ids skipped between two messages on one connection, with the id
    /// that came after them.
    pub skipped: Vec<(String, u64, u64)>,
    /// `gap` frames of a sync: (conversation, after, before).
    pub gap_frames: Vec<(String, u64, u64)>,
    /// Per message frame, in order: its conversation and id.
    pub seen: Vec<(String, u64)>,
    /// Per message frame: the node id that served it, and when.
    pub served: Vec<(String, std::time::Duration)>,
    /// Broken promises seen as they happened.
    pub violations: Vec<String>,
    /// Sends refused (not `internal`): none expected.
    pub refused: Vec<String>,
    pub connections: usize,
    pub closes: Vec<u16>,
    pub resends: usize,
    /// The fresh connection after the faults synced.
    pub final_sync: bool,
    /// The admin asked for the group.
    pub asked_group: bool,
}

/// The member moves of the group's admin, as done.
#[derive(Debug, Clone)]
pub struct Moves {
    pub is_member: bool,
    /// What the admin asked for last, and when: only a `group` frame that
    /// shows it counts (a late frame of an earlier change does not).
    pub wanted: Option<bool>,
    pub asked_at: Option<Instant>,
    /// The conversation's newest id when the admin last asked for a removal.
    pub asked_last: u64,
    /// The member's absences.
    pub away: Vec<Away>,
}

/// One absence of the moved member, as ids of the group's conversation.
#[derive(Debug, Clone, Copy)]
pub struct Away {
    /// The newest id when the removal was asked for: every id up to it was
    /// stored while they were a member.
    pub asked: u64,
    /// The newest id once the removal was seen done: every id after it was
    /// stored while they were away...
    pub removed: u64,
    /// ...up to the join point of the add that ended it (`None`: never
    /// added back).
    pub back: Option<u64>,
}

/// The run's shared state.
pub struct World {
    pub shared: Arc<Shared>,
    group: Mutex<Option<String>>,
    moves: Mutex<Moves>,
    pub reports: Mutex<Vec<DeviceReport>>,
}

impl World {
    pub fn new(shared: Arc<Shared>) -> Self {
        World {
            shared,
            group: Mutex::new(None),
            moves: Mutex::new(Moves {
                is_member: true,
                wanted: None,
                asked_at: None,
                asked_last: 0,
                away: Vec::new(),
            }),
            reports: Mutex::new(Vec::new()),
        }
    }

    fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn group(&self) -> Option<String> {
        Self::lock(&self.group).clone()
    }

    pub fn moves(&self) -> Moves {
        Self::lock(&self.moves).clone()
    }

    pub async fn note_asked(&self, member: bool) {
        use chat_core::ports::MessageStore;
        let newest = match self.group() {
            Some(g) => self
                .shared
                .store
                .last_message_id(&format!("grp#{g}"))
                .await
                .unwrap_or(0),
            None => 0,
        };
        let mut m = Self::lock(&self.moves);
        // The first ask of a removal: it may be done by any of them.
        if !member && m.wanted != Some(false) {
            m.asked_last = newest;
        }
        m.wanted = Some(member);
        m.asked_at = Some(Instant::now());
    }

    /// A `group` frame: the first names the group; a change of whether
    /// the moved member is in it is a move done, noted with the store's
    /// position (read directly, as a check, not through any node).
    pub async fn saw_group(&self, gid: &str, has_moved: bool) {
        use chat_core::ports::{MembershipStore, MessageStore};
        {
            let mut g = Self::lock(&self.group);
            if g.is_none() {
                *g = Some(gid.to_string());
            }
            if g.as_deref() != Some(gid) {
                return;
            }
        }
        {
            let m = Self::lock(&self.moves);
            if m.is_member == has_moved || m.wanted != Some(has_moved) {
                return;
            }
        }
        let conv = format!("grp#{gid}");
        let store = &self.shared.store;
        let point = if has_moved {
            store
                .membership(crate::client::MOVED, &conv)
                .await
                .ok()
                .flatten()
                .map(|m| m.joined_at_id)
        } else {
            store.last_message_id(&conv).await.ok()
        };
        let mut m = Self::lock(&self.moves);
        if m.is_member == has_moved {
            return;
        }
        m.is_member = has_moved;
        m.asked_at = None;
        if has_moved {
            if let Some(last) = m.away.last_mut() {
                last.back = point;
            }
        } else {
            let asked = m.asked_last;
            m.away.push(Away {
                asked,
                removed: point.unwrap_or(0),
                back: None,
            });
        }
    }

    /// Whether the moved member is in the group now, as the store says
    /// (an answer refused, or lost).
    pub async fn saw_group_in_store(&self, gid: &str) {
        use chat_core::ports::MembershipStore;
        let conv = format!("grp#{gid}");
        if let Ok(m) = self
            .shared
            .store
            .membership(crate::client::MOVED, &conv)
            .await
        {
            self.saw_group(gid, m.is_some()).await;
        }
    }

    pub fn add_report(&self, r: DeviceReport) {
        Self::lock(&self.reports).push(r);
    }

    /// The reports, by user then device.
    pub fn take_reports(&self) -> BTreeMap<(String, String), DeviceReport> {
        Self::lock(&self.reports)
            .drain(..)
            .map(|r| ((r.user.clone(), r.device.clone()), r))
            .collect()
    }
}
