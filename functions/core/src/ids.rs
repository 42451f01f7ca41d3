//! Identifiers: user ids, conversation ids (derived, never chosen), group
//! ids, connection ids; and the validation rules for each.

use crate::error::{Error, Result};
use std::fmt;

/// Longest user id, group id or client_msg_id accepted.
pub const MAX_ID_LEN: usize = 64;

/// A validated user id: 1 to 64 characters of `[A-Za-z0-9_.-]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(String);

impl UserId {
    pub fn parse(s: &str) -> Result<Self> {
        if is_valid_id(s) {
            Ok(UserId(s.to_string()))
        } else {
            Err(Error::BadRequest(format!(
                "invalid user id {:?}: 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 _ . -",
                truncate(s, 80)
            )))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A client's name for one of its installs (a phone, a laptop, a browser
/// profile): 1 to 64 characters of `[A-Za-z0-9_.-]`, scoped to the user
/// (two users may pick the same name). Each device keeps its own delivery
/// cursors, so every device catches up on what it missed
/// (docs/protocol.md, "Devices").
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

impl DeviceId {
    pub fn parse(s: &str) -> Result<Self> {
        if is_valid_id(s) {
            Ok(DeviceId(s.to_string()))
        } else {
            Err(Error::BadRequest(format!(
                "invalid device id {:?}: 1 to {MAX_ID_LEN} characters of A-Z a-z 0-9 _ . -",
                truncate(s, 80)
            )))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

pub(crate) fn is_valid_id(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_ID_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
}

/// Cuts untrusted input before echoing it in an error message.
pub(crate) fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The first `n` characters of `s` (an id echoed back in an error frame).
pub(crate) fn first_chars(s: &str, n: usize) -> &str {
    s.char_indices().nth(n).map_or(s, |(i, _)| &s[..i])
}

/// A conversation: the sorted pair of a direct chat, or a group.
///
/// The wire form is `dm#<a>#<b>` (a < b) or `grp#<group_id>`, so both
/// directions of a direct chat land in one partition.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ConversationId {
    Direct(UserId, UserId),
    Group(String),
}

impl ConversationId {
    pub fn direct(a: &UserId, b: &UserId) -> Self {
        if a <= b {
            ConversationId::Direct(a.clone(), b.clone())
        } else {
            ConversationId::Direct(b.clone(), a.clone())
        }
    }

    pub fn group(group_id: &str) -> Self {
        ConversationId::Group(group_id.to_string())
    }

    /// Parses a client-supplied id. Anything malformed is `bad_request`;
    /// a well-formed id the user is not in is the caller's `forbidden`.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || Error::BadRequest(format!("invalid conversation id {:?}", truncate(s, 80)));
        if let Some(rest) = s.strip_prefix("dm#") {
            let (a, b) = rest.split_once('#').ok_or_else(bad)?;
            let (a, b) = (
                UserId::parse(a).map_err(|_| bad())?,
                UserId::parse(b).map_err(|_| bad())?,
            );
            if a > b {
                return Err(bad());
            }
            Ok(ConversationId::Direct(a, b))
        } else if let Some(g) = s.strip_prefix("grp#") {
            if is_valid_id(g) {
                Ok(ConversationId::Group(g.to_string()))
            } else {
                Err(bad())
            }
        } else {
            Err(bad())
        }
    }
}

impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConversationId::Direct(a, b) => write!(f, "dm#{a}#{b}"),
            ConversationId::Group(g) => write!(f, "grp#{g}"),
        }
    }
}

/// Where a `send` goes: `user:<id>` or `group:<id>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Recipient {
    User(UserId),
    Group(String),
}

impl Recipient {
    pub fn parse(s: &str) -> Result<Self> {
        if let Some(u) = s.strip_prefix("user:") {
            Ok(Recipient::User(UserId::parse(u)?))
        } else if let Some(g) = s.strip_prefix("group:") {
            if is_valid_id(g) {
                Ok(Recipient::Group(g.to_string()))
            } else {
                Err(Error::BadRequest(format!(
                    "invalid group id {:?}",
                    truncate(g, 80)
                )))
            }
        } else {
            Err(Error::BadRequest(
                "`to` must be \"user:<user_id>\" or \"group:<group_id>\"".into(),
            ))
        }
    }
}

/// Validates a group id given by a client (addMember, removeMember).
pub fn parse_group_id(s: &str) -> Result<String> {
    if is_valid_id(s) {
        Ok(s.to_string())
    } else {
        Err(Error::BadRequest(format!(
            "invalid group id {:?}",
            truncate(s, 80)
        )))
    }
}

/// A fresh random group id (32 hex characters).
pub fn new_group_id() -> String {
    random_hex()
}

/// A fresh random connection id, shaped like API Gateway's (URL-safe).
pub fn new_connection_id() -> String {
    random_hex()
}

/// 32 hex characters: a v4 uuid, or the simulation's next draw
/// ([`set_id_source`]).
pub fn random_hex() -> String {
    match ID_SOURCE.get().and_then(|source| source()) {
        Some(n) => uuid::Uuid::from_u128(n).simple().to_string(),
        None => uuid::Uuid::new_v4().simple().to_string(),
    }
}

static ID_SOURCE: std::sync::OnceLock<fn() -> Option<u128>> = std::sync::OnceLock::new();

/// A test seam: from now on random ids (groups, connections, node ids) are
/// drawn from `source`, where it answers (`None`: at random). The cluster
/// simulation (conn-tier/sim) draws them from its seed, so a seed replays
/// exactly. The first source set stays.
pub fn set_id_source(source: fn() -> Option<u128>) {
    let _ = ID_SOURCE.set(source);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids_follow_the_charset_and_length_rules() {
        assert!(UserId::parse("alice").is_ok());
        assert!(UserId::parse("a.b-c_D9").is_ok());
        assert!(UserId::parse(&"x".repeat(64)).is_ok());
        assert!(UserId::parse(&"x".repeat(65)).is_err());
        assert!(UserId::parse("").is_err());
        assert!(UserId::parse("bob smith").is_err());
        assert!(UserId::parse("bob#1").is_err());
        assert!(UserId::parse("bøb").is_err());
    }

    #[test]
    fn direct_conversation_id_is_the_same_both_ways() {
        let a = UserId::parse("alice").unwrap();
        let b = UserId::parse("bob").unwrap();
        assert_eq!(
            ConversationId::direct(&a, &b),
            ConversationId::direct(&b, &a)
        );
        assert_eq!(ConversationId::direct(&b, &a).to_string(), "dm#alice#bob");
    }

    #[test]
    fn conversation_ids_round_trip_and_reject_junk() {
        for s in ["dm#alice#bob", "grp#0123abc"] {
            assert_eq!(ConversationId::parse(s).unwrap().to_string(), s);
        }
        for s in [
            "dm#bob#alice",
            "dm#alice",
            "grp#",
            "grp#a b",
            "chan#x",
            "",
            "dm#a#b#c",
        ] {
            assert!(ConversationId::parse(s).is_err(), "{s}");
        }
    }

    #[test]
    fn recipients_need_a_kind_prefix() {
        assert_eq!(
            Recipient::parse("user:bob").unwrap(),
            Recipient::User(UserId::parse("bob").unwrap())
        );
        assert!(Recipient::parse("bob").is_err());
        assert!(Recipient::parse("group:").is_err());
    }

    #[test]
    fn truncate_respects_char_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(first_chars("héllo", 2), "hé");
        assert_eq!(first_chars("hé", 5), "hé");
    }
}
