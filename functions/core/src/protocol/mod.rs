//! The wire protocol of docs/protocol.md as serde types: client frames and
//! their parser ([`parse_client_frame`]), server frames, and the limits a
//! frame must respect.
//!
//! # Layout
//! - [`actions`]: the one table of client actions, routes and functions,
//!   and the [`ClientFrame`] enum generated from it.
//! - `client`: parsing and validating an untrusted text frame (one JSON
//!   parse on the hot path).
//! - `server`: the frames the server sends, and the one mapping of an
//!   [`Error`](crate::Error) to an `error` frame.
//! - `schema` (feature `schema`): their JSON Schemas, generated from these
//!   types, and the AsyncAPI document (docs/asyncapi.yaml).

pub mod actions;
mod client;
#[cfg(feature = "schema")]
pub mod schema;
mod server;

pub use actions::{route, Action, ClientFrame, ACTIONS, SYSTEM_ROUTES};
pub use client::{parse_client_frame, received_runs, FrameError};
pub use server::{ConversationItem, MessageView, ReadMark, ServerFrame};

/// One conversation of a `received` frame with `items`: the device holds
/// every message of it from `from` to `up_to`. The cursor moves to `up_to`
/// only if that run reaches down to the device's position (`from` at most
/// one above it): a run that starts higher leaves a hole the device has not
/// got, so the position stays and the next `sync` replays from it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
pub struct ReceivedItem {
    pub conversation_id: String,
    pub from: u64,
    pub up_to: u64,
}

/// Most conversations one `received` frame may name.
pub const MAX_RECEIVED_ITEMS: usize = 100;

/// Longest message text, in bytes of UTF-8 after JSON decoding.
pub const MAX_TEXT_BYTES: usize = 10_240;
/// Largest WebSocket frame a client may send (API Gateway's limit); a
/// bigger one closes the connection with 1009.
pub const MAX_FRAME_BYTES: usize = 32 * 1024;
/// Largest group, creator included.
pub const MAX_GROUP_MEMBERS: usize = 100;
/// Longest group name, in bytes.
pub const MAX_GROUP_NAME_BYTES: usize = 128;
/// Largest `history` page.
pub const MAX_HISTORY_LIMIT: u32 = 100;
/// `history` page size when the client gives no `limit`.
pub const DEFAULT_HISTORY_LIMIT: u32 = 50;
/// Largest `conversations` page.
pub const MAX_CONVERSATIONS_LIMIT: u32 = 100;
/// `conversations` page size when the client gives no `limit`.
pub const DEFAULT_CONVERSATIONS_LIMIT: u32 = 50;
/// Longest `client_msg_id`, in characters.
pub const MAX_CLIENT_MSG_ID_CHARS: usize = 64;
