//! The one attribute codec: every item the adapters write or read, as a
//! serde struct converted by `serde_dynamo`. The same structs decode items
//! from the SDK (store, connection map) and from the messages table's
//! stream (the `fanout` function, conn-tier's stream poller), so the three
//! cannot drift apart.
//!
//! Key layout (docs/design.md, "Data model"; declared in
//! `infra/template.yaml`):
//! - messages `(conversation_id, message_id)`: [`MessageItem`];
//! - users `(user_id, "conv#<conversation_id>")`: [`MembershipItem`], and
//!   `(user_id, "idem#<client_msg_id>")`: [`ClaimItem`];
//! - groups `(group_id, "meta")`: [`GroupMetaItem`], and
//!   `(group_id, "member#<user_id>")`: [`MemberItem`];
//! - connections `(connection_id)`: [`ConnectionItem`], and the cluster's
//!   nodes, [`NodeItem`].

use crate::error::Error;
use crate::schema::*;
use aws_sdk_dynamodb::types::AttributeValue;
use chat_core::ports::{
    ConnectionRecord, GroupMember, Membership, NodeRecord, StoredMessage, SyncState,
};
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::BTreeMap;
use std::collections::HashMap;

/// An item as the SDK sends and returns it.
pub type Item = HashMap<String, AttributeValue>;

/// The item of a value; infallible for the structs of this module (plain
/// strings, numbers and lists).
pub fn to_item<T: Serialize>(value: &T) -> Item {
    serde_dynamo::to_item(value).unwrap_or_default()
}

/// Decodes an item of `table`; a malformed one is [`Error::Corrupt`].
/// `item` is an SDK item or a stream record's image.
pub fn from_item<I, T>(table: &str, item: I) -> Result<T, Error>
where
    I: Into<serde_dynamo::Item>,
    T: DeserializeOwned,
{
    serde_dynamo::from_item(item).map_err(|e| Error::corrupt(table, e.to_string()))
}

/// A number attribute.
pub fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

/// The key attributes of an item (for DeleteItem, GetItem).
pub fn key(pairs: &[(&str, &str)]) -> Item {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), AttributeValue::S(v.to_string())))
        .collect()
}

/// A message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageItem {
    pub conversation_id: String,
    pub message_id: u64,
    pub sender: String,
    pub client_msg_id: String,
    pub text: String,
    pub sent_at: u64,
    /// The sending connection: the stream-fed fan-out skips it (it got the
    /// `ack`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl MessageItem {
    pub fn new(m: &StoredMessage) -> Self {
        MessageItem {
            conversation_id: m.conversation_id.clone(),
            message_id: m.message_id,
            sender: m.sender.clone(),
            client_msg_id: m.client_msg_id.clone(),
            text: m.text.clone(),
            sent_at: m.sent_at_ms,
            origin: m.origin.clone(),
        }
    }

    pub fn message(self) -> StoredMessage {
        StoredMessage {
            conversation_id: self.conversation_id,
            message_id: self.message_id,
            sender: self.sender,
            client_msg_id: self.client_msg_id,
            text: self.text,
            sent_at_ms: self.sent_at,
            origin: self.origin,
        }
    }
}

/// The idempotency record of `(sender, client_msg_id)`: which message it
/// became (or is about to become).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimItem {
    pub user_id: String,
    pub sk: String,
    pub conversation_id: String,
    pub message_id: u64,
    /// TTL: a client retries within minutes, the record goes after a week.
    pub expires_at: u64,
}

impl ClaimItem {
    pub fn sort_key(client_msg_id: &str) -> String {
        format!("{IDEM_PREFIX}{client_msg_id}")
    }
}

/// One user's row for one conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipItem {
    pub user_id: String,
    pub sk: String,
    pub conversation_id: String,
    pub acked_up_to: u64,
    pub joined_at: u64,
    /// The conversation's newest id at the join (absent, so 0, on rows a
    /// first direct message creates and on rows written before it was kept).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub joined_at_id: u64,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl MembershipItem {
    /// A new row: its watermark starts at the conversation's newest id at
    /// the join, which is also the join point.
    pub fn new(user: &str, conv: &str, acked_up_to: u64, joined_at: u64) -> Self {
        MembershipItem {
            user_id: user.to_string(),
            sk: Self::sort_key(conv),
            conversation_id: conv.to_string(),
            acked_up_to,
            joined_at,
            joined_at_id: acked_up_to,
        }
    }

    pub fn sort_key(conv: &str) -> String {
        format!("{CONV_PREFIX}{conv}")
    }

    pub fn key(user: &str, conv: &str) -> Item {
        key(&[("user_id", user), ("sk", &Self::sort_key(conv))])
    }

    pub fn membership(self) -> Membership {
        Membership {
            conversation_id: self.conversation_id,
            acked_up_to: self.acked_up_to,
            joined_at_ms: self.joined_at,
            joined_at_id: self.joined_at_id,
        }
    }
}

