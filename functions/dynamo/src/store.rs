//! The DynamoDB [`Store`], with its item conversions.
//!
//! Tables (DESIGN.md §5, declared in `infra/template.yaml`):
//! - messages `(conversation_id, message_id)`: sender, client_msg_id, text, sent_at.
//! - users `(user_id, "conv#<conversation_id>")`: acked_up_to, joined_at; and
//!   `(user_id, "idem#<client_msg_id>")`: conversation_id, message_id, expires_at.
//! - groups `(group_id, "meta")`: name, created_by, created_at, admins,
//!   version, next_seq; `(group_id, "member#<user_id>")`: joined_at, seq.
//!
//! ## Sending without a transaction
//! A send is three single-item writes (a transaction would double them):
//! 1. read the conversation's newest id (one strongly consistent Query,
//!    Limit 1) and *claim* the `client_msg_id` with a conditional put of the
//!    idempotency record pointing at `(conversation, newest + 1)`;
//! 2. put the message at `newest + 1` if that id is still free;
//! 3. move the sender's watermark (and, on a first message, enroll the
//!    recipient).
//!
//! Id `n + 1` is written only after id `n` was seen, so ids are gapless and a
//! higher id is never visible before a lower one. A claim whose message is
//! missing (a crash between 1 and 2, or a lost race for the id) is finished
//! or re-pointed by the next attempt, so a retry with the same
//! `client_msg_id` returns the original message or stores exactly one.

use crate::config::Tables;
use crate::error::Error as DErr;
use crate::meter::{item_size, Meter};
use crate::schema::*;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue as Av, Delete, Put, PutRequest, ReturnConsumedCapacity, ReturnValue,
    ReturnValuesOnConditionCheckFailure, TransactWriteItem, Update, WriteRequest,
};
use aws_sdk_dynamodb::Client;
use chat_core::ports::*;
use chat_core::{Error, Result};
use futures_util::{stream, StreamExt, TryStreamExt};
use std::collections::HashMap;
use std::sync::Arc;

type Item = HashMap<String, Av>;

/// Attempts at allocating an id before giving up under contention.
const MAX_APPEND_ATTEMPTS: usize = 32;
/// Waits a little before another attempt at a contended id: exponential,
/// capped at ~100 ms, with jitter so contenders spread out.
async fn backoff(attempt: usize, salt: &str) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0);
    let jitter = chat_core::service::fnv1a(salt) ^ nanos;
    let cap = (2u64 << attempt.min(6)).min(100);
    tokio::time::sleep(std::time::Duration::from_millis(jitter % cap + 1)).await;
}

/// Parallel reads when one request needs many (newest ids of a user's conversations).
const READ_FANOUT: usize = 16;

/// The DynamoDB store.
pub struct DynamoStore {
    client: Client,
    messages: String,
    users: String,
    groups: String,
    meter: Arc<Meter>,
}

fn s(v: impl Into<String>) -> Av {
    Av::S(v.into())
}
fn n(v: u64) -> Av {
    Av::N(v.to_string())
}

fn get_s(item: &Item, table: &str, k: &str) -> Result<String> {
    match item.get(k) {
        Some(Av::S(v)) => Ok(v.clone()),
        _ => Err(DErr::corrupt(table, format!("missing string attribute {k}")).into()),
    }
}

fn get_n(item: &Item, table: &str, k: &str) -> Result<u64> {
    match item.get(k) {
        Some(Av::N(v)) => v
            .parse()
            .map_err(|_| DErr::corrupt(table, format!("bad number in {k}")).into()),
        _ => Err(DErr::corrupt(table, format!("missing number attribute {k}")).into()),
    }
}

fn get_list(item: &Item, table: &str, k: &str) -> Result<Vec<String>> {
    match item.get(k) {
        Some(Av::L(l)) => l
            .iter()
            .map(|v| match v {
                Av::S(x) => Ok(x.clone()),
                _ => Err(DErr::corrupt(table, format!("non-string in {k}")).into()),
            })
            .collect(),
        None => Ok(vec![]),
        _ => Err(DErr::corrupt(table, format!("{k} is not a list")).into()),
    }
}

fn now_secs() -> u64 {
    chat_core::service::now_ms() / 1000
}

fn message_item(m: &StoredMessage) -> Item {
    HashMap::from([
        ("conversation_id".into(), s(&m.conversation_id)),
        ("message_id".into(), n(m.message_id)),
        ("sender".into(), s(&m.sender)),
        ("client_msg_id".into(), s(&m.client_msg_id)),
        ("text".into(), s(&m.text)),
        ("sent_at".into(), n(m.sent_at_ms)),
    ])
}

