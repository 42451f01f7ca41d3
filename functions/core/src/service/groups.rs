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
                .map(|(i, u)| GroupMember::founding(u.clone(), now, i as u64))
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
        self.change_group(session, group_id, |group| {
            if !group.is_admin(session.user_id.as_str()) {
                return Err(Error::Forbidden);
            }
            if group.is_member(&target) {
                return Ok(Plan::Unchanged);
            }
            if group.members.len() >= MAX_GROUP_MEMBERS {
                return Err(Error::GroupFull {
                    limit: MAX_GROUP_MEMBERS,
                });
            }
            Ok(Plan::Add(target.clone()))
        })
        .await
    }

    pub async fn remove_member(
        &self,
        session: &Session,
        group_id: &str,
        user_id: &str,
    ) -> Result<ServerFrame> {
        let target = UserId::parse(user_id)?.to_string();
        let me = session.user_id.as_str();
        self.change_group(session, group_id, |group| {
            if target != me && !group.is_admin(me) {
                return Err(Error::Forbidden);
            }
            if !group.is_member(&target) {
                return Err(Error::NotFound(format!(
                    "{target} is not a member of this group"
                )));
            }
            Ok(Plan::Remove(target.clone()))
        })
        .await
    }

    /// Reads the group (the requester must be a member), lets `plan` decide
    /// from what it read, and applies the change at the version read; if
    /// the group moved on meanwhile, reads it again, up to
    /// [`GROUP_RETRIES`] times.
    async fn change_group(
        &self,
        session: &Session,
        group_id: &str,
        plan: impl Fn(&Group) -> Result<Plan>,
    ) -> Result<ServerFrame> {
        for _ in 0..GROUP_RETRIES {
            let group = self.group_of_member(session, group_id).await?;
            let (change, also) = match plan(&group)? {
                Plan::Unchanged => return Ok(group_frame(&group)),
                Plan::Add(user) => {
                    // The new member's watermark: the group's newest id, so
                    // `sync` does not replay the history before it joined.
                    let conv = ConversationId::group(&group.group_id).to_string();
                    let watermark = self.store.last_message_id(&conv).await?;
                    let member = GroupMember {
                        user_id: user,
                        joined_at_ms: now_ms(),
                        seq: group.next_seq,
                        joined_at_id: watermark,
                    };
                    let change = GroupChange {
                        group_id: group.group_id.clone(),
                        expected_version: group.version,
                        admins: group.admins.clone(),
                        add: vec![member],
                        remove: vec![],
                    };
                    (change, vec![])
                }
                Plan::Remove(user) => {
                    let change = GroupChange {
                        group_id: group.group_id.clone(),
                        expected_version: group.version,
                        admins: admins_after_removing(&group, &user),
                        add: vec![],
                        remove: vec![user.clone()],
                    };
                    // The removed user is told too.
                    (change, vec![user])
                }
            };
            if let Some(frame) = self.apply_change(session, &change, &also).await? {
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

/// What a membership change decides from the group as read.
enum Plan {
    /// Nothing to change: answer with the group as it is.
    Unchanged,
    /// Add this user.
    Add(String),
    /// Remove this user (who is told too).
    Remove(String),
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
