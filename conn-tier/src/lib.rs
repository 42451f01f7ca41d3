//! conn-tier: the stateful connection tier. It holds the clients'
//! WebSockets, authenticates them on the upgrade, routes each text frame on
//! `action` to the chat services (in-process), delivers fan-out to its own
//! connections, and keeps the data in an embedded durable store.
//!
//! # Layout
//! - [`backend`]: where frames go: in-process services or Lambda functions.
//! - [`config`]: command-line flags (each with an env fallback).
//! - [`server`]: `serve(listener, app, shutdown)`: the axum router, the
//!   upgrade-time authentication, graceful shutdown.
//! - [`socket`]: the per-connection loop, generic over `Sink`/`Stream`.
//! - [`hub`]: this node's live connections and the in-process `Delivery`.
//! - `lambda` (feature `lambda`): the local API Gateway: events to Lambda
//!   functions through the Invoke API, and the stream poller for `fanout`.
//! - [`mgmt`]: the `@connections` management API on its own listener.
//! - [`embedded`]: the redb store with group commit.
//! - [`client`]: a small WebSocket client (CLI, tests, benchmarks).
//! - [`error`]: the crate's error enum.

pub mod backend;
pub mod client;
pub mod config;
pub mod embedded;
pub mod error;
pub mod hub;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod mgmt;
pub mod server;
pub mod socket;

pub use error::Error;
