//! chat-cli: the `chat` command-line client (`src/main.rs`) and the small
//! WebSocket client it shares with the end-to-end tests.
//!
//! # Layout
//! - [`client`]: connect to `/ws` with a token.
//! - `main.rs`: the `chat` binary (token, connect, send, group), wiring its
//!   modules: `commands` (typed lines → frames), `session` (the interactive
//!   loop: reconnects, resends), `show` (frames → lines), `backoff`,
//!   `outbox` (unanswered sends), `inbox` (de-duplication, acks), `net`,
//!   `oneshot` (the script commands).

pub mod client;
