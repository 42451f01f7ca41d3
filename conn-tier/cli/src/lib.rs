//! chat-cli: the `chat` command-line client (`src/main.rs`) and the small
//! WebSocket client it shares with the end-to-end tests.
//!
//! # Layout
//! - [`client`]: connect to `/ws` with a token.
//! - `main.rs`: the `chat` binary (token, connect, send, group).

pub mod client;