/// One of a user's devices (users table, `device#<id>`): when it was last
/// used, for "the least recently used are forgotten".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceItem {
    pub user_id: String,
    pub sk: String,
    pub device_id: String,
    pub last_used: u64,
    /// TTL: a device unused for the cursors' lifetime goes.
    pub expires_at: u64,
}

impl DeviceItem {
    pub fn sort_key(device: &str) -> String {
        format!("{DEVICE_PREFIX}{device}")
    }
}

/// A device's delivery cursor in one conversation (users table,
/// `cursor#<device>#<conversation>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CursorItem {
    pub user_id: String,
    pub sk: String,
    pub up_to: u64,
    pub moved_at: u64,
    /// TTL: 90 days after its last move.
    pub expires_at: u64,
}

impl CursorItem {
    /// The prefix of every cursor of `device`.
    pub fn prefix(device: &str) -> String {
        format!("{CURSOR_PREFIX}{device}#")
    }

    pub fn sort_key(device: &str, conv: &str) -> String {
        format!("{}{conv}", Self::prefix(device))
    }

    /// The conversation of a cursor's sort key.
    pub fn conversation(&self, device: &str) -> Option<&str> {
        self.sk.strip_prefix(&Self::prefix(device))
    }
}

/// A group's own item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupMetaItem {
    pub group_id: String,
    pub sk: String,
    pub name: String,
    pub created_by: String,
    pub created_at: u64,
    #[serde(default)]
    pub admins: Vec<String>,
    pub version: u64,
    pub next_seq: u64,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberItem {
    pub group_id: String,
    pub sk: String,
    pub user_id: String,
    pub joined_at: u64,
    pub seq: u64,
    /// The conversation's newest id when the member joined
    /// ([`GroupMember::joined_at_id`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub joined_at_id: u64,
    /// The member's newest message id in the group (0: none), set by the
    /// send's transaction, and read watermark, set by `ack`: what group
    /// receipts are routed and counted by (docs/design.md, "Receipts").
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_sent: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub read_up_to: u64,
}

impl MemberItem {
    pub fn new(group_id: &str, m: &GroupMember) -> Self {
        MemberItem {
            group_id: group_id.to_string(),
            sk: Self::sort_key(&m.user_id),
            user_id: m.user_id.clone(),
            joined_at: m.joined_at_ms,
            seq: m.seq,
            joined_at_id: m.joined_at_id,
            last_sent: 0,
            read_up_to: 0,
        }
    }

    /// The key of a member's item.
    pub fn key(group_id: &str, user: &str) -> Item {
        key(&[("group_id", group_id), ("sk", &Self::sort_key(user))])
    }

    /// The member's marks: a sender has read up to its own message (the
    /// send moved its watermark there), whatever `read_up_to` says.
    pub fn marks(&self) -> chat_core::ports::MemberMarks {
        chat_core::ports::MemberMarks {
            user_id: self.user_id.clone(),
            last_sent: self.last_sent,
            read_up_to: self.read_up_to.max(self.last_sent),
        }
    }

    pub fn sort_key(user: &str) -> String {
        format!("{MEMBER_PREFIX}{user}")
    }

    pub fn member(self) -> GroupMember {
        GroupMember {
            user_id: self.user_id,
            joined_at_ms: self.joined_at,
            seq: self.seq,
            joined_at_id: self.joined_at_id,
        }
    }
}

