//! The DynamoDB [`Connections`] map: one item per connection
//! ([`ConnectionItem`]), found by user through the `by_user` index (a
//! Query, never a Scan).

use crate::codec::{from_item, to_item, ConnectionItem, Item};
use crate::config::Tables;
use crate::conn_table::ConnectionsTable;
use crate::meter::Meter;
use crate::request::Written;
use crate::schema::BY_USER_INDEX;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{AttributeValue as Av, ReturnValuesOnConditionCheckFailure};
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
    table: ConnectionsTable,
}

impl DynamoConnections {
    pub fn new(tables: &Tables) -> Self {
        DynamoConnections {
            table: ConnectionsTable::new(tables),
        }
    }

    pub fn meter(&self) -> &Arc<Meter> {
        &self.table.meter
    }

    fn record(&self, item: Item) -> Result<ConnectionRecord> {
        Ok(from_item::<_, ConnectionItem>(&self.table.name, item)?.record())
    }
}

#[async_trait]
impl Connections for DynamoConnections {
    async fn register(&self, rec: &ConnectionRecord) -> Result<()> {
        self.table
            .put(to_item(&ConnectionItem::new(rec)), None)
            .await?;
        Ok(())
    }

    async fn remove(&self, connection_id: &str) -> Result<()> {
        self.table.delete(connection_id).await
    }

    async fn get(&self, connection_id: &str) -> Result<Option<ConnectionRecord>> {
        self.table
            .get(connection_id)
            .await?
            .map(|i| self.record(i))
            .transpose()
    }

    async fn for_user(&self, user_id: &str) -> Result<Vec<ConnectionRecord>> {
        self.table
            .query_index(BY_USER_INDEX, "user_id", user_id)
            .await?
            .into_iter()
            .map(|i| self.record(i))
            .collect()
    }

    async fn begin_sync(&self, connection_id: &str) -> Result<bool> {
        let update = self
            .table
            .update(connection_id)
            .update_expression("SET sync_state = :s, skips = :zero REMOVE skipped")
            .condition_expression("attribute_exists(connection_id)")
            .expression_attribute_values(":s", state(SyncState::Syncing))
            .expression_attribute_values(":zero", Av::N("0".into()));
        self.table.updated(update).await
    }

    async fn note_skipped(&self, connection_id: &str, conversation: &str) -> Result<()> {
        let update = self
            .table
            .update(connection_id)
            .update_expression("ADD skips :one, skipped :c")
            .condition_expression("sync_state = :s")
            .expression_attribute_values(":one", Av::N("1".into()))
            .expression_attribute_values(":c", Av::Ss(vec![conversation.to_string()]))
            .expression_attribute_values(":s", state(SyncState::Syncing));
        // Not syncing (any more): nothing to note.
        self.table.updated(update).await?;
        Ok(())
    }

    async fn go_live(
        &self,
        connection_id: &str,
        replayed: &BTreeMap<String, u64>,
        seen: u64,
    ) -> Result<GoLive> {
        let marks = replayed
            .iter()
            .map(|(c, id)| (c.clone(), Av::N(id.to_string())))
            .collect();
        let update = self
            .table
            .update(connection_id)
            .update_expression(
                "SET sync_state = :live, replayed = :r, skips = :zero REMOVE skipped",
            )
            .condition_expression("sync_state = :syncing AND skips = :seen")
            .expression_attribute_values(":live", state(SyncState::Live))
            .expression_attribute_values(":syncing", state(SyncState::Syncing))
            .expression_attribute_values(":r", Av::M(marks))
            .expression_attribute_values(":zero", Av::N("0".into()))
            .expression_attribute_values(":seen", Av::N(seen.to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld);
        let bytes = 200 + replayed.len() * 40;
        match self.table.run_update(update, bytes).await? {
            Written::Done(_) => Ok(GoLive::Done),
            Written::ConditionFailed(old) => {
                let old = match old {
                    Some(old) if !old.is_empty() => Some(old),
                    _ => self.table.get(connection_id).await?,
                };
                let Some(old) = old else {
                    return Ok(GoLive::Done); // gone: nothing to do
                };
                let old: ConnectionItem = from_item(&self.table.name, old)?;
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
