//! Messages: allocating ids with conditional puts, the idempotency claim,
//! and reading pages of a conversation.

use super::DynamoStore;
use crate::codec::{from_item, key, n, to_item, ClaimItem, Item, MemberItem, MessageItem};
use crate::error::Error as DErr;
use crate::meter::item_size;
use crate::request::{call, conditional, Written};
use crate::schema::IDEMPOTENCY_TTL_SECS;
use async_trait::async_trait;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeValue as Av, ConditionCheck, Put, ReturnConsumedCapacity,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update,
};
use chat_core::ids::ConversationId;
use chat_core::ports::*;
use chat_core::{Error, Result};

/// How a group message's transaction ended.
enum MemberPut {
    Written,
    /// The id is taken (by this message, if `Some` and it is ours).
    Taken(Option<Item>),
    /// The sender's member item is missing, or (when recording it as the
    /// newest) already holds a newer message.
    MemberCheckFailed,
}

/// Attempts at allocating an id before giving up under contention.
const MAX_APPEND_ATTEMPTS: usize = 32;

/// Waits a little before another attempt at a contended id: exponential,
/// capped at ~100 ms, with jitter so contenders spread out.
async fn backoff(attempt: usize, salt: &str) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let jitter = chat_core::delivery::hash(salt) ^ nanos;
    let cap = (2u64 << attempt.min(6)).min(100);
    tokio::time::sleep(std::time::Duration::from_millis(jitter % cap + 1)).await;
}

fn s(v: impl Into<String>) -> Av {
    Av::S(v.into())
}

impl DynamoStore {
    pub(super) async fn append_message(&self, msg: NewMessage) -> Result<Appended> {
        let conv = msg.conversation_id.clone();
        let mut stored = None;
        for attempt in 0..MAX_APPEND_ATTEMPTS {
            if attempt > 0 {
                backoff(attempt, &msg.client_msg_id).await;
            }
            let id = self.newest_id(&conv, true).await? + 1;
            if let Some((c0, id0)) = self.claim(&msg, id).await? {
                // Sent before (or being sent): find out what became of it.
                match self.get_message(&c0, id0).await? {
                    Some(m) if m.sender == msg.sender && m.client_msg_id == msg.client_msg_id => {
                        self.finish_resent(&msg, &m).await?;
                        return Ok(Appended {
                            message: m,
                            duplicate: true,
                        });
                    }
                    // A claim that never got its message, at the id we want now.
                    None if (c0.as_str(), id0) == (conv.as_str(), id) => {}
                    // Its id went to someone else, or it was never written:
                    // point it at the id we are about to try.
                    _ => {
                        if !self.repoint(&msg, &c0, id0, id).await? {
                            continue;
                        }
                    }
                }
            }
            let m = StoredMessage {
                conversation_id: conv.clone(),
                message_id: id,
                sender: msg.sender.clone(),
                client_msg_id: msg.client_msg_id.clone(),
                text: msg.text.clone(),
                sent_at_ms: msg.sent_at_ms,
                origin: msg.origin.clone(),
            };
            match self.put_message(&m, msg.member_only).await? {
                None => {
                    stored = Some(m);
                    break;
                }
                Some(existing)
                    if existing.sender == msg.sender
                        && existing.client_msg_id == msg.client_msg_id =>
                {
                    // A concurrent retry of this very send won the put.
                    self.finish_resent(&msg, &existing).await?;
                    return Ok(Appended {
                        message: existing,
                        duplicate: true,
                    });
                }
                Some(_) => {
                    // Lost the id to another sender; try the next.
                    chat_core::metrics::store_retry("message_id");
                    continue;
                }
            }
        }
        let Some(m) = stored else {
            return Err(Error::Store(format!(
                "could not allocate an id in {conv} after {MAX_APPEND_ATTEMPTS} attempts"
            )));
        };
        let first = self
            .sender_watermark(
                &msg.sender,
                &conv,
                m.message_id,
                msg.sent_at_ms,
                msg.member_only,
            )
            .await?;
        if first {
            for u in &msg.enroll {
                self.enroll(u, &conv, 0, msg.sent_at_ms).await?;
            }
        }
        Ok(Appended {
            message: m,
            duplicate: false,
        })
    }

    /// A resend's repair of its original's tail. The original stored its
    /// message, then moved the sender's watermark and enrolled the
    /// recipients in separate writes; a stall or a crash in between (after
    /// which the client resends, having had no ack) would leave the
    /// recipient unenrolled, so their `sync` would never list the
    /// conversation (docs/design.md, "Idempotent send"). Reads first (a
    /// resend is rare and a read costs a fifth of a write), writes only
    /// what is missing. Only in the message's own conversation: a
    /// client_msg_id reused for another conversation answers with the
    /// original and enrolls nobody in it.
    async fn finish_resent(&self, msg: &NewMessage, m: &StoredMessage) -> Result<()> {
        if m.conversation_id != msg.conversation_id {
            return Ok(());
        }
        let conv = m.conversation_id.as_str();
        let sender = self.read_membership(&msg.sender, conv).await?;
        if sender.is_none_or(|s| s.acked_up_to < m.message_id) {
            self.sender_watermark(
                &msg.sender,
                conv,
                m.message_id,
                msg.sent_at_ms,
                msg.member_only,
            )
            .await?;
            chat_core::metrics::store_retry("resend_repair");
        }
        for u in &msg.enroll {
            if self.read_membership(u, conv).await?.is_none() {
                chat_core::metrics::store_retry("resend_repair");
                tracing::warn!(conversation = conv, user = %u, message_id = m.message_id, "a resend enrolls a recipient its original never enrolled");
                self.enroll(u, conv, 0, msg.sent_at_ms).await?;
            }
        }
        Ok(())
    }

