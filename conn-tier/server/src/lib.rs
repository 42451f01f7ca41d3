//! conn-tier: the stateful connection tier. It holds the clients'
//! WebSockets, authenticates them on the upgrade, parses each text frame
//! once and routes it on `action` to the chat services (in-process) or to
//! the Lambda functions, and delivers fan-out to its own connections. How
//! it fits with the other crates is in docs/design.md.
//!
//! # Layout
//! The modules read in floors, each importing only those below it:
//!
//! ```text
//! http → socket → app → config → backend, cluster → hub → outbox, limits
//! ```
//!
//! (`admin`, `listener`, `rate`, `fds`, `proxy_protocol`, `metrics`, `web`, `refusals` and `error`
//! are leaves beside them.)
//! - [`http`]: `serve(listener, app, shutdown)`: the axum router, the
//!   upgrade-time authentication, graceful shutdown; `run` for the binary.
//! - [`admin`]: `conn-tier admin` (backup, verify, restore) and the
//!   admin socket through which a running server backs itself up.
//! - [`socket`]: the per-connection loop, generic over `Sink`/`Stream`.
//! - [`app`]: wiring: the backend, the store, the hub, the background tasks.
//! - [`config`]: command-line flags (each with an env fallback), and the
//!   [`config::Settings`] they build.
//! - [`backend`]: where frames go: in-process services or Lambda functions.
//! - [`cluster`]: this node in the node registry (DynamoDB): heartbeats,
//!   the janitor, cross-node delivery through `@connections`.
//! - [`hub`]: this node's connections and users, and the in-process `Delivery`.
//! - [`outbox`]: a connection's outbound queue, bounded in bytes, and its
//!   item ([`outbox::Outbound`]).
//! - [`limits`]: per-connection limits, close codes, defaults.
//! - [`rate`]: the token bucket (one per user, in the hub; one per IP, in the listener).
//! - [`fds`]: the descriptor limit raised at start, the connection cap under it.
//! - [`listener`]: the accept loop of both listeners: caps in total, per IP
//!   and per second, header-read timeout, `TCP_NODELAY`, descriptor backoff.
//! - [`proxy_protocol`]: the client's address from a trusted load
//!   balancer's PROXY header, and the address ranges trusted.
//! - [`metrics`]: Prometheus `/metrics` on its own listener.
//! - [`web`]: the embedded web client, and `/dev/token` with `--dev`.
//! - [`refusals`]: bounded logging of refused connections.
//! - [`error`]: the crate's error enum.
//!
//! The embedded store is `chat-embedded` (`conn-tier/embedded`), the
//! `@connections` API every node serves is `chat-management`
//! (`conn-tier/management`), API Gateway's side of the Lambda functions is
//! `chat-local-apigw` (`conn-tier/local-apigw`, feature `lambda`), the
//! `chat` client is `chat-cli` (`clients/cli`).

pub mod admin;
pub mod app;
pub mod backend;
pub mod cluster;
pub mod config;
pub mod error;
pub mod fds;
pub mod http;
pub mod hub;
pub mod limits;
pub mod listener;
pub mod metrics;
pub mod outbox;
pub mod proxy_protocol;
pub mod rate;
pub mod refusals;
pub mod socket;
pub mod web;

pub use app::App;
pub use error::{exit_code, Error};
