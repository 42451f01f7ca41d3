//! The redb tables (the key layout of docs/design.md, "Data model") and the
//! JSON bodies stored in them.

use crate::error::Error as StoreErr;
use chat_core::{Error, Result};
use redb::TableDefinition;
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Sorts after every id (ids are printable ASCII): the upper end of a
/// range over one key's rows, as in `(user, "")..(user, PAST_ANY_ID)`.
pub(crate) const PAST_ANY_ID: &str = "\u{7f}";

/// messages: (conversation_id, message_id) -> MessageBody
pub(crate) const MESSAGES: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("messages");
/// conversation_id -> newest message_id (the id allocator)
pub(crate) const LAST_ID: TableDefinition<&str, u64> = TableDefinition::new("conversation_last_id");
/// (sender, client_msg_id) -> (conversation_id, message_id): idempotency
pub(crate) const IDEMPOTENCY: TableDefinition<(&str, &str), (&str, u64)> =
    TableDefinition::new("idempotency");
/// users: (user_id, conversation_id) -> MembershipBody
pub(crate) const USERS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("users");
/// groups: group_id -> GroupBody (name, admins, version)
pub(crate) const GROUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("groups");
/// quotas: (user_id, key) -> units taken
pub(crate) const QUOTAS: TableDefinition<(&str, &str), u64> = TableDefinition::new("quotas");
/// devices: (user_id, device_id) -> when it was last used (ms)
pub(crate) const DEVICES: TableDefinition<(&str, &str), u64> = TableDefinition::new("devices");
/// cursors: (user_id, device_id, conversation_id) -> (cursor, moved at ms)
pub(crate) const CURSORS: TableDefinition<(&str, &str, &str), (u64, u64)> =
    TableDefinition::new("cursors");
/// group members: (group_id, user_id) -> GroupMember
pub(crate) const GROUP_MEMBERS: TableDefinition<(&str, &str), &[u8]> =
    TableDefinition::new("group_members");

#[derive(Serialize, Deserialize)]
pub(crate) struct MessageBody {
    pub sender: String,
    pub client_msg_id: String,
    pub text: String,
    pub sent_at_ms: u64,
    /// The sending connection (absent in records written before it was kept).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

#[derive(Serialize, Deserialize)]
pub(crate) struct MembershipBody {
    pub acked_up_to: u64,
    pub joined_at_ms: u64,
    /// The conversation's newest id at the join (0 in rows written before
    /// it was kept).
    #[serde(default)]
    pub joined_at_id: u64,
    /// A group: the member's newest message id in it (0: none yet), for
    /// receipts (docs/design.md, "Receipts").
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_sent: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl MembershipBody {
    pub(crate) fn membership(self, conversation_id: String) -> chat_core::ports::Membership {
        chat_core::ports::Membership {
            conversation_id,
            acked_up_to: self.acked_up_to,
            joined_at_ms: self.joined_at_ms,
            joined_at_id: self.joined_at_id,
        }
    }
}

#[derive(Serialize, Deserialize)]
pub(crate) struct GroupBody {
    pub name: String,
    pub created_by: String,
    pub created_at_ms: u64,
    pub admins: Vec<String>,
    pub version: u64,
    pub next_seq: u64,
}

pub(crate) fn enc<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}

pub(crate) fn dec<T: DeserializeOwned>(b: &[u8]) -> Result<T> {
    serde_json::from_slice(b).map_err(|e| StoreErr::Corrupt(e.to_string()).into())
}

/// A redb failure as the services see it.
pub(crate) fn db<E: Into<redb::Error>>(e: E) -> Error {
    StoreErr::db(e).into()
}

/// A table of a read transaction, `None` if the file does not have it (a
/// file written by an import, or by an older build).
pub(crate) fn open_if_exists<K: redb::Key + 'static, V: redb::Value + 'static>(
    txn: &redb::ReadTransaction,
    def: TableDefinition<K, V>,
) -> std::result::Result<Option<redb::ReadOnlyTable<K, V>>, StoreErr> {
    match txn.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(StoreErr::db(e)),
    }
}
