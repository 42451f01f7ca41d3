//! chat-local-apigw: the parts of API Gateway that conn-tier stands in for.
//!
//! # Layout
//! - [`management`]: the `@connections` management API (POST, GET, DELETE
//!   `/@connections/{id}`) over any [`management::ConnectionHost`] (conn-tier's
//!   hub), on its own listener. The Lambda functions deliver through it with
//!   the real `aws-sdk-apigatewaymanagement` client, in local-cloud mode.
//! - `lambda` (feature `lambda`): API Gateway's side of the functions: the
//!   REQUEST authorizer, `$connect`/`$disconnect`, route selection on
//!   `$request.body.action`, the exact WebSocket event JSON, the Invoke API.
//! - `stream` (feature `lambda`): where an emulator has no event source
//!   mapping, polls the messages table's stream and invokes `fanout`.
//! - [`sigv4`]: verification of AWS Signature Version 4, which every
//!   `@connections` request must carry.
//! - [`error`]: the crate's error enum.

pub mod error;
#[cfg(feature = "lambda")]
pub mod lambda;
pub mod management;
pub mod sigv4;
#[cfg(feature = "lambda")]
pub mod stream;

pub use error::Error;
