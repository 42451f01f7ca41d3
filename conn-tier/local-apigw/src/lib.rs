//! chat-local-apigw: API Gateway's side of the Lambda functions, for
//! conn-tier when it stands in for API Gateway (`--functions lambda`): in
//! local-cloud mode, and in CI.
//!
//! The `@connections` management API that the functions answer through is
//! not here: every cluster node serves it too, so it is a crate of its own
//! (`chat-management`).
//!
//! # Layout
//! - [`lambda`]: the REQUEST authorizer, `$connect`/`$disconnect`, route
//!   selection on `$request.body.action`, the exact WebSocket event JSON,
//!   the Invoke API.
//! - [`stream`]: where an emulator has no event source mapping, polls the
//!   messages table's stream and invokes `fanout`.
//! - [`error`]: the crate's error enum.

pub mod error;
pub mod lambda;
pub mod stream;

pub use error::Error;
