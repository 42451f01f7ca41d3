//! Messages: the append (idempotency check, id allocation, watermark and
//! enrollment, all inside the group-commit transaction) and reading pages.

use crate::batch::{Batch, ForAppend};
use crate::error::Error as StoreErr;
use crate::memberships;
use crate::tables::*;
use crate::EmbeddedStore;
use async_trait::async_trait;
use chat_core::ports::*;
use chat_core::{Error, Result};
use redb::{ReadTransaction, ReadableTable};

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
    let ForAppend {
        messages,
        last_ids,
        idempotency: idem,
        users,
    } = batch.for_append()?;
    let hit = idem
        .get((msg.sender.as_str(), msg.client_msg_id.as_str()))
        .map_err(db)?
        .map(|g| {
            let (c, id) = g.value();
            (c.to_string(), id)
        });
    if let Some((conv, id)) = hit {
        let body = messages
            .get((conv.as_str(), id))
            .map_err(db)?
            .ok_or_else(|| {
                Error::from(StoreErr::Corrupt(format!(
                    "idempotency record points at missing {conv}/{id}"
                )))
            })?;
        let message = read_message(&conv, id, body.value())?;
        return Ok((
            Appended {
                message,
                duplicate: true,
            },
            None,
        ));
    }
    if msg.member_only
        && users
            .get((msg.sender.as_str(), msg.conversation_id.as_str()))
            .map_err(db)?
            .is_none()
    {
        return Err(Error::Forbidden);
    }
    let conv = msg.conversation_id.as_str();
    let id = last_ids.get(conv).map_err(db)?.map_or(0, |g| g.value()) + 1;
    last_ids.insert(conv, id).map_err(db)?;
    let body = MessageBody {
        sender: msg.sender.clone(),
        client_msg_id: msg.client_msg_id.clone(),
        text: msg.text,
        sent_at_ms: msg.sent_at_ms,
        origin: msg.origin.clone(),
    };
    messages
        .insert((conv, id), enc(&body).as_slice())
        .map_err(db)?;
    idem.insert(
        (msg.sender.as_str(), msg.client_msg_id.as_str()),
        (conv, id),
    )
    .map_err(db)?;
    memberships::put(users, &msg.sender, conv, msg.sent_at_ms, id, 0)?;
    if msg.member_only {
        memberships::note_sent(users, &msg.sender, conv, id)?;
    }
    for u in &msg.enroll {
        memberships::put(users, u, conv, msg.sent_at_ms, 0, 0)?;
    }
    let message = StoredMessage {
        conversation_id: msg.conversation_id.clone(),
        message_id: id,
        sender: body.sender,
        client_msg_id: body.client_msg_id,
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
    txn: &ReadTransaction,
    conv: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<StoredMessage>> {
    let t = txn.open_table(MESSAGES).map_err(db)?;
    let mut out = Vec::new();
    for row in t
        .range((conv, after.saturating_add(1))..=(conv, u64::MAX))
        .map_err(db)?
        .take(limit)
    {
        let (k, v) = row.map_err(db)?;
        out.push(read_message(conv, k.value().1, v.value())?);
    }
    Ok(out)
}

/// Up to `limit` messages below `before` (or the newest), ascending.
pub(crate) fn before(
    txn: &ReadTransaction,
    conv: &str,
    before: Option<u64>,
    limit: usize,
) -> Result<HistoryPage> {
    let t = txn.open_table(MESSAGES).map_err(db)?;
    let upper = before.unwrap_or(u64::MAX);
    let mut out = Vec::new();
    let mut rows = t.range((conv, 0u64)..(conv, upper)).map_err(db)?.rev();
    for row in rows.by_ref().take(limit) {
        let (k, v) = row.map_err(db)?;
        out.push(read_message(conv, k.value().1, v.value())?);
    }
    let has_more = rows.next().is_some();
    out.reverse();
    Ok(HistoryPage {
        messages: out,
        has_more,
    })
}

/// The conversation's newest id (0 if none).
pub(crate) fn last_id(txn: &ReadTransaction, conv: &str) -> Result<u64> {
    let t = txn.open_table(LAST_ID).map_err(db)?;
    Ok(t.get(conv).map_err(db)?.map_or(0, |g| g.value()))
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
