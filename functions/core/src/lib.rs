//! chat-core: the stateless logic of the chat system, shared by every
//! deployable (conn-tier, the Lambda functions, the tests). It holds no
//! AWS SDK, so the embedded build stays fast. How the pieces fit is in
//! docs/design.md.
//!
//! # Layout
//! - [`protocol`]: the wire frames, the one table of actions, the parser.
//! - [`ids`]: user, conversation and group ids and their validation.
//! - [`auth`]: HS256 JWT verification (and minting for dev tools).
//! - [`error`]: the one error enum (its wire form is in [`protocol`]).
//! - [`export`]: the portable export format (JSON Lines) and its reader.
//! - [`ports`]: the `Store`, `Connections`, `Delivery` and `Fanout` traits
//!   and the records they carry.
//! - [`service`]: the services ([`Chat`]), one file per action.
//! - [`delivery`]: the [`Deliverer`], fan-out workers, the commit-feed bridge.
//! - [`hash`]: the server's hash maps (fixed keys in the simulation).
//! - [`members`]: the group member-list cache, checked by version.
//! - [`memory`]: in-memory adapters (unit tests, `--store memory`, the
//!   connection map of one conn-tier node).
//! - [`metrics`]: the metrics every mode records (names written once).
//! - [`tasks`]: owned background tasks, stopped on shutdown.
//! - [`time`]: timestamps, in milliseconds since the epoch.
//! - `contract` (feature `testing`): the store contract suite every store
//!   adapter runs, one test per check ([`store_contract!`]).

pub mod auth;
#[cfg(feature = "testing")]
pub mod contract;
pub mod delivery;
pub mod error;
pub mod export;
pub mod hash;
pub mod ids;
pub mod members;
pub mod memory;
pub mod metrics;
pub mod ports;
pub mod protocol;
pub mod service;
pub mod tasks;
pub mod time;

pub use delivery::Deliverer;
pub use error::{Error, Result};
pub use service::{Chat, MessageDelivery, Reply, Session};
