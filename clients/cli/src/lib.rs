//! chat-cli: the `chat` command-line client (`src/main.rs`) and the small
//! WebSocket client it shares with the end-to-end tests.
//!
//! # Layout
//! - [`client`]: connect to `/ws` with a token.
//! - `main.rs`: the `chat` binary (token, connect, send, group), wiring its
//!   modules: `commands` (typed lines → frames), `outgoing` (what is
//!   written: built `ClientFrame`s or raw JSON as typed), `session` (the
//!   interactive loop: reconnects, resends), `incoming` (server frames,
//!   decoded as `ServerFrame`, handled), `show` (frames → lines), `backoff`,
//!   `outbox` (unanswered sends), `inbox` (de-duplication, acks), `net`,
//!   `oneshot` (the script commands).

pub mod client;
