//! Messages: the append (idempotency check, id allocation, watermark and
//! enrollment, all inside the group-commit transaction) and reading pages.

use crate::error::Error as StoreErr;
use crate::kv::{Batch, Get};
use crate::memberships;
use crate::tables::*;
use crate::EmbeddedStore;
use async_trait::async_trait;
use chat_core::ports::*;
use chat_core::{Error, Result};
use std::ops::Bound;

pub(crate) fn read_message(conv: &str, id: u64, body: &[u8]) -> Result<StoredMessage> {
    let b: MessageBody = dec(body)?;
    Ok(StoredMessage {
        conversation_id: conv.to_string(),
        message_id: id,
        sender: b.sender,
        client_msg_id: b.client_msg_id,
        text: b.text,
        sent_at_ms: b.sent_at_ms,
        origin: b.origin,
    })
}

/// The append itself, inside a write transaction: the idempotency check,
/// the next id, the message, the sender's watermark, the enrollments.
pub(crate) fn append(
    batch: &mut Batch<'_>,
    msg: NewMessage,
) -> Result<(Appended, Option<StoredMessage>)> {
    let idem_key = (msg.sender, msg.client_msg_id);
    if let Some((conv, id)) = batch.get::<Idempotency>(&idem_key)? {
        let key = (conv, id);
        let body = batch.get::<Messages>(&key)?.ok_or_else(|| {
            Error::from(StoreErr::Corrupt(format!(
                "idempotency record points at missing {}/{id}",
                key.0
            )))
        })?;
        let message = read_message(&key.0, id, &body)?;
        return Ok((
            Appended {
                message,
                duplicate: true,
            },
            None,
        ));
    }
    let (sender, client_msg_id) = idem_key;
    let conv = msg.conversation_id;
    let member = (sender, conv);
    if msg.member_only && batch.get::<Users>(&member)?.is_none() {
        return Err(Error::Forbidden);
    }
    let (sender, conv) = member;
    let id = batch.get::<LastId>(&conv)?.unwrap_or(0) + 1;
    batch.put::<LastId>(&conv, &id)?;
    let body = MessageBody {
        sender,
        client_msg_id,
        text: msg.text,
        sent_at_ms: msg.sent_at_ms,
        origin: msg.origin,
    };
    let key = (conv, id);
    batch.put::<Messages>(&key, &enc(&body))?;
    let (conv, _) = key;
    let idem_key = (body.sender, body.client_msg_id);
    batch.put::<Idempotency>(&idem_key, &(conv.clone(), id))?;
    let (sender, client_msg_id) = idem_key;
    memberships::put(batch, &sender, &conv, msg.sent_at_ms, id, 0)?;
    if msg.member_only {
        memberships::note_sent(batch, &sender, &conv, id)?;
    }
    for u in &msg.enroll {
        memberships::put(batch, u, &conv, msg.sent_at_ms, 0, 0)?;
    }
    let message = StoredMessage {
        conversation_id: conv,
        message_id: id,
        sender,
        client_msg_id,
        text: body.text,
        sent_at_ms: body.sent_at_ms,
        origin: body.origin,
    };
    Ok((
        Appended {
            message: message.clone(),
            duplicate: false,
        },
        Some(message),
    ))
}

pub(crate) fn after(
    snap: &mut impl Get,
    conv: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredMessage>> {
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    let (lo, hi) = (
        (conv.to_string(), after.saturating_add(1)),
        (conv.to_string(), u64::MAX),
    );
    snap.scan::<Messages>(
        Bound::Included(&lo),
        Bound::Included(&hi),
        false,
        |(c, id), body| {
            out.push(read_message(&c, id, &body)?);
            Ok(out.len() < limit)
        },
    )?;
    Ok(out)
}

/// Up to `limit` messages below `before` (or the newest), ascending.
pub(crate) fn before(
    snap: &mut impl Get,
    conv: &str,
    before: Option<u64>,
    limit: usize,
) -> Result<HistoryPage> {
    let (lo, hi) = (
        (conv.to_string(), 0),
        (conv.to_string(), before.unwrap_or(u64::MAX)),
    );
    let mut out = Vec::new();
    let mut has_more = false;
    snap.scan::<Messages>(
        Bound::Included(&lo),
        Bound::Excluded(&hi),
        true,
        |(c, id), body| {
            if out.len() == limit {
                has_more = true;
                return Ok(false);
            }
            out.push(read_message(&c, id, &body)?);
            Ok(true)
        },
    )?;
    out.reverse();
    Ok(HistoryPage {
        messages: out,
        has_more,
    })
}

/// The conversation's newest id (0 if none).
pub(crate) fn last_id(snap: &mut impl Get, conv: &str) -> Result<u64> {
    Ok(snap.get::<LastId>(&conv.to_string())?.unwrap_or(0))
}

#[async_trait]
impl MessageStore for EmbeddedStore {
    async fn append(&self, msg: NewMessage) -> Result<Appended> {
        self.queue(move |batch| append(batch, msg))
            .await?
            .await
            .map_err(|_| Error::from(StoreErr::WriterStopped))?
    }

    async fn append_queued(
        &self,
        msg: NewMessage,
    ) -> Result<futures_util::future::BoxFuture<'static, Result<Appended>>> {
        let rx = self.queue(move |batch| append(batch, msg)).await?;
        let health = self.health.clone();
        Ok(Box::pin(async move {
            rx.await.map_err(|_| crate::unanswered(&health))?
        }))
    }

    async fn messages_after(
        &self,
        conv: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>> {
        self.read(|t| self::after(t, conv, after, limit))
    }

    async fn messages_before(
        &self,
        conv: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.read(|t| self::before(t, conv, before, limit))
    }

    async fn last_message_id(&self, conv: &str) -> Result<u64> {
        self.read(|t| last_id(t, conv))
    }
}
