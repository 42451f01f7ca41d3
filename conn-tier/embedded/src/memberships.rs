//! Memberships: one row per (user, conversation) holding the watermark,
//! and in a group the member's newest message.

use crate::batch::{Batch, Users};
use crate::tables::*;
use crate::EmbeddedStore;
use async_trait::async_trait;
use chat_core::ports::*;
use chat_core::Result;
use redb::{ReadTransaction, ReadableTable};

/// Creates the row (watermark `acked`, joined `at` when the conversation's
/// newest id was `joined_at_id`) or moves its watermark up to `acked`;
/// never down.
pub(crate) fn put(
    users: &mut Users<'_>,
    user: &str,
    conv: &str,
    at: u64,
    acked: u64,
    joined_at_id: u64,
) -> Result<()> {
    let current = match users.get((user, conv)).map_err(db)? {
        Some(v) => Some(dec::<MembershipBody>(v.value())?),
        None => None,
    };
    let body = match current {
        Some(m) if m.acked_up_to >= acked => return Ok(()),
        Some(m) => MembershipBody {
            acked_up_to: acked,
            ..m
        },
        None => MembershipBody {
            acked_up_to: acked,
            joined_at_ms: at,
            joined_at_id,
            last_sent: 0,
        },
    };
    users
        .insert((user, conv), enc(&body).as_slice())
        .map_err(db)?;
    Ok(())
}

/// Makes `id` the member's newest message in the group, unless a newer
/// one is there. The row exists (a group append checked it).
pub(crate) fn note_sent(users: &mut Users<'_>, user: &str, conv: &str, id: u64) -> Result<()> {
    let Some(mut body) = users
        .get((user, conv))
        .map_err(db)?
        .map(|v| dec::<MembershipBody>(v.value()))
        .transpose()?
    else {
        return Ok(());
    };
    if id <= body.last_sent {
        return Ok(());
    }
    body.last_sent = id;
    users
        .insert((user, conv), enc(&body).as_slice())
        .map_err(db)?;
    Ok(())
}

/// The member's marks in the conversation: newest message and watermark.
pub(crate) fn marks(
    users: &impl ReadableTable<(&'static str, &'static str), &'static [u8]>,
    user: &str,
    conv: &str,
) -> Result<MemberMarks> {
    let body = match users.get((user, conv)).map_err(db)? {
        Some(v) => Some(dec::<MembershipBody>(v.value())?),
        None => None,
    };
    Ok(MemberMarks {
        user_id: user.to_string(),
        last_sent: body.as_ref().map_or(0, |b| b.last_sent),
        read_up_to: body.as_ref().map_or(0, |b| b.acked_up_to),
    })
}

/// Up to `limit` of the user's conversations after `after`, and whether
/// more follow.
pub(crate) fn page(
    txn: &ReadTransaction,
    user: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<ConversationState>, bool)> {
    use std::ops::Bound;
    let users = txn.open_table(USERS).map_err(db)?;
    let last = txn.open_table(LAST_ID).map_err(db)?;
    let lower = match after {
        Some(a) => Bound::Excluded((user, a)),
        None => Bound::Included((user, "")),
    };
    let mut rows = users
        .range::<(&str, &str)>((lower, Bound::Excluded((user, PAST_ANY_ID))))
        .map_err(db)?;
    let mut out = Vec::new();
    for row in rows.by_ref().take(limit) {
        let (k, v) = row.map_err(db)?;
        let conv = k.value().1.to_string();
        let b: MembershipBody = dec(v.value())?;
        let last_message_id = last
            .get(conv.as_str())
            .map_err(db)?
            .map_or(0, |g| g.value());
        out.push(ConversationState {
            membership: b.membership(conv),
            last_message_id,
        });
    }
    Ok((out, rows.next().is_some()))
}

pub(crate) fn get(txn: &ReadTransaction, user: &str, conv: &str) -> Result<Option<Membership>> {
    let t = txn.open_table(USERS).map_err(db)?;
    match t.get((user, conv)).map_err(db)? {
        None => Ok(None),
        Some(v) => {
            let b: MembershipBody = dec(v.value())?;
            Ok(Some(b.membership(conv.to_string())))
        }
    }
}

/// Every conversation of `user`, with its newest id.
pub(crate) fn of_user(txn: &ReadTransaction, user: &str) -> Result<Vec<ConversationState>> {
    Ok(page(txn, user, None, usize::MAX)?.0)
}

/// Moves the watermark forward to `up_to`: where it was and is, or
/// `None` if not a member.
pub(crate) fn advance(
    batch: &mut Batch<'_>,
    user: &str,
    conv: &str,
    up_to: u64,
) -> Result<Option<Watermark>> {
    let users = batch.users()?;
    let current = match users.get((user, conv)).map_err(db)? {
        None => return Ok(None),
        Some(v) => dec::<MembershipBody>(v.value())?,
    };
    let before = current.acked_up_to;
    if up_to <= before {
        return Ok(Some(Watermark {
            before,
            after: before,
        }));
    }
    let body = MembershipBody {
        acked_up_to: up_to,
        ..current
    };
    users
        .insert((user, conv), enc(&body).as_slice())
        .map_err(db)?;
    Ok(Some(Watermark {
        before,
        after: up_to,
    }))
}

#[async_trait]
impl MembershipStore for EmbeddedStore {
    async fn membership(&self, user: &str, conv: &str) -> Result<Option<Membership>> {
        self.read(|t| get(t, user, conv))
    }

    async fn conversations(&self, user: &str) -> Result<Vec<ConversationState>> {
        self.read(|t| of_user(t, user))
    }

    async fn conversations_page(
        &self,
        user: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ConversationState>, bool)> {
        self.read(|t| page(t, user, after, limit))
    }

    async fn advance_watermark(
        &self,
        user: &str,
        conv: &str,
        up_to: u64,
    ) -> Result<Option<Watermark>> {
        let (user, conv) = (user.to_string(), conv.to_string());
        self.write(move |batch| advance(batch, &user, &conv, up_to))
            .await
    }
}