fn conv_key(user: &str, conv: &str) -> Item {
    HashMap::from([
        ("user_id".into(), s(user)),
        ("sk".into(), s(format!("{CONV_PREFIX}{conv}"))),
    ])
}

fn member_item(group_id: &str, m: &GroupMember) -> Item {
    HashMap::from([
        ("group_id".into(), s(group_id)),
        ("sk".into(), s(format!("{MEMBER_PREFIX}{}", m.user_id))),
        ("user_id".into(), s(&m.user_id)),
        ("joined_at".into(), n(m.joined_at_ms)),
        ("seq".into(), n(m.seq)),
    ])
}

fn membership_item(user: &str, conv: &str, acked: u64, joined_at: u64) -> Item {
    let mut item = conv_key(user, conv);
    item.insert("conversation_id".into(), s(conv));
    item.insert("acked_up_to".into(), n(acked));
    item.insert("joined_at".into(), n(joined_at));
    item
}

/// Whether an SDK error is a failed condition, and the item it failed on.
macro_rules! condition_failed {
    ($err:expr, $variant:path) => {
        match $err.as_service_error() {
            Some($variant(c)) => Some(c.item().cloned()),
            _ => None,
        }
    };
}

impl DynamoStore {
    pub fn new(tables: &Tables) -> Self {
        DynamoStore {
            client: tables.client.clone(),
            messages: tables.name(&MESSAGES),
            users: tables.name(&USERS),
            groups: tables.name(&GROUPS),
            meter: Arc::new(Meter::default()),
        }
    }

