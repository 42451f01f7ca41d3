//! Memberships: one row per (user, conversation) holding the watermark,
//! and in a group the member's newest message.

use crate::kv::{Batch, Get};
use crate::tables::*;
use crate::EmbeddedStore;
use async_trait::async_trait;
use chat_core::ports::*;
use chat_core::Result;
use std::ops::Bound;

fn key(user: &str, conv: &str) -> (String, String) {
    (user.to_string(), conv.to_string())
}

fn body(t: &mut impl Get, key: &(String, String)) -> Result<Option<MembershipBody>> {
    t.get::<Users>(key)?.map(|v| dec(&v)).transpose()
}

/// Creates the row (watermark `acked`, joined `at` when the conversation's
/// newest id was `joined_at_id`) or moves its watermark up to `acked`;
/// never down.
pub(crate) fn put(
    batch: &mut Batch<'_>,
    user: &str,
    conv: &str,
    at: u64,
    acked: u64,
    joined_at_id: u64,
) -> Result<()> {
    let key = key(user, conv);
    let body = match body(batch, &key)? {
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
    batch.put::<Users>(&key, &enc(&body))
}

/// Makes `id` the member's newest message in the group, unless a newer
/// one is there. The row exists (a group append checked it).
pub(crate) fn note_sent(batch: &mut Batch<'_>, user: &str, conv: &str, id: u64) -> Result<()> {
    let key = key(user, conv);
    let Some(mut body) = body(batch, &key)? else {
        return Ok(());
    };
    if id <= body.last_sent {
        return Ok(());
    }
    body.last_sent = id;
    batch.put::<Users>(&key, &enc(&body))
}

/// The member's marks in the conversation: newest message and watermark.
pub(crate) fn marks(t: &mut impl Get, user: &str, conv: &str) -> Result<MemberMarks> {
    let body = body(t, &key(user, conv))?;
    Ok(MemberMarks {
        user_id: user.to_string(),
        last_sent: body.as_ref().map_or(0, |b| b.last_sent),
        read_up_to: body.as_ref().map_or(0, |b| b.acked_up_to),
    })
}

/// Up to `limit` of the user's conversations after `after`, and whether
/// more follow.
pub(crate) fn page(
    snap: &mut impl Get,
    user: &str,
    after: Option<&str>,
    limit: usize,
) -> Result<(Vec<ConversationState>, bool)> {
    let lo = key(user, after.unwrap_or(""));
    let lower = match after {
        Some(_) => Bound::Excluded(&lo),
        None => Bound::Included(&lo),
    };
    let hi = key(user, PAST_ANY_ID);
    let mut rows = Vec::new();
    let mut more = false;
    snap.scan::<Users>(lower, Bound::Excluded(&hi), false, |(_, conv), v| {
        if rows.len() == limit {
            more = true;
            return Ok(false);
        }
        rows.push((conv, dec::<MembershipBody>(&v)?));
        Ok(true)
    })?;
    let mut out = Vec::with_capacity(rows.len());
    for (conv, b) in rows {
        let last_message_id = snap.get::<LastId>(&conv)?.unwrap_or(0);
        out.push(ConversationState {
            membership: b.membership(conv),
            last_message_id,
        });
    }
    Ok((out, more))
}

pub(crate) fn get(snap: &mut impl Get, user: &str, conv: &str) -> Result<Option<Membership>> {
    Ok(body(snap, &key(user, conv))?.map(|b| b.membership(conv.to_string())))
}

/// Every conversation of `user`, with its newest id.
pub(crate) fn of_user(snap: &mut impl Get, user: &str) -> Result<Vec<ConversationState>> {
    Ok(page(snap, user, None, usize::MAX)?.0)
}

/// Moves the watermark forward to `up_to`: where it was and is, or
/// `None` if not a member.
pub(crate) fn advance(
    batch: &mut Batch<'_>,
    user: &str,
    conv: &str,
    up_to: u64,
) -> Result<Option<Watermark>> {
    let key = key(user, conv);
    let Some(current) = body(batch, &key)? else {
        return Ok(None);
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
    batch.put::<Users>(&key, &enc(&body))?;
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