    /// The newest id of a conversation; `consistent` for id allocation.
    pub(super) async fn newest_id(&self, conv: &str, consistent: bool) -> Result<u64> {
        let request = self
            .client
            .query()
            .table_name(&self.messages)
            .key_condition_expression("conversation_id = :c")
            .expression_attribute_values(":c", s(conv))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(consistent)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        let out = call(&self.meter, "Query", &self.messages, request).await?;
        let items = out.items();
        self.meter
            .read(items.iter().map(item_size).sum(), consistent);
        match items.first() {
            Some(i) => Ok(from_item::<_, MessageItem>(&self.messages, i.clone())?.message_id),
            None => Ok(0),
        }
    }

    async fn get_message(&self, conv: &str, id: u64) -> Result<Option<StoredMessage>> {
        let mut k = key(&[("conversation_id", conv)]);
        k.insert("message_id".into(), n(id));
        match self.get(&self.messages, k).await? {
            Some(i) => Ok(Some(
                from_item::<_, MessageItem>(&self.messages, i)?.message(),
            )),
            None => Ok(None),
        }
    }

    /// Claims `(sender, client_msg_id)` for `(conv, id)`. `Ok(None)` when
    /// claimed; `Ok(Some((conv, id)))` for the claim that already exists.
    async fn claim(&self, msg: &NewMessage, id: u64) -> Result<Option<(String, u64)>> {
        let claim = ClaimItem {
            user_id: msg.sender.clone(),
            sk: ClaimItem::sort_key(&msg.client_msg_id),
            conversation_id: msg.conversation_id.clone(),
            message_id: id,
            expires_at: chat_core::time::now_ms() / 1000 + IDEMPOTENCY_TTL_SECS,
        };
        let old = match self.put_if_absent(&self.users, &claim, "sk").await? {
            None => return Ok(None),
            Some(Some(old)) => old,
            // The condition failed but the old item did not come back: read it.
            Some(None) => {
                let k = key(&[("user_id", &claim.user_id), ("sk", &claim.sk)]);
                self.get(&self.users, k).await?.ok_or_else(|| {
                    Error::from(DErr::corrupt(&self.users, "idempotency record vanished"))
                })?
            }
        };
        let old: ClaimItem = from_item(&self.users, old)?;
        Ok(Some((old.conversation_id, old.message_id)))
    }

    /// Re-points a claim from `(c0, id0)` to the message's conversation and
    /// `id`; false if someone else moved it first.
    async fn repoint(&self, msg: &NewMessage, c0: &str, id0: u64, id: u64) -> Result<bool> {
        self.meter.write(128, 0, false);
        let request = self
            .client
            .update_item()
            .table_name(&self.users)
            .set_key(Some(key(&[
                ("user_id", &msg.sender),
                ("sk", &ClaimItem::sort_key(&msg.client_msg_id)),
            ])))
            .update_expression("SET conversation_id = :c, message_id = :id")
            .condition_expression("conversation_id = :c0 AND message_id = :id0")
            .expression_attribute_values(":c", s(&msg.conversation_id))
            .expression_attribute_values(":id", n(id))
            .expression_attribute_values(":c0", s(c0))
            .expression_attribute_values(":id0", n(id0))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        Ok(matches!(
            conditional(&self.meter, "UpdateItem", &self.users, request).await?,
            Written::Done(_)
        ))
    }

    /// Puts the message at its id if free. `Ok(None)` when written,
    /// `Ok(Some(existing))` when the id is taken.
    async fn put_message(
        &self,
        m: &StoredMessage,
        member_only: bool,
    ) -> Result<Option<StoredMessage>> {
        let item = MessageItem::new(m);
        let existing = if member_only {
            self.put_if_member(&item).await?
        } else {
            self.put_if_absent(&self.messages, &item, "message_id")
                .await?
        };
        match existing {
            None => Ok(None),
            Some(Some(old)) => Ok(Some(
                from_item::<_, MessageItem>(&self.messages, old)?.message(),
            )),
            Some(None) => self
                .get_message(&m.conversation_id, m.message_id)
                .await?
                .map(Some)
                .ok_or_else(|| {
                    DErr::corrupt(&self.messages, "condition failed on a missing item").into()
                }),
        }
    }

