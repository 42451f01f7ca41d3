//! The DynamoDB [`Connections`] map: one item per connection
//! ([`ConnectionItem`]), found by user through the `by_user` index (a
//! Query, never a Scan).

use crate::codec::{from_item, key, to_item, ConnectionItem, Item};
use crate::config::Tables;
use crate::meter::{item_size, Meter};
use crate::request::{call, conditional, query_pages, Written};
use crate::schema::{BY_USER_INDEX, CONNECTIONS};
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue as Av, ReturnValuesOnConditionCheckFailure};
use aws_sdk_dynamodb::Client;
use chat_core::ports::{ConnectionRecord, Connections, GoLive, SyncState};
use chat_core::Result;
use std::collections::BTreeMap;
use std::sync::Arc;

/// A sync state as stored.
fn state(s: SyncState) -> Av {
    Av::S(
        match s {
            SyncState::Pending => "pending",
            SyncState::Syncing => "syncing",
            SyncState::Live => "live",
        }
        .into(),
    )
}

pub struct DynamoConnections {
    client: Client,
    table: String,
    meter: Arc<Meter>,
}

impl DynamoConnections {
    pub fn new(tables: &Tables) -> Self {
        DynamoConnections {
            client: tables.client.clone(),
            table: tables.name(&CONNECTIONS),
            meter: Arc::new(Meter::default()),
        }
    }

    pub fn meter(&self) -> &Arc<Meter> {
        &self.meter
    }

    async fn get_item(&self, connection_id: &str) -> Result<Option<Item>> {
        let request = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(key(&[("connection_id", connection_id)])))
            .consistent_read(true)
            .send();
        let out = call(&self.meter, "GetItem", &self.table, request).await?;
        self.meter
            .read(out.item().map(item_size).unwrap_or(0), true);
        Ok(out.item().cloned())
    }

    fn record(&self, item: Item) -> Result<ConnectionRecord> {
        Ok(from_item::<_, ConnectionItem>(&self.table, item)?.record())
    }
}

#[async_trait]
impl Connections for DynamoConnections {
    async fn register(&self, rec: &ConnectionRecord) -> Result<()> {
        let item = to_item(&ConnectionItem::new(rec));
        self.meter.write(item_size(&item), 1, false);
        let request = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send();
        call(&self.meter, "PutItem", &self.table, request).await?;
        Ok(())
    }

    async fn remove(&self, connection_id: &str) -> Result<()> {
        self.meter.write(200, 1, false);
        let request = self
            .client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(key(&[("connection_id", connection_id)])))
            .send();
        call(&self.meter, "DeleteItem", &self.table, request).await?;
        Ok(())
    }

    async fn get(&self, connection_id: &str) -> Result<Option<ConnectionRecord>> {
        self.get_item(connection_id)
            .await?
            .map(|i| self.record(i))
            .transpose()
    }

    async fn for_user(&self, user_id: &str) -> Result<Vec<ConnectionRecord>> {
        let q = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(BY_USER_INDEX)
            .key_condition_expression("user_id = :u")
            .expression_attribute_values(":u", Av::S(user_id.to_string()));
        // A secondary index has no strongly consistent reads.
        query_pages(&self.meter, &self.table, q, usize::MAX, false)
            .await?
            .into_iter()
            .map(|i| self.record(i))
            .collect()
    }
    async fn begin_sync(&self, connection_id: &str) -> Result<bool> {
        self.meter.write(200, 1, false);
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&[("connection_id", connection_id)])))
            .update_expression("SET sync_state = :s, skips = :zero REMOVE skipped")
            .condition_expression("attribute_exists(connection_id)")
            .expression_attribute_values(":s", state(SyncState::Syncing))
            .expression_attribute_values(":zero", Av::N("0".into()))
            .send();
        Ok(matches!(
            conditional(&self.meter, "UpdateItem", &self.table, request).await?,
            Written::Done(_)
        ))
    }

    async fn note_skipped(&self, connection_id: &str, conversation: &str) -> Result<()> {
        self.meter.write(200, 1, false);
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&[("connection_id", connection_id)])))
            .update_expression("ADD skips :one, skipped :c")
            .condition_expression("sync_state = :s")
            .expression_attribute_values(":one", Av::N("1".into()))
            .expression_attribute_values(":c", Av::Ss(vec![conversation.to_string()]))
            .expression_attribute_values(":s", state(SyncState::Syncing))
            .send();
        // Not syncing (any more): nothing to note.
        conditional(&self.meter, "UpdateItem", &self.table, request).await?;
        Ok(())
    }

    async fn go_live(
        &self,
        connection_id: &str,
        replayed: &BTreeMap<String, u64>,
        seen: u64,
    ) -> Result<GoLive> {
        self.meter.write(200 + replayed.len() * 40, 1, false);
        let marks = replayed
            .iter()
            .map(|(c, id)| (c.clone(), Av::N(id.to_string())))
            .collect();
        let request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(key(&[("connection_id", connection_id)])))
            .update_expression(
                "SET sync_state = :live, replayed = :r, skips = :zero REMOVE skipped",
            )
            .condition_expression("sync_state = :syncing AND skips = :seen")
            .expression_attribute_values(":live", state(SyncState::Live))
            .expression_attribute_values(":syncing", state(SyncState::Syncing))
            .expression_attribute_values(":r", Av::M(marks))
            .expression_attribute_values(":zero", Av::N("0".into()))
            .expression_attribute_values(":seen", Av::N(seen.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send();
        match conditional(&self.meter, "UpdateItem", &self.table, request).await? {
            Written::Done(_) => Ok(GoLive::Done),
            Written::ConditionFailed(old) => {
                let old = match old {
                    Some(old) if !old.is_empty() => Some(old),
                    _ => self.get_item(connection_id).await?,
                };
                let Some(old) = old else {
                    return Ok(GoLive::Done); // gone: nothing to do
                };
                let old: ConnectionItem = from_item(&self.table, old)?;
                if old.sync_state != SyncState::Syncing {
                    // Another sync went live first.
                    return Ok(GoLive::Done);
                }
                Ok(GoLive::Skipped {
                    conversations: old.skipped,
                    skips: old.skips,
                })
            }
        }
    }
}
