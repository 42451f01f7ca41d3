//! The promises of docs/protocol.md, checked after a run against what the
//! devices saw and what the store holds (read directly, not through a
//! node):
//!
//! - no acked message is lost: every ack names a stored message with the
//!   sender's text;
//! - every device converges: it holds every message of each conversation
//!   of its user (from where the user joined), exactly once after
//!   de-duplication (one text per id, the stored one), counting its own
//!   sends' acks and what a `gap` frame said was left out;
//! - per connection, a conversation's ids only go up, with no gap after
//!   the first that is not the device's own send;
//! - a removed member gets nothing stored after the removal (until added
//!   back);
//! - a node declared dead serves no message once its next heartbeat could
//!   have told it ([`SERVE_AFTER_DEATH`]);
//! - and, the faults over, every send is acked in the end.

use crate::client::MOVED;
use crate::node::{Shared, SERVE_AFTER_DEATH};
use crate::world::{DeviceReport, Moves};
use chat_core::ports::{MembershipStore, MessageStore};
use std::collections::{BTreeMap, HashMap, HashSet};

/// Every broken promise, one line each.
pub async fn check(
    shared: &Shared,
    reports: &BTreeMap<(String, String), DeviceReport>,
    group: Option<&str>,
    moves: &Moves,
) -> Vec<String> {
    let store = &shared.store;
    let mut broken = Vec::new();
    // The store's messages, per conversation: id -> (sender, client_msg_id, text).
    let mut stored: HashMap<String, BTreeMap<u64, (String, String, String)>> = HashMap::new();
    let read = |conv: &str| {
        let conv = conv.to_string();
        async move {
            let mut out = BTreeMap::new();
            let mut after = 0;
            while let Ok(page) = store.messages_after(&conv, after, 500).await {
                let Some(last) = page.last().map(|m| m.message_id) else {
                    break;
                };
                for m in page {
                    out.insert(m.message_id, (m.sender, m.client_msg_id, m.text));
                }
                after = last;
            }
            out
        }
    };
    let mut convs: HashSet<String> = HashSet::new();
    for r in reports.values() {
        convs.extend(r.acked.values().map(|(c, _)| c.clone()));
        convs.extend(r.got.keys().map(|(c, _)| c.clone()));
        if let Ok(list) = store.conversations(&r.user).await {
            convs.extend(list.into_iter().map(|c| c.membership.conversation_id));
        }
    }
    for c in &convs {
        stored.insert(c.clone(), read(c).await);
    }
    let group_conv = group.map(|g| format!("grp#{g}"));

    let declared = shared
        .declared
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    for r in reports.values() {
        let who = format!("{}/{}", r.user, r.device);
        broken.extend(r.violations.iter().cloned());
        // A node declared dead serves nothing (once it could know).
        for (node, at) in &r.served {
            if let Some(dead) = declared.get(node) {
                if *at > *dead + SERVE_AFTER_DEATH {
                    broken.push(format!(
                        "{who}: node {node}, declared dead at {dead:?}, served a message at {at:?}"
                    ));
                }
            }
        }
        // No acked message lost.
        for (cmid, (conv, id)) in &r.acked {
            match stored.get(conv).and_then(|m| m.get(id)) {
                Some((sender, c, text))
                    if *sender == r.user && c == cmid && Some(text) == r.texts.get(cmid) => {}
                other => broken.push(format!(
                    "{who}: acked {cmid} as {conv} #{id}, the store holds {other:?}"
                )),
            }
        }
        // Every send acked in the end.
        for cmid in &r.pending {
            broken.push(format!("{who}: {cmid} never acked"));
        }
        for f in &r.refused {
            broken.push(format!("{who}: a send refused: {f}"));
        }
        if !r.final_sync {
            broken.push(format!("{who}: could not sync once the faults were over"));
        }
        let own: HashSet<(&str, u64)> = r.acked.values().map(|(c, i)| (c.as_str(), *i)).collect();
        // No gaps on a connection, but where the moved member's sequence
        // started again at its new join point (docs/protocol.md, "Groups":
        // what was stored before the removal and never reached it is left
        // to `history`; what was stored while away never reaches it).
        let away = |conv: &str, id: u64, next: u64| {
            r.user == MOVED
                && group_conv.as_deref() == Some(conv)
                && moves
                    .away
                    .iter()
                    .any(|a| a.back.is_some_and(|b| id <= b && next > b))
        };
        for (conv, id, next) in &r.skipped {
            if !own.contains(&(conv.as_str(), *id)) && !away(conv, *id, *next) {
                broken.push(format!("{who}: {conv} skipped #{id} on a connection"));
            }
        }
        // One text per id: the stored one.
        for ((conv, id), text) in &r.got {
            match stored.get(conv).and_then(|m| m.get(id)) {
                Some((_, _, t)) if t == text => {}
                other => broken.push(format!(
                    "{who}: got {conv} #{id} {text:?}, the store holds {other:?}"
                )),
            }
        }
        // Converged on every message of every conversation of the user.
        let Ok(list) = store.conversations(&r.user).await else {
            continue;
        };
        for state in list {
            let conv = state.membership.conversation_id.clone();
            let from = match store.membership(&r.user, &conv).await {
                Ok(Some(m)) => m.joined_at_id,
                _ => 0,
            };
            let told: Vec<(u64, u64)> = r
                .gap_frames
                .iter()
                .filter(|(c, _, _)| *c == conv)
                .map(|(_, a, b)| (*a, *b))
                .collect();
            let missing: Vec<u64> = stored
                .get(&conv)
                .map(|m| {
                    m.keys()
                        .copied()
                        .filter(|&id| id > from)
                        .collect::<Vec<u64>>()
                })
                .unwrap_or_default()
                .into_iter()
                .filter(|id| {
                    !r.got.contains_key(&(conv.clone(), *id))
                        && !own.contains(&(conv.as_str(), *id))
                })
                .filter(|id| !told.iter().any(|(a, b)| a < id && id < b))
                .collect();
            if !missing.is_empty() {
                broken.push(format!("{who}: never got {conv} {}", ids(&missing)));
            }
        }
        // A removed member gets nothing stored while away.
        if let (Some(gconv), true) = (&group_conv, r.user == MOVED) {
            for a in &moves.away {
                let during: Vec<u64> = r
                    .got
                    .keys()
                    .filter(|(c, id)| {
                        c == gconv && *id > a.removed && a.back.is_none_or(|b| *id <= b)
                    })
                    .map(|(_, id)| *id)
                    .collect();
                if !during.is_empty() {
                    broken.push(format!(
                        "{who}: removed ({a:?}), still got {}",
                        ids(&during)
                    ));
                }
            }
        }
    }
    broken
}

/// `#3, #4, #9` (the first 20).
fn ids(ids: &[u64]) -> String {
    let mut v: Vec<u64> = ids.to_vec();
    v.sort_unstable();
    let mut s: Vec<String> = v.iter().take(20).map(|i| format!("#{i}")).collect();
    if v.len() > 20 {
        s.push(format!("… ({} in all)", v.len()));
    }
    s.join(", ")
}
