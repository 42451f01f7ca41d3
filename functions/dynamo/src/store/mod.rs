//! The DynamoDB store: one module per entity, each with its port's impl
//! ([`MessageStore`], [`MembershipStore`] and [`QuotaStore`], [`GroupStore`])
//! next to the item conversions it uses ([`crate::codec`]).
//!
//! # Layout
//! - [`messages`]: appending (ids, idempotency claims) and reading messages;
//! - [`memberships`]: the users table's conversation rows and watermarks,
//!   and the per-user quotas (kept in the users table too);
//! - [`groups`]: groups and their members.
//!
//! ## Sending: single-item writes, one transaction for a group
//! A 1:1 send is three single-item writes (a transaction would double their
//! cost):
//! 1. read the conversation's newest id (one strongly consistent Query,
//!    Limit 1) and *claim* the `client_msg_id` with a conditional put of the
//!    idempotency record pointing at `(conversation, newest + 1)`;
//! 2. put the message at `newest + 1` if that id is still free;
//! 3. move the sender's watermark (and, on a first message, enroll the
//!    recipient).
//!
//! A group send differs in step 2 only: the put is a two-item transaction
//! (`TransactWriteItems`) with a condition check that the sender is still a
//! member, so a member removed while sending stays removed (the check and
//! the put cost double, as every transactional write does: docs/cost.md).
//!
//! Id `n + 1` is written only after id `n` was seen, so ids are gapless and a
//! higher id is never visible before a lower one. A claim whose message is
//! missing (a crash between 1 and 2, or a lost race for the id) is finished
//! or re-pointed by the next attempt, so a retry with the same
//! `client_msg_id` returns the original message or stores exactly one.

mod devices;
mod groups;
mod memberships;
mod messages;

use crate::codec::{to_item, Item};
use crate::config::Tables;
use crate::meter::{item_size, Meter};
use crate::request::{call, conditional, Written};
use crate::schema::*;
use aws_sdk_dynamodb::operation::query::builders::QueryFluentBuilder;
use aws_sdk_dynamodb::types::{ReturnConsumedCapacity, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use chat_core::Result;
use serde::Serialize;
use std::sync::Arc;

/// The DynamoDB store.
pub struct DynamoStore {
    client: Client,
    messages: String,
    users: String,
    groups: String,
    meter: Arc<Meter>,
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
    async fn put_if_absent<T: Serialize>(
        &self,
        table: &str,
        value: &T,
        key_attr: &str,
    ) -> Result<Option<Option<Item>>> {
        let item = to_item(value);
        self.meter.write(item_size(&item), 0, false);
        let request = self
            .client
            .put_item()
            .table_name(table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#k)")
            .expression_attribute_names("#k", key_attr)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        Ok(
            match conditional(&self.meter, "PutItem", table, request).await? {
                Written::Done(_) => None,
                Written::ConditionFailed(old) => Some(old),
            },
        )
    }

    /// Runs a Query to the end (or `max` items), following LastEvaluatedKey.
    async fn query_all(
        &self,
        q: QueryFluentBuilder,
        table: &str,
        max: usize,
        consistent: bool,
    ) -> Result<Vec<Item>> {
        Ok(crate::request::query_pages(&self.meter, table, q, max, consistent).await?)
    }

    /// A strongly consistent GetItem; the item, if there is one.
    async fn get(&self, table: &str, key: Item) -> Result<Option<Item>> {
        self.get_with(table, key, true).await
    }

    /// A GetItem, strongly consistent or not (half the units).
    async fn get_with(&self, table: &str, key: Item, consistent: bool) -> Result<Option<Item>> {
        let request = self
            .client
            .get_item()
            .table_name(table)
            .set_key(Some(key))
            .consistent_read(consistent)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        let out = call(&self.meter, "GetItem", table, request).await?;
        self.meter
            .read(out.item().map(item_size).unwrap_or(0), consistent);
        Ok(out.item().cloned())
    }
}