    /// Capacity consumed so far by this store.
    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    /// A conditional PutItem that writes only if no item has the key
    /// (`key_attr` is one of its key attributes). `Ok(None)` when written;
    /// `Ok(Some(old))` when an item was there (`old` when DynamoDB returned it).
    async fn put_if_absent(
        &self,
        table: &str,
        item: Item,
        key_attr: &str,
    ) -> Result<Option<Option<Item>>> {
        self.meter.write(item_size(&item), 0, false);
        let r = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", key_attr)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match r {
            Ok(out) => {
                self.meter.call(out.consumed_capacity());
                Ok(None)
            }
            Err(e) => match condition_failed!(e, aws_sdk_dynamodb::operation::put_item::PutItemError::ConditionalCheckFailedException) {
                Some(old) => {
                    self.meter.call(None);
                    Ok(Some(old))
                }
                None => Err(DErr::call("PutItem", table, e).into()),
            },
        }
    }

    /// A Put inside a transaction (metered at the transactional rate).
    fn tx_put(&self, table: &str, item: Item) -> Result<TransactWriteItem> {
        self.meter.write(item_size(&item), 0, true);
        let put = Put::builder()
            .table_name(table)
            .set_item(Some(item))
            .build()
            .map_err(DErr::from)?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    /// A Delete inside a transaction.
    fn tx_delete(&self, table: &str, key: Item) -> Result<TransactWriteItem> {
        self.meter.write(128, 0, true);
        let delete = Delete::builder()
            .table_name(table)
            .set_key(Some(key))
            .build()
            .map_err(DErr::from)?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    fn read_message(&self, item: &Item) -> Result<StoredMessage> {
        let t = &self.messages;
        Ok(StoredMessage {
            conversation_id: get_s(item, t, "conversation_id")?,
            message_id: get_n(item, t, "message_id")?,
            sender: get_s(item, t, "sender")?,
            client_msg_id: get_s(item, t, "client_msg_id")?,
            text: get_s(item, t, "text")?,
            sent_at_ms: get_n(item, t, "sent_at")?,
        })
    }

    /// The newest id of a conversation; `consistent` for id allocation.
    async fn newest_id(&self, conv: &str, consistent: bool) -> Result<u64> {
        let out = self
            .client
            .query()
            .table_name(&self.messages)
            .key_condition_expression("conversation_id = :c")
            .expression_attribute_values(":c", s(conv))
            .scan_index_forward(false)
            .limit(1)
            .consistent_read(consistent)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| DErr::call("Query", &self.messages, e))?;
        self.meter.call(out.consumed_capacity());
        let items = out.items();
        self.meter
            .read(items.iter().map(item_size).sum(), consistent);
        match items.first() {
            Some(i) => get_n(i, &self.messages, "message_id"),
            None => Ok(0),
        }
    }

    async fn get_message(&self, conv: &str, id: u64) -> Result<Option<StoredMessage>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.messages)
            .key("conversation_id", s(conv))
            .key("message_id", n(id))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| DErr::call("GetItem", &self.messages, e))?;
        self.meter.call(out.consumed_capacity());
        self.meter
            .read(out.item().map(item_size).unwrap_or(0), true);
        out.item().map(|i| self.read_message(i)).transpose()
    }

    /// Claims `(sender, client_msg_id)` for `(conv, id)`. `Ok(None)` when
    /// claimed; `Ok(Some((conv, id)))` for the claim that already exists.
    async fn claim(&self, msg: &NewMessage, id: u64) -> Result<Option<(String, u64)>> {
        let item: Item = HashMap::from([
            ("user_id".into(), s(&msg.sender)),
            (
                "sk".into(),
                s(format!("{IDEM_PREFIX}{}", msg.client_msg_id)),
            ),
            ("conversation_id".into(), s(&msg.conversation_id)),
            ("message_id".into(), n(id)),
            ("expires_at".into(), n(now_secs() + IDEMPOTENCY_TTL_SECS)),
        ]);
        match self.put_if_absent(&self.users, item, "sk").await? {
            None => Ok(None),
            Some(Some(old)) => Ok(Some((
                get_s(&old, &self.users, "conversation_id")?,
                get_n(&old, &self.users, "message_id")?,
            ))),
            // The condition failed but the old item did not come back: read it.
            Some(None) => self.read_claim(msg).await.map(Some),
        }
    }

    async fn read_claim(&self, msg: &NewMessage) -> Result<(String, u64)> {
        let out = self
            .client
            .get_item()
            .table_name(&self.users)
            .key("user_id", s(&msg.sender))
            .key("sk", s(format!("{IDEM_PREFIX}{}", msg.client_msg_id)))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| DErr::call("GetItem", &self.users, e))?;
        self.meter.call(None);
        let item = out.item().ok_or_else(|| {
            Error::from(DErr::corrupt(&self.users, "idempotency record vanished"))
        })?;
        self.meter.read(item_size(item), true);
        Ok((
            get_s(item, &self.users, "conversation_id")?,
            get_n(item, &self.users, "message_id")?,
        ))
    }

    /// Re-points a claim from `(c0, id0)` to the message's conversation and
    /// `id`; false if someone else moved it first.
    async fn repoint(&self, msg: &NewMessage, c0: &str, id0: u64, id: u64) -> Result<bool> {
        self.meter.write(128, 0, false);
        let r = self
            .client
            .update_item()
            .table_name(&self.users)
            .key("user_id", s(&msg.sender))
            .key("sk", s(format!("{IDEM_PREFIX}{}", msg.client_msg_id)))
            .update_expression("SET conversation_id = :c, message_id = :id")
            .condition_expression("conversation_id = :c0 AND message_id = :id0")
            .expression_attribute_values(":c", s(&msg.conversation_id))
            .expression_attribute_values(":id", n(id))
            .expression_attribute_values(":c0", s(c0))
            .expression_attribute_values(":id0", n(id0))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match r {
            Ok(out) => {
                self.meter.call(out.consumed_capacity());
                Ok(true)
            }
            Err(e) => match condition_failed!(e, aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException) {
                Some(_) => Ok(false),
                None => Err(DErr::call("UpdateItem", &self.users, e).into()),
            },
        }
    }

    /// Puts the message at its id if free. `Ok(None)` when written,
    /// `Ok(Some(existing))` when the id is taken.
    async fn put_message(
        &self,
        m: &StoredMessage,
        origin: Option<&str>,
    ) -> Result<Option<StoredMessage>> {
        let mut item = message_item(m);
        if let Some(o) = origin {
            // Read by the stream-fed fan-out, so the sending connection is skipped.
            item.insert("origin".into(), s(o));
        }
        match self
            .put_if_absent(&self.messages, item, "message_id")
            .await?
        {
            None => Ok(None),
            Some(Some(old)) => Ok(Some(self.read_message(&old)?)),
            Some(None) => self
                .get_message(&m.conversation_id, m.message_id)
                .await?
                .map(Some)
                .ok_or_else(|| {
                    DErr::corrupt(&self.messages, "condition failed on a missing item").into()
                }),
        }
    }

    /// Moves the sender's watermark to `id`; true if this created the
    /// membership (the sender's first message in the conversation).
    async fn sender_watermark(&self, user: &str, conv: &str, id: u64, now_ms: u64) -> Result<bool> {
        self.meter.write(96 + conv.len() * 2 + user.len(), 0, false);
        let r = self
            .client
            .update_item()
            .table_name(&self.users)
            .set_key(Some(conv_key(user, conv)))
            .update_expression("SET acked_up_to = :id, conversation_id = :c, joined_at = if_not_exists(joined_at, :now)")
            .condition_expression("attribute_not_exists(acked_up_to) OR acked_up_to < :id")
            .expression_attribute_values(":id", n(id))
            .expression_attribute_values(":c", s(conv))
            .expression_attribute_values(":now", n(now_ms))
            .return_values(ReturnValue::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match r {
            Ok(out) => {
                self.meter.call(out.consumed_capacity());
                // No old item: the membership was created just now.
                Ok(out.attributes().is_none_or(|a| a.is_empty()))
            }
            Err(e) => match condition_failed!(e, aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException) {
                Some(_) => Ok(false),
                None => Err(DErr::call("UpdateItem", &self.users, e).into()),
            },
        }
    }

    /// Creates a membership row with watermark `acked` unless one exists.
    async fn enroll(&self, user: &str, conv: &str, acked: u64, now_ms: u64) -> Result<()> {
        let item = membership_item(user, conv, acked, now_ms);
        // Already a member: nothing to do.
        self.put_if_absent(&self.users, item, "sk")
            .await
            .map(|_| ())
    }

    /// Runs a Query to the end (or `max` items), following LastEvaluatedKey.
    async fn query_all(
        &self,
        q: aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder,
        table: &str,
        max: usize,
        consistent: bool,
    ) -> Result<Vec<Item>> {
        let mut out = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = q
                .clone()
                .set_exclusive_start_key(start.take())
                .consistent_read(consistent)
                .return_consumed_capacity(ReturnConsumedCapacity::Total)
                .send()
                .await
                .map_err(|e| DErr::call("Query", table, e))?;
            self.meter.call(page.consumed_capacity());
            self.meter
                .read(page.items().iter().map(item_size).sum(), consistent);
            out.extend(page.items().iter().cloned());
            match page.last_evaluated_key() {
                Some(k) if out.len() < max && !k.is_empty() => start = Some(k.clone()),
                _ => break,
            }
        }
        out.truncate(max);
        Ok(out)
    }

    fn read_group(&self, group_id: &str, items: &[Item]) -> Result<Option<Group>> {
        let t = &self.groups;
        let Some(meta) = items
            .iter()
            .find(|i| matches!(i.get("sk"), Some(Av::S(k)) if k == GROUP_META))
        else {
            return Ok(None);
        };
        let mut members = Vec::new();
        for i in items {
            if matches!(i.get("sk"), Some(Av::S(k)) if k.starts_with(MEMBER_PREFIX)) {
                members.push(GroupMember {
                    user_id: get_s(i, t, "user_id")?,
                    joined_at_ms: get_n(i, t, "joined_at")?,
                    seq: get_n(i, t, "seq")?,
                });
            }
        }
        members.sort_by_key(|m| m.seq);
        Ok(Some(Group {
            group_id: group_id.to_string(),
            name: get_s(meta, t, "name")?,
            created_by: get_s(meta, t, "created_by")?,
            created_at_ms: get_n(meta, t, "created_at")?,
            admins: get_list(meta, t, "admins")?,
            members,
            version: get_n(meta, t, "version")?,
            next_seq: get_n(meta, t, "next_seq")?,
        }))
    }

    async fn read_group_consistent(
        &self,
        group_id: &str,
        consistent: bool,
    ) -> Result<Option<Group>> {
        let q = self
            .client
            .query()
            .table_name(&self.groups)
            .key_condition_expression("group_id = :g")
            .expression_attribute_values(":g", s(group_id));
        let items = self
            .query_all(q, &self.groups.clone(), usize::MAX, consistent)
            .await?;
        self.read_group(group_id, &items)
    }

    /// BatchWriteItem in chunks of 25, retrying unprocessed items.
    async fn batch_put(&self, table: &str, items: Vec<Item>) -> Result<()> {
        for chunk in items.chunks(25) {
            let mut requests: Vec<WriteRequest> = chunk
                .iter()
                .map(|i| {
                    self.meter.write(item_size(i), 0, false);
                    Ok(WriteRequest::builder()
                        .put_request(
                            PutRequest::builder()
                                .set_item(Some(i.clone()))
                                .build()
                                .map_err(DErr::from)?,
                        )
                        .build())
                })
                .collect::<Result<_>>()?;
            for attempt in 0..8u32 {
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(table, requests.clone())
                    .send()
                    .await
                    .map_err(|e| DErr::call("BatchWriteItem", table, e))?;
                self.meter.call(None);
                requests = out
                    .unprocessed_items()
                    .and_then(|u| u.get(table))
                    .cloned()
                    .unwrap_or_default();
                if requests.is_empty() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(20 << attempt)).await;
            }
            if !requests.is_empty() {
                return Err(DErr::Call {
                    op: "BatchWriteItem",
                    table: table.to_string(),
                    detail: "items left unprocessed after retries".into(),
                }
                .into());
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Store for DynamoStore {
    async fn append(&self, msg: NewMessage) -> Result<Appended> {
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
            };
            match self.put_message(&m, msg.origin.as_deref()).await? {
                None => {
                    stored = Some(m);
                    break;
                }
                Some(existing)
                    if existing.sender == msg.sender
                        && existing.client_msg_id == msg.client_msg_id =>
                {
                    // A concurrent retry of this very send won the put.
                    return Ok(Appended {
                        message: existing,
                        duplicate: true,
                    });
                }
                Some(_) => continue, // lost the id to another sender; try the next
            }
        }
        let Some(m) = stored else {
            return Err(Error::Store(format!(
                "could not allocate an id in {conv} after {MAX_APPEND_ATTEMPTS} attempts"
            )));
        };
        let first = self
            .sender_watermark(&msg.sender, &conv, m.message_id, msg.sent_at_ms)
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

    async fn messages_after(
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
        let items = self
            .query_all(q, &self.messages.clone(), limit, true)
            .await?;
        items.iter().map(|i| self.read_message(i)).collect()
    }

    async fn messages_before(
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
        let items = self
            .query_all(q, &self.messages.clone(), limit + 1, false)
            .await?;
        let has_more = items.len() > limit;
        let mut messages: Vec<StoredMessage> = items
            .iter()
            .take(limit)
            .map(|i| self.read_message(i))
            .collect::<Result<_>>()?;
        messages.reverse();
        Ok(HistoryPage { messages, has_more })
    }

    async fn last_message_id(&self, conv: &str) -> Result<u64> {
        self.newest_id(conv, true).await
    }

    async fn membership(&self, user: &str, conv: &str) -> Result<Option<Membership>> {
        let out = self
            .client
            .get_item()
            .table_name(&self.users)
            .set_key(Some(conv_key(user, conv)))
            .consistent_read(true)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await
            .map_err(|e| DErr::call("GetItem", &self.users, e))?;
        self.meter.call(out.consumed_capacity());
        self.meter
            .read(out.item().map(item_size).unwrap_or(0), true);
        out.item()
            .map(|i| {
                Ok(Membership {
                    conversation_id: conv.to_string(),
                    acked_up_to: get_n(i, &self.users, "acked_up_to")?,
                    joined_at_ms: get_n(i, &self.users, "joined_at")?,
                })
            })
            .transpose()
    }

    async fn conversations(&self, user: &str) -> Result<Vec<ConversationState>> {
        let q = self
            .client
            .query()
            .table_name(&self.users)
            .key_condition_expression("user_id = :u AND begins_with(sk, :p)")
            .expression_attribute_values(":u", s(user))
            .expression_attribute_values(":p", s(CONV_PREFIX));
        let items = self
            .query_all(q, &self.users.clone(), usize::MAX, true)
            .await?;
        let memberships: Vec<Membership> = items
            .iter()
            .map(|i| {
                Ok(Membership {
                    conversation_id: get_s(i, &self.users, "conversation_id")?,
                    acked_up_to: get_n(i, &self.users, "acked_up_to")?,
                    joined_at_ms: get_n(i, &self.users, "joined_at")?,
                })
            })
            .collect::<Result<_>>()?;
        stream::iter(memberships)
            .map(|m| async move {
                let last_message_id = self.newest_id(&m.conversation_id, false).await?;
                Ok(ConversationState {
                    membership: m,
                    last_message_id,
                })
            })
            .buffered(READ_FANOUT)
            .try_collect()
            .await
    }

    async fn advance_watermark(
        &self,
        user: &str,
        conv: &str,
        up_to: u64,
    ) -> Result<Option<(u64, bool)>> {
        self.meter.write(96 + conv.len() * 2 + user.len(), 0, false);
        let r = self
            .client
            .update_item()
            .table_name(&self.users)
            .set_key(Some(conv_key(user, conv)))
            .update_expression("SET acked_up_to = :u")
            .condition_expression("attribute_exists(sk) AND acked_up_to < :u")
            .expression_attribute_values(":u", n(up_to))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send()
            .await;
        match r {
            Ok(out) => {
                self.meter.call(out.consumed_capacity());
                Ok(Some((up_to, true)))
            }
            Err(e) => match condition_failed!(e, aws_sdk_dynamodb::operation::update_item::UpdateItemError::ConditionalCheckFailedException) {
                Some(Some(old)) => Ok(Some((get_n(&old, &self.users, "acked_up_to")?, false))),
                Some(None) => Ok(self.membership(user, conv).await?.map(|m| (m.acked_up_to, false))),
                None => Err(DErr::call("UpdateItem", &self.users, e).into()),
            },
        }
    }

    async fn group(&self, group_id: &str) -> Result<Option<Group>> {
        self.read_group_consistent(group_id, true).await
    }

    async fn create_group(&self, g: &Group) -> Result<()> {
        let meta: Item = HashMap::from([
            ("group_id".into(), s(&g.group_id)),
            ("sk".into(), s(GROUP_META)),
            ("name".into(), s(&g.name)),
            ("created_by".into(), s(&g.created_by)),
            ("created_at".into(), n(g.created_at_ms)),
            ("admins".into(), Av::L(g.admins.iter().map(s).collect())),
            ("version".into(), n(g.version)),
            ("next_seq".into(), n(g.next_seq)),
        ]);
        // The group item first, so an id clash changes nothing.
        if self
            .put_if_absent(&self.groups, meta, "sk")
            .await?
            .is_some()
        {
            return Err(Error::Conflict);
        }
        let conv = format!("grp#{}", g.group_id);
        let members: Vec<Item> = g
            .members
            .iter()
            .map(|m| member_item(&g.group_id, m))
            .collect();
        self.batch_put(&self.groups.clone(), members).await?;
        let rows: Vec<Item> = g
            .members
            .iter()
            .map(|m| membership_item(&m.user_id, &conv, 0, m.joined_at_ms))
            .collect();
        self.batch_put(&self.users.clone(), rows).await
    }

    async fn update_group(&self, change: &GroupChange) -> Result<Group> {
        let gid = &change.group_id;
        let conv = format!("grp#{gid}");
        let mut items = Vec::new();
        let next_seq = change.add.iter().map(|(m, _)| m.seq + 1).max();
        let mut update = Update::builder()
            .table_name(&self.groups)
            .key("group_id", s(gid))
            .key("sk", s(GROUP_META))
            .update_expression(if next_seq.is_some() {
                "SET version = :v1, admins = :a, next_seq = :ns"
            } else {
                "SET version = :v1, admins = :a"
            })
            .condition_expression("version = :v0")
            .expression_attribute_values(":v0", n(change.expected_version))
            .expression_attribute_values(":v1", n(change.expected_version + 1))
            .expression_attribute_values(":a", Av::L(change.admins.iter().map(s).collect()));
        if let Some(ns) = next_seq {
            update = update.expression_attribute_values(":ns", n(ns));
        }
        items.push(
            TransactWriteItem::builder()
                .update(update.build().map_err(DErr::from)?)
                .build(),
        );
        self.meter.write(256, 0, true);
        for (m, acked) in &change.add {
            items.push(self.tx_put(&self.groups, member_item(gid, m))?);
            let row = membership_item(&m.user_id, &conv, *acked, m.joined_at_ms);
            items.push(self.tx_put(&self.users, row)?);
        }
        for u in &change.remove {
            let member: Item = HashMap::from([
                ("group_id".into(), s(gid)),
                ("sk".into(), s(format!("{MEMBER_PREFIX}{u}"))),
            ]);
            items.push(self.tx_delete(&self.groups, member)?);
            items.push(self.tx_delete(&self.users, conv_key(u, &conv))?);
        }
        let r = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send()
            .await;
        self.meter.call(None);
        if let Err(e) = r {
            let conflict = matches!(
                e.as_service_error(),
                Some(aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c))
                    if c.cancellation_reasons().iter().any(|r| r.code() == Some("ConditionalCheckFailed"))
            );
            return Err(if conflict {
                Error::Conflict
            } else {
                DErr::call("TransactWriteItems", &self.groups, e).into()
            });
        }
        self.read_group_consistent(gid, true)
            .await?
            .ok_or_else(|| DErr::corrupt(&self.groups, "group vanished after an update").into())
    }
}