/// One open connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionItem {
    pub connection_id: String,
    pub user_id: String,
    pub endpoint: String,
    /// The conn-tier node holding it (the `by_node` index's key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_id: Option<String>,
    #[serde(default)]
    pub connected_at: u64,
    /// The device the client named, for the functions' later frames.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// TTL: a row whose disconnect was never seen goes after a while
    /// (API Gateway's; a node's rows go with the node instead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    /// Where the connection is in its first sync (absent: live).
    #[serde(default)]
    pub sync_state: SyncState,
    /// Per conversation, the newest id its last sync replayed.
    #[serde(default)]
    pub replayed: BTreeMap<String, u64>,
    /// Live messages skipped during the current sync...
    #[serde(default)]
    pub skips: u64,
    /// ...and their conversations (a string set).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
}

impl ConnectionItem {
    pub fn new(rec: &ConnectionRecord) -> Self {
        ConnectionItem {
            connection_id: rec.connection_id.clone(),
            user_id: rec.user_id.clone(),
            endpoint: rec.endpoint.clone(),
            node_id: rec.node_id.clone(),
            connected_at: rec.connected_at_ms,
            device_id: rec.device_id.clone(),
            expires_at: match rec.node_id {
                Some(_) => None,
                None => Some(rec.connected_at_ms / 1000 + CONNECTION_TTL_SECS),
            },
            sync_state: rec.sync,
            replayed: rec.replayed.clone(),
            skips: 0,
            skipped: vec![],
        }
    }

    pub fn record(self) -> ConnectionRecord {
        ConnectionRecord {
            connection_id: self.connection_id,
            user_id: self.user_id,
            endpoint: self.endpoint,
            node_id: self.node_id,
            connected_at_ms: self.connected_at,
            device_id: self.device_id,
            sync: self.sync_state,
            replayed: self.replayed,
        }
    }
}

/// A conn-tier node in the connections table (`connection_id` =
/// `node#<id>`, `user_id` = `#nodes`, so the `by_user` index lists the
/// nodes; no `node_id`, so the `by_node` index does not).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeItem {
    pub connection_id: String,
    pub user_id: String,
    pub node: String,
    pub management_url: String,
    pub ws_url: String,
    pub started_at: u64,
    pub heartbeat_at: u64,
    #[serde(default)]
    pub draining: bool,
    #[serde(default)]
    pub dead: bool,
    pub expires_at: u64,
}

impl NodeItem {
    pub fn key(node_id: &str) -> String {
        format!("node#{node_id}")
    }

    /// The TTL of a node item heartbeating at `at_ms`.
    pub fn expiry(at_ms: u64) -> u64 {
        at_ms / 1000 + NODE_TTL_SECS
    }

    pub fn new(n: &NodeRecord) -> Self {
        NodeItem {
            connection_id: Self::key(&n.node_id),
            user_id: NODES_USER.to_string(),
            node: n.node_id.clone(),
            management_url: n.management_url.clone(),
            ws_url: n.ws_url.clone(),
            started_at: n.started_at_ms,
            heartbeat_at: n.heartbeat_at_ms,
            draining: n.draining,
            dead: n.dead,
            expires_at: Self::expiry(n.heartbeat_at_ms),
        }
    }

