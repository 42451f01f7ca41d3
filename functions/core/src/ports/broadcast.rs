//! The broadcast port: one frame to every connection of many users, found
//! without a look-up per user. A conn-tier node knows its own connections
//! by user in memory, so a large group's message is handed once to each
//! node, which delivers to its own (docs/design.md, "Group look-ups").

use super::Outgoing;
use crate::error::Result;
use async_trait::async_trait;

/// Groups of at least this many members are delivered by broadcast where
/// one is configured (conn-tier): below it, a look-up per member costs
/// less than a post to every node.
pub const BROADCAST_FROM_MEMBERS: usize = 32;

#[async_trait]
pub trait Broadcast: Send + Sync {
    /// Posts `frame` to every connection of `users`, except `except` (the
    /// connection that caused it); returns how many posts succeeded. An
    /// error means it could not find every place a connection may be (for
    /// example, the node registry could not be read): the caller then
    /// looks the users up one by one instead.
    async fn broadcast(
        &self,
        users: &[String],
        except: Option<&str>,
        frame: &Outgoing,
    ) -> Result<usize>;
}
