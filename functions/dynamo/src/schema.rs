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
    indexes: &[(BY_USER_INDEX, "user_id")],
    ttl_attribute: Some("expires_at"),
};

pub const ALL: [TableSpec; 4] = [MESSAGES, USERS, GROUPS, CONNECTIONS];

/// The connections index on user_id.
pub const BY_USER_INDEX: &str = "by_user";

/// users sort keys: a conversation membership, an idempotency record.
pub const CONV_PREFIX: &str = "conv#";
pub const IDEM_PREFIX: &str = "idem#";
/// groups sort keys: the group itself, a member.
pub const GROUP_META: &str = "meta";
pub const MEMBER_PREFIX: &str = "member#";

/// How long an idempotency record is kept (a client retries within minutes).
pub const IDEMPOTENCY_TTL_SECS: u64 = 7 * 24 * 3600;
/// How long a connection row lives if its disconnect is never seen
/// (API Gateway closes connections after 2 hours).
pub const CONNECTION_TTL_SECS: u64 = 3 * 3600;
