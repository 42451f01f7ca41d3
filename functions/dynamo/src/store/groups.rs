//! Groups: the group item and one item per member in the groups table, and
//! the members' conversation rows in the users table. Changes are one
//! transaction, conditional on the group's version.

use super::DynamoStore;
use crate::codec::{from_item, key, n, to_item, GroupMetaItem, Item, MemberItem, MembershipItem};
use crate::error::Error as DErr;
use crate::meter::item_size;
use crate::request::{call, conditional, Written};
use crate::schema::*;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue as Av, ConditionCheck, Delete, Put, PutRequest, TransactWriteItem, Update,
    WriteRequest,
};
use chat_core::ids::ConversationId;
use chat_core::ports::*;
use chat_core::{Error, Result};

impl DynamoStore {
    /// One strongly consistent Query, the group's item first (`meta` sorts
    /// after `member#`: descending): a Query is only read-committed
    /// against transactions, so a change that commits while it runs may
    /// show in the members and not in the version. Read in this order, the
    /// members are never older than the version they are tagged with, so a
    /// list cached by version never misses a removal (docs/design.md,
    /// "Receipts and group look-ups").
    pub(super) async fn read_group(&self, group_id: &str) -> Result<Option<Group>> {
        let q = self
            .client
            .query()
            .table_name(&self.groups)
            .key_condition_expression("group_id = :g")
            .expression_attribute_values(":g", Av::S(group_id.to_string()))
            .scan_index_forward(false);
        let table = self.groups.clone();
        let items = self.query_all(q, &table, usize::MAX, true).await?;
        let mut meta = None;
        let mut members = Vec::new();
        for i in items {
            match i.get("sk") {
                Some(Av::S(k)) if k == GROUP_META => {
                    meta = Some(from_item::<_, GroupMetaItem>(&table, i)?)
                }
                Some(Av::S(k)) if k.starts_with(MEMBER_PREFIX) => {
                    members.push(from_item::<_, MemberItem>(&table, i)?.member())
                }
                _ => {}
            }
        }
        let Some(meta) = meta else { return Ok(None) };
        members.sort_by_key(|m| m.seq);
        Ok(Some(Group {
            group_id: group_id.to_string(),
            name: meta.name,
            created_by: meta.created_by,
            created_at_ms: meta.created_at,
            admins: meta.admins,
            members,
            version: meta.version,
            next_seq: meta.next_seq,
        }))
    }

    pub(super) async fn write_new_group(&self, g: &Group) -> Result<()> {
        let meta = GroupMetaItem {
            group_id: g.group_id.clone(),
            sk: GROUP_META.into(),
            name: g.name.clone(),
            created_by: g.created_by.clone(),
            created_at: g.created_at_ms,
            admins: g.admins.clone(),
            version: g.version,
            next_seq: g.next_seq,
        };
        // The group item first, so an id clash changes nothing.
        if self
            .put_if_absent(&self.groups, &meta, "sk")
            .await?
            .is_some()
        {
            return Err(Error::Contended);
        }
        let conv = ConversationId::group(&g.group_id).to_string();
        let members: Vec<Item> = g
            .members
            .iter()
            .map(|m| to_item(&MemberItem::new(&g.group_id, m)))
            .collect();
        self.batch_put(&self.groups.clone(), members).await?;
        let rows: Vec<Item> = g
            .members
            .iter()
            .map(|m| to_item(&MembershipItem::new(&m.user_id, &conv, 0, m.joined_at_ms)))
            .collect();
        self.batch_put(&self.users.clone(), rows).await
    }

