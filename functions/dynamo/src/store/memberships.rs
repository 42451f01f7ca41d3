//! Memberships: one users-table row per (user, conversation), holding the
//! user's watermark.

use super::DynamoStore;
use crate::codec::{from_item, n, MembershipItem};
use crate::error::Error as DErr;
use crate::request::{conditional, Written};
use crate::schema::CONV_PREFIX;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue as Av, ReturnConsumedCapacity, ReturnValue, ReturnValuesOnConditionCheckFailure,
};
use chat_core::ports::*;
use chat_core::protocol::ReadMark;
use chat_core::Result;
use futures_util::{stream, StreamExt, TryStreamExt};

/// Parallel reads when one request needs many (newest ids of a user's conversations).
const READ_FANOUT: usize = 16;

/// The write units of a membership update.
fn membership_write_bytes(user: &str, conv: &str) -> usize {
    96 + conv.len() * 2 + user.len()
}

impl DynamoStore {
    pub(super) async fn read_membership(
        &self,
        user: &str,
        conv: &str,
    ) -> Result<Option<Membership>> {
        match self
            .get(&self.users, MembershipItem::key(user, conv))
            .await?
        {
            Some(i) => Ok(Some(
                from_item::<_, MembershipItem>(&self.users, i)?.membership(),
            )),
            None => Ok(None),
        }
    }

    pub(super) async fn read_conversations(&self, user: &str) -> Result<Vec<ConversationState>> {
        let memberships: Vec<Membership> = self
            .user_items(user, CONV_PREFIX)
            .await?
            .into_iter()
            .map(|i| Ok(from_item::<_, MembershipItem>(&self.users, i)?.membership()))
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

    pub(super) async fn move_watermark(
        &self,
        user: &str,
        conv: &str,
        up_to: u64,
    ) -> Result<Option<Watermark>> {
        self.meter
            .write(membership_write_bytes(user, conv), 0, false);
        let request = self
            .client
            .update_item()
            .table_name(&self.users)
            .set_key(Some(MembershipItem::key(user, conv)))
            .update_expression("SET acked_up_to = :u")
            .condition_expression("attribute_exists(sk) AND acked_up_to < :u")
            .expression_attribute_values(":u", n(up_to))
            .return_values(ReturnValue::UpdatedOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        let stayed = |m: u64| Watermark {
            before: m,
            after: m,
        };
        match conditional(&self.meter, "UpdateItem", &self.users, request).await? {
            Written::Done(out) => {
                let before = match out.attributes().and_then(|a| a.get("acked_up_to")) {
                    Some(Av::N(v)) => v
                        .parse()
                        .map_err(|_| DErr::corrupt(&self.users, "acked_up_to is not a number"))?,
                    _ => 0,
                };
                Ok(Some(Watermark {
                    before,
                    after: up_to,
                }))
            }
            Written::ConditionFailed(Some(old)) if !old.is_empty() => {
                let old: MembershipItem = from_item(&self.users, old)?;
                Ok(Some(stayed(old.acked_up_to)))
            }
            Written::ConditionFailed(_) => Ok(self
                .read_membership(user, conv)
                .await?
                .map(|m| stayed(m.acked_up_to))),
        }
    }

    /// Moves the sender's watermark to `id`; true if this created the
    /// membership (the sender's first message in the conversation).
    /// With `member_only` (a group), an existing membership only: the
    /// write never creates one (a member removed meanwhile stays removed).
    pub(super) async fn sender_watermark(
        &self,
        user: &str,
        conv: &str,
        id: u64,
        now_ms: u64,
        member_only: bool,
    ) -> Result<bool> {
        self.meter
            .write(membership_write_bytes(user, conv), 0, false);
        let condition = if member_only {
            "attribute_exists(sk) AND (attribute_not_exists(acked_up_to) OR acked_up_to < :id)"
        } else {
            "attribute_not_exists(acked_up_to) OR acked_up_to < :id"
        };
        let request = self
            .client
            .update_item()
            .table_name(&self.users)
            .set_key(Some(MembershipItem::key(user, conv)))
            .update_expression("SET acked_up_to = :id, conversation_id = :c, joined_at = if_not_exists(joined_at, :now)")
            .condition_expression(condition)
            .expression_attribute_values(":id", n(id))
            .expression_attribute_values(":c", Av::S(conv.to_string()))
            .expression_attribute_values(":now", n(now_ms))
            .return_values(ReturnValue::AllOld)
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        match conditional(&self.meter, "UpdateItem", &self.users, request).await? {
            // No old item: the membership was created just now.
            Written::Done(out) => Ok(out.attributes().is_none_or(|a| a.is_empty())),
            Written::ConditionFailed(_) => Ok(false),
        }
    }

    /// A page of the user's conversation rows after `after`, and whether
    /// more follow (one Query between `conv#<after>` and the last `conv#`).
    pub(super) async fn read_conversations_page(
        &self,
        user: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ConversationState>, bool)> {
        let lo = match after {
            // Just above `after`: a longer id that starts with it still follows.
            Some(a) => format!("{CONV_PREFIX}{a}\u{1}"),
            None => CONV_PREFIX.to_string(),
        };
        let hi = format!("{}$", CONV_PREFIX.trim_end_matches('#'));
        let q = self
            .client
            .query()
            .table_name(&self.users)
            .key_condition_expression("user_id = :u AND sk BETWEEN :lo AND :hi")
            .expression_attribute_values(":u", Av::S(user.to_string()))
            .expression_attribute_values(":lo", Av::S(lo))
            .expression_attribute_values(":hi", Av::S(hi))
            .limit((limit + 1).min(1000) as i32);
        let table = self.users.clone();
        let items = self.query_all(q, &table, limit + 1, true).await?;
        let more = items.len() > limit;
        let memberships: Vec<Membership> = items
            .into_iter()
            .take(limit)
            .map(|i| Ok(from_item::<_, MembershipItem>(&table, i)?.membership()))
            .collect::<Result<_>>()?;
        let states = stream::iter(memberships)
            .map(|m| async move {
                let last_message_id = self.newest_id(&m.conversation_id, false).await?;
                Ok::<_, chat_core::Error>(ConversationState {
                    membership: m,
                    last_message_id,
                })
            })
            .buffered(READ_FANOUT)
            .try_collect()
            .await?;
        Ok((states, more))
    }

    /// Takes one unit of a user's counter if it is below `limit` (one
    /// conditional write on the users table, `quota#<key>`, with a TTL).
    pub(super) async fn quota(
        &self,
        user: &str,
        key: &str,
        limit: u64,
        expires_at_secs: u64,
    ) -> Result<bool> {
        self.meter.write(64 + user.len() + key.len(), 0, false);
        let request = self
            .client
            .update_item()
            .table_name(&self.users)
            .set_key(Some(crate::codec::key(&[
                ("user_id", user),
                ("sk", &format!("quota#{key}")),
            ])))
            .update_expression("SET n = if_not_exists(n, :zero) + :one, expires_at = :exp")
            .condition_expression("attribute_not_exists(n) OR n < :limit")
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":limit", n(limit))
            .expression_attribute_values(":exp", n(expires_at_secs))
            .return_consumed_capacity(ReturnConsumedCapacity::Total)
            .send();
        Ok(matches!(
            conditional(&self.meter, "UpdateItem", &self.users, request).await?,
            Written::Done(_)
        ))
    }

    /// Creates a membership row with watermark `acked` unless one exists.
    pub(super) async fn enroll(
        &self,
        user: &str,
        conv: &str,
        acked: u64,
        now_ms: u64,
    ) -> Result<()> {
        let row = MembershipItem::new(user, conv, acked, now_ms);
        // Already a member: nothing to do.
        self.put_if_absent(&self.users, &row, "sk")
            .await
            .map(|_| ())
    }
}

/// Keeps the size helper honest against a real item.
#[async_trait]
impl MembershipStore for DynamoStore {
    async fn membership(&self, user: &str, conv: &str) -> Result<Option<Membership>> {
        self.read_membership(user, conv).await
    }

