//! What the adapters expect of the tables. `infra/template.yaml` declares
//! the same tables (the single source the emulator's tables are created
//! from); `tests` compare the two.

/// One table's expected shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    /// Name without the prefix.
    pub suffix: &'static str,
    pub partition_key: (&'static str, &'static str),
    pub sort_key: Option<(&'static str, &'static str)>,
    /// (index name, partition key) of each global secondary index.
    pub indexes: &'static [(&'static str, &'static str)],
    pub ttl_attribute: Option<&'static str>,
}

pub const MESSAGES: TableSpec = TableSpec {
    suffix: "messages",
    partition_key: ("conversation_id", "S"),
    sort_key: Some(("message_id", "N")),
    indexes: &[],
    ttl_attribute: None,
};
pub const USERS: TableSpec = TableSpec {
    suffix: "users",
    partition_key: ("user_id", "S"),
    sort_key: Some(("sk", "S")),
    indexes: &[],
    ttl_attribute: Some("expires_at"),
};
pub const GROUPS: TableSpec = TableSpec {
    suffix: "groups",
    partition_key: ("group_id", "S"),
    sort_key: Some(("sk", "S")),
    indexes: &[],
    ttl_attribute: None,
};
pub const CONNECTIONS: TableSpec = TableSpec {
    suffix: "connections",
    partition_key: ("connection_id", "S"),
    sort_key: None,
    indexes: &[(BY_USER_INDEX, "user_id"), (BY_NODE_INDEX, "node_id")],
    ttl_attribute: Some("expires_at"),
};

pub const ALL: [TableSpec; 4] = [MESSAGES, USERS, GROUPS, CONNECTIONS];

/// The connections index on user_id.
pub const BY_USER_INDEX: &str = "by_user";
/// The connections index on node_id (sparse: only conn-tier connections
/// carry it): a dead node's connections, for the janitor.
pub const BY_NODE_INDEX: &str = "by_node";
/// The reserved user id under which the cluster's node items live in the
/// connections table (not a valid user id, so no client can be it).
pub const NODES_USER: &str = "#nodes";

/// users sort keys: a conversation membership, an idempotency record, a
/// device, a device's cursor in a conversation.
pub const CONV_PREFIX: &str = "conv#";
pub const IDEM_PREFIX: &str = "idem#";
pub const DEVICE_PREFIX: &str = "device#";
pub const CURSOR_PREFIX: &str = "cursor#";
/// groups sort keys: the group itself, a member.
pub const GROUP_META: &str = "meta";
pub const MEMBER_PREFIX: &str = "member#";

/// How long an idempotency record is kept (a client retries within minutes).
pub const IDEMPOTENCY_TTL_SECS: u64 = 7 * 24 * 3600;
/// How long a connection row lives if its disconnect is never seen
/// (API Gateway closes connections after 2 hours). A conn-tier node's rows
/// have no TTL: they live as long as the node (its janitors delete them).
pub const CONNECTION_TTL_SECS: u64 = 3 * 3600;
/// A node item outlives its last heartbeat by this much at most, in case
/// no janitor is left to delete it.
pub const NODE_TTL_SECS: u64 = 24 * 3600;