    pub(super) async fn write_group_change(&self, change: &GroupChange) -> Result<Group> {
        let gid = &change.group_id;
        let conv = ConversationId::group(gid).to_string();
        let mut items = Vec::new();
        let next_seq = change.add.iter().map(|m| m.seq + 1).max();
        let mut update = Update::builder()
            .table_name(&self.groups)
            .set_key(Some(key(&[("group_id", gid), ("sk", GROUP_META)])))
            .update_expression(if next_seq.is_some() {
                "SET version = :v1, admins = :a, next_seq = :ns"
            } else {
                "SET version = :v1, admins = :a"
            })
            .condition_expression("version = :v0")
            .expression_attribute_values(":v0", n(change.expected_version))
            .expression_attribute_values(":v1", n(change.expected_version + 1))
            .expression_attribute_values(
                ":a",
                Av::L(change.admins.iter().map(|a| Av::S(a.clone())).collect()),
            );
        if let Some(ns) = next_seq {
            update = update.expression_attribute_values(":ns", n(ns));
        }
        items.push(
            TransactWriteItem::builder()
                .update(update.build().map_err(DErr::from)?)
                .build(),
        );
        self.meter.write(256, 0, true);
        // The members join at the conversation's newest id: the change
        // commits only if no message came after it meanwhile (the next id
        // is still free), so a message stored while they were away is at
        // or below their join point, never above.
        if let Some(first) = change.add.first() {
            if change
                .add
                .iter()
                .any(|m| m.joined_at_id != first.joined_at_id)
            {
                return Err(Error::Contended);
            }
            let mut next = key(&[("conversation_id", &conv)]);
            next.insert("message_id".into(), n(first.joined_at_id + 1));
            let check = ConditionCheck::builder()
                .table_name(&self.messages)
                .set_key(Some(next))
                .condition_expression("attribute_not_exists(message_id)")
                .build()
                .map_err(DErr::from)?;
            self.meter.write(128, 0, true);
            items.push(TransactWriteItem::builder().condition_check(check).build());
        }
        for m in &change.add {
            // Read up to where the membership starts (the group's newest id).
            let member = MemberItem {
                read_up_to: m.joined_at_id,
                ..MemberItem::new(gid, m)
            };
            items.push(self.tx_put(&self.groups, to_item(&member))?);
            let row = MembershipItem::new(&m.user_id, &conv, m.joined_at_id, m.joined_at_ms);
            items.push(self.tx_put(&self.users, to_item(&row))?);
        }
        for u in &change.remove {
            let member = key(&[("group_id", gid), ("sk", &MemberItem::sort_key(u))]);
            items.push(self.tx_delete(&self.groups, member)?);
            items.push(self.tx_delete(&self.users, MembershipItem::key(u, &conv))?);
        }
        let request = self
            .client
            .transact_write_items()
            .set_transact_items(Some(items))
            .send();
        let table = &self.groups;
        if let Written::ConditionFailed(_) =
            conditional(&self.meter, "TransactWriteItems", table, request).await?
        {
            return Err(Error::Contended);
        }
        self.read_group(gid)
            .await?
            .ok_or_else(|| DErr::corrupt(&self.groups, "group vanished after an update").into())
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
                let request = self
                    .client
                    .batch_write_item()
                    .request_items(table, requests.clone())
                    .send();
                let out = call(&self.meter, "BatchWriteItem", table, request).await?;
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
impl GroupStore for DynamoStore {
    async fn group(&self, group_id: &str) -> Result<Option<Group>> {
        self.read_group(group_id).await
    }

    async fn create_group(&self, g: &Group) -> Result<()> {
        self.write_new_group(g).await
    }

    async fn update_group(&self, change: &GroupChange) -> Result<Group> {
        self.write_group_change(change).await
    }

    async fn group_version(&self, group_id: &str) -> Result<Option<u64>> {
        let k = key(&[("group_id", group_id), ("sk", GROUP_META)]);
        match self.get(&self.groups, k).await? {
            Some(i) => Ok(Some(
                from_item::<_, GroupMetaItem>(&self.groups, i)?.version,
            )),
            None => Ok(None),
        }
    }

    async fn member_marks(&self, group_id: &str) -> Result<Vec<MemberMarks>> {
        let q = self
            .client
            .query()
            .table_name(&self.groups)
            .key_condition_expression("group_id = :g AND begins_with(sk, :m)")
            .expression_attribute_values(":g", Av::S(group_id.to_string()))
            .expression_attribute_values(":m", Av::S(MEMBER_PREFIX.to_string()));
        let table = self.groups.clone();
        let items = self.query_all(q, &table, usize::MAX, true).await?;
        items
            .into_iter()
            .map(|i| Ok(from_item::<_, MemberItem>(&table, i)?.marks()))
            .collect()
    }

    async fn note_read(&self, group_id: &str, user_id: &str, up_to: u64) -> Result<()> {
        self.meter.write(128, 0, false);
        let request = self
            .client
            .update_item()
            .table_name(&self.groups)
            .set_key(Some(MemberItem::key(group_id, user_id)))
            .update_expression("SET read_up_to = :u")
            .condition_expression(
                "attribute_exists(sk) AND (attribute_not_exists(read_up_to) OR read_up_to < :u)",
            )
            .expression_attribute_values(":u", n(up_to))
            .return_consumed_capacity(aws_sdk_dynamodb::types::ReturnConsumedCapacity::Total)
            .send();
        // Not moved (a later ack got there first, or the member left):
        // nothing to do.
        conditional(&self.meter, "UpdateItem", &self.groups, request).await?;
        Ok(())
    }
}
