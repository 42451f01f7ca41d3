//! The tables (the key layout of docs/design.md, "Data model"), kept by
//! either engine (`crate::kv`), and the JSON bodies stored in them.

use crate::error::Error as StoreErr;
use crate::kv::redb::{RTable, WTable};
use crate::kv::Tbl;
use chat_core::{Error, Result};
use serde::{de::DeserializeOwned, Deserialize, Serialize};

/// Sorts after every id (ids are printable ASCII): the upper end of a
/// range over one key's rows, as in `(user, "")..(user, PAST_ANY_ID)`.
pub(crate) const PAST_ANY_ID: &str = "\u{7f}";

/// Declares the tables: a marker type per table ([`Tbl`]), the list of
/// names in [`Tbl::IDX`] order, and the redb engine's slots for their open
/// handles.
macro_rules! tables {
    ($($(#[$doc:meta])* $ty:ident, $field:ident, $name:literal, $idx:literal: $k:ty => $v:ty;)*) => {
        $(
            $(#[$doc])*
            pub(crate) struct $ty;
            impl Tbl for $ty {
                const NAME: &'static str = $name;
                const IDX: usize = $idx;
                type K = $k;
                type V = $v;
                fn write_slot<'s, 't>(s: &'s mut WriteSlots<'t>) -> &'s mut Option<WTable<'t, Self>> {
                    &mut s.$field
                }
                fn read_slot(s: &mut ReadSlots) -> &mut Option<RTable<Self>> {
                    &mut s.$field
                }
            }
        )*
        /// Every table's name, in [`Tbl::IDX`] order.
        pub(crate) const ALL: &[&str] = &[$($name),*];

        /// A redb write transaction's open tables.
        #[derive(Default)]
        pub(crate) struct WriteSlots<'t> {
            $($field: Option<WTable<'t, $ty>>,)*
        }

        /// A redb read transaction's open tables.
        #[derive(Default)]
        pub(crate) struct ReadSlots {
            $($field: Option<RTable<$ty>>,)*
        }

        /// Creates every table of a redb file that lacks one.
        pub(crate) fn create_all(txn: &redb::WriteTransaction) -> std::result::Result<(), StoreErr> {
            $(txn.open_table($ty::def()).map_err(StoreErr::db)?;)*
            Ok(())
        }
    };
}

tables! {
    /// messages: (conversation_id, message_id) -> MessageBody
    Messages, messages, "messages", 0: (String, u64) => Vec<u8>;
    /// conversation_id -> newest message_id (the id allocator)
    LastId, last_id, "conversation_last_id", 1: String => u64;
    /// (sender, client_msg_id) -> (conversation_id, message_id): idempotency
    Idempotency, idempotency, "idempotency", 2: (String, String) => (String, u64);
    /// users: (user_id, conversation_id) -> MembershipBody
    Users, users, "users", 3: (String, String) => Vec<u8>;
    /// groups: group_id -> GroupBody (name, admins, version)
    Groups, groups, "groups", 4: String => Vec<u8>;
    /// group members: (group_id, user_id) -> GroupMember
    GroupMembers, group_members, "group_members", 5: (String, String) => Vec<u8>;
    /// quotas: (user_id, key) -> units taken
    Quotas, quotas, "quotas", 6: (String, String) => u64;
    /// devices: (user_id, device_id) -> when it was last used (ms)
    Devices, devices, "devices", 7: (String, String) => u64;
    /// cursors: (user_id, device_id, conversation_id) -> (cursor, moved at ms)
    Cursors, cursors, "cursors", 8: (String, String, String) => (u64, u64);
}

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