    /// Puts a group message at its id if free, in one transaction with
    /// the sender's member item: it must exist (the sender is still a
    /// member), and it records the message as the sender's newest
    /// (`last_sent`) at no extra cost: a condition
    /// check and an update of a small item both bill 2 units in a
    /// transaction. `Ok(None)` when written, `Ok(Some(old))` when the id is
    /// taken, `Forbidden` when not a member.
    async fn put_if_member(&self, item: &MessageItem) -> Result<Option<Option<Item>>> {
        let Ok(ConversationId::Group(group_id)) = ConversationId::parse(&item.conversation_id)
        else {
            return Err(Error::Forbidden);
        };
        // A newer `last_sent` may be there (a concurrent send of the same
        // member committed first): then the membership is only checked.
        for note in [true, false] {
            match self.put_with_member(item, &group_id, note).await? {
                MemberPut::Written => return Ok(None),
                MemberPut::Taken(old) => return Ok(Some(old)),
                MemberPut::MemberCheckFailed if note => continue,
                MemberPut::MemberCheckFailed => return Err(Error::Forbidden),
            }
        }
        Err(Error::Forbidden)
    }

    async fn put_with_member(
        &self,
        item: &MessageItem,
        group_id: &str,
        note: bool,
    ) -> Result<MemberPut> {
        let message = to_item(item);
        self.meter.write(item_size(&message), 0, true);
        self.meter.write(128, 0, true);
        let member_key = MemberItem::key(group_id, &item.sender);
        let member = if note {
            let update = Update::builder()
                .table_name(&self.groups)
                .set_key(Some(member_key))
                .update_expression("SET last_sent = :id")
                .condition_expression(
                    "attribute_exists(sk) AND (attribute_not_exists(last_sent) OR last_sent < :id)",
                )
                .expression_attribute_values(":id", n(item.message_id))
                .build()
                .map_err(DErr::from)?;
            TransactWriteItem::builder().update(update).build()
        } else {
            let check = ConditionCheck::builder()
                .table_name(&self.groups)
                .set_key(Some(member_key))
                .condition_expression("attribute_exists(sk)")
                .build()
                .map_err(DErr::from)?;
            TransactWriteItem::builder().condition_check(check).build()
        };
        let put = Put::builder()
            .table_name(&self.messages)
            .set_item(Some(message))
            .condition_expression("attribute_not_exists(message_id)")
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .build()
            .map_err(DErr::from)?;
        let r = self
            .client
            .transact_write_items()
            .transact_items(member)
            .transact_items(TransactWriteItem::builder().put(put).build())
            .send()
            .await;
        self.meter.call(None);
        let Err(e) = r else {
            return Ok(MemberPut::Written);
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(c)) = e.as_service_error()
        {
            let failed = |i: usize| {
                c.cancellation_reasons()
                    .get(i)
                    .is_some_and(|r| r.code() == Some("ConditionalCheckFailed"))
            };
            if failed(0) {
                return Ok(MemberPut::MemberCheckFailed);
            }
            if failed(1) {
                let old = c
                    .cancellation_reasons()
                    .get(1)
                    .and_then(|r| r.item().cloned());
                return Ok(MemberPut::Taken(old));
            }
        }
        Err(DErr::call("TransactWriteItems", &self.messages, e).into())
    }

    pub(super) async fn read_after(
        &self,
        conv: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>> {
        let q = self
            .client
            .query()
            .table_name(&self.messages)
            .key_condition_expression("conversation_id = :c AND message_id > :a")
            .expression_attribute_values(":c", s(conv))
            .expression_attribute_values(":a", n(after))
            .limit(limit.min(1000) as i32);
        let table = self.messages.clone();
        let items = self.query_all(q, &table, limit, true).await?;
        items
            .into_iter()
            .map(|i| Ok(from_item::<_, MessageItem>(&table, i)?.message()))
            .collect()
    }

    pub(super) async fn read_before(
        &self,
        conv: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage> {
        let q = self
            .client
            .query()
            .table_name(&self.messages)
            .key_condition_expression("conversation_id = :c AND message_id < :b")
            .expression_attribute_values(":c", s(conv))
            .expression_attribute_values(":b", n(before.unwrap_or(u64::MAX / 2)))
            .scan_index_forward(false)
            .limit(limit as i32 + 1);
        let table = self.messages.clone();
        let items = self.query_all(q, &table, limit + 1, false).await?;
        let has_more = items.len() > limit;
        let mut messages: Vec<StoredMessage> = items
            .into_iter()
            .take(limit)
            .map(|i| Ok(from_item::<_, MessageItem>(&table, i)?.message()))
            .collect::<Result<_>>()?;
        messages.reverse();
        Ok(HistoryPage { messages, has_more })
    }
}

#[async_trait]
impl MessageStore for DynamoStore {
    async fn append(&self, msg: NewMessage) -> Result<Appended> {
        self.append_message(msg).await
    }

    async fn messages_after(
        &self,
        conv: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>> {
        self.read_after(conv, after, limit).await
    }

    async fn messages_before(
        &self,
        conv: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage> {
        self.read_before(conv, before, limit).await
    }

    async fn last_message_id(&self, conv: &str) -> Result<u64> {
        self.newest_id(conv, true).await
    }
}
