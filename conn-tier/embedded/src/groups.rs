//! Groups: the group's body and one row per member, changed inside the
//! write transaction only if the version still matches.

use crate::batch::{Batch, Groups};
use crate::memberships;
use crate::tables::*;
use crate::EmbeddedStore;
use async_trait::async_trait;
use chat_core::ids::ConversationId;
use chat_core::ports::*;
use chat_core::{Error, Result};
use redb::ReadableTable;

pub(crate) fn read<
    T: ReadableTable<&'static str, &'static [u8]>,
    M: ReadableTable<(&'static str, &'static str), &'static [u8]>,
>(
    groups: &T,
    members: &M,
    group_id: &str,
) -> Result<Option<Group>> {
    let Some(body) = groups.get(group_id).map_err(db)? else {
        return Ok(None);
    };
    let body: GroupBody = dec(body.value())?;
    let mut list = Vec::new();
    for row in members
        .range((group_id, "")..(group_id, PAST_ANY_ID))
        .map_err(db)?
    {
        let (_, v) = row.map_err(db)?;
        list.push(dec::<GroupMember>(v.value())?);
    }
    list.sort_by_key(|m| m.seq);
    Ok(Some(Group {
        group_id: group_id.to_string(),
        name: body.name,
        created_by: body.created_by,
        created_at_ms: body.created_at_ms,
        admins: body.admins,
        members: list,
        version: body.version,
        next_seq: body.next_seq,
    }))
}

fn write_body(groups: &mut Groups<'_>, g: &Group) -> Result<()> {
    let body = GroupBody {
        name: g.name.clone(),
        created_by: g.created_by.clone(),
        created_at_ms: g.created_at_ms,
        admins: g.admins.clone(),
        version: g.version,
        next_seq: g.next_seq,
    };
    groups
        .insert(g.group_id.as_str(), enc(&body).as_slice())
        .map_err(db)?;
    Ok(())
}

/// Stores a new group, its members and their membership rows.
pub(crate) fn create(batch: &mut Batch<'_>, group: &Group) -> Result<()> {
    let (groups, members, users) = batch.for_groups()?;
    if groups.get(group.group_id.as_str()).map_err(db)?.is_some() {
        return Err(Error::Contended);
    }
    write_body(groups, group)?;
    let conv = ConversationId::group(&group.group_id).to_string();
    for m in &group.members {
        members
            .insert(
                (group.group_id.as_str(), m.user_id.as_str()),
                enc(m).as_slice(),
            )
            .map_err(db)?;
    }
    for m in &group.members {
        memberships::put(users, &m.user_id, &conv, m.joined_at_ms, 0, 0)?;
    }
    Ok(())
}

/// Applies `change` if the group is still at its expected version.
pub(crate) fn update(batch: &mut Batch<'_>, change: &GroupChange) -> Result<Group> {
    let current = {
        let (groups, members, _) = batch.for_groups()?;
        read(&*groups, &*members, &change.group_id)?
    };
    let Some(current) = current else {
        return Err(Error::NotFound("no such group".into()));
    };
    if current.version != change.expected_version {
        return Err(Error::Contended);
    }
    if !change.add.is_empty() {
        let conv = ConversationId::group(&change.group_id).to_string();
        let newest = batch.last_id(&conv)?;
        if change.add.iter().any(|m| m.joined_at_id != newest) {
            return Err(Error::Contended);
        }
    }
    let (groups, members, users) = batch.for_groups()?;
    let updated = current.apply(change);
    write_body(groups, &updated)?;
    let gid = change.group_id.as_str();
    let conv = ConversationId::group(gid).to_string();
    for u in &change.remove {
        members.remove((gid, u.as_str())).map_err(db)?;
    }
    for m in &change.add {
        members
            .insert((gid, m.user_id.as_str()), enc(m).as_slice())
            .map_err(db)?;
    }
    for u in &change.remove {
        users.remove((u.as_str(), conv.as_str())).map_err(db)?;
    }
    for m in &change.add {
        let at = m.joined_at_id;
        memberships::put(users, &m.user_id, &conv, m.joined_at_ms, at, at)?;
    }
    Ok(updated)
}

#[async_trait]
impl GroupStore for EmbeddedStore {
    async fn group(&self, group_id: &str) -> Result<Option<Group>> {
        self.read(|txn| {
            let groups = txn.open_table(GROUPS).map_err(db)?;
            let members = txn.open_table(GROUP_MEMBERS).map_err(db)?;
            read(&groups, &members, group_id)
        })
    }

    async fn create_group(&self, group: &Group) -> Result<()> {
        let group = group.clone();
        self.write(move |batch| create(batch, &group)).await
    }

    async fn update_group(&self, change: &GroupChange) -> Result<Group> {
        let change = change.clone();
        self.write(move |batch| update(batch, &change)).await
    }

    async fn group_version(&self, group_id: &str) -> Result<Option<u64>> {
        self.read(|txn| {
            let groups = txn.open_table(GROUPS).map_err(db)?;
            let Some(body) = groups.get(group_id).map_err(db)? else {
                return Ok(None);
            };
            Ok(Some(dec::<GroupBody>(body.value())?.version))
        })
    }

    async fn member_marks(&self, group_id: &str) -> Result<Vec<MemberMarks>> {
        let conv = ConversationId::group(group_id).to_string();
        self.read(|txn| {
            let members = txn.open_table(GROUP_MEMBERS).map_err(db)?;
            let users = txn.open_table(USERS).map_err(db)?;
            let mut out = Vec::new();
            for row in members
                .range((group_id, "")..(group_id, PAST_ANY_ID))
                .map_err(db)?
            {
                let (k, _) = row.map_err(db)?;
                let (_, user) = k.value();
                out.push(memberships::marks(&users, user, &conv)?);
            }
            Ok(out)
        })
    }

    async fn note_read(&self, _group_id: &str, _user_id: &str, _up_to: u64) -> Result<()> {
        // The marks read the memberships' watermarks.
        Ok(())
    }
}
