//! `createGroup`, `addMember`, `removeMember`: group changes, each answered
//! with a `group` frame that everyone involved also receives.

use super::{Chat, Session};
use crate::error::{Error, Result};
use crate::ids::{new_group_id, parse_group_id, ConversationId, UserId};
use crate::ports::*;
use crate::protocol::{ServerFrame, MAX_GROUP_MEMBERS};
use crate::time::now_ms;

/// How many times a group change is retried after losing a race.
const GROUP_RETRIES: usize = 8;

/// The group's state as the `group` frame shows it.
pub fn group_frame(g: &Group) -> ServerFrame {
    ServerFrame::Group {
        group_id: g.group_id.clone(),
        name: g.name.clone(),
        members: g.member_ids(),
        admins: g.admins.clone(),
    }
}

impl Chat {
    pub async fn create_group(
        &self,
        session: &Session,
        name: String,
        members: Vec<String>,
    ) -> Result<ServerFrame> {
        let creator = session.user_id.to_string();
        let mut ids = vec![creator.clone()];
        for m in &members {
            let u = UserId::parse(m)?.to_string();
            if !ids.contains(&u) {
                ids.push(u);
            }
        }
        if ids.len() > MAX_GROUP_MEMBERS {
            return Err(Error::GroupFull {
                limit: MAX_GROUP_MEMBERS,
            });
        }
        let now = now_ms();
        let day = now / 86_400_000;
        let allowed = self
            .store
            .take_quota(
                &creator,
                &format!("groups#{day}"),
                self.limits.groups_per_day,
                (day + 2) * 86_400,
            )
            .await?;
        if !allowed {
            crate::metrics::rate_limited("groups_per_day");
            return Err(Error::Quota(format!(
                "at most {} groups created per day; try again tomorrow",
                self.limits.groups_per_day
            )));
        }
        let group = Group {
            group_id: new_group_id(),
            name: name.trim().to_string(),
            created_by: creator.clone(),
            created_at_ms: now,
            admins: vec![creator],
            members: ids
                .iter()
                .enumerate()
                .map(|(i, u)| GroupMember {
                    user_id: u.clone(),
                    joined_at_ms: now,
                    seq: i as u64,
                })
                .collect(),
            version: 1,
            next_seq: ids.len() as u64,
        };
        self.store.create_group(&group).await?;
        tracing::info!(group = %group.group_id, members = ids.len(), "group created");
        self.announce(session, &group, &[]).await;
        Ok(group_frame(&group))
    }

    pub async fn add_member(
        &self,
        session: &Session,
        group_id: &str,
        user_id: &str,
    ) -> Result<ServerFrame> {
        let target = UserId::parse(user_id)?.to_string();
        for _ in 0..GROUP_RETRIES {
            let group = self.group_of_member(session, group_id).await?;
            if !group.is_admin(session.user_id.as_str()) {
                return Err(Error::Forbidden);
            }
            if group.is_member(&target) {
                return Ok(group_frame(&group));
            }
            if group.members.len() >= MAX_GROUP_MEMBERS {
                return Err(Error::GroupFull {
                    limit: MAX_GROUP_MEMBERS,
                });
            }
            let conv = ConversationId::group(&group.group_id).to_string();
            let watermark = self.store.last_message_id(&conv).await?;
            let change = GroupChange {
                group_id: group.group_id.clone(),
                expected_version: group.version,
                admins: group.admins.clone(),
                add: vec![(
                    GroupMember {
                        user_id: target.clone(),
                        joined_at_ms: now_ms(),
                        seq: group.next_seq,
                    },
                    watermark,
                )],
                remove: vec![],
            };
            if let Some(frame) = self.apply_change(session, &change, &[]).await? {
                return Ok(frame);
            }
        }
        Err(Error::Contended)
    }

    pub async fn remove_member(
        &self,
        session: &Session,
        group_id: &str,
        user_id: &str,
    ) -> Result<ServerFrame> {
        let target = UserId::parse(user_id)?.to_string();
        let me = session.user_id.as_str();
        for _ in 0..GROUP_RETRIES {
            let group = self.group_of_member(session, group_id).await?;
            if target != me && !group.is_admin(me) {
                return Err(Error::Forbidden);
            }
            if !group.is_member(&target) {
                return Err(Error::NotFound(format!(
                    "{target} is not a member of this group"
                )));
            }
            let change = GroupChange {
                group_id: group.group_id.clone(),
                expected_version: group.version,
                admins: admins_after_removing(&group, &target),
                add: vec![],
                remove: vec![target.clone()],
            };
            let removed = std::slice::from_ref(&target);
            if let Some(frame) = self.apply_change(session, &change, removed).await? {
                return Ok(frame);
            }
        }
        Err(Error::Contended)
    }

    /// Applies a change and announces the new state (to `also` as well);
    /// `None` if the group moved on meanwhile (retry with a fresh read).
    async fn apply_change(
        &self,
        session: &Session,
        change: &GroupChange,
        also: &[String],
    ) -> Result<Option<ServerFrame>> {
        match self.store.update_group(change).await {
            Ok(updated) => {
                self.announce(session, &updated, also).await;
                Ok(Some(group_frame(&updated)))
            }
            Err(Error::Contended) => {
                crate::metrics::store_retry("group_version");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads a group the requester belongs to; anything else is `forbidden`.
    async fn group_of_member(&self, session: &Session, group_id: &str) -> Result<Group> {
        let gid = parse_group_id(group_id)?;
        match self.store.group(&gid).await? {
            Some(g) if g.is_member(session.user_id.as_str()) => Ok(g),
            _ => Err(Error::Forbidden),
        }
    }

    /// Sends the group's new state to every member and to `also` (a removed
    /// user), except the requesting connection, which gets the reply.
    async fn announce(&self, session: &Session, group: &Group, also: &[String]) {
        let mut users = group.member_ids();
        users.extend(also.iter().cloned());
        let job = FanoutJob {
            audience: Audience::Users(users),
            frame: group_frame(group),
            except_connection: Some(session.connection_id.clone()),
            order_key: ConversationId::group(&group.group_id).to_string(),
        };
        self.dispatch(job, "group").await;
    }
}

/// The admins once `target` leaves: when the last admin leaves, the
/// earliest-joined remaining member takes over.
fn admins_after_removing(group: &Group, target: &str) -> Vec<String> {
    let mut admins: Vec<String> = group
        .admins
        .iter()
        .filter(|a| *a != target)
        .cloned()
        .collect();
    if admins.is_empty() {
        if let Some(heir) = group
            .members
            .iter()
            .filter(|m| m.user_id != target)
            .min_by_key(|m| m.seq)
        {
            admins.push(heir.user_id.clone());
        }
    }
    admins
}
