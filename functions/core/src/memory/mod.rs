//! In-memory adapters of the ports: the reference the store contract suite
//! is written against, the store of unit tests and of `--store memory`, and
//! the connection map of a single conn-tier node (whose connections die
//! with it). Nothing here is durable.
//!
//! # Layout
//! - this file: [`MemoryStore`], every store port;
//! - `connections`: [`MemoryConnections`], the connection map and the node
//!   registry.

mod connections;

pub use connections::MemoryConnections;

use crate::error::{Error, Result};
use crate::hash::HashMap;
use crate::ids::ConversationId;
use crate::ports::*;
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::Mutex;

#[derive(Default)]
struct Inner {
    /// (user, quota key) -> units taken.
    quotas: HashMap<(String, String), u64>,
    /// conversation -> messages, index = message_id - 1.
    messages: HashMap<String, Vec<StoredMessage>>,
    /// (sender, client_msg_id) -> (conversation, message_id).
    idempotency: HashMap<(String, String), (String, u64)>,
    /// user -> conversation -> membership.
    users: HashMap<String, BTreeMap<String, Membership>>,
    groups: HashMap<String, Group>,
    /// group -> member -> their newest message id in it (the read
    /// watermark is the membership's).
    last_sent: HashMap<String, BTreeMap<String, u64>>,
    /// user -> device -> its last use and cursors.
    devices: HashMap<String, HashMap<String, Device>>,
    /// Reads of this conversation's messages fail (tests of what a failed
    /// read does: [`MemoryStore::fail_reads_of`]).
    failing: Option<String>,
}

/// One device of a user.
#[derive(Default)]
struct Device {
    last_used_ms: u64,
    /// conversation -> (cursor, when it last moved).
    cursors: HashMap<String, (u64, u64)>,
}

