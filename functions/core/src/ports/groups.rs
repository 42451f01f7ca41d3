//! Groups and their members: the records and the [`GroupStore`] port.

use crate::error::Result;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMember {
    pub user_id: String,
    pub joined_at_ms: u64,
    /// Join order, for "the earliest-joined member becomes admin"; ties
    /// in `joined_at_ms` are common within one createGroup.
    pub seq: u64,
    /// The conversation's newest id when the member joined (its
    /// membership's `joined_at_id`): a fan-out sends the member no message
    /// at or below it, so a message stored while they were away never
    /// reaches them, however late its fan-out runs (docs/design.md,
    /// "Removal"). 0 for the first members, and in rows written before it
    /// was kept.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub joined_at_id: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl GroupMember {
    /// A member as `createGroup` makes it: joined at the conversation's
    /// start (join point 0).
    pub fn founding(user_id: impl Into<String>, joined_at_ms: u64, seq: u64) -> Self {
        GroupMember {
            user_id: user_id.into(),
            joined_at_ms,
            seq,
            joined_at_id: 0,
        }
    }
}

/// A group and its members, as read in one consistent view.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Group {
    pub group_id: String,
    pub name: String,
    pub created_by: String,
    pub created_at_ms: u64,
    pub admins: Vec<String>,
    /// In join order.
    pub members: Vec<GroupMember>,
    /// Bumped by every change; changes are conditional on it.
    pub version: u64,
    /// Next `seq` for a joining member.
    pub next_seq: u64,
}

impl Group {
    pub fn is_member(&self, user: &str) -> bool {
        self.members.iter().any(|m| m.user_id == user)
    }
    pub fn is_admin(&self, user: &str) -> bool {
        self.admins.iter().any(|a| a == user)
    }
    pub fn member_ids(&self) -> Vec<String> {
        self.members.iter().map(|m| m.user_id.clone()).collect()
    }

    /// The group after `change` (read at `change.expected_version`). Every
    /// adapter applies changes with this, so the rule lives in one place.
    pub fn apply(mut self, change: &GroupChange) -> Group {
        self.members.retain(|m| !change.remove.contains(&m.user_id));
        for m in &change.add {
            if !self.is_member(&m.user_id) {
                self.next_seq = self.next_seq.max(m.seq + 1);
                self.members.push(m.clone());
            }
        }
        self.members.sort_by_key(|m| m.seq);
        self.admins = change.admins.clone();
        self.version += 1;
        self
    }
}

/// A membership change, applied atomically only if the group is still at
/// `expected_version`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupChange {
    pub group_id: String,
    pub expected_version: u64,
    /// The admin list afterwards.
    pub admins: Vec<String>,
    /// Members to add. Each one's membership row starts at its
    /// `joined_at_id` (the group's newest id), as join point and watermark,
    /// so `sync` does not replay old history.
    pub add: Vec<GroupMember>,
    pub remove: Vec<String>,
}

/// A group member's newest message in the group and how far they have
/// read it, kept together on the member so that an `ack` finds the authors
/// it covers, `receipts` answers and a `conversations` item counts its
/// readers, each with one read of the members and none of the messages
/// (docs/design.md, "Receipts").
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct MemberMarks {
    pub user_id: String,
    /// The member's newest message id in the group (0: none yet).
    pub last_sent: u64,
    /// The member's read watermark in the group.
    pub read_up_to: u64,
}

/// Groups and their members.
#[async_trait]
pub trait GroupStore: Send + Sync {
    async fn group(&self, group_id: &str) -> Result<Option<Group>>;

    /// Stores a new group, its members and their membership rows (watermark 0).
    async fn create_group(&self, group: &Group) -> Result<()>;

    /// Applies `change`; [`crate::Error::Contended`] if the version moved,
    /// or if a member added does not join at the conversation's newest id
    /// (a message came after it: docs/design.md, "Removal").
    async fn update_group(&self, change: &GroupChange) -> Result<Group>;

    /// The group's version, read strongly consistent and cheaply (no
    /// member list): what a member-list cache checks before each use.
    async fn group_version(&self, group_id: &str) -> Result<Option<u64>>;

    /// Every member's [`MemberMarks`]: the newest message (written by
    /// [`MessageStore::append`](super::MessageStore::append) with `member_only`) and the read watermark
    /// (written by [`GroupStore::note_read`]).
    async fn member_marks(&self, group_id: &str) -> Result<Vec<MemberMarks>>;

    /// Moves the member's read watermark where [`GroupStore::member_marks`]
    /// reads it forward to `up_to` (after the membership's own, which
    /// [`MembershipStore::advance_watermark`](super::MembershipStore::advance_watermark) moved). A store that reads
    /// the memberships for the marks has nothing more to write.
    async fn note_read(&self, group_id: &str, user_id: &str, up_to: u64) -> Result<()>;
}