    pub fn record(self) -> NodeRecord {
        NodeRecord {
            node_id: self.node,
            management_url: self.management_url,
            ws_url: self.ws_url,
            started_at_ms: self.started_at,
            heartbeat_at_ms: self.heartbeat_at,
            draining: self.draining,
            dead: self.dead,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> StoredMessage {
        StoredMessage {
            conversation_id: "dm#a#b".into(),
            message_id: 7,
            sender: "a".into(),
            client_msg_id: "c-7".into(),
            text: "héllo \"there\"".into(),
            sent_at_ms: 1_700_000_000_123,
            origin: None,
        }
    }

    #[test]
    fn items_have_the_documented_attributes_and_round_trip() {
        let sent = StoredMessage {
            origin: Some("conn-1".into()),
            ..message()
        };
        let item = to_item(&MessageItem::new(&sent));
        assert_eq!(item.get("message_id"), Some(&AttributeValue::N("7".into())));
        assert_eq!(
            item.get("text"),
            Some(&AttributeValue::S("héllo \"there\"".into()))
        );
        assert_eq!(
            item.get("origin"),
            Some(&AttributeValue::S("conn-1".into()))
        );
        let back: MessageItem = from_item("messages", item).unwrap();
        assert_eq!(back.origin.as_deref(), Some("conn-1"));
        assert_eq!(back.message(), sent);
        // No origin: no attribute at all.
        let item = to_item(&MessageItem::new(&message()));
        assert!(!item.contains_key("origin"));
    }

    #[test]
    fn a_malformed_item_is_corrupt_and_names_its_table() {
        let mut item = to_item(&MessageItem::new(&message()));
        item.insert("message_id".into(), AttributeValue::S("seven".into()));
        let err = from_item::<_, MessageItem>("chat-messages", item).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("chat-messages"), "{err}");
        let mut item = to_item(&MessageItem::new(&message()));
        item.remove("text");
        assert!(from_item::<_, MessageItem>("m", item).is_err());
    }

    #[test]
    fn a_stream_image_in_dynamodb_json_decodes_with_the_same_struct() {
        let image: serde_dynamo::Item = serde_json::from_value(serde_json::json!({
            "conversation_id": {"S": "grp#g1"},
            "message_id": {"N": "3"},
            "sender": {"S": "carol"},
            "client_msg_id": {"S": "g-1"},
            "text": {"S": "hello all"},
            "sent_at": {"N": "1700000000000"},
            "origin": {"S": "c-9"}
        }))
        .unwrap();
        let m: MessageItem = from_item("messages", image).unwrap();
        assert_eq!((m.message_id, m.origin.as_deref()), (3, Some("c-9")));
        // And an SDK item serialises to the same DynamoDB JSON.
        let item = serde_dynamo::Item::from(to_item(&m));
        let json = serde_json::to_value(&item).unwrap();
        assert_eq!(json["message_id"], serde_json::json!({"N": "3"}));
    }

    #[test]
    fn groups_lists_and_connections_round_trip() {
        let g = GroupMetaItem {
            group_id: "g".into(),
            sk: GROUP_META.into(),
            name: "team ✨".into(),
            created_by: "a".into(),
            created_at: 1,
            admins: vec!["a".into(), "b".into()],
            version: 2,
            next_seq: 3,
        };
        let item = to_item(&g);
        assert!(matches!(item.get("admins"), Some(AttributeValue::L(l)) if l.len() == 2));
        assert_eq!(from_item::<_, GroupMetaItem>("groups", item).unwrap(), g);
        let rec = ConnectionRecord {
            connection_id: "c1".into(),
            user_id: "u".into(),
            endpoint: "https://api/stage".into(),
            node_id: None,
            connected_at_ms: 5_000,
            device_id: Some("phone".into()),
            sync: SyncState::Pending,
            replayed: BTreeMap::from([("dm#a#b".to_string(), 4)]),
        };
        let item = to_item(&ConnectionItem::new(&rec));
        assert!(
            !item.contains_key("node_id"),
            "API Gateway's are not in by_node"
        );
        let back: ConnectionItem = from_item("connections", item).unwrap();
        assert_eq!(back.expires_at, Some(5 + CONNECTION_TTL_SECS));
        assert_eq!(back.record(), rec);
        // A node's connection: in the by_node index, no TTL.
        let on_node = ConnectionRecord {
            endpoint: "http://10.0.0.7:8081".into(),
            node_id: Some("node-1".into()),
            ..rec
        };
        let item = to_item(&ConnectionItem::new(&on_node));
        assert_eq!(
            item.get("node_id"),
            Some(&AttributeValue::S("node-1".into()))
        );
        assert!(!item.contains_key("expires_at"));
        let back: ConnectionItem = from_item("connections", item).unwrap();
        assert_eq!(back.record(), on_node);
    }

    #[test]
    fn a_node_item_is_listed_by_user_not_by_node_and_round_trips() {
        let n = NodeRecord {
            node_id: "node-1".into(),
            management_url: "http://10.0.0.7:8081".into(),
            ws_url: "wss://chat.example/ws".into(),
            started_at_ms: 1_000,
            heartbeat_at_ms: 9_000,
            draining: true,
            dead: false,
        };
        let item = to_item(&NodeItem::new(&n));
        assert_eq!(
            item.get("user_id"),
            Some(&AttributeValue::S(NODES_USER.into()))
        );
        assert_eq!(
            item.get("connection_id"),
            Some(&AttributeValue::S("node#node-1".into()))
        );
        assert!(!item.contains_key("node_id"));
        assert_eq!(
            item.get("expires_at"),
            Some(&AttributeValue::N((9 + NODE_TTL_SECS).to_string()))
        );
        let back: NodeItem = from_item("connections", item).unwrap();
        assert_eq!(back.record(), n);
    }
}
