//! chat-core: the stateless logic of the chat system, shared by every
//! deployable (conn-tier, the Lambda functions, the tests). It holds no
//! AWS SDK, so the embedded build stays fast.
//!
//! # Layout
//! - [`protocol`]: the wire frames of DESIGN.md §3 and the frame parser.
//! - [`ids`]: user, conversation and group ids and their validation.
//! - [`auth`]: HS256 JWT verification (and minting for dev tools).
//! - [`error`]: the one error enum, and its mapping to `error` frames.
//! - [`ports`]: the `Store`, `Connections`, `Delivery` and `Fanout` traits.
//! - [`service`]: the services (`Chat`) and the fan-out `Deliverer`.
//! - [`fanout`]: background and inline fan-out runners.
//! - [`memory`]: in-memory adapters, for unit tests.
//! - [`contract`]: the store contract suite every store adapter runs.

pub mod auth;
pub mod contract;
pub mod error;
pub mod fanout;
pub mod ids;
pub mod memory;
pub mod ports;
pub mod protocol;
pub mod service;

pub use error::{Error, Result};
pub use service::{Chat, Deliverer, Reply, Session};