    async fn conversations(&self, user: &str) -> Result<Vec<ConversationState>> {
        self.read_conversations(user).await
    }

    async fn conversations_page(
        &self,
        user: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ConversationState>, bool)> {
        self.read_conversations_page(user, after, limit).await
    }

    async fn advance_watermark(
        &self,
        user: &str,
        conv: &str,
        up_to: u64,
    ) -> Result<Option<Watermark>> {
        self.move_watermark(user, conv, up_to).await
    }

    /// Eventually consistent reads, half a unit each: a `receipts` answer
    /// may lag an ack by the replication delay.
    async fn watermarks(&self, conv: &str, users: &[String]) -> Result<Vec<ReadMark>> {
        let rows: Vec<Option<ReadMark>> = stream::iter(users.iter().cloned())
            .map(|u| async move {
                let row = self
                    .get_with(&self.users, MembershipItem::key(&u, conv), false)
                    .await?;
                Ok::<_, chat_core::Error>(match row {
                    Some(i) => Some(ReadMark {
                        up_to: from_item::<_, MembershipItem>(&self.users, i)?.acked_up_to,
                        user_id: u,
                    }),
                    None => None,
                })
            })
            .buffered(READ_FANOUT)
            .try_collect()
            .await?;
        Ok(rows.into_iter().flatten().collect())
    }
}

/// DynamoDB's health is seen by calling it: readiness probes it with a read.
impl Health for DynamoStore {}

#[async_trait]
impl QuotaStore for DynamoStore {
    async fn take_quota(
        &self,
        user: &str,
        key: &str,
        limit: u64,
        expires_at_secs: u64,
    ) -> Result<bool> {
        self.quota(user, key, limit, expires_at_secs).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meter::item_size;

    #[test]
    fn the_metered_size_of_a_membership_update_covers_the_item() {
        let row = crate::codec::to_item(&MembershipItem::new("alice", "dm#alice#bob", 5, 1));
        assert!(membership_write_bytes("alice", "dm#alice#bob") >= item_size(&row));
    }
}
