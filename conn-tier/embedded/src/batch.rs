//! The tables of one group commit. Each is opened on its first use and
//! stays open until the batch commits: opening and closing a table was
//! about a seventh of the writer thread's time when every write opened its
//! own (docs/benchmarks.md, "The store's writer"). redb allows one open
//! handle per table in a transaction, so every write of a batch goes
//! through these.

use crate::tables::*;
use chat_core::Result;
use redb::{Key, Table, TableDefinition, Value, WriteTransaction};

pub(crate) type Messages<'t> = Table<'t, (&'static str, u64), &'static [u8]>;
pub(crate) type LastIds<'t> = Table<'t, &'static str, u64>;
pub(crate) type Idempotency<'t> = Table<'t, (&'static str, &'static str), (&'static str, u64)>;
pub(crate) type Users<'t> = Table<'t, (&'static str, &'static str), &'static [u8]>;
pub(crate) type Groups<'t> = Table<'t, &'static str, &'static [u8]>;
pub(crate) type GroupMembers<'t> = Table<'t, (&'static str, &'static str), &'static [u8]>;
pub(crate) type Quotas<'t> = Table<'t, (&'static str, &'static str), u64>;
pub(crate) type Devices<'t> = Table<'t, (&'static str, &'static str), u64>;
pub(crate) type Cursors<'t> = Table<'t, (&'static str, &'static str, &'static str), (u64, u64)>;

/// One transaction's tables, opened lazily.
pub(crate) struct Batch<'t> {
    txn: &'t WriteTransaction,
    messages: Option<Messages<'t>>,
    last_ids: Option<LastIds<'t>>,
    idempotency: Option<Idempotency<'t>>,
    users: Option<Users<'t>>,
    groups: Option<Groups<'t>>,
    group_members: Option<GroupMembers<'t>>,
    quotas: Option<Quotas<'t>>,
    devices: Option<Devices<'t>>,
    cursors: Option<Cursors<'t>>,
}

/// The table in `slot`, opened now if it is not yet.
fn open<'s, 't, K: Key + 'static, V: Value + 'static>(
    txn: &'t WriteTransaction,
    slot: &'s mut Option<Table<'t, K, V>>,
    def: TableDefinition<'static, K, V>,
) -> Result<&'s mut Table<'t, K, V>> {
    Ok(match slot {
        Some(t) => t,
        None => slot.insert(txn.open_table(def).map_err(db)?),
    })
}

/// The tables an append writes.
pub(crate) struct ForAppend<'s, 't> {
    pub messages: &'s mut Messages<'t>,
    pub last_ids: &'s mut LastIds<'t>,
    pub idempotency: &'s mut Idempotency<'t>,
    pub users: &'s mut Users<'t>,
}

impl<'t> Batch<'t> {
    pub fn new(txn: &'t WriteTransaction) -> Self {
        Batch {
            txn,
            messages: None,
            last_ids: None,
            idempotency: None,
            users: None,
            groups: None,
            group_members: None,
            quotas: None,
            devices: None,
            cursors: None,
        }
    }

    pub fn for_append(&mut self) -> Result<ForAppend<'_, 't>> {
        Ok(ForAppend {
            messages: open(self.txn, &mut self.messages, MESSAGES)?,
            last_ids: open(self.txn, &mut self.last_ids, LAST_ID)?,
            idempotency: open(self.txn, &mut self.idempotency, IDEMPOTENCY)?,
            users: open(self.txn, &mut self.users, USERS)?,
        })
    }

    /// The conversation's newest id, as this batch has it so far.
    pub fn last_id(&mut self, conv: &str) -> Result<u64> {
        use redb::ReadableTable;
        let t = open(self.txn, &mut self.last_ids, LAST_ID)?;
        Ok(t.get(conv).map_err(db)?.map_or(0, |g| g.value()))
    }

    pub fn users(&mut self) -> Result<&mut Users<'t>> {
        open(self.txn, &mut self.users, USERS)
    }

    pub fn quotas(&mut self) -> Result<&mut Quotas<'t>> {
        open(self.txn, &mut self.quotas, QUOTAS)
    }

    /// The device registry and the cursors.
    pub fn for_devices(&mut self) -> Result<(&mut Devices<'t>, &mut Cursors<'t>)> {
        Ok((
            open(self.txn, &mut self.devices, DEVICES)?,
            open(self.txn, &mut self.cursors, CURSORS)?,
        ))
    }

    /// The group tables, and `users` for the members' rows.
    pub fn for_groups(
        &mut self,
    ) -> Result<(&mut Groups<'t>, &mut GroupMembers<'t>, &mut Users<'t>)> {
        Ok((
            open(self.txn, &mut self.groups, GROUPS)?,
            open(self.txn, &mut self.group_members, GROUP_MEMBERS)?,
            open(self.txn, &mut self.users, USERS)?,
        ))
    }
}
