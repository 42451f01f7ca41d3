//! Groups: the group's body and one row per member, changed inside the
//! write transaction only if the version still matches.

use crate::kv::{Batch, Get};
use crate::tables::*;
use crate::{memberships, messages, EmbeddedStore};
use async_trait::async_trait;
use chat_core::ids::ConversationId;
use chat_core::ports::*;
use chat_core::{Error, Result};
use std::ops::Bound;

/// The group's members' keys, `(group, "")..(group, PAST_ANY_ID)`.
fn members_range(group_id: &str) -> ((String, String), (String, String)) {
    (
        (group_id.to_string(), String::new()),
        (group_id.to_string(), PAST_ANY_ID.to_string()),
    )
}

pub(crate) fn read(t: &mut impl Get, group_id: &str) -> Result<Option<Group>> {
    let Some(body) = t.get::<Groups>(&group_id.to_string())? else {
        return Ok(None);
    };
    let body: GroupBody = dec(&body)?;
    let mut list = Vec::new();
    let (lo, hi) = members_range(group_id);
    t.scan::<GroupMembers>(Bound::Included(&lo), Bound::Excluded(&hi), false, |_, v| {
        list.push(dec::<GroupMember>(&v)?);
        Ok(true)
    })?;
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

fn write_body(batch: &mut Batch<'_>, g: &Group) -> Result<()> {
    let body = GroupBody {
        name: g.name.clone(),
        created_by: g.created_by.clone(),
        created_at_ms: g.created_at_ms,
        admins: g.admins.clone(),
        version: g.version,
        next_seq: g.next_seq,
    };
    batch.put::<Groups>(&g.group_id, &enc(&body))
}

fn member_key(group_id: &str, user: &str) -> (String, String) {
    (group_id.to_string(), user.to_string())
}

/// Stores a new group, its members and their membership rows.
pub(crate) fn create(batch: &mut Batch<'_>, group: &Group) -> Result<()> {
    if batch.get::<Groups>(&group.group_id)?.is_some() {
        return Err(Error::Contended);
    }
    write_body(batch, group)?;
    let conv = ConversationId::group(&group.group_id).to_string();
    for m in &group.members {
        batch.put::<GroupMembers>(&member_key(&group.group_id, &m.user_id), &enc(m))?;
    }
    for m in &group.members {
        memberships::put(batch, &m.user_id, &conv, m.joined_at_ms, 0, 0)?;
    }
    Ok(())
}

/// Applies `change` if the group is still at its expected version.
pub(crate) fn update(batch: &mut Batch<'_>, change: &GroupChange) -> Result<Group> {
    let Some(current) = read(batch, &change.group_id)? else {
        return Err(Error::NotFound("no such group".into()));
    };
    if current.version != change.expected_version {
        return Err(Error::Contended);
    }
    let gid = change.group_id.as_str();
    let conv = ConversationId::group(gid).to_string();
    if !change.add.is_empty() {
        let newest = messages::last_id(batch, &conv)?;
        if change.add.iter().any(|m| m.joined_at_id != newest) {
            return Err(Error::Contended);
        }
    }
    let updated = current.apply(change);
    write_body(batch, &updated)?;
    for u in &change.remove {
        batch.del::<GroupMembers>(&member_key(gid, u))?;
    }
    for m in &change.add {
        batch.put::<GroupMembers>(&member_key(gid, &m.user_id), &enc(m))?;
    }
    for u in &change.remove {
        batch.del::<Users>(&(u.clone(), conv.clone()))?;
    }
    for m in &change.add {
        let at = m.joined_at_id;
        memberships::put(batch, &m.user_id, &conv, m.joined_at_ms, at, at)?;
    }
    Ok(updated)
}

#[async_trait]
impl GroupStore for EmbeddedStore {
    async fn group(&self, group_id: &str) -> Result<Option<Group>> {
        self.read(|t| read(t, group_id))
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
        self.read(|t| {
            let Some(body) = t.get::<Groups>(&group_id.to_string())? else {
                return Ok(None);
            };
            Ok(Some(dec::<GroupBody>(&body)?.version))
        })
    }

    async fn member_marks(&self, group_id: &str) -> Result<Vec<MemberMarks>> {
        let conv = ConversationId::group(group_id).to_string();
        self.read(|t| {
            let mut users = Vec::new();
            let (lo, hi) = members_range(group_id);
            t.scan::<GroupMembers>(
                Bound::Included(&lo),
                Bound::Excluded(&hi),
                false,
                |(_, u), _| {
                    users.push(u);
                    Ok(true)
                },
            )?;
            users
                .iter()
                .map(|u| memberships::marks(t, u, &conv))
                .collect()
        })
    }

    async fn note_read(&self, _group_id: &str, _user_id: &str, _up_to: u64) -> Result<()> {
        // The marks read the memberships' watermarks.
        Ok(())
    }
}
