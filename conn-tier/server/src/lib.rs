//! conn-tier: the stateful connection tier. It holds the clients'
//! WebSockets, authenticates them on the upgrade, parses each text frame
//! once and routes it on `action` to the chat services (in-process) or to
//! the Lambda functions, and delivers fan-out to its own connections. How
//! it fits with the other crates is in docs/design.md.
//!
//! # Layout
//! - [`app`]: wiring: the backend, the store, the hub, the background tasks.
//! - [`backend`]: where frames go: in-process services or Lambda functions.
//! - [`config`]: command-line flags (each with an env fallback).
//! - [`http`]: `serve(listener, app, shutdown)`: the axum router, the
//!   upgrade-time authentication, graceful shutdown; `run` for the binary.
//! - [`socket`]: the per-connection loop, generic over `Sink`/`Stream`.
//! - [`hub`]: this node's live connections and the in-process `Delivery`.
//! - [`error`]: the crate's error enum.
//!
//! The embedded store is `chat-embedded` (`conn-tier/embedded`), the API
//! Gateway stand-ins are `chat-local-apigw` (`conn-tier/local-apigw`), the
//! `chat` client is `chat-cli` (`conn-tier/cli`).

pub mod app;
pub mod backend;
pub mod config;
pub mod error;
pub mod http;
pub mod hub;
pub mod socket;

pub use app::App;
pub use error::Error;