/// The in-memory [`Store`].
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Inner>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// From now on, reading the messages of `conversation` fails as a
    /// store that cannot be reached would (`None`: nothing fails). For
    /// tests of the paths that must not hide a failed read.
    pub fn fail_reads_of(&self, conversation: Option<&str>) {
        self.lock().failing = conversation.map(str::to_string);
    }

    fn check_read(g: &Inner, conversation: &str) -> Result<()> {
        match &g.failing {
            Some(c) if c == conversation => Err(Error::Store(format!(
                "injected failure reading {conversation}"
            ))),
            _ => Ok(()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic elsewhere while holding the lock leaves consistent data
        // (every mutation below is applied after its checks).
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn enroll(
    users: &mut HashMap<String, BTreeMap<String, Membership>>,
    user: &str,
    conv: &str,
    at: u64,
    acked: u64,
    joined_at_id: u64,
) -> u64 {
    let m = users
        .entry(user.to_string())
        .or_default()
        .entry(conv.to_string())
        .or_insert(Membership {
            conversation_id: conv.to_string(),
            acked_up_to: acked,
            joined_at_ms: at,
            joined_at_id,
        });
    m.acked_up_to = m.acked_up_to.max(acked);
    m.acked_up_to
}

/// Makes `id` the sender's newest message in the group, unless a newer
/// one is there.
fn note_sent(
    last_sent: &mut HashMap<String, BTreeMap<String, u64>>,
    group: &str,
    sender: &str,
    id: u64,
) {
    let entry = last_sent
        .entry(group.to_string())
        .or_default()
        .entry(sender.to_string())
        .or_default();
    *entry = (*entry).max(id);
}

#[async_trait]
impl MessageStore for MemoryStore {
    async fn append(&self, msg: NewMessage) -> Result<Appended> {
        let mut g = self.lock();
        let key = (msg.sender.clone(), msg.client_msg_id.clone());
        if let Some((conv, id)) = g.idempotency.get(&key).cloned() {
            let original = g.messages[&conv][(id - 1) as usize].clone();
            return Ok(Appended {
                message: original,
                duplicate: true,
            });
        }
        let is_member = g
            .users
            .get(&msg.sender)
            .is_some_and(|m| m.contains_key(&msg.conversation_id));
        if msg.member_only && !is_member {
            return Err(Error::Forbidden);
        }
        let list = g.messages.entry(msg.conversation_id.clone()).or_default();
        let id = list.len() as u64 + 1;
        let stored = StoredMessage {
            conversation_id: msg.conversation_id.clone(),
            message_id: id,
            sender: msg.sender.clone(),
            client_msg_id: msg.client_msg_id.clone(),
            text: msg.text,
            sent_at_ms: msg.sent_at_ms,
            origin: msg.origin.clone(),
        };
        list.push(stored.clone());
        g.idempotency.insert(key, (msg.conversation_id.clone(), id));
        if msg.member_only {
            if let Ok(ConversationId::Group(group)) = ConversationId::parse(&msg.conversation_id) {
                note_sent(&mut g.last_sent, &group, &msg.sender, id);
            }
        }
        enroll(
            &mut g.users,
            &msg.sender,
            &msg.conversation_id,
            msg.sent_at_ms,
            id,
            0,
        );
        for u in &msg.enroll {
            enroll(&mut g.users, u, &msg.conversation_id, msg.sent_at_ms, 0, 0);
        }
        Ok(Appended {
            message: stored,
            duplicate: false,
        })
    }

    async fn messages_after(
        &self,
        conv: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<StoredMessage>> {
        let g = self.lock();
        Self::check_read(&g, conv)?;
        let Some(list) = g.messages.get(conv) else {
            return Ok(vec![]);
        };
        Ok(list
            .iter()
            .skip(after.min(list.len() as u64) as usize)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn messages_before(
        &self,
        conv: &str,
        before: Option<u64>,
        limit: usize,
    ) -> Result<HistoryPage> {
        let g = self.lock();
        Self::check_read(&g, conv)?;
        let Some(list) = g.messages.get(conv) else {
            return Ok(HistoryPage {
                messages: vec![],
                has_more: false,
            });
        };
        let end = before.map_or(list.len() as u64, |b| {
            b.saturating_sub(1).min(list.len() as u64)
        }) as usize;
        let start = end.saturating_sub(limit);
        Ok(HistoryPage {
            messages: list[start..end].to_vec(),
            has_more: start > 0,
        })
    }

    async fn last_message_id(&self, conv: &str) -> Result<u64> {
        Ok(self.lock().messages.get(conv).map_or(0, |l| l.len() as u64))
    }
}

#[async_trait]
impl MembershipStore for MemoryStore {
    async fn membership(&self, user: &str, conv: &str) -> Result<Option<Membership>> {
        Ok(self
            .lock()
            .users
            .get(user)
            .and_then(|m| m.get(conv))
            .cloned())
    }

    async fn conversations(&self, user: &str) -> Result<Vec<ConversationState>> {
        let g = self.lock();
        let Some(ms) = g.users.get(user) else {
            return Ok(vec![]);
        };
        Ok(ms
            .values()
            .map(|m| ConversationState {
                membership: m.clone(),
                last_message_id: g
                    .messages
                    .get(&m.conversation_id)
                    .map_or(0, |l| l.len() as u64),
            })
            .collect())
    }

    async fn conversations_page(
        &self,
        user: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<ConversationState>, bool)> {
        let all = self.conversations(user).await?;
        let mut rest = all
            .into_iter()
            .filter(|c| after.is_none_or(|a| c.membership.conversation_id.as_str() > a));
        let page: Vec<ConversationState> = rest.by_ref().take(limit).collect();
        Ok((page, rest.next().is_some()))
    }

    async fn advance_watermark(
        &self,
        user: &str,
        conv: &str,
        up_to: u64,
    ) -> Result<Option<Watermark>> {
        let mut g = self.lock();
        let Some(m) = g.users.get_mut(user).and_then(|m| m.get_mut(conv)) else {
            return Ok(None);
        };
        let before = m.acked_up_to;
        m.acked_up_to = before.max(up_to);
        Ok(Some(Watermark {
            before,
            after: m.acked_up_to,
        }))
    }
}

#[async_trait]
impl GroupStore for MemoryStore {
    async fn group(&self, group_id: &str) -> Result<Option<Group>> {
        Ok(self.lock().groups.get(group_id).cloned())
    }

    async fn create_group(&self, group: &Group) -> Result<()> {
        let mut g = self.lock();
        if g.groups.contains_key(&group.group_id) {
            return Err(Error::Contended);
        }
        let conv = ConversationId::group(&group.group_id).to_string();
        for m in &group.members {
            enroll(&mut g.users, &m.user_id, &conv, m.joined_at_ms, 0, 0);
        }
        g.groups.insert(group.group_id.clone(), group.clone());
        Ok(())
    }

    async fn update_group(&self, change: &GroupChange) -> Result<Group> {
        let mut g = self.lock();
        let Some(group) = g.groups.get(&change.group_id).cloned() else {
            return Err(Error::NotFound("no such group".into()));
        };
        if group.version != change.expected_version {
            return Err(Error::Contended);
        }
        let conv = ConversationId::group(&change.group_id).to_string();
        let newest = g.messages.get(&conv).map_or(0, |l| l.len() as u64);
        if change.add.iter().any(|m| m.joined_at_id != newest) {
            return Err(Error::Contended);
        }
        let group = group.apply(change);
        for u in &change.remove {
            if let Some(ms) = g.users.get_mut(u) {
                ms.remove(&conv);
            }
            if let Some(sent) = g.last_sent.get_mut(&change.group_id) {
                sent.remove(u);
            }
        }
        for m in &change.add {
            enroll(
                &mut g.users,
                &m.user_id,
                &conv,
                m.joined_at_ms,
                m.joined_at_id,
                m.joined_at_id,
            );
        }
        g.groups.insert(change.group_id.clone(), group.clone());
        Ok(group)
    }

    async fn group_version(&self, group_id: &str) -> Result<Option<u64>> {
        Ok(self.lock().groups.get(group_id).map(|g| g.version))
    }

    async fn member_marks(&self, group_id: &str) -> Result<Vec<MemberMarks>> {
        let g = self.lock();
        let Some(group) = g.groups.get(group_id) else {
            return Ok(vec![]);
        };
        let conv = ConversationId::group(group_id).to_string();
        let sent = g.last_sent.get(group_id);
        Ok(group
            .members
            .iter()
            .map(|m| MemberMarks {
                user_id: m.user_id.clone(),
                last_sent: sent.and_then(|s| s.get(&m.user_id)).copied().unwrap_or(0),
                read_up_to: g
                    .users
                    .get(&m.user_id)
                    .and_then(|ms| ms.get(&conv))
                    .map_or(0, |ms| ms.acked_up_to),
            })
            .collect())
    }

    async fn note_read(&self, _group_id: &str, _user_id: &str, _up_to: u64) -> Result<()> {
        // The marks read the memberships' watermarks.
        Ok(())
    }
}

/// Nothing to watch: memory is writable while the process lives.
impl Health for MemoryStore {}

#[async_trait]
impl QuotaStore for MemoryStore {
    async fn take_quota(
        &self,
        user: &str,
        key: &str,
        limit: u64,
        _expires_at_secs: u64,
    ) -> Result<bool> {
        let mut g = self.lock();
        let n = g
            .quotas
            .entry((user.to_string(), key.to_string()))
            .or_default();
        if *n >= limit {
            return Ok(false);
        }
        *n += 1;
        Ok(true)
    }
}

#[async_trait]
impl DeviceStore for MemoryStore {
    async fn use_device(&self, user: &str, device: &str, now_ms: u64) -> Result<bool> {
        let mut g = self.lock();
        let devices = g.devices.entry(user.to_string()).or_default();
        if let Some(d) = devices.get_mut(device) {
            let known = remembered(d.last_used_ms, now_ms);
            d.last_used_ms = d.last_used_ms.max(now_ms);
            return Ok(known);
        }
        devices.insert(
            device.to_string(),
            Device {
                last_used_ms: now_ms,
                cursors: HashMap::default(),
            },
        );
        let used = devices.iter().map(|(id, d)| (d.last_used_ms, id.clone()));
        for old in devices_to_forget(used.collect::<Vec<_>>(), device) {
            devices.remove(&old);
        }
        Ok(false)
    }

    async fn device_known(&self, user: &str, device: &str, now_ms: u64) -> Result<bool> {
        let g = self.lock();
        Ok(g.devices
            .get(user)
            .and_then(|ds| ds.get(device))
            .is_some_and(|d| remembered(d.last_used_ms, now_ms)))
    }

    async fn cursors(
        &self,
        user: &str,
        device: &str,
        now_ms: u64,
    ) -> Result<std::collections::HashMap<String, u64>> {
        let g = self.lock();
        let Some(d) = g.devices.get(user).and_then(|ds| ds.get(device)) else {
            return Ok(Default::default());
        };
        Ok(d.cursors
            .iter()
            .filter(|(_, (_, moved))| remembered(*moved, now_ms))
            .map(|(c, (up_to, _))| (c.clone(), *up_to))
            .collect())
    }

    async fn advance_cursor(
        &self,
        user: &str,
        device: &str,
        conv: &str,
        mv: CursorMove,
        now_ms: u64,
    ) -> Result<bool> {
        let mut g = self.lock();
        let d = g
            .devices
            .entry(user.to_string())
            .or_default()
            .entry(device.to_string())
            .or_default();
        // An expired cursor is forgotten: the device stands at the floor.
        let current = d
            .cursors
            .get(conv)
            .filter(|(_, moved)| remembered(*moved, now_ms))
            .map(|(at, _)| *at);
        if !mv.moves(current) {
            return Ok(false);
        }
        d.cursors.insert(conv.to_string(), (mv.up_to, now_ms));
        Ok(true)
    }
}
